"""Graders of the training step, gradient accumulation and the training epoch (lessons 05-06)."""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from course_utils.data import toy_regression
from course_utils.graders.averages import (AVERAGE_CHECKS, LOSS_MISTAKES, check_mean_loss,
                                           training_numbers)
from course_utils.graders.declare import Check, Exercise, Misconception, generic, lesson
from course_utils.graders.judge import Judge
from course_utils.graders.modes import (IGNORES_LOADER, LOADER_CHECK, NO_TRAIN_MODE,
                                        TRAIN_MODE_CHECK, check_train_mode, require_loader_used)
from course_utils.graders.recording import Iteration, Recorder, count
from course_utils.graders.sandbox import steady_conditions
from course_utils.graders.steps import (STEP_CHECKS, STEP_MISTAKES, step_before_backward,
                                        check_training)
from course_utils.graders.toys import regression_loader, regression_net
from course_utils.graders.values import (LOSS_TENSOR, NUMBER_CHECKS, check_numbers, check_value,
                                         first_mismatch)

LEARNING_RATE = 0.1
PIECES, PIECE_SIZE = 3, 4  # micro-batches per accumulation_step call, samples in each
RETURNED_LOSS = Check("returned_loss", "returns the loss it stepped on")
NOT_THE_BATCH_LOSS = generic(
    "wrong_value", "{what} is {got}, but the batch's loss before the update is {want}. Return the "
                   "value of the loss you called `backward()` on, as a float.")
NOT_THE_MEAN_LOSS = generic("wrong_value", "{what} is {got}, but the mean loss over all "
                                           "micro-batches is {want}.")

TRAIN_STEP = Exercise(
    "train_step",
    [*NUMBER_CHECKS, *lesson(STEP_CHECKS, "gradients"), RETURNED_LOSS],
    [LOSS_TENSOR, *STEP_MISTAKES,
     generic("wrong_value", "{what} is {got}: the loss recomputed after the update. Return the "
                            "loss of the forward pass you stepped on ({want}), the one you "
                            "called `backward()` on.",
             produces=lambda evidence: evidence["recomputed"])])

ONLY_LAST = ("At step {step} `.grad` held the last micro-batch's gradient only (norm {got} "
             "instead of {want}): the gradients were cleared inside the micro-batch loop, so the "
             "earlier micro-batches' gradients were thrown away. Clear them once per call, "
             "outside the loop.")
ZEROED_EACH = "gradients zeroed inside the micro-batch loop"
STEP_EACH_MICRO_BATCH = Misconception(
    "step_each_micro_batch", "step() inside the micro-batch loop",
    "Your `accumulation_step` called `optimizer.step()` {steps} times in one call with "
    f"{PIECES} micro-batches: stepping inside the loop updates the weights after every "
    "micro-batch, which is not accumulation. Step once, after all micro-batches.")
MICRO_BATCH_MISTAKES = [
    Misconception("no_loss_scaling", "micro-batch losses not divided by their number",
                  f"At step {{step}} `.grad` was {PIECES} times the gradient of the mean loss "
                  f"(norm {{got}} instead of {{want}}): the {PIECES} micro-batch gradients were "
                  "added up without scaling. Divide each micro-batch's loss by the number of "
                  "micro-batches before `backward()`, so the sum is the gradient of the mean.",
                  produces=lambda evidence: PIECES * evidence.gradient()),
    Misconception("zero_grad_each_micro_batch", ZEROED_EACH, ONLY_LAST,
                  produces=lambda evidence: evidence.gradient(-PIECE_SIZE)),
    Misconception("zero_grad_each_micro_batch", ZEROED_EACH, ONLY_LAST,
                  produces=lambda evidence: evidence.gradient(-PIECE_SIZE) / PIECES),
]
ACCUMULATED_LOSS_MISTAKES = [
    generic("wrong_value", "{what} is {got}, the sum of the micro-batch losses; return their "
                           "mean ({want}).",
            produces=lambda evidence: PIECES * evidence["mean"]),
    generic("wrong_value", "{what} is {got}, the last micro-batch's loss only; return the mean "
                           "over all micro-batches ({want}).",
            produces=lambda evidence: evidence["last"]),
    generic("wrong_value", "{what} is {got}, the last micro-batch's scaled loss only; add up "
                           "the scaled losses of all micro-batches ({want}).",
            produces=lambda evidence: evidence["last"] / PIECES),
]
ACCUMULATION_STEP = Exercise(
    "accumulation_step",
    [*NUMBER_CHECKS, *lesson(STEP_CHECKS, "one_step", "gradients"), RETURNED_LOSS],
    [LOSS_TENSOR, *STEP_MISTAKES, *MICRO_BATCH_MISTAKES, STEP_EACH_MICRO_BATCH,
     *ACCUMULATED_LOSS_MISTAKES])

