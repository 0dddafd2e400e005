"""Grader for lesson 09: `train_with_schedule`, where `scheduler.step()` goes in the loop."""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from course_utils.graders.averages import (AVERAGE_CHECKS, LOSS_MISTAKES, check_mean_loss,
                                           training_numbers)
from course_utils.graders.declare import Check, Exercise, Misconception, generic
from course_utils.graders.evidence import kind, number
from course_utils.graders.judge import Judge
from course_utils.graders.modes import (IGNORES_LOADER, LOADER_CHECK, NO_TRAIN_MODE,
                                        TRAIN_MODE_CHECK, check_train_mode, require_loader_used)
from course_utils.graders.recording import Recorder, count
from course_utils.graders.sandbox import steady_conditions
from course_utils.graders.steps import (STEP_CHECKS, STEP_MISTAKES, step_before_backward,
                                        check_training)
from course_utils.graders.toys import regression_loader, regression_net
from course_utils.graders.values import LOSS_TENSOR, NUMBER_CHECKS, check_numbers, first_mismatch

EPOCHS = 3
# Two parameter groups with their own learning rates: every group must follow the schedule.
GROUP_LRS = (0.1, 0.04)
GAMMA = 0.5  # StepLR(step_size=1): epoch k trains at lr · GAMMA**k

SCHEDULE_MISTAKES = [
    Misconception("scheduler_before_optimizer",
                  "scheduler stepped at the start of each epoch, before its optimizer steps",
                  "Your loop trained at the learning rates {seen}, but the schedule's are "
                  "{intended}: every epoch used the next epoch's rate, so the schedule ran one "
                  "epoch early and its first learning rate was never used. Call "
                  "`scheduler.step()` after the epoch's `optimizer.step()` calls, at the end of "
                  "the epoch.",
                  produces=lambda lrs: [lr * GAMMA for lr in lrs]),
    Misconception("scheduler_per_batch", "scheduler stepped after every batch",
                  "Your loop trained at the learning rates {seen}, but the schedule's are "
                  "{intended}: the learning rate changed after every batch. This schedule counts "
                  "epochs: call `scheduler.step()` once per epoch, after the epoch's batches, not "
                  "inside the batch loop."),
    Misconception("scheduler_not_stepped", "scheduler never stepped",
                  "Your loop trained at the learning rates {seen}, but the schedule's are "
                  "{intended}: the learning rate never changed because `scheduler.step()` was "
                  "never called. Call it once per epoch, after the epoch's optimizer steps."),
]
WRONG_SHAPE = Misconception(
    "history_wrong_shape", "history is not one value per epoch per key",
    "`train_with_schedule` returned {got} for {epochs} epochs; it should return a list of "
    "{epochs} floats, each epoch's mean loss.")
NOT_COMPARED = WRONG_SHAPE.saying("The epoch losses could not be compared: see the returned "
                                  "value above.")
PASSES_PER_EPOCH = IGNORES_LOADER.saying(
    "{who} went through the loader {passes} times for {epochs} epochs: each epoch is one pass "
    "over all its batches.")
STEP_COUNT = generic(
    "wrong_value",
    "Your loop trained at the right learning rates, but `scheduler.step()` was called {steps} "
    "times for {epochs} epochs: call it exactly once per epoch, also after the last one, so "
    "that a resumed or continued run starts at the right point of the schedule.")
WRONG_RATES = generic(
    "wrong_value",
    "Your loop trained at the learning rates {seen}, but the schedule's are {intended}: "
    "`scheduler.step()` was called {steps} times for {epochs} epochs. Call it exactly once per "
    "epoch, after the epoch's optimizer steps.")

TRAIN_WITH_SCHEDULE = Exercise(
    "train_with_schedule",
    [Check("returns_list", "returns a list with one loss per epoch"), *NUMBER_CHECKS,
     LOADER_CHECK, TRAIN_MODE_CHECK, *STEP_CHECKS,
     Check("schedule", "steps the scheduler once per epoch, after that epoch's optimizer steps",
           weight=3, lesson=True),
     *AVERAGE_CHECKS[:1]],
    [WRONG_SHAPE, *SCHEDULE_MISTAKES, LOSS_TENSOR, IGNORES_LOADER, NO_TRAIN_MODE,
     *STEP_MISTAKES, *LOSS_MISTAKES])


