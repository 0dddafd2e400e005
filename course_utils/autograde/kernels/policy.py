"""The sandbox's policy: what a student's kernel sees and may use, as bubblewrap's arguments.

The kernel sees the Python environment, the ``course_utils`` package and ``data/`` read-only,
the other files of its own notebook's folder read-only on a private writable scratch space,
and nothing else of the course directory; it has no network, runs as an unprivileged user
(as root: a user id of its own, so that one kernel's processes never count against another's
limit), and its memory, processes, file sizes and CPU time are limited. It talks to nbgrader
over jupyter_client's IPC transport (unix sockets in a private folder bound into the sandbox),
because a kernel without network cannot use TCP.

Settings, in ``nbgrader_config.py`` or on the command line (``--Sandbox.memory_gib=12``):

    c.Sandbox.enabled = True      # False grades UNPROTECTED: only for trusted notebooks
    c.Sandbox.memory_gib = 8      # writable memory of each kernel process (RLIMIT_DATA)
    c.Sandbox.processes = 128     # processes and threads of the sandbox's user
    c.Sandbox.file_size_mib = 512
    c.Sandbox.cpu_seconds = 1800
    c.Sandbox.scratch_mib = 1024  # each of /tmp, /dev/shm and the notebook's folder (in memory)

Example:
    >>> folder = tempfile.mkdtemp()  # the notebook's folder
    >>> command = bwrap_command(["python", "-m", "ipykernel_launcher"], folder, folder, Sandbox())
    >>> "--unshare-net" in command and command[-3:] == ["python", "-m", "ipykernel_launcher"]
    True
"""

from __future__ import annotations

import functools
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from traitlets import Bool, Float, Integer
from traitlets.config import Application, Configurable

# The one setting that allows grading without the sandbox, named in every message about it.
UNPROTECTED_SETTING = "c.Sandbox.enabled = False"
# Whom the kernel runs as when nbgrader runs as root: the kernel's processes count against
# this user's process limit, and it cannot read files only root may read.
UNPRIVILEGED_ID = 65534
# Grading as root, a kernel started alone runs as a user id of its own from this range, which
# no account uses: its process limit then counts its own processes only, not those of every
# kernel running beside it as ``nobody`` (kernels forked from the zygote count per user
# namespace instead).
KERNEL_USER_IDS = range(1 << 30, (1 << 30) + (1 << 20))
# Variables a kernel may inherit from nbgrader's environment; everything else is dropped.
PASSED_VARIABLES = ("LANG", "LC_ALL", "LC_CTYPE", "TZ", "TERM", "NBGRADER_EXECUTION",
                    "COURSE_DATA_DIR", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                    "OPENBLAS_NUM_THREADS", "PYTHONHASHSEED", "MPLBACKEND")
_MIB = 1 << 20
# Started in place of ``ipykernel_launcher``: the kernel with its guard in place.
GUARDED_KERNEL = "course_utils.autograde.sandboxed.guard"


class Sandbox(Configurable):
    """The sandbox's settings: whether it is on, and the limits of each kernel."""

    enabled = Bool(True, help="Run each student's kernel in the sandbox. False grades "
                              "unprotected: only for notebooks you trust.").tag(config=True)
    memory_gib = Float(8.0, help="Writable memory of each kernel process, GiB (RLIMIT_DATA: "
                                 "unlike an address-space limit, it lets CUDA reserve "
                                 "address space).").tag(config=True)
    processes = Integer(128, help="Processes and threads a kernel may add.").tag(config=True)
    file_size_mib = Integer(512, help="Largest file a kernel may write, MiB.").tag(config=True)
    cpu_seconds = Integer(1800, help="CPU time of a kernel, seconds.").tag(config=True)
    scratch_mib = Integer(1024, help="Size of /tmp, /dev/shm and the notebook's folder, each, "
                                     "MiB (kept in memory).").tag(config=True)


