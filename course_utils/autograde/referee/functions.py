"""The referee's probes of the exercises that are functions of tensors: losses, gradients by
hand, the SGD update and the convolutions.

Example:
    >>> probe = PROBES["mse_loss"](seed=3)
    >>> from course_utils.autograde.sandboxed.serve import run
    >>> from course_utils.autograde.sandboxed.wire import decode, encode
    >>> def sum_loss(pred, target):
    ...     return ((pred - target) ** 2).sum()
    >>> outcome = decode(run(encode(probe.request), {"mse_loss": sum_loss}))["outcome"]
    >>> [violation.checks for violation in probe.judge(outcome)]
    [('value',)]
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F

from course_utils.autograde.referee import Probe, Violation, everything

RTOL, ATOL = 1e-4, 1e-5


def close(got: Any, want: torch.Tensor) -> bool:
    """``got`` is a tensor of ``want``'s shape with its values, to float32 precision."""
    return (isinstance(got, torch.Tensor) and got.shape == want.shape
            and torch.allclose(got.double(), want.double(), rtol=RTOL, atol=ATOL))


def tensor_returned(outcome: dict[str, Any]) -> torch.Tensor | None:
    return outcome.get("returned", {}).get("tensor")


def _reference_call(fn: Callable[..., torch.Tensor], args: list[Any], grad: list[int],
                    cotangent: torch.Tensor | None = None) -> dict[str, Any]:
    inputs = [arg.clone().requires_grad_(i in grad) if isinstance(arg, torch.Tensor) else arg
              for i, arg in enumerate(args)]
    value = fn(*inputs)
    weights = torch.ones_like(value) if cotangent is None else cotangent
    grads = torch.autograd.grad((value * weights).sum(), [inputs[i] for i in grad])
    return {"value": value.detach(), "grads": list(grads)}


def _tensor_function(exercise: str, reference: Callable[..., torch.Tensor],
                     calls: list[dict[str, Any]], value_checks: list[tuple[str, ...]],
                     shape_check: str, graph_check: str) -> Probe:
    """A probe of a function returning a tensor: per call, its value (``value_checks[i]`` explain
    a wrong one), its shape, and the gradients it passes back to its inputs."""
    wanted = [_reference_call(reference, call["args"], call["grad"], call.get("cotangent"))
              for call in calls]

    def judge(outcome: Any) -> list[Violation]:
        if not isinstance(outcome, list) or len(outcome) != len(calls):
            return [everything(exercise, "no outcome for every call")]
        found = []
        for index, (got, want) in enumerate(zip(outcome, wanted)):
            value = tensor_returned(got) if isinstance(got, dict) else None
            if value is None:
                found.append(everything(exercise, f"call {index} returned no tensor"))
            elif value.shape != want["value"].shape:
                found.append(Violation((shape_check,), f"call {index}: shape {tuple(value.shape)}"))
            elif not close(value, want["value"]):
                found.append(Violation(value_checks[index], f"call {index}: wrong value"))
            elif not all(close(g, w) for g, w in zip(got.get("grads") or [None], want["grads"])):
                found.append(Violation((graph_check,), f"call {index}: wrong gradients"))
        return found

    return Probe(exercise, {"scenario": "call", "names": [exercise], "calls": calls}, judge)


def mse_loss(seed: int) -> Probe:
    generator = torch.Generator().manual_seed(seed)
    pred, target = torch.randn(6, 3, generator=generator), torch.randn(6, 3, generator=generator)
    return _tensor_function("mse_loss", lambda p, t: ((p - t) ** 2).mean(),
                            [{"args": [pred, target], "grad": [0]}], [("value",)],
                            "scalar", "graph")


def cross_entropy(seed: int) -> Probe:
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(5, 4, generator=generator)
    targets = torch.randint(0, 4, (5,), generator=generator)
    huge = logits * 1e4
    return _tensor_function("cross_entropy", F.cross_entropy,
                            [{"args": [logits, targets], "grad": [0]},
                             {"args": [huge, targets], "grad": [0]}],
                            [("value",), ("stable",)], "scalar", "graph")


