"""Grader for lesson 09's `clipped_step`: gradient clipping in its place, with and without a scaler."""

from __future__ import annotations

import contextlib
import inspect
import math
import sys
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch
from torch import nn

from course_utils.data import toy_regression
from course_utils.graders.declare import Check, Exercise, Misconception, generic, recognise
from course_utils.graders.evidence import number
from course_utils.graders.judge import Judge, KnownError
from course_utils.graders.recording import Event, Iteration, Recorder, count
from course_utils.graders.sandbox import steady_conditions
from course_utils.graders.steps import (STEP_CHECKS, STEP_MISTAKES, step_before_backward,
                                        StepEvidence, check_training)
from course_utils.graders.toys import regression_net
from course_utils.graders.values import LOSS_TENSOR, NUMBER_CHECKS, check_numbers

LEARNING_RATE = 0.1
BATCH = 6
# max_norm as a share of each call's true gradient norm: clipping binds, does not, binds.
# Below 1/sqrt(97), for the 97 parameters of the toy network, some single gradient value always
# exceeds max_norm, so clipping by value always changes something too.
PLAIN_SHARES = (0.05, 2.0, 0.08)
SCALED_SHARES = (0.05, 0.08)  # the scaler's finite calls; a non-finite batch comes between them
# Autocast around the forward is allowed: bfloat16 products change gradients and loss by ~1%.
GRADIENT_RTOL = 2e-2
LOSS_RTOL = 1e-2


@dataclass(frozen=True)
class Call:
    """What one call was given: its max_norm and, with a scaler, the scale its loss was scaled by."""

    max_norm: float
    scale: float | None = None


@dataclass(frozen=True)
class Returned:
    """What one call on a finite batch returned, and the loss of the forward its step used."""

    name: str
    value: Any
    loss: float
    call: Call


def clip(gradient: torch.Tensor, max_norm: float) -> torch.Tensor:
    """The flat gradient rescaled so its norm is at most ``max_norm`` (as `clip_grad_norm_` does).

    Example:
        >>> clip(torch.tensor([3.0, 4.0]), 1.0)
        tensor([0.6000, 0.8000])
    """
    return gradient * min(1.0, max_norm / (float(gradient.norm()) + 1e-6))


def _same(got: torch.Tensor, want: torch.Tensor | None) -> bool:
    return want is not None and bool((got - want).norm() <= GRADIENT_RTOL * want.norm() + 1e-7)


def _per_parameter(evidence: StepEvidence, calls: dict[int, Call]) -> torch.Tensor:
    """Each parameter's gradient clipped to max_norm on its own."""
    max_norm = calls[id(evidence.iteration)].max_norm
    sizes = [p.numel() for p in evidence.iteration.params.values()]
    return torch.cat([clip(g, max_norm) for g in evidence.gradient().split(sizes)])


def _clip_seen(evidence: StepEvidence, before: str | None = None, after: str | None = None,
               ) -> bool:
    """A clipping function ran before the first ``before`` event, or after the last ``after``."""
    kinds = [e.kind for e in evidence.iteration.events]
    clips = [i for i, k in enumerate(kinds) if k == "clip"]
    if before is not None and before in kinds:
        return any(i < kinds.index(before) for i in clips)
    if after is not None and after in kinds:
        return any(i > len(kinds) - 1 - kinds[::-1].index(after) for i in clips)
    return False


