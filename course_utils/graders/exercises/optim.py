"""Grader for lesson 04: `sgd_step(params, lr)`, one step of plain gradient descent by hand."""

from __future__ import annotations

from typing import Any

import torch

from course_utils.graders.declare import Check, Exercise, Misconception, generic
from course_utils.graders.evidence import close, first_values, generator, number, ratio
from course_utils.graders.judge import Judge, KnownError
from course_utils.graders.sandbox import raised_by_student

_LEARNING_RATE = 0.1

TRACKED_UPDATE = Misconception(
    "update_tracked_by_autograd", "update recorded by autograd (no torch.no_grad())",
    "Your update changes a parameter in place while autograd is recording. PyTorch refuses: "
    "a parameter is a leaf of the graph that requires grad, and the update is not part of the "
    "model's computation. Do the update inside a `with torch.no_grad():` block, so autograd "
    "does not record it.")
NONE_GRAD = Misconception(
    "none_grad_crash", "crashes on parameters without a gradient",
    "Your code crashed on a parameter whose `.grad` is None. A parameter that took no part in "
    "the loss (an unused or frozen layer) has no gradient after `backward()`: skip such "
    "parameters instead of updating them.")


def _held(error: BaseException) -> list[Any]:
    """What the student's line that raised ``error`` held, lists and tuples opened; nothing when
    a library function raised it."""
    values = list((raised_by_student(error) or {}).values())
    return values + [v for held in values if isinstance(held, (list, tuple)) for v in held]


def _on_a_leaf(error: BaseException) -> bool:
    # Autograd refuses in the in-place operation itself, in the student's own line, which holds
    # a leaf that requires grad.
    return any(isinstance(v, torch.Tensor) and v.is_leaf and v.requires_grad
               for v in _held(error))


def _on_a_missing_grad(error: BaseException) -> bool:
    # `.grad` used where it is None: an attribute of None, or an operation in the student's line
    # on None or on a parameter whose `.grad` is None.
    if isinstance(error, AttributeError):
        return error.obj is None
    return any(v is None or isinstance(v, torch.Tensor) and v.requires_grad and v.grad is None
               for v in _held(error))


_TRACKED_UPDATE = KnownError(TRACKED_UPDATE, RuntimeError, when=_on_a_leaf)
_NONE_GRAD = KnownError(NONE_GRAD, (TypeError, AttributeError), when=_on_a_missing_grad)


NOT_IN_PLACE = Misconception(
    "no_in_place_update", "parameters not updated in place",
    "{values}, but it still holds its old values. {how} Change the values inside the existing "
    "tensor with an in-place operation, under `torch.no_grad()`.")
ASCENT = Misconception(
    "gradient_ascent", "update goes up the gradient instead of down",
    "{values}, but it holds {got}: it moved up the gradient, which makes the loss larger. "
    "Gradient descent steps against the gradient.")
GRADIENTS_CHANGED = Misconception(
    "modifies_gradients", "the update changes .grad",
    "Before your step `params[{i}].grad` was {before}; afterwards it is {now}. The step should "
    "only read the gradients: clearing them is `zero_grad()`'s job, at its own place in the "
    "training loop, and scaling them in place changes what other code (gradient clipping, "
    "logging) sees.")
GRADIENT_FILLED = GRADIENTS_CHANGED.saying(
    "`params[1]` had no gradient (`.grad` was None), and after your step its `.grad` is {now}. "
    "Leave `.grad` as it is; a parameter without a gradient is simply skipped.")
WRONG_STEP = generic("wrong_value", "{values}, but it holds {got}{times}. One step moves each "
                                    "parameter by minus the learning rate times its gradient.")
STEPPED_WITHOUT_GRADIENT = generic(
    "wrong_value",
    "`params[1]` had no gradient (`.grad` was None), yet your step changed it from {before} to "
    "{after}. Without a gradient there is nothing to step along: skip it.")
STOPPED_AT_NONE = generic(
    "wrong_value",
    "Your step stops at `params[1]`, whose `.grad` is None: `params[2]`, which comes after it, "
    "was not updated. Skip only the parameter without a gradient and go on with the rest of "
    "the loop.")

SGD_STEP = Exercise(
    "sgd_step",
    [Check("update", "moves each parameter object by -lr * grad, in place", lesson=True),
     Check("keeps_gradients", "leaves `.grad` as it was"),
     Check("skips_none", "leaves a parameter whose `.grad` is None untouched"),
     Check("updates_rest", "still updates the parameters after one without a gradient")],
    [NOT_IN_PLACE, ASCENT,
     TRACKED_UPDATE, NONE_GRAD,
     GRADIENTS_CHANGED, GRADIENT_FILLED])


