"""The grading machinery: reports, safe calls into student code, and the exercise registry."""

from __future__ import annotations

import contextlib
import html
import io
import math
import os
import random
import signal
import threading
import traceback
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np
import torch

PLAIN_NAMES: dict[str, str] = {
    "not_implemented": "exercise not attempted yet",
    "raised_exception": "the code raised an exception",
    "timeout": "the code ran too long (an endless loop?)",
    "wrong_return_type": "returns the wrong type",
    "wrong_value": "returns a wrong value",
    "wrong_output_shape": "model output has the wrong shape",
    "wrong_architecture": "model layers differ from the ones asked for",
    "softmax_in_model": "softmax inside the model instead of raw logits",
    "wrong_reduction": "loss uses sum (or none) instead of the mean",
    "softmax_before_cross_entropy": "softmax applied before cross-entropy",
    "numerically_unstable": "loss overflows for large logits",
    "detached_result": "result (loss or model output) is cut off from the autograd graph",
    "wrong_gradient": "analytic gradient is wrong",
    "no_in_place_update": "parameters not updated in place",
    "gradient_ascent": "update goes up the gradient instead of down",
    "update_tracked_by_autograd": "update recorded by autograd (no torch.no_grad())",
    "none_grad_crash": "crashes on parameters without a gradient",
    "modifies_gradients": "the update changes .grad",
    "no_zero_grad": "gradients never zeroed, so they accumulate",
    "zero_grad_after_backward": "gradients zeroed between backward() and step()",
    "no_backward": "backward() never called",
    "no_step": "optimizer.step() never called",
    "step_before_backward": "step() runs before backward()",
    "loss_tensor_accumulated": "loss tensors summed instead of .item() floats",
    "returns_last_batch_loss": "returns the last batch's loss as the epoch loss",
    "unweighted_batch_average": "mean of batch means, ignoring batch sizes",
    "no_train_mode": "model not put in training mode",
    "ignores_loader": "does not iterate over the loader it was given",
    "no_loss_scaling": "micro-batch losses not divided by their number",
    "zero_grad_each_micro_batch": "gradients zeroed inside the micro-batch loop",
    "step_each_micro_batch": "step() inside the micro-batch loop",
    "no_eval_mode": "model not put in evaluation mode",
    "grad_enabled_in_eval": "evaluation builds an autograd graph (no torch.no_grad())",
    "updates_parameters": "evaluation changes the model's parameters",
    "accuracy_percent": "accuracy as a percentage instead of a fraction",
    "wrong_accuracy": "accuracy is computed wrongly",
    "history_wrong_shape": "history is not one value per epoch per key",
    "accuracy_below_threshold": "model does not reach the required accuracy",
    "optimizer_state_not_saved": "optimizer state missing from the checkpoint",
    "epoch_not_restored": "resumes at the wrong epoch",
    "resume_differs": "resumed training differs from uninterrupted training",
}


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


class Stop(Exception):
    """Ends a grading early: what follows cannot be judged."""


@dataclass
class Report:
    """What a grader found: a score, diagnosis codes, and feedback a student can act on.

    Example:
        >>> r = Report("mse_loss", checks=4, failed=1, codes={"wrong_reduction"},
        ...            feedback=["Your loss is a sum, not a mean."])
        >>> r.passed, r.score, r.points(2)
        (False, 0.75, 1.5)
    """

    exercise: str
    checks: int = 0
    failed: int = 0
    codes: set[str] = field(default_factory=set)
    feedback: list[str] = field(default_factory=list)
    output: str = ""

    @property
    def passed(self) -> bool:
        return not self.codes

    @property
    def score(self) -> float:
        if self.passed:
            return 1.0
        if self.checks == 0:
            return 0.0
        # Strictly below 1 whenever anything failed.
        return min((self.checks - max(self.failed, 1)) / self.checks, 0.99)

    def points(self, maximum: float) -> float:
        """Partial credit for nbgrader: ``score * maximum``, rounded to 2 decimals."""
        return round(self.score * maximum, 2)

    def __str__(self) -> str:
        if self.passed:
            head = f"{self.exercise}: all {self.checks} checks passed."
        else:
            head = (f"{self.exercise}: {self.checks - self.failed} of {self.checks} checks "
                    f"passed (score {self.score:.2f}).")
        lines = [head]
        for code in sorted(self.codes):
            lines.append(f"  [{code}] {PLAIN_NAMES.get(code, code)}")
        lines += [f"- {text}" for text in self.feedback]
        return "\n".join(lines)

    __repr__ = __str__

    def _ipython_display_(self) -> None:
        # check() displays its report itself; shown again as the cell's value it would appear
        # twice (a trailing `;` does not stop that where cells run without history, as in nbval).
        if getattr(self, "_shown_by_check", False):
            return
        from IPython.display import publish_display_data
        publish_display_data({"text/plain": str(self), "text/html": self._repr_html_()})

    def _repr_html_(self) -> str:
        colour, title = ("#1a7f37", "Passed") if self.passed else ("#cf222e", "Not yet")
        items = "".join(f"<li>{_html_text(text)}</li>" for text in self.feedback)
        codes = " ".join(f"<code title='{html.escape(PLAIN_NAMES.get(c, c))}'>{c}</code>"
                         for c in sorted(self.codes))
        summary = (f"all {self.checks} checks passed" if self.passed
                   else f"{self.checks - self.failed} of {self.checks} checks passed")
        return (f"<div style='border-left:4px solid {colour};padding:4px 10px'>"
                f"<b style='color:{colour}'>{title}</b> &mdash; <code>{self.exercise}</code>: "
                f"{summary}. {codes}<ul style='margin:4px 0'>{items}</ul></div>")


