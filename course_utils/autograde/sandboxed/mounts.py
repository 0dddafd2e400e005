"""A sandbox's file view as data: a list of mounts, rendered as bubblewrap's arguments or made
with mount calls by a process in new namespaces.

Mounts are made in order, each over what lies at its target; a missing folder on the way to a
target is created, readable by all. Kinds:

- ``ro-bind`` / ``bind``: ``source`` (a file or folder) at ``target``, read-only or writable;
- ``tmpfs``: an empty folder in memory of ``size`` bytes (0: the kernel's default) and ``mode``;
- ``proc``, ``dev``: the processes of the sandbox's PID namespace, a minimal ``/dev`` (made anew
  by mount calls as its ``pts`` only: the device nodes are the same);
- ``symlink``: a link at ``target`` to ``source``;
- ``remount-ro``: the mount at ``target`` made read-only (after what was made below it).

Example:
    >>> bwrap_arguments([Mount("tmpfs", "/tmp", size=1024, mode=0o1777),
    ...                  Mount("ro-bind", "/tmp/env/bin", "/opt/env/bin")])
    ['--size', '1024', '--tmpfs', '/tmp', '--chmod', '1777', '/tmp', '--perms', '0755', \
'--dir', '/tmp/env', '--ro-bind', '/opt/env/bin', '/tmp/env/bin']
"""

from __future__ import annotations

import os
import stat
from dataclasses import asdict, dataclass
from pathlib import PurePosixPath
from typing import Any

from course_utils.autograde.sandboxed import namespaces as ns

KINDS = ("ro-bind", "bind", "tmpfs", "proc", "dev", "symlink", "remount-ro")
_MEMORY = ns.MS_NOSUID | ns.MS_NODEV


@dataclass(frozen=True)
class Mount:
    """One mount of a sandbox's file view."""

    kind: str
    target: str
    source: str = ""
    size: int = 0
    mode: int = 0o755

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown kind of mount {self.kind!r}")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def from_dicts(entries: list[dict[str, Any]]) -> list[Mount]:
    """Mounts from ``Mount.as_dict``'s form (as passed to a forked kernel in JSON)."""
    return [Mount(**entry) for entry in entries]


def parents(target: str) -> list[str]:
    """The folders leading to ``target``, outermost first, ``/`` left out."""
    return [str(path) for path in reversed(PurePosixPath(target).parents)][1:]


def below(path: str, folder: str) -> bool:
    """Whether ``path`` lies strictly below ``folder``."""
    return path.startswith(folder.rstrip("/") + "/")


def bwrap_arguments(mounts: list[Mount]) -> list[str]:
    """bubblewrap's arguments that make ``mounts``, each missing folder on the way created
    first with mode 0755 (bubblewrap's own would be readable by root only)."""
    args: list[str] = []
    made = {"/"}
    for mount in mounts:
        if mount.kind not in ("symlink", "remount-ro"):
            for parent in parents(mount.target):
                if parent not in made:
                    args += ["--perms", "0755", "--dir", parent]
                    made.add(parent)
            made.add(mount.target)
        if mount.kind in ("ro-bind", "bind", "symlink"):
            args += [f"--{mount.kind}", mount.source, mount.target]
        elif mount.kind == "tmpfs":
            args += (["--size", str(mount.size)] if mount.size else []) + [
                "--tmpfs", mount.target, "--chmod", f"{mount.mode:o}", mount.target]
        else:
            args += [f"--{mount.kind}", mount.target]
    return args


def make(mounts: list[Mount]) -> None:
    """Makes ``mounts`` with mount calls, in this process's own mount namespace (and user
    namespace, which allows them). Every source is opened first, where it is now: a mount
    made before it is bound may cover the path it was named by."""
    sources = {mount.source: os.open(mount.source, os.O_PATH) for mount in mounts
               if mount.kind in ("ro-bind", "bind")}
    created: list[str] = []
    for mount in mounts:
        if mount.kind == "remount-ro":
            ns.mount(None, mount.target, None, ns.MS_REMOUNT | ns.MS_BIND | ns.MS_RDONLY
                     | _MEMORY)
            continue
        for parent in parents(mount.target):
            if not os.path.isdir(parent):
                os.mkdir(parent, 0o755)
                created.append(parent)
        if mount.kind in ("ro-bind", "bind"):
            descriptor = sources[mount.source]
            if stat.S_ISDIR(os.fstat(descriptor).st_mode):
                os.makedirs(mount.target, 0o755, exist_ok=True)
            elif not os.path.exists(mount.target):
                os.close(os.open(mount.target, os.O_CREAT | os.O_WRONLY, 0o644))
            ns.mount(f"/proc/self/fd/{descriptor}", mount.target, None, ns.MS_BIND | ns.MS_REC)
            if mount.kind == "ro-bind":
                ns.mount(None, mount.target, None, ns.MS_REMOUNT | ns.MS_BIND | ns.MS_RDONLY
                         | _MEMORY)
        elif mount.kind == "tmpfs":
            os.makedirs(mount.target, 0o755, exist_ok=True)
            size = f"size={mount.size}," if mount.size else ""
            ns.mount("tmpfs", mount.target, "tmpfs", _MEMORY, f"{size}mode={mount.mode:o}")
        elif mount.kind == "dev":
            ns.mount("devpts", os.path.join(mount.target, "pts"), "devpts", ns.MS_NOSUID,
                     "newinstance,ptmxmode=0666")
        else:
            raise ValueError(f"a {mount.kind} mount cannot be made here")
    for descriptor in sources.values():
        os.close(descriptor)
    # The folders made on the way are this process's own, so it could write in them: each
    # topmost one is bound onto itself read-only, as bubblewrap's (made as root) are. The
    # mounts below keep their own flags.
    for folder in created:
        if not any(below(folder, other) for other in created):
            ns.mount(folder, folder, None, ns.MS_BIND | ns.MS_REC)
            ns.mount(None, folder, None, ns.MS_REMOUNT | ns.MS_BIND | ns.MS_RDONLY | _MEMORY)
