"""Judging the steps of a training loop, and the known ways to get their gradients wrong.

`step()` and `backward()` must run, in that order, once per batch, on the gradient of that
batch's own loss.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Sequence

import torch

from course_utils.graders.declare import Check, Misconception, generic, recognise
from course_utils.graders.evidence import number
from course_utils.graders.judge import AUTOGRAD_ENGINE, Judge, KnownError
from course_utils.graders.recording import Event, Grads, Iteration, Params, Recorder, count

STEP_CHECKS = [
    Check("step_called", "calls optimizer.step()"),
    Check("backward_called", "calls backward()"),
    Check("step_after_backward", "steps after backward(), not before"),
    Check("one_step", "steps once per batch (per call for a single step)"),
    Check("gradients", "steps on the gradient of the current batch's (or call's) loss"),
]

NO_STEP = Misconception(
    "no_step", "optimizer.step() never called",
    "{who} never called `optimizer.step()` (0 steps for {iterations}), so the parameters did "
    "not change at all: `backward()` only computes gradients, the optimizer's `step()` is what "
    "applies them.")
NO_BACKWARD = Misconception(
    "no_backward", "backward() never called",
    "{who} never called `backward()` (0 backward passes for {iterations}), so `.grad` stayed "
    "empty and `optimizer.step()` had nothing to apply. Compute the gradients of the loss "
    "before stepping.")
STEP_BEFORE_BACKWARD = Misconception(
    "step_before_backward", "step() runs before backward()",
    "{who} called `optimizer.step()` before `backward()` (first in {unit} {first}): the step "
    "then applies whatever `.grad` held before (nothing at first, later the previous {unit}'s "
    "gradient). Compute the gradients first, then step.")
EXTRA_STEPS = generic("wrong_value", "{who} called `optimizer.step()` {steps} times for one "
                                     "{unit}; each {unit} should give exactly one step.")

STEPPED_UNDER_THE_GRAPH = STEP_BEFORE_BACKWARD.saying(
    "`optimizer.step()` ran before `backward()`: the step changed the weights in place while the "
    "graph of the loss still needed their old values, so autograd refused to compute the "
    "gradients. Compute the gradients first, then step.")


def step_before_backward(recorder: Recorder) -> KnownError:
    """Autograd's refusal to run `backward()` after `step()` changed the weights the graph saved:
    an error of the autograd engine while the last thing the model saw was a step, not a forward.
    """
    def stepped_since_forward(error: BaseException) -> bool:
        last = next((e.kind for e in reversed(recorder.events) if e.kind in ("forward", "step")),
                    None)
        return last == "step"

    return KnownError(STEPPED_UNDER_THE_GRAPH, RuntimeError, AUTOGRAD_ENGINE,
                      stepped_since_forward)


@dataclass
class StepEvidence:
    """One step's evidence: the iteration it belongs to, and how to compute gradients for it."""

    recorder: Recorder
    iteration: Iteration
    loss_fn: Callable[..., torch.Tensor]
    previous: torch.Tensor | None  # the gradients the step before applied, flattened

    def gradient(self, first: int = 0, stop: int | None = None) -> torch.Tensor:
        """The flat gradient of the mean loss on samples ``first:stop`` of the iteration."""
        it = self.iteration
        grads = self.recorder.gradient(it.params, it.inputs[first:stop], it.targets[first:stop],
                                       self.loss_fn)
        return flat(grads, it.params)


ZERO_GRAD_AFTER_BACKWARD = Misconception(
    "zero_grad_after_backward", "gradients zeroed between backward() and step()",
    "At step {step} `.grad` was {empty} although `backward()` had run for this {unit} (its "
    "gradient has norm {want}): the gradients were cleared between `backward()` and `step()`, "
    "so the step changed nothing. Clear them before the forward pass or after `step()`, never "
    "in between.",
    produces=lambda evidence: torch.zeros_like(evidence.gradient()))
NO_ZERO_GRAD = Misconception(
    "no_zero_grad", "gradients never zeroed, so they accumulate",
    "{who} lets gradients accumulate {across}: at step {step} `.grad` was this {unit}'s "
    "gradient plus the one left over from the step before (norm {got} instead of {want}). "
    "`backward()` adds into `.grad`; clear it once per {unit} with `optimizer.zero_grad()`, "
    "before the forward pass or after `step()`.",
    produces=lambda evidence: None if evidence.previous is None or not evidence.previous.any()
    else evidence.previous + evidence.gradient())
WRONG_GRADIENT = generic(
    "wrong_value",
    "At step {step} `.grad` (norm {got}) was not the gradient of this {unit}'s loss (norm "
    "{want}). Call `backward()` on the loss of the current {unit}, computed with the `loss_fn` "
    "you were given.")

# The misconceptions ``check_training`` may report, for exercises to declare.
STEP_MISTAKES = [NO_STEP, NO_BACKWARD, STEP_BEFORE_BACKWARD, ZERO_GRAD_AFTER_BACKWARD,
                 NO_ZERO_GRAD]


# What a loop does to an iteration's gradient before stepping on it (clipping, for instance).
Finish = Callable[[StepEvidence, torch.Tensor], torch.Tensor]


def _finished(produces: Callable[[StepEvidence], torch.Tensor | None], finish: Finish
              ) -> Callable[[StepEvidence], torch.Tensor | None]:
    """A mistake's gradient, then what the loop does to every gradient before its step."""

    def left(evidence: StepEvidence) -> torch.Tensor | None:
        gradient = produces(evidence)
        return None if gradient is None else finish(evidence, gradient)

    return left


