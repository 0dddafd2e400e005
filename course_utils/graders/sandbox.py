"""Calling a student's code safely: a time limit, captured output, their own traceback lines."""

from __future__ import annotations

import contextlib
import functools
import io
import os
import random
import signal
import threading
import traceback
import warnings
from typing import Any, Callable, Iterator

import numpy as np
import torch

from course_utils.jupyter import in_jupyter


class NotImplementedYet(Exception):
    """The student's code is still the untouched stub."""


class StudentError(Exception):
    """The student's code raised; ``lines`` are the traceback lines from their own code."""

    def __init__(self, error: BaseException, lines: list[str]):
        super().__init__(str(error))
        self.error = error
        self.lines = lines


class StudentTimeout(Exception):
    """The student's code did not finish within the time limit."""

    def __init__(self, seconds: float):
        super().__init__(f"ran longer than {seconds:g} s")
        self.seconds = seconds


_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _is_students(filename: str) -> bool:
    """Whether code in ``filename`` is the student's: not the grader's, not a library's."""
    path = os.path.abspath(filename)
    return not (path.startswith(_PACKAGE_DIR) or "site-packages" in path
                or "/lib/python" in path)


def raised_by_student(error: BaseException) -> dict[str, Any] | None:
    """The local variables of the frame that raised ``error`` when it is the student's own
    (an operation in their line failed, not a library function they called), else None."""
    tb = error.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is None or not _is_students(tb.tb_frame.f_code.co_filename):
        return None
    return dict(tb.tb_frame.f_locals)


def _student_frames(tb: Any) -> list[str]:
    """Traceback lines of the student's code, leaving out the grader's and libraries' frames."""
    lines = []
    for frame in traceback.extract_tb(tb):
        if not _is_students(frame.filename):
            continue
        path = os.path.abspath(frame.filename)
        where = "your cell" if frame.filename.startswith("<") or "ipykernel" in path \
            else os.path.basename(frame.filename)
        text = f"  {where}, line {frame.lineno}, in {frame.name}"
        if frame.line:
            text += f": {frame.line.strip()}"
        lines.append(text)
    return lines


class _Alarm(BaseException):
    # A BaseException so a student's bare `except Exception` cannot swallow the time limit.
    pass


# After the limit the alarm repeats at this interval until the student's code has stopped:
# an exception raised while Python runs a finaliser or a weakref callback is swallowed, so a
# single alarm could be lost and leave an endless loop running.
_ALARM_REPEAT_S = 0.2


@contextlib.contextmanager
def _time_limit(seconds: float) -> Iterator[None]:
    usable = (seconds and seconds > 0 and hasattr(signal, "setitimer")
              and threading.current_thread() is threading.main_thread())
    if not usable:
        yield
        return
    armed = True

    def on_alarm(signum: int, frame: Any) -> None:
        if armed:
            raise _Alarm

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds, _ALARM_REPEAT_S)
    try:
        yield
    finally:
        while armed:
            try:
                armed = False
                signal.setitimer(signal.ITIMER_REAL, 0)
            except _Alarm:  # a repeat landed before the flag was cleared: clear it again
                armed = True
        signal.signal(signal.SIGALRM, previous)


def _rich_output_hidden() -> contextlib.AbstractContextManager:
    """In a kernel, keeps the student's displays (tqdm's widget bars, figures) out of the report."""
    if not in_jupyter():
        return contextlib.nullcontext()
    from IPython.utils.capture import capture_output
    return capture_output(stdout=False, stderr=False, display=True)


def call_student(fn: Callable[..., Any], *args: Any, timeout: float = 10.0,
                 sink: Callable[[str], None] | None = None, **kwargs: Any) -> Any:
    """Calls ``fn`` with a time limit and its stdout, stderr and warnings captured.

    Raises:
        NotImplementedYet: the untouched stub ran.
        StudentTimeout: it ran longer than ``timeout`` seconds.
        StudentError: anything else it raised, with the student's own traceback lines.

    Example:
        >>> printed = []
        >>> call_student(lambda x: print("hi") or 2 * x, 21, sink=printed.append), printed
        (42, ['hi\\n'])
    """
    captured = io.StringIO()
    try:
        with contextlib.redirect_stdout(captured), contextlib.redirect_stderr(captured), \
                _rich_output_hidden(), \
                warnings.catch_warnings(record=True) as caught, _time_limit(timeout):
            warnings.simplefilter("always")
            result = fn(*args, **kwargs)
    except _Alarm:
        raise StudentTimeout(timeout) from None
    except NotImplementedError as exc:
        raise NotImplementedYet from exc
    except Exception as exc:
        raise StudentError(exc, _student_frames(exc.__traceback__)) from None
    finally:
        if sink is not None:
            sink(captured.getvalue())
    if sink is not None:
        for w in caught:
            sink(f"{w.category.__name__}: {w.message}\n")
    return result


@contextlib.contextmanager
def preserved_global_state() -> Iterator[None]:
    """Restores RNGs, grad mode, default dtype and thread count, whatever happens inside.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> expected = torch.rand(1)
        >>> _ = torch.manual_seed(0)
        >>> with preserved_global_state():
        ...     _ = torch.rand(5)
        ...     _ = torch.set_grad_enabled(False)
        >>> torch.equal(torch.rand(1), expected), torch.is_grad_enabled()
        (True, True)
    """
    python_rng = random.getstate()
    numpy_rng = np.random.get_state()
    cuda = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    grad_enabled = torch.is_grad_enabled()
    dtype = torch.get_default_dtype()
    threads = torch.get_num_threads()
    try:
        with torch.random.fork_rng(devices=cuda):
            yield
    finally:
        random.setstate(python_rng)
        np.random.set_state(numpy_rng)
        torch.set_grad_enabled(grad_enabled)
        torch.set_default_dtype(dtype)
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)


def steady_conditions(grader: Callable[..., None]) -> Callable[..., None]:
    """Runs a grader with gradient tracking on and one CPU thread, restoring both afterwards.

    Student code meets the gradient mode a fresh kernel has, so a notebook that switched
    gradients off neither breaks training nor hides a missing ``torch.no_grad()``. One thread,
    because the graded networks are small: extra threads only add synchronisation, which on a
    busy 2-core machine made each step 10 to 50 times slower.
    """

    @functools.wraps(grader)
    def run(*args: Any, **kwargs: Any) -> None:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with torch.inference_mode(False), torch.enable_grad():
                grader(*args, **kwargs)
        finally:
            torch.set_num_threads(threads)

    return run