def package_dir() -> Path:
    """The ``course_utils`` package this grading process uses (the kernel gets the same)."""
    import course_utils
    return Path(course_utils.__file__).resolve().parent


def data_dir() -> Path:
    """The data folder ``course_utils.data`` reads (``COURSE_DATA_DIR`` or ``data/`` beside the
    package), without importing torch into nbgrader's process."""
    if "COURSE_DATA_DIR" in os.environ:
        return Path(os.environ["COURSE_DATA_DIR"]).resolve()
    return package_dir().parent / "data"


def _with_parents(args: list[str]) -> list[str]:
    """``args`` with each missing ancestor of a mount point created first, readable by all
    (bubblewrap would create them readable by root only)."""
    out: list[str] = []
    made: set[str] = {"/"}
    i = 0
    while i < len(args):
        option = args[i]
        # "--size N --tmpfs DEST" is one mount
        width = {"--ro-bind": 3, "--bind": 3, "--tmpfs": 2, "--size": 4, "--chmod": 3,
                 "--symlink": 3}.get(option, 1)
        if option in ("--ro-bind", "--bind", "--tmpfs", "--size"):
            target = Path(args[i + width - 1])
            for parent in reversed(target.parents):
                if str(parent) not in made:
                    out += ["--perms", "0755", "--dir", str(parent)]
                    made.add(str(parent))
            made.add(str(target))
        out += args[i:i + width]
        i += width
    return out


def _system_mounts() -> list[str]:
    """Read-only binds of the system and the Python environment (venv and base interpreter)."""
    args: list[str] = []
    for top in ("/usr", "/etc", "/opt"):
        if os.path.isdir(top):
            args += ["--ro-bind", top, top]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64"):
        if os.path.islink(top):
            args += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            args += ["--ro-bind", top, top]
    for prefix in {sys.prefix, sys.base_prefix, sys.exec_prefix}:
        real = os.path.realpath(prefix)
        args += ["--ro-bind", real, prefix]
        if real != prefix:
            args += ["--ro-bind", real, real]
    return args


def _course_mounts() -> list[str]:
    """Read-only binds of the course package, its ``pyproject.toml`` and the data folder, each
    at the path the grading process sees it (so the package finds its data the same way)."""
    package = package_dir()
    args = ["--ro-bind", str(package), str(package)]
    pyproject = package.parent / "pyproject.toml"
    if pyproject.exists():
        args += ["--ro-bind", str(pyproject), str(pyproject)]
    data = data_dir()
    if data.exists():
        args += ["--ro-bind", str(data.resolve()), str(data)]
    return args


def notebook_folder_files(folder: str) -> dict[str, str]:
    """The entries of a notebook's folder the kernel sees, by name: all but notebooks
    (nbgrader's copy there holds the hidden tests)."""
    return {entry: os.path.join(folder, entry) for entry in sorted(os.listdir(folder))
            if not entry.endswith(".ipynb")}


def _notebook_folder_mounts(folder: str, settings: Sandbox,
                            files: dict[str, str] | None = None) -> list[str]:
    """The notebook's folder as a private scratch space holding read-only copies of its other
    files: ``files`` (name -> where it is now), by default those in ``folder`` itself."""
    args = ["--size", str(settings.scratch_mib * _MIB), "--tmpfs", folder,
            "--chmod", "1777", folder]
    for entry, path in (notebook_folder_files(folder) if files is None else files).items():
        args += ["--ro-bind", path, os.path.join(folder, entry)]
    return args


def kernel_user_id() -> int:
    """The user id a kernel started alone runs as: one of its own when grading as root.

    Example:
        >>> kernel_user_id() in KERNEL_USER_IDS or kernel_user_id() == os.geteuid()
        True
    """
    return secrets.choice(KERNEL_USER_IDS) if _as_root() else os.geteuid()