def clipping_mistakes(calls: dict[int, Call]) -> list[Misconception]:
    """The clipping misconceptions, recognised from the gradient each step used."""
    def setting(evidence: StepEvidence) -> Call:
        return calls[id(evidence.iteration)]

    def scaled(evidence: StepEvidence) -> torch.Tensor | None:
        scale = setting(evidence).scale
        return None if scale is None else \
            clip(scale * evidence.gradient(), setting(evidence).max_norm) / scale

    return [
        Misconception(
            "clipped_scaled_gradients", "clipped before unscale_: the update is scale times too "
            "small",
            "At step {step} the gradient had norm {got} instead of {want}: it was clipped while "
            "still multiplied by the scaler's factor, so after unscaling it is that factor "
            "(65536 at first) times too small. Call `scaler.unscale_(optimizer)` right after "
            "`backward()`, then clip, then `scaler.step(optimizer)`.",
            produces=scaled),
        Misconception(
            "clipped_after_step", "gradients clipped after optimizer.step()",
            "At step {step} the gradient had norm {got}, above the call's max_norm: your code "
            "clipped it only after `step()` had already used it (its clipped norm would be "
            "{want}). Clip after `backward()` and before `step()`.",
            produces=lambda ev: ev.gradient() if _clip_seen(ev, after="step") else None),
        Misconception(
            "clipped_before_backward", "gradients clipped before backward()",
            "At step {step} the gradient had norm {got}, above the call's max_norm: your code "
            "clipped before `backward()`, when `.grad` did not hold this batch's gradient yet, "
            "so nothing of it was clipped (clipped, its norm is {want}). Clip after `backward()` "
            "and before `step()`.",
            produces=lambda ev: ev.gradient() if _clip_seen(ev, before="backward") else None),
        Misconception(
            "not_clipped", "gradient norm not clipped to max_norm",
            "At step {step} the gradient had norm {got}, above the call's max_norm: it was not "
            "clipped (clipped, its norm is {want}). Call "
            "`torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)` after `backward()` "
            "and before `step()`.",
            produces=lambda ev: ev.gradient()),
        Misconception(
            "wrong_clipping", "each parameter clipped on its own, or clipped by value",
            "At step {step} the gradient had norm {got} instead of {want}: each parameter's "
            "gradient was clipped to max_norm on its own, so together they exceed it. "
            "`clip_grad_norm_(model.parameters(), max_norm)` rescales all gradients together, "
            "by one factor, so that their combined norm is at most max_norm.",
            produces=lambda ev: _per_parameter(ev, calls)),
        Misconception(
            "wrong_clipping", "each parameter clipped on its own, or clipped by value",
            "At step {step} the gradient had norm {got} instead of {want}: each gradient value "
            "was clipped to [-max_norm, max_norm] (`clip_grad_value_`), which changes the "
            "gradient's direction and leaves its norm above max_norm. "
            "`clip_grad_norm_(model.parameters(), max_norm)` rescales all gradients together, "
            "by one factor, so that their combined norm is at most max_norm.",
            produces=lambda ev: ev.gradient().clamp(-setting(ev).max_norm,
                                                    setting(ev).max_norm)),
    ]


STEP_WITHOUT_SCALER = Misconception(
    "step_without_scaler", "optimizer.step() called directly while a scaler is given",
    "Given a `GradScaler`, your code called `optimizer.step()` directly {steps} times in "
    "{calls} calls: only `scaler.step(optimizer)` skips a step whose gradients are not finite "
    "(and unscales them if you have not), so a batch with a NaN writes NaN into the weights. "
    "Step with `scaler.step(optimizer)`.")
NOT_UPDATED = Misconception(
    "scaler_not_updated", "scaler.update() not called after each step",
    "Given a `GradScaler`, your code called `scaler.update()` {updates} times in {calls} calls: "
    "call it once per step, after `scaler.step(optimizer)`, so the scaler adapts its factor and "
    "is ready for the next `unscale_`.")
SCALED_LOSS = Misconception(
    "scaled_loss_returned", "returns the scaled loss",
    "{what} is {got}, the loss multiplied by the scaler's factor ({scale}); return the loss "
    "itself ({want}), e.g. `loss.item()`, not `scaler.scale(loss)`.",
    produces=lambda evidence: evidence["loss"] * evidence["scale"])
WRONG_LOSS = generic("wrong_value", "{what} is {got}, but the loss of the forward pass the "
                                    "step used is {want}.")
NOT_SKIPPED = STEP_WITHOUT_SCALER.saying(
    "On a batch whose gradients were not finite (a NaN in the inputs), the weights changed "
    "({what}): the step should have been skipped, which `scaler.step(optimizer)` does by "
    "itself. Step through the scaler, never `optimizer.step()` directly.")

# The declared clipping mistakes' codes and plain names; the per-call settings fill them in.
CLIPPING_MISTAKES = clipping_mistakes({})

CLIPPED_STEP = Exercise(
    "clipped_step",
    [*NUMBER_CHECKS, *STEP_CHECKS[:4],
     Check("gradients", "steps on the batch's gradient clipped to a total norm of max_norm, "
                        "after backward() and before step()", weight=3, lesson=True),
     Check("returned_loss", "returns the unscaled loss it stepped on"),
     Check("scaler", "with a scaler: steps through scaler.step() and calls scaler.update() "
                     "each call", weight=2, lesson=True),
     Check("skips_non_finite", "with a scaler, a batch with non-finite gradients leaves the "
                               "weights unchanged")],
    [LOSS_TENSOR, *STEP_MISTAKES, *CLIPPING_MISTAKES, STEP_WITHOUT_SCALER, NOT_UPDATED,
     SCALED_LOSS, WRONG_LOSS])


