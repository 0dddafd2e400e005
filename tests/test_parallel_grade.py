"""Parallel autograding: submissions, retries, progress, kernels started ahead, lost grading
processes, and concurrent gradebook writers.

Grading a real class with the course grader and comparing its per-cell scores with serial
nbgrader's is in test_instructor_workflow.py (broken and endless notebooks) and here (the
hostile class of tests/hostile_class.py).
"""

from __future__ import annotations

import io
import re
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from collections import deque
from pathlib import Path

import nbformat
import pytest

from course_utils.autograde import environment
from course_utils.autograde.kernels import pool as kernel_pool
from course_utils.autograde.parallel import cli as parallel_grade
from course_utils.autograde.parallel import worker as grading_worker
from course_utils.autograde.parallel.jobs import Job, Result, failure_reason, find_jobs, part_of
from course_utils.autograde.parallel.progress import Progress
from course_utils.autograde.kernels.policy import missing
from hostile_class import (LEAK, LESSON, LINK_ATTACKS, PROTECTED_FILES, SECRET, HostileClass,
                           digest, plant_links)
from ordinary_user import OrdinaryUser
from simulated_class import gradebook_cells, make_course, run_nbgrader

NOT_JSON = """\
[AutogradeApp | ERROR] There was an error processing assignment: /c/submitted/eve/02_loss
[AutogradeApp | ERROR] Traceback (most recent call last):
      File "/v/nbformat/reader.py", line 25, in parse_json
        raise NotJSONError(message) from e
    nbformat.reader.NotJSONError: Notebook does not appear to be JSON: '{"cells": ['
[AutogradeApp | ERROR] There was an error processing assignment '02_loss' for student 'eve'
"""
LOCKED = "sqlite3.OperationalError: database is locked"


def test_find_jobs_lists_submissions_lesson_by_lesson(tmp_path: Path) -> None:
    for student, lesson in [("bea", "06_epoch_loss"), ("bea", "02_loss"), ("al", "02_loss")]:
        (tmp_path / "submitted" / student / lesson).mkdir(parents=True)
    (tmp_path / "submitted" / "al" / "notes.txt").write_text("not a lesson")
    assert find_jobs(tmp_path) == [Job("02_loss", "al"), Job("02_loss", "bea"),
                                   Job("06_epoch_loss", "bea")]
    assert find_jobs(tmp_path, ["06_epoch_loss"]) == [Job("06_epoch_loss", "bea")]
    assert find_jobs(tmp_path, students=["al"]) == [Job("02_loss", "al")]


def test_parts_split_the_class_by_student_for_several_machines(tmp_path: Path) -> None:
    jobs = [Job(lesson, student) for lesson in ("02_loss", "06_epoch_loss")
            for student in ("al", "bea", "cy", "dee", "eve")]
    parts = [part_of(jobs, part, 3) for part in (1, 2, 3)]
    assert sorted((job for part in parts for job in part), key=jobs.index) == jobs
    students = [{job.student for job in part} for part in parts]
    assert students == [{"al", "dee"}, {"bea", "eve"}, {"cy"}]  # disjoint, both lessons each
    with pytest.raises(ValueError, match="between 1 and 3"):
        part_of(jobs, 4, 3)
    with pytest.raises(SystemExit) as stopped:  # the command line says what is wrong
        parallel_grade.main(["--part", "0/2", "--course", str(tmp_path),
                             "--Sandbox.enabled=False"])
    assert stopped.value.code == 2


def test_failure_reason_is_the_last_exception_or_error() -> None:
    assert failure_reason(NOT_JSON) == ("NotJSONError: Notebook does not appear to be JSON: "
                                        "'{\"cells\": ['")
    assert failure_reason("[AutogradeApp | ERROR] No notebooks were matched by 'x'\n") == \
        "No notebooks were matched by 'x'"
    assert failure_reason("") == "nbgrader reported an error"


def test_environment_finds_alembic_and_shares_the_cores(monkeypatch) -> None:
    monkeypatch.setattr(environment, "available_cores", lambda: 8)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    env = environment.nbgrader_environment(workers=4)
    assert env["PATH"].split(":")[0] == str(Path(sys.executable).parent)
    assert (Path(sys.executable).parent / "alembic").exists()
    assert env["OMP_NUM_THREADS"] == "2"
    assert "OMP_NUM_THREADS" not in environment.nbgrader_environment(workers=1)


def fake_autograde(outcomes: list[tuple[bool, str]], calls: list[Job]):
    """Stands in for one in-process autograde: returns (succeeded, log) pairs in turn."""

    def autograde(app, job, pool=None):
        calls.append(job)
        return outcomes[len(calls) - 1]

    return autograde