def bwrap_command(kernel_cmd: list[str], folder: str, private: str,
                  settings: Sandbox, files: dict[str, str] | None = None,
                  user: int = UNPRIVILEGED_ID) -> list[str]:
    """The command that runs ``kernel_cmd`` in the sandbox, in ``folder``, talking through
    the folder ``private`` (IPC sockets and the connection file), as ``user`` when grading as
    root. ``files`` are the folder's files when the folder is not filled yet (a kernel started
    before it is needed)."""
    processes = settings.processes + (0 if _as_root() else _processes_of(os.geteuid()))
    limits = ["prlimit", f"--data={int(settings.memory_gib * (1 << 30))}",
              f"--nproc={processes}", f"--fsize={settings.file_size_mib * _MIB}",
              f"--cpu={settings.cpu_seconds}", "--core=0", "--"]
    mounts = _notebook_folder_mounts(folder, settings, files) + ["--bind", private, private]
    return (limits + _confined(mounts, folder, settings, kernel_environment(), user)
            + list(kernel_cmd))


def zygote_command(command: list[str], root: str, autograded: str,
                   settings: Sandbox) -> list[str]:
    """The command that runs ``command`` (``course_utils.autograde.sandboxed.zygote``) in the
    sandbox of every kernel, less a notebook folder: kernels forked from it confine themselves further,
    each to one folder below ``autograded`` and one below ``root``, and set their own limits.
    """
    # A process with one thread can fork safely: numpy's BLAS starts none with this. And
    # matplotlib, imported there, takes the backend ipykernel sets before a kernel's imports.
    environment = {"MPLBACKEND": "module://matplotlib_inline.backend_inline",
                   **kernel_environment(), "OPENBLAS_NUM_THREADS": "1"}
    mounts = ["--tmpfs", autograded, "--bind", root, root]
    return _confined(mounts, "/", settings, environment) + list(command)


def _as_root() -> bool:
    return os.geteuid() == 0


def _confined(mounts: list[str], folder: str, settings: Sandbox,
              environment: dict[str, str], user: int = UNPRIVILEGED_ID) -> list[str]:
    """bubblewrap's arguments for a sandbox with ``mounts`` besides the system's and the
    course's, entered in ``folder``, running as ``user`` when grading as root; ends with "--",
    before the command."""
    sandbox = ["bwrap", "--die-with-parent", "--new-session",
               "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts",
               "--unshare-cgroup-try", "--hostname", "sandbox"]
    if not _as_root():
        sandbox += ["--unshare-user"]
    # A private /dev/shm anyone may write, as on the host: multiprocessing's locks and queues
    # (DataLoader workers) need it, and bubblewrap's new /dev has one only root may write.
    sandbox += ["--proc", "/proc", "--dev", "/dev",
                "--size", str(settings.scratch_mib * _MIB), "--tmpfs", "/dev/shm",
                "--chmod", "1777", "/dev/shm"]
    # The private /tmp comes first: binds that follow may lie below it (a course, venv or
    # grading folder under /tmp), and a tmpfs mounted after them would hide them.
    sandbox += _with_parents(
        ["--size", str(settings.scratch_mib * _MIB), "--tmpfs", "/tmp", "--chmod", "1777", "/tmp"]
        + _system_mounts() + _course_mounts() + mounts)
    sandbox += ["--chdir", folder, "--clearenv"]
    for name, value in environment.items():
        sandbox += ["--setenv", name, value]
    if _as_root():
        # Mount as root, then run the kernel as an unprivileged user: the process limit
        # does not apply to root, and root could read what the kernel must not.
        sandbox += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID", "--",
                    "setpriv", f"--reuid={user}", f"--regid={user}",
                    "--clear-groups", "--inh-caps=-all", "--bounding-set=-all"]
    return sandbox + ["--"]


