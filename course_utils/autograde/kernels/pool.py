"""Sandboxed kernels started before they are needed: one fresh kernel per notebook, started, and
its heavy imports done, while the notebook before it is graded.

A grading process that knows which submission comes next calls ``prepare`` for it: the kernel
starts in that submission's own sandbox (the files nbgrader will put in its folder, copied from
where they are now), forked from the grading process's zygote where it has one
(``course_utils.autograde.kernels.forked``, imports done and warmed up there) and else started
alone, and is asked, silently and without history, to import torch, matplotlib and the graders
(and, started alone, to warm them up).
``SafeExecute`` then takes that kernel for the notebook in place of starting one, but only if it
was prepared for exactly this folder, with exactly the files nbgrader put there, and is still
alive; otherwise it starts one as usual. A kernel is never given to a second notebook: each is
shut down after its notebook, and nothing one student's code did reaches another's kernel (a
forked kernel is a copy of the zygote, which never runs a notebook's code).

The grading process hands its pool to ``SafeExecute`` with each notebook, in nbconvert's
resources under ``RESOURCE``.
"""

from __future__ import annotations

import filecmp
import os
import time
from dataclasses import dataclass
from queue import Empty
from typing import Any

from jupyter_client import KernelClient
from jupyter_core.utils import ensure_async, run_sync
from nbgrader.coursedir import CourseDirectory
from nbgrader.utils import find_all_files, setenv

from course_utils.autograde.kernels.forked import Zygote
from course_utils.autograde.kernels.manager import SandboxedKernelManager
from course_utils.autograde.kernels.policy import notebook_folder_files

# The key of nbconvert's resources under which a notebook's executor finds the pool.
RESOURCE = "course_kernel_pool"
# Seconds a prepared kernel may take to start and import (nbclient's own startup limit).
READY_TIMEOUT = 60
# Run in each prepared kernel before its notebook: the imports every lesson starts with, and
# the first figure, backward pass and optimizer step, whose one-time set-up (fonts, PNG
# writer, autograd engine, the optimizers' compiler hooks) would otherwise fall into the notebook's time. It leaves no name behind,
# draws no random number and touches no pyplot state (the figure is not pyplot's).
PRELOAD = """\
import io as __course_io, torch, matplotlib.pyplot, course_utils.graders
from matplotlib.figure import Figure as __course_Figure
__course_figure = __course_Figure()
__course_figure.add_subplot().plot([0, 1], [1, 0], label="$x^2$")
__course_figure.legend()
__course_figure.savefig(__course_io.BytesIO(), format="png")
__course_x = torch.nn.Parameter(torch.ones(2, 2))
(__course_x @ __course_x).sum().backward()
torch.optim.SGD([__course_x], lr=0.1).step()
del __course_io, __course_Figure, __course_figure, __course_x, torch, matplotlib
del course_utils
"""
# What a kernel forked from the zygote runs instead: the zygote imported the rest and warmed up
# (``course_utils.autograde.sandboxed.zygote``), and a figure drawn here again would cost each
# kernel a tenth of a second and spare its notebook nothing.
FORKED_PRELOAD = """\
import matplotlib.pyplot, course_utils.graders
del matplotlib, course_utils
"""


@dataclass
class Prepared:
    """A kernel started for one notebook folder."""

    folder: str
    kernel_name: str
    files: dict[str, str]
    manager: SandboxedKernelManager
    client: KernelClient
    preload: str  # the id of the message that asked for the imports


def folder_files(coursedir: CourseDirectory, lesson: str, student: str,
                 keep_own: list[str] | None = None) -> dict[str, str] | None:
    """The files nbgrader's autograde puts beside the notebook (name -> where they are now):
    the student's own, then the instructor's, which overwrite them except those in
    ``keep_own`` (``Autograde.exclude_overwriting``). None where a folder has subfolders:
    such a submission gets a kernel started the usual way.
    """
    files: dict[str, str] = {}
    ignore = list(coursedir.ignore) + ["*.ipynb"]
    for step, owner in ((coursedir.submitted_directory, student),
                        (coursedir.source_directory, ".")):
        root = coursedir.format_path(step, owner, lesson)
        for path in find_all_files(root, ignore):
            name = os.path.relpath(path, root)
            if os.sep in name:
                return None
            if owner == "." and name in (keep_own or []):
                continue
            files[name] = os.path.normpath(path)
    return dict(sorted(files.items()))


