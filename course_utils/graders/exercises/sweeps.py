"""Grader for lesson 12's `lr_sweep`: each learning rate from the same start, on the same batches."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from torch import nn

from course_utils.graders.declare import Check, Exercise, Misconception, generic
from course_utils.graders.evidence import kind, number
from course_utils.graders.judge import Judge
from course_utils.graders.modes import NO_TRAIN_MODE, TRAIN_MODE_CHECK, check_train_mode
from course_utils.graders.recording import Iteration, Params, Recorder
from course_utils.graders.sandbox import steady_conditions
from course_utils.graders.steps import (STEP_CHECKS, STEP_MISTAKES, step_before_backward,
                                        check_training)
from course_utils.graders.toys import regression_loader
from course_utils.graders.values import LOSS_TENSOR, NUMBER_CHECKS, check_numbers, check_value

LRS = (0.1, 0.03, 0.01)
# More steps than the loader has batches: each learning rate must start over at its end.
STEPS = 4
MOMENTUM = 0.9  # gives the optimizer a state that a reused optimizer carries over


class Counting(nn.Module):
    """Counts the batches it sees in training mode in a buffer, as batch norm does."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("batches_seen", torch.tensor(0))

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.batches_seen += 1
        return inputs


def sweep_net() -> nn.Module:
    """The toy regression network behind a buffer that changes while it trains."""
    return nn.Sequential(Counting(), nn.Linear(10, 8), nn.Tanh(), nn.Linear(8, 1))


@dataclass(frozen=True)
class State:
    """The network's parameters and buffers at one moment."""

    params: Params
    buffers: Params


@dataclass(frozen=True)
class Stepped:
    """One optimizer step: which optimizer, at which learning rates, whether it had state."""

    forward: int  # the index of the last forward pass before it ended
    optimizer: int  # its index among the optimizers ``make_optimizer`` built (-1: another one)
    lrs: tuple[float, ...]
    had_state: bool


@dataclass(frozen=True)
class Losses:
    """The reference losses of one learning rate's steps."""

    mean: float
    last: float


def _ordinal(n: int) -> str:
    return {1: "1st", 2: "2nd", 3: "3rd"}.get(n, f"{n}th")


def _batches(indices: Sequence[int | None]) -> str:
    """Batch numbers from 1, in the order taken: ``1, 2, 3, 1``; ``?`` for an unknown batch."""
    return ", ".join("?" if i is None else str(i + 1) for i in indices)


WRONG_SHAPE = generic(
    "wrong_return_type",
    "`lr_sweep` returned {got} for {count} learning rates; return a list of {count} floats, "
    "each learning rate's mean loss over its steps, in the order of `lrs`.")
TRAINED_A_COPY = generic(
    "wrong_value",
    "`make_optimizer` received {foreign} parameter tensors that are not the parameters of the "
    "`model` given to `lr_sweep`: the sweep trained a copy of it. Train the model itself, with "
    "`make_optimizer(model.parameters(), lr)`, and load its saved initial state before each "
    "learning rate.")
STEP_COUNT = generic(
    "wrong_value",
    "Your `lr_sweep` ran {forwards} forward passes for {count} learning rates of {steps} steps "
    "each, from a loader of {batches} batches: train every learning rate exactly `steps` "
    "steps, one forward pass each, starting over at the loader's first batch when it runs out.")
STATE_CARRIED = Misconception(
    "state_not_restored", "each lr starts where the previous one ended",
    "The {ordinal} learning rate ({lr}) started from the parameters the previous one ended "
    "with, not from the model's initial ones (they differ by up to {change}): every learning "
    "rate after the first was judged on a half-trained model. Save the initial state with "
    "`copy.deepcopy(model.state_dict())` (a plain `state_dict()` holds the live tensors, which "
    "training changes) and load it with `model.load_state_dict(...)` before each learning "
    "rate.")
STATE_OTHER = Misconception(
    STATE_CARRIED.code, STATE_CARRIED.plain,
    "The {ordinal} learning rate ({lr}) started from parameters that differ from the model's "
    "initial ones by up to {change}: every learning rate must start from the state the model "
    "had when `lr_sweep` was called. Save it with `copy.deepcopy(model.state_dict())` and load "
    "it with `model.load_state_dict(...)` before each learning rate.")
BUFFERS_CARRIED = Misconception(
    STATE_CARRIED.code, STATE_CARRIED.plain,
    "The {ordinal} learning rate ({lr}) started from the initial parameters, but the model's "
    "buffers ({buffers}) kept the values training had left in them (batch norm's running "
    "statistics are such buffers). Restore the whole `state_dict()`, which holds parameters "
    "and buffers, not only `model.parameters()`.")