class RecordingScaler(torch.amp.GradScaler):
    """A `GradScaler` that logs its calls (and the factor it scales by) as recorder events.

    ``watch(optimizer)`` also logs a "direct_step" whenever the optimizer steps outside
    ``scaler.step``.
    """

    def __init__(self, recorder: Recorder):
        super().__init__("cpu")
        self._recorder = recorder
        self._stepping = False
        self.scales: list[float] = []

    def watch(self, optimizer: torch.optim.Optimizer) -> None:
        optimizer.register_step_pre_hook(
            lambda *args: None if self._stepping else self._recorder.log(Event("direct_step")))

    def scale(self, outputs: Any) -> Any:
        self.scales.append(float(self.get_scale()))
        self._recorder.log(Event("scale"))
        return super().scale(outputs)

    def unscale_(self, optimizer: torch.optim.Optimizer) -> None:
        self._recorder.log(Event("unscale"))
        super().unscale_(optimizer)

    def step(self, optimizer: torch.optim.Optimizer, *args: Any, **kwargs: Any) -> Any:
        self._recorder.log(Event("scaler_step"))
        self._stepping = True
        try:
            return super().step(optimizer, *args, **kwargs)
        finally:
            self._stepping = False

    def update(self, new_scale: Any = None) -> None:
        self._recorder.log(Event("update"))
        super().update(new_scale)

    def called_again_before_update(self) -> bool:
        """The last `unscale_` or `step` came after an earlier one that `update()` should have
        closed (an `unscale_` after `unscale_` or `step`, a `step` after `step`)."""
        calls = [e.kind for e in self._recorder.events
                 if e.kind in ("unscale", "scaler_step", "update")]
        since = calls[len(calls) - calls[::-1].index("update"):] if "update" in calls else calls
        if not since:
            return False
        *earlier, last = since
        return "scaler_step" in earlier or (last == "unscale" and "unscale" in earlier)


def scaler_not_updated(scaler: RecordingScaler | None) -> list[KnownError]:
    """The scaler's refusal to unscale or step again before `update()`: an error of its
    `unscale_` or `step` called again without an `update()` between."""
    if scaler is None:
        return []
    return [KnownError(NOT_UPDATED, RuntimeError, ("torch/amp/grad_scaler.py", method),
                       lambda error: scaler.called_again_before_update(),
                       {"updates": 0, "calls": "two"})
            for method in ("unscale_", "step")]


_CLIPPING_CODE = {inspect.unwrap(f).__code__ for f in
                  (torch.nn.utils.clip_grad_norm_, torch.nn.utils.clip_grad_value_)}


@contextlib.contextmanager
def clipping_logged(recorder: Recorder) -> Iterator[None]:
    """Logs a "clip" event whenever `clip_grad_norm_` or `clip_grad_value_` starts running."""
    previous = sys.getprofile()

    def profile(frame: Any, event: str, arg: Any) -> None:
        if event == "call" and frame.f_code in _CLIPPING_CODE:
            recorder.log(Event("clip"))

    sys.setprofile(profile)
    try:
        yield
    finally:
        sys.setprofile(previous)


def _ordinal(n: int) -> str:
    return {1: "1st", 2: "2nd", 3: "3rd"}.get(n, f"{n}th")