def _same_files(folder: str, files: dict[str, str]) -> bool:
    """Whether ``folder`` now holds exactly ``files`` (names and contents)."""
    try:
        present = notebook_folder_files(folder)
    except OSError:
        return False
    return set(present) == set(files) and all(
        os.path.isfile(path) and filecmp.cmp(path, files[name], shallow=False)
        for name, path in present.items())


class KernelPool:
    """The kernels one grading process has started ahead, by notebook folder, each forked from
    ``zygote`` where it serves it (None: each started alone)."""

    def __init__(self, config: Any, coursedir: CourseDirectory, extra_arguments: list[str],
                 zygote: Zygote | None = None) -> None:
        self.config = config
        self.coursedir = coursedir
        self.extra_arguments = extra_arguments
        self.zygote = zygote
        self._ready: dict[str, Prepared] = {}
        # Where each notebook folder's kernel came from, once taken: "forked" (warm, from the
        # zygote) or "ahead" (started ahead alone).
        self.origins: dict[str, str] = {}

    def __deepcopy__(self, memo: dict[int, Any]) -> KernelPool:
        # nbconvert deep-copies a notebook's resources, which carry the pool: one pool serves all.
        return self

    def prepare(self, lesson: str, student: str, kernel_name: str,
                keep_own: list[str] | None = None) -> None:
        """Starts the kernel of ``student``'s ``lesson`` notebook, unless one is ready."""
        folder = os.path.abspath(self.coursedir.format_path(
            self.coursedir.autograded_directory, student, lesson))
        files = folder_files(self.coursedir, lesson, student, keep_own)
        if folder in self._ready or files is None:
            return
        manager = SandboxedKernelManager(kernel_name=kernel_name, config=self.config)
        manager.folder_files, manager.zygote = files, self.zygote
        # The kernel's environment is taken from this process at start: as during autograde.
        with setenv(NBGRADER_EXECUTION="autograde"):
            run_sync(manager.start_kernel)(extra_arguments=self.extra_arguments, cwd=folder)
        client = manager.client()
        client.start_channels()
        preload = client.execute(FORKED_PRELOAD if manager.forked else PRELOAD, silent=True,
                                 store_history=False)
        self._ready[folder] = Prepared(folder, kernel_name, files, manager, client, preload)

    def take(self, folder: str, kernel_name: str) -> SandboxedKernelManager | None:
        """The kernel prepared for ``folder``, if it fits what nbgrader is about to run there;
        otherwise None (and a kernel that does not fit is shut down)."""
        prepared = self._ready.pop(os.path.abspath(folder), None)
        if prepared is None:
            return None
        fits = prepared.kernel_name == kernel_name and _same_files(folder, prepared.files)
        # The kernel is handed over once it has done its imports (it would be waited for
        # anyway), so that no request of the pool's is left in flight.
        answered = fits and run_sync(_answered)(prepared.client, prepared.preload)
        prepared.client.stop_channels()
        if answered and run_sync(prepared.manager.is_alive)():
            self.origins[prepared.folder] = "forked" if prepared.manager.forked else "ahead"
            return prepared.manager
        _shut_down(prepared.manager)
        return None

    def close(self) -> None:
        """Shuts down every kernel not taken."""
        for prepared in self._ready.values():
            prepared.client.stop_channels()
            _shut_down(prepared.manager)
        self._ready.clear()


async def _answered(client: KernelClient, msg_id: str) -> bool:
    """Whether the kernel answered the request ``msg_id`` within ``READY_TIMEOUT``."""
    deadline = time.monotonic() + READY_TIMEOUT
    try:
        while True:
            reply = await ensure_async(client.get_shell_msg(
                timeout=max(0.0, deadline - time.monotonic())))
            if reply["parent_header"].get("msg_id") == msg_id:
                return True
    except Empty:
        return False


def _shut_down(manager: SandboxedKernelManager) -> None:
    run_sync(manager.shutdown_kernel)(now=True)
