"""nbgrader's ``Execute`` for untrusted notebooks: sandboxed kernels, trusted test-cell scores.

For each notebook, ``SafeExecute`` (nbgrader's process, trusted):

1. starts the kernel in the sandbox (``course_utils.autograde.kernels``) with its guard in
   place (``course_utils.autograde.sandboxed.guard``) and runs every cell without IPython's
   input history, where later cells could read the hidden tests of earlier test cells;
2. before any cell, has the guard remember the graders and the library functions they use;
3. runs each test cell with ``grade``, ``points`` and ``check`` bound to the graders' own (and
   the notebook's own names put back afterwards, so a student's variable ``check`` is harmless);
4. after each test cell asks the guard what was patched: if anything was, the cell scores 0 and
   shows a ``tampered`` report naming it; otherwise the cell's score is checked against the
   reports it displayed (data, not text), and a test cell without a genuine report scores 0;
5. has the referee (``course_utils.autograde.referee``) check the outcomes of the cell's
   exercises from here, outside the student's process: the cell scores at most what they allow.

With ``c.Sandbox.enabled = False`` it is nbgrader's plain ``Execute``.
"""

from __future__ import annotations

import os
import secrets
import time
from queue import Empty
from typing import Any

from jupyter_core.utils import ensure_async, run_sync
from nbclient.exceptions import DeadKernelError
from nbformat import NotebookNode
from nbgrader.preprocessors import Execute

from course_utils.autograde.kernels.manager import SandboxedKernelManager
from course_utils.autograde.kernels.policy import GUARDED_KERNEL, UNPROTECTED_SETTING, Sandbox
from course_utils.autograde.kernels.pool import RESOURCE, KernelPool
from course_utils.autograde.referee import Violation, bound, probe_makers
from course_utils.autograde.sandboxed.wire import decode, encode
from course_utils.autograde.scores import judge_test_cell
from course_utils.protocol import data_of, exercises_graded, is_test_cell

# The names a test cell relies on, bound to the graders' own while it runs.
GRADER_NAMES = ("grade", "points", "check")
_BIND = (f"__course_saved = {{n: globals()[n] for n in {GRADER_NAMES!r} if n in globals()}}\n"
         f"from course_utils.graders import {', '.join(GRADER_NAMES)}")
_UNBIND = (f"for __course_name in {GRADER_NAMES!r}:\n"
           "    globals().pop(__course_name, None)\n"
           "globals().update(__course_saved)\n"
           "del __course_saved, __course_name")
_BASELINE = (f"import {GUARDED_KERNEL} as __course_guard\n__course_guard.baseline()\n"
             "del __course_guard")
_CHANGED = f"__import__({GUARDED_KERNEL!r}, fromlist=['answer']).answer()"
_SERVE = "__import__('course_utils.autograde.sandboxed.serve', fromlist=['serve']).serve({!r})"
# Seconds the guard may take to answer (it takes milliseconds in an idle kernel), and an
# interrupted kernel to become idle again.
_GUARD_TIMEOUT = 15
# Seconds the kernel may take to serve the referee (a few calls of the student's code).
_REFEREE_TIMEOUT = 120