OPTIMIZER_REUSED = Misconception(
    "optimizer_reused", "optimizer state carried from one lr to the next",
    "The {ordinal} learning rate ({lr}) stepped with the optimizer built for an earlier one "
    "(`make_optimizer` was called {calls} times for {count} learning rates): its momentum "
    "carries the previous learning rate's updates into this one. Build a fresh optimizer with "
    "`make_optimizer(model.parameters(), lr)` for every learning rate.")
OPTIMIZER_STATE_LOADED = Misconception(
    OPTIMIZER_REUSED.code, OPTIMIZER_REUSED.plain,
    "The {ordinal} learning rate ({lr}) stepped with a new optimizer that already held state "
    "(momentum) at its first step: the state of an earlier optimizer was loaded into it, so "
    "the previous learning rate's updates carry into this one. Use the optimizer "
    "`make_optimizer(model.parameters(), lr)` returns as it is.")
WRONG_LR = generic(
    "wrong_value",
    "The {ordinal} learning rate ({lr}) trained with an optimizer whose learning rate was "
    "{got}: build each learning rate's optimizer with `make_optimizer(model.parameters(), lr)`, "
    "passing that learning rate.")
DIFFERENT_BATCHES = Misconception(
    "different_batches", "each lr sees other batches",
    "The {ordinal} learning rate ({lr}) trained on the batches {seen} (numbered from 1 in the "
    "loader's order) but the first one on {first}: the learning rates saw different data, so "
    "their losses differ for reasons other than the learning rate. Start a new iterator over "
    "the loader, `iter(loader)`, for every learning rate.")
WRONG_BATCHES = generic(
    "wrong_value",
    "Every learning rate trained on the batches {seen} (numbered from 1 in the loader's order), "
    "but with {batches} batches in the loader and {steps} steps it should take {want}: the "
    "loader's batches from its start, starting over at the first when it runs out.")
LEFT_TRAINED = Misconception(
    "model_left_trained", "the model is left trained after the sweep",
    "After `lr_sweep` returned, {moved} of the model's {tensors} parameter and buffer tensors "
    "were not as it received them (parameters changed by up to {change}): the sweep must leave "
    "the model as it found it, so the training that follows starts from the initial weights. "
    "Load the saved initial state once more after the last learning rate.")
LAST_STEP = Misconception(
    "returns_last_batch_loss", "returns the last batch's loss as the epoch loss",
    "{what} is {got}, the loss of its last step only; the mean over its steps is {want}. Add "
    "up the `.item()` of every step's loss and divide by `steps`.",
    produces=lambda losses: losses.last)
NOT_COMPARED = generic("wrong_return_type", "The losses could not be compared: see the returned "
                                           "value above.")
WRONG_MEAN = generic(
    "wrong_value",
    "{what} is {got}, but the mean of the losses of its steps (each at the weights its forward "
    "pass met) is {want}.")

LR_SWEEP = Exercise(
    "lr_sweep",
    [Check("returns_list", "returns a list with one loss per learning rate"), *NUMBER_CHECKS,
     Check("trains_model", "trains the model it was given"),
     Check("step_count", "trains every learning rate `steps` steps"),
     TRAIN_MODE_CHECK, *STEP_CHECKS,
     Check("restored", "starts every learning rate from the model's initial parameters and "
                       "buffers", weight=3, lesson=True),
     Check("fresh_optimizer", "builds a fresh optimizer at each learning rate", weight=2,
           lesson=True),
     Check("same_batches", "trains every learning rate on the same batches, the loader's from "
                           "its start", weight=2, lesson=True),
     Check("left_restored", "leaves the model with its initial parameters and buffers",
           weight=2),
     Check("mean_loss", "returns each learning rate's mean loss over its steps")],
    [WRONG_SHAPE, LOSS_TENSOR, TRAINED_A_COPY, STEP_COUNT, NO_TRAIN_MODE, *STEP_MISTAKES, STATE_CARRIED,
     STATE_OTHER, BUFFERS_CARRIED, OPTIMIZER_REUSED, OPTIMIZER_STATE_LOADED, WRONG_LR,
     DIFFERENT_BATCHES, WRONG_BATCHES, LEFT_TRAINED, LAST_STEP, WRONG_MEAN, NOT_COMPARED])


