"""The lesson 01-04 graders give every catalogued submission exactly its expected grade."""

from __future__ import annotations

import pytest

from catalogues import Entry, assert_expected_grade
from course_utils.graders import grade
from submissions_basic import SUBMISSIONS

CORRECT = [s for s in SUBMISSIONS if s.correct]


@pytest.mark.parametrize("submission", SUBMISSIONS, ids=str)
def test_submission_gets_its_expected_grade(submission: Entry):
    assert_expected_grade(submission)


@pytest.mark.parametrize("seed", [1, 7])
@pytest.mark.parametrize("submission", CORRECT, ids=str)
def test_correct_submissions_pass_on_other_seeds(submission: Entry, seed: int):
    assert grade(submission.exercise, submission.student, seed=seed).passed


def test_every_buggy_submission_names_its_evidence():
    assert all(s.evidence for s in SUBMISSIONS if not s.correct)
