"""What the graders and the autograding side agree on, without importing torch: the MIME type of
report data, which cells are test cells, which exercises a test cell grades, and its points.

Example:
    >>> exercises_graded('points([grade("mse_loss", f), grade("sgd_step", g)], 3)')
    ['mse_loss', 'sgd_step']
    >>> cell_points([0.5, 0.875], 3)
    1.5
"""

from __future__ import annotations

import re
from typing import Any, Iterable, Mapping

# The MIME type under which every display of a report carries ``Report.to_dict()``.
REPORT_MIME = "application/vnd.course-report+json"
# A test cell's call of the graders: ``grade("exercise", ...)``.
_GRADE_CALL = re.compile(r"""\bgrade\(\s*["']([^"']+)["']""")


def grade_calls(source: str) -> list[str]:
    """The exercise named by each ``grade("...")`` call in ``source``, in order, repeats kept."""
    return _GRADE_CALL.findall(source)


def exercises_graded(source: str) -> list[str]:
    """The exercises a test cell's ``source`` grades, each once, in order."""
    return list(dict.fromkeys(grade_calls(source)))


def data_of(source: str, exercise: str) -> str:
    """The data a test cell's ``source`` grades ``exercise`` on: ``grade(..., data="mnist")``,
    else the graders' default, ``"toy"``.

    Example:
        >>> data_of('r = [grade("fit", fit, data="mnist")]', "fit"), data_of("grade('f', f)", "f")
        ('mnist', 'toy')
    """
    call = re.search(rf"""\bgrade\(\s*["']{re.escape(exercise)}["'][^)]*?\bdata\s*=\s*["'](\w+)["']""",
                     source)
    return call.group(1) if call else "toy"


def exercise_of(source: str) -> str | None:
    """The exercise a test cell grades: the first name given to ``grade(...)``.

    Example:
        >>> exercise_of('reports = [grade("mse_loss", mse_loss)]'), exercise_of("x = 1")
        ('mse_loss', None)
    """
    found = grade_calls(source)
    return found[0] if found else None


def _nbgrader(cell: Mapping[str, Any]) -> Mapping[str, Any]:
    return cell.get("metadata", {}).get("nbgrader", {})


def is_test_cell(cell: Mapping[str, Any]) -> bool:
    """An autograder test cell: a graded code cell that is not an answer.

    Example:
        >>> is_test_cell({"cell_type": "code", "metadata": {"nbgrader": {"grade": True}}})
        True
    """
    return (cell.get("cell_type") == "code" and bool(_nbgrader(cell).get("grade"))
            and not _nbgrader(cell).get("solution"))


def cell_points(scores: Iterable[float], maximum: float) -> float:
    """A test cell's points: its lowest report score times its ``maximum``, to 2 decimals."""
    return round(min(scores) * maximum, 2)
