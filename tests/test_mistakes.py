"""The mistakes report on small hand-built autograded notebooks (fast; the real class is in
test_instructor_workflow.py)."""

from __future__ import annotations

import csv
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_notebook, new_output

from course_utils.graders import Report, plain_names
from course_utils.graders.report import CheckResult
from course_utils.autograde.mistakes import collect, main, notebook_outcomes, reports_in

PLAIN_NAMES = plain_names()


def checks(*outcomes: str) -> list[CheckResult]:
    return [CheckResult(f"check_{i}", "", 1.0, False, outcome) for i, outcome in enumerate(outcomes)]


REDUCTION = Report("mse_loss", checks("passed", "failed", "passed"), {"wrong_reduction"},
                   ["Your loss is 6 times the mean: it is a sum.\nSee line 2.",
                    "  [not_a_code] feedback text may contain anything"])
DETACHED = Report("mse_loss", checks("passed", "failed", "failed", "passed"),
                  {"detached_result", "wrong_reduction"}, ["The loss has no `grad_fn`."])
PASSED = Report("mse_loss", checks("passed", "passed"))
STUB = Report("cross_entropy", checks("failed", "not run"), {"not_implemented"},
              ["This exercise is not done yet."])


def cell(grade_id: str, *outputs: dict, answer: bool = False, test: bool = False,
         source: str = "") -> nbformat.NotebookNode:
    meta = {"grade_id": grade_id, "solution": answer, "grade": test, "locked": not answer}
    return new_code_cell(source, metadata={"nbgrader": meta}, outputs=list(outputs))


def printed(*reports: Report) -> list[dict]:
    """What ``points`` leaves in a test cell: each report's display, then the points line."""
    return [*(new_output("display_data", data=r._repr_mimebundle_()) for r in reports),
            new_output("stream", name="stdout", text="1 / 2 points\n")]


def error(name: str, message: str) -> dict:
    return new_output("error", ename=name, evalue=message, traceback=[])


def notebook(mse_reports: list[Report] | None, cross_entropy: list[Report],
             answer_error: dict | None = None) -> nbformat.NotebookNode:
    """An autograded notebook of a lesson with the exercises `mse_loss` and `cross_entropy`."""
    mse_outputs = ([*printed(*mse_reports), new_output("execute_result", data={"text/plain": "1"})]
                   if mse_reports is not None
                   else [error("NameError", "name 'mse_loss' is not defined")])
    return new_notebook(cells=[
        new_code_cell("import torch"),
        cell("mse_loss_answer", *([answer_error] if answer_error else []), answer=True),
        cell("check_mse_loss", *([] if mse_reports else [error("NameError", "mse_loss")])),
        cell("test_mse_loss", *mse_outputs, test=True,
             source='reports = [grade("mse_loss", mse_loss)]\npoints(reports, 2)'),
        cell("cross_entropy_answer", answer=True),
        cell("test_cross_entropy", *printed(*cross_entropy), test=True,
             source="reports = [grade('cross_entropy', cross_entropy, seed=1)]"),
    ])


def write_class(course: Path) -> None:
    """Four students graded in lesson 02_loss, and one whose file is not JSON."""
    graded = {
        "ann": notebook([PASSED, PASSED], [STUB]),
        "ben": notebook([PASSED, REDUCTION], [STUB]),  # wrong only on the hidden test
        "cy": notebook([DETACHED, REDUCTION], [STUB]),
        "dee": notebook(None, [STUB], answer_error=error("SyntaxError", "expected ':'")),
    }
    for student, nb in graded.items():
        path = course / "autograded" / student / "02_loss" / "02_loss.ipynb"
        path.parent.mkdir(parents=True)
        nbformat.write(nb, path)
        (course / "submitted" / student / "02_loss").mkdir(parents=True)
    broken = course / "submitted" / "eve" / "02_loss" / "02_loss.ipynb"
    broken.parent.mkdir(parents=True)
    broken.write_text('{"cells": [')


