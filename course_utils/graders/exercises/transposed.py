"""Grader for lesson 10's `conv_transpose2d` by hand, compared with `F.conv_transpose2d`."""

from __future__ import annotations

import re
from typing import Any, Callable

import torch
import torch.nn.functional as F

from course_utils.graders.declare import Check, Exercise, Misconception, generic
from course_utils.graders.evidence import first_values, generator, kind, number, shape
from course_utils.graders.exercises.convolution import (CONV_DETACHED, FLIPPED, LIBRARY,
                                                        LIBRARY_CONVOLUTION, NO_BIAS, NO_STRIDE,
                                                        Case, ConvolutionSpy, _check_gradients,
                                                        _same_outputs)
from course_utils.graders.exercises.models import SHAPE
from course_utils.graders.judge import Judge

# Operators of the library's transposed convolution proper (`aten::conv_transpose2d`, the
# backends' `slow_conv_transpose2d`, `mkldnn_convolution_transpose`...).
TRANSPOSED_OPERATOR = re.compile(r"^aten::\w*conv\w*_transpose")
# The position of `transposed` among the arguments of `aten::convolution` and `aten::_convolution`.
TRANSPOSED_ARGUMENT = 6


class TransposedConvolutionSpy(ConvolutionSpy):
    """Records the library's transposed convolution, whatever called it; `F.conv2d` is allowed.

    Example:
        >>> with TransposedConvolutionSpy() as spy:
        ...     _ = F.conv2d(torch.ones(1, 1, 3, 3), torch.ones(1, 1, 2, 2))
        ...     _ = F.conv_transpose2d(torch.ones(1, 1, 3, 3), torch.ones(1, 1, 2, 2))
        >>> spy.seen
        ['aten::convolution (transposed=True)']
    """

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (),
                           kwargs: dict | None = None) -> Any:
        name = func.name()
        kwargs = kwargs or {}
        transposed = kwargs.get("transposed", args[TRANSPOSED_ARGUMENT]
                                if len(args) > TRANSPOSED_ARGUMENT else False)
        if TRANSPOSED_OPERATOR.match(name):
            self._see(name)
        elif LIBRARY_CONVOLUTION.match(name) and transposed is True:
            self._see(f"{name} (transposed=True)")
        return func(*args, **kwargs)

    def _see(self, name: str) -> None:
        if name not in self.seen:
            self.seen.append(name)


def _library(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: int,
             padding: int) -> torch.Tensor:
    with torch.no_grad():
        return F.conv_transpose2d(x.detach(), weight.detach(),
                                  None if bias is None else bias.detach(), stride, padding)


def _swapped(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: int,
             padding: int) -> torch.Tensor:
    """The weight read as (C_out, C_in, kH, kW): possible when C_in == C_out."""
    return _library(x, weight.transpose(0, 1), bias, stride, padding)


def _padded(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: int,
            padding: int) -> torch.Tensor:
    """Padding added around the output, as a convolution adds it around its input."""
    return F.pad(_library(x, weight, bias, stride, 0), (2 * padding,) * 4)


def _cases(seed: int) -> list[Case]:
    """Square channel counts first (a swapped weight layout still runs there), then others;
    strides, cropping paddings, non-square kernels, with and without bias."""
    gen = generator(seed)

    def case(x: tuple, w: tuple, bias: bool, stride: int, padding: int) -> Case:
        return Case(torch.randn(*x, generator=gen), torch.randn(*w, generator=gen),
                    torch.randn(w[1], generator=gen) if bias else None, stride, padding)

    return [case((2, 2, 3, 3), (2, 2, 3, 3), True, 2, 0),
            case((1, 3, 4, 4), (3, 3, 2, 2), False, 2, 0),
            case((2, 3, 4, 5), (3, 2, 3, 2), True, 1, 0),
            case((1, 2, 3, 3), (2, 4, 4, 4), True, 2, 1),
            case((2, 1, 5, 4), (1, 3, 3, 3), True, 3, 2)]


def _square(case: Case) -> bool:
    return case.weight.shape[0] == case.weight.shape[1]


SWAPPED = Misconception(
    "weight_layout_swapped", "weight read as (C_out, C_in, ...) instead of (C_in, C_out, ...)",
    "For {case} your result equals the library's with the weight's first two axes swapped: "
    "`ConvTranspose2d`'s weight is (C_in, C_out, kH, kW), the reverse of `Conv2d`'s, so input "
    "channel c scatters `weight[c, o]` into output channel o.")
T_FLIPPED = FLIPPED.saying(
    "For {case} your result equals the library's with the kernel flipped (rows and columns "
    "reversed). Each input pixel scatters `weight` itself, unflipped; if you go through "
    "`F.conv2d` on the zero-inserted, padded input, that convolution needs the kernel flipped "
    "(`weight.flip(-2, -1)`), because a gather reads the stamp backwards.")
T_NO_BIAS = NO_BIAS.saying(
    "For {case} your result equals the library's without the bias: add `bias[o]` to every "
    "pixel of output channel o after scattering (`bias.view(1, -1, 1, 1)` broadcasts it).")
NOT_CROPPED = Misconception(
    "padding_not_cropped", "padding ignored or added instead of cropping the output",
    "For {case} your result {what} the library's {how}: in a transposed convolution `padding` "
    "crops the output. Compute the full scatter, of size (H − 1)·stride + kH, then drop "
    "`padding` rows and columns on every side.")
T_STRIDE = NO_STRIDE.saying(
    "For {case} your result {what} the library's with stride=1: input pixel (i, j) stamps its "
    "copy of the kernel at output row i·stride, column j·stride.")
