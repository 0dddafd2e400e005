"""The graders of `conv2d`, `MNISTCNN` (lesson 10) and `train_with_schedule` (lesson 09): the
score cap, the convolution spy and the state they restore (their grades are checked in
test_graders.py)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from course_utils.graders import grade
from course_utils.graders.exercises.convolution import ConvolutionSpy
from submissions_convolution import SUBMISSIONS, conv2d_kernel_offsets


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
