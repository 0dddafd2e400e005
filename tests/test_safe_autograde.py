"""The hostile class (tests/hostile_class.py) graded end to end by real nbgrader with the
course's configuration: each test shows one group of attacks contained. Honest students graded
with and without the protections get the same scores.
"""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from course_utils.autograde.kernels.policy import UNPROTECTED_SETTING, missing
from hostile_class import (HONEST, HONEST_LESSONS, INNOCENT, LEAK, LESSON,
                           PROTECTED_FILES, SECRET, HostileClass, attacks_in, digest, full_marks)
from simulated_class import gradebook_cells, make_course, run_nbgrader, write_submission

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(missing() is not None, reason=f"no sandbox here: {missing()}")]


def test_every_student_is_graded_despite_the_attacks(hostile_class: HostileClass) -> None:
    # The grading went on to the end: every student who did not kill their own kernel is in the
    # gradebook with a score, the honest students first of all.
    failed = re.findall(r"error processing assignment '[^']+' for student '([^']+)'",
                        hostile_class.autograde.stdout + hostile_class.autograde.stderr)
    assert set(failed) <= {"kill_everything", "kill_parent", "hang_ignoring_interrupts"}, failed
    assert hostile_class.score("perfect") == 4
    assert 0 < hostile_class.score("bea") < 4
    assert hostile_class.feedback.returncode == 0, hostile_class.feedback.stderr[-2000:]


@pytest.mark.parametrize("name", attacks_in("read"))
def test_reading_attacks_find_nothing(hostile_class: HostileClass, name: str) -> None:
    shown = hostile_class.outputs(name) + hostile_class.feedback_text(name)
    assert shown, f"{name} was not graded"
    assert LEAK not in shown
    assert SECRET not in shown
    assert "seed=1" not in hostile_class.feedback_text(name)
    # The honest part of the answer is still graded normally.
    assert hostile_class.score(name) == full_marks(hostile_class)


@pytest.mark.parametrize("name", attacks_in("write"))
def test_writing_attacks_change_nothing(hostile_class: HostileClass, name: str) -> None:
    course = hostile_class.course
    assert LEAK not in hostile_class.outputs(name)
    assert {p: digest(course / p) for p in PROTECTED_FILES} == hostile_class.digests_before
    assert (course / "submitted" / "perfect" / LESSON / f"{LESSON}.ipynb").exists()
    assert not (course / "autograded" / name / LESSON / "planted.txt").exists()
    assert hostile_class.score(name) == full_marks(hostile_class)


def test_the_gradebook_holds_only_nbgraders_scores(hostile_class: HostileClass) -> None:
    from nbgrader.api import Gradebook
    with Gradebook(f"sqlite:///{hostile_class.course / 'gradebook.db'}") as gradebook:
        scores = [g.manual_score for s in gradebook.assignment_submissions(LESSON)
                  for nb in s.notebooks for g in nb.grades]
    assert scores and all(score is None for score in scores)


@pytest.mark.parametrize("name", attacks_in("network"))
def test_network_attacks_reach_nobody(hostile_class: HostileClass, name: str) -> None:
    assert LEAK not in hostile_class.outputs(name)
    assert hostile_class.listener.connections == 0
    assert hostile_class.score(name) == full_marks(hostile_class)


@pytest.mark.parametrize("name", attacks_in("resources"))
def test_resource_attacks_are_bounded(hostile_class: HostileClass, name: str) -> None:
    shown = hostile_class.outputs(name)
    assert LEAK not in shown
    if name == "processes":
        started = int(re.search(r"processes started: (\d+)", shown).group(1))
        assert started < 400
    folder = hostile_class.course / "autograded" / name / LESSON
    assert not (folder / "big.bin").exists()
    if name != "hang_ignoring_interrupts":  # the hang ran the answer cell into the time limit
        assert hostile_class.score(name) == full_marks(hostile_class)


@pytest.mark.parametrize("name", attacks_in("kill"))
def test_killing_reaches_nothing_outside_the_kernel(hostile_class: HostileClass, name: str) -> None:
    # The signal reached no process grading needs: the killer's own notebook ran to its end and
    # its honest answer earned full marks, and nbgrader went on to grade the class.
    assert hostile_class.score(name) == full_marks(hostile_class) == 4
    assert all(hostile_class.score(student) > 0 for student in ("perfect", "bea", "carl"))


# Score attacks on bea's buggy answer, and what each meets: patching the graders or the library
# functions they rely on is found and named (tampered, 0); reading the grader's frames is
# refused (the refusal ends the student's function: 0); rebinding names, lying return values
# and swapped code change nothing (bea's own score).
PATCHES = ["patch_graders_module", "patch_report_score", "patch_torch_allclose",
           "patch_exercise_registry", "patch_math_isclose"]
REFUSED = ["read_grader_stack", "read_grader_stack_via_traceback"]


