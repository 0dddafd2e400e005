"""The kernels' folders on the grading machine, kept in memory and bounded where it can: each
kernel's sockets folder, the one place there it may write, and the zygote's folder of them."""

from __future__ import annotations

import os
import shutil
import tempfile

from course_utils.autograde.sandboxed import namespaces as ns

# Where a kernel's IPC sockets go, in its private folder, and its size where in memory.
SOCKETS = "ipc"
SOCKETS_MIB = 1
# Files (inodes) per MiB of a folder in memory: empty files take no size, but memory.
_FILES_PER_MIB = 64
_MIB = 1 << 20


def _in_memory(folder: str, size_mib: int) -> None:
    ns.mount("tmpfs", folder, "tmpfs", ns.MS_NOSUID | ns.MS_NODEV,
             f"size={size_mib * _MIB},nr_inodes={size_mib * _FILES_PER_MIB},mode=0700")


def make_sockets_folder(private: str, owner: int) -> str:
    """The folder for the IPC sockets of the kernel whose folder is ``private``: as root, a
    tmpfs of ``SOCKETS_MIB`` owned by ``owner`` (the kernel's user), the kernel's own folder
    staying root's, so that the kernel writes nothing to disk there and little to memory; as
    another user, a plain folder, where only each file's size is bounded."""
    folder = os.path.join(private, SOCKETS)
    os.mkdir(folder, 0o700)
    if os.geteuid() == 0:
        _in_memory(folder, SOCKETS_MIB)
        os.chown(folder, owner, owner)
    return folder


def make_kernels_root(size_mib: int) -> str:
    """A new folder for kernels' folders: as root, a tmpfs of ``size_mib``, shared, so that
    each kernel's sockets folder mounted there later shows in sandboxes that bind it."""
    folder = tempfile.mkdtemp(prefix="course-kernels-")
    if os.geteuid() == 0:
        _in_memory(folder, size_mib)
        ns.mount(None, folder, None, ns.MS_SHARED)
    return folder


def remove(folder: str) -> None:
    """Removes a kernel's folder or the kernels' root, and what is mounted there."""
    for path in (os.path.join(folder, SOCKETS), folder):
        if os.path.ismount(path):
            ns.unmount(path)
    shutil.rmtree(folder, ignore_errors=True)
