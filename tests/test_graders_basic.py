"""The lesson 01-04 graders give every catalogued submission exactly its expected grade."""

from __future__ import annotations

import pytest

from catalogues import Entry
from course_utils.graders import grade, plain_names
from submissions_basic import SUBMISSIONS

GENERIC_CODES = {"not_implemented", "raised_exception", "timeout", "wrong_return_type",
                 "wrong_value"}
EXERCISE_CODES = {
    "SimpleNN": {"wrong_output_shape", "wrong_architecture"},
    "MNISTMLP": {"wrong_output_shape", "wrong_architecture", "softmax_in_model"},
    "mse_loss": {"wrong_reduction", "detached_result"},
    "cross_entropy": {"wrong_reduction", "softmax_before_cross_entropy", "numerically_unstable",
                      "detached_result"},
    "linear_mse_grads": {"wrong_gradient"},
    "sgd_step": {"no_in_place_update", "gradient_ascent", "update_tracked_by_autograd",
                 "none_grad_crash", "modifies_gradients"},
}
CORRECT = [s for s in SUBMISSIONS if s.correct]


@pytest.mark.parametrize("submission", SUBMISSIONS, ids=str)
def test_submission_gets_its_expected_grade(submission: Entry):
    report = grade(submission.exercise, submission.student, timeout=submission.timeout)

    assert report.codes == set(submission.codes), report.feedback
    assert report.passed is submission.correct
    assert report.failed == submission.failed_checks()
    assert report.score == pytest.approx(submission.expected_score())
    assert report.codes <= plain_names().keys()
    feedback = "\n".join(report.feedback)
    for phrase in submission.evidence:
        assert phrase in feedback
    if not submission.correct:
        # One explanation per failed code at least, never an empty one.
        assert len(report.feedback) >= len(report.codes)
        assert all(text.strip() for text in report.feedback)


@pytest.mark.parametrize("seed", [1, 7])
@pytest.mark.parametrize("submission", CORRECT, ids=str)
def test_correct_submissions_pass_on_other_seeds(submission: Entry, seed: int):
    assert grade(submission.exercise, submission.student, seed=seed).passed


def test_catalogue_has_a_buggy_submission_for_every_code():
    for exercise, codes in EXERCISE_CODES.items():
        seen = set().union(*(s.codes for s in SUBMISSIONS if s.exercise == exercise))
        assert codes <= seen, f"{exercise} lacks {codes - seen}"
    seen_anywhere = set().union(*(s.codes for s in SUBMISSIONS))
    assert GENERIC_CODES <= seen_anywhere


def test_catalogue_has_three_correct_variants_and_a_stub_per_exercise():
    for exercise in EXERCISE_CODES:
        assert sum(s.exercise == exercise for s in CORRECT) >= 3
        stubs = [s for s in SUBMISSIONS if s.exercise == exercise and s.name == "stub"]
        assert [(s.codes, s.expected_score()) for s in stubs] == [({"not_implemented"}, 0.0)]


def test_every_buggy_submission_names_its_evidence():
    assert all(s.evidence for s in SUBMISSIONS if not s.correct)
