"""Averages over a loader pass: the per-sample means, and the wrong ones students compute.

Each is computed once here, with the checks and messages that tell them apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from course_utils.graders.declare import Check, Misconception, generic
from course_utils.graders.judge import Judge
from course_utils.graders.recording import Iteration, Pass, Params, Recorder
from course_utils.graders.values import check_value

AVERAGE_CHECKS = [Check("mean_loss", "returns the per-sample mean loss"),
                  Check("accuracy", "returns the accuracy as a fraction of all samples")]


@dataclass(frozen=True)
class PassNumbers:
    """Loss and accuracy of one pass over a loader, averaged the right way and the wrong ways."""

    loss: float  # per-sample mean: each batch's mean loss weighted by its size
    batch_mean_loss: float
    last_loss: float
    accuracy: float  # correct predictions over all samples
    batch_mean_accuracy: float
    correct: int
    batches: int


def pass_numbers(recorder: Recorder, batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
                 params: Sequence[Params], loss_fn: Callable[..., torch.Tensor]) -> PassNumbers:
    """The numbers of the network at ``params[i]`` on ``batches[i]``, for every ``i``.

    Example:
        >>> from torch import nn
        >>> recorder = Recorder(nn.Linear(2, 3))
        >>> x, y = torch.zeros(3, 2), torch.tensor([0, 1, 2])
        >>> numbers = pass_numbers(recorder, [(x[:2], y[:2]), (x[2:], y[2:])],
        ...                        [recorder.snapshot()] * 2, nn.CrossEntropyLoss())
        >>> numbers.batches, round(numbers.accuracy * 3), numbers.correct <= 3
        (2, 1, True)
    """
    losses, sizes, hits = [], [], []
    for (inputs, targets), values in zip(batches, params):
        outputs = recorder.outputs(values, inputs)
        losses.append(float(loss_fn(outputs, targets)))
        sizes.append(len(targets))
        classes = outputs.dim() == 2 and outputs.shape[1] > 1
        hits.append(int((outputs.argmax(dim=1) == targets).sum()) if classes else 0)
    total = sum(sizes)
    return PassNumbers(
        loss=sum(loss * size for loss, size in zip(losses, sizes)) / total,
        batch_mean_loss=sum(losses) / len(losses),
        last_loss=losses[-1],
        accuracy=sum(hits) / total,
        batch_mean_accuracy=sum(h / s for h, s in zip(hits, sizes)) / len(sizes),
        correct=sum(hits),
        batches=len(sizes))


def training_numbers(recorder: Recorder, iterations: Sequence[Iteration],
                     loss_fn: Callable[..., torch.Tensor]) -> PassNumbers:
    """The numbers of a training pass: each batch at the weights its forward pass met."""
    return pass_numbers(recorder, [(it.inputs, it.targets) for it in iterations],
                        [it.params for it in iterations], loss_fn)


def evaluation_numbers(recorder: Recorder, pass_: Pass,
                       loss_fn: Callable[..., torch.Tensor]) -> PassNumbers:
    """The numbers of an evaluation pass, at the weights each batch met."""
    params = [b.params if b.params is not None else pass_.start_params for b in pass_.batches]
    return pass_numbers(recorder, [b.batch for b in pass_.batches], params, loss_fn)


LOSS_MISTAKES = [
    Misconception("unweighted_batch_average", "mean of batch means, ignoring batch sizes",
                  "{what} is {got}, the plain mean of the batch losses; the per-sample mean is "
                  "{want}. The last batch is smaller, so averaging batch means gives its few "
                  "samples too much weight: add up each batch's loss times its number of "
                  "samples, then divide by the number of samples.",
                  produces=lambda n: n.batch_mean_loss),
    Misconception("returns_last_batch_loss", "returns the last batch's loss as the epoch loss",
                  "{what} is {got}, the loss of the last batch only; the mean over all samples "
                  "is {want}. Keep a running total over all batches instead of returning the "
                  "last `loss`.",
                  produces=lambda n: n.last_loss),
]
WRONG_MEAN_LOSS = generic(
    "wrong_value",
    "{what} is {got}, but the per-sample mean loss over the loader is {want}. Weight each "
    "batch's mean loss by its number of samples and divide by the number of samples.")

ACCURACY_MISTAKES = [
    Misconception("accuracy_percent", "accuracy as a percentage instead of a fraction",
                  "{what} is {got}, a percentage; the course uses a fraction between 0 and 1 "
                  "(here {want}). Do not multiply by 100.",
                  produces=lambda n: 100 * n.accuracy),
    Misconception("unweighted_batch_average", LOSS_MISTAKES[0].plain,
                  "{what} is {got}, the plain mean of per-batch accuracies; over all samples it "
                  "is {want}. Count correct predictions over the whole loader and divide once "
                  "by the number of samples.",
                  produces=lambda n: n.batch_mean_accuracy),
    Misconception("wrong_accuracy", "accuracy is computed wrongly",
                  "{what} is {got}, the number of correct predictions; the accuracy is that "
                  "count divided by the number of samples ({want}).",
                  produces=lambda n: float(n.correct)),
    Misconception("wrong_accuracy", "accuracy is computed wrongly",
                  "{what} is {got}: the number of correct predictions divided by the number of "
                  "batches. Divide by the number of samples (`len(loader.dataset)`) instead: "
                  "{want}.",
                  produces=lambda n: n.correct / n.batches),
]
WRONG_ACCURACY = Misconception(
    "wrong_accuracy", "accuracy is computed wrongly",
    "{what} is {got}, but the fraction of correctly classified samples is {want}. The "
    "predicted class is the index of the largest logit; count how often it equals the label, "
    "over all samples.")

# Every misconception about averages, for exercises to declare.
AVERAGE_MISTAKES = [*LOSS_MISTAKES, *ACCURACY_MISTAKES, WRONG_ACCURACY]


def check_mean_loss(judge: Judge, loss: float | None, numbers: PassNumbers, what: str,
                    check: str = "mean_loss") -> None:
    """Judges ``check``: the loss is the per-sample mean, not the mean of batch means nor the
    last batch's."""
    check_value(judge, check, loss, numbers.loss, what, numbers, LOSS_MISTAKES,
                WRONG_MEAN_LOSS)


def check_accuracy(judge: Judge, accuracy: float | None, numbers: PassNumbers, what: str,
                   check: str = "accuracy") -> None:
    """Judges ``check``: the accuracy is the fraction of all samples classified correctly."""
    check_value(judge, check, accuracy, numbers.accuracy, what, numbers,
                ACCURACY_MISTAKES, WRONG_ACCURACY)