class SafeExecute(Execute):
    """nbgrader's ``Execute`` with sandboxed, guarded kernels and trusted test-cell scores."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.protected = Sandbox(parent=self).enabled
        self._guarded = False
        self._pool: KernelPool | None = None
        if self.protected:
            self.kernel_manager_class = SandboxedKernelManager
        else:
            self.log.warning("Grading WITHOUT the sandbox (%s): student code runs with your "
                             "rights.", UNPROTECTED_SETTING)

    def preprocess(self, nb: NotebookNode, resources: Any = None,
                   km: Any = None) -> tuple[NotebookNode, Any]:
        """Runs the notebook in a kernel started for it ahead of time where the grading process
        handed over its pool (``resources[RESOURCE]``, ``course_utils.autograde.kernels.pool``)
        with a kernel ready, else in one started now; shut down afterwards."""
        self._pool = (resources or {}).get(RESOURCE)
        if km is None and self.protected and self._pool is not None:
            folder = (resources or {}).get("metadata", {}).get("path") or os.getcwd()
            km = self._pool.take(folder, self.kernel_name or
                                 nb.metadata.get("kernelspec", {}).get("name", "python"))
            if km is not None:
                self.log.info("Running %s in its kernel started ahead (%s)", folder,
                              self._pool.origins.get(os.path.abspath(folder)))
                try:
                    return super().preprocess(nb, resources, km=km)
                finally:
                    # Every output is in: stopping the kernel at once spares the notebook
                    # the seconds of a graceful shutdown (its sandbox goes with it).
                    self.shutdown_kernel = "immediate"
                    self._cleanup_kernel()
        return super().preprocess(nb, resources, km=km)

    def create_kernel_manager(self) -> Any:
        """A kernel started now forks from the zygote of the grading process's pool, if any."""
        km = super().create_kernel_manager()
        if isinstance(km, SandboxedKernelManager) and self._pool is not None:
            km.zygote = self._pool.zygote
        return km

    async def async_execute_cell(self, cell: NotebookNode, cell_index: int,
                                 execution_count: Any = None,
                                 store_history: bool = True) -> NotebookNode:
        if not self.protected:
            return await super().async_execute_cell(cell, cell_index, execution_count,
                                                    store_history)
        if not self._guarded:
            await self._quietly(_BASELINE)
            self._guarded = True
        is_test = is_test_cell(cell)
        if is_test:
            await self._quietly(_BIND)
        cell = await super().async_execute_cell(cell, cell_index, execution_count,
                                                store_history=False)
        if is_test:
            changed = _guard_answer(await self._quietly(_UNBIND, {"changed": _CHANGED}))
            bounds = await self._referee(cell) if changed == [] else {}
            judge_test_cell(cell, changed, bounds)
        return cell

    async def _referee(self, cell: NotebookNode) -> dict[str, tuple[float, list[Violation]]]:
        """For each exercise of the test cell the referee checks: the highest score its outcomes
        allow, and the violations found (none: the score stands; a kernel that did not serve
        the referee allows 0)."""
        makers = probe_makers()
        bounds = {}
        for exercise in exercises_graded(cell.source):
            if exercise not in makers:
                continue
            probe = makers[exercise](secrets.randbelow(2**31))
            reply = await self._quietly("", {"referee": _SERVE.format(encode(probe.request))},
                                        timeout=_REFEREE_TIMEOUT)
            outcome, why = _served(reply)
            if outcome is None:
                self.log.warning("The kernel did not serve the referee for %s: %s", exercise, why)
                found = [Violation((), "the kernel did not serve the referee")]  # allows 0
            else:
                found = probe.judge(outcome)
            bounds[exercise] = (bound(exercise, data_of(cell.source, exercise), found), found)
        return bounds

    # nbconvert calls the synchronous wrapper, which nbclient binds to its own coroutine.
    execute_cell = run_sync(async_execute_cell)

    async def _async_handle_timeout(self, timeout: int,
                                    cell: NotebookNode | None = None) -> Any:
        # nbgrader interrupts a cell that ran out of time. A kernel that ignores the interrupt
        # would keep every later cell waiting for the full limit: it is stopped instead, and
        # this notebook (only this one) is not graded: nbgrader reports it as an error.
        reply = await super()._async_handle_timeout(timeout, cell)
        if self.protected and await self._quietly("", timeout=_GUARD_TIMEOUT) is None:
            await ensure_async(self.km.shutdown_kernel(now=True))
            raise DeadKernelError(f"The kernel ran past the time limit ({timeout} s) and "
                                  "ignored the interrupt, so it was stopped.")
        return reply

    async def _quietly(self, code: str, expressions: dict[str, str] | None = None,
                       timeout: float = _GUARD_TIMEOUT) -> dict[str, Any] | None:
        """Runs ``code`` in the kernel without output or history; the reply, or None when the
        kernel did not answer in time."""
        assert self.kc is not None
        msg_id = self.kc.execute(code, silent=True, store_history=False,
                                 user_expressions=expressions or {}, stop_on_error=False)
        deadline = time.monotonic() + timeout
        try:
            while True:
                msg = await ensure_async(self.kc.shell_channel.get_msg(
                    timeout=max(0.0, deadline - time.monotonic())))
                if msg["parent_header"].get("msg_id") == msg_id:
                    return msg
        except Empty:
            return None


def _json_expression(reply: dict[str, Any] | None, name: str) -> Any:
    """The JSON value of the user expression ``name`` in ``reply``; None when it has none."""
    if reply is None or reply["content"].get("status") != "ok":
        return None
    answer = reply["content"].get("user_expressions", {}).get(name, {})
    if answer.get("status") != "ok":
        return None
    return answer.get("data", {}).get("application/json")


def _served(reply: dict[str, Any] | None) -> tuple[Any, str]:
    """The outcome the kernel served the referee, or None and why there is none."""
    if reply is None:
        return None, "no reply in time"
    answer = _json_expression(reply, "referee")
    try:
        served = decode(answer["answer"])
        return served["outcome"], ""
    except (KeyError, TypeError, ValueError):
        return None, repr(answer if answer is not None else reply["content"])[:500]


def _guard_answer(reply: dict[str, Any] | None) -> list[str] | None:
    """What the guard says was patched, or None when it gave no valid answer."""
    changed = _json_expression(reply, "changed")
    if not isinstance(changed, list) or not all(isinstance(name, str) for name in changed):
        return None
    return changed
