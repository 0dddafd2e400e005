"""Every grader gives every catalogued submission exactly its expected grade, on other seeds too.

The submissions come from every catalogue (``submissions_*.py``, see ``catalogues.py``): adding
an exercise's entries there is all it takes for them to be graded here.
"""

from __future__ import annotations

import pytest

from catalogues import Entry, all_submissions, assert_expected_grade
from course_utils.data import DATA_DIR, mnist_status

SUBMISSIONS = all_submissions()
needs_mnist = pytest.mark.skipif(not all(s == "ok" for s in mnist_status(DATA_DIR).values()),
                                 reason="MNIST not prepared: run python -m course_utils.data")


def on_its_data(entry: Entry) -> pytest.param:
    """The entry as a test parameter, skipped where its data is missing."""
    return pytest.param(entry, id=str(entry), marks=[needs_mnist] if entry.data == "mnist" else [])


@pytest.mark.parametrize("entry", [on_its_data(s) for s in SUBMISSIONS])
def test_each_submission_gets_exactly_its_grade(entry: Entry) -> None:
    assert_expected_grade(entry)


@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("entry", [s for s in SUBMISSIONS if s.data == "toy" and s.timeout is None],
                         ids=str)
def test_the_grade_holds_for_other_seeds(entry: Entry, seed: int) -> None:
    assert_expected_grade(entry, seed)