def test_grading_is_retried_only_when_the_database_was_locked(monkeypatch) -> None:
    calls: list[Job] = []
    monkeypatch.setattr(grading_worker, "_autograde",
                        fake_autograde([(False, LOCKED), (True, "done")], calls))
    result = grading_worker.grade_one(None, Job("02_loss", "bea"))
    assert (result.status, result.attempts, calls) == ("graded", 2, [Job("02_loss", "bea")] * 2)

    calls.clear()
    monkeypatch.setattr(grading_worker, "_autograde", fake_autograde([(False, NOT_JSON)], calls))
    result = grading_worker.grade_one(None, Job("02_loss", "eve"))
    assert (result.status, result.attempts, len(calls)) == ("failed", 1, 1)
    assert result.reason.startswith("NotJSONError")

    calls.clear()
    monkeypatch.setattr(grading_worker, "_autograde", fake_autograde([(False, LOCKED)] * 3,
                                                                     calls))
    result = grading_worker.grade_one(None, Job("02_loss", "bea"), retries=2)
    assert (result.status, result.attempts) == ("failed", 3)
    assert result.reason == "OperationalError: database is locked"


def test_already_graded_submission_is_reported_as_skipped(monkeypatch) -> None:
    skipped = "[AutogradeApp | INFO] Skipping existing assignment: autograded/bea/02_loss"
    monkeypatch.setattr(grading_worker, "_autograde", fake_autograde([(True, skipped)], []))
    assert grading_worker.grade_one(None, Job("02_loss", "bea")).status == "skipped"


def test_progress_counts_done_and_failed_and_estimates_the_time_left() -> None:
    ticks = iter([0.0, 30.0, 60.0, 90.0])
    out = io.StringIO()
    progress = Progress(3, stream=out, clock=lambda: next(ticks))
    progress.add(Result(Job("02_loss", "al"), "graded", 30.0, 1))
    progress.add(Result(Job("02_loss", "eve"), "failed", 1.0, 1, "NotJSONError: bad"))
    lines = out.getvalue().splitlines()
    assert lines == [
        "[1/3] 02_loss al: graded in 30.0 s  (1/3 done, 0 failed, 0:30 elapsed, about 1:00 left)",
        "[2/3] 02_loss eve: FAILED after 1.0 s: NotJSONError: bad  "
        "(2/3 done, 1 failed, 1:00 elapsed, about 0:30 left)"]
    summary = progress.summary(progress.results[::-1] + [
        Result(Job("06_epoch_loss", "al"), "skipped", 0.1, 1)], workers=2).splitlines()
    # every submission's outcome, failures last, then the totals
    assert summary[-2] == "02_loss eve: FAILED after 1.0 s: NotJSONError: bad"
    assert summary[:2] == ["02_loss al: graded in 30.0 s",
                           "06_epoch_loss al: already autograded, skipped (add --force to "
                           "grade again)"]
    assert summary[-1] == ("2 of 3 submissions done in 90 s with 2 grading processes, "
                           "0 in kernels started ahead, 0 forked warm; 1 FAILED.")


class FakeProcess:
    exitcode = -9


def test_a_lost_grading_process_costs_only_the_submission_it_was_grading() -> None:
    grading, held, queued = Job("02_loss", "al"), Job("02_loss", "bea"), Job("02_loss", "cy")
    dead = parallel_grade._Worker(FakeProcess(), connection=None, holds=[grading, held])
    pool: list = []
    waiting = deque([queued])
    results: dict = {}
    progress = Progress(3, stream=io.StringIO())
    parallel_grade._replace(dead, pool, waiting, results, progress, start=lambda: "new")
    assert results[grading].status == "failed"
    assert "ended unexpectedly (exit code -9)" in results[grading].reason
    assert list(waiting) == [held, queued]  # graded by the others, next in line
    assert pool == ["new"]
    # A process that ended holding nothing (it had finished) is not replaced.
    parallel_grade._replace(parallel_grade._Worker(FakeProcess(), None), pool, waiting,
                            results, progress, start=lambda: "another")
    assert pool == ["new"]


def test_a_grading_process_that_dies_costs_only_its_submission(tmp_path: Path) -> None:
    from grading_doubles import grade_instantly_but_die_on_crash

    students = ["al", "bea", "crash", "dee", "eve", "fay", "gus"]
    jobs = [Job("02_loss", student) for student in students]
    results = parallel_grade.grade_class(tmp_path, jobs, workers=2, echo=False,
                                         serve=grade_instantly_but_die_on_crash)
    assert [result.job for result in results] == jobs
    outcome = {result.job.student: result.status for result in results}
    assert outcome == {student: "failed" if student == "crash" else "graded"
                       for student in students}
    assert "ended unexpectedly (exit code 3)" in results[2].reason
    assert (tmp_path / "gradebook.db").exists()  # the students were added up front