def _html_text(text: str) -> str:
    """Escape feedback for HTML, showing `backticked` words as code and keeping line breaks."""
    parts = html.escape(text).split("`")
    out = "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))
    return out.replace("\n", "<br>")


class Judge:
    """Collects the outcome of each check while a grader runs.

    Graders call ``expect`` once per isolated property, so a failure names its own cause,
    and ``call`` for every call into student code.
    """

    def __init__(self, exercise: str, timeout: float, seed: int = 0):
        self.report = Report(exercise)
        self.timeout = timeout
        self.seed = seed
        self._doing = ""
        self._known_errors: dict[str, tuple[str, str]] = {}

    def expect(self, ok: bool, code: str, message: str) -> bool:
        """Counts one check; on failure records ``code`` and ``message`` once."""
        self.report.checks += 1
        if not ok:
            self.report.failed += 1
            if code not in self.report.codes or message not in self.report.feedback:
                self.report.codes.add(code)
                self.report.feedback.append(message)
        return bool(ok)

    def require(self, ok: bool, code: str, message: str) -> None:
        """Like ``expect``, but stops grading when it fails."""
        if not self.expect(ok, code, message):
            raise Stop

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Calls student code with a time limit, its output captured; errors become ``Stop``."""
        try:
            return call_student(fn, *args, timeout=self.timeout, sink=self._sink, **kwargs)
        except NotImplementedYet:
            self.expect(False, "not_implemented",
                        "This exercise is not done yet: replace `raise NotImplementedError()` "
                        "with your code, run that cell, then run this check again.")
        except StudentTimeout as exc:
            self.expect(False, "timeout",
                        f"{self._subject()} was stopped after {exc.seconds:g} seconds without "
                        "finishing. Look for a loop that never ends, for example a `while` whose "
                        "condition never changes, or iterating over something endless.")
        except StudentError as exc:
            error = f"{type(exc.error).__name__}: {exc.error}"
            where = "\n".join(exc.lines)
            known = [entry for fragment, entry in self._known_errors.items()
                     if fragment in str(exc.error)]
            if known:
                code, message = known[0]
                self.expect(False, code, f"{message}\nThe error was {error}\n{where}")
            else:
                self.expect(False, "raised_exception", f"{self._subject()} raised {error}\n{where}")
        raise Stop

    @contextlib.contextmanager
    def context(self, doing: str = "",
                known_errors: dict[str, tuple[str, str]] | None = None) -> Iterator[None]:
        """Makes ``call`` say what it was doing, and report known errors under their own code.

        Args:
            doing: what the grader was doing, for feedback ("While {doing}, your code raised").
            known_errors: maps a fragment of an error's text to the ``(code, message)`` that
                explains it, e.g. autograd's in-place error to ``update_tracked_by_autograd``.

        Example:
            >>> judge = Judge("MNISTMLP", timeout=5)
            >>> with judge.context("running your model on flat inputs"), contextlib.suppress(Stop):
            ...     judge.call(lambda: 1 / 0)
            >>> judge.report.feedback[0].splitlines()[0]
            'While running your model on flat inputs, your code raised ZeroDivisionError: division by zero'
        """
        saved = self._doing, self._known_errors
        self._doing, self._known_errors = doing, dict(known_errors or {})
        try:
            yield
        finally:
            self._doing, self._known_errors = saved

    def _subject(self) -> str:
        return f"While {self._doing}, your code" if self._doing else "Your code"

    def _sink(self, text: str) -> None:
        self.report.output += text


_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _student_frames(tb: Any) -> list[str]:
    """Traceback lines of the student's code, leaving out the grader's and libraries' frames."""
    lines = []
    for frame in traceback.extract_tb(tb):
        path = os.path.abspath(frame.filename)
        if path.startswith(_PACKAGE_DIR) or "site-packages" in path or "/lib/python" in path:
            continue
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
    try:
        from IPython import get_ipython
        from IPython.utils.capture import capture_output
    except ImportError:
        return contextlib.nullcontext()
    if get_ipython() is None:
        return contextlib.nullcontext()
    return capture_output(stdout=False, stderr=False, display=True)