def flat(grads: Grads, like: Params) -> torch.Tensor:
    """The gradients as one vector, zeros where ``.grad`` was None."""
    return torch.cat([(torch.zeros_like(p) if grads.get(n) is None else grads[n]).flatten()
                      for n, p in like.items()])


def same_gradient(a: torch.Tensor, b: torch.Tensor | None) -> bool:
    """Equal up to a relative 1e-4 of ``b``'s norm (``b`` None: a mistake that does not apply).

    Example:
        >>> same_gradient(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 2.00001]))
        True
    """
    return b is not None and bool((a - b).norm() <= 1e-4 * b.norm() + 1e-7)


def _plural(n: int, unit: str) -> str:
    return f"1 {unit}" if n == 1 else f"{n} {unit}{'es' if unit.endswith('ch') else 's'}"


def check_training(judge: Judge, recorder: Recorder, iterations: Sequence[Iteration],
                   loss_fn: Callable[..., torch.Tensor], *, who: str, unit: str = "batch",
                   mistakes: Sequence[Misconception] = (),
                   extra_steps: Misconception | None = None, finish: Finish | None = None,
                   same: Callable[[torch.Tensor, torch.Tensor | None], bool] = same_gradient,
                   ) -> None:
    """Judges ``STEP_CHECKS`` from what happened in each iteration of a training loop.

    Args:
        iterations: one per batch (or per call, for a single step).
        who: names the student's function in feedback ("Your `train_one_epoch`").
        unit: what one iteration learns from, in feedback ("batch", "call").
        mistakes: further gradient misconceptions; ``produces`` turns a ``StepEvidence``
            into the flat gradient the mistake leaves; messages may use ``{step}``,
            ``{got}`` and ``{want}`` (gradient norms).
        extra_steps: reported when an iteration calls ``step()`` more than once; its message
            may use ``{steps}``. By default ``wrong_value``.
        finish: what the loop must do to an iteration's gradient before its step (clipping):
            applied to the right gradient and to what the shared zero_grad mistakes leave.
        same: when two flat gradients count as equal.
    """
    steps = [count(it.events, "step") for it in iterations]
    backwards = sum(count(it.events, "backward") for it in iterations)
    late = next((k for k, it in enumerate(iterations) if _step_before_backward(it.events)), None)
    extra = next((s for s in steps if s > 1), None)
    evidence = dict(who=who, unit=unit, iterations=_plural(len(iterations), unit),
                    first=(late or 0) + 1, steps=extra)
    stepped = judge.check("step_called", sum(steps) > 0, NO_STEP, **evidence)
    backed = judge.check("backward_called", backwards > 0, NO_BACKWARD, **evidence)
    ordered = judge.check("step_after_backward", late is None, STEP_BEFORE_BACKWARD, **evidence)
    extra_steps = extra_steps or EXTRA_STEPS
    judge.check("one_step", extra is None, extra_steps, **evidence)
    if stepped and backed and ordered:
        _check_gradients(judge, recorder, iterations, steps, loss_fn, who, unit, mistakes,
                         finish, same)


def _step_before_backward(events: Sequence[Event]) -> bool:
    """A ``step()`` with no ``backward()`` before it in its iteration, but one after it."""
    kinds = [e.kind for e in events]
    if "step" not in kinds:
        return False
    first_step = kinds.index("step")
    return "backward" not in kinds[:first_step] and "backward" in kinds[first_step:]


def _check_gradients(judge: Judge, recorder: Recorder, iterations: Sequence[Iteration],
                     steps: list[int], loss_fn: Callable[..., torch.Tensor], who: str, unit: str,
                     mistakes: Sequence[Misconception], finish: Finish | None,
                     same: Callable[[torch.Tensor, torch.Tensor | None], bool]) -> None:
    """Judges "gradients" at every step whose tensors were kept, from the first wrong one."""
    shared = [ZERO_GRAD_AFTER_BACKWARD, NO_ZERO_GRAD]
    if finish is not None:
        shared = [replace(m, produces=_finished(m.produces, finish)) for m in shared]
    previous: torch.Tensor | None = None
    step_number = 0
    for it, taken in zip(iterations, steps):
        step_events = [e for e in it.events if e.kind == "step"]
        step_number += taken
        kept = it.params is not None and step_events and step_events[-1].grads is not None
        if taken != 1 or it.inputs is None or not kept:
            previous = flat(step_events[-1].grads, it.params) if kept else None
            continue
        got = flat(step_events[0].grads, it.params)
        evidence = StepEvidence(recorder, it, loss_fn, previous)
        want = evidence.gradient() if finish is None else finish(evidence, evidence.gradient())
        previous = got
        if same(got, want):
            continue
        empty = "`None`" if all(g is None for g in step_events[0].grads.values()) \
            else "all zeros"
        across = "from one call to the next" if unit == "call" else f"across {unit}es"
        mistake = recognise(got, evidence, [shared[0], *mistakes, shared[1]], same) \
            or WRONG_GRADIENT
        judge.fail("gradients", mistake, step=step_number, got=number(got.norm()),
                   want=number(want.norm()), empty=empty, unit=unit, who=who, across=across)
        return
    judge.check("gradients", True)
