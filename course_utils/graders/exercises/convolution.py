"""Grader for lesson 10's `conv2d` by hand, compared with `F.conv2d` in values and gradients."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from course_utils.graders.declare import Check, Exercise, Misconception, generic
from course_utils.graders.evidence import close, first_values, generator, kind, shape
from course_utils.graders.exercises.models import DETACHED, SHAPE
from course_utils.graders.judge import Judge

# Operators of the library's convolution, as the dispatcher names them: `F.conv2d`,
# `nn.Conv2d`, `torch.conv2d` and `torch.convolution` all reach `aten::convolution`; the
# backend kernels (`_slow_conv2d_forward`, `mkldnn_convolution`, ...) are matched too.
LIBRARY_CONVOLUTION = re.compile(r"^aten::(_?convolution|.*conv\d?d|.*_convolution)")


class ConvolutionSpy(TorchDispatchMode):
    """Records every library convolution operator that runs, whatever Python name called it.

    Example:
        >>> with ConvolutionSpy() as spy:
        ...     _ = F.conv2d(torch.ones(1, 1, 3, 3), torch.ones(1, 1, 2, 2))
        >>> spy.seen
        ['aten::convolution']
    """

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (),
                           kwargs: dict | None = None) -> Any:
        name = func.name()
        if LIBRARY_CONVOLUTION.match(name) and name not in self.seen:
            self.seen.append(name)
        return func(*args, **(kwargs or {}))


@dataclass(frozen=True)
class Case:
    """One call of `conv2d`: its inputs and settings, and the library's answer."""

    x: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor | None
    stride: int
    padding: int

    def run(self, fn: Callable[..., torch.Tensor], flip: bool = False, use_bias: bool = True,
            stride: int | None = None, padding: int | None = None) -> torch.Tensor:
        """What ``fn`` (the library by default) gives here, optionally with one setting changed."""
        weight = self.weight.flip(-2, -1) if flip else self.weight
        bias = self.bias.clone() if use_bias and self.bias is not None else None
        # Copies, so code that changes its inputs in place cannot change the evidence.
        return fn(self.x.clone(), weight.clone(), bias,
                  self.stride if stride is None else stride,
                  self.padding if padding is None else padding)

    def describe(self) -> str:
        bias = f"bias of shape {shape(self.bias)}" if self.bias is not None else "bias=None"
        return (f"x of shape {shape(self.x)}, weight of shape {shape(self.weight)}, {bias}, "
                f"stride={self.stride}, padding={self.padding}")


def _library(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: int,
             padding: int) -> torch.Tensor:
    with torch.no_grad():
        return F.conv2d(x.detach(), weight.detach(), None if bias is None else bias.detach(),
                        stride, padding)


def _cases(seed: int) -> list[Case]:
    """Shapes, channel counts, non-square kernels, strides and paddings, with and without bias."""
    gen = generator(seed)

    def case(x: tuple, w: tuple, bias: bool, stride: int, padding: int) -> Case:
        return Case(torch.randn(*x, generator=gen), torch.randn(*w, generator=gen),
                    torch.randn(w[0], generator=gen) if bias else None, stride, padding)

    return [case((2, 1, 6, 6), (1, 1, 3, 3), False, 1, 0),
            case((2, 3, 7, 6), (4, 3, 3, 2), True, 1, 0),
            case((1, 2, 5, 5), (3, 2, 3, 3), True, 1, 1),
            case((2, 2, 8, 7), (3, 2, 3, 3), True, 2, 0),
            case((1, 3, 9, 9), (2, 3, 5, 5), True, 3, 2)]


def _same_outputs(got: torch.Tensor, want: torch.Tensor) -> bool:
    return close(got, want, rtol=1e-4, atol=1e-4)


FLIPPED = Misconception(
    "kernel_flipped", "kernel flipped: true convolution and PyTorch's cross-correlation confused",
    "For {case} your result equals the library's with the kernel flipped (rows and columns "
    "reversed): you computed a true convolution. PyTorch's convolution is a cross-correlation: "
    "`weight[:, :, i, j]` multiplies the input pixel at offset (i, j) of each window, unflipped.",
    produces=lambda case: case.run(_library, flip=True))
NO_BIAS = Misconception(
    "bias_ignored", "the bias is not added",
    "For {case} your result equals the library's without the bias: add `bias[c]` to every "
    "pixel of output channel c (`bias.view(1, -1, 1, 1)` broadcasts it).",
    produces=lambda case: case.run(_library, use_bias=False) if case.bias is not None else None)
NO_PADDING = Misconception(
    "wrong_padding", "padding missing or wrong",
    "For {case} your result {what} the library's with padding={used}: pad the input with "
    "`padding` zeros on every side (top, bottom, left and right) before sliding, e.g. "
    "`F.pad(x, (padding, padding, padding, padding))`.")
