"""The graders of `conv2d`, `conv_transpose2d`, `MNISTCNN` (lesson 10), `train_with_schedule` and
`clipped_step` (lesson 09): the score cap, the convolution spies and the state they restore
(their grades are checked in test_graders.py)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from course_utils.graders import grade
from course_utils.graders.exercises.convolution import ConvolutionSpy
from course_utils.graders.exercises.transposed import TransposedConvolutionSpy
from submissions_convolution import SUBMISSIONS, conv2d_kernel_offsets, transpose_through_conv2d


def test_lesson_checks_cap_the_score():
    flipped = next(s for s in SUBMISSIONS if s.name == "flipped")
    library = next(s for s in SUBMISSIONS if s.name == "F_conv2d")
    assert grade("conv2d", flipped.student).score <= 0.5
    assert grade("conv2d", library.student).score <= 0.5


def test_the_spy_sees_the_library_convolution_but_not_a_hand_written_one():
    x, weight = torch.randn(1, 2, 5, 5), torch.randn(3, 2, 3, 3)
    with ConvolutionSpy() as spy:
        conv2d_kernel_offsets(x, weight, padding=1)
        F.unfold(x, 3)
    assert spy.seen == []
    with ConvolutionSpy() as spy:
        torch.nn.Conv2d(2, 3, 3)(x)
    assert spy.seen == ["aten::convolution"]


def test_the_transposed_spy_allows_conv2d_and_sees_the_transposed_operator():
    x, weight = torch.randn(1, 2, 4, 4), torch.randn(2, 3, 3, 3)
    with TransposedConvolutionSpy() as spy:
        by_conv2d = transpose_through_conv2d(x, weight, stride=2, padding=1)
    assert spy.seen == []
    with TransposedConvolutionSpy() as spy:
        library = torch.nn.functional.conv_transpose2d(x, weight, stride=2, padding=1)
    assert spy.seen == ["aten::convolution (transposed=True)"]
    assert torch.allclose(by_conv2d, library, atol=1e-5)


def test_transposed_lesson_checks_cap_the_score():
    for name in ("swapped_layout", "library"):
        entry = next(s for s in SUBMISSIONS if s.exercise == "conv_transpose2d" and s.name == name)
        assert grade(entry.exercise, entry.student).score <= 0.5


def test_grading_leaves_no_spy_behind_after_an_exception():
    def raises_inside(x, weight, bias=None, stride=1, padding=0):
        raise ValueError("boom")

    report = grade("conv2d", raises_inside)
    assert report.codes == {"raised_exception"}
    with ConvolutionSpy() as spy:  # no mode left on the stack: a fresh spy sees everything
        F.conv2d(torch.ones(1, 1, 3, 3), torch.ones(1, 1, 2, 2))
    assert spy.seen == ["aten::convolution"]
    assert torch.is_grad_enabled()


def test_schedule_grader_restores_state_and_reads_every_group():
    from course_utils.graders.exercises import schedules
    assert len(schedules.GROUP_LRS) == 2
    threads = torch.get_num_threads()
    report = grade("train_with_schedule", next(
        s for s in SUBMISSIONS if s.correct and s.exercise == "train_with_schedule").student)
    assert report.passed and torch.get_num_threads() == threads
