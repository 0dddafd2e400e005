"""Grading as an ordinary user: ``nbgrader autograde`` and the course grader (forked kernels), run
by a user who is not root, give the simulated class root's scores.

Part of the simulated class is graded again as the user ``course-grader``
(tests/ordinary_user.py) and every cell's score is compared with the class graded as root:
nbgrader grades lesson 05 (every student who hands it in), the course grader lessons 05 and
06 (the broken and endless notebooks too), each kernel started alone or forked from a zygote.
The rest of the class adds nothing the user could change, and minutes to the run. The user
grades the hostile class with the course grader too (tests/test_parallel_grade.py).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from course_utils.autograde.kernels.policy import missing
from ordinary_user import OrdinaryUser
from simulated_class import (EDGE_EXECUTE_TIMEOUT, EDGE_LESSONS, GradedClass, gradebook_cells,
                             released_like)

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(missing() is not None, reason=f"no sandbox here: {missing()}")]

SERIAL_LESSONS = ["05_zero_grad"]
# Lesson 06 with the edge students too.
PARALLEL_LESSONS = ["05_zero_grad", "06_epoch_loss"]


def class_of_user(graded_class: GradedClass, grader: OrdinaryUser, name: str,
                  lessons: list[str]) -> Path:
    """A course in the user's workspace, released as root released it, with the submissions
    of ``lessons``, given to the user."""
    course = released_like(graded_class, grader.workspace / name, lessons)
    grader.hand_over(course)
    return course


def assert_root_scores(graded_class: GradedClass, course: Path, grader: OrdinaryUser,
                       lessons: list[str]) -> None:
    """Every graded cell of ``lessons`` in the user's gradebook has root's score, and no cell is
    missing; the graded notebooks are the user's."""
    as_root = gradebook_cells(graded_class.path / "gradebook.db")
    as_user = gradebook_cells(course / "gradebook.db")
    assert set(as_user) == {key for key in as_root if key[1] in lessons}
    for key, cell in as_user.items():
        assert (cell.auto_score, cell.needs_manual_grade) == \
            (as_root[key].auto_score, as_root[key].needs_manual_grade), key
    graded = list((course / "autograded").glob("*/*/*.ipynb"))
    assert graded and {path.owner() for path in graded} == {grader.name}


def test_nbgrader_autograde_as_an_ordinary_user_gives_roots_scores(
        graded_class: GradedClass, grader: OrdinaryUser) -> None:
    course = class_of_user(graded_class, grader, "serial", SERIAL_LESSONS)
    for lesson in SERIAL_LESSONS:
        run = grader.run(["nbgrader", "autograde", lesson], course, timeout=1800)
        assert run.returncode == 0, run.stderr[-3000:]
    assert_root_scores(graded_class, course, grader, SERIAL_LESSONS)


def test_the_course_grader_as_an_ordinary_user_gives_roots_scores(
        graded_class: GradedClass, grader: OrdinaryUser) -> None:
    course = class_of_user(graded_class, grader, "parallel", PARALLEL_LESSONS)
    # Root's limit for the edge lessons; lesson 05's cells end well within it.
    run = grader.run(["python", "-m", "course_utils.autograde.parallel.cli", "--workers", "2",
                      f"--Execute.timeout={EDGE_EXECUTE_TIMEOUT}", *PARALLEL_LESSONS],
                     course, timeout=1800)
    output = run.stdout + run.stderr
    failed = re.findall(r"^\[\d+/\d+\] (\S+) (\S+): FAILED", run.stdout, re.MULTILINE)
    assert failed == [(lesson, "invalid_json") for lesson in PARALLEL_LESSONS
                      if lesson in EDGE_LESSONS], output
    assert run.returncode == 1, output
    # Every notebook but each process's first (and the one that is not JSON, which never
    # runs) is graded in a kernel forked warm from the process's zygote.
    submissions = len(list((course / "submitted").glob("*/*")))
    ahead, forked = map(int, re.search(r"(\d+) in kernels started ahead, (\d+) forked warm",
                                       run.stdout).groups())
    assert submissions - 2 - len(failed) <= forked == ahead < submissions, output
    assert_root_scores(graded_class, course, grader, PARALLEL_LESSONS)
