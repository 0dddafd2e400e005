"""Guards on the lesson notebooks: releases match nbgrader, leak nothing, and grade as intended."""

from __future__ import annotations

import ast
import re
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbgrader.api import Gradebook, MissingEntry
from nbgrader.utils import is_grade, is_locked, is_solution
from simulated_class import LESSONS, NBGRADER_CONFIG, run_nbgrader

ROOT = Path(__file__).resolve().parent.parent
SOLUTIONS = ROOT / "solutions"
RELEASE = ROOT / "notebooks"
STUB: str = NBGRADER_CONFIG["c"].ClearSolutions.code_stub["python"]

# nbgrader hides what lies between these markers from students.
HIDDEN_REGIONS = [("BEGIN SOLUTION", "END SOLUTION"), ("BEGIN HIDDEN TESTS", "END HIDDEN TESTS")]


def lesson_params() -> list:
    return [pytest.param(lesson, id=lesson) for lesson in LESSONS]


def source_notebook(lesson: str) -> Path:
    """The instructor version of ``lesson``; skips the test while it is not written yet."""
    path = SOLUTIONS / lesson / f"{lesson}.ipynb"
    if not path.is_file():
        pytest.skip(f"solutions/{lesson}/{lesson}.ipynb does not exist yet")
    return path


def released_notebook(lesson: str) -> Path:
    """The student version of ``lesson`` in notebooks/; fails if its source exists but it does not."""
    source_notebook(lesson)
    path = RELEASE / lesson / f"{lesson}.ipynb"
    assert path.is_file(), (f"notebooks/{lesson}/{lesson}.ipynb is missing: run "
                            f"`nbgrader generate_assignment {lesson} --force` from the repository root")
    return path


def nbgrader_meta(cell) -> dict:
    return cell.metadata.get("nbgrader", {})


def is_check_cell(cell) -> bool:
    """A read-only cell that only runs a check for the student (``check_...``), scoring nothing."""
    return (is_locked(cell) and not is_grade(cell) and not is_solution(cell)
            and nbgrader_meta(cell).get("grade_id", "").startswith("check_"))


def points_maximum(source: str) -> float | None:
    """The ``N`` of the ``points(reports, N)`` call in a test cell's code, or None."""
    calls = [node for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Call)
             and getattr(node.func, "id", None) == "points" and len(node.args) == 2]
    return ast.literal_eval(calls[-1].args[1]) if calls else None


@pytest.mark.parametrize("lesson", lesson_params())
def test_each_test_cells_points_metadata_equals_the_points_it_gives(lesson):
    """nbgrader caps a cell at its ``points``; ``points(reports, N)`` must scale to the same N."""
    nb = nbformat.read(source_notebook(lesson), as_version=4)
    tests = [cell for cell in nb.cells if is_grade(cell) and not is_solution(cell)]
    assert tests, f"{lesson} has no test cells"
    for cell in tests:
        maximum = points_maximum(cell.source)
        grade_id = nbgrader_meta(cell)["grade_id"]
        assert maximum is not None, f"{lesson}: {grade_id} does not end in points(reports, N)"
        assert float(nbgrader_meta(cell)["points"]) == maximum, (
            f"{lesson}: {grade_id} is worth {nbgrader_meta(cell)['points']} points in its "
            f"metadata but calls points(reports, {maximum})")


@dataclass
class CourseCopy:
    """A copy of the course folder, the lessons written when it was taken, and nbgrader's logs."""

    root: Path
    lessons: set[str]
    log: str = ""

    def require(self, lesson: str) -> None:
        if lesson not in self.lessons:
            pytest.skip(f"solutions/{lesson}/{lesson}.ipynb does not exist yet")


