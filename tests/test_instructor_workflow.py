"""nbgrader end to end on a simulated class: release, autograde, feedback, export, mistakes report.

Runs the instructor's commands for real in a temporary copy of the course directory, once per
run (``simulated_class.grade_class``, shared through tests/conftest.py): ``nbgrader autograde``
grades the edge lessons (below), the course grader the others, and the edge lessons graded again
by the course grader get nbgrader's scores. Who hands in what:

- ``perfect``, ``bea`` and ``carl`` (two sets of typical bugs, see ``simulated_class.BUGS``)
  do every lesson, except that ``bea`` and ``carl`` skip the lessons in ``MNIST_LESSONS``,
  whose notebooks train on the whole of MNIST for minutes. They do hand in 10_convolution:
  its MNIST run starts with the check of their (buggy) `MNISTCNN`, which stops it at once.
- ``untouched`` hands in every lesson as released (the stubs earn nothing anywhere).
- The other edge cases (an edited and a deleted test cell, a syntax error, endless loops, a
  file that is not JSON) hand in ``EDGE_LESSONS`` only: two fast lessons
  (toy data, seconds per notebook) with three exercises between them, one with two exercises
  and one with training code. Every edge case is about nbgrader's handling of a notebook, not
  about a lesson's content, so more lessons would cost minutes and show nothing new.
"""

from __future__ import annotations

import ast
import contextlib
import csv
import io
import re
import subprocess
import sys
from pathlib import Path

import nbformat
from IPython.core.inputtransformer2 import TransformerManager
import pytest
import torch
from torch import nn

from course_utils.graders import Report, grade, points
from course_utils.protocol import exercise_of, is_test_cell
from simulated_class import (BUGS, EDGE_EXECUTE_TIMEOUT, EDGE_LESSONS, EDGE_STUDENTS,
                             STUDENT_IDS, GradedClass, gradebook_cells, is_answer, lessons_of,
                             released_like)
from simulated_class import GRADED_LESSONS as LESSONS

pytestmark = pytest.mark.slow

def source_test_cells(course: Path, lesson: str) -> list[nbformat.NotebookNode]:
    """The lesson's test cells as the instructor wrote them, hidden tests included."""
    source = nbformat.read(course / "solutions" / lesson / f"{lesson}.ipynb", as_version=4)
    return [cell for cell in source.cells if is_test_cell(cell)]


def grade_in_process(submitted: Path, test_source: str) -> tuple[float, list[Report]]:
    """Runs a student's answer cells and a test cell here, without nbgrader.

    Returns:
        The points the test cell's last line gives, and the reports it showed.
    """
    namespace = {"torch": torch, "nn": nn, "F": nn.functional, "grade": grade, "points": points}
    cells = nbformat.read(submitted, as_version=4).cells
    for cell in cells:  # the lesson's imports, which answers may use (`Dataset`, `np`, ...)
        if cell.cell_type == "code" and not is_answer(cell):
            python = TransformerManager().transform_cell(cell.source)  # magics as calls
            imports = [node for node in ast.parse(python).body
                       if isinstance(node, (ast.Import, ast.ImportFrom))]
            exec(compile(ast.Module(imports, type_ignores=[]), "<imports>", "exec"), namespace)
    for cell in cells:
        if is_answer(cell):
            exec(cell.source, namespace)
    *body, last = test_source.strip().splitlines()
    with contextlib.redirect_stdout(io.StringIO()):
        exec("\n".join(body), namespace)
        result = eval(last, namespace)
    return result, namespace["reports"]


def feedback_lines(reports: list[Report]) -> list[str]:
    """What a feedback page must show of each report: its codes and each sentence's first line.

    The page shows the reports' HTML, where `backticked` words are code (the tags are gone
    from the page's text).
    """
    return [text for report in reports
            for text in [*report.codes,
                         *(line.splitlines()[0].replace("`", "") for line in report.feedback)]]


def test_every_lesson_is_released_and_autograded(graded_class: GradedClass) -> None:
    for lesson in LESSONS:
        assert (graded_class.path / "notebooks" / lesson / f"{lesson}.ipynb").exists()
        run = graded_class.autograde[lesson]
        if lesson in EDGE_LESSONS:  # the notebook that is not JSON fails, and only it
            assert run.returncode == 1
            failed = re.findall(r"error processing assignment '[^']+' for student '([^']+)'",
                                run.stdout + run.stderr)
            assert failed == ["invalid_json"], run.stderr[-3000:]
        else:
            assert run.returncode == 0, run.stderr[-3000:]


def test_perfect_student_gets_full_marks_in_every_lesson(graded_class: GradedClass) -> None:
    cells = gradebook_cells(graded_class.path / "gradebook.db")
    for lesson in LESSONS:
        for cell in source_test_cells(graded_class.path, lesson):
            got = cells["perfect", lesson, cell.metadata.nbgrader["grade_id"]]
            assert got.auto_score == got.max_score > 0, (lesson, cell.source)
            assert not got.needs_manual_grade


