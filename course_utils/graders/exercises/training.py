"""Graders of the training step, gradient accumulation and the training epoch (lessons 05-06)."""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from course_utils.data import toy_regression
from course_utils.graders._legacy import LegacyJudge as Judge, exercise
from course_utils.graders._watch import (STEP_BEFORE_BACKWARD_ERRORS, Iteration, Mistakes,
                                         Params, Recorder, check_epoch_loss, check_numbers,
                                         check_train_mode, check_training, check_value, count,
                                         epoch_loss_numbers, first_mismatch, regression_loader,
                                         regression_net, require_loader_used, steady_conditions)

LEARNING_RATE = 0.1


def _watched_regression() -> tuple[Recorder, torch.optim.Optimizer]:
    recorder = Recorder(regression_net())
    optimizer = recorder.watch(torch.optim.SGD(recorder.model.parameters(), lr=LEARNING_RATE))
    return recorder, optimizer


def _ordinal(n: int) -> str:
    return {1: "1st", 2: "2nd", 3: "3rd"}.get(n, f"{n}th")


@exercise("train_step", timeout=10)
@steady_conditions
def grade_train_step(judge: Judge, train_step: Callable[..., Any], *, data: str) -> None:
    """Three calls on fresh batches: one step each, on that batch's gradient, returning its loss.

    The model's ``.grad`` starts as None, so clearing gradients after the step is right too.
    Grading always uses toy data.
    """
    recorder, optimizer = _watched_regression()
    loss_fn = nn.MSELoss()
    inputs, targets = toy_regression(n=18, seed=judge.seed).tensors
    iterations, returned, after = [], [], []
    for k, (x, y) in enumerate(zip(inputs.split(6), targets.split(6)), start=1):
        start, params = recorder.mark(), recorder.snapshot()
        with judge.context(f"calling `train_step` for the {_ordinal(k)} time",
                           STEP_BEFORE_BACKWARD_ERRORS):
            returned.append(judge.call(train_step, recorder.model, x, y, loss_fn, optimizer))
        iterations.append(Iteration(recorder.events[start:], params, x, y))
        after.append(recorder.snapshot())

    losses = check_numbers(judge, returned, [f"The value `train_step` returned in call {k}"
                                             for k in range(1, len(returned) + 1)])
    check_training(judge, recorder, iterations, loss_fn, who="Your `train_step`", unit="call")
    wants = [recorder.loss(it.params, it.inputs, it.targets, loss_fn) for it in iterations]
    k = first_mismatch(list(zip(losses, wants)))
    recomputed = recorder.loss(after[k], iterations[k].inputs, iterations[k].targets, loss_fn)
    check_value(judge, losses[k], wants[k], f"The loss `train_step` returned in call {k + 1}", [
        ("wrong_value", recomputed,
         "{what} is {got}: the loss recomputed after the update. Return the loss of the "
         "forward pass you stepped on ({want}), the one you called `backward()` on."),
    ], "{what} is {got}, but the batch's loss before the update is {want}. Return the value "
       "of the loss you called `backward()` on, as a float.")


def _micro_batch_mistakes(recorder: Recorder, loss_fn: nn.Module, pieces: int) -> Mistakes:
    """Gradients that the known accumulation mistakes leave at the step, for one call."""

    def mistakes(it: Iteration) -> list[tuple[str, Params, str]]:
        whole = recorder.gradient(it.params, it.inputs, it.targets, loss_fn)
        size = len(it.inputs) // pieces
        last = recorder.gradient(it.params, it.inputs[-size:], it.targets[-size:], loss_fn)
        only_last = ("At step {step} `.grad` held the last micro-batch's gradient only (norm "
                     "{got} instead of {want}): the gradients were cleared inside the "
                     "micro-batch loop, so the earlier micro-batches' gradients were thrown "
                     "away. Clear them once per call, outside the loop.")
        return [
            ("no_loss_scaling", {n: g * pieces for n, g in whole.items()},
             f"At step {{step}} `.grad` was {pieces} times the gradient of the mean loss (norm "
             f"{{got}} instead of {{want}}): the {pieces} micro-batch gradients were added up "
             "without scaling. Divide each micro-batch's loss by the number of micro-batches "
             "before `backward()`, so the sum is the gradient of the mean."),
            ("zero_grad_each_micro_batch", last, only_last),
            ("zero_grad_each_micro_batch", {n: g / pieces for n, g in last.items()}, only_last),
        ]

    return mistakes