@pytest.fixture(scope="module")
def course(tmp_path_factory) -> CourseCopy:
    """A copy of the course folder in which `nbgrader generate_assignment` released every lesson."""
    root = tmp_path_factory.mktemp("course")
    shutil.copy(ROOT / "nbgrader_config.py", root)
    shutil.copytree(SOLUTIONS, root / "solutions",
                    ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
    lessons = {lesson for lesson in LESSONS
               if (root / "solutions" / lesson / f"{lesson}.ipynb").is_file()}
    # One call for all lessons ("*" is matched against the lesson folders) saves a slow
    # nbgrader start per lesson; each lesson is converted exactly as on its own.
    result = run_nbgrader(root, "generate_assignment", "*", "--force")
    return CourseCopy(root, lessons, result.stderr)


def comparable(nb) -> dict:
    """What nbgrader's generate_assignment decides; outputs and counters it clears anyway."""
    return {
        "nbformat": (nb.nbformat, nb.nbformat_minor),
        "metadata": nb.metadata,
        "cells": [{key: value for key, value in cell.items()
                   if key not in ("outputs", "execution_count")} for cell in nb.cells],
    }


@pytest.mark.slow
@pytest.mark.parametrize("lesson", lesson_params())
def test_release_is_what_nbgrader_generates(lesson, course):
    course.require(lesson)
    generated_path = course.root / "notebooks" / lesson / f"{lesson}.ipynb"
    assert generated_path.is_file(), f"nbgrader could not release {lesson}:\n{course.log[-4000:]}"
    released = comparable(nbformat.read(released_notebook(lesson), as_version=4))
    generated = comparable(nbformat.read(generated_path, as_version=4))
    stale = f"notebooks/{lesson} is stale: run `nbgrader generate_assignment {lesson} --force`"
    assert released["nbformat"] == generated["nbformat"], stale
    assert released["metadata"] == generated["metadata"], stale
    assert len(released["cells"]) == len(generated["cells"]), stale
    for index, (mine, theirs) in enumerate(zip(released["cells"], generated["cells"])):
        assert mine == theirs, f"{stale} (cell {index} differs)"


def split_hidden(source: str) -> tuple[list[str], list[str]]:
    """Splits a cell's lines into (visible, hidden), hidden being inside nbgrader's markers."""
    visible, hidden = [], []
    inside = None
    for line in source.splitlines():
        if inside is None:
            inside = next((end for begin, end in HIDDEN_REGIONS if begin in line), None)
            (visible if inside is None else hidden).append(line)
        else:
            hidden.append(line)
            if inside in line:
                inside = None
    return visible, hidden


def test_split_hidden_finds_solutions_and_hidden_tests():
    source = ("def f(x):\n    ### BEGIN SOLUTION\n    return 2 * x\n    ### END SOLUTION\n"
              "r = [grade('f', f)]\n### BEGIN HIDDEN TESTS\nr.append(1)\n### END HIDDEN TESTS\nr")
    visible, hidden = split_hidden(source)
    assert visible == ["def f(x):", "r = [grade('f', f)]", "r"]
    assert [line.strip() for line in hidden] == [
        "### BEGIN SOLUTION", "return 2 * x", "### END SOLUTION",
        "### BEGIN HIDDEN TESTS", "r.append(1)", "### END HIDDEN TESTS"]


def leaked_lines(source_nb, released_nb, stub: str) -> list[str]:
    """Hidden lines of the source that the release contains more often than it legitimately may.

    A hidden line may also appear in visible parts of the source (a demo using the same
    call); the release may hold it exactly that often, and no more. Lines of the stub that
    replaces each solution are not secrets.
    """
    visible, hidden = Counter(), set()
    for cell in source_nb.cells:
        shown, secret = split_hidden(cell.source)
        visible.update(line.strip() for line in shown)
        hidden.update(line.strip() for line in secret)
    hidden -= {line.strip() for line in stub.splitlines()}
    released = Counter(line.strip() for cell in released_nb.cells
                       for line in cell.source.splitlines())
    return sorted(line for line in hidden if line and released[line] > visible[line])


def test_leaked_lines_notices_a_leak_and_allows_shared_lines():
    source = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("x = 1\nprint(x)"),
        nbformat.v4.new_code_cell("def f():\n    ### BEGIN SOLUTION\n    print(x)\n"
                                  "    return 42\n    ### END SOLUTION"),
    ])
    clean = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("x = 1\nprint(x)"),
        nbformat.v4.new_code_cell("def f():\n    " + STUB.replace("\n", "\n    ")),
    ])
    assert leaked_lines(source, clean, STUB) == []
    clean.cells.append(nbformat.v4.new_code_cell("return 42"))
    clean.cells.append(nbformat.v4.new_code_cell("print(x)"))
    assert leaked_lines(source, clean, STUB) == ["print(x)", "return 42"]