NO_STRIDE = Misconception(
    "wrong_stride", "stride missing or wrong",
    "For {case} your result {what} the library's with stride={used}: move the window `stride` "
    "pixels at a time, so output pixel (i, j) starts at input pixel (i·stride, j·stride).")
CONV_SHAPE = Misconception(
    "wrong_output_shape", SHAPE.plain,
    "For {case} your result has shape {got}, but `F.conv2d` returns {want}: (N, C_out, "
    "(H + 2·padding − kH) // stride + 1, (W + 2·padding − kW) // stride + 1).")
LIBRARY = Misconception(
    "library_conv_used", "calls the library's convolution instead of computing it by hand",
    "While your `conv2d` ran, the library's convolution operator ran too ({operators}): "
    "`F.conv2d`, `nn.Conv2d`, `torch.conv2d` and `torch.convolution` all end there. The "
    "exercise is to compute it yourself, with `F.pad`, slicing or `unfold`, `einsum` or matrix "
    "products.")
CONV_DETACHED = Misconception(
    "detached_result", DETACHED.plain,
    "For {case} {problem}. Build the result from tensor operations on `x`, `weight` and "
    "`bias` (no `.item()`, `.detach()`, `.data`, numpy, or writing into a new tensor under "
    "`torch.no_grad()`), so that training can reach the kernel.")
CONV_ALL_RAISED = generic("raised_exception",
                          "Your `conv2d` raised an exception for every call.")
CONV_TYPE = generic("wrong_return_type", "For {case} your `conv2d` returned {got}; it must "
                                         "return the output as a tensor.{forgot}")
CONV_WRONG = generic(
    "wrong_value",
    "For {case} your result differs from `F.conv2d`: first values {got} instead of {want}, "
    "largest difference {gap:.4g} at flat index {index}. Check which input pixel each kernel "
    "weight multiplies, and that every input channel is summed into every output channel.")

CONV2D = Exercise(
    "conv2d",
    checks=[Check("tensor", "returns a tensor for every call"),
            Check("by_hand", "computes the convolution without the library's operator",
                  weight=2, lesson=True),
            Check("shape", "returns (N, C_out, H_out, W_out) from the output-size formula"),
            Check("value", "equals F.conv2d (cross-correlation, padding, stride, bias)",
                  weight=3, lesson=True),
            Check("gradients", "lets gradients reach x, weight and bias, equal to the library's",
                  weight=2)],
    misconceptions=[FLIPPED, NO_BIAS, NO_PADDING, NO_STRIDE, CONV_SHAPE, LIBRARY,
                    CONV_DETACHED],
    timeout=10)


@CONV2D
def grade_conv2d(judge: Judge, conv2d: Any, *, data: str = "toy") -> None:
    """Grades `conv2d` on five cases by values and gradients against `F.conv2d`."""
    cases = _cases(judge.seed)
    spy = ConvolutionSpy()
    results: list[tuple[Case, Any]] = []
    for case in cases:
        with spy:
            ok, out = judge.attempt("value", case.run, conv2d,
                                    doing=f"running your `conv2d` with {case.describe()}")
        if ok:
            results.append((case, out))
    if not results:
        judge.stop(CONV_ALL_RAISED)
    wrong_type = next(((c, out) for c, out in results if not isinstance(out, torch.Tensor)), None)
    forgot = " Did you forget `return`?" if wrong_type and wrong_type[1] is None else ""
    judge.require("tensor", wrong_type is None, CONV_TYPE,
                  case=wrong_type[0].describe() if wrong_type else "",
                  got=kind(wrong_type[1] if wrong_type else None), forgot=forgot)
    judge.check("by_hand", not spy.seen, LIBRARY,
                operators=", ".join(f"`{name}`" for name in spy.seen))
    shaped = _check_shapes(judge, results)
    # A wrong shape is a wrong value too: padding and stride are part of what is computed.
    correct = _check_values(judge, results)
    _check_gradients(judge, conv2d, [c for c, _ in shaped], correct)


def _check_shapes(judge: Judge, results: list[tuple[Case, torch.Tensor]]
                  ) -> list[tuple[Case, torch.Tensor]]:
    """One check that every output has the library's shape; returns the results that do."""
    wrong = [(c, out) for c, out in results if out.shape != c.run(_library).shape]
    right = [(c, out) for c, out in results if out.shape == c.run(_library).shape]
    if wrong:
        case, out = wrong[0]
        _explain(judge, "shape", case, out, lambda a, b: a.shape == b.shape, CONV_SHAPE,
                 {"case": case.describe(), "got": shape(out),
                  "want": shape(case.run(_library))})
    else:
        judge.check("shape", True)
    return right