def kernel_environment() -> dict[str, str]:
    """The environment of a student's kernel: a few of this process's variables, and the
    sandbox's own paths."""
    environment = {name: os.environ[name] for name in PASSED_VARIABLES if name in os.environ}
    environment.update({
        "PATH": os.pathsep.join([os.path.join(sys.prefix, "bin"), "/usr/local/bin", "/usr/bin",
                                 "/bin"]),
        "HOME": "/tmp",
        "MPLCONFIGDIR": "/tmp/matplotlib",
        "PYTHONPATH": str(package_dir().parent),
        "PYTHONDONTWRITEBYTECODE": "1",
    })
    return environment


def _processes_of(uid: int) -> int:
    """How many processes and threads ``uid`` runs now (the process limit counts them all)."""
    count = 0
    for entry in os.listdir("/proc"):
        try:
            if entry.isdigit() and os.stat(f"/proc/{entry}").st_uid == uid:
                count += len(os.listdir(f"/proc/{entry}/task"))
        except OSError:
            continue
    return count


@functools.lru_cache(maxsize=None)
def missing() -> str | None:
    """What this machine lacks to run sandboxed kernels, or None when it has everything."""
    if not sys.platform.startswith("linux"):
        return f"the sandbox needs Linux (this is {sys.platform})"
    for tool, package in (("bwrap", "bubblewrap"), ("prlimit", "util-linux"),
                          ("setpriv", "util-linux")):
        if shutil.which(tool) is None:
            return f"the command `{tool}` is missing (install the package `{package}`)"
    with tempfile.TemporaryDirectory(prefix="course-sandbox-") as folder:
        os.chmod(folder, 0o777)
        command = bwrap_command(["true"], folder, folder, Sandbox())
        try:
            trial = subprocess.run(command, capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as error:
            return f"a trial sandbox did not run: {error}"
    if trial.returncode != 0:
        return ("a trial sandbox failed (user, PID or network namespaces not allowed?): "
                + (trial.stderr.strip() or f"exit status {trial.returncode}"))
    return None


def unavailable_message(reason: str) -> str:
    """What autograding says when it stops because the sandbox cannot start."""
    return (f"Autograding stopped before grading anyone: student notebooks must run in the "
            f"sandbox, and {reason}.\nOn Debian or Ubuntu: `apt-get install bubblewrap` (and "
            f"allow unprivileged user namespaces). Only for notebooks you trust, grade "
            f"unprotected with `{UNPROTECTED_SETTING}` in nbgrader_config.py "
            f"(or --Sandbox.enabled=False on the command line).")


def _settings() -> Sandbox:
    """The settings of the running nbgrader application (defaults outside one)."""
    app = Application.instance() if Application.initialized() else None
    return Sandbox(config=app.config) if app is not None else Sandbox()


def require_sandbox(**_hook_arguments: Any) -> None:
    """nbgrader's ``pre_convert_hook``: stops autograding before the first submission when the
    sandbox is on but cannot run here.

    Raises:
        SystemExit: with ``unavailable_message``.
    """
    if not _settings().enabled:
        return
    reason = missing()
    if reason:
        raise SystemExit(unavailable_message(reason))


def enabled_for(course: Path, nbgrader_args: list[str]) -> bool:
    """Whether ``nbgrader autograde`` in ``course`` with ``nbgrader_args`` uses the sandbox.

    Example:
        >>> enabled_for(Path("."), ["--Sandbox.enabled=False"])
        False
    """
    from traitlets.config.loader import KVArgParseConfigLoader, PyFileConfigLoader
    config = PyFileConfigLoader("nbgrader_config.py", path=str(course)).load_config() \
        if (course / "nbgrader_config.py").exists() else None
    settings = [arg for arg in nbgrader_args if arg.startswith("--Sandbox.")]
    if settings:
        overrides = KVArgParseConfigLoader(settings).load_config()
        config = overrides if config is None else (config.merge(overrides) or config)
    return Sandbox(config=config).enabled if config is not None else Sandbox().enabled
