"""Graders for lesson 02: `mse_loss(pred, target)` and `cross_entropy(logits, targets)`."""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
import torch.nn.functional as F

from course_utils.graders._checks import (attempt, close, first_values, generator, kind, number,
                                          shape)
from course_utils.graders._core import Judge, exercise

Inputs = tuple[torch.Tensor, torch.Tensor]
# A wrong loss a student may have computed: its diagnosis code, the loss, and the explanation.
Mistake = tuple[str, Callable[..., torch.Tensor], str]


@exercise("mse_loss")
def grade_mse_loss(judge: Judge, student: Any, *, data: str = "toy") -> None:
    """Grades `mse_loss`: the mean of squared differences, a scalar tensor in the graph."""
    gen = generator(judge.seed)
    cases = [(torch.randn(n, 1, generator=gen), torch.randn(n, 1, generator=gen))
             for n in (8, 1, 5)]
    _grade_loss(judge, student, cases, F.mse_loss, "the mean squared error",
                [("wrong_reduction", lambda p, t: F.mse_loss(p, t, reduction="sum"),
                  "that is the sum of the squared errors; the exercise asks for their mean")])


@exercise("cross_entropy")
def grade_cross_entropy(judge: Judge, student: Any, *, data: str = "toy") -> None:
    """Grades `cross_entropy`: mean cross-entropy of raw logits, stable for huge logits."""
    gen = generator(judge.seed)
    cases = [(2 * torch.randn(n, classes, generator=gen),
              torch.randint(classes, (n,), generator=gen))
             for n, classes in ((8, 3), (1, 5), (6, 10))]
    correct = _grade_loss(
        judge, student, cases, F.cross_entropy, "the cross-entropy",
        [("wrong_reduction", lambda z, t: F.cross_entropy(z, t, reduction="sum"),
          "that is the sum over the batch; the exercise asks for the mean"),
         ("softmax_before_cross_entropy", lambda z, t: F.cross_entropy(z.softmax(dim=1), t),
          "that is the cross-entropy of softmax probabilities treated as logits: softmax is "
          "applied twice. Cross-entropy takes the raw logits and does the (log-)softmax itself, "
          "so do not apply softmax first")])
    _check_large_logits(judge, student, gen, correct)


def _grade_loss(judge: Judge, student: Any, cases: list[Inputs],
                reference: Callable[..., torch.Tensor], name: str,
                mistakes: list[Mistake]) -> bool:
    """Checks type, reduction, value and autograd graph of a loss on several inputs.

    Returns:
        Whether the values were right on every case.
    """
    results = []
    with torch.enable_grad():
        for first, second in cases:
            inputs = (first.clone().requires_grad_(), second.clone())
            results.append((inputs, judge.call(student, *inputs)))
    wrong = [r for _, r in results if not isinstance(r, torch.Tensor)]
    if wrong:
        forgot = " Did you forget `return`?" if wrong[0] is None else ""
        judge.require(False, "wrong_return_type",
                      f"Your loss returned {kind(wrong[0])}; it must return the loss as a "
                      "tensor, so that `loss.backward()` can follow the graph back to the "
                      "model. (`.item()` and `float()` turn it into a plain number and cut it "
                      f"from the graph.){forgot}")
    judge.expect(True, "wrong_return_type", "")

    not_scalar = next(((inputs, r) for inputs, r in results if r.dim() != 0), None)
    if not_scalar is not None:
        (first, _), r = not_scalar
        per_element = ": one loss per element, not reduced" if r.shape == first.shape else ""
        judge.expect(False, "wrong_reduction",
                     f"For inputs of shape {shape(first)} your loss has shape {shape(r)}"
                     f"{per_element}. A loss must be a single number (shape `()`): the mean over "
                     "all elements, so that `loss.backward()` can start from it.")
    else:
        judge.expect(True, "wrong_reduction", "")

    scalars = [(inputs, r) for inputs, r in results if r.numel() == 1]
    if not scalars:
        return False
    correct = _check_values(judge, scalars, reference, name, mistakes)
    _check_graph(judge, scalars, reference, correct)
    return correct


