"""When the sandbox cannot start, autograding names the cause and the fix: on machines whose
user namespaces are disabled (a real one, simulated in a user namespace of its own), restricted
by AppArmor, forbidden by a container's seccomp profile, or missing (macOS)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from course_utils.autograde.kernels import policy
from course_utils.autograde.kernels.diagnosis import Host

# What bubblewrap 0.8 says in each case (its own words).
NO_SPACE = ("bwrap: Creating new namespace failed: nesting depth or "
            "/proc/sys/user/max_*_namespaces exceeded (ENOSPC)")
NO_PERMISSION = ("bwrap: No permissions to create new namespace, likely because the kernel "
                 "does not allow non-privileged user namespaces. See <https://deb.li/bubblewrap> "
                 "or <file:///usr/share/doc/bubblewrap/README.Debian.gz>.")
NO_UID_MAP = "bwrap: setting up uid map: Permission denied"
NO_MOUNT_NAMESPACE = "bwrap: Creating new namespace failed: Operation not permitted"
UBUNTU = Host(platform="linux", max_user_namespaces=15000, apparmor_restricts=True)
DOCKER = Host(platform="linux", max_user_namespaces=15000, container=True,
              seccomp_filtered=True)

CASES = {
    "user_namespaces_disabled": (NO_SPACE, Host(platform="linux", max_user_namespaces=0),
                                 ["user.max_user_namespaces = 0",
                                  "sysctl -w user.max_user_namespaces=15000"]),
    "debian_switch_off": (NO_PERMISSION, Host(platform="linux", max_user_namespaces=15000,
                                              unprivileged_userns_clone=0),
                          ["kernel.unprivileged_userns_clone = 0",
                           "sysctl -w kernel.unprivileged_userns_clone=1"]),
    "ubuntu_apparmor": (NO_UID_MAP, UBUNTU,
                        ["AppArmor", "apparmor_restrict_unprivileged_userns = 1",
                         "/etc/apparmor.d/bwrap", "userns,", "apparmor_parser -r"]),
    "ubuntu_apparmor_no_permission": (NO_PERMISSION, UBUNTU, ["AppArmor", "apparmor_parser"]),
    "docker_seccomp": (NO_PERMISSION, DOCKER,
                       ["seccomp profile (Docker's default)",
                        "--security-opt seccomp=unconfined"]),
    "docker_seccomp_as_root": (NO_MOUNT_NAMESPACE, Host(**{**DOCKER.__dict__, "as_root": True}),
                               ["seccomp", "--security-opt seccomp=unconfined",
                                "other than root", "--cap-add SYS_ADMIN"]),
}


@pytest.fixture
def fake_bwrap(tmp_path: Path,
               monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], None]]:
    """Puts on PATH a ``bwrap`` that fails saying what it is given."""
    def install(said: str) -> None:
        script = tmp_path / "bin" / "bwrap"
        script.parent.mkdir(exist_ok=True)
        script.write_text(f"#!/bin/sh\necho {said!r} >&2\nexit 1\n")
        script.chmod(0o755)
        monkeypatch.setenv("PATH", f"{script.parent}{os.pathsep}{os.environ['PATH']}")
        policy.missing.cache_clear()
    yield install
    policy.missing.cache_clear()


@pytest.mark.skipif(not (shutil.which("prlimit") and shutil.which("setpriv")),
                    reason="the trial sandbox starts bwrap through prlimit and setpriv")
@pytest.mark.parametrize("case", CASES)
def test_each_failure_names_its_cause_and_fix(case: str, fake_bwrap: Callable[[str], None],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    said, host, expected = CASES[case]
    fake_bwrap(said)
    monkeypatch.setattr(policy, "this_host", lambda: host)
    message = policy.unavailable_message(policy.missing() or "")
    assert "Autograding stopped before grading anyone" in message
    assert said in message and "To fix:" in message
    assert [text for text in expected if text not in message] == []
    assert policy.UNPROTECTED_SETTING in message


def test_each_cause_is_told_apart() -> None:
    from course_utils.autograde.kernels.diagnosis import diagnose
    causes: dict[str, set[str]] = {}  # by machine (a case's first word): each has one
    for case, (said, host, _) in CASES.items():
        causes.setdefault(case.split("_")[0], set()).add(diagnose(said, host).split(";")[0])
    assert all(len(told) == 1 for told in causes.values())
    assert len(set.union(*causes.values())) == len(causes) == 4


def test_macos_is_told_to_grade_on_linux(monkeypatch: pytest.MonkeyPatch) -> None:
    policy.missing.cache_clear()
    monkeypatch.setattr(policy, "this_host", lambda: Host(platform="darwin"))
    try:
        message = policy.missing() or ""
    finally:
        policy.missing.cache_clear()
    assert message.startswith("macOS has no Linux namespaces")
    assert "Linux virtual machine" in message


# Run as root: a child user namespace in which root sets user.max_user_namespaces to 0, then a
# user of it (uid 1000) asks whether the sandbox can start.
SIMULATE = textwrap.dedent("""
    import os, sys
    from course_utils.autograde.sandboxed import namespaces as ns
    unshared, mapped = os.pipe(), os.pipe()
    child = os.fork()
    if child == 0:
        ns.unshare(ns.CLONE_NEWUSER)
        os.write(unshared[1], b"u")
        os.read(mapped[0], 1)
        os.setresgid(0, 0, 0); os.setresuid(0, 0, 0)
        with open("/proc/sys/user/max_user_namespaces", "w") as limit:
            limit.write("0")
        from course_utils.autograde.kernels.policy import missing  # imported while it can be
        os.setgroups([]); os.setresgid(1000, 1000, 1000); os.setresuid(1000, 1000, 1000)
        print(missing(), flush=True)
        os._exit(0)
    os.read(unshared[0], 1)
    for name in ("uid_map", "gid_map"):
        with open(f"/proc/{child}/{name}", "w") as table:
            table.write("0 0 65536")
    os.write(mapped[1], b"m")
    sys.exit(os.waitstatus_to_exitcode(os.waitpid(child, 0)[1]))
""")


@pytest.mark.skipif(os.geteuid() != 0 or policy.missing() is not None,
                    reason="needs root and a machine where the sandbox starts")
def test_disabled_user_namespaces_are_named_in_a_simulated_machine(tmp_path: Path) -> None:
    run = subprocess.run([sys.executable, "-c", SIMULATE], capture_output=True, text=True,
                         timeout=120, cwd=tmp_path,
                         env={**os.environ, "PYTHONPATH": str(Path(policy.__file__).parents[3])})
    if "Permission denied" in run.stderr and "max_user_namespaces" in run.stderr:
        pytest.skip("this kernel does not let a user namespace's root set its limit")
    assert run.returncode == 0, run.stderr
    assert "user namespaces are disabled on this machine (user.max_user_namespaces = 0)" \
        in run.stdout
    assert "sysctl -w user.max_user_namespaces=15000" in run.stdout