def course_with_files(tmp_path: Path) -> tuple[Path, object]:
    """A course directory where bea handed in a data file and the instructor ships one."""
    from nbgrader.coursedir import CourseDirectory

    for folder, files in {"submitted/bea/02_loss": ["02_loss.ipynb", "notes.txt", "table.csv"],
                          "submitted/eve/02_loss": ["02_loss.ipynb", "secret.txt"],
                          "solutions/02_loss": ["02_loss.ipynb", "table.csv"]}.items():
        (tmp_path / folder).mkdir(parents=True)
        for name in files:
            (tmp_path / folder / name).write_text(f"{folder}/{name}")
    coursedir = CourseDirectory(root=str(tmp_path), source_directory="solutions")
    return tmp_path, coursedir


def test_a_kernel_started_ahead_gets_the_files_nbgrader_will_put_beside_the_notebook(
        tmp_path: Path) -> None:
    course, coursedir = course_with_files(tmp_path)
    files = kernel_pool.folder_files(coursedir, "02_loss", "bea")
    # the student's own files, the instructor's overwriting theirs, no notebook
    assert files == {"notes.txt": str(course / "submitted/bea/02_loss/notes.txt"),
                     "table.csv": str(course / "solutions/02_loss/table.csv")}
    assert kernel_pool.folder_files(coursedir, "02_loss", "bea", keep_own=["table.csv"]) == {
        "notes.txt": str(course / "submitted/bea/02_loss/notes.txt"),
        "table.csv": str(course / "submitted/bea/02_loss/table.csv")}
    (course / "submitted/bea/02_loss/data").mkdir()
    (course / "submitted/bea/02_loss/data/x.txt").write_text("nested")
    assert kernel_pool.folder_files(coursedir, "02_loss", "bea") is None


class FakeManager:
    forked = False  # started ahead alone

    def __init__(self) -> None:
        self.stopped = False

    async def is_alive(self) -> bool:
        return not self.stopped

    async def shutdown_kernel(self, now: bool = False) -> None:
        self.stopped = True


class FakeClient:
    async def get_shell_msg(self, timeout: float) -> dict:
        return {"parent_header": {"msg_id": "preload"}}

    def stop_channels(self) -> None:
        pass


def test_a_kernel_started_ahead_is_used_only_where_everything_matches(tmp_path: Path) -> None:
    course, coursedir = course_with_files(tmp_path)
    folder = course / "autograded/bea/02_loss"
    files = kernel_pool.folder_files(coursedir, "02_loss", "bea")

    def pool_with_kernel() -> tuple[kernel_pool.KernelPool, FakeManager]:
        pool = kernel_pool.KernelPool(None, coursedir, [])
        manager = FakeManager()
        pool._ready[str(folder)] = kernel_pool.Prepared(str(folder), "python3", files, manager,
                                                        FakeClient(), "preload")
        return pool, manager

    folder.mkdir(parents=True)
    (folder / "notes.txt").write_text("submitted/bea/02_loss/notes.txt")
    (folder / "table.csv").write_text("solutions/02_loss/table.csv")
    (folder / "02_loss.ipynb").write_text("{}")
    pool, manager = pool_with_kernel()
    assert pool.take(str(folder), "python3") is manager
    assert pool.origins[str(folder)] == "ahead"
    assert pool.take(str(folder), "python3") is None  # never a second notebook

    for spoil in (lambda: (folder / "notes.txt").write_text("changed since"),
                  lambda: (folder / "extra.txt").write_text("a file it did not see")):
        pool, manager = pool_with_kernel()
        spoil()
        assert pool.take(str(folder), "python3") is None and manager.stopped
    pool, manager = pool_with_kernel()
    assert pool.take(str(folder), "ir") is None and manager.stopped  # another kernel
    pool, manager = pool_with_kernel()
    pool.close()
    assert manager.stopped and pool.take(str(folder), "python3") is None


PROBE = textwrap.dedent("""
    import os, sys
    from pathlib import Path
    def tried(action):
        try:
            return repr(action())
        except Exception as error:
            return type(error).__name__
    print(sorted(os.listdir(".")), os.getcwd())
    print(tried(lambda: open("notes.txt").read()), tried(lambda: open("notes.txt", "a")))
    print(tried(lambda: Path("../../../submitted/eve/02_loss/secret.txt").read_text()))
    print(tried(lambda: Path("../../../solutions/02_loss/02_loss.ipynb").read_text()))
    print(os.environ.get("NBGRADER_EXECUTION"), "torch" in sys.modules)
""")