@TRAIN_WITH_SCHEDULE
@steady_conditions
def grade_train_with_schedule(judge: Judge, train_with_schedule: Callable[..., Any], *,
                              data: str = "toy") -> None:
    """Three epochs of three batches with StepLR(gamma=0.5) on two parameter groups.

    Reads every group's learning rate at each ``optimizer.step()``; the model arrives in eval
    mode. Grading always uses toy data.
    """
    recorder = Recorder(regression_net())
    first, *rest = list(recorder.model.net.children())
    groups = [{"params": first.parameters(), "lr": GROUP_LRS[0]},
              {"params": [p for layer in rest for p in layer.parameters()], "lr": GROUP_LRS[1]}]
    optimizer = recorder.watch(torch.optim.SGD(groups))
    seen: list[tuple[float, ...]] = []
    optimizer.register_step_pre_hook(
        lambda opt, args, kwargs: seen.append(tuple(g["lr"] for g in opt.param_groups)))
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=GAMMA)
    loss_fn = nn.MSELoss()
    loader = recorder.loader(regression_loader(judge.seed), "loader")
    model = recorder.model.eval()  # as after validation: the function must switch it back
    with judge.context("running `train_with_schedule`", [step_before_backward(recorder)]):
        returned = judge.call(train_with_schedule, model, loader, loss_fn, optimizer, scheduler,
                              EPOCHS)

    losses = _check_losses(judge, returned)
    who = "Your `train_with_schedule`"
    passes = [p for p in recorder.passes() if p.loader == loader.name]
    require_loader_used(judge, passes, loader, count(recorder.events, "forward"), who)
    judge.check("loader", len(passes) == EPOCHS, PASSES_PER_EPOCH, who=who, passes=len(passes),
                epochs=EPOCHS)
    check_train_mode(judge, [f for p in passes for f in p.forwards], who)
    iterations = [it for p in passes for it in recorder.iterations(p)]
    check_training(judge, recorder, iterations, loss_fn, who=who)
    _check_schedule(judge, seen, scheduler, len(loader))
    numbers = [training_numbers(recorder, recorder.iterations(p), loss_fn) for p in passes]
    pairs = list(zip(losses, [n.loss for n in numbers]))
    if pairs:
        e = first_mismatch(pairs)
        check_mean_loss(judge, losses[e], numbers[e],
                        f"The loss `train_with_schedule` returned for epoch {e + 1}")
    else:
        judge.fail("mean_loss", NOT_COMPARED)


def _check_losses(judge: Judge, returned: Any) -> list[float | None]:
    """One float per epoch, in a list (or tuple); returns them (empty when unusable)."""
    listed = isinstance(returned, (list, tuple))
    values = list(returned) if listed else [returned]
    shaped = judge.check("returns_list", listed and len(values) == EPOCHS, WRONG_SHAPE,
                         got=kind(returned), epochs=EPOCHS)
    names = [f"The loss `train_with_schedule` returned for epoch {k}" if listed
             else "The value `train_with_schedule` returned" for k in range(1, len(values) + 1)]
    floats = check_numbers(judge, values, names)
    return floats if shaped else []


def _lrs(values: list[tuple[float, ...]]) -> str:
    """Learning rates step by step, the groups joined by `/`, repeats counted: `0.1/0.04 ×3`."""
    runs: list[list[Any]] = []
    for step in values:
        if runs and runs[-1][0] == step:
            runs[-1][1] += 1
        else:
            runs.append([step, 1])
    return ", ".join("/".join(number(v) for v in step) + (f" ×{n}" if n > 1 else "")
                     for step, n in runs) or "none"


def _check_schedule(judge: Judge, seen: list[tuple[float, ...]],
                    scheduler: torch.optim.lr_scheduler.LRScheduler, batches: int) -> None:
    """The learning rates at each optimizer step follow the schedule epoch by epoch."""
    intended = [tuple(lr * GAMMA ** epoch for lr in GROUP_LRS)
                for epoch in range(EPOCHS) for _ in range(batches)]
    steps_taken = scheduler.last_epoch
    if len(seen) != len(intended):
        # The step count was judged by the loop checks; compare what can be compared.
        intended = intended[:len(seen)]

    def same(a: list[tuple[float, ...]], b: list[tuple[float, ...]]) -> bool:
        return len(a) == len(b) and all(abs(x - y) <= 1e-9 * max(abs(y), 1e-12)
                                        for s, t in zip(a, b) for x, y in zip(s, t))

    # Both sequences list each optimizer step's learning rates, parameter groups joined by `/`.
    evidence = dict(seen=_lrs(seen), intended=_lrs(intended))
    if same(seen, intended):
        judge.check("schedule", steps_taken == EPOCHS, STEP_COUNT, steps=steps_taken,
                    epochs=EPOCHS)
        return
    shifted = [tuple(lr * GAMMA ** (epoch + 1) for lr in GROUP_LRS)
               for epoch in range(EPOCHS) for _ in range(batches)][:len(seen)]
    per_batch = [tuple(lr * GAMMA ** step for lr in GROUP_LRS) for step in range(len(seen))]
    constant = [GROUP_LRS] * len(seen)
    before, after_batch, never = SCHEDULE_MISTAKES
    for mistake, pattern in ((before, shifted), (after_batch, per_batch), (never, constant)):
        if seen and same(seen, pattern):
            judge.fail("schedule", mistake, **evidence)
            return
    judge.fail("schedule", WRONG_RATES, **evidence, steps=steps_taken, epochs=EPOCHS)