@pytest.mark.parametrize("name", attacks_in("score"))
def test_score_attacks_gain_nothing(hostile_class: HostileClass, name: str) -> None:
    feedback = hostile_class.feedback_text(name)
    assert LEAK not in hostile_class.outputs(name) + feedback
    if name in PATCHES:
        assert hostile_class.score(name) == 0
        assert "tampered" in feedback
    elif name in REFUSED:
        assert hostile_class.score(name) == 0
        assert "Refused: During autograding, notebook code may not use" in feedback
    else:
        assert hostile_class.score(name) == hostile_class.score("bea"), feedback[-3000:]


def test_the_mistakes_report_lists_the_tampered(hostile_class: HostileClass,
                                                tmp_path: Path) -> None:
    run = subprocess.run([sys.executable, "-m", "course_utils.autograde.mistakes", "--out",
                          str(tmp_path)],
                         cwd=hostile_class.course, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    with (tmp_path / "mistakes.csv").open() as f:
        tampered = {student for row in csv.DictReader(f) if row["code"] == "tampered"
                    for student in row["student_ids"].split()}
    assert tampered == set(PATCHES)


def test_innocent_names_are_not_punished(hostile_class: HostileClass) -> None:
    assert hostile_class.score(INNOCENT.name) == full_marks(hostile_class)


def test_feedback_hides_the_hidden_tests_and_keeps_the_reports(
        hostile_class: HostileClass) -> None:
    source = (hostile_class.course / "solutions" / LESSON / f"{LESSON}.ipynb").read_text()
    assert "BEGIN HIDDEN TESTS" in source and "seed=1" in source
    for student in HONEST:
        page = hostile_class.feedback_text(student)
        assert "HIDDEN TESTS" not in page and "seed=1" not in page
        assert "train_one_epoch" in page
    # bea's two reports (the visible test and the hidden one) are both there.
    assert hostile_class.feedback_text("bea").count("returns_last_batch_loss") >= 2


def test_no_false_alarm_about_changed_test_cells(hostile_class: HostileClass) -> None:
    log = hostile_class.autograde.stdout + hostile_class.autograde.stderr
    assert "Attribute 'checksum'" not in log


@pytest.fixture(scope="module")
def honest_grades(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """The honest class graded with and without the protections."""
    grades = {}
    for label, options in [("protected", []), ("unprotected", ["--Sandbox.enabled=False"])]:
        course = make_course(tmp_path_factory.mktemp(label) / "course")
        for lesson in HONEST_LESSONS:
            assert run_nbgrader(course, "generate_assignment", lesson).returncode == 0
            for student in HONEST:
                write_submission(course, student, lesson)
            run = run_nbgrader(course, "autograde", lesson, *options)
            assert run.returncode == 0, run.stderr[-3000:]
        grades[label] = gradebook_cells(course / "gradebook.db")
    return grades


def test_honest_students_get_the_same_scores_protected_or_not(honest_grades: dict) -> None:
    protected, unprotected = honest_grades["protected"], honest_grades["unprotected"]
    assert set(protected) == set(unprotected) and protected
    for key, cell in protected.items():
        assert cell.auto_score == unprotected[key].auto_score, key


def test_autograde_stops_when_the_sandbox_cannot_start(tmp_path: Path) -> None:
    course = make_course(tmp_path / "course")
    assert run_nbgrader(course, "generate_assignment", "02_loss").returncode == 0
    write_submission(course, "perfect", "02_loss")
    # A machine without bubblewrap: nbgrader finds only the environment's own commands.
    environment_only = Path(sys.executable).parent
    run = subprocess.run([sys.executable, "-m", "nbgrader", "autograde", "02_loss"], cwd=course,
                         env={**os.environ, "PATH": str(environment_only)},
                         capture_output=True, text=True, timeout=600)
    assert run.returncode != 0
    message = run.stdout + run.stderr
    assert "Autograding stopped before grading anyone" in message
    assert "bwrap" in message and UNPROTECTED_SETTING in message
    assert not (course / "autograded").exists()


def test_an_environment_under_tmp_stays_visible_in_the_sandbox(tmp_path: Path,
                                                                monkeypatch) -> None:
    # A clone in /tmp puts the venv there too; the sandbox's private /tmp must not hide it.
    from course_utils.autograde.kernels.policy import Sandbox, bwrap_command
    environment = tmp_path / "venv"
    environment.mkdir()
    (environment / "marker").write_text("visible\n")
    for path in (tmp_path, environment, environment / "marker"):
        path.chmod(0o755)
    monkeypatch.setattr(sys, "prefix", str(environment))
    folder, private = tmp_path / "notebook", tmp_path / "private"
    folder.mkdir()
    private.mkdir()
    command = bwrap_command(["cat", str(environment / "marker")], str(folder), str(private),
                            Sandbox())
    run = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert (run.returncode, run.stdout) == (0, "visible\n"), run.stderr
