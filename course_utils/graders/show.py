"""Showing reports in a notebook: ``check`` for students, ``points`` for nbgrader's test cells."""

from __future__ import annotations

from typing import Any, Sequence

from course_utils.graders.grading import grade
from course_utils.graders.report import Report
from course_utils.jupyter import in_jupyter
from course_utils.protocol import cell_points


class GradingFailed(AssertionError):
    """Raised in a notebook cell once the report is shown: one short line, no traceback.

    IPython shows an exception's ``_render_traceback_()`` instead of the traceback, so the
    student sees the report above and this line, not the grader's internals.
    """

    def __init__(self, message: str, line: str):
        super().__init__(message)
        self.line = line

    def _render_traceback_(self) -> list[str]:
        return [f"\x1b[0;31m{type(self).__name__}\x1b[0m: {self.line}"]


class CheckFailed(GradingFailed):
    """A check cell's exercise did not pass; the message is the report's feedback."""


class NoPoints(GradingFailed):
    """A test cell's exercise scored 0; the message names it and its first diagnosis."""


def show(report: Report) -> None:
    """Displays a report: in Jupyter with its text, HTML and data; elsewhere as text."""
    if in_jupyter():
        from IPython.display import display
        display(report)
    else:
        print(report)


def check(name: str, student: Any, **options: Any) -> None:
    """Grades and shows the report; raises ``CheckFailed`` (an ``AssertionError``) unless passed.

    It returns nothing, so a cell ending in ``check(...)`` shows the report once; use
    ``grade`` for the report itself. ``options`` are ``grade``'s (``data``, ``timeout``, ``seed``).

    Example:
        >>> check("mse_loss", lambda p, t: ((p - t) ** 2).mean())  # doctest: +ELLIPSIS
        mse_loss: all ... checks passed.
    """
    report = grade(name, student, **options)
    show(report)
    if not report.passed:
        count = len(report.codes)
        raise CheckFailed("\n".join(report.feedback),
                          f"`{name}` is not right yet: {count} problem{'s' * (count > 1)} "
                          f"({', '.join(sorted(report.codes))}), explained above.")


def points(reports: Report | Sequence[Report], maximum: float) -> float:
    """Shows each report and ``"2.62 / 3 points"``; returns the lowest score times ``maximum``.

    The value is nbgrader's partial credit when it is the last expression of a test cell.
    When it is 0 this raises ``NoPoints`` after showing the reports, naming the exercise and
    its first diagnosis, so that nbgrader's Validate dialog says what is wrong.

    Example:
        >>> ok = grade("mse_loss", lambda p, t: ((p - t) ** 2).mean())
        >>> points([ok], 2)  # doctest: +ELLIPSIS
        mse_loss: all ... checks passed.
        2 / 2 points
        2.0
    """
    reports = [reports] if isinstance(reports, Report) else list(reports)
    if not reports:
        raise ValueError("points() needs at least one report, e.g. points([grade(...)], 3)")
    for report in reports:
        show(report)
    earned = cell_points((report.score for report in reports), maximum)
    print(f"{earned:g} / {maximum:g} points")
    if earned == 0:
        worst = min(reports, key=lambda r: r.score)
        first = worst.feedback[0].splitlines()[0] if worst.feedback else ""
        line = (f"`{worst.exercise}` earns 0 of {maximum:g} points: "
                f"[{', '.join(sorted(worst.codes))}] {first}")
        raise NoPoints(line, line)
    return earned
