"""Parallel autograding: finding submissions, retrying, reporting, and concurrent gradebook writers.

Grading a real class in parallel and comparing with the serial gradebook is in
test_instructor_workflow.py.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from course_utils import parallel_grade
from course_utils.parallel_grade import Job, autograde, failure_reason, find_jobs

NOT_JSON = """\
[AutogradeApp | ERROR] There was an error processing assignment: /c/submitted/eve/02_loss
[AutogradeApp | ERROR] Traceback (most recent call last):
      File "/v/nbformat/reader.py", line 25, in parse_json
        raise NotJSONError(message) from e
    nbformat.reader.NotJSONError: Notebook does not appear to be JSON: '{"cells": ['
[AutogradeApp | ERROR] There was an error processing assignment '02_loss' for student 'eve'
"""


def test_find_jobs_lists_submissions_lesson_by_lesson(tmp_path: Path) -> None:
    for student, lesson in [("bea", "06_epoch_loss"), ("bea", "02_loss"), ("al", "02_loss")]:
        (tmp_path / "submitted" / student / lesson).mkdir(parents=True)
    (tmp_path / "submitted" / "al" / "notes.txt").write_text("not a lesson")
    assert find_jobs(tmp_path) == [Job("02_loss", "al"), Job("02_loss", "bea"),
                                   Job("06_epoch_loss", "bea")]
    assert find_jobs(tmp_path, ["06_epoch_loss"]) == [Job("06_epoch_loss", "bea")]
    assert find_jobs(tmp_path, students=["al"]) == [Job("02_loss", "al")]


def test_failure_reason_is_the_last_exception_or_error() -> None:
    assert failure_reason(NOT_JSON) == ("NotJSONError: Notebook does not appear to be JSON: "
                                        "'{\"cells\": ['")
    assert failure_reason("[AutogradeApp | ERROR] No notebooks were matched by 'x'\n") == \
        "No notebooks were matched by 'x'"
    assert failure_reason("") == "nbgrader exited with an error"


def test_environment_finds_alembic_and_shares_the_cores(monkeypatch) -> None:
    monkeypatch.setattr(parallel_grade, "available_cores", lambda: 8)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    env = parallel_grade.nbgrader_environment(workers=4)
    assert env["PATH"].split(":")[0] == str(Path(sys.executable).parent)
    assert (Path(sys.executable).parent / "alembic").exists()
    assert env["OMP_NUM_THREADS"] == "2"
    assert "OMP_NUM_THREADS" not in parallel_grade.nbgrader_environment(workers=1)


def fake_nbgrader(outputs: list[tuple[int, str]], calls: list[list[str]]):
    """Stands in for ``subprocess.run``: returns the given (exit code, output) pairs in turn."""

    def run(command, **kwargs):
        calls.append(command)
        code, output = outputs[len(calls) - 1]
        return subprocess.CompletedProcess(command, code, stdout=output, stderr="")

    return run


def test_autograde_retries_only_when_the_database_was_locked(monkeypatch, tmp_path) -> None:
    calls: list[list[str]] = []
    locked = "sqlite3.OperationalError: database is locked"
    monkeypatch.setattr(subprocess, "run", fake_nbgrader([(1, locked), (0, "done")], calls))
    result = autograde(tmp_path, Job("02_loss", "bea"), ["--force"], env={})
    assert (result.status, result.attempts) == ("graded", 2)
    assert calls[0][-5:] == ["autograde", "02_loss", "--student", "bea", "--force"]

    calls.clear()
    monkeypatch.setattr(subprocess, "run", fake_nbgrader([(1, NOT_JSON)], calls))
    result = autograde(tmp_path, Job("02_loss", "eve"), [], env={})
    assert (result.status, result.attempts, len(calls)) == ("failed", 1, 1)
    assert result.reason.startswith("NotJSONError")

    calls.clear()
    monkeypatch.setattr(subprocess, "run", fake_nbgrader([(1, locked)] * 3, calls))
    result = autograde(tmp_path, Job("02_loss", "bea"), [], env={}, retries=2)
    assert (result.status, result.attempts) == ("failed", 3)
    assert result.reason == "OperationalError: database is locked"


def test_already_graded_submission_is_reported_as_skipped(monkeypatch, tmp_path) -> None:
    skipped = "[AutogradeApp | INFO] Skipping existing assignment: autograded/bea/02_loss"
    monkeypatch.setattr(subprocess, "run", fake_nbgrader([(0, skipped)], []))
    assert autograde(tmp_path, Job("02_loss", "bea"), [], env={}).status == "skipped"


WRITER = textwrap.dedent("""
    import sys
    from nbgrader.api import Gradebook
    url, student, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
    for score in range(rounds):
        with Gradebook(url) as gradebook:
            gradebook.update_or_create_submission("lesson", student)
            grade = gradebook.find_grade("test_cell", "lesson", "lesson", student)
            grade.auto_score = score
            gradebook.db.commit()
""")


@pytest.mark.slow
def test_concurrent_gradebook_writers_lose_nothing(tmp_path: Path) -> None:
    """Several processes writing grades through nbgrader at once: SQLite serialises them."""
    from nbgrader.api import Gradebook

    db = tmp_path / "gradebook.db"
    url = f"sqlite:///{db}"
    env = parallel_grade.nbgrader_environment()
    students = [f"student{k}" for k in range(3)]
    subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
        from nbgrader.api import Gradebook
        with Gradebook({url!r}) as gradebook:
            gradebook.add_assignment("lesson")
            gradebook.add_notebook("lesson", "lesson")
            gradebook.add_grade_cell("test_cell", "lesson", "lesson", max_score=1,
                                     cell_type="code")
            for student in {students!r}:
                gradebook.add_student(student)
    """)], env=env, check=True)
    rounds = 10
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, url, student, str(rounds)],
                                env=env, stderr=subprocess.PIPE, text=True)
               for student in students]
    errors = [writer.communicate()[1] for writer in writers]
    assert [writer.returncode for writer in writers] == [0] * len(students), errors
    with Gradebook(url) as gradebook:
        scores = {student: gradebook.find_grade("test_cell", "lesson", "lesson",
                                                student).auto_score for student in students}
    assert scores == {student: rounds - 1 for student in students}
    assert sqlite3.connect(db).execute("pragma integrity_check").fetchone() == ("ok",)
