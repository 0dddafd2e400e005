"""The graders of `conv2d`, `MNISTCNN` (lesson 10), `train_with_schedule` and `clipped_step`
(lesson 09) give every catalogued submission exactly its expected grade."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from catalogues import Entry, assert_expected_grade
from course_utils.graders import grade
from course_utils.graders.exercises.convolution import ConvolutionSpy
from course_utils.graders.exercises.transposed import TransposedConvolutionSpy
import submissions_clipping
from submissions_convolution import (SUBMISSIONS as CONVOLUTION, conv2d_kernel_offsets,
                                     transpose_through_conv2d)

EXERCISE_CODES = {
    "conv2d": {"kernel_flipped", "wrong_padding", "wrong_stride", "bias_ignored",
               "wrong_output_shape", "detached_result", "library_conv_used", "wrong_value"},
    "conv_transpose2d": {"weight_layout_swapped", "kernel_flipped", "padding_not_cropped",
                         "wrong_stride", "bias_ignored", "wrong_output_shape", "detached_result",
                         "library_conv_used", "wrong_value"},
    "MNISTCNN": {"wrong_output_shape", "wrong_architecture", "softmax_in_model"},
    "train_with_schedule": {"scheduler_before_optimizer", "scheduler_per_batch",
                            "scheduler_not_stepped", "no_zero_grad", "no_train_mode",
                            "unweighted_batch_average", "history_wrong_shape", "wrong_value"},
    "clipped_step": {"not_clipped", "clipped_before_backward", "clipped_after_step",
                     "clipped_scaled_gradients", "wrong_clipping", "step_without_scaler",
                     "scaler_not_updated", "scaled_loss_returned", "no_zero_grad",
                     "loss_tensor_accumulated"},
}
SUBMISSIONS = CONVOLUTION + submissions_clipping.SUBMISSIONS
CORRECT = [s for s in SUBMISSIONS if s.correct]


@pytest.mark.parametrize("submission", SUBMISSIONS, ids=str)
def test_submission_gets_its_expected_grade(submission: Entry):
    assert_expected_grade(submission)


@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("submission", CORRECT, ids=str)
def test_correct_submissions_pass_on_other_seeds(submission: Entry, seed: int):
    report = grade(submission.exercise, submission.student, seed=seed)
    assert report.passed, report.feedback


@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("submission", [s for s in SUBMISSIONS if not s.correct], ids=str)
def test_the_diagnosis_holds_for_other_seeds(submission: Entry, seed: int):
    assert grade(submission.exercise, submission.student, seed=seed).codes == submission.codes


def test_catalogue_has_a_bug_for_every_code_and_three_correct_variants():
    for exercise, codes in EXERCISE_CODES.items():
        seen = set().union(*(s.codes for s in SUBMISSIONS if s.exercise == exercise))
        assert codes <= seen, f"{exercise} lacks {codes - seen}"
        assert sum(s.exercise == exercise for s in CORRECT) >= 3
        stubs = [s for s in SUBMISSIONS if s.exercise == exercise and s.name == "stub"]
        assert [(s.codes, s.expected_score()) for s in stubs] == [({"not_implemented"}, 0.0)]


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
    report = grade("train_with_schedule", next(s for s in CORRECT
                                               if s.exercise == "train_with_schedule").student)
    assert report.passed and torch.get_num_threads() == threads