TRAIN_ONE_EPOCH = Exercise(
    "train_one_epoch",
    [*lesson(NUMBER_CHECKS, "returns_float"), LOADER_CHECK, TRAIN_MODE_CHECK,
     *lesson(STEP_CHECKS, "gradients"), *lesson(AVERAGE_CHECKS[:1], "mean_loss")],
    [LOSS_TENSOR, IGNORES_LOADER, NO_TRAIN_MODE, *STEP_MISTAKES, *LOSS_MISTAKES])


def _watched_regression() -> tuple[Recorder, torch.optim.Optimizer]:
    recorder = Recorder(regression_net())
    optimizer = recorder.watch(torch.optim.SGD(recorder.model.parameters(), lr=LEARNING_RATE))
    return recorder, optimizer


def _ordinal(n: int) -> str:
    return {1: "1st", 2: "2nd", 3: "3rd"}.get(n, f"{n}th")


@TRAIN_STEP
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
                           [step_before_backward(recorder)]):
            returned.append(judge.call(train_step, recorder.model, x, y, loss_fn, optimizer))
        iterations.append(Iteration(recorder.events[start:], params, x, y))
        after.append(recorder.snapshot())

    losses = check_numbers(judge, returned, [f"The value `train_step` returned in call {k}"
                                             for k in range(1, len(returned) + 1)])
    check_training(judge, recorder, iterations, loss_fn, who="Your `train_step`", unit="call")
    wants = [recorder.loss(it.params, it.inputs, it.targets, loss_fn) for it in iterations]
    k = first_mismatch(list(zip(losses, wants)))
    recomputed = recorder.loss(after[k], iterations[k].inputs, iterations[k].targets, loss_fn)
    check_value(judge, "returned_loss", losses[k], wants[k],
                f"The loss `train_step` returned in call {k + 1}", {"recomputed": recomputed},
                TRAIN_STEP.mistakes("wrong_value"), NOT_THE_BATCH_LOSS)


@ACCUMULATION_STEP
@steady_conditions
def grade_accumulation_step(judge: Judge, accumulation_step: Callable[..., Any], *,
                            data: str) -> None:
    """Two calls with 3 equal micro-batches each: one step per call, on the mean loss's gradient.

    Grading always uses toy data.
    """
    recorder, optimizer = _watched_regression()
    loss_fn = nn.MSELoss()
    inputs, targets = toy_regression(n=2 * PIECES * PIECE_SIZE, seed=judge.seed).tensors
    iterations, returned = [], []
    for k, (x, y) in enumerate(zip(inputs.split(PIECES * PIECE_SIZE),
                                   targets.split(PIECES * PIECE_SIZE)), start=1):
        micro_batches = list(zip(x.split(PIECE_SIZE), y.split(PIECE_SIZE)))
        start, params = recorder.mark(), recorder.snapshot()
        with judge.context(f"calling `accumulation_step` for the {_ordinal(k)} time",
                           [step_before_backward(recorder)]):
            returned.append(judge.call(accumulation_step, recorder.model, micro_batches, loss_fn,
                                       optimizer))
        iterations.append(Iteration(recorder.events[start:], params, x, y))

    losses = check_numbers(judge, returned, [f"The value `accumulation_step` returned in call {k}"
                                             for k in range(1, len(returned) + 1)])
    check_training(judge, recorder, iterations, loss_fn, who="Your `accumulation_step`",
                   unit="call", mistakes=MICRO_BATCH_MISTAKES,
                   extra_steps=STEP_EACH_MICRO_BATCH)
    if any(count(it.events, "step") > 1 for it in iterations):
        return  # The losses were then taken at different weights: no single right value.
    wants = [recorder.loss(it.params, it.inputs, it.targets, loss_fn) for it in iterations]
    k = first_mismatch(list(zip(losses, wants)))
    it = iterations[k]
    last = recorder.loss(it.params, it.inputs[-PIECE_SIZE:], it.targets[-PIECE_SIZE:], loss_fn)
    check_value(judge, "returned_loss", losses[k], wants[k],
                f"The loss `accumulation_step` returned in call {k + 1}",
                {"mean": wants[k], "last": last}, ACCUMULATED_LOSS_MISTAKES,
                NOT_THE_MEAN_LOSS)


@TRAIN_ONE_EPOCH
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
    with judge.context("running `train_one_epoch`", [step_before_backward(recorder)]):
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
    check_mean_loss(judge, loss, training_numbers(recorder, iterations, loss_fn),
                    "The epoch loss `train_one_epoch` returned")