def _check_values(judge: Judge, results: list[tuple[Case, torch.Tensor]]) -> bool:
    """Judges "value": every output equals the library's; names the first difference's mistake."""
    wrong = [(c, out) for c, out in results if not _same_outputs(out, c.run(_library))]
    if not results:
        return False
    if not wrong:
        return judge.check("value", True)
    case, out = wrong[0]
    want = case.run(_library)
    if out.shape == want.shape:
        gap = (out.detach() - want).abs()
        _explain(judge, "value", case, out, _same_outputs, CONV_WRONG,
                 {"case": case.describe(), "got": first_values(out), "want": first_values(want),
                  "gap": float(gap.max()), "index": int(gap.flatten().argmax())})
    else:
        _explain(judge, "value", case, out, _same_outputs, CONV_SHAPE,
                 {"case": case.describe(), "got": shape(out), "want": shape(want)})
    return False


def _explain(judge: Judge, check: str, case: Case, out: torch.Tensor,
             same: Callable[[torch.Tensor, torch.Tensor], bool], otherwise: Misconception,
             evidence: dict[str, Any]) -> None:
    """Fails ``check``, naming the first known mistake that reproduces ``out`` on ``case``;
    else with ``otherwise``, filled with ``evidence``."""
    described = case.describe()
    for mistake in (FLIPPED, NO_BIAS):
        produced = mistake.produces(case)
        if produced is not None and same(out, produced):
            judge.fail(check, mistake, case=described)
            return
    settings = [(NO_PADDING, "padding", p) for p in (0, 2 * case.padding) if p != case.padding]
    settings += [(NO_STRIDE, "stride", s) for s in (1,) if s != case.stride]
    for mistake, name, used in settings:
        produced = case.run(_library, **{name: used})
        if same(out, produced):
            what = "has the shape of" if check == "shape" else "equals"
            judge.fail(check, mistake, case=described, what=what, used=used)
            return
    judge.fail(check, otherwise, **evidence)


def _check_gradients(judge: Judge, conv2d: Any, cases: list[Case], correct: bool,
                     library: Callable[..., torch.Tensor] = F.conv2d, name: str = "conv2d",
                     ) -> None:
    """Gradients of a weighted sum of the output reach x, weight and bias, as ``library``'s do.

    ``name`` is the student's function, for feedback.
    """
    case = next((c for c in cases if c.bias is not None and c.padding > 0), None) \
        or next((c for c in cases if c.bias is not None), None)
    if case is None:
        return
    leaves = [case.x.clone().requires_grad_(), case.weight.clone().requires_grad_(),
              case.bias.clone().requires_grad_()]
    described = case.describe()
    with torch.enable_grad():
        ok, out = judge.attempt("gradients", conv2d, *leaves, case.stride, case.padding,
                                doing=f"running your `{name}` with {described}")
        if not ok or not isinstance(out, torch.Tensor):
            return
        if out.grad_fn is None:
            judge.fail("gradients", CONV_DETACHED, case=described,
                       problem="your result has no autograd graph (`grad_fn` is None), so no "
                               "gradient reaches the input, the kernel or the bias")
            return
        if not correct:  # wrong values were reported; their gradients cannot be right either
            judge.check("gradients", True)
            return
        upstream = torch.randn(out.shape, generator=generator(judge.seed + 1))
        ok, grads = judge.attempt(
            "gradients", lambda: torch.autograd.grad(out, leaves, upstream, allow_unused=True),
            doing=f"computing the gradients of your `{name}`'s result")
        if not ok:
            return
        reference = [leaf.detach().clone().requires_grad_() for leaf in leaves]
        want = torch.autograd.grad(library(reference[0], reference[1], reference[2],
                                           case.stride, case.padding), reference, upstream)
    names = ["x", "weight", "bias"]
    missing = [name for name, g in zip(names, grads) if g is None]
    if missing:
        judge.fail("gradients", CONV_DETACHED, case=described,
                   problem=f"no gradient reaches {', '.join(f'`{m}`' for m in missing)}")
        return
    differing = [name for name, g, w in zip(names, grads, want) if not close(g, w, 1e-4, 1e-4)]
    judge.check("gradients", not differing, CONV_DETACHED, case=described, problem=(
        f"your result has the right values, but the gradient reaching "
        f"{', '.join(f'`{d}`' for d in differing)} differs from the library's (first values "
        f"{first_values(grads[names.index(differing[0])]) if differing else ''} instead of "
        f"{first_values(want[names.index(differing[0])]) if differing else ''}): part of the "
        "computation is cut off from the graph"))
