"""Autograde a class fast: long-lived grading processes, each grading one submission after
another in sandboxed kernels forked warm and started before they are needed, all into the one
gradebook.

Each grading process (``course_utils.autograde.parallel.worker``) loads nbgrader and the course's
configuration once and grades each (lesson, student) submission with nbgrader's own
``Autograde`` converter, exactly as ``nbgrader autograde LESSON --student ID`` would: the same
preprocessors, the same trusted scores, kernels as confined and limited. Each process starts a
zygote in the sandbox that imports torch, matplotlib, the graders and the IPython kernel once;
every notebook's kernel is forked from it into namespaces of its own
(``course_utils.autograde.kernels.forked``), already warm, while the notebook before it is graded
(``course_utils.autograde.kernels.pool``). A kernel serves one notebook only.

All processes write into the course's one gradebook. SQLite makes that safe: every write is
a transaction that locks the database file, so concurrent writers are serialised (on a local
disk; SQLite's locks are unreliable on network file systems). nbgrader commits after each
grade, so a lock is held for milliseconds while a notebook runs for seconds; a writer that
finds the file locked waits up to SQLite's busy timeout (5 s) before nbgrader gives up with
"database is locked". Should that ever happen, the submission is simply graded again:
autograding one submission is idempotent. The only real race is creating the same new student
from two processes at once (a UNIQUE constraint error), so every student is added to the
gradebook once, up front, before grading starts. A grading process that dies costs only the
submission it was grading; a new one takes over the rest.

Example:
    $ course-grade 02_loss 06_epoch_loss --workers 2
    $ course-grade --student bea --force   # every lesson bea handed in
    (``course-grade`` is ``python -m course_utils.autograde.parallel.cli``)
"""

from __future__ import annotations

import argparse
import io
import multiprocessing
import os
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any, Callable

from course_utils.autograde.environment import available_cores, nbgrader_environment
from course_utils.autograde.kernels.policy import enabled_for, missing, unavailable_message
from course_utils.autograde.parallel.jobs import Job, Result, find_jobs, part_of
from course_utils.autograde.parallel.progress import Progress

__all__ = ["Job", "Result", "find_jobs", "grade_class", "main"]

def add_students(course: Path, students: set[str], nbgrader_args: list[str]) -> None:
    """Adds the students to the gradebook at once (existing ones are unchanged)."""
    from nbgrader.api import Gradebook
    from nbgrader.apps import AutogradeApp

    app = AutogradeApp()
    here = os.getcwd()
    os.chdir(course)
    try:
        app.initialize(list(nbgrader_args))
        with Gradebook(app.coursedir.db_url, app.coursedir.course_id) as gradebook:
            for student in sorted(students):
                gradebook.update_or_create_student(student)
    finally:
        os.chdir(here)


@dataclass
class _Worker:
    """A grading process, the connection to it, and the submissions it holds."""

    process: Any
    connection: Connection
    holds: list[Job] = field(default_factory=list)
    ended: bool = False  # its end of the connection is closed


def _start_worker(context: Any, serve: Callable[..., None], course: Path,
                  nbgrader_args: list[str], environment: dict[str, str],
                  retries: int) -> _Worker:
    ours, theirs = context.Pipe()
    process = context.Process(target=serve, daemon=True, name="course-grader",
                              args=(theirs, course.resolve(), nbgrader_args, environment,
                                    retries))
    process.start()
    theirs.close()
    return _Worker(process, ours)


def _answer(worker: _Worker, waiting: deque[Job], results: dict[Job, Result],
            progress: Progress) -> None:
    """Reads everything ``worker`` sent: hands out the next submission to each request and
    records each result."""
    while not worker.ended and worker.connection.poll():
        try:
            kind, result = worker.connection.recv()
        except (EOFError, OSError):
            worker.ended = True
            return
        if kind == "want":
            job = waiting.popleft() if waiting else None
            worker.connection.send(job)
            if job is not None:
                worker.holds.append(job)
        else:
            worker.holds.remove(result.job)
            results[result.job] = result
            progress.add(result)