T_SHAPE = Misconception(
    "wrong_output_shape", SHAPE.plain,
    "For {case} your result has shape {got}, but `F.conv_transpose2d` returns {want}: (N, "
    "C_out, (H − 1)·stride − 2·padding + kH, (W − 1)·stride − 2·padding + kW), with C_out "
    "= weight.shape[1].")
T_LIBRARY = LIBRARY.saying(
    "While your `conv_transpose2d` ran, the library's transposed convolution ran too "
    "({operators}): `F.conv_transpose2d` and `nn.ConvTranspose2d` end there. The exercise is to "
    "scatter the kernel yourself (loops, `einsum`, `F.fold`), or to use `F.conv2d` on the "
    "zero-inserted input.")
T_WRONG = generic(
    "wrong_value", "For {case} your result differs from `F.conv_transpose2d`: first values {got} "
                   "instead of {want}, largest difference {gap}. Check where each input pixel "
                   "stamps its copy of the kernel, and that every input channel adds into every "
                   "output channel.")
T_TYPE = generic("wrong_return_type", "For {case} your `conv_transpose2d` returned {got}; it "
                                      "must return the output as a tensor.")
ALL_RAISED = generic("raised_exception",
                     "Your `conv_transpose2d` raised an exception for every call.")

CONV_TRANSPOSE2D = Exercise(
    "conv_transpose2d",
    checks=[Check("tensor", "returns a tensor for every call"),
            Check("by_hand", "computes the transposed convolution without the library's",
                  weight=2, lesson=True),
            Check("shape", "returns (N, C_out, H_out, W_out) from the transposed output size"),
            Check("value", "equals F.conv_transpose2d (scatter, weight layout, stride, cropping "
                           "padding, bias)", weight=3, lesson=True),
            Check("gradients", "lets gradients reach x, weight and bias, equal to the library's",
                  weight=2)],
    misconceptions=[SWAPPED, T_FLIPPED, T_NO_BIAS, NOT_CROPPED, T_STRIDE, T_SHAPE, T_LIBRARY,
                    CONV_DETACHED, T_WRONG, T_TYPE, ALL_RAISED],
    timeout=10)


@CONV_TRANSPOSE2D
def grade_conv_transpose2d(judge: Judge, conv_transpose2d: Any, *, data: str = "toy") -> None:
    """Grades `conv_transpose2d` on five cases by values and gradients against the library."""
    spy = TransposedConvolutionSpy()
    results: list[tuple[Case, Any]] = []
    swapped = False
    for case in _cases(judge.seed):
        if swapped and not _square(case):
            continue  # a swapped layout cannot run here; the mistake is named already
        with spy:
            ok, out = judge.attempt("value", case.run, conv_transpose2d,
                                    doing=f"running your `conv_transpose2d` with "
                                          f"{case.describe()}")
        if ok:
            results.append((case, out))
            swapped = swapped or (isinstance(out, torch.Tensor) and _square(case)
                                  and not _same_outputs(out, case.run(_library))
                                  and _same_outputs(out, case.run(_swapped)))
    if not results:
        judge.stop(ALL_RAISED)
    wrong = next(((c, out) for c, out in results if not isinstance(out, torch.Tensor)), None)
    if wrong is not None:
        judge.require("tensor", False, T_TYPE, case=wrong[0].describe(), got=kind(wrong[1]))
    judge.check("tensor", True)
    judge.check("by_hand", not spy.seen, T_LIBRARY,
                operators=", ".join(f"`{name}`" for name in spy.seen))
    shaped = [(c, out) for c, out in results if out.shape == c.run(_library).shape]
    misshaped = next(((c, out) for c, out in results if out.shape != c.run(_library).shape),
                     None)
    if misshaped is not None:
        _explain(judge, "shape", *misshaped, lambda a, b: a.shape == b.shape)
    else:
        judge.check("shape", True)
    wrong_value = next(((c, out) for c, out in results
                        if not _same_outputs(out, c.run(_library))), None)
    if wrong_value is None:
        judge.check("value", True)
    else:
        _explain(judge, "value", *wrong_value, _same_outputs)
    _check_gradients(judge, conv_transpose2d, [c for c, _ in shaped], wrong_value is None,
                     library=F.conv_transpose2d, name="conv_transpose2d")


def _explain(judge: Judge, check: str, case: Case, out: torch.Tensor,
             same: Callable[[torch.Tensor, torch.Tensor], bool]) -> None:
    """Fails ``check``, naming the first known mistake that reproduces ``out`` on ``case``."""
    described = case.describe()
    what = "has the shape of" if check == "shape" else "equals"
    known: list[tuple[Misconception, Callable[..., torch.Tensor], dict[str, str]]] = [
        (SWAPPED, _swapped, {}) if _square(case) else None,
        (T_FLIPPED, lambda *a: _library(a[0], a[1].flip(-2, -1), *a[2:]), {}),
        (T_NO_BIAS, lambda x, w, b, s, p: _library(x, w, None, s, p), {})
        if case.bias is not None else None,
        (NOT_CROPPED, lambda x, w, b, s, p: _library(x, w, b, s, 0),
         {"what": what, "how": "with padding=0 (not cropped)"}) if case.padding else None,
        (NOT_CROPPED, _padded, {"what": what, "how": "with `padding` zeros added around it"})
        if case.padding else None,
        (T_STRIDE, lambda x, w, b, s, p: _library(x, w, b, 1, p), {"what": what})
        if case.stride != 1 else None,
    ]
    for mistake, produces, extra in filter(None, known):
        if same(out, case.run(produces)):
            judge.fail(check, mistake, case=described, **extra)
            return
    want = case.run(_library)
    if out.shape != want.shape:
        judge.fail(check, T_SHAPE, case=described, got=shape(out), want=shape(want))
        return
    judge.fail(check, T_WRONG, case=described, got=first_values(out), want=first_values(want),
               gap=number((out.detach() - want).abs().max()))
