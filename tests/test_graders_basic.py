"""The lesson 01-04 graders give every catalogued submission exactly its expected grade."""

from __future__ import annotations

import pytest

from catalogues import Entry
from course_utils.graders import grade, plain_names
from submissions_basic import SUBMISSIONS

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


def test_every_buggy_submission_names_its_evidence():
    assert all(s.evidence for s in SUBMISSIONS if not s.correct)
