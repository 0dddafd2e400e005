"""The parent of forked kernels: runs in a sandbox, imports torch, the graders and the kernel
once, and forks a fresh, confined kernel for each notebook.

It reads one request per line on stdin and answers one JSON line on stdout:

- ``{"op": "start", "id": ID}``: forks the kernel whose folder ``<root>/ID/`` the grading
  process filled (``kernel.json``: the kernel's arguments, notebook folder, environment,
  limits and mounts; ``files/``: the notebook folder's other files; the connection file). Answers
  ``{"ok": true, "pid": PID}`` (the kernel's parent here) once the kernel is confined, or
  ``{"ok": false, "error": ...}``.
- ``{"op": "poll", "id": ID}``: ``{"ok": true, "exit": None or the exit status}``.
- ``{"op": "kill", "id": ID}``: ends the kernel and every process it started.

It never reads a kernel's folder itself: what one student's kernel is given never enters the
memory the next kernel is forked from. Each kernel (three processes: a parent that creates the
namespaces, an init, the kernel) gets its own user, mount, PID, network, IPC and UTS
namespaces; a private ``/tmp``, ``/dev/shm`` and notebook folder in memory; only its own folder
of ``<root>``; its limits; no capabilities; and, as in a fresh kernel, new random seeds.
Forking is only safe from a process with one thread, so the parent refuses to start with more.

Example (inside the sandbox ``course_utils.autograde.kernels.forked`` builds):
    $ python -m course_utils.autograde.sandboxed.zygote /run/kernels
"""

from __future__ import annotations

import fcntl
import importlib
import json
import os
import random
import resource
import signal
import stat
import sys
from typing import Any

from course_utils.autograde.sandboxed import mounts
from course_utils.autograde.sandboxed import namespaces as ns

# The kernel's guard (the module run in place of ``ipykernel_launcher``).
GUARD = "course_utils.autograde.sandboxed.guard"
# Imported once here, and so already imported in every kernel: their import has no effect
# that depends on the kernel (no IPython shell exists yet when they run).
PRELOADED = ("numpy", "torch", "torch.nn", "torch.optim", "torch.utils.data", "matplotlib",
             "matplotlib.figure", "matplotlib.backends.backend_agg", "matplotlib.font_manager",
             "matplotlib.patches", "IPython", "ipykernel.kernelapp", "ipykernel.ipkernel",
             "tqdm", "course_utils.graders", "course_utils.data", GUARD,
             # what the first ``optimizer.step()`` imports (a second of CPU time)
             "torch._dynamo",
             # what each kernel imports as it starts (debugpy: a fifth of a second)
             "ipykernel.debugger")
# Imported by a kernel only: each sets itself up for the IPython shell running at its import.
KERNEL_ONLY = ("matplotlib.pyplot", "matplotlib_inline", "tqdm.auto", "tqdm.autonotebook",
               "ipywidgets")
_NAMESPACES = (ns.CLONE_NEWUSER | ns.CLONE_NEWNS | ns.CLONE_NEWPID | ns.CLONE_NEWNET
               | ns.CLONE_NEWIPC | ns.CLONE_NEWUTS)
# Memory is bounded by RLIMIT_DATA (writable private memory), not RLIMIT_AS: CUDA reserves far
# more address space than it uses, inaccessible, which RLIMIT_DATA does not count.
_LIMITS = {"memory": resource.RLIMIT_DATA, "processes": resource.RLIMIT_NPROC,
           "file_size": resource.RLIMIT_FSIZE, "cpu": resource.RLIMIT_CPU}


def threads() -> int:
    """Threads of this process (forking copies only the calling one)."""
    return len(os.listdir("/proc/self/task"))


