"""Grader for lesson 10's `MNISTCNN`, judged by behaviour as `MNISTMLP` is."""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from course_utils.graders.declare import Check, Exercise, Misconception
from course_utils.graders.evidence import close, first_values, generator, shape
from course_utils.graders.exercises.models import (ARCHITECTURE, DETACHED, MNIST_MLP,
                                                   MODEL_CHECKS, MODULE_CHECKS, SHAPE,
                                                   check_gradients_flow, check_no_softmax,
                                                   check_output_shapes, instantiate, runs_on)
from course_utils.graders.judge import Judge

# The layers asked for: (name, shape of weight, shape of bias).
CNN_LAYERS = [("first convolution", (16, 1, 3, 3), (16,)),
              ("second convolution", (32, 16, 3, 3), (32,)),
              ("linear layer", (10, 32 * 7 * 7), (10,))]
CNN_PARAMETERS = ARCHITECTURE.saying(
    "Your `MNISTCNN` has {tensors} parameter tensors with shapes {shapes}. The layers asked for "
    "have {layers}. Check each layer's channels and kernel size, and that the linear layer "
    "takes 32·7·7 = 1568 inputs (two 2×2 poolings halve 28 twice).")
CNN_NO_RELU = ARCHITECTURE.saying(
    "Your model's output equals its layers without the ReLUs: add a ReLU after each "
    "convolution, or the two convolutions and the linear layer collapse into one linear "
    "function.")
AVERAGE_POOLING = ARCHITECTURE.saying(
    "Your model averages each 2×2 block (`AvgPool2d`); the exercise asks for `MaxPool2d(2)`, "
    "which keeps the largest value.")
CNN_FORWARD = ARCHITECTURE.saying(
    "With your model's own parameters, Conv2d(1, 16, 3, padding=1) → ReLU → MaxPool2d(2) → "
    "Conv2d(16, 32, 3, padding=1) → ReLU → MaxPool2d(2) → flatten → Linear gives {want} for "
    "the first image, but your model returned {got}. Check the order of the layers, the "
    "padding of each convolution, and that each runs exactly once.")

MNISTCNN = Exercise(
    "MNISTCNN",
    [*MODULE_CHECKS, runs_on("images"), MNIST_MLP.check("no_softmax"),
     Check("forward", "computes conv → ReLU → pool → conv → ReLU → pool → linear", weight=2,
           lesson=True),
     MODEL_CHECKS[1]],
    [SHAPE, ARCHITECTURE, *MNIST_MLP.mistakes("softmax_in_model"), DETACHED])


@MNISTCNN
def grade_mnist_cnn(judge: Judge, student: Any, *, data: str = "toy") -> None:
    """Grades `MNISTCNN` by behaviour, as `MNISTMLP`: parameters, output shapes, what forward
    computes with the model's own parameters, and gradient flow."""
    model = instantiate(judge, student, "MNISTCNN")
    layers = _cnn_parameters(judge, model)
    gen = generator(judge.seed)
    images = [torch.randn(n, 1, 28, 28, generator=gen) for n in (5, 1)]
    runs, _ = check_output_shapes(judge, model, "MNISTCNN", 10, "images", images)
    if not runs:
        return  # nothing ran: the checks of what it computes cannot run
    check_no_softmax(judge, runs[0][1])
    if layers is not None:
        _cnn_forward(judge, layers, runs)
    check_gradients_flow(judge, model, "MNISTCNN", runs[0][0])


def _cnn_parameters(judge: Judge, model: nn.Module) -> list[torch.Tensor] | None:
    """The six parameters in layer order, if their shapes are the ones asked for."""
    params = list(model.parameters())
    found = sorted(tuple(p.shape) for p in params)
    wanted = sorted(s for _, w, b in CNN_LAYERS for s in (w, b))
    described = "; ".join(f"{name}: weight {w}, bias {b}" for name, w, b in CNN_LAYERS)
    if not judge.check("parameters", found == wanted, CNN_PARAMETERS, tensors=len(params),
                       shapes=", ".join(shape(p) for p in params) or "none", layers=described):
        return None
    by_shape = {tuple(p.shape): p for p in params}
    return [by_shape[s] for _, w, b in CNN_LAYERS for s in (w, b)]


def _cnn_reference(p: list[torch.Tensor], x: torch.Tensor, relu: bool = True,
                   pool: Callable[..., torch.Tensor] = F.max_pool2d) -> torch.Tensor:
    act = F.relu if relu else (lambda h: h)
    h = pool(act(F.conv2d(x, p[0], p[1], padding=1)), 2)
    h = pool(act(F.conv2d(h, p[2], p[3], padding=1)), 2)
    return h.flatten(1) @ p[4].T + p[5]


def _cnn_forward(judge: Judge, layers: list[torch.Tensor],
                 runs: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    def same(variant: Callable[[torch.Tensor], torch.Tensor]) -> bool:
        with torch.no_grad():
            return all(close(out, variant(x), 1e-4, 1e-4) for x, out in runs)

    def reference(x: torch.Tensor) -> torch.Tensor:
        return _cnn_reference(layers, x)

    if any(same(v) for v in (reference, lambda x: torch.log_softmax(reference(x), 1),
                             lambda x: torch.softmax(reference(x), 1))):
        judge.check("forward", True)
        return
    if same(lambda x: _cnn_reference(layers, x, relu=False)):
        judge.fail("forward", CNN_NO_RELU)
    elif same(lambda x: _cnn_reference(layers, x, pool=F.avg_pool2d)):
        judge.fail("forward", AVERAGE_POOLING)
    else:
        x, out = runs[0]
        with torch.no_grad():
            expected = reference(x)
        judge.fail("forward", CNN_FORWARD, want=first_values(expected[0]),
                   got=first_values(out[0]))