def _convolution(exercise: str, reference: Callable[..., torch.Tensor],
                 weight_shape: tuple[int, ...], seed: int) -> Probe:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 3, 7, 6, generator=generator)
    weight = torch.randn(*weight_shape, generator=generator)
    bias = torch.randn(4, generator=generator)
    calls = []
    for stride, padding in ((1, 0), (2, 1)):
        args = [x, weight, bias, stride, padding]
        shape = reference(*args).shape
        calls.append({"args": args, "grad": [0, 1, 2],
                      "cotangent": torch.randn(shape, generator=generator)})
    return _tensor_function(exercise, reference, calls, [("value",), ("value",)], "shape",
                            "gradients")


def conv2d(seed: int) -> Probe:
    return _convolution("conv2d", F.conv2d, (4, 3, 3, 2), seed)


def conv_transpose2d(seed: int) -> Probe:
    return _convolution("conv_transpose2d", F.conv_transpose2d, (3, 4, 3, 2), seed)


def linear_mse_grads(seed: int) -> Probe:
    generator = torch.Generator().manual_seed(seed)
    x, y = torch.randn(7, 3, generator=generator), torch.randn(7, generator=generator)
    w, b = torch.randn(3, generator=generator), torch.randn((), generator=generator)
    w_, b_ = w.clone().requires_grad_(), b.clone().requires_grad_()
    dw, db = torch.autograd.grad(((x @ w_ + b_ - y) ** 2).mean(), [w_, b_])
    calls = [{"args": [w, b, x, y], "grad": [], "no_grad": True}]

    def judge(outcome: Any) -> list[Violation]:
        got = outcome[0].get("returned", {}) if isinstance(outcome, list) and outcome else {}
        items = got.get("items") or []
        if len(items) != 2:
            return [everything("linear_mse_grads", "no pair of gradients")]
        found = []
        for (name, want), item in zip((("dw", dw), ("db", db)), items):
            value = item.get("tensor")
            if value is None or value.shape != want.shape:
                found.append(Violation((f"{name}_shape", f"{name}_value"), f"{name}: shape"))
            elif not close(value, want):
                found.append(Violation((f"{name}_value",), f"{name}: wrong value"))
        return found

    return Probe("linear_mse_grads", {"scenario": "call", "names": ["linear_mse_grads"],
                                      "calls": calls}, judge)


def sgd_step(seed: int) -> Probe:
    generator = torch.Generator().manual_seed(seed)
    values = [torch.randn(3, 2, generator=generator), torch.randn(4, generator=generator),
              torch.randn(2, generator=generator)]
    grads = [torch.randn(3, 2, generator=generator), None, torch.randn(2, generator=generator)]
    lr = 0.1
    params = [{"value": value, "grad": grad} for value, grad in zip(values, grads)]

    def judge(outcome: Any) -> list[Violation]:
        if not isinstance(outcome, dict) or "error" in outcome or \
                len(outcome.get("values") or []) != len(values):
            return [everything("sgd_step", "the update did not run through")]
        found = []
        for index, (value, grad, after, grad_after) in enumerate(
                zip(values, grads, outcome["values"], outcome.get("grads") or [])):
            if grad is None:
                if not close(after, value) or grad_after is not None:
                    found.append(Violation(("skips_none",), f"parameter {index} changed"))
                continue
            if not close(after, value - lr * grad):
                found.append(Violation(("update", "updates_rest"), f"parameter {index}"))
            if not close(grad_after, grad):
                found.append(Violation(("keeps_gradients",), f"gradient {index} changed"))
        return found

    return Probe("sgd_step", {"scenario": "sgd_step", "names": ["sgd_step"], "params": params,
                              "lr": lr}, judge)


PROBES: dict[str, Callable[[int], Probe]] = {
    "mse_loss": mse_loss, "cross_entropy": cross_entropy, "linear_mse_grads": linear_mse_grads,
    "sgd_step": sgd_step, "conv2d": conv2d, "conv_transpose2d": conv_transpose2d}