def test_reports_are_read_from_their_data_not_their_text() -> None:
    test_cell = cell("test_mse_loss", *printed(PASSED, DETACHED, STUB), test=True)
    reports = reports_in(test_cell)
    assert [(r.exercise, r.score, r.passed) for r in reports] == [
        ("mse_loss", 1.0, True), ("mse_loss", 0.5, False), ("cross_entropy", 0.0, False)]
    assert reports[1].codes == {"detached_result", "wrong_reduction"}
    assert reports == [PASSED, DETACHED, STUB]


def test_feedback_that_looks_like_a_code_is_not_a_code() -> None:
    (report,) = reports_in(cell("test_mse_loss", *printed(REDUCTION), test=True))
    assert report.codes == {"wrong_reduction"}


def test_a_report_printed_as_text_only_is_not_read() -> None:
    text_only = new_output("stream", name="stdout", text=f"{REDUCTION}\n")
    assert reports_in(cell("test_mse_loss", text_only, test=True)) == []


def test_a_test_cell_without_report_names_the_earlier_error() -> None:
    nb = notebook(None, [STUB], answer_error=error("SyntaxError", "expected ':'"))
    mse, cross_entropy = notebook_outcomes(nb, "dee", "02_loss")
    assert (mse.exercise, mse.reports) == ("mse_loss", [])
    assert "NameError: name 'mse_loss' is not defined" in mse.problem
    assert "earlier cell raised SyntaxError: expected ':'" in mse.problem
    assert (cross_entropy.exercise, cross_entropy.problem) == ("cross_entropy", None)
    assert cross_entropy.codes == {"not_implemented"}


def test_collect_counts_each_student_once_per_mistake(tmp_path: Path) -> None:
    write_class(tmp_path)
    results = collect(tmp_path)
    assert results.exercises() == [("02_loss", "mse_loss"), ("02_loss", "cross_entropy")]
    graded, passed, by_code = results.counts("02_loss", "mse_loss")
    assert (graded, passed) == (3, 1)
    assert by_code == {"wrong_reduction": ["ben", "cy"], "detached_result": ["cy"]}
    assert results.counts("02_loss", "cross_entropy") == (
        4, 0, {"not_implemented": ["ann", "ben", "cy", "dee"]})
    reasons = dict(((student, lesson), why) for student, lesson, why in results.not_graded)
    assert set(reasons) == {("dee", "02_loss"), ("eve", "02_loss")}
    assert "not valid JSON" in reasons["eve", "02_loss"]
    assert reasons["dee", "02_loss"].startswith("mse_loss: the test cell showed no report")


def test_command_prints_and_writes_the_report(tmp_path: Path, capsys) -> None:
    write_class(tmp_path)
    out = tmp_path / "report"
    assert main(["--course", str(tmp_path), "--lesson", "02_loss", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "mse_loss: 1 of 3 students passed" in text
    assert f"2  wrong_reduction  {PLAIN_NAMES['wrong_reduction']}" in text
    assert "Could not be graded\n  dee (02_loss): mse_loss:" in text
    with (out / "mistakes.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [(r["exercise"], r["code"], r["students"], r["graded"], r["student_ids"])
            for r in rows] == [
        ("mse_loss", "wrong_reduction", "2", "3", "ben cy"),
        ("mse_loss", "detached_result", "1", "3", "cy"),
        ("cross_entropy", "not_implemented", "4", "4", "ann ben cy dee"),
    ]
    with (out / "not_graded.csv").open() as f:
        assert [r["student_id"] for r in csv.DictReader(f)] == ["dee", "eve"]
    assert (out / "mistakes.png").read_bytes().startswith(b"\x89PNG")


def test_lesson_filter_and_empty_course(tmp_path: Path, capsys) -> None:
    write_class(tmp_path)
    assert main(["--course", str(tmp_path), "--lesson", "03_backward",
                 "--out", str(tmp_path / "out")]) == 1
    assert "No autograded notebooks found" in capsys.readouterr().out
    assert not (tmp_path / "out").exists()