@CLIPPED_STEP
@steady_conditions
def grade_clipped_step(judge: Judge, clipped_step: Callable[..., Any], *, data: str) -> None:
    """Three calls without a scaler, then three with `GradScaler("cpu")`, the middle one on a
    batch with a NaN. max_norm is set from each call's true gradient norm so that clipping binds
    on some calls and not on others. Grading always uses toy data."""
    inputs, targets = toy_regression(n=5 * BATCH, seed=judge.seed).tensors
    batches = list(zip(inputs.split(BATCH), (3 * targets).split(BATCH)))
    loss_fn = nn.MSELoss()
    calls: dict[int, Call] = {}
    returned: list[Returned] = []  # the calls on finite batches

    def run(recorder: Recorder, optimizer: torch.optim.Optimizer, x: torch.Tensor,
            y: torch.Tensor, share: float, k: int, scaler: RecordingScaler | None = None,
            ) -> Iteration:
        start, params = recorder.mark(), recorder.snapshot()
        true_norm = float(torch.cat([g.flatten() for g in recorder.gradient(
            params, x, y, loss_fn).values()]).norm())
        max_norm = share * true_norm if math.isfinite(true_norm) else 1.0
        scales_before = len(scaler.scales) if scaler else 0
        with_scaler = " with a scaler" if scaler else ""
        with judge.context(f"calling `clipped_step`{with_scaler} for the {_ordinal(k)} time",
                           [step_before_backward(recorder), *scaler_not_updated(scaler)]), \
                clipping_logged(recorder):
            value = judge.call(clipped_step, recorder.model, x, y, loss_fn, optimizer, max_norm,
                               scaler)
        scale = scaler.scales[scales_before] if scaler and len(scaler.scales) > scales_before \
            else None
        iteration = Iteration(recorder.events[start:], params, x, y)
        calls[id(iteration)] = Call(max_norm, scale)
        if math.isfinite(true_norm):
            returned.append(Returned(f"The value `clipped_step`{with_scaler} returned in call {k}",
                                     value, recorder.loss(params, x, y, loss_fn),
                                     calls[id(iteration)]))
        return iteration

    def finish(evidence: StepEvidence, gradient: torch.Tensor) -> torch.Tensor:
        return clip(gradient, calls[id(evidence.iteration)].max_norm)

    # Without a scaler.
    recorder = Recorder(regression_net())
    optimizer = recorder.watch(torch.optim.SGD(recorder.model.parameters(), lr=LEARNING_RATE))
    plain = [run(recorder, optimizer, x, y, share, k)
             for k, ((x, y), share) in enumerate(zip(batches, PLAIN_SHARES), start=1)]
    codes_before = set(judge.codes)
    check_training(judge, recorder, plain, loss_fn, who="Your `clipped_step`", unit="call",
                   mistakes=clipping_mistakes(calls), finish=finish, same=_same)
    plain_right = judge.codes == codes_before
    _check_returned(judge, returned)

    # With a scaler: a finite batch, a batch with a NaN, a finite batch.
    scaled_recorder = Recorder(regression_net())
    scaled_optimizer = scaled_recorder.watch(
        torch.optim.SGD(scaled_recorder.model.parameters(), lr=LEARNING_RATE))
    scaler = RecordingScaler(scaled_recorder)
    scaler.watch(scaled_optimizer)
    (xa, ya), (xb, yb) = batches[3], batches[4]
    xn = xb.clone()
    xn[0, 0] = float("nan")
    first = run(scaled_recorder, scaled_optimizer, xa, ya, SCALED_SHARES[0], 1, scaler)
    before = scaled_recorder.snapshot()
    non_finite = run(scaled_recorder, scaled_optimizer, xn, yb, 1.0, 2, scaler)
    after = scaled_recorder.snapshot()
    last = run(scaled_recorder, scaled_optimizer, xb, yb, SCALED_SHARES[1], 3, scaler)
    scaled_calls = [first, non_finite, last]
    _check_scaler(judge, scaled_calls)
    unchanged = all(torch.equal(before[n], after[n]) for n in before)
    judge.check("skips_non_finite", unchanged, NOT_SKIPPED,
                what="some became NaN" if any(not after[n].isfinite().all() for n in after)
                else "they moved")
    finite = [first] + ([last] if unchanged else [])
    if plain_right:  # else the same mistake would be reported twice
        check_training(judge, scaled_recorder, finite, loss_fn, who="Your `clipped_step`",
                       unit="call", mistakes=clipping_mistakes(calls), finish=finish, same=_same)
    _check_returned(judge, returned[len(PLAIN_SHARES):])


def _check_scaler(judge: Judge, iterations: list[Iteration]) -> None:
    """Every optimizer step ran inside `scaler.step`, and `scaler.update` ran once per call."""
    events = [e for it in iterations for e in it.events]
    direct = count(events, "direct_step")
    if direct:
        judge.fail("scaler", STEP_WITHOUT_SCALER, steps=direct, calls=len(iterations))
        return
    updates = count(events, "update")
    judge.check("scaler", updates == len(iterations), NOT_UPDATED, updates=updates,
                calls=len(iterations))


def _check_returned(judge: Judge, returned: list[Returned]) -> None:
    """Each returned value is a float, the unscaled loss of the forward pass the step used."""
    values = check_numbers(judge, [r.value for r in returned], [r.name for r in returned])
    def same(got: float, want: float) -> bool:
        return math.isclose(got, want, rel_tol=LOSS_RTOL, abs_tol=1e-6)

    for got, call_returned in zip(values, returned):
        want, call, what = call_returned.loss, call_returned.call, call_returned.name
        if got is None or same(got, want):
            continue
        evidence = {"loss": want, "scale": call.scale or 1.0}
        mistake = recognise(got, evidence, [SCALED_LOSS] if call.scale else [], same) \
            or WRONG_LOSS
        judge.fail("returned_loss", mistake, what=what, got=number(got), want=number(want),
                   scale=number(call.scale or 1.0))
        return
    judge.check("returned_loss", True)
