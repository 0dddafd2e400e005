"""The course as nbgrader's tools find it: a complete gradebook, the exchange, and Validate."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook
from simulated_class import ROOT, buggy, make_course, run_nbgrader

from course_utils.autograde.gradebook import course_config, course_lessons, prepare, schema_head
from course_utils.autograde.environment import nbgrader_environment
from course_utils.autograde.validation import REPORT_MIME

pytestmark = pytest.mark.slow

# Two quick lessons stand for all of them where a test generates lessons.
SOME_LESSONS = ["02_loss", "03_backward"]
KERNELSPEC = {"name": "python3", "display_name": "Python 3", "language": "python"}


def with_lessons(course: Path, lessons: list[str]) -> Path:
    """Lists only ``lessons`` in the course's configuration, as an instructor editing it would."""
    with (course / "nbgrader_config.py").open("a") as config:
        config.write(f"\nLESSONS = {lessons!r}\n")
    return course


def alembic_versions(database: Path) -> list[str]:
    with sqlite3.connect(database) as connection:
        return [row[0] for row in connection.execute("SELECT version_num FROM alembic_version")]


def test_prepare_generates_every_listed_lesson_with_its_points(tmp_path: Path) -> None:
    course = with_lessons(make_course(tmp_path), SOME_LESSONS)
    assert prepare(course) == SOME_LESSONS

    from nbgrader.api import Gradebook
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gradebook:
        assert [a.name for a in gradebook.assignments] == SOME_LESSONS
        assert all(assignment.max_score > 0 for assignment in gradebook.assignments)
    for lesson in SOME_LESSONS:
        path = Path("notebooks") / lesson / f"{lesson}.ipynb"
        assert (course / path).read_text() == (ROOT / path).read_text(), f"{path} differs"
    assert alembic_versions(course / "gradebook.db") == [schema_head()]
    # A second start finds everything in place.
    assert prepare(course) == []


def test_prepare_repairs_a_gradebook_made_without_alembic(tmp_path: Path) -> None:
    course = with_lessons(make_course(tmp_path), SOME_LESSONS[:1])
    # nbgrader creates the tables, then fails to start `alembic` when it is not on PATH.
    env = nbgrader_environment()
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep)
                                  if not (Path(p) / "alembic").exists())
    broken = subprocess.run([sys.executable, "-m", "nbgrader", "db", "student", "list"],
                            cwd=course, env=env, capture_output=True, text=True)
    assert "alembic" in broken.stderr
    with pytest.raises(sqlite3.OperationalError, match="no such table"):
        alembic_versions(course / "gradebook.db")

    assert prepare(course) == SOME_LESSONS[:1]
    assert alembic_versions(course / "gradebook.db") == [schema_head()]
    upgraded = run_nbgrader(course, "db", "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr


def test_course_lessons_come_from_the_configuration() -> None:
    assert course_lessons(ROOT) == sorted(path.name for path in (ROOT / "solutions").iterdir()
                                          if (path / f"{path.name}.ipynb").is_file())


def test_the_exchange_is_a_folder_of_the_course_nbgrader_can_use(tmp_path: Path) -> None:
    course = make_course(tmp_path)
    exchange = Path(course_config(course).Exchange.root)
    assert exchange == course / "exchange"
    assert exchange.is_dir() and exchange.stat().st_mode & 0o1777 == 0o1777
    assert "exchange/" in (ROOT / ".gitignore").read_text().splitlines()


def graded_cell(source: str, points: int, grade_id: str) -> nbformat.NotebookNode:
    return new_code_cell(source, metadata={"nbgrader": {
        "grade": True, "solution": False, "locked": True, "points": points,
        "grade_id": grade_id, "schema_version": 3}})


def displayed_report(exercise: str, passed: bool, codes: list[str], feedback: list[str]) -> str:
    """A test cell's source that displays a report as the graders do, with its data."""
    data = {"exercise": exercise, "passed": passed, "score": 1.0 if passed else 0.5,
            "codes": codes, "feedback": feedback, "checks": [], "failed": []}
    return ("from IPython.display import display\n"
            f"display({{'text/plain': {exercise!r}, {REPORT_MIME!r}: {data!r}}}, raw=True)\n")


def validate(course: Path, notebook: nbformat.NotebookNode) -> str:
    path = course / "student.ipynb"
    nbformat.write(notebook, path)
    return run_nbgrader(course, "validate", path.name).stdout


def words(text: str) -> str:
    """Long lines come wrapped; words and their order are what count."""
    return " ".join(text.split())


def test_validate_names_the_exercise_and_first_diagnosis(tmp_path: Path) -> None:
    course = make_course(tmp_path)
    partial = displayed_report("train_step", False, ["no_zero_grad", "wrong_value"],
                               ["Your `train_step` lets gradients accumulate.\nMore detail.",
                                "A second problem."])
    full = displayed_report("mse_loss", True, [], [])
    notebook = new_notebook(metadata={"kernelspec": KERNELSPEC}, cells=[
        graded_cell(partial + "1.5", 3, "test_partial"),
        graded_cell(full + "2.0", 2, "test_full"),
        graded_cell("raise AssertionError('`sgd_step` earns 0 of 1 points: [gradient_ascent]')",
                    1, "test_error"),
    ])
    printed = validate(course, notebook)
    shown = words(printed)
    assert "VALIDATION FAILED ON 2 CELL(S)" in shown
    assert ("`train_step` earns 1.5 of 3 points: [no_zero_grad, wrong_value] Your `train_step` "
            "lets gradients accumulate.") in shown
    assert "A second problem" not in shown and "Partial credit" not in shown
    # The error of a cell worth 0 points says it all; nothing is added to it.
    assert "AssertionError: `sgd_step` earns 0 of 1 points: [gradient_ascent]" in shown
    explanations = [line.strip() for line in printed.splitlines()
                    if line.strip().startswith("`") and " earns " in line]
    assert [line.split(" earns ")[0] for line in explanations] == ["`train_step`"]


def test_autograding_scores_the_same_cell_without_the_explanation(tmp_path: Path) -> None:
    """The explanation goes to stderr, which would cost a test cell its points: autograde
    must never add it."""
    from nbgrader.preprocessors import Execute
    from traitlets.config import Config

    course = make_course(tmp_path)
    config = course_config(course)
    partial = displayed_report("train_step", False, ["no_zero_grad"], ["Accumulates."])
    notebook = new_notebook(metadata={"kernelspec": KERNELSPEC},
                            cells=[graded_cell(partial + "1.5", 3, "test_partial")])
    executed, _ = Execute(config=Config(config)).preprocess(notebook, {})
    outputs = executed.cells[0].outputs
    assert [output.output_type for output in outputs] == ["display_data", "execute_result"]


def test_validate_explains_a_real_mistake(tmp_path: Path) -> None:
    """bea's train_step never clears the gradients: Validate says so, with the exercise."""
    course = tmp_path / "course"
    shutil.copytree(ROOT / "notebooks" / "05_zero_grad", course)
    shutil.copy(ROOT / "nbgrader_config.py", course)
    notebook = nbformat.reads(buggy("bea")(ROOT, "05_zero_grad"), as_version=4)
    shown = words(validate(course, notebook))
    assert "`train_step` earns" in shown and "no_zero_grad" in shown, shown
