"""Per-kernel memory cgroups: one limit for a process tree, removed after; and where none can
be made, grading goes on with one warning."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys

import pytest

from course_utils.autograde.kernels import cgroups

_MIB = 1 << 20


def test_a_cgroup_bounds_its_processes_together_and_goes_with_them() -> None:
    group = cgroups.create(64 * _MIB)
    if group is None:
        pytest.skip("no memory cgroup can be made here")
    try:
        # two processes of 40 MiB each, at once: each under the limit, together over it
        tree = subprocess.run(group.join_command([sys.executable, "-c", """
import os, time
pid = os.fork()
block = b"x" * (40 << 20)
time.sleep(1)
if pid:
    print(os.waitpid(pid, 0)[1])
"""]), capture_output=True, text=True, timeout=60)
        peak = group.peak()
    finally:
        group.remove()
    assert tree.returncode == -signal.SIGKILL or tree.stdout.strip() == str(signal.SIGKILL)
    assert peak <= 64 * _MIB
    assert not os.path.exists(group.path)


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                    reason="needs root, to grade as an ordinary user")
def test_an_ordinary_user_grades_on_with_one_warning() -> None:
    said = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c",
         "import logging; logging.basicConfig()\n"
         "from course_utils.autograde.kernels import cgroups\n"
         "print(cgroups.create(1 << 30), cgroups.create(1 << 30))"],
        capture_output=True, text=True, timeout=60, cwd="/")
    assert said.stdout.split() == ["None", "None"]
    assert said.stderr.count("WARNING") == 1 and "RLIMIT_DATA" in said.stderr
    assert "grade as root" in said.stderr