def _check_values(judge: Judge, scalars: list[tuple[Inputs, torch.Tensor]],
                  reference: Callable[..., torch.Tensor], name: str,
                  mistakes: list[Mistake]) -> bool:
    def matches(loss: Callable[..., torch.Tensor]) -> bool:
        with torch.no_grad():
            return all(close(r.detach().reshape(()), loss(*inputs)) for inputs, r in scalars)

    if matches(reference):
        return judge.expect(True, "wrong_value", "")
    (first, second), r = next((inputs, r) for inputs, r in scalars
                              if not close(r.detach().reshape(()), reference(*inputs)))
    evidence = (f"For inputs of shape {shape(first)} (first values {first_values(first)}, "
                f"targets {first_values(second)}) your loss is {number(r)}, but {name} is "
                f"{number(reference(first, second))}")
    for code, loss, explanation in mistakes:
        if matches(loss):
            return judge.expect(False, code, f"{evidence}: {explanation}.")
    return judge.expect(False, "wrong_value",
                        f"{evidence}. Go through the formula step by step on a tiny example "
                        "and compare each intermediate result.")


def _check_graph(judge: Judge, scalars: list[tuple[Inputs, torch.Tensor]],
                 reference: Callable[..., torch.Tensor], correct: bool) -> None:
    """Checks the loss keeps its autograd graph and, when its value is right, its gradient."""
    (first, second), r = scalars[0]
    if r.grad_fn is None:
        judge.expect(False, "detached_result",
                     f"Your loss has no autograd graph (`loss.grad_fn` is None, `requires_grad` "
                     f"is {r.requires_grad}) although its input requires gradients, so "
                     "`loss.backward()` could not train anything. Keep the whole computation in "
                     "torch operations on the input tensors: no `.item()`, `float()`, "
                     "`.detach()`, `.data`, `torch.tensor(...)` or numpy on the way.")
        return
    if not correct:
        judge.expect(True, "detached_result", "")
        return
    ok, grads = attempt(judge, lambda: torch.autograd.grad(r, first, allow_unused=True),
                        doing="computing the gradient of your loss")
    if not ok:
        return
    with torch.enable_grad():
        input_again = first.detach().clone().requires_grad_()
        expected, = torch.autograd.grad(reference(input_again, second), input_again)
    yours = grads[0] if grads[0] is not None else torch.zeros_like(first)
    judge.expect(close(yours, expected), "detached_result",
                 f"Your loss has the right value, but its gradient with respect to the input is "
                 f"{first_values(yours)} where it should be {first_values(expected)}: part of "
                 "the computation is cut off from the autograd graph (`.detach()`, `.data`, "
                 "`.item()` or numpy), so `backward()` sees a different function.")


def _check_large_logits(judge: Judge, student: Any, gen: torch.Generator, correct: bool) -> None:
    """Cross-entropy must stay finite (and right) for logits of size 1e4."""
    logits = 1e4 * torch.randn(4, 5, generator=gen)
    targets = torch.randint(5, (4,), generator=gen)
    with torch.enable_grad():
        ok, r = attempt(judge, student, logits.clone().requires_grad_(), targets,
                        doing="computing your loss for logits of size 1e4")
    if not ok or not isinstance(r, torch.Tensor) or r.numel() != 1:
        return
    value, expected = r.detach().item(), F.cross_entropy(logits, targets).item()
    # A wrong formula was reported already; here only overflow counts against it.
    stable = math.isfinite(value) and (not correct or math.isclose(value, expected, rel_tol=1e-4))
    judge.expect(stable, "numerically_unstable",
                 f"For logits of size 1e4 (first row {first_values(logits[0], 5)}) your loss is "
                 f"{number(value)}, but it should be {number(expected)}. `exp` overflows to "
                 "`inf` above about 88 in float32, and the log of a probability that rounded to "
                 "0 is `-inf`. Compute the log of the softmax without forming huge exponentials: "
                 "subtract each row's largest logit first (the log-sum-exp trick), or use "
                 "PyTorch's built-in stable functions.")