@pytest.mark.parametrize("student", list(BUGS))
def test_typical_bugs_get_the_graders_partial_credit(graded_class: GradedClass,
                                                      student: str) -> None:
    cells = gradebook_cells(graded_class.path / "gradebook.db")
    for lesson in lessons_of(student):
        submitted = graded_class.path / "submitted" / student / lesson / f"{lesson}.ipynb"
        for cell in source_test_cells(graded_class.path, lesson):
            exercise = exercise_of(cell.source)
            got = cells[student, lesson, cell.metadata.nbgrader["grade_id"]]
            if exercise not in BUGS[student]:
                assert got.auto_score == got.max_score, (lesson, exercise)
                continue
            want, reports = grade_in_process(submitted, cell.source)
            assert 0 < want < got.max_score, (lesson, exercise, reports)
            assert got.auto_score == pytest.approx(want), (lesson, exercise, reports)
            assert BUGS[student][exercise].code in {code for r in reports for code in r.codes}
            page = graded_class.feedback_text(student, lesson)
            for line in feedback_lines(reports):
                assert line in page, (lesson, exercise, line)


def first_test_id(course: Path, lesson: str) -> str:
    return source_test_cells(course, lesson)[0].metadata.nbgrader["grade_id"]


def test_edge_cases_are_graded_or_flagged(graded_class: GradedClass) -> None:
    course = graded_class.path
    cells = gradebook_cells(course / "gradebook.db")
    for lesson in EDGE_LESSONS:
        first, *others = [cell.metadata.nbgrader["grade_id"]
                          for cell in source_test_cells(course, lesson)]

        def score(student: str, cell_id: str) -> float | None:
            return cells[student, lesson, cell_id].auto_score

        def full(cell_id: str) -> float:
            return cells["perfect", lesson, cell_id].max_score

        # The untouched notebook: every test ran on the stubs and gave 0.
        for cell_id in [first, *others]:
            assert score("untouched", cell_id) == 0
        assert "[not_implemented]" in graded_class.feedback_text("untouched", lesson)

        # `assert True` in place of the test: the real test ran again and found bea's mistake.
        assert score("tampered", first) == score("bea", first) < full(first)
        restored = next(c for c in graded_class.autograded("tampered", lesson).cells
                        if c.get("metadata", {}).get("nbgrader", {}).get("grade_id") == first)
        assert "assert True" not in restored.source and "grade(" in restored.source

        # The deleted test cell was put back and graded.
        assert score("deleted_test", first) == full(first), (
            "A deleted test cell was not restored: nbgrader_config.py must enable "
            "course_utils.autograde.restore_cells.RestoreDeletedCells (see its docstring).")
        assert "It was added back by nbgrader" in graded_class.feedback_text("deleted_test",
                                                                             lesson)

        # A syntax error costs that exercise, and the feedback says why.
        assert score("syntax_error", first) == 0
        assert "SyntaxError" in graded_class.feedback_text("syntax_error", lesson)

        # Every other exercise of these students was graded normally.
        for student in ("tampered", "deleted_test", "syntax_error", "endless_loops"):
            for cell_id in others:
                assert score(student, cell_id) == full(cell_id), (student, cell_id)

        # The file that is not JSON: no score, flagged for the instructor, nothing written.
        for cell_id in [first, *others]:
            flagged = cells["invalid_json", lesson, cell_id]
            assert flagged.auto_score is None and flagged.needs_manual_grade
            assert flagged.score == 0
        assert not (course / "autograded" / "invalid_json" / lesson).exists()
        output = graded_class.autograde[lesson].stdout + graded_class.autograde[lesson].stderr
        assert "NotJSONError: Notebook does not appear to be JSON" in output


def test_endless_loops_are_stopped(graded_class: GradedClass) -> None:
    cells = gradebook_cells(graded_class.path / "gradebook.db")
    # At the top level of the first answer cell: Execute.timeout interrupted it; the function
    # defined above the loop was still graded (02_loss's first exercise is correct).
    notebook = graded_class.autograded("endless_loops", "02_loss")
    answer = next(cell for cell in notebook.cells if is_answer(cell))
    assert {"KeyboardInterrupt", "CellTimeoutError"} <= {
        output.get("ename") for output in answer.outputs}
    first = first_test_id(graded_class.path, "02_loss")
    assert cells["endless_loops", "02_loss", first].auto_score == \
        cells["perfect", "02_loss", first].max_score
    # Inside `train_one_epoch`: the graders stopped it, scored 0 and said why.
    first = first_test_id(graded_class.path, "06_epoch_loss")
    assert cells["endless_loops", "06_epoch_loss", first].auto_score == 0
    assert "[timeout]" in graded_class.feedback_text("endless_loops", "06_epoch_loss")


def test_feedback_exists_for_every_graded_submission(graded_class: GradedClass) -> None:
    for student in STUDENT_IDS:
        for lesson in lessons_of(student):
            page = graded_class.path / "feedback" / student / lesson / f"{lesson}.html"
            assert page.exists() == (student != "invalid_json"), page
    assert graded_class.feedback.returncode == 0, graded_class.feedback.stderr[-3000:]


