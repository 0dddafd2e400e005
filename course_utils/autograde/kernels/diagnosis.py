"""Why the sandbox cannot start on a machine, and what to do there: from what a trial sandbox
said and what the machine says of its user namespaces, AppArmor, container and system.

Example:
    >>> print(diagnose("", Host(platform="darwin")))
    macOS has no Linux namespaces, which the sandbox (bubblewrap) is built on. To fix: grade \
on Linux: a Linux virtual machine, or a Linux container (Docker Desktop runs one) started with \
`--security-opt seccomp=unconfined`.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

# What bubblewrap says when it may not create a namespace (its own words, Debian's build).
_NO_PERMISSION = "No permissions to create"
_NO_SPACE = "max_*_namespaces exceeded"
_NO_USER_NAMESPACES = "kernel does not support user namespaces"
# What it says when a user namespace was created with no rights in it (AppArmor's restriction).
_NO_RIGHTS = ("setting up uid map", "Permission denied", "Operation not permitted")
_SYSCTL_FILE = "/etc/sysctl.d/60-course-sandbox.conf"
_APPARMOR_PROFILE = ("abi <abi/4.0>,\\ninclude <tunables/global>\\nprofile bwrap /usr/bin/bwrap "
                     "flags=(unconfined) {\\n  userns,\\n}\\n")


def _number(path: str) -> int | None:
    try:
        return int(Path(path).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


@dataclass(frozen=True)
class Host:
    """What a machine says of what the sandbox needs (None: it does not say)."""

    platform: str = sys.platform
    # /proc/sys/user/max_user_namespaces: 0 disables user namespaces
    max_user_namespaces: int | None = None
    # /proc/sys/kernel/unprivileged_userns_clone (Debian's and Arch's switch): 0 disables them
    # for users other than root
    unprivileged_userns_clone: int | None = None
    # /proc/sys/kernel/apparmor_restrict_unprivileged_userns (Ubuntu 23.10 and later): 1
    # leaves a program without an AppArmor profile that allows them no rights in its namespaces
    apparmor_restricts: bool = False
    # a container (Docker's or Podman's), whose processes run under a seccomp filter
    container: bool = False
    seccomp_filtered: bool = False
    as_root: bool = False


def this_host() -> Host:
    """What this machine says."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        status = ""
    return Host(
        platform=sys.platform,
        max_user_namespaces=_number("/proc/sys/user/max_user_namespaces"),
        unprivileged_userns_clone=_number("/proc/sys/kernel/unprivileged_userns_clone"),
        apparmor_restricts=_number("/proc/sys/kernel/apparmor_restrict_unprivileged_userns")
        == 1,
        container=any(os.path.exists(path) for path in ("/.dockerenv", "/run/.containerenv")),
        seccomp_filtered="\nSeccomp:\t2" in status,
        as_root=os.geteuid() == 0 if hasattr(os, "geteuid") else False)


def diagnose(error: str, host: Host) -> str:
    """The cause of a sandbox that did not start, saying ``error``, on ``host``, and the fix."""
    if host.platform == "darwin":
        return ("macOS has no Linux namespaces, which the sandbox (bubblewrap) is built on. "
                "To fix: grade on Linux: a Linux virtual machine, or a Linux container (Docker "
                "Desktop runs one) started with `--security-opt seccomp=unconfined`.")
    if not host.platform.startswith("linux"):
        return (f"the sandbox needs Linux's namespaces (this is {host.platform}). To fix: grade "
                f"on Linux, in a virtual machine if need be.")
    if host.max_user_namespaces == 0 or _NO_SPACE in error:
        state = ("disabled on this machine" if host.max_user_namespaces == 0
                 else "used up, or nested too deep")
        return (f"user namespaces are {state} (user.max_user_namespaces = "
                f"{host.max_user_namespaces}); the sandbox said: {error}. To fix: `sudo sysctl "
                f"-w user.max_user_namespaces=15000`, and to keep it after a reboot `echo "
                f"user.max_user_namespaces=15000 | sudo tee {_SYSCTL_FILE}`.")
    if host.unprivileged_userns_clone == 0 and not host.as_root:
        return (f"this kernel lets only root create user namespaces "
                f"(kernel.unprivileged_userns_clone = 0); the sandbox said: {error}. To fix: "
                f"`sudo sysctl -w kernel.unprivileged_userns_clone=1`, and to keep it after a "
                f"reboot `echo kernel.unprivileged_userns_clone=1 | sudo tee {_SYSCTL_FILE}`.")
    if host.apparmor_restricts and not host.as_root and (
            _NO_PERMISSION in error or any(text in error for text in _NO_RIGHTS)):
        return (f"AppArmor restricts unprivileged user namespaces here (Ubuntu 24.04's "
                f"kernel.apparmor_restrict_unprivileged_userns = 1) and bwrap has no AppArmor "
                f"profile that allows them; the sandbox said: {error}. To fix: give bwrap a "
                f"profile: `printf '{_APPARMOR_PROFILE}' | sudo tee /etc/apparmor.d/bwrap && "
                f"sudo apparmor_parser -r /etc/apparmor.d/bwrap` (or, for every program, `sudo "
                f"sysctl -w kernel.apparmor_restrict_unprivileged_userns=0`).")
    if host.container and host.seccomp_filtered and (
            _NO_PERMISSION in error or "Operation not permitted" in error):
        who = (" and grade as a user other than root in it (as root, bubblewrap needs "
               "`--cap-add SYS_ADMIN` instead)" if host.as_root else "")
        return (f"this is a container whose seccomp profile (Docker's default) forbids "
                f"creating namespaces; the sandbox said: {error}. To fix: start the container "
                f"with `--security-opt seccomp=unconfined` (or a profile that allows clone, "
                f"unshare and mount){who}.")
    if _NO_USER_NAMESPACES in error:
        return (f"this kernel was built without user namespaces; the sandbox said: {error}. To "
                f"fix: a kernel with CONFIG_USER_NS=y (every major distribution's), or bwrap "
                f"installed setuid root.")
    if _NO_PERMISSION in error:
        return (f"user namespaces are not allowed here; the sandbox said: {error}. To fix: "
                f"allow unprivileged user namespaces (`sudo sysctl -w "
                f"user.max_user_namespaces=15000`; on Debian also "
                f"`kernel.unprivileged_userns_clone=1`).")
    return (f"a trial sandbox failed: {error}. To fix: check that `bwrap --unshare-all "
            f"--ro-bind / / true` runs for the user who grades.")
