"""An ordinary Unix user who grades: created by root, with the course's environment for all users.

Root creates the user ``course-grader`` (once) and the environment every user may run, which
JupyterHub's deployment uses too (``deploy/hub/setup.sh environment``: built once, then only
checked); a course copied to ``workspace`` and given to the user with ``hand_over`` is graded by
``run``, as that user, with nothing of root's environment but the variables given.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
USER = "course-grader"
# setup.sh's environment for all users; setup.sh reads the same variable.
VENV = Path(os.environ.get("COURSE_HUB_VENV", "/opt/course-hub"))
# setup.sh's exit status when something it needs cannot be installed.
MISSING_PREREQUISITE = 3
# useradd and runuser live in sbin, which root's PATH may lack.
SBIN = "/usr/local/sbin:/usr/sbin:/sbin:/usr/local/bin:/usr/bin:/bin"


@dataclass
class OrdinaryUser:
    """The user, the environment it grades with, and a folder of its own for this run."""

    name: str
    venv: Path
    workspace: Path  # owned by the user; HOME is its home/ folder

    def hand_over(self, path: Path) -> None:
        """Gives ``path`` and everything in it to the user (links themselves, not their targets)."""
        subprocess.run(["chown", "-R", "--no-dereference", f"{self.name}:", str(path)],
                       check=True)

    def run(self, command: list[str], cwd: Path, timeout: float,
            **variables: str) -> subprocess.CompletedProcess[str]:
        """Runs the environment's ``command[0]`` with its arguments, as the user, in ``cwd``."""
        environment = {"HOME": str(self.workspace / "home"), "LANG": "C.UTF-8",
                       "PATH": f"{self.venv / 'bin'}:/usr/bin:/bin", **variables}
        return subprocess.run(
            [shutil.which("runuser", path=SBIN), "-u", self.name, "--", "env", "-i",
             *(f"{name}={value}" for name, value in environment.items()),
             str(self.venv / "bin" / command[0]), *command[1:]],
            cwd=cwd, capture_output=True, text=True, timeout=timeout)


def unavailable() -> str | None:
    """Why no ordinary user can grade here, or None."""
    if os.geteuid() != 0:
        return "creating the ordinary user who grades needs root (CI runs as root)"
    for tool in ("useradd", "runuser", "chown"):
        if shutil.which(tool, path=SBIN) is None:
            return f"{tool} is not installed"
    return None


def create_user() -> str | None:
    """Creates the user once (no home, no login); returns why it could not, or None."""
    if subprocess.run(["id", USER], capture_output=True).returncode == 0:
        return None
    made = subprocess.run([shutil.which("useradd", path=SBIN), "--system", "--no-create-home",
                           "--shell", "/usr/sbin/nologin", USER], capture_output=True, text=True)
    # Another test process may have created it meanwhile.
    exists = subprocess.run(["id", USER], capture_output=True).returncode == 0
    return None if exists else f"useradd {USER} failed: {made.stderr.strip()}"


def build_environment() -> str | None:
    """Builds or checks the environment for all users; returns why it could not, or None."""
    built = subprocess.run([str(ROOT / "deploy" / "hub" / "setup.sh"), "environment"],
                           capture_output=True, text=True, timeout=1800)
    if built.returncode == MISSING_PREREQUISITE:
        return f"the environment for all users could not be installed: {built.stderr[-500:]}"
    assert built.returncode == 0, f"setup.sh environment failed:\n{built.stderr[-3000:]}"
    return None


def new_workspace() -> Path:
    """A folder of the user's own, in /tmp (pytest's folders are closed to other users)."""
    workspace = Path(tempfile.mkdtemp(prefix=f"{USER}-"))
    (workspace / "home").mkdir()
    subprocess.run(["chown", "-R", f"{USER}:", str(workspace)], check=True)
    return workspace