def warm_up() -> None:
    """Pays once the set-up every lesson's first steps would pay in each kernel: a model's
    forward and backward pass, optimizer steps, a data loader, a figure with mathtext saved as
    PNG. On one thread, which starts no thread pool; the thread count and random generator's
    state are put back, so kernels compute and draw what fresh ones do."""
    import io
    import torch
    from matplotlib.figure import Figure
    state, threads_wanted = torch.get_rng_state(), torch.get_num_threads()
    torch.set_num_threads(1)
    model = torch.nn.Linear(4, 3)
    data = torch.utils.data.TensorDataset(torch.ones(8, 4), torch.zeros(8, dtype=torch.long))
    for optimizer in (torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9),
                      torch.optim.Adam(model.parameters())):
        for inputs, targets in torch.utils.data.DataLoader(data, batch_size=4, shuffle=True):
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(inputs), targets)
            (loss + torch.nn.functional.mse_loss(model(inputs), model(inputs).detach())).backward()
            optimizer.step()
    with torch.no_grad():
        model(torch.ones(1, 4)).argmax(dim=1).float().mean().item()
    torch.set_rng_state(state)
    torch.set_num_threads(threads_wanted)
    figure = Figure()
    figure.add_subplot().plot([0, 1], [1, 0], label="$x^2$")
    figure.legend()
    figure.savefig(io.BytesIO(), format="png")


def preload() -> None:
    """Imports ``PRELOADED`` and warms up; raises ``RuntimeError`` if that imported a
    ``KERNEL_ONLY`` module, started a thread or touched a GPU (none may be inherited)."""
    for name in PRELOADED:
        importlib.import_module(name)
    warm_up()
    early = [name for name in KERNEL_ONLY if name in sys.modules]
    gpu = sys.modules["torch"].cuda.is_initialized()
    if early or threads() != 1 or gpu:
        raise RuntimeError(f"preloading imported {early}, left {threads()} threads"
                           + (" and initialised CUDA" if gpu else ""))


