"""The sandbox's policy: what a student's kernel sees (one list of mounts, ``kernel_view``,
rendered as bubblewrap's arguments or as a forked kernel's mount calls) and may use.

The kernel sees the Python environment, the ``course_utils`` package and ``data/`` read-only,
the other files of its own notebook's folder read-only on a private writable scratch space,
and nothing else of the course directory; it has no network, runs as an unprivileged user
(as root: a user id of its own, so that one kernel's processes never count against another's
limit), and its memory, processes, file sizes and CPU time are limited (its processes' memory
together by ``cgroups``, applied by the provisioner). It talks to nbgrader over jupyter_client's
IPC transport (unix sockets in a private folder bound into the sandbox, ``folders``), because a
kernel without network cannot use TCP.

Settings, in ``nbgrader_config.py`` or on the command line (``--Sandbox.memory_gib=12``):

    c.Sandbox.enabled = True      # False grades UNPROTECTED: only for trusted notebooks
    c.Sandbox.memory_gib = 8      # each kernel's processes together (a cgroup, where one can
                                  # be made) and each process alone (RLIMIT_DATA)
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

from course_utils.autograde.kernels.diagnosis import diagnose, this_host
from course_utils.autograde.sandboxed.mounts import Mount, below, bwrap_arguments

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
    memory_gib = Float(8.0, help="Memory of each kernel, GiB: of its processes together (a "
                                 "memory cgroup, where grading can make one) and writable "
                                 "memory of each process (RLIMIT_DATA: unlike an "
                                 "address-space limit, it lets CUDA reserve address space)."
                       ).tag(config=True)
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


def _system_mounts() -> list[Mount]:
    """Read-only binds of the system and the Python environment (venv and base interpreter)."""
    mounts = [Mount("ro-bind", top, top) for top in ("/usr", "/etc", "/opt")
              if os.path.isdir(top)]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64"):
        if os.path.islink(top):
            mounts.append(Mount("symlink", top, os.readlink(top)))
        elif os.path.isdir(top):
            mounts.append(Mount("ro-bind", top, top))
    for prefix in sorted({sys.prefix, sys.base_prefix, sys.exec_prefix}):
        real = os.path.realpath(prefix)
        mounts.append(Mount("ro-bind", prefix, real))
        if real != prefix:
            mounts.append(Mount("ro-bind", real, real))
    return mounts


def _course_mounts() -> list[Mount]:
    """Read-only binds of the course package, its ``pyproject.toml`` and the data folder, each
    at the path the grading process sees it (so the package finds its data the same way)."""
    package = package_dir()
    mounts = [Mount("ro-bind", str(package), str(package))]
    pyproject = package.parent / "pyproject.toml"
    if pyproject.exists():
        mounts.append(Mount("ro-bind", str(pyproject), str(pyproject)))
    data = data_dir()
    if data.exists():
        mounts.append(Mount("ro-bind", str(data), str(data.resolve())))
    return mounts


def _common_view(settings: Sandbox) -> list[Mount]:
    """What every sandbox sees: its processes, a minimal /dev, private scratch spaces, the
    system, the Python environment and the course package."""
    scratch = settings.scratch_mib * _MIB
    # A private /dev/shm anyone may write, as on the host: multiprocessing's locks and queues
    # (DataLoader workers) need it, and bubblewrap's new /dev has one only root may write.
    # /dev itself read-only: an ordinary user owns bubblewrap's, which kernels forked from one
    # zygote share (its device nodes stay usable). The private /tmp comes before the binds:
    # they may lie below it (a course, venv or grading folder under /tmp), and a tmpfs mounted
    # after them would hide them.
    return ([Mount("proc", "/proc"), Mount("dev", "/dev"),
             Mount("tmpfs", "/dev/shm", size=scratch, mode=0o1777), Mount("remount-ro", "/dev"),
             Mount("tmpfs", "/tmp", size=scratch, mode=0o1777)]
            + _system_mounts() + _course_mounts())


def notebook_folder_files(folder: str) -> dict[str, str]:
    """The entries of a notebook's folder the kernel sees, by name: all but notebooks
    (nbgrader's copy there holds the hidden tests)."""
    return {entry: os.path.join(folder, entry) for entry in sorted(os.listdir(folder))
            if not entry.endswith(".ipynb")}


def kernel_view(folder: str, private: str, settings: Sandbox,
                files: dict[str, str] | None = None) -> list[Mount]:
    """What a kernel sees: the common view; its notebook's folder as a private scratch space
    holding read-only copies of the folder's other files (``files``: name -> where it is now,
    by default those in ``folder`` itself); and ``private``, its IPC sockets' folder."""
    if files is None:
        files = notebook_folder_files(folder)
    return (_common_view(settings)
            + [Mount("tmpfs", folder, size=settings.scratch_mib * _MIB, mode=0o1777)]
            + [Mount("ro-bind", os.path.join(folder, name), path)
               for name, path in files.items()]
            + [Mount("bind", private, private)])


def zygote_view(root: str, autograded: str, settings: Sandbox) -> list[Mount]:
    """What the zygote sees: the common view, every kernel's folder below ``root``, and an
    empty ``autograded``, where kernels forked from it find their notebook folders."""
    return _common_view(settings) + [Mount("tmpfs", autograded), Mount("bind", root, root)]


def forked_layer(kernel: list[Mount], zygote: list[Mount]) -> list[Mount]:
    """The mounts a kernel forked from the zygote makes in its own mount namespace, where it
    sees ``zygote``, so that it sees ``kernel``: each scratch space and /dev/pts anew (the
    zygote's are shared by all its kernels), what ``kernel`` binds below them bound there again
    from the zygote's own; what only the zygote sees covered by empty read-only folders; then
    what only the kernel sees."""
    shared = {(mount.kind, mount.target) for mount in zygote}
    fresh = [mount.target for mount in kernel
             if mount.kind in ("tmpfs", "dev") and (mount.kind, mount.target) in shared]
    renewed = [mount for mount in kernel if (mount.kind, mount.target) in shared
               and (mount.target in fresh or any(below(mount.target, top) for top in fresh))]
    layer = [Mount(mount.kind, mount.target, mount.target, mount.size, mount.mode)
             if mount.kind in ("bind", "ro-bind") else mount for mount in renewed]
    targets = {mount.target for mount in kernel}
    covered = [mount.target for mount in zygote if mount.target not in targets
               and not any(below(mount.target, top) for top in fresh)]
    layer += [Mount("tmpfs", target, size=1 << 16) for target in covered]
    layer += [mount for mount in kernel if (mount.kind, mount.target) not in shared]
    return layer + [Mount("remount-ro", target) for target in covered]


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
    view = kernel_view(folder, private, settings, files)
    return limits + _confined(view, folder, kernel_environment(), user) + list(kernel_cmd)


def zygote_command(command: list[str], root: str, autograded: str,
                   settings: Sandbox) -> list[str]:
    """The command that runs ``command`` (``course_utils.autograde.sandboxed.zygote``) in the
    zygote's sandbox (``zygote_view``): kernels forked from it confine themselves further, each
    to the view of a kernel started alone (``forked_layer``), and set their own limits."""
    # A process with one thread can fork safely: numpy's BLAS starts none with this. And
    # matplotlib, imported there, takes the backend ipykernel sets before a kernel's imports.
    environment = {"MPLBACKEND": "module://matplotlib_inline.backend_inline",
                   **kernel_environment(), "OPENBLAS_NUM_THREADS": "1"}
    view = zygote_view(root, autograded, settings)
    return _confined(view, "/", environment) + list(command)


def _as_root() -> bool:
    return os.geteuid() == 0


def _confined(view: list[Mount], folder: str, environment: dict[str, str],
              user: int = UNPRIVILEGED_ID) -> list[str]:
    """bubblewrap's arguments for a sandbox that sees ``view``, entered in ``folder``, running
    as ``user`` when grading as root; ends with "--", before the command."""
    sandbox = ["bwrap", "--die-with-parent", "--new-session",
               "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts",
               "--unshare-cgroup-try", "--hostname", "sandbox"]
    if not _as_root():
        sandbox += ["--unshare-user"]
    sandbox += bwrap_arguments(view) + ["--chdir", folder, "--clearenv"]
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
    """Why sandboxed kernels cannot run on this machine and what to do about it, or None when
    they can: a trial sandbox is started, and its failure diagnosed (``diagnosis``)."""
    host = this_host()
    if not host.platform.startswith("linux"):
        return diagnose("", host)
    for tool, package in (("bwrap", "bubblewrap"), ("prlimit", "util-linux"),
                          ("setpriv", "util-linux")):
        if shutil.which(tool) is None:
            return (f"the command `{tool}` is missing. To fix: install the package "
                    f"`{package}` (`sudo apt-get install {package}`, `sudo dnf install "
                    f"{package}`)")
    with tempfile.TemporaryDirectory(prefix="course-sandbox-") as folder:
        os.chmod(folder, 0o777)
        command = bwrap_command(["true"], folder, folder, Sandbox())
        try:
            trial = subprocess.run(command, capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as error:
            return diagnose(str(error), host)
    if trial.returncode != 0:
        return diagnose(trial.stderr.strip() or f"exit status {trial.returncode}", host)
    return None


def unavailable_message(reason: str) -> str:
    """What autograding says when it stops because the sandbox cannot start: ``reason`` (the
    cause and its fix, from ``missing``), and the unprotected way out."""
    return (f"Autograding stopped before grading anyone: student notebooks must run in the "
            f"sandbox, and {reason}\nOnly for notebooks you trust, grade unprotected with "
            f"`{UNPROTECTED_SETTING}` in nbgrader_config.py (or --Sandbox.enabled=False on the "
            f"command line).")


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