def call_student(fn: Callable[..., Any], *args: Any, timeout: float = 10.0,
                 sink: Callable[[str], None] | None = None, **kwargs: Any) -> Any:
    """Calls ``fn`` with a time limit and its stdout, stderr and warnings captured.

    Raises:
        NotImplementedYet: the untouched stub ran.
        StudentTimeout: it ran longer than ``timeout`` seconds.
        StudentError: anything else it raised, with the student's own traceback lines.
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
    """Restores RNGs, grad mode, default dtype and thread count, whatever happens inside."""
    python_rng = random.getstate()
    numpy_rng = np.random.get_state()
    torch_rng = torch.get_rng_state()
    cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    grad_enabled = torch.is_grad_enabled()
    dtype = torch.get_default_dtype()
    threads = torch.get_num_threads()
    try:
        yield
    finally:
        random.setstate(python_rng)
        np.random.set_state(numpy_rng)
        torch.set_rng_state(torch_rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state_all(cuda_rng)
        torch.set_grad_enabled(grad_enabled)
        torch.set_default_dtype(dtype)
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)


Grader = Callable[..., None]
_GRADERS: dict[str, tuple[Grader, float]] = {}


def exercise(name: str, timeout: float = 10.0) -> Callable[[Grader], Grader]:
    """Registers ``grader(judge, student, data=...)`` as the grader of exercise ``name``."""

    def register(grader: Grader) -> Grader:
        _GRADERS[name] = (grader, timeout)
        return grader

    return register


def exercises() -> list[str]:
    """The names ``grade`` accepts."""
    return sorted(_GRADERS)


def grade(name: str, student: Any, *, data: str = "toy", timeout: float | None = None,
          seed: int = 0) -> Report:
    """Grades a student's function or class by what it does; never raises because of it.

    Args:
        name: the exercise, as in the course table (``"train_one_epoch"``, ``"checkpoint"``...).
        student: the student's function or class (a pair for ``"checkpoint"``).
        data: ``"toy"`` (fast, in memory) or ``"mnist"`` (a fixed MNIST subset).
        timeout: seconds each call into the student's code may take.
        seed: picks the test data and initial weights; hidden tests use other seeds.

    Example:
        >>> report = grade("mse_loss", lambda p, t: ((p - t) ** 2).mean())
        >>> report.passed
        True
    """
    if name not in _GRADERS:
        raise KeyError(f"Unknown exercise {name!r}; known exercises: {', '.join(exercises())}")
    grader, default_timeout = _GRADERS[name]
    if data not in ("toy", "mnist"):
        raise ValueError(f"data must be 'toy' or 'mnist', not {data!r}")
    judge = Judge(name, timeout if timeout is not None else default_timeout, seed)
    with preserved_global_state(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(seed)
        try:
            if student is None:
                judge.expect(False, "wrong_return_type",
                             f"`{name}` is None: define it in the exercise cell and run that "
                             "cell before this check.")
                raise Stop
            grader(judge, student, data=data)
        except Stop:
            pass
    return judge.report


def check(name: str, student: Any, **options: Any) -> Report:
    """Grades and shows the report; raises ``AssertionError`` with the feedback unless passed.

    Example:
        >>> check("mse_loss", lambda p, t: ((p - t) ** 2).mean()).passed  # doctest: +ELLIPSIS
        mse_loss: all ... checks passed.
        True
    """
    report = grade(name, student, **options)
    _show(report)
    report._shown_by_check = True
    if not report.passed:
        raise AssertionError("\n".join(report.feedback)) from None
    return report


def points(reports: Report | list[Report], maximum: float) -> float:
    """Prints each report and returns nbgrader's partial credit: the lowest score times ``maximum``.

    The value is meant as the last expression of an autograder test cell.

    Example:
        >>> ok = grade("mse_loss", lambda p, t: ((p - t) ** 2).mean())
        >>> points([ok], 2)  # doctest: +ELLIPSIS
        mse_loss: all ... checks passed.
        2.0
    """
    reports = [reports] if isinstance(reports, Report) else list(reports)
    for report in reports:
        print(report)
    return round(min(report.score for report in reports) * maximum, 2)


def _show(report: Report) -> None:
    try:
        from IPython import get_ipython
        from IPython.display import display
    except ImportError:
        print(report)
        return
    if get_ipython() is None:
        print(report)
    else:
        display(report)


def is_finite_number(value: Any) -> bool:
    """True for a Python or numpy real number that is neither NaN nor infinite."""
    return isinstance(value, (int, float, np.floating, np.integer)) \
        and not isinstance(value, bool) and math.isfinite(float(value))
