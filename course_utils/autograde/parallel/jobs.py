"""Submissions to autograde and how grading each one went.

Example:
    >>> describe(Result(Job("02_loss", "bea"), "graded", 2.5, 1))
    '02_loss bea: graded in 2.5 s'
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

# The last exception line nbgrader logged, e.g. "nbformat.reader.NotJSONError: Notebook ...".
_EXCEPTION = re.compile(r"^\s*(?:[\w.]+\.)?(\w+(?:Error|Exception)): (.*)$")


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
    # Where its notebook's kernel came from: "forked" (warm, from the zygote), "ahead" (started
    # ahead alone) or "" (started when the notebook needed it).
    kernel: str = ""


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


def part_of(jobs: list[Job], part: int, parts: int) -> list[Job]:
    """The jobs of part ``part`` (from 1) of ``parts``, split by student: each student's
    submissions all in one part, so that machines sharing one gradebook never add the same
    student.

    Example:
        >>> jobs = [Job("02_loss", s) for s in ("al", "bea", "cy")]
        >>> [job.student for job in part_of(jobs, 1, 2)], [job.student for job in part_of(jobs, 2, 2)]
        (['al', 'cy'], ['bea'])
    """
    if not 1 <= part <= parts:
        raise ValueError(f"part {part} of {parts}: the part must be between 1 and {parts}")
    students = sorted({job.student for job in jobs})
    mine = set(students[part - 1::parts])
    return [job for job in jobs if job.student in mine]


def failure_reason(output: str) -> str:
    """The most telling line of a failed autograde: its last exception, else its last error.

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
    return errors[-1] if errors else "nbgrader reported an error"


def describe(result: Result) -> str:
    """One line saying how grading a submission went."""
    job = f"{result.job.lesson} {result.job.student}"
    retried = f", {result.attempts} attempts" if result.attempts > 1 else ""
    if result.status == "failed":
        return f"{job}: FAILED after {result.seconds:.1f} s{retried}: {result.reason}"
    if result.status == "skipped":
        return f"{job}: already autograded, skipped (add --force to grade again)"
    return f"{job}: graded in {result.seconds:.1f} s{retried}"
