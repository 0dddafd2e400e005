"""Judging the numbers a student's function returns: their type and their value.

A value is compared with the right one and with the values known mistakes give.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch

from course_utils.graders.declare import Check, Misconception, generic, recognise
from course_utils.graders.evidence import kind, number
from course_utils.graders.judge import Judge

NUMBER_CHECKS = [Check("returns_float", "returns Python floats, not tensors"),
                 Check("finite", "returns finite numbers")]

LOSS_TENSOR = Misconception(
    "loss_tensor_accumulated", "loss tensors summed instead of .item() floats",
    "{name} is a tensor ({value}) that still carries the autograd graph (`grad_fn={grad_fn}`): "
    "a loss tensor that is kept (returned, stored or added up) holds on to its whole graph, so "
    "memory grows with every batch. Take the number out of each batch's loss with `.item()`.")
TENSOR_NOT_FLOAT = generic("wrong_return_type",
                           "{name} is {got}, not a Python float. Convert numbers you return "
                           "with `.item()` (or `float(...)`).")
NOT_A_FLOAT = generic("wrong_return_type", "{name} is {got}; it should be a Python float.")
NOT_FINITE = generic("wrong_value", "{name} is {got}, not a finite number: look for a division "
                                    "by zero or a value you never filled in.")


def tolerant(got: float, want: float) -> bool:
    """Equal up to float32 rounding of a mean.

    Example:
        >>> tolerant(0.1234567, 0.1234568), tolerant(0.12, 0.13)
        (True, False)
    """
    return math.isclose(got, want, rel_tol=1e-4, abs_tol=1e-6)


def check_numbers(judge: Judge, values: Sequence[Any], names: Sequence[str],
                  ) -> list[float | None]:
    """Judges "returns_float" and "finite" on every value; returns the values as floats.

    A one-element tensor fails "returns_float" (``loss_tensor_accumulated`` when it carries a
    graph, ``wrong_return_type`` otherwise) but its value is still returned, so value checks
    run. Unusable values come back as None.

    Args:
        names: how feedback names each value ("The loss `evaluate` returned").
    """
    floats: list[float | None] = []
    problem: tuple[Misconception, dict[str, Any]] | None = None
    for name, value in zip(names, values):
        if isinstance(value, torch.Tensor):
            floats.append(float(value.detach()) if value.numel() == 1 else None)
            if problem:
                continue
            if value.requires_grad or value.grad_fn is not None:
                problem = (LOSS_TENSOR, {"name": name,
                                         "value": number(value.detach().flatten()[0]),
                                         "grad_fn": type(value.grad_fn).__name__})
            else:
                problem = (TENSOR_NOT_FLOAT, {"name": name, "got": kind(value)})
        elif isinstance(value, (int, float, np.integer, np.floating)) \
                and not isinstance(value, bool):
            floats.append(float(value))
        else:
            floats.append(None)
            problem = problem or (NOT_A_FLOAT, {"name": name, "got": kind(value)})
    mistake, evidence = problem or (None, {})
    judge.check("returns_float", problem is None, mistake, **evidence)
    bad = next((i for i, v in enumerate(floats) if v is not None and not math.isfinite(v)), None)
    judge.check("finite", bad is None, NOT_FINITE,
                **({} if bad is None else {"name": names[bad], "got": floats[bad]}))
    return [v if v is not None and math.isfinite(v) else None for v in floats]


def first_mismatch(pairs: Sequence[tuple[float | None, float]]) -> int:
    """The index of the first ``(got, want)`` pair that differs, or 0 when all agree.

    Example:
        >>> first_mismatch([(1.0, 1.0), (None, 2.0), (3.0, 3.5)]), first_mismatch([(1.0, 1.0)])
        (2, 0)
    """
    return next((i for i, (got, want) in enumerate(pairs)
                 if got is not None and not tolerant(got, want)), 0)


def check_value(judge: Judge, check: str, got: float | None, want: float, what: str,
                evidence: Any, mistakes: Sequence[Misconception], wrong: Misconception) -> None:
    """Judges ``check``: ``got`` equals ``want``, naming the first known mistake ``got`` matches.

    Args:
        what: names the value in feedback ("The epoch loss `train_one_epoch` returned").
        evidence: what each mistake's ``produces`` turns into the value it would give.
        mistakes: the known mistakes; their messages may use ``{what}``, ``{got}``, ``{want}``.
        wrong: the code and message when ``got`` matches no known mistake.
    """
    if got is None:
        return  # "returns_float" or "finite" failed already and said why
    if tolerant(got, want):
        judge.check(check, True)
        return
    mistake = recognise(got, evidence, mistakes, tolerant) or wrong
    judge.fail(check, mistake, got=number(got), want=number(want), what=what)