@exercise("accumulation_step", timeout=10)
@steady_conditions
def grade_accumulation_step(judge: Judge, accumulation_step: Callable[..., Any], *,
                            data: str) -> None:
    """Two calls with 3 equal micro-batches each: one step per call, on the mean loss's gradient.

    Grading always uses toy data.
    """
    pieces, size = 3, 4
    recorder, optimizer = _watched_regression()
    loss_fn = nn.MSELoss()
    inputs, targets = toy_regression(n=2 * pieces * size, seed=judge.seed).tensors
    iterations, returned = [], []
    for k, (x, y) in enumerate(zip(inputs.split(pieces * size), targets.split(pieces * size)),
                               start=1):
        micro_batches = list(zip(x.split(size), y.split(size)))
        start, params = recorder.mark(), recorder.snapshot()
        with judge.context(f"calling `accumulation_step` for the {_ordinal(k)} time",
                           STEP_BEFORE_BACKWARD_ERRORS):
            returned.append(judge.call(accumulation_step, recorder.model, micro_batches, loss_fn,
                                       optimizer))
        iterations.append(Iteration(recorder.events[start:], params, x, y))

    losses = check_numbers(judge, returned, [f"The value `accumulation_step` returned in call {k}"
                                             for k in range(1, len(returned) + 1)])
    check_training(judge, recorder, iterations, loss_fn, who="Your `accumulation_step`",
                   unit="call", alternatives=_micro_batch_mistakes(recorder, loss_fn, pieces),
                   extra_steps=("step_each_micro_batch",
                                "Your `accumulation_step` called `optimizer.step()` {steps} "
                                f"times in one call with {pieces} micro-batches: stepping inside "
                                "the loop updates the weights after every micro-batch, which "
                                "is not accumulation. Step once, after all micro-batches."))
    if any(count(it.events, "step") > 1 for it in iterations):
        return  # The losses were then taken at different weights: no single right value.
    wants = [recorder.loss(it.params, it.inputs, it.targets, loss_fn) for it in iterations]
    k = first_mismatch(list(zip(losses, wants)))
    it = iterations[k]
    last = recorder.loss(it.params, it.inputs[-size:], it.targets[-size:], loss_fn)
    check_value(judge, losses[k], wants[k],
                f"The loss `accumulation_step` returned in call {k + 1}", [
                    ("wrong_value", pieces * wants[k],
                     "{what} is {got}, the sum of the micro-batch losses; return their mean "
                     "({want})."),
                    ("wrong_value", last,
                     "{what} is {got}, the last micro-batch's loss only; return the mean over "
                     "all micro-batches ({want})."),
                    ("wrong_value", last / pieces,
                     "{what} is {got}, the last micro-batch's scaled loss only; add up the "
                     "scaled losses of all micro-batches ({want})."),
                ], "{what} is {got}, but the mean loss over all micro-batches is {want}.")


@exercise("train_one_epoch", timeout=10)
@steady_conditions
def grade_train_one_epoch(judge: Judge, train_one_epoch: Callable[..., Any], *,
                          data: str) -> None:
    """One epoch over batches of 8, 8 and 2 samples, starting from a model in eval mode.

    Checks the mode, the loader, each step's gradients and the per-sample mean epoch loss.
    Grading always uses toy data.
    """
    recorder, optimizer = _watched_regression()
    loss_fn = nn.MSELoss()
    loader = recorder.loader(regression_loader(judge.seed), "loader")
    model = recorder.model.eval()  # As after validation: the function must switch it back.
    with judge.context("running `train_one_epoch`", STEP_BEFORE_BACKWARD_ERRORS):
        returned = judge.call(train_one_epoch, model, loader, loss_fn, optimizer)

    who = "Your `train_one_epoch`"
    (loss,) = check_numbers(judge, [returned], ["The epoch loss `train_one_epoch` returned"])
    forwards = [e for e in recorder.events if e.kind == "forward"]
    passes = recorder.passes()
    require_loader_used(judge, passes, loader, len(forwards), who)
    epoch = next((p for p in passes if p.forwards), passes[0])
    check_train_mode(judge, epoch.forwards, who)
    iterations = recorder.iterations(epoch)
    check_training(judge, recorder, iterations, loss_fn, who=who, unit="batch")
    check_epoch_loss(judge, loss, epoch_loss_numbers(recorder, iterations, loss_fn),
                     "The epoch loss `train_one_epoch` returned")
