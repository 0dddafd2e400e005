"""The referee: bounds each exercise's points by outcomes checked outside the student's process.

The graders run inside the student's kernel, where the notebook's code can reach them; what they
report explains, but cannot be trusted to score. So after a test cell, nbgrader's process (no
student code runs in it) makes fresh inputs from a secret seed, has the kernel call the
student's function on them (``course_utils.autograde.sandboxed.serve``: data in, data out) and
compares what came back with its own reference computation. Each wrong outcome is a
``Violation`` naming the declared checks that could explain it; the exercise's score is then at
most the best score the scoring policy gives a submission failing one of them. An honest report
already fails one (the catalogue test shows it for every real bug), so honest scores do not
change; a forged report cannot score above what the outcomes allow.

Example:
    >>> bound("mse_loss", "toy", [])
    1.0
    >>> bound("mse_loss", "toy", [Violation(("value",), "the loss is wrong")])
    0.5
    >>> bound("mse_loss", "toy", [Violation(("tensor", "value"), "...")])
    0.75
    >>> bound("fit", "mnist", [Violation(("train_loss",), "judged on toy data only")])
    1.0
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Callable

from course_utils.graders import scoring
from course_utils.graders.grading import load_exercises


# The declared checks no outcome shows, judged by the graders in the kernel alone: how a right
# value was computed, grad mode, types a value travels in, and properties of random draws.
IN_KERNEL_ONLY: dict[str, set[str]] = {
    "conv2d": {"by_hand"}, "conv_transpose2d": {"by_hand"}, "evaluate": {"no_graph"},
    "fit": {"no_graph", "accuracy_reached"}, "lr_sweep": {"trains_model"},
    "mse_loss": {"tensor"}, "cross_entropy": {"tensor"}, "linear_mse_grads": {"returns_pair"},
    "AugmentedDataset": {"dataset"}, "MNISTMLP": {"gradients_flow"},
    "make_loader": {"loader", "shuffles", "order", "augmentations", "seed", "workers"}}


@dataclass(frozen=True)
class Violation:
    """An outcome that differs from the reference: the checks that could explain it, and how."""

    checks: tuple[str, ...]
    says: str


@dataclass(frozen=True)
class Probe:
    """One exercise's referee round: the request for the kernel and how to judge its outcome."""

    exercise: str
    request: dict[str, Any]
    judge: Callable[[Any], list[Violation]]


# The modules that declare the referee's probes, each a ``PROBES`` dict: exercise -> probe maker.
_MODULES = ("course_utils.autograde.referee.functions", "course_utils.autograde.referee.loops",
            "course_utils.autograde.referee.objects")


def probe_makers() -> dict[str, Callable[[int], Probe]]:
    """Every exercise the referee checks, with the function that makes its probe from a seed."""
    makers: dict[str, Callable[[int], Probe]] = {}
    for name in _MODULES:
        makers.update(importlib.import_module(name).PROBES)
    return makers


def bound(exercise: str, data: str, violations: list[Violation]) -> float:
    """The highest score the outcomes allow: 1.0 without violations, else for each violation the
    best score of a submission failing one of its checks, the lowest of those. A violation
    only of checks not judged on ``data`` bounds nothing (the graders do not hold the student
    to them there); one naming no check at all allows 0."""
    checks = load_exercises()[exercise].checks_for(data)
    names = {check.name for check in checks}
    limit = 1.0
    for violation in violations:
        if not violation.checks:
            return 0.0
        suspects = [name for name in violation.checks if name in names]
        if not suspects:
            continue
        limit = min(limit, max(scoring.score(
            SimpleNamespace(weight=check.weight, lesson=check.lesson, passed=check.name != failed)
            for check in checks) for failed in suspects))
    return limit


def everything(exercise: str, why: str) -> Violation:
    """A violation any declared check could explain (the call raised, or gave nothing usable)."""
    return Violation(tuple(check.name for check in load_exercises()[exercise].checks), why)
