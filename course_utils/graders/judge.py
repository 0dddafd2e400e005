"""The judge: records each declared check's outcome while a grader runs, and calls student code."""

from __future__ import annotations

import contextlib
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, NoReturn

from course_utils.graders.declare import Check, Exercise, Misconception, generic
from course_utils.graders.evidence import plain
from course_utils.graders.report import CheckResult, Finding, Report
from course_utils.graders.sandbox import (NotImplementedYet, StudentError, StudentTimeout,
                                          call_student)

# Failures after which nothing else about the submission can be judged.
ENDS_GRADING = frozenset({"not_implemented", "timeout"})

NOT_IMPLEMENTED = generic(
    "not_implemented",
    "This exercise is not done yet: replace `raise NotImplementedError()` with your code, run "
    "that cell, then run this check again.")
TIMED_OUT = generic(
    "timeout",
    "{subject} was stopped after {seconds:g} seconds without finishing. Look for a loop that "
    "never ends, for example a `while` whose condition never changes, or iterating over "
    "something endless.")
RAISED = generic("raised_exception", "{subject} raised {error}\n{where}")
# A known error's own explanation, followed by the error and where in the student's code.
EXPLAINED_ERROR = "\nThe error was {error}\n{where}"
# Where autograd raises what it finds while computing gradients (`backward()`, `autograd.grad`).
AUTOGRAD_ENGINE = ("torch/autograd/graph.py", "_engine_run_backward")


@dataclass(frozen=True)
class KnownError:
    """An exception whose cause is known, recognised by its type and where it was raised.

    Args:
        mistake: what the exception means; its message explains it.
        raised: the exception's type (or types).
        raised_in: ``(file, function)``: a frame of the traceback runs ``function`` in a file
            whose path ends with ``file`` (``("torch/amp/grad_scaler.py", "unscale_")``).
            None: anywhere.
        when: what else must hold, given the exception (the state it was raised in).
        evidence: what fills the mistake's message.

    Example:
        >>> import json
        >>> not_json = KnownError(generic("wrong_value", "Not JSON."), ValueError,
        ...                       raised_in=("json/decoder.py", "raw_decode"))
        >>> try:
        ...     json.loads("{")
        ... except ValueError as error:
        ...     not_json.matches(error), KnownError(not_json.mistake, KeyError).matches(error)
        (True, False)
    """

    mistake: Misconception
    raised: type[BaseException] | tuple[type[BaseException], ...]
    raised_in: tuple[str, str] | None = None
    when: Callable[[BaseException], bool] | None = None
    evidence: dict[str, Any] = field(default_factory=dict)

    def matches(self, error: BaseException) -> bool:
        if not isinstance(error, self.raised):
            return False
        if self.raised_in is not None:
            file, function = self.raised_in
            frames = traceback.extract_tb(error.__traceback__)
            if not any(f.name == function and f.filename.replace("\\", "/").endswith(file)
                       for f in frames):
                return False
        return self.when is None or bool(self.when(error))


class Stop(Exception):
    """Ends a grading early: the checks not judged yet count as failed."""


