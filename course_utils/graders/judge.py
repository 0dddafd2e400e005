"""The judge: records each declared check's outcome while a grader runs, and calls student code."""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator, NoReturn

from course_utils.graders.declare import Check, Exercise, Misconception
from course_utils.graders.report import CheckResult, Report
from course_utils.graders.sandbox import (NotImplementedYet, StudentError, StudentTimeout,
                                          call_student)

# Failures after which nothing else about the submission can be judged.
ENDS_GRADING = frozenset({"not_implemented", "timeout"})


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
        >>> judge.check("value", judge.call(lambda x: x / 2, 4) == 2.0, "wrong_value", "...")
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
        self.codes: set[str] = set()
        self.feedback: list[str] = []
        self.output = ""
        self._outcomes: dict[str, bool] = {}
        self._doing = ""
        self._known_errors: dict[str, tuple[str, str]] = {}

    # ------------------------------------------------------------------ outcomes

    def check(self, name: str, ok: Any, mistake: Misconception | str = "", message: str = "", /,
              **evidence: Any) -> bool:
        """Judges the declared check ``name``. On failure it records ``mistake``: a declared
        misconception, whose message is its template filled with ``evidence``, or a code with
        its ``message``."""
        if name not in {c.name for c in self.checks}:  # a grader bug
            self.exercise.check(name)
            raise KeyError(f"{self.exercise.name} does not judge {name!r} on {self.data} data")
        ok = bool(ok)
        if not ok:
            if isinstance(mistake, Misconception):
                self._record(mistake.code, mistake.say(**evidence))
            else:
                self._record(mistake, message)
        self._outcomes[name] = self._outcomes.get(name, True) and ok
        return ok

    def fail(self, name: str, mistake: Misconception, /, **evidence: Any) -> bool:
        """Fails the declared check ``name`` with ``mistake``, its message filled with
        ``evidence``; returns False."""
        return self.check(name, False, mistake, **evidence)

    def require(self, name: str, ok: Any, mistake: Misconception | str, message: str = "", /,
                **evidence: Any) -> None:
        """Like ``check``, but stops grading when it fails."""
        if not self.check(name, ok, mistake, message, **evidence):
            raise Stop

    def stop(self, code: str, message: str) -> NoReturn:
        """Fails the first check not judged yet with ``code`` and stops grading."""
        pending = self.pending()
        if pending is not None:
            self.check(pending, False, code, message)
        else:  # every check was judged already; the last one is what this concerns
            self.check(self.checks[-1].name, False, code, message)
        raise Stop

    def pending(self) -> str | None:
        """The first declared check not judged yet."""
        return next((c.name for c in self.checks if c.name not in self._outcomes), None)

    def _record(self, code: str, message: str) -> None:
        if code not in self.exercise.plain_names:
            raise ValueError(f"{self.exercise.name} does not declare the code {code!r}")
        if not message.strip():
            raise ValueError(f"{self.exercise.name}: a failure needs feedback ({code})")
        if code not in self.codes or message not in self.feedback:
            self.codes.add(code)
            self.feedback.append(message)

    def report(self) -> Report:
        """The report of what was judged; unjudged checks are "not run".

        Raises:
            RuntimeError: nothing failed, yet a declared check was never judged (a grader bug:
                only a failure may keep later checks from running).
        """
        unjudged = [c.name for c in self.checks if c.name not in self._outcomes]
        if unjudged and not self.codes:
            raise RuntimeError(f"{self.exercise.name}: nothing failed, yet the checks "
                               f"{', '.join(unjudged)} were never judged")

        def outcome(check: Check) -> str:
            if check.name not in self._outcomes:
                return "not run"
            return "passed" if self._outcomes[check.name] else "failed"

        results = [CheckResult(c.name, c.says, c.weight, c.lesson, outcome(c))
                   for c in self.checks]
        return Report(self.exercise.name, results, set(self.codes), list(self.feedback),
                      self.output, self.exercise.plain_names)

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
            code, message = ("not_implemented",
                             "This exercise is not done yet: replace `raise NotImplementedError()` "
                             "with your code, run that cell, then run this check again.")
        except StudentTimeout as exc:
            code, message = ("timeout",
                             f"{self._subject()} was stopped after {exc.seconds:g} seconds "
                             "without finishing. Look for a loop that never ends, for example a "
                             "`while` whose condition never changes, or iterating over "
                             "something endless.")
        except StudentError as exc:
            error = f"{type(exc.error).__name__}: {exc.error}"
            where = "\n".join(exc.lines)
            known = [entry for fragment, entry in self._known_errors.items()
                     if fragment in str(exc.error)]
            if known:
                code, explanation = known[0]
                message = f"{explanation}\nThe error was {error}\n{where}"
            else:
                code, message = "raised_exception", f"{self._subject()} raised {error}\n{where}"
        if check is None:
            self.stop(code, message)
        self.check(check, False, code, message)
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
                known_errors: dict[str, tuple[str, str]] | None = None) -> Iterator[None]:
        """Makes ``call`` say what it was doing, and report known errors under their own code.

        Args:
            doing: what the grader was doing, for feedback ("While {doing}, your code raised").
            known_errors: maps a fragment of an error's text to the ``(code, message)`` that
                explains it, e.g. autograd's in-place error to ``update_tracked_by_autograd``.
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
        self.output += text
