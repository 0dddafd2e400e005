"""Stand-ins for a grading process, for testing the course grader's dispatcher without nbgrader.

Example:
    >>> callable(grade_instantly_but_die_on_crash)
    True
"""

from __future__ import annotations

import os
from multiprocessing.connection import Connection
from pathlib import Path

from course_utils.autograde.parallel.jobs import Job, Result


def grade_instantly_but_die_on_crash(connection: Connection, course: Path,
                                     nbgrader_args: list[str], environment: dict[str, str],
                                     retries: int) -> None:
    """Speaks the grading processes' protocol (holding the next submission, as they do) and
    "grades" at once; the process dies, exit code 3, on reaching the student ``crash``."""

    def ask() -> Job | None:
        connection.send(("want", None))
        return connection.recv()

    current = ask()
    while current is not None:
        upcoming = ask()
        if current.student == "crash":
            os._exit(3)
        connection.send(("done", Result(current, "graded", 0.0, 1)))
        current = upcoming