def grade_class(course: Path, jobs: list[Job], workers: int | None = None,
                nbgrader_args: list[str] | None = None, retries: int = 2,
                echo: bool = True, serve: Callable[..., None] | None = None) -> list[Result]:
    """Autogrades ``jobs`` with ``workers`` grading processes (default: one per core), each
    running ``serve`` (default: ``course_utils.autograde.parallel.worker.serve``).

    Example:
        >>> results = grade_class(Path("."), find_jobs(Path("."), ["02_loss"]))  # doctest: +SKIP
    """
    if serve is None:
        from course_utils.autograde.parallel.worker import serve
    workers = max(1, min(workers or available_cores(), len(jobs) or 1))
    args = list(nbgrader_args or [])
    environment = nbgrader_environment(workers)
    # Spawned, not forked: a grading process starts without this one's threads and state.
    context = multiprocessing.get_context("spawn")

    def start() -> _Worker:
        return _start_worker(context, serve, course, args, environment, retries)

    pool = [start() for _ in range(workers)]
    progress = Progress(len(jobs), stream=sys.stdout if echo else io.StringIO())
    results: dict[Job, Result] = {}
    os.environ["PATH"] = environment["PATH"]
    try:
        add_students(course, {job.student for job in jobs}, args)
        waiting = deque(jobs)
        while len(results) < len(jobs):
            if not pool:
                for job in waiting:
                    results[job] = Result(job, "failed", 0.0, 0,
                                          "no grading process could start (see the errors above)")
                break
            wait([w.connection for w in pool] + [w.process.sentinel for w in pool],
                 timeout=1.0)
            for worker in list(pool):
                _answer(worker, waiting, results, progress)
                if worker.ended or not worker.process.is_alive():
                    _answer(worker, waiting, results, progress)  # what it sent before it ended
                    worker.process.join(timeout=30)
                    pool.remove(worker)
                    _replace(worker, pool, waiting, results, progress, start)
            progress.tick()
    finally:
        for worker in pool:
            worker.process.join(timeout=30)
            if worker.process.is_alive():
                worker.process.terminate()
    if echo:
        print(progress.summary([results[job] for job in jobs], workers), flush=True)
    return [results[job] for job in jobs]


def _replace(dead: _Worker, pool: list[_Worker], waiting: deque[Job],
             results: dict[Job, Result], progress: Progress, start: Any) -> None:
    """After a grading process ended: the submission it was grading failed, the one it held
    next goes back in line, and a new process takes its place if it had been grading."""
    if not dead.holds:
        return
    current, *held = dead.holds
    result = Result(current, "failed", 0.0, 1, "the grading process ended unexpectedly "
                    f"(exit code {dead.process.exitcode}) while grading this submission")
    results[current] = result
    progress.add(result)
    waiting.extendleft(reversed(held))
    if waiting:
        pool.append(start())


def main(argv: list[str] | None = None) -> int:
    """Command line; options it does not know are passed on to nbgrader's autograde."""
    parser = argparse.ArgumentParser(
        prog="course-grade",
        description="Autograde every submission in submitted/ with several long-lived grading "
                    "processes, each kernel sandboxed and started ahead. Other options (e.g. "
                    "--force, --Execute.timeout=60, --Sandbox.memory_gib=12) go to nbgrader's "
                    "autograde, as on its command line.")
    parser.add_argument("lessons", nargs="*", help="lesson ids (default: every lesson submitted)")
    parser.add_argument("--student", action="append", help="only this student (repeatable)")
    parser.add_argument("--workers", type=int, default=available_cores(),
                        help="grading processes (default: one per core, %(default)s)")
    parser.add_argument("--retries", type=int, default=2,
                        help="extra attempts after 'database is locked' (default: %(default)s)")
    parser.add_argument("--part", default="1/1", metavar="I/N",
                        help="grade only part I of N, split by student: for N machines "
                             "sharing one gradebook on a database server (default: all)")
    parser.add_argument("--course", type=Path, default=Path("."),
                        help="nbgrader course directory (default: current directory)")
    args, nbgrader_args = parser.parse_known_args(argv)
    # As `nbgrader autograde` does, stop before grading anyone where the sandbox cannot start.
    problem = missing() if enabled_for(args.course, nbgrader_args) else None
    if problem:
        print(unavailable_message(problem), file=sys.stderr)
        return 2
    try:
        part, parts = (int(n) for n in args.part.split("/"))
        jobs = part_of(find_jobs(args.course, args.lessons, args.student), part, parts)
    except ValueError as error:
        parser.error(f"--part {args.part}: {error}")
    if not jobs:
        print("No submissions found under submitted/<student>/<lesson>/.", file=sys.stderr)
        return 1
    results = grade_class(args.course, jobs, args.workers, nbgrader_args, args.retries)
    return 1 if any(result.status == "failed" for result in results) else 0


if __name__ == "__main__":
    sys.exit(main())
