"""Kernels forked from a warm parent: the grading process's side of
``course_utils.autograde.sandboxed.zygote``.

A grading process that grades many notebooks starts one ``Zygote``: a process in the sandbox
that has imported torch, the graders and the IPython kernel once. The sandbox's provisioner
(``course_utils.autograde.kernels.provisioner``) of a kernel manager given the zygote asks it
for its notebook's kernel, which is forked in milliseconds, already warm, and confined further
than a kernel started alone (namespaces of its own, inside the sandbox).
Everything the kernel is given (its connection file, settings and the notebook folder's
files) goes into its own folder below ``Zygote.root``, which the kernel alone sees.
Where the zygote cannot serve a kernel (another kernel command, a folder with subfolders,
an error), the kernel is started alone in its sandbox as before.
"""

from __future__ import annotations

import json
import logging
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from typing import Any

from course_utils.autograde.kernels import folders
from course_utils.autograde.kernels.policy import (GUARDED_KERNEL, UNPRIVILEGED_ID, Sandbox,
                                                   forked_layer, kernel_environment,
                                                   kernel_view, zygote_command, zygote_view)

# Run in the sandbox as the kernels' parent.
ZYGOTE_MODULE = "course_utils.autograde.sandboxed.zygote"
# Seconds the zygote may take to import everything, and to fork and confine one kernel.
READY_TIMEOUT = 180
START_TIMEOUT = 60
_MIB = 1 << 20
log = logging.getLogger(__name__)


class ZygoteError(RuntimeError):
    """The zygote could not start, or could not start a kernel."""


