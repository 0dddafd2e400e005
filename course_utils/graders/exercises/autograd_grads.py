"""Grader for lesson 03: `linear_mse_grads(w, b, x, y)`, a linear model's MSE gradients by hand."""

from __future__ import annotations

from typing import Any

import torch

from course_utils.graders.declare import Check, Exercise, Misconception, generic, recognise
from course_utils.graders.evidence import close, first_values, generator, kind, number, ratio
from course_utils.graders.evidence import shape
from course_utils.graders.judge import AUTOGRAD_ENGINE, Judge, KnownError

Case = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]

# `backward()` on the plain tensors the grader passes, under `torch.no_grad()`.
_AUTOGRAD_OFF = KnownError(
    generic("raised_exception",
            "Your function is called inside `torch.no_grad()` with plain tensors, so autograd "
            "records nothing and `backward()` has no graph to follow. This exercise asks for "
            "the gradient formula itself: differentiate `mean((x @ w + b - y) ** 2)` by hand "
            "and compute it with tensor operations."),
    RuntimeError, AUTOGRAD_ENGINE)


WRONG_GRADIENT = "analytic gradient is wrong"
# How a wrong formula shows: the student's gradient is the true one times a telling factor.
FACTOR_MISTAKES = [
    Misconception("wrong_gradient", WRONG_GRADIENT,
                  "{evidence}: exactly half: the factor 2 from differentiating the square is "
                  "missing.",
                  produces=lambda e: 0.5 * e["want"]),
    Misconception("wrong_gradient", WRONG_GRADIENT,
                  "{evidence}: exactly N = {n} times too large: the gradient of a mean divides "
                  "by the number of samples, a sum does not.",
                  produces=lambda e: e["n"] * e["want"]),
    Misconception("wrong_gradient", WRONG_GRADIENT,
                  "{evidence}: the right size with the wrong sign: the residual inside the "
                  "square is prediction minus target.",
                  produces=lambda e: -e["want"]),
]
WRONG_SHAPE = Misconception(
    "wrong_gradient", WRONG_GRADIENT,
    "For `x` of shape {x} your `{name}` has shape {got}, but `{of}` has shape {want}. A gradient "
    "has exactly the shape of the tensor it belongs to, one entry per number in it: look at "
    "which dimension your formula sums over, or leaves in.")
CONSTANT_FACTOR = Misconception(
    "wrong_gradient", WRONG_GRADIENT,
    "{evidence}: exactly {factor} times the true gradient: a constant factor is off.")
WRONG_FORMULA = Misconception(
    "wrong_gradient", WRONG_GRADIENT,
    "{evidence}. Differentiate `mean((x @ w + b - y) ** 2)` step by step with the chain rule, "
    "and check each term on a case with one sample.")
NOT_A_PAIR = generic(
    "wrong_return_type",
    "`linear_mse_grads` returned {got}{held}; it should return a pair `(dw, db)` of tensors "
    "with the shapes of `w` and `b`.{forgot}")

LINEAR_MSE_GRADS = Exercise(
    "linear_mse_grads",
    [Check("returns_pair", "returns a pair of tensors (dw, db)"),
     Check("dw_shape", "dw has the shape of w"),
     Check("dw_value", "dw is dL/dw", lesson=True),
     Check("db_shape", "db has the shape of b"),
     Check("db_value", "db is dL/db", lesson=True)],
    FACTOR_MISTAKES)


@LINEAR_MSE_GRADS
def grade_linear_mse_grads(judge: Judge, student: Any, *, data: str = "toy") -> None:
    """Grades `linear_mse_grads`: returns `(dL/dw, dL/db)` for `L = mean((x @ w + b - y) ** 2)`."""
    gen = generator(judge.seed)
    cases = [(torch.randn(f, generator=gen), torch.randn((), generator=gen),
              torch.randn(n, f, generator=gen), torch.randn(n, generator=gen))
             for n, f in ((6, 3), (10, 4), (1, 2))]
    results = []
    with torch.no_grad(), judge.context(known_errors=[_AUTOGRAD_OFF]):
        for case in cases:
            results.append(judge.call(student, *(t.clone() for t in case)))
    wrong = [r for r in results if not _is_tensor_pair(r)]
    if wrong:
        held = f" holding {kind(wrong[0][0])} and {kind(wrong[0][1])}" \
            if isinstance(wrong[0], (tuple, list)) and len(wrong[0]) == 2 else ""
        forgot = " Did you forget `return`?" if wrong[0] is None else ""
    else:
        held = forgot = ""
    judge.require("returns_pair", not wrong, NOT_A_PAIR, got=kind(wrong[0] if wrong else None),
                  held=held, forgot=forgot)
    expected = [_reference(*case) for case in cases]
    for index, (name, of) in enumerate((("dw", "w"), ("db", "b"))):
        runs = [(case, result[index], reference[index])
                for case, result, reference in zip(cases, results, expected)]
        _check_gradient(judge, name, of, runs)


def _is_tensor_pair(value: Any) -> bool:
    return isinstance(value, (tuple, list)) and len(value) == 2 \
        and all(isinstance(t, torch.Tensor) for t in value)


def _reference(w: torch.Tensor, b: torch.Tensor, x: torch.Tensor,
               y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.enable_grad():
        w, b = w.clone().requires_grad_(), b.clone().requires_grad_()
        loss = ((x @ w + b - y) ** 2).mean()
        dw, db = torch.autograd.grad(loss, (w, b))
    return dw, db


def _check_gradient(judge: Judge, name: str, of: str,
                    runs: list[tuple[Case, torch.Tensor, torch.Tensor]]) -> None:
    """Judges "<name>_shape" and "<name>_value" of a gradient, each with its evidence."""
    bad_shape = next(((case, got) for case, got, want in runs if got.shape != want.shape), None)
    if bad_shape is not None:
        (w, b, x, y), got = bad_shape
        wanted = {"dw": w, "db": b}[name]
        judge.fail(f"{name}_shape", WRONG_SHAPE, x=shape(x), name=name, got=shape(got), of=of,
                   want=shape(wanted))
    else:
        judge.check(f"{name}_shape", True)

    comparable = [(case, got.detach().reshape(want.shape), want)
                  for case, got, want in runs if got.numel() == want.numel()]
    if not comparable:
        return
    wrong = next(((case, got, want) for case, got, want in comparable
                  if not close(got, want)), None)
    if wrong is None:
        judge.check(f"{name}_value", True)
        return
    (w, b, x, y), got, want = wrong
    evidence = (f"For `x` of shape {shape(x)} your `{name}` is {first_values(got)}, but "
                f"dL/d{of} is {first_values(want)}")
    mistake = recognise(got, {"want": want, "n": float(x.shape[0])}, FACTOR_MISTAKES, close)
    if mistake is not None:
        judge.fail(f"{name}_value", mistake, evidence=evidence, n=x.shape[0])
        return
    factor = ratio(got, want)
    if factor is not None and want.numel() > 1:
        judge.fail(f"{name}_value", CONSTANT_FACTOR, evidence=evidence, factor=number(factor))
    else:
        judge.fail(f"{name}_value", WRONG_FORMULA, evidence=evidence)