class Judge:
    """Records the outcome of each declared check while a grader runs.

    A grader calls ``check`` once or more per declared check (it passes only if every call
    passes) and ``call`` for every call into student code. An exception, time-out or the
    untouched stub in student code fails the first check not judged yet and stops grading.

    Example:
        >>> from course_utils.graders.declare import Check, Exercise, Misconception
        >>> ex = Exercise("half", [Check("value", "halves"), Check("type", "returns a float")])
        >>> judge = Judge(ex, timeout=5)
        >>> judge.check("value", judge.call(lambda x: x / 2, 4) == 2.0)
        True
        >>> with contextlib.suppress(Stop):
        ...     judge.call(lambda: 1 / 0)
        >>> report = judge.report()
        >>> report.codes, report.failed, report.score
        ({'raised_exception'}, ['type'], 0.5)
    """

    def __init__(self, exercise: Exercise, timeout: float, seed: int = 0, data: str = "toy"):
        self.exercise = exercise
        self.timeout = timeout
        self.seed = seed
        self.data = data
        self.checks = exercise.checks_for(data)
        self.findings: list[Finding] = []
        self.output = ""
        self._outcomes: dict[str, bool] = {}
        self._doing = ""
        self._known_errors: tuple[KnownError, ...] = ()

    @property
    def codes(self) -> set[str]:
        """The codes found so far."""
        return {f.code for f in self.findings if f.code is not None}

    # ------------------------------------------------------------------ outcomes

    def check(self, name: str, ok: Any, mistake: Misconception | None = None, /,
              **evidence: Any) -> bool:
        """Judges the declared check ``name``. On failure it records ``mistake``, a declared
        misconception, whose message is its template filled with ``evidence``."""
        if name not in {c.name for c in self.checks}:  # a grader bug
            self.exercise.check(name)
            raise KeyError(f"{self.exercise.name} does not judge {name!r} on {self.data} data")
        ok = bool(ok)
        if not ok:
            if mistake is None:
                raise ValueError(f"{self.exercise.name}: {name} failed without a misconception")
            self._record(name, mistake, evidence)
        self._outcomes[name] = self._outcomes.get(name, True) and ok
        return ok

    def fail(self, name: str, mistake: Misconception, /, **evidence: Any) -> bool:
        """Fails the declared check ``name`` with ``mistake``, its message filled with
        ``evidence``; returns False."""
        return self.check(name, False, mistake, **evidence)

    def require(self, name: str, ok: Any, mistake: Misconception | None = None, /,
                **evidence: Any) -> None:
        """Like ``check``, but stops grading when it fails."""
        if not self.check(name, ok, mistake, **evidence):
            raise Stop

    def stop(self, mistake: Misconception, /, **evidence: Any) -> NoReturn:
        """Fails the first check not judged yet with ``mistake`` and stops grading."""
        pending = self.pending()
        # Every check judged already: the last one is what this concerns.
        self.fail(pending if pending is not None else self.checks[-1].name, mistake, **evidence)
        raise Stop

    def pending(self) -> str | None:
        """The first declared check not judged yet."""
        return next((c.name for c in self.checks if c.name not in self._outcomes), None)

    def _record(self, check: str, mistake: Misconception, evidence: dict[str, Any]) -> None:
        if mistake.code not in self.exercise.plain_names:
            raise ValueError(f"{self.exercise.name} does not declare the code {mistake.code!r}")
        message = mistake.say(**evidence)
        if not message.strip():
            raise ValueError(f"{self.exercise.name}: a failure needs feedback ({mistake.code})")
        # The same explanation under the same code is said once.
        if mistake.code not in self.codes or message not in {f.message for f in self.findings}:
            self.findings.append(Finding(check, mistake.code, message, plain(evidence)))

    def report(self) -> Report:
        """The report of what was judged; unjudged checks are "not run".

        Raises:
            RuntimeError: nothing failed, yet a declared check was never judged (a grader bug:
                only a failure may keep later checks from running).
        """
        unjudged = [c.name for c in self.checks if c.name not in self._outcomes]
        if unjudged and not self.findings:
            raise RuntimeError(f"{self.exercise.name}: nothing failed, yet the checks "
                               f"{', '.join(unjudged)} were never judged")

        def outcome(check: Check) -> str:
            if check.name not in self._outcomes:
                return "not run"
            return "passed" if self._outcomes[check.name] else "failed"

        results = [CheckResult(c.name, c.says, c.weight, c.lesson, outcome(c))
                   for c in self.checks]
        return Report(self.exercise.name, results, output=self.output,
                      plain_names=self.exercise.plain_names, findings=self.findings)

    # ------------------------------------------------------------------ student code

    def call(self, fn: Callable[..., Any], *args: Any, check: str | None = None,
             **kwargs: Any) -> Any:
        """Calls student code with a time limit, its output captured.

        Its exception, time-out or stub fails ``check`` (by default the first check not
        judged yet) and raises ``Stop``.
        """
        try:
            return call_student(fn, *args, timeout=self.timeout, sink=self._sink, **kwargs)
        except NotImplementedYet:
            mistake, evidence = NOT_IMPLEMENTED, {}
        except StudentTimeout as exc:
            mistake, evidence = TIMED_OUT, {"subject": self._subject(), "seconds": exc.seconds}
        except StudentError as exc:
            evidence = {"error": f"{type(exc.error).__name__}: {exc.error}",
                        "where": "\n".join(exc.lines), "subject": self._subject()}
            known = next((k for k in self._known_errors if k.matches(exc.error)), None)
            if known is not None:
                mistake, evidence = explained(known.mistake), {**known.evidence, **evidence}
            else:
                mistake = RAISED
        if check is None:
            self.stop(mistake, **evidence)
        self.fail(check, mistake, **evidence)
        raise Stop

    def attempt(self, check: str, fn: Callable[..., Any], *args: Any,
                doing: str) -> tuple[bool, Any]:
        """Calls student code; an exception fails only ``check`` and grading goes on.

        The untouched stub and a time-out still end the grading.

        Returns:
            ``(True, what fn returned)``, or ``(False, None)`` when it raised.
        """
        with self.context(doing):
            try:
                return True, self.call(fn, *args, check=check)
            except Stop:
                if self.codes & ENDS_GRADING:
                    raise
                return False, None

    @contextlib.contextmanager
    def context(self, doing: str = "",
                known_errors: Iterable[KnownError] = ()) -> Iterator[None]:
        """Makes ``call`` say what it was doing, and report known errors under their own code.

        Args:
            doing: what the grader was doing, for feedback ("While {doing}, your code raised").
            known_errors: exceptions whose cause is known, reported under their own code and
                explanation, e.g. autograd's in-place error as ``update_tracked_by_autograd``.
        """
        saved = self._doing, self._known_errors
        self._doing, self._known_errors = doing, tuple(known_errors)
        try:
            yield
        finally:
            self._doing, self._known_errors = saved

    def _subject(self) -> str:
        return f"While {self._doing}, your code" if self._doing else "Your code"

    def _sink(self, text: str) -> None:
        self.output += text


def explained(mistake: Misconception) -> Misconception:
    """A known error's misconception, its message followed by the error and where it was raised.

    Example:
        >>> explained(generic("wrong_value", "Zero.")).say(error="E", where="line 1").split()
        ['Zero.', 'The', 'error', 'was', 'E', 'line', '1']
    """
    return mistake.saying(mistake.message + EXPLAINED_ERROR)