class SweepRecorder(Recorder):
    """A recorder that also keeps the inputs, parameters and buffers each forward pass met, and
    every step's optimizer, learning rates and state."""

    def __init__(self, net: nn.Module, batches: Sequence[tuple[torch.Tensor, torch.Tensor]]):
        super().__init__(net)
        self.batches = batches
        self.forwards: list[tuple[State, torch.Tensor]] = []
        self.optimizers: list[torch.optim.Optimizer] = []
        self.steps: list[Stepped] = []
        self.foreign = 0  # parameter tensors given to `make_optimizer` that are not the model's
        self.after_steps: list[tuple[int, State]] = []  # last forward's index, state after step
        net.register_forward_pre_hook(
            lambda module, args: self.forwards.append((self.state(), args[0])))

    def state(self) -> State:
        """A copy of the network's parameters and buffers now."""
        with torch.inference_mode(False), torch.no_grad():
            buffers = {n: b.detach().clone() for n, b in self.model.net.named_buffers()}
        return State(self.snapshot(), buffers)

    def make_optimizer(self, params: Any, lr: float) -> torch.optim.Optimizer:
        """What the student receives as ``make_optimizer``: SGD with momentum, recorded."""
        optimizer = self.watch(torch.optim.SGD(params, lr=lr, momentum=MOMENTUM))
        own = {id(p) for p in self.model.parameters()}
        self.foreign += sum(id(p) not in own for group in optimizer.param_groups
                            for p in group["params"])
        index = len(self.optimizers)
        self.optimizers.append(optimizer)
        had_state: list[bool] = []

        def before(opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
            had_state.append(bool(opt.state))

        def after(opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
            # After the step, a closure's forward pass has run too: both count it.
            self.steps.append(Stepped(len(self.forwards) - 1, index,
                                      tuple(g["lr"] for g in opt.param_groups), had_state.pop()))
            self.after_steps.append((len(self.forwards) - 1, self.state()))

        optimizer.register_step_pre_hook(before)
        optimizer.register_step_post_hook(after)
        return optimizer

    def batch_index(self, inputs: torch.Tensor) -> int | None:
        """Which of the loader's batches ``inputs`` is, or None."""
        return next((k for k, (x, _) in enumerate(self.batches)
                     if x.shape == inputs.shape and torch.equal(x, inputs)), None)


@LR_SWEEP
@steady_conditions
def grade_lr_sweep(judge: Judge, lr_sweep: Callable[..., Any], *, data: str = "toy") -> None:
    """Three learning rates of four steps each on a loader of three batches, with SGD and
    momentum; the model arrives in eval mode. Grading always uses toy data."""
    loader = regression_loader(judge.seed)
    recorder = SweepRecorder(sweep_net(), list(loader))
    model = recorder.model.eval()  # as after validation: the function must switch it back
    initial = recorder.state()
    loss_fn = nn.MSELoss()
    with judge.context("running `lr_sweep`", [step_before_backward(recorder)]):
        returned = judge.call(lr_sweep, model, loader, loss_fn, recorder.make_optimizer,
                              list(LRS), STEPS)
    final = recorder.state()

    values = _check_returned(judge, returned)
    judge.require("trains_model", not recorder.foreign, TRAINED_A_COPY, foreign=recorder.foreign)
    forwards = recorder.forwards
    judge.require("step_count", len(forwards) == len(LRS) * STEPS, STEP_COUNT,
                  forwards=len(forwards), count=len(LRS), steps=STEPS, batches=len(loader))
    forward_events = [e for e in recorder.events if e.kind == "forward"]
    check_train_mode(judge, forward_events, "Your `lr_sweep`")
    iterations = _iterations(recorder)
    check_training(judge, recorder, iterations, loss_fn, who="Your `lr_sweep`")
    indices = [recorder.batch_index(inputs) for _, inputs in forwards]
    segments = [slice(k * STEPS, (k + 1) * STEPS) for k in range(len(LRS))]
    _check_restored(judge, recorder, initial, segments)
    _check_optimizers(judge, recorder, segments)
    _check_batches(judge, [indices[s] for s in segments], len(loader))
    _check_left(judge, initial, final)
    _check_losses(judge, recorder, iterations, values, segments, loss_fn)


def _check_returned(judge: Judge, returned: Any) -> list[float | None]:
    """One float per learning rate, in a list (or tuple); returns them (empty when unusable)."""
    listed = isinstance(returned, (list, tuple))
    values = list(returned) if listed else [returned]
    shaped = judge.check("returns_list", listed and len(values) == len(LRS), WRONG_SHAPE,
                         got=kind(returned), count=len(LRS))
    names = [f"The loss `lr_sweep` returned for learning rate {lr}" for lr in LRS] if listed \
        else ["The value `lr_sweep` returned"]
    floats = check_numbers(judge, values, names[:len(values)])
    return floats if shaped else []


def _iterations(recorder: SweepRecorder) -> list[Iteration]:
    """One iteration per forward pass: its events up to the next forward pass."""
    starts = [i for i, e in enumerate(recorder.events) if e.kind == "forward"]
    result = []
    for (state, inputs), first, stop in zip(recorder.forwards, starts,
                                            starts[1:] + [len(recorder.events)]):
        index = recorder.batch_index(inputs)
        targets = None if index is None else recorder.batches[index][1]
        result.append(Iteration(recorder.events[first:stop], state.params,
                                None if index is None else inputs, targets))
    return result


def _largest_change(a: Params, b: Params) -> float:
    return max((float((a[n].double() - b[n].double()).abs().max()) for n in a), default=0.0)


def _same(a: Params, b: Params) -> bool:
    return all(torch.equal(a[n], b[n]) for n in a)


def _check_restored(judge: Judge, recorder: SweepRecorder, initial: State,
                    segments: Sequence[slice]) -> None:
    """Judges "restored": each learning rate's first forward met the initial state."""
    for k, segment in enumerate(segments):
        start = recorder.forwards[segment.start][0]
        evidence = dict(ordinal=_ordinal(k + 1), lr=LRS[k])
        if not _same(start.params, initial.params):
            # Without a restore, the state after the previous lr's last step is this one's.
            before = [state for at, state in recorder.after_steps if at < segment.start]
            carried = bool(before) and _same(start.params, before[-1].params)
            mistake = STATE_CARRIED if carried else STATE_OTHER
            judge.fail("restored", mistake, **evidence,
                       change=number(_largest_change(start.params, initial.params)))
            return
        if not _same(start.buffers, initial.buffers):
            moved = [n for n in initial.buffers if not torch.equal(start.buffers[n],
                                                                    initial.buffers[n])]
            judge.fail("restored", BUFFERS_CARRIED, **evidence,
                       buffers=", ".join(f"`{n}`" for n in moved))
            return
    judge.check("restored", True)


def _check_optimizers(judge: Judge, recorder: SweepRecorder, segments: Sequence[slice]) -> None:
    """Judges "fresh_optimizer": each lr steps with its own new optimizer, at that lr."""
    used: set[int] = set()
    for k, segment in enumerate(segments):
        steps = [s for s in recorder.steps if segment.start <= s.forward < segment.stop]
        if not steps:
            continue  # no step at all was judged by the step checks
        evidence = dict(ordinal=_ordinal(k + 1), lr=LRS[k])
        if steps[0].optimizer in used:
            judge.fail("fresh_optimizer", OPTIMIZER_REUSED, **evidence,
                       calls=len(recorder.optimizers), count=len(LRS))
            return
        if steps[0].had_state:
            judge.fail("fresh_optimizer", OPTIMIZER_STATE_LOADED, **evidence)
            return
        used.update(s.optimizer for s in steps)
        wrong = next((s.lrs for s in steps if any(abs(lr - LRS[k]) > 1e-12 for lr in s.lrs)),
                     None)
        if wrong is not None:
            judge.fail("fresh_optimizer", WRONG_LR, **evidence,
                       got="/".join(number(lr) for lr in wrong))
            return
    judge.check("fresh_optimizer", True)


def _check_batches(judge: Judge, seen: Sequence[Sequence[int | None]], batches: int) -> None:
    """Judges "same_batches": every lr took the loader's batches from its start, cycling."""
    want = [j % batches for j in range(STEPS)]
    other = next((k for k, indices in enumerate(seen) if list(indices) != list(seen[0])), None)
    if other is not None:
        judge.fail("same_batches", DIFFERENT_BATCHES, ordinal=_ordinal(other + 1),
                   lr=LRS[other], seen=_batches(seen[other]), first=_batches(seen[0]))
        return
    judge.check("same_batches", list(seen[0]) == want, WRONG_BATCHES, seen=_batches(seen[0]),
                batches=batches, steps=STEPS, want=_batches(want))


def _check_left(judge: Judge, initial: State, final: State) -> None:
    """Judges "left_restored": after the sweep the model holds its initial state."""
    before, after = {**initial.params, **initial.buffers}, {**final.params, **final.buffers}
    moved = [n for n in before if not torch.equal(before[n], after[n])]
    judge.check("left_restored", not moved, LEFT_TRAINED, moved=len(moved), tensors=len(before),
                change=number(_largest_change(final.params, initial.params)))


def _check_losses(judge: Judge, recorder: SweepRecorder, iterations: Sequence[Iteration],
                  values: Sequence[float | None], segments: Sequence[slice],
                  loss_fn: Callable[..., torch.Tensor]) -> None:
    """Judges "mean_loss" on the first learning rate whose returned loss is wrong."""
    if not values:
        judge.fail("mean_loss", NOT_COMPARED)
        return
    for k, (value, segment) in enumerate(zip(values, segments)):
        mine = [it for it in iterations[segment] if it.inputs is not None]
        if not mine:
            continue
        losses = [recorder.loss(it.params, it.inputs, it.targets, loss_fn) for it in mine]
        reference = Losses(sum(losses) / len(losses), losses[-1])
        what = f"The loss `lr_sweep` returned for learning rate {LRS[k]}"
        codes = set(judge.codes)
        check_value(judge, "mean_loss", value, reference.mean, what, reference, [LAST_STEP],
                    WRONG_MEAN)
        if judge.codes != codes:
            return
    judge.check("mean_loss", True)
