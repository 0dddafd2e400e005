"""Graders for lesson 02: `mse_loss(pred, target)` and `cross_entropy(logits, targets)`."""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
import torch.nn.functional as F

from course_utils.graders.evidence import close, first_values, generator, kind, number, shape
from course_utils.graders.declare import Check, Exercise, Misconception, generic, recognise
from course_utils.graders.judge import Judge

Inputs = tuple[torch.Tensor, torch.Tensor]
Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _on_each(loss: Loss) -> Callable[[list[Inputs]], list[torch.Tensor]]:
    """What ``loss`` gives on each case: how a loss misconception shows in the evidence."""
    def produces(cases: list[Inputs]) -> list[torch.Tensor]:
        with torch.no_grad():
            return [loss(first, second) for first, second in cases]
    return produces


def _all_close(got: list[torch.Tensor], want: list[torch.Tensor]) -> bool:
    return all(close(g.detach().reshape(()), w) for g, w in zip(got, want))


LOSS_CHECKS = [
    Check("tensor", "returns the loss as a tensor"),
    Check("scalar", "reduces the loss to a single number", lesson=True),
    Check("value", "computes the right value", lesson=True),
    Check("graph", "keeps the autograd graph, so backward() reaches the input"),
]
DETACHED = Misconception(
    "detached_result", "result (loss or model output) is cut off from the autograd graph",
    "Your loss has no autograd graph (`loss.grad_fn` is None, `requires_grad` is {grad}) "
    "although its input requires gradients, so `loss.backward()` could not train anything. "
    "Keep the whole computation in torch operations on the input tensors: no `.item()`, "
    "`float()`, `.detach()`, `.data`, `torch.tensor(...)` or numpy on the way.")
PARTLY_DETACHED = Misconception(
    "detached_result", DETACHED.plain,
    "Your loss has the right value, but its gradient with respect to the input is {got} where "
    "it should be {want}: part of the computation is cut off from the autograd graph "
    "(`.detach()`, `.data`, `.item()` or numpy), so `backward()` sees a different function.")
SUMMED = "loss uses sum (or none) instead of the mean"
NOT_A_TENSOR = generic(
    "wrong_return_type",
    "Your loss returned {got}; it must return the loss as a tensor, so that `loss.backward()` "
    "can follow the graph back to the model. (`.item()` and `float()` turn it into a plain "
    "number and cut it from the graph.){forgot}")
NOT_REDUCED = Misconception(
    "wrong_reduction", SUMMED,
    "For inputs of shape {inputs} your loss has shape {got}{per_element}. A loss must be a "
    "single number (shape `()`): the mean over all elements, so that `loss.backward()` can "
    "start from it.")
WRONG_LOSS = generic("wrong_value", "{evidence}. Go through the formula step by step on a tiny "
                                    "example and compare each intermediate result.")
LARGE_NOT_A_TENSOR = generic("wrong_return_type", "For logits of size 1e4 your loss returned "
                                                  "{got}; it must return the loss as a tensor.")

MSE_LOSS = Exercise(
    "mse_loss", LOSS_CHECKS,
    [Misconception("wrong_reduction", SUMMED,
                   "{evidence}: that is the sum of the squared errors; the exercise asks for "
                   "their mean.",
                   produces=_on_each(lambda p, t: F.mse_loss(p, t, reduction="sum"))),
     DETACHED, PARTLY_DETACHED])

CROSS_ENTROPY = Exercise(
    "cross_entropy", [*LOSS_CHECKS, Check("stable", "stays finite and right for logits of 1e4")],
    [Misconception("wrong_reduction", SUMMED,
                   "{evidence}: that is the sum over the batch; the exercise asks for the mean.",
                   produces=_on_each(lambda z, t: F.cross_entropy(z, t, reduction="sum"))),
     Misconception("softmax_before_cross_entropy", "softmax applied before cross-entropy",
                   "{evidence}: that is the cross-entropy of softmax probabilities treated as "
                   "logits: softmax is applied twice. Cross-entropy takes the raw logits and does "
                   "the (log-)softmax itself, so do not apply softmax first.",
                   produces=_on_each(lambda z, t: F.cross_entropy(z.softmax(dim=1), t))),
     Misconception("numerically_unstable", "loss overflows for large logits",
                   "For logits of size 1e4 (first row {logits}) your loss is {got}, but it should "
                   "be {want}. `exp` overflows to `inf` above about 88 in float32, and the log of "
                   "a probability that rounded to 0 is `-inf`. Compute the log of the softmax "
                   "without forming huge exponentials: subtract each row's largest logit first "
                   "(the log-sum-exp trick), or use PyTorch's built-in stable functions."),
     DETACHED, PARTLY_DETACHED])


@MSE_LOSS
def grade_mse_loss(judge: Judge, student: Any, *, data: str = "toy") -> None:
    """Grades `mse_loss`: the mean of squared differences, a scalar tensor in the graph."""
    gen = generator(judge.seed)
    cases = [(torch.randn(n, 1, generator=gen), torch.randn(n, 1, generator=gen))
             for n in (8, 1, 5)]
    _grade_loss(judge, student, cases, F.mse_loss, "the mean squared error")


