"""The toy networks and loaders the training-loop graders hand to a student's code."""

from __future__ import annotations

from torch import nn

from course_utils.data import TensorLoader, toy_classification, toy_regression


def regression_net() -> nn.Module:
    """A small regression network (10 -> 8 -> 1), initialised from the global RNG."""
    return nn.Sequential(nn.Linear(10, 8), nn.Tanh(), nn.Linear(8, 1))


def classification_net() -> nn.Module:
    """A small classifier of 2-D points into 3 classes, initialised from the global RNG."""
    return nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 3))


def regression_loader(seed: int, n: int = 18, batch_size: int = 8) -> TensorLoader:
    """Toy regression batches of 8, 8 and 2 samples; the small last batch is much harder.

    Its targets are shifted by 4, so its loss stands out: the per-sample mean, the mean of the
    batch means and the last batch's loss are then clearly different numbers.
    """
    inputs, targets = toy_regression(n=n, seed=seed).tensors
    targets = targets.clone()
    targets[-(n % batch_size or batch_size):] += 4.0
    return TensorLoader((inputs, targets), batch_size)


def classification_loader(seed: int, n: int = 18, batch_size: int = 8) -> TensorLoader:
    """Toy classification batches of 8, 8 and 2 points; the last batch is mislabelled on purpose.

    A decent classifier then gets the last batch wrong, so the per-sample accuracy differs
    from the mean of per-batch accuracies (and likewise for the loss).
    """
    points, labels = toy_classification(n=n, classes=3, seed=seed).tensors
    labels = labels.clone()
    last = n % batch_size or batch_size
    labels[-last:] = (labels[-last:] + 1) % 3
    return TensorLoader((points, labels), batch_size)