class Zygote:
    """A running ``course_utils.autograde.sandboxed.zygote`` in the sandbox, and the folder it
    serves."""

    def __init__(self, autograded: str, settings: Sandbox) -> None:
        """Starts the zygote for notebooks below ``autograded`` and waits until it is ready.

        Raises:
            ZygoteError: it did not become ready (the message says why).
        """
        self.autograded = os.path.realpath(autograded)
        self.settings = settings
        # Every kernel's folder: in memory as root, scratch_mib for all of them together.
        self.root = folders.make_kernels_root(settings.scratch_mib)
        if os.geteuid() == 0:
            os.chown(self.root, UNPRIVILEGED_ID, UNPRIVILEGED_ID)
        self._errors = tempfile.TemporaryFile()
        self._parents: dict[str, int] = {}  # each kernel's parent, as the zygote numbers it
        self._lock = threading.Lock()
        # What the zygote sees, which each kernel forked from it changes into its own view.
        self.view = zygote_view(self.root, self.autograded, settings)
        command = zygote_command([sys.executable, "-m", ZYGOTE_MODULE, self.root],
                                 self.root, self.autograded, settings)
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=self._errors, text=True, cwd="/")
        try:
            ready = self._answer(READY_TIMEOUT)
        except ZygoteError:
            self.close()
            raise
        if not ready.get("ready"):
            self.close()
            raise ZygoteError(ready.get("error", "not ready"))

    def _answer(self, timeout: float) -> dict[str, Any]:
        assert self.process.stdout is not None
        readable, _, _ = select.select([self.process.stdout], [], [], timeout)
        line = self.process.stdout.readline() if readable else ""
        if not line:
            self._errors.seek(0)
            said = self._errors.read().decode(errors="replace").strip().splitlines()[-3:]
            raise ZygoteError(f"the kernels' parent did not answer within {timeout:.0f} s"
                              if not readable else f"the kernels' parent ended: {said}")
        return json.loads(line)

    def _ask(self, op: str, kernel_id: str, timeout: float = START_TIMEOUT) -> dict[str, Any]:
        with self._lock:
            if self.process.poll() is not None:
                raise ZygoteError("the kernels' parent has ended")
            assert self.process.stdin is not None
            try:
                self.process.stdin.write(json.dumps({"op": op, "id": kernel_id}) + "\n")
                self.process.stdin.flush()
                return self._answer(timeout)
            except (ZygoteError, OSError) as error:
                # An answer may still come: later questions would get it. Kernels start
                # alone from now on.
                self.process.kill()
                raise ZygoteError(f"no answer to {op!r}: {error}") from None

    def serves(self, kernel_cmd: list[str], folder: str) -> bool:
        """Whether a kernel with ``kernel_cmd`` in ``folder`` can be forked here: the guarded
        kernel of this Python, for a notebook folder below ``autograded``."""
        return (len(kernel_cmd) > 3 and kernel_cmd[1:3] == ["-m", GUARDED_KERNEL]
                and os.path.realpath(kernel_cmd[0]) == os.path.realpath(sys.executable)
                and os.path.realpath(folder).startswith(self.autograded + os.sep)
                and self.process.poll() is None)

    def start_kernel(self, private: str, kernel_cmd: list[str], folder: str,
                     files: dict[str, str]) -> str:
        """Forks the kernel whose folder is ``private`` (below ``root``, holding its connection
        file), in ``folder`` with copies of ``files`` (name -> where it is now), seeing what a
        kernel started alone would see (``forked_layer``); returns the kernel's id here.

        Raises:
            ZygoteError: no kernel was started (the message says why).
        """
        if os.path.dirname(private) != self.root:
            raise ZygoteError(f"{private} is not below {self.root}")
        os.mkdir(os.path.join(private, "files"), 0o755)
        for name, path in files.items():
            shutil.copyfile(path, os.path.join(private, "files", name))
        folder = os.path.realpath(folder)
        copies = {name: os.path.join(private, "files", name) for name in files}
        view = kernel_view(folder, private, self.settings, copies)
        settings = {
            "arguments": kernel_cmd[3:], "folder": folder, "environment": kernel_environment(),
            "mounts": [mount.as_dict() for mount in forked_layer(view, self.view)],
            "limits": {"memory": int(self.settings.memory_gib * (1 << 30)),
                       "processes": self.settings.processes,
                       "file_size": self.settings.file_size_mib * _MIB,
                       "cpu": self.settings.cpu_seconds}}
        with open(os.path.join(private, "kernel.json"), "w") as file:
            json.dump(settings, file)
        kernel_id = os.path.basename(private)
        answer = self._ask("start", kernel_id)
        if not answer.get("ok"):
            raise ZygoteError(answer.get("error", "no kernel"))
        self._parents[kernel_id] = answer["pid"]
        return kernel_id

    def kernel_processes(self, kernel_id: str) -> list[int]:
        """The processes, by this machine's process ids, of the kernel forked as
        ``kernel_id``: its parent in the zygote and every process below it."""
        parents: dict[int, int] = {}
        numbers: dict[int, list[str]] = {}  # a process's id in each PID namespace, outermost first
        for entry in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{entry}/status") as file:
                    status = dict(line.split(":\t", 1) for line in file if ":\t" in line)
            except (OSError, ValueError):
                continue
            parents[int(entry)] = int(status["PPid"])
            numbers[int(entry)] = status.get("NSpid", "").split()
        # The zygote's namespace is one below that of its sandbox's first process.
        depth = len(numbers.get(self.process.pid, [])) + 1
        wanted = str(self._parents.get(kernel_id))
        found = [pid for pid, ids in numbers.items() if len(ids) == depth and ids[-1] == wanted
                 and self._below(pid, parents)]
        if len(found) != 1:
            return []
        parent_of_kernel = found[0]
        return [pid for pid in parents
                if pid == parent_of_kernel or self._below(pid, parents, parent_of_kernel)]

    def _below(self, pid: int, parents: dict[int, int], top: int | None = None) -> bool:
        """Whether ``pid`` descends from ``top`` (by default the zygote's sandbox)."""
        top = self.process.pid if top is None else top
        while pid > 1:
            pid = parents.get(pid, 0)
            if pid == top:
                return True
        return False

    def exit_status(self, kernel_id: str) -> int | None:
        """The forked kernel's exit status; None while it runs."""
        try:
            return self._ask("poll", kernel_id)["exit"]
        except ZygoteError:  # the zygote's end was the kernel's
            return -signal.SIGKILL

    def kill(self, kernel_id: str) -> None:
        """Ends the forked kernel and every process it started."""
        try:
            self._ask("kill", kernel_id)
        except ZygoteError:  # and so have its kernels
            pass

    def close(self) -> None:
        """Ends the zygote and every kernel forked from it."""
        if self.process.stdin:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stdout:
            self.process.stdout.close()
        self._errors.close()
        folders.remove(self.root)


def start_for(autograded: str, settings: Sandbox) -> Zygote | None:
    """A zygote for notebooks below ``autograded``; None (kernels then start alone, as
    protected) where it cannot start here, with the reason logged."""
    try:
        return Zygote(autograded, settings)
    except (ZygoteError, OSError) as error:
        log.warning("Kernels will start one by one (slower, equally protected): %s", error)
        return None
