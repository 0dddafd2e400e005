"""Lesson 11 graded with protection on: its graders start DataLoader worker processes inside the
autograding sandbox (process limits, a private /dev/shm). The simulated class (graded once per
run, see tests/conftest.py) hands lesson 11 in; its scores against grading in this process are
checked in tests/test_instructor_workflow.py, and here what the workers did, in kernels forked
by the course grader and in kernels ``nbgrader autograde`` starts alone.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from course_utils.autograde.kernels.policy import missing
from simulated_class import GradedClass, gradebook_cells, released_like, run_nbgrader

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(missing() is not None, reason=f"no sandbox here: {missing()}")]

LESSON = "11_data"
STUDENTS = ["perfect", "bea", "carl"]


def test_the_loaders_workers_ran_in_the_sandbox(graded_class: GradedClass) -> None:
    """The feedback on `make_loader` comes from comparing what the workers drew, not from an
    error starting them."""
    expected = {"perfect": "make_loader: all 6 checks passed",
                "bea": "workers_share_seed", "carl": "global_seed_only"}
    for student, phrase in expected.items():
        notebook = graded_class.autograded(student, LESSON)
        test = next(cell for cell in notebook.cells
                    if cell.metadata.get("nbgrader", {}).get("grade_id") == "test_make_loader")
        shown = "\n".join(str(output) for output in test.outputs)
        assert phrase in shown, (student, shown[-2000:])
        assert "raised_exception" not in shown and "timeout" not in shown, shown[-2000:]


def test_nbgrader_gives_the_course_graders_scores(graded_class: GradedClass,
                                                  tmp_path: Path) -> None:
    """Each kernel started alone by ``nbgrader autograde`` (the class's lesson 11 was graded in
    kernels forked from a zygote): the same scores."""
    course = released_like(graded_class, tmp_path / "course", [LESSON], STUDENTS)
    run = run_nbgrader(course, "autograde", LESSON)
    assert run.returncode == 0, run.stdout + run.stderr[-3000:]
    by_course_grader = {key: cell for key, cell in
                        gradebook_cells(graded_class.path / "gradebook.db").items()
                        if key[0] in STUDENTS and key[1] == LESSON}
    by_nbgrader = gradebook_cells(course / "gradebook.db")
    assert set(by_nbgrader) == set(by_course_grader) and by_nbgrader
    for key, cell in by_nbgrader.items():
        assert cell.auto_score == by_course_grader[key].auto_score, key
