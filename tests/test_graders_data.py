"""The lesson 11 graders (`AugmentedDataset`, `pad_collate`, `make_loader`): what the catalogue
test (tests/test_graders.py) does not show, the lesson's cap and the random state left as found."""

from __future__ import annotations

import random

import numpy as np
import torch

from course_utils.graders import grade
from submissions_data import SUBMISSIONS


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
