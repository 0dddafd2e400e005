"""``grade``: finds an exercise's declaration and runs its grader on a student's answer."""

from __future__ import annotations

import importlib
import pkgutil
import warnings
from typing import Any

import torch

from course_utils.graders import exercises as exercise_modules
from course_utils.graders.declare import Exercise, generic, registry
from course_utils.graders.judge import Judge, Stop
from course_utils.graders.report import Report
from course_utils.graders.recording import grading
from course_utils.graders.sandbox import preserved_global_state

UNDEFINED = generic("wrong_return_type", "`{name}` is None: define it in the exercise cell and "
                                         "run that cell before this check.")


def load_exercises() -> dict[str, Exercise]:
    """Imports every module in ``course_utils.graders.exercises``, which declares its exercises."""
    for module in pkgutil.iter_modules(exercise_modules.__path__):
        importlib.import_module(f"{exercise_modules.__name__}.{module.name}")
    return registry()


def exercises() -> list[str]:
    """The names ``grade`` accepts.

    Example:
        >>> {"mse_loss", "train_one_epoch"} <= set(exercises())
        True
    """
    return sorted(load_exercises())


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
        >>> report.passed, report.score
        (True, 1.0)
    """
    known = load_exercises()
    if name not in known:
        raise KeyError(f"Unknown exercise {name!r}; known exercises: {', '.join(sorted(known))}")
    if data not in ("toy", "mnist"):
        raise ValueError(f"data must be 'toy' or 'mnist', not {data!r}")
    exercise = known[name]
    judge = Judge(exercise, timeout if timeout is not None else exercise.timeout, seed, data)
    with grading(), preserved_global_state(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(seed)
        try:
            if student is None:
                judge.stop(UNDEFINED, name=name)
            exercise.grader(judge, student, data=data)
        except Stop:
            pass
    return judge.report()
