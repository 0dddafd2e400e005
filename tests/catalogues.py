"""The submission catalogues' one format, and every catalogue in tests/ looked up together.

A catalogue module (``submissions_*.py``) holds a list ``SUBMISSIONS`` of ``Entry``: a real
submission, correct or buggy, with the diagnosis codes grading must report and the declared
checks that must fail. The expected score is derived from the exercise's declaration and the
scoring policy, never written down as a number.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from course_utils.graders import grade, load_exercises, plain_names
from course_utils.graders.report import Report
from course_utils.graders.report import CheckResult
from course_utils.graders.scoring import score

CATALOGUE_DIR = Path(__file__).resolve().parent
# Ends ``fails``: the check before it and every declared check after it (grading stopped there).
AND_THE_REST = ...


@dataclass(frozen=True)
class Entry:
    """A submission and what grading it must give: no codes means it is correct.

    Args:
        fails: the declared checks that fail, in declaration order; ending in ``...`` means
            "and all checks after the last one named" (they could not run).
        evidence: phrases the feedback must contain.
    """

    exercise: str
    name: str
    student: Any
    codes: frozenset[str] = frozenset()
    fails: tuple[Any, ...] = ()
    evidence: tuple[str, ...] = ()
    data: str = "toy"
    timeout: float | None = None

    @property
    def correct(self) -> bool:
        return not self.codes

    def __str__(self) -> str:
        return f"{self.exercise}-{self.name}"

    def failed_checks(self) -> list[str]:
        """The names of the declared checks this submission fails (or never gets to)."""
        declared = [c.name for c in load_exercises()[self.exercise].checks_for(self.data)]
        named = [name for name in self.fails if name is not AND_THE_REST]
        unknown = set(named) - set(declared)
        if unknown:
            raise KeyError(f"{self}: {self.exercise} declares no check {sorted(unknown)}")
        if self.fails and self.fails[-1] is AND_THE_REST:
            named += declared[declared.index(named[-1]) + 1:]
        return [name for name in declared if name in named]

    def expected_score(self) -> float:
        """The score the declarations give when exactly ``failed_checks()`` fail."""
        if self.correct:
            return 1.0
        failed = set(self.failed_checks())
        return score(CheckResult(c.name, c.says, c.weight, c.lesson,
                                 "failed" if c.name in failed else "passed")
                     for c in load_exercises()[self.exercise].checks_for(self.data))


def correct(exercise: str, name: str, student: Any, **options: Any) -> Entry:
    """A correct submission: no codes, every check passes."""
    return Entry(exercise, name, student, **options)


def buggy(exercise: str, name: str, student: Any, codes: set[str], fails: tuple[Any, ...],
          *evidence: str, **options: Any) -> Entry:
    """A buggy submission, the codes it must get, the checks it fails, and phrases of evidence."""
    return Entry(exercise, name, student, frozenset(codes), tuple(fails), evidence, **options)


def assert_expected_grade(entry: Entry, seed: int = 0) -> Report:
    """Grades ``entry`` and asserts its whole verdict: codes, checks failed, score, and (with
    seed 0) evidence."""
    report = grade(entry.exercise, entry.student, data=entry.data, timeout=entry.timeout,
                   seed=seed)
    assert report.codes == set(entry.codes), "\n".join(report.feedback)
    assert report.passed is entry.correct
    assert report.failed == entry.failed_checks(), report
    assert report.score == pytest.approx(entry.expected_score())
    assert report.codes <= plain_names().keys()
    if entry.correct:
        assert report.feedback == []
    else:
        # One explanation per failed code at least, never an empty one.
        assert len(report.feedback) >= len(report.codes)
        assert all(text.strip() for text in report.feedback)
    feedback = "\n".join(report.feedback)
    for phrase in entry.evidence if seed == 0 else ():  # the phrases quote seed 0's numbers
        assert phrase in feedback
    return report


def all_submissions() -> list[Entry]:
    """Every entry of every catalogue, in file order."""
    entries: list[Entry] = []
    for path in sorted(CATALOGUE_DIR.glob("submissions_*.py")):
        entries += getattr(importlib.import_module(path.stem), "SUBMISSIONS", [])
    return entries


def reference(exercise: str) -> Any | None:
    """The first correct submission for ``exercise``, or None when no catalogue has one."""
    return next((s.student for s in all_submissions()
                 if s.exercise == exercise and not s.codes), None)


def failing(exercise: str) -> Any | None:
    """The first buggy submission for ``exercise`` that fails quickly (toy data, no timeout)."""
    return next((s.student for s in all_submissions()
                 if s.exercise == exercise and s.codes and "timeout" not in s.codes
                 and s.data == "toy"), None)