@pytest.mark.parametrize("lesson", lesson_params())
def test_release_hides_solutions_and_hidden_tests(lesson):
    source = nbformat.read(source_notebook(lesson), as_version=4)
    released = nbformat.read(released_notebook(lesson), as_version=4)
    text = "\n".join(cell.source for cell in released.cells)
    for begin, end in HIDDEN_REGIONS:
        assert begin not in text and end not in text, f"notebooks/{lesson} contains `{begin}`"
    leaks = leaked_lines(source, released, STUB)
    assert not leaks, f"notebooks/{lesson} shows hidden lines of the solution: {leaks}"


def output_text(cell) -> str:
    """Everything a cell printed, displayed or raised, as plain text."""
    parts = []
    for output in cell.get("outputs", []):
        if output.output_type == "stream":
            parts.append(output.text)
        elif output.output_type == "error":
            parts.append(f"{output.ename}: {output.evalue}")
        else:
            parts.extend(value for key, value in output.get("data", {}).items()
                         if key.startswith("text/") and isinstance(value, str))
    return "\n".join(parts)


@pytest.mark.slow
@pytest.mark.parametrize("lesson", lesson_params())
def test_untouched_release_fails_only_where_students_must_act(lesson, tmp_path):
    # A copy, so that files the notebook writes do not land in the repository.
    folder = tmp_path / lesson
    shutil.copytree(released_notebook(lesson).parent, folder)
    nb = nbformat.read(folder / f"{lesson}.ipynb", as_version=4)
    NotebookClient(nb, timeout=300, allow_errors=True, kernel_name="python3",
                   resources={"metadata": {"path": str(folder)}}).execute()

    checks = [cell for cell in nb.cells if is_check_cell(cell)]
    assert checks, f"notebooks/{lesson} has no check cells (grade_id starting with `check_`)"
    for index, cell in enumerate(nb.cells):
        errors = [o for o in cell.get("outputs", []) if o.output_type == "error"]
        # A test cell scoring 0 ends with an error naming the exercise (what Validate shows).
        if errors and not (is_solution(cell) or is_check_cell(cell) or is_grade(cell)):
            pytest.fail(f"notebooks/{lesson}, cell {index} fails although students do not edit "
                        f"or check anything there: {errors[0].ename}: {errors[0].evalue}\n"
                        f"{cell.source}")
    for cell in checks:
        grade_id = nbgrader_meta(cell)["grade_id"]
        assert any(o.output_type == "error" for o in cell.outputs), \
            f"notebooks/{lesson}: {grade_id} passes although the exercise is untouched"
        assert re.search(r"not done yet", output_text(cell), re.IGNORECASE), \
            f"notebooks/{lesson}: {grade_id} does not say the exercise is not done yet:\n" \
            f"{output_text(cell)}"


@pytest.mark.slow
@pytest.mark.parametrize("lesson", lesson_params())
def test_autograde_gives_full_marks_to_the_solution_and_none_to_the_stubs(lesson, graded_class):
    """nbgrader's scores for the simulated class's ``perfect`` student (the release with the
    solution's answers) and ``untouched`` student (the release as it is)."""
    source_notebook(lesson)
    scores = {}
    with Gradebook(f"sqlite:///{graded_class.path / 'gradebook.db'}") as gradebook:
        for student in ("perfect", "untouched"):
            try:
                submission = gradebook.find_submission(lesson, student)
            except MissingEntry:
                log = graded_class.autograde[lesson].stderr[-4000:]
                pytest.fail(f"nbgrader did not grade {student}'s {lesson}:\n{log}")
            scores[student] = (submission.score, submission.max_score)
    maximum = scores["perfect"][1]
    assert maximum > 0, f"{lesson} has no points to earn"
    assert scores["perfect"][0] == maximum, f"{lesson}: the solution scored {scores}"
    assert scores["untouched"][0] == 0, f"{lesson}: the untouched notebook scored {scores}"
