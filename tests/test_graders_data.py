"""The lesson 11 graders (`AugmentedDataset`, `pad_collate`, `make_loader`) give every
catalogued submission exactly its expected grade."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from catalogues import Entry, assert_expected_grade
from course_utils.graders import grade
from submissions_data import SUBMISSIONS

CORRECT = [s for s in SUBMISSIONS if s.correct]


@pytest.mark.parametrize("submission", SUBMISSIONS, ids=str)
def test_submission_gets_its_expected_grade(submission: Entry):
    assert_expected_grade(submission)


@pytest.mark.parametrize("submission", CORRECT, ids=str)
def test_correct_submissions_pass_on_another_seed(submission: Entry):
    report = grade(submission.exercise, submission.student, seed=1)
    assert report.passed, report.feedback


# A loader's diagnosis does not depend on the seed, and each grading starts workers 10 times.
@pytest.mark.parametrize("submission", [s for s in SUBMISSIONS if not s.correct
                                        and s.exercise != "make_loader"], ids=str)
def test_the_diagnosis_holds_for_another_seed(submission: Entry):
    assert grade(submission.exercise, submission.student, seed=1).codes == submission.codes


def test_lesson_checks_cap_the_score():
    for name in ("transform_at_init", "left_padded", "copied_generator", "sampler_generator"):
        entry = next(s for s in SUBMISSIONS if s.name == name)
        assert grade(entry.exercise, entry.student).score <= 0.5, name


def test_grading_a_loader_leaves_the_global_random_state_as_it_was():
    loader = next(s for s in SUBMISSIONS if s.name == "global_seed").student
    random.seed(5)
    np.random.seed(5)
    torch.manual_seed(5)
    expected = random.random(), np.random.random(), torch.rand(()).item()
    random.seed(5)
    np.random.seed(5)
    torch.manual_seed(5)
    grade("make_loader", loader)
    assert (random.random(), np.random.random(), torch.rand(()).item()) == expected
