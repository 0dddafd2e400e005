"""The scoring policy: how the declared checks of an exercise turn into its score.

This is the one place to change it. A report's score is the weighted share of the exercise's
declared checks that passed; a check that could not run (grading stopped before it) counts as
failed. When a check that carries the exercise's lesson fails, the score is at most
``LESSON_CAP``: forgetting `zero_grad` in `train_step` costs at least half the points, however
many other checks pass. ``LESSON_CAP = 1.0`` turns the cap off; 0.0 gives no credit at all
unless the lesson is learned.
"""

from __future__ import annotations

from typing import Iterable, Protocol

LESSON_CAP = 0.5


class Judged(Protocol):
    """What scoring needs of a check's result."""

    weight: float
    lesson: bool
    passed: bool


def score(results: Iterable[Judged], lesson_cap: float = LESSON_CAP) -> float:
    """The weighted share of checks that passed, at most ``lesson_cap`` if a lesson check failed.

    Example:
        >>> from types import SimpleNamespace as R
        >>> score([R(weight=1, lesson=False, passed=True), R(weight=3, lesson=False, passed=False)])
        0.25
        >>> score([R(weight=3, lesson=False, passed=True), R(weight=1, lesson=True, passed=False)])
        0.5
    """
    results = list(results)
    total = sum(r.weight for r in results)
    if total <= 0:
        return 0.0
    share = sum(r.weight for r in results if r.passed) / total
    if any(r.lesson and not r.passed for r in results):
        share = min(share, lesson_cap)
    return share