@SGD_STEP
def grade_sgd_step(judge: Judge, student: Any, *, data: str = "toy") -> None:
    """Grades `sgd_step`: `p -= lr * p.grad` in place, untracked, skipping `.grad is None`."""
    gen = generator(judge.seed)
    params = _parameters(gen, [(3, 4), (4,)], [True, True])
    _step(judge, student, params, "updating parameters that all have gradients",
          [_TRACKED_UPDATE])
    updated = _check_updates(judge, params)
    _check_gradients_kept(judge, params)

    params = _parameters(gen, [(2, 3), (5,), (3,)], [True, False, True])
    _step(judge, student, params, "updating parameters where `params[1].grad` is None",
          [_TRACKED_UPDATE, _NONE_GRAD])
    _check_skips_none_grad(judge, params, updated)


class _Parameter:
    """A parameter handed to the student, with what it held before the step."""

    def __init__(self, tensor: torch.Tensor):
        self.tensor = tensor
        self.before = tensor.detach().clone()
        self.grad = None if tensor.grad is None else tensor.grad.clone()
        self.given: torch.Tensor = tensor  # what the list held after the call

    def expected(self) -> torch.Tensor:
        return self.before - _LEARNING_RATE * self.grad


def _parameters(gen: torch.Generator, shapes: list[tuple[int, ...]],
                with_grad: list[bool]) -> list[_Parameter]:
    tensors = []
    for size, has_grad in zip(shapes, with_grad):
        tensor = torch.randn(size, generator=gen).requires_grad_()
        if has_grad:
            tensor.grad = torch.randn(size, generator=gen)
        tensors.append(tensor)
    return [_Parameter(t) for t in tensors]


def _step(judge: Judge, student: Any, params: list[_Parameter], doing: str,
          known_errors: list[KnownError]) -> None:
    given = [p.tensor for p in params]
    # Grad mode on, as in a training loop, so an untracked update must come from the student.
    with torch.enable_grad(), judge.context(doing, known_errors):
        judge.call(student, given, _LEARNING_RATE)
    for param, now in zip(params, given):
        param.given = now


def _check_updates(judge: Judge, params: list[_Parameter]) -> bool:
    """Judges "update": every parameter object now holds ``before - lr * grad``."""
    for i, p in enumerate(params):
        after = p.tensor.detach()
        if close(after, p.expected()):
            continue
        values = (f"`params[{i}]` started at {first_values(p.before)} with gradient "
                  f"{first_values(p.grad)}; with `lr={_LEARNING_RATE}` it should now hold "
                  f"{first_values(p.expected())}")
        if close(after, p.before):
            if p.given is not p.tensor:
                how = ("Your function put new tensors into the list instead, but the model "
                       "still holds the old tensor objects, so training would not change it.")
            else:
                how = ("Writing `p = p - lr * p.grad` only points the name `p` at a new tensor; "
                       "the parameter object itself keeps its values.")
            return judge.fail("update", NOT_IN_PLACE, values=values, how=how)
        if close(after, p.before + _LEARNING_RATE * p.grad):
            return judge.fail("update", ASCENT, values=values, got=first_values(after))
        factor = ratio(after - p.before, p.expected() - p.before)
        times = (f" ({number(factor)} times the right step: is `lr` applied exactly once?)"
                 if factor else "")
        return judge.fail("update", WRONG_STEP, values=values, got=first_values(after),
                          times=times)
    return judge.check("update", True)


def _check_gradients_kept(judge: Judge, params: list[_Parameter]) -> None:
    changed = next(((i, p) for i, p in enumerate(params)
                    if p.tensor.grad is None or not close(p.tensor.grad, p.grad)), None)
    if changed is None:
        judge.check("keeps_gradients", True)
        return
    i, p = changed
    now = "None" if p.tensor.grad is None else first_values(p.tensor.grad)
    judge.fail("keeps_gradients", GRADIENTS_CHANGED, i=i, before=first_values(p.grad), now=now)


def _check_skips_none_grad(judge: Judge, params: list[_Parameter], updated: bool) -> None:
    """With a gradient-less parameter in the middle: it is untouched, the others still step."""
    skipped = next(p for p in params if p.grad is None)
    if skipped.tensor.grad is not None:
        judge.fail("skips_none", GRADIENT_FILLED, now=first_values(skipped.tensor.grad))
    else:
        judge.check("skips_none", close(skipped.tensor.detach(), skipped.before),
                    STEPPED_WITHOUT_GRADIENT, before=first_values(skipped.before),
                    after=first_values(skipped.tensor))
    if updated:  # the update rule itself was right, so a parameter left behind was never visited
        judge.check("updates_rest", close(params[-1].tensor.detach(), params[-1].expected()),
                    STOPPED_AT_NONE)
