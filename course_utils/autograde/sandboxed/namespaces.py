"""Linux system calls that put a forked kernel into namespaces of its own (Python 3.11 has
no ``os.unshare`` or ``mount``): each call checks its result and raises ``OSError``.

Example:
    >>> CLONE_NEWUSER & CLONE_NEWPID
    0
"""

from __future__ import annotations

import ctypes
import os

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_REMOUNT = 1, 2, 4, 32
MS_BIND, MS_REC, MS_PRIVATE, MS_SHARED = 4096, 16384, 1 << 18, 1 << 20
_PR_SET_PDEATHSIG, _PR_CAPBSET_DROP, _PR_SET_NO_NEW_PRIVS = 1, 24, 38
_CAPABILITY_VERSION_3 = 0x20080522
_MNT_DETACH = 2

_libc = ctypes.CDLL(None, use_errno=True)


def _checked(result: int, what: str) -> None:
    if result != 0:
        number = ctypes.get_errno()
        raise OSError(number, f"{what}: {os.strerror(number)}")


def unshare(flags: int) -> None:
    """Moves this process into new namespaces (``CLONE_NEW*`` flags)."""
    _checked(_libc.unshare(flags), "unshare")


def map_own_ids(uid: int, gid: int) -> None:
    """In a new user namespace: this process keeps the ids it had outside, and no other id
    exists there."""
    for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"),
                       ("gid_map", f"{gid} {gid} 1")):
        with open(f"/proc/self/{name}", "w") as file:
            file.write(text)


def mount(source: str | None, target: str, fstype: str | None = None, flags: int = 0,
          options: str | None = None) -> None:
    """``mount(2)``."""
    encode = (lambda text: None if text is None else text.encode())
    _checked(_libc.mount(encode(source), encode(target), encode(fstype), flags,
                         encode(options)), f"mount {target}")


def unmount(target: str) -> None:
    """``umount2(2)``, detaching ``target`` now (it goes once no process uses it)."""
    _checked(_libc.umount2(target.encode(), _MNT_DETACH), f"unmount {target}")


def drop_capabilities() -> None:
    """Gives up every capability (the ones a new user namespace granted) and the right to gain
    any by running a program."""
    with open("/proc/sys/kernel/cap_last_cap") as file:
        last = int(file.read())
    for capability in range(last + 1):
        _checked(_libc.prctl(_PR_CAPBSET_DROP, capability, 0, 0, 0), "prctl(CAPBSET_DROP)")
    header = (ctypes.c_uint32 * 2)(_CAPABILITY_VERSION_3, 0)
    nothing = (ctypes.c_uint32 * 6)()  # effective, permitted, inheritable, twice
    _checked(_libc.capset(header, nothing), "capset")
    _checked(_libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(NO_NEW_PRIVS)")


def die_with_parent(signal_number: int) -> None:
    """This process gets ``signal_number`` when the process that forked it ends."""
    _checked(_libc.prctl(_PR_SET_PDEATHSIG, signal_number, 0, 0, 0), "prctl(PDEATHSIG)")
