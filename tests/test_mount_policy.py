"""The sandbox's one mount policy, rendered as bubblewrap's arguments for a kernel started alone
and as the zygote's sandbox plus a forked kernel's own mounts: both describe the same view."""

from __future__ import annotations

from pathlib import Path

import pytest

from course_utils.autograde.kernels.policy import (Sandbox, forked_layer, kernel_view,
                                                   zygote_view)
from course_utils.autograde.sandboxed.mounts import Mount, below, bwrap_arguments

# What is mounted at each path of a view: kind, where its files come from, read-only.
View = dict[str, tuple[str, str, bool]]
# bubblewrap's options that make a mount, and how many arguments each takes.
_MOUNTING = {"--ro-bind": 2, "--bind": 2, "--tmpfs": 1, "--proc": 1, "--dev": 1,
             "--symlink": 2, "--remount-ro": 1}
_OTHERS = {"--size": 1, "--chmod": 2, "--perms": 1, "--dir": 1}


def _origin(view: View, path: str) -> str:
    """Where ``path`` of ``view`` leads: a bound folder's source, or the mount it lies in."""
    holder = max((target for target in view if target == path or below(path, target)),
                 key=len, default="/")
    if holder == "/":
        return "host:" + path
    kind, origin, _ = view[holder]
    return origin + path[len(holder):]


def _mount(view: View, target: str, kind: str, origin: str) -> None:
    for covered in [path for path in view if below(path, target)]:
        del view[covered]
    view[target] = (kind, origin, kind == "ro-bind")


def after_bwrap(args: list[str]) -> View:
    """The view bubblewrap's ``args`` make, from the host's files."""
    view: View = {}
    size = ""
    index = 0
    while index < len(args):
        option = args[index]
        operands = args[index + 1:index + 1 + _MOUNTING.get(option, _OTHERS.get(option, 0))]
        if option == "--size":
            size = operands[0]
        elif option in ("--ro-bind", "--bind"):
            _mount(view, operands[1], option[2:], "host:" + operands[0])
        elif option == "--tmpfs":
            _mount(view, operands[0], "tmpfs", f"tmpfs:{operands[0]}:{size}")
            size = ""
        elif option == "--dev":
            _mount(view, operands[0], "dev", "dev")
            _mount(view, operands[0] + "/pts", "devpts", f"devpts:{operands[0]}")
        elif option in ("--proc", "--symlink"):
            _mount(view, operands[-1], option[2:], ":".join(operands))
        elif option == "--remount-ro":
            kind, origin, _ = view[operands[0]]
            view[operands[0]] = (kind, origin, True)
        else:
            assert option in _OTHERS, f"not a mount option: {option}"
        index += 1 + len(operands)
    return view


def after_mount_calls(view: View, layer: list[Mount]) -> View:
    """``view`` changed by ``layer``'s mounts as a forked kernel makes them: every source
    opened first, where the view had it then."""
    view = dict(view)
    sources = {mount.source: _origin(view, mount.source) for mount in layer
               if mount.kind in ("bind", "ro-bind")}
    for mount in layer:
        if mount.kind in ("bind", "ro-bind"):
            _mount(view, mount.target, mount.kind, sources[mount.source])
        elif mount.kind == "tmpfs":
            _mount(view, mount.target, "tmpfs",
                   f"tmpfs:{mount.target}:{mount.size or ''}")
        elif mount.kind == "dev":
            _mount(view, mount.target + "/pts", "devpts", f"devpts:{mount.target}")
        elif mount.kind == "remount-ro":
            kind, origin, _ = view[mount.target]
            view[mount.target] = (kind, origin, True)
        else:
            pytest.fail(f"a forked kernel cannot make a {mount.kind} mount")
    return view


@pytest.mark.parametrize("autograded", ["/tmp/pytest-7/autograded", "/srv/course/autograded"],
                         ids=["below_tmp", "elsewhere"])
def test_a_forked_kernel_and_one_started_alone_see_the_same(autograded: str) -> None:
    settings = Sandbox()
    root = "/tmp/course-kernels-x1"
    private = f"{root}/course-sandbox-k1"
    folder = f"{autograded}/bea/02_loss"
    files = {"data.csv": f"{private}/files/data.csv", "helper.py": f"{private}/files/helper.py"}
    kernel = kernel_view(folder, private, settings, files)
    zygote = zygote_view(root, autograded, settings)
    layer = forked_layer(kernel, zygote)

    alone = after_bwrap(bwrap_arguments(kernel))
    forked = after_mount_calls(after_bwrap(bwrap_arguments(zygote)), layer)
    # What only the zygote sees is covered by an empty read-only folder, on the way to the
    # notebook's folder, as the folders bubblewrap makes on the way there.
    covers = {target: forked.pop(target) for target in set(forked) - set(alone)}
    assert forked == alone
    assert all(kind == "tmpfs" and read_only for kind, _, read_only in covers.values())
    assert set(covers) == ({autograded} if autograded.startswith("/srv") else set())
    # Each scratch space is the kernel's own, not the zygote's.
    assert {"/tmp", "/dev/shm", "/dev", folder} <= {mount.target for mount in layer}
    assert alone[f"{folder}/data.csv"] == ("ro-bind", f"host:{private}/files/data.csv", True)
    assert root not in alone and alone[private] == ("bind", f"host:{private}", False)


def test_binds_below_the_private_tmp_stay_visible_both_ways(monkeypatch, tmp_path: Path) -> None:
    """A virtual environment under /tmp: a forked kernel binds it again over its new /tmp."""
    import course_utils.autograde.kernels.policy as policy
    environment = "/tmp/course-env/.venv"
    monkeypatch.setattr(policy.sys, "prefix", environment)
    root, autograded = "/tmp/course-kernels-x2", "/home/teacher/course/autograded"
    kernel = kernel_view(f"{autograded}/al/01", f"{root}/k2", Sandbox(), {})
    layer = forked_layer(kernel, zygote_view(root, autograded, Sandbox()))
    renewed = [mount for mount in layer if mount.target == environment]
    assert renewed == [Mount("ro-bind", environment, environment)]
    assert layer.index(renewed[0]) > layer.index(Mount("tmpfs", "/tmp", size=Sandbox().
                                                       scratch_mib << 20, mode=0o1777))


def test_bubblewrap_makes_the_folders_on_the_way_readable_by_all() -> None:
    args = bwrap_arguments([Mount("tmpfs", "/srv/a/b", size=4096, mode=0o1777),
                            Mount("ro-bind", "/srv/a/b/c.txt", "/etc/hostname")])
    assert args == ["--perms", "0755", "--dir", "/srv", "--perms", "0755", "--dir", "/srv/a",
                    "--size", "4096", "--tmpfs", "/srv/a/b", "--chmod", "1777", "/srv/a/b",
                    "--ro-bind", "/etc/hostname", "/srv/a/b/c.txt"]


def test_an_unknown_kind_of_mount_is_refused() -> None:
    with pytest.raises(ValueError, match="overlay"):
        Mount("overlay", "/x")