@pytest.mark.slow
@pytest.mark.skipif(missing() is not None, reason=f"no sandbox here: {missing()}")
def test_a_kernel_started_ahead_is_sandboxed_with_its_own_folder_only(tmp_path: Path) -> None:
    from jupyter_client.blocking import BlockingKernelClient
    from traitlets.config import Config

    course, coursedir = course_with_files(tmp_path)
    pool = kernel_pool.KernelPool(Config(), coursedir, ["--HistoryManager.hist_file=:memory:"])
    pool.prepare("02_loss", "bea", "python3")
    folder = course / "autograded/bea/02_loss"
    folder.mkdir(parents=True)  # as nbgrader fills it
    for name, source in kernel_pool.folder_files(coursedir, "02_loss", "bea").items():
        (folder / name).write_text(Path(source).read_text())
    manager = pool.take(str(folder), "python3")
    assert manager is not None
    try:
        client = BlockingKernelClient()
        client.load_connection_info(manager.get_connection_info())
        client.start_channels(hb=False)  # the reply decides, as for test_forked_kernels' Kernel
        client.wait_for_ready(timeout=120)
        lines = []
        client.execute_interactive(PROBE, timeout=120, output_hook=lambda msg: lines.append(
            msg["content"].get("text", "")) if msg["msg_type"] == "stream" else None)
        client.stop_channels()
    finally:
        kernel_pool._shut_down(manager)
    listing, own, eve, solution, state = "".join(lines).splitlines()
    assert listing == f"['notes.txt', 'table.csv'] {folder}"
    content, write = own.split()
    assert content == "'submitted/bea/02_loss/notes.txt'"
    assert write in ("PermissionError", "OSError")  # read-only
    assert eve == "FileNotFoundError" and solution == "FileNotFoundError"
    assert state == "autograde True"  # as during autograde; torch imported ahead


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
    env = environment.nbgrader_environment()
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



@pytest.mark.slow
@pytest.mark.skipif(missing() is not None, reason=f"no sandbox here: {missing()}")
@pytest.mark.parametrize("grading_user", ["root", "ordinary_user"])
def test_the_hostile_class_gets_the_serial_scores_and_nothing_more(
        hostile_class: HostileClass, grading_user: str, request: pytest.FixtureRequest,
        tmp_path: Path) -> None:
    """The hostile class (tests/hostile_class.py), graded again by the course grader (two
    processes, kernels started ahead), by root or by an ordinary user (whose kernels' namespaces
    nest in the zygote's): serial nbgrader's per-cell scores as root, no leak, no course file
    changed."""
    grader: OrdinaryUser | None = (request.getfixturevalue("grader")
                                   if grading_user == "ordinary_user" else None)
    course = make_course((grader.workspace if grader else tmp_path) / "course")
    assert run_nbgrader(course, "generate_assignment", LESSON).returncode == 0
    # Links are copied as links; serial grading removed the planted ones: planted again.
    shutil.copytree(hostile_class.course / "submitted", course / "submitted", symlinks=True)
    plant_links(course)
    before = {name: digest(course / name) for name in PROTECTED_FILES}
    command = ["python", "-m", "course_utils.autograde.parallel.cli", LESSON, "--workers", "2",
               "--Execute.timeout=60"]
    if grader:
        grader.hand_over(course)
        run = grader.run(command, course, timeout=3600, COURSE_TEST_SECRET=SECRET)
    else:
        run = subprocess.run([sys.executable, *command[1:]], cwd=course, capture_output=True,
                             text=True, timeout=3600, env={**environment.nbgrader_environment(),
                                                           "COURSE_TEST_SECRET": SECRET})
    found = re.search(r"(\d+) in kernels started ahead, (\d+) forked warm", run.stdout)
    assert found, run.stdout + run.stderr[-3000:]
    ahead, forked = map(int, found.groups())
    # Submissions holding links get their kernel only once the links are removed.
    assert forked == ahead >= len(list((course / "submitted").iterdir())) - 2 \
        - len(LINK_ATTACKS), run.stdout

    parallel = gradebook_cells(course / "gradebook.db")
    assert parallel.keys() == hostile_class.cells.keys()
    for key, cell in parallel.items():
        serial = hostile_class.cells[key]
        assert (cell.auto_score, cell.needs_manual_grade) == \
            (serial.auto_score, serial.needs_manual_grade), key
    assert {name: digest(course / name) for name in PROTECTED_FILES} == before
    for notebook in (course / "autograded").glob(f"*/{LESSON}/{LESSON}.ipynb"):
        shown = "\n".join(str(cell.outputs) for cell in nbformat.read(notebook, 4).cells
                          if cell.cell_type == "code")
        student = notebook.parents[1].name
        assert (LEAK in shown) <= (LEAK in hostile_class.outputs(student)), student
        assert SECRET not in shown, student
