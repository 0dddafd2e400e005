"""Per-kernel memory cgroups: one memory limit for a kernel's whole process tree.

A kernel's cgroup is made below this process's own (cgroup v2 with the memory controller
where it is writable, else cgroup v1's memory hierarchy); where neither can be made (an
ordinary user without a delegated cgroup) memory stays bounded per process only
(RLIMIT_DATA), said once in the log.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import time

log = logging.getLogger(__name__)
# Seconds a cgroup's processes may take to end before it is left behind.
_REMOVE_TIMEOUT = 5.0
_warned = False


def _mount_point(fstype: str, option: str | None) -> str | None:
    """Where this process sees the hierarchy of type ``fstype`` (v1: with ``option``)."""
    with open("/proc/self/mountinfo") as mounts:
        for line in mounts:
            fields, _, rest = line.partition(" - ")
            kind, _, options = rest.split()[:3]
            if kind == fstype and (option is None or option in options.split(",")):
                return fields.split()[4]
    return None


def _own_path(controller: str) -> str | None:
    """This process's cgroup in the hierarchy of ``controller`` ("" for cgroup v2)."""
    with open("/proc/self/cgroup") as groups:
        for line in groups:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            if (controller in controllers.split(",")) if controller else controllers == "":
                return path
    return None


class KernelCgroup:
    """A kernel's memory cgroup: ``path``, in cgroup ``version`` 1 or 2."""

    def __init__(self, path: str, version: int) -> None:
        self.path, self.version = path, version

    @property
    def procs(self) -> str:
        return os.path.join(self.path, "cgroup.procs")

    def join_command(self, command: list[str]) -> list[str]:
        """``command`` run after its process has joined the cgroup (before anything else)."""
        return ["sh", "-c", 'echo 0 > "$0" && exec "$@"', self.procs, *command]

    def add(self, pid: int) -> None:
        with open(self.procs, "w") as procs:
            procs.write(str(pid))

    def peak(self) -> int:
        """The most memory, bytes, the kernel's processes used together."""
        name = "memory.peak" if self.version == 2 else "memory.max_usage_in_bytes"
        with open(os.path.join(self.path, name)) as file:
            return int(file.read())

    def remove(self) -> None:
        """Ends every process left in the cgroup and removes it."""
        deadline = time.monotonic() + _REMOVE_TIMEOUT
        # Killed processes leave within milliseconds: look again soon, then less often.
        pause = 0.002
        while True:
            try:
                with open(self.procs) as procs:
                    for pid in map(int, procs.read().split()):
                        try:
                            os.kill(pid, signal.SIGKILL)
                        except ProcessLookupError:
                            pass
                os.rmdir(self.path)
                return
            except FileNotFoundError:
                return
            except OSError as error:  # busy while its processes end
                if time.monotonic() > deadline:
                    log.warning("Could not remove the kernel's cgroup %s: %s", self.path, error)
                    return
                time.sleep(pause)
                pause = min(2 * pause, 0.05)


def _write(folder: str, name: str, value: str) -> None:
    with open(os.path.join(folder, name), "w") as file:
        file.write(value)


def _made(parent: str, version: int, settings: dict[str, str]) -> KernelCgroup:
    """A new cgroup below ``parent`` with ``settings`` (file -> value, in order; a file this
    machine lacks is left out)."""
    path = os.path.join(parent, f"course-kernel-{secrets.token_hex(6)}")
    os.mkdir(path)
    group = KernelCgroup(path, version)
    try:
        for name, value in settings.items():
            if os.path.exists(os.path.join(path, name)):
                _write(path, name, value)
    except OSError:
        group.remove()
        raise
    return group


def _make_v2(limit: int) -> KernelCgroup | None:
    mount, own = _mount_point("cgroup2", None), _own_path("")
    if mount is None or own is None:
        return None
    parent = os.path.join(mount, own.lstrip("/"))
    with open(os.path.join(parent, "cgroup.controllers")) as file:
        if "memory" not in file.read().split():
            return None
    with open(os.path.join(parent, "cgroup.subtree_control")) as file:
        if "memory" not in file.read().split():
            _write(parent, "cgroup.subtree_control", "+memory")
    return _made(parent, 2, {"memory.max": str(limit), "memory.swap.max": "0"})


def _make_v1(limit: int) -> KernelCgroup | None:
    mount, own = _mount_point("cgroup", "memory"), _own_path("memory")
    if mount is None or own is None:
        return None
    # Memory and swap together (where swap is accounted): no swapping past the limit.
    return _made(os.path.join(mount, own.lstrip("/")), 1,
                 {"memory.limit_in_bytes": str(limit), "memory.memsw.limit_in_bytes": str(limit),
                  "memory.swappiness": "0"})


def create(limit: int) -> KernelCgroup | None:
    """A new cgroup limiting its processes to ``limit`` bytes of memory together; None (said
    once in the log) where none can be made here."""
    global _warned
    reasons = []
    for make in (_make_v2, _make_v1):
        try:
            group = make(limit)
        except OSError as error:
            reasons.append(str(error))
            continue
        if group is not None:
            return group
    if not _warned:
        _warned = True
        log.warning("No memory cgroup could be made for kernels (%s): each kernel process is "
                    "limited on its own (RLIMIT_DATA), so a kernel's processes together may use "
                    "more. To limit a kernel's processes together, grade as root, or in a "
                    "cgroup v2 that systemd delegates with the memory controller (`systemd-run "
                    "--user --scope -p Delegate=yes nbgrader autograde ...`).",
                    "; ".join(reasons) or "no memory controller mounted")
    return None