def _close_descriptors() -> None:
    """Standard streams to /dev/null and every other descriptor closed (the zygote's requests
    and answers are not a kernel's to read), but read-only files: the libraries keep reading
    those they opened while warming up (matplotlib's fonts)."""
    devnull = os.open(os.devnull, os.O_RDWR)
    for stream in (0, 1, 2):
        os.dup2(devnull, stream)
    for number in map(int, os.listdir("/proc/self/fd")):
        try:
            if number > 2 and not (
                    stat.S_ISREG(os.fstat(number).st_mode)
                    and fcntl.fcntl(number, fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDONLY):
                os.close(number)
        except OSError:  # the descriptor that listed the folder, closed already
            pass


def _confine_files(settings: dict[str, Any]) -> None:
    """In this process's new mount namespace: the mounts the grading process listed
    (``course_utils.autograde.kernels.policy.forked_layer``), which make this kernel's view
    that of a kernel started alone: private scratch spaces, the notebook folder with copies of
    its files, and of the kernels' root folder only this kernel's own."""
    ns.mount(None, "/", None, ns.MS_REC | ns.MS_PRIVATE)
    mounts.make(mounts.from_dicts(settings["mounts"]))


def _run_kernel(settings: dict[str, Any], report: int) -> None:
    """The kernel itself: limits, no capabilities, its own session and environment, fresh
    random seeds; then the guarded IPython kernel (never returns)."""
    os.setsid()
    for name, limit in _LIMITS.items():
        resource.setrlimit(limit, (settings["limits"][name],) * 2)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    ns.drop_capabilities()
    os.chdir(settings["folder"])
    os.environ.clear()
    os.environ.update(settings["environment"])
    random.seed()
    sys.modules["numpy"].random.seed()
    sys.modules["torch"].seed()
    os.write(report, b"ready")
    _close_descriptors()
    guard = sys.modules[GUARD]
    sys.argv = [guard.__file__, *settings["arguments"]]
    try:
        guard.main()
    except SystemExit as end:
        os._exit(end.code if isinstance(end.code, int) else 1)
    os._exit(0)


def _kernel_parent(folder_of_kernel: str, report: int) -> None:
    """Forked for one kernel: creates its namespaces and confines its files, then waits for
    its init (PID 1 there), which waits for the kernel; ends with the kernel's status."""
    uid, gid = os.geteuid(), os.getegid()
    with open(os.path.join(folder_of_kernel, "kernel.json")) as file:
        settings = json.load(file)
    ns.unshare(_NAMESPACES)
    ns.map_own_ids(uid, gid)
    _confine_files(settings)
    init = os.fork()
    if init == 0:
        ns.die_with_parent(signal.SIGKILL)
        kernel = os.fork()
        if kernel == 0:
            _run_kernel(settings, report)
        _close_descriptors()
        while True:  # as PID 1: reap every orphan, end with the kernel
            pid, status = os.wait()
            if pid == kernel:
                os._exit(os.waitstatus_to_exitcode(status) & 0xFF)
    _close_descriptors()
    _, status = os.waitpid(init, 0)
    os._exit(os.waitstatus_to_exitcode(status) & 0xFF)


class Forker:
    """The forking parent's bookkeeping: its kernels by id, and their exit statuses."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.running: dict[str, int] = {}
        self.exited: dict[str, int] = {}

    def _reap(self) -> None:
        for kernel_id, pid in list(self.running.items()):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                self.exited[kernel_id] = os.waitstatus_to_exitcode(status)
                del self.running[kernel_id]

    def start(self, kernel_id: str) -> dict[str, Any]:
        self._reap()
        folder = os.path.join(self.root, kernel_id)
        if os.path.dirname(folder) != self.root or kernel_id in self.running:
            return {"ok": False, "error": f"bad kernel id {kernel_id!r}"}
        readable, writable = os.pipe()
        pid = os.fork()
        if pid == 0:  # never returns into this loop, whatever happens
            try:
                os.close(readable)
                _kernel_parent(folder, writable)
            except BaseException as error:  # told to the grading process, nothing else
                try:
                    os.write(writable, f"{type(error).__name__}: {error}".encode()[:4000])
                except BaseException:
                    pass
            finally:
                os._exit(70)
        os.close(writable)
        with os.fdopen(readable, "rb") as answer:
            said = answer.read(5).decode(errors="replace")
            said += answer.read().decode(errors="replace") if said != "ready" else ""
        self.running[kernel_id] = pid
        if said == "ready":  # the kernel's parent, as this PID namespace numbers it
            return {"ok": True, "pid": pid}
        self.kill(kernel_id)
        return {"ok": False, "error": said or "the kernel's parent ended without a word"}

    def poll(self, kernel_id: str) -> dict[str, Any]:
        self._reap()
        return {"ok": True, "exit": self.exited.get(kernel_id)}

    def kill(self, kernel_id: str) -> dict[str, Any]:
        pid = self.running.get(kernel_id)
        if pid is not None:
            os.kill(pid, signal.SIGKILL)  # its init dies with it, and the kernel's PID space
            os.waitpid(pid, 0)
            self.exited[kernel_id] = -signal.SIGKILL
            del self.running[kernel_id]
        return {"ok": True}

    def serve(self, requests: Any, answers: Any) -> None:
        for line in requests:
            request = json.loads(line)
            handler = {"start": self.start, "poll": self.poll, "kill": self.kill}[request["op"]]
            answers.write(json.dumps(handler(str(request["id"]))) + "\n")
            answers.flush()
        for kernel_id in list(self.running):
            self.kill(kernel_id)


def main() -> None:
    """``python -m course_utils.autograde.sandboxed.zygote ROOT``: preloads, says whether it is
    ready, and serves requests until stdin closes."""
    answers = sys.stdout
    try:
        preload()
    except Exception as error:
        answers.write(json.dumps({"ready": False, "error": f"{type(error).__name__}: {error}"})
                      + "\n")
        return
    answers.write(json.dumps({"ready": True}) + "\n")
    answers.flush()
    Forker(os.path.realpath(sys.argv[1])).serve(sys.stdin, answers)


if __name__ == "__main__":
    main()
