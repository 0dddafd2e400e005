"""Autograde a class faster: several ``nbgrader autograde <lesson> --student <id>`` at once.

Each (lesson, student) submission is graded by its own nbgrader process, all writing to the
course's one gradebook. SQLite makes that safe: every write is a transaction that locks the
database file, so concurrent writers are serialised and none can corrupt another's rows (on a
local disk; SQLite's locks are unreliable on network file systems). nbgrader commits after
each grade, so a lock is held for milliseconds while a notebook runs for seconds; a writer that
finds the file locked waits up to SQLite's busy timeout (5 s) before nbgrader gives up with
"database is locked". Should that ever happen, the submission is simply graded again:
autograding one submission is idempotent. The only real race is creating the same new student
from two processes at once (a UNIQUE constraint error), so every student is added to the
gradebook once, up front, before the workers start.

Example:
    $ python -m course_utils.parallel_grade 02_loss 06_epoch_loss --workers 2
    $ python -m course_utils.parallel_grade --student bea --force   # every lesson bea handed in
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from course_utils.sandbox import enabled_for, missing, unavailable_message

# Transient database errors after which grading the submission again is right.
_RETRY_ON = ("database is locked",)
# The last exception line nbgrader printed, e.g. "nbformat.reader.NotJSONError: Notebook ...".
_EXCEPTION = re.compile(r"^\s*(?:[\w.]+\.)?(\w+(?:Error|Exception)): (.*)$")
_THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


@dataclass(frozen=True)
class Job:
    """One submission to autograde."""

    lesson: str
    student: str


@dataclass
class Result:
    """How autograding one submission went."""

    job: Job
    status: str  # "graded", "skipped" (already autograded) or "failed"
    seconds: float
    attempts: int
    reason: str = ""
    output: str = ""


def find_jobs(course: Path, lessons: list[str] | None = None,
              students: list[str] | None = None) -> list[Job]:
    """Every submission under ``submitted/<student>/<lesson>/``, lesson by lesson.

    Example:
        >>> find_jobs(Path("."), ["02_loss"], ["bea"])  # doctest: +SKIP
        [Job(lesson='02_loss', student='bea')]
    """
    found = [Job(path.name, path.parent.name)
             for path in (course / "submitted").glob("*/*") if path.is_dir()]
    return sorted((job for job in found
                   if (not lessons or job.lesson in lessons)
                   and (not students or job.student in students)),
                  key=lambda job: (job.lesson, job.student))


def available_cores() -> int:
    """The CPU cores this process may use (fewer than the machine's under a CPU affinity mask)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def nbgrader_environment(workers: int = 1) -> dict[str, str]:
    """The environment for nbgrader processes: this Python's scripts first on ``PATH`` (nbgrader
    runs ``alembic`` from there to set up a new gradebook) and, for several workers, the cores
    shared out among their kernels: PyTorch processes that each use every core slow each other
    down."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    if workers > 1:
        threads = str(max(1, available_cores() // workers))
        for variable in _THREAD_VARIABLES:
            env.setdefault(variable, threads)
    return env


def add_students(course: Path, students: set[str], env: dict[str, str]) -> None:
    """Adds the students to the gradebook in one nbgrader call (existing ones are unchanged)."""
    with tempfile.NamedTemporaryFile("w", suffix=".csv", delete=False) as roster:
        roster.write("id\n" + "".join(f"{student}\n" for student in sorted(students)))
    try:
        subprocess.run([sys.executable, "-m", "nbgrader", "db", "student", "import", roster.name,
                        "--log-level=WARN"], cwd=course, env=env, check=True,
                       capture_output=True, text=True)
    except subprocess.CalledProcessError as error:
        raise RuntimeError(f"Could not add the students to the gradebook:\n{error.stderr}")
    finally:
        os.unlink(roster.name)


def failure_reason(output: str) -> str:
    """The most telling line of a failed nbgrader run: its last exception, else its last error.

    Example:
        >>> failure_reason("[AutogradeApp | ERROR] ...\\n  ValueError: bad\\n")
        'ValueError: bad'
    """
    lines = output.splitlines()
    for line in reversed(lines):
        match = _EXCEPTION.match(line)
        if match:
            return f"{match.group(1)}: {match.group(2)}"
    errors = [line.split("]", 1)[-1].strip() for line in lines if "| ERROR]" in line]
    return errors[-1] if errors else "nbgrader exited with an error"


def autograde(course: Path, job: Job, nbgrader_args: list[str], env: dict[str, str],
              retries: int = 2) -> Result:
    """Runs ``nbgrader autograde`` for one submission, again on a transient database error."""
    command = [sys.executable, "-m", "nbgrader", "autograde", job.lesson,
               "--student", job.student, *nbgrader_args]
    start = time.perf_counter()
    for attempt in range(1, retries + 2):
        run = subprocess.run(command, cwd=course, env=env, capture_output=True, text=True)
        output = run.stdout + run.stderr
        if run.returncode == 0 or not any(text in output for text in _RETRY_ON):
            break
    seconds = time.perf_counter() - start
    if run.returncode != 0:
        return Result(job, "failed", seconds, attempt, failure_reason(output), output)
    status = "skipped" if "Skipping existing assignment" in output else "graded"
    return Result(job, status, seconds, attempt, output=output)


def grade_class(course: Path, jobs: list[Job], workers: int | None = None,
                nbgrader_args: list[str] | None = None, retries: int = 2,
                echo: bool = True) -> list[Result]:
    """Autogrades ``jobs`` with ``workers`` nbgrader processes at once (default: one per core).

    Example:
        >>> results = grade_class(Path("."), find_jobs(Path("."), ["02_loss"]))  # doctest: +SKIP
    """
    workers = workers or available_cores()
    env = nbgrader_environment(workers)
    add_students(course, {job.student for job in jobs}, env)
    results = []
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(autograde, course, job, list(nbgrader_args or []), env, retries)
                   for job in jobs]
        for done, future in enumerate(as_completed(futures), start=1):
            result = future.result()
            results.append(result)
            if echo:
                print(f"[{done}/{len(jobs)}] {_describe(result)}", flush=True)
    order = {job: i for i, job in enumerate(jobs)}
    return sorted(results, key=lambda result: order[result.job])


def _describe(result: Result) -> str:
    job = f"{result.job.lesson} {result.job.student}"
    retried = f", {result.attempts} attempts" if result.attempts > 1 else ""
    if result.status == "failed":
        return f"{job}: FAILED after {result.seconds:.1f} s{retried}: {result.reason}"
    if result.status == "skipped":
        return f"{job}: already autograded, skipped (add --force to grade again)"
    return f"{job}: graded in {result.seconds:.1f} s{retried}"


def main(argv: list[str] | None = None) -> int:
    """Command line; options it does not know are passed on to ``nbgrader autograde``."""
    parser = argparse.ArgumentParser(
        prog="python -m course_utils.parallel_grade",
        description="Autograde every submission in submitted/ with several nbgrader processes "
                    "at once. Other options (e.g. --force, --Execute.timeout=60) go to "
                    "`nbgrader autograde`.")
    parser.add_argument("lessons", nargs="*", help="lesson ids (default: every lesson submitted)")
    parser.add_argument("--student", action="append", help="only this student (repeatable)")
    parser.add_argument("--workers", type=int, default=available_cores(),
                        help="nbgrader processes at once (default: one per core, %(default)s)")
    parser.add_argument("--retries", type=int, default=2,
                        help="extra attempts after 'database is locked' (default: %(default)s)")
    parser.add_argument("--course", type=Path, default=Path("."),
                        help="nbgrader course directory (default: current directory)")
    args, nbgrader_args = parser.parse_known_args(argv)
    # As `nbgrader autograde` does, stop before grading anyone where the sandbox cannot start.
    problem = missing() if enabled_for(args.course, nbgrader_args) else None
    if problem:
        print(unavailable_message(problem), file=sys.stderr)
        return 2
    jobs = find_jobs(args.course, args.lessons, args.student)
    if not jobs:
        print("No submissions found under submitted/<student>/<lesson>/.", file=sys.stderr)
        return 1
    start = time.perf_counter()
    results = grade_class(args.course, jobs, args.workers, nbgrader_args, args.retries)
    failed = [result for result in results if result.status == "failed"]
    print(f"\n{len(results) - len(failed)} of {len(results)} submissions done in "
          f"{time.perf_counter() - start:.0f} s with {args.workers} workers.")
    for result in failed:
        print(f"  {_describe(result)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