@CROSS_ENTROPY
def grade_cross_entropy(judge: Judge, student: Any, *, data: str = "toy") -> None:
    """Grades `cross_entropy`: mean cross-entropy of raw logits, stable for huge logits."""
    gen = generator(judge.seed)
    cases = [(2 * torch.randn(n, classes, generator=gen),
              torch.randint(classes, (n,), generator=gen))
             for n, classes in ((8, 3), (1, 5), (6, 10))]
    correct = _grade_loss(judge, student, cases, F.cross_entropy, "the cross-entropy")
    _check_large_logits(judge, student, gen, correct)


def _grade_loss(judge: Judge, student: Any, cases: list[Inputs], reference: Loss,
                name: str) -> bool:
    """Judges the checks "tensor", "scalar", "value" and "graph" of a loss on several inputs.

    Returns:
        Whether the values were right on every case.
    """
    results = []
    with torch.enable_grad():
        for first, second in cases:
            inputs = (first.clone().requires_grad_(), second.clone())
            results.append((inputs, judge.call(student, *inputs)))
    wrong = [r for _, r in results if not isinstance(r, torch.Tensor)]
    forgot = " Did you forget `return`?" if wrong and wrong[0] is None else ""
    judge.require("tensor", not wrong, NOT_A_TENSOR, got=kind(wrong[0] if wrong else None),
                  forgot=forgot)

    not_scalar = next(((inputs, r) for inputs, r in results if r.dim() != 0), None)
    if not_scalar is not None:
        (first, _), r = not_scalar
        per_element = ": one loss per element, not reduced" if r.shape == first.shape else ""
        judge.fail("scalar", NOT_REDUCED, inputs=shape(first), got=shape(r),
                   per_element=per_element)
    else:
        judge.check("scalar", True)

    # Values are judged where a single number came back (a batch of one, say, even unreduced).
    scalars = [(inputs, r) for inputs, r in results if r.numel() == 1]
    if not scalars:
        return False
    correct = _check_value(judge, scalars, reference, name)
    _check_graph(judge, scalars, reference, correct)
    return correct


def _check_value(judge: Judge, scalars: list[tuple[Inputs, torch.Tensor]], reference: Loss,
                 name: str) -> bool:
    cases = [inputs for inputs, _ in scalars]
    got = [r for _, r in scalars]
    if _all_close(got, _on_each(reference)(cases)):
        return judge.check("value", True)
    (first, second), r = next((inputs, r) for inputs, r in scalars
                              if not close(r.detach().reshape(()), reference(*inputs)))
    evidence = (f"For inputs of shape {shape(first)} (first values {first_values(first)}, "
                f"targets {first_values(second)}) your loss is {number(r)}, but {name} is "
                f"{number(reference(first, second))}")
    mistake = recognise(got, cases, judge.exercise.misconceptions, _all_close)
    if mistake is not None:
        return judge.fail("value", mistake, evidence=evidence)
    return judge.fail("value", WRONG_LOSS, evidence=evidence)


def _check_graph(judge: Judge, scalars: list[tuple[Inputs, torch.Tensor]], reference: Loss,
                 correct: bool) -> None:
    """The loss keeps its autograd graph and, when its value is right, has the right gradient."""
    (first, second), r = scalars[0]
    if not judge.check("graph", r.grad_fn is not None, DETACHED,
                       grad=r.requires_grad) or not correct:
        return
    ok, grads = judge.attempt("graph", lambda: torch.autograd.grad(r, first, allow_unused=True),
                              doing="computing the gradient of your loss")
    if not ok:
        return
    with torch.enable_grad():
        input_again = first.detach().clone().requires_grad_()
        expected, = torch.autograd.grad(reference(input_again, second), input_again)
    yours = grads[0] if grads[0] is not None else torch.zeros_like(first)
    judge.check("graph", close(yours, expected), PARTLY_DETACHED,
                got=first_values(yours), want=first_values(expected))


def _check_large_logits(judge: Judge, student: Any, gen: torch.Generator, correct: bool) -> None:
    """Cross-entropy must stay finite (and right) for logits of size 1e4."""
    logits = 1e4 * torch.randn(4, 5, generator=gen)
    targets = torch.randint(5, (4,), generator=gen)
    with torch.enable_grad():
        ok, r = judge.attempt("stable", student, logits.clone().requires_grad_(), targets,
                              doing="computing your loss for logits of size 1e4")
    if not ok:
        return
    if not isinstance(r, torch.Tensor):
        judge.fail("stable", LARGE_NOT_A_TENSOR, got=kind(r))
        return
    values, expected = r.detach().flatten(), F.cross_entropy(logits, targets)
    # A wrong formula or reduction was reported already; here only overflow counts against it.
    stable = bool(torch.isfinite(values).all()) and (
        not correct or values.numel() != 1
        or math.isclose(values.item(), expected.item(), rel_tol=1e-4))
    (unstable,) = judge.exercise.mistakes("numerically_unstable")
    judge.check("stable", stable, unstable, logits=first_values(logits[0], 5),
                got=first_values(r), want=number(expected))