def test_export_lists_every_student_with_their_scores(graded_class: GradedClass) -> None:
    assert graded_class.export.returncode == 0, graded_class.export.stderr[-3000:]
    with (graded_class.path / "grades.csv").open() as f:
        rows = {(row["student_id"], row["assignment"]): row for row in csv.DictReader(f)}
    assert {student for student, _ in rows} == set(STUDENT_IDS)
    cells = gradebook_cells(graded_class.path / "gradebook.db")
    for student in STUDENT_IDS:
        for lesson in lessons_of(student):
            total = sum(g.score for (s, l, _), g in cells.items() if (s, l) == (student, lesson))
            assert float(rows[student, lesson]["raw_score"]) == pytest.approx(total)
    perfect_total = sum(float(rows["perfect", lesson]["raw_score"]) for lesson in LESSONS)
    assert perfect_total == sum(float(rows["perfect", lesson]["max_score"]) for lesson in LESSONS)


def expected_mistakes(course: Path) -> dict[tuple[str, str, str], set[str]]:
    """(lesson, exercise, code) -> the students the simulated class gives that mistake."""
    expected: dict[tuple[str, str, str], set[str]] = {}
    for student, bugs in BUGS.items():
        for lesson in lessons_of(student):
            for cell in source_test_cells(course, lesson):
                bug = bugs.get(exercise_of(cell.source))
                for code in (bug.code, *bug.also) if bug else ():
                    expected.setdefault((lesson, bug.exercise, code), set()).add(student)
    for lesson in lessons_of("untouched"):
        for cell in source_test_cells(course, lesson):
            expected.setdefault((lesson, exercise_of(cell.source), "not_implemented"),
                                set()).add("untouched")
    for lesson in EDGE_LESSONS:
        first = exercise_of(source_test_cells(course, lesson)[0].source)
        expected.setdefault((lesson, first, BUGS["bea"][first].code), set()).add("tampered")
    expected[("06_epoch_loss", "train_one_epoch", "timeout")] = {"endless_loops"}
    return expected


def test_mistakes_report_counts_the_class(graded_class: GradedClass, tmp_path: Path) -> None:
    run = subprocess.run([sys.executable, "-m", "course_utils.autograde.mistakes", "--out",
                          str(tmp_path)],
                         cwd=graded_class.path, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    with (tmp_path / "mistakes.csv").open() as f:
        found = {(row["lesson"], row["exercise"], row["code"]): set(row["student_ids"].split())
                 for row in csv.DictReader(f)}
    assert found == expected_mistakes(graded_class.path)
    # bea, carl and tampered: three students
    assert re.search(r"\s3\s+returns_last_batch_loss\s+returns the last batch's loss", run.stdout)

    with (tmp_path / "not_graded.csv").open() as f:
        not_graded = {(row["student_id"], row["lesson"]): row["reason"]
                      for row in csv.DictReader(f)}
    assert set(not_graded) == {(student, lesson) for lesson in EDGE_LESSONS
                               for student in ("invalid_json", "syntax_error")}
    for lesson in EDGE_LESSONS:
        assert "not valid JSON" in not_graded["invalid_json", lesson]
        assert "SyntaxError" in not_graded["syntax_error", lesson]
    assert (tmp_path / "mistakes.png").read_bytes().startswith(b"\x89PNG")


def test_parallel_grading_gives_the_serial_scores(graded_class: GradedClass,
                                                   tmp_path: Path) -> None:
    """The course grader on the class, broken and endless notebooks included: per-cell scores
    equal to serial nbgrader's, the failures reported, one gradebook."""
    students = ["perfect", *BUGS, *EDGE_STUDENTS]
    course = released_like(graded_class, tmp_path / "course", EDGE_LESSONS, students)

    run = subprocess.run([sys.executable, "-m", "course_utils.autograde.parallel.cli",
                          "--workers", "2",
                          f"--Execute.timeout={EDGE_EXECUTE_TIMEOUT}", *EDGE_LESSONS],
                         cwd=course, capture_output=True, text=True, timeout=3600)
    assert run.returncode == 1, run.stdout + run.stderr  # the notebook that is not JSON
    failed = re.findall(r"^\[\d+/\d+\] (\S+) (\S+): FAILED", run.stdout, re.MULTILINE)
    assert sorted(failed) == [(lesson, "invalid_json") for lesson in sorted(EDGE_LESSONS)]
    assert "NotJSONError" in run.stdout
    # Each process grades one notebook while the next one's kernel starts: all but the first
    # notebook of each process (and the one that is not JSON, which never runs) use one.
    graded = len(students) * len(EDGE_LESSONS)
    ahead, forked = map(int, re.search(r"(\d+) in kernels started ahead, (\d+) forked warm",
                                       run.stdout).groups())
    assert graded - 2 - len(EDGE_LESSONS) <= ahead < graded and forked == ahead, run.stdout

    serial = gradebook_cells(graded_class.path / "gradebook.db")
    parallel = gradebook_cells(course / "gradebook.db")
    assert set(parallel) == {key for key in serial
                             if key[0] in students and key[1] in EDGE_LESSONS}
    for key, cell in parallel.items():
        assert (cell.auto_score, cell.needs_manual_grade) == \
            (serial[key].auto_score, serial[key].needs_manual_grade), key
