"""Lesson 11 graded with protection on: its graders start DataLoader worker processes inside the
autograding sandbox (process limits, a private /dev/shm). nbgrader and the course's parallel
grader give a correct and two buggy classes of answers the scores grading in this process gives.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from course_utils.mistakes import exercise_of
from course_utils.sandbox import missing
from simulated_class import BUGS, make_course, run_nbgrader, write_submission
from test_instructor_workflow import gradebook_cells, grade_in_process, source_test_cells

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(missing() is not None, reason=f"no sandbox here: {missing()}")]

LESSON = "11_data"
STUDENTS = ["perfect", "bea", "carl"]


@pytest.fixture(scope="module")
def graded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A course in which nbgrader released lesson 11 and autograded the three students."""
    course = make_course(tmp_path_factory.mktemp("course"))
    release = run_nbgrader(course, "generate_assignment", LESSON)
    assert release.returncode == 0, release.stderr
    shutil.copy(course / "gradebook.db", course.parent / "released-gradebook.db")
    for student in STUDENTS:
        write_submission(course, student, LESSON)
    autograde = run_nbgrader(course, "autograde", LESSON)
    assert autograde.returncode == 0, autograde.stderr[-4000:]
    return course


def test_autograde_in_the_sandbox_gives_the_scores_of_grading_here(graded: Path) -> None:
    cells = gradebook_cells(graded / "gradebook.db")
    for student in STUDENTS:
        submitted = graded / "submitted" / student / LESSON / f"{LESSON}.ipynb"
        for cell in source_test_cells(graded, LESSON):
            exercise = exercise_of(cell.source)
            got = cells[student, LESSON, cell.metadata.nbgrader["grade_id"]]
            want, reports = grade_in_process(submitted, cell.source)
            assert got.auto_score == pytest.approx(want), (student, exercise, reports)
            bug = BUGS.get(student, {}).get(exercise)
            if bug is None:
                assert got.auto_score == got.max_score, (student, exercise, reports)
            else:
                assert 0 < got.auto_score < got.max_score, (student, exercise)
                assert bug.code in {code for report in reports for code in report.codes}


def test_the_loaders_workers_ran_in_the_sandbox(graded: Path) -> None:
    """The feedback on `make_loader` comes from comparing what the workers drew, not from an
    error starting them."""
    expected = {"perfect": "make_loader: all 6 checks passed",
                "bea": "workers_share_seed", "carl": "global_seed_only"}
    for student, phrase in expected.items():
        notebook = nbformat.read(graded / "autograded" / student / LESSON / f"{LESSON}.ipynb",
                                 as_version=4)
        test = next(cell for cell in notebook.cells
                    if cell.metadata.get("nbgrader", {}).get("grade_id") == "test_make_loader")
        shown = "\n".join(str(output) for output in test.outputs)
        assert phrase in shown, (student, shown[-2000:])
        assert "raised_exception" not in shown and "timeout" not in shown, shown[-2000:]


def test_parallel_grading_gives_the_serial_scores(graded: Path, tmp_path: Path) -> None:
    course = make_course(tmp_path / "course")
    shutil.copytree(graded / "notebooks", course / "notebooks")
    shutil.copy(graded.parent / "released-gradebook.db", course / "gradebook.db")
    shutil.copytree(graded / "submitted", course / "submitted")
    run = subprocess.run([sys.executable, "-m", "course_utils.parallel_grade", "--workers", "2",
                          LESSON], cwd=course, capture_output=True, text=True, timeout=1800)
    assert run.returncode == 0, run.stdout + run.stderr
    serial = gradebook_cells(graded / "gradebook.db")
    parallel = gradebook_cells(course / "gradebook.db")
    assert set(parallel) == set(serial)
    for key, cell in parallel.items():
        assert cell.auto_score == serial[key].auto_score, key
