"""The trusted step after a test cell ran: its score comes from the graders' reports, or is 0.

Runs in nbgrader's process (``course_utils.autograde.execute``), never in the student's kernel. A
test cell's score is what nbgrader reads from its last value; here it is checked against the
report data the cell displayed (``REPORT_MIME``, one report per ``grade(...)`` call):

- the guard found the graders or their library functions patched: the cell scores 0 and shows
  a ``tampered`` report per exercise, naming what changed;
- a report is missing (no genuine report, e.g. ``points`` or ``grade`` replaced): 0;
- otherwise the score is at most the lowest report's score times the cell's points, as the
  graders' own ``points`` computes it, each report's score first lowered to what the referee's
  outcomes allow (``course_utils.autograde.referee``); a higher value, or none (which nbgrader
  would count as full marks), is replaced by it, and the cell shows what the referee found.

Example:
    >>> cell = NotebookNode(cell_type="code", source='points([grade("mse_loss", f)], 2)',
    ...     metadata={"nbgrader": {"points": 2}}, outputs=[
    ...         NotebookNode(output_type="display_data", metadata={},
    ...                      data={REPORT_MIME: {"exercise": "mse_loss", "score": 0.5}}),
    ...         NotebookNode(output_type="execute_result", metadata={}, execution_count=1,
    ...                      data={"text/plain": "2"})])
    >>> judge_test_cell(cell, changed=[]); cell.outputs[-1].data["text/plain"]
    '1.0'
    >>> judge_test_cell(cell, [], {"mse_loss": (0.25, [Violation(("value",), "wrong loss")])})
    >>> cell.outputs[-2].data["text/plain"].splitlines()[0], cell.outputs[-1].data["text/plain"]
    ('Checked outside the notebook, mse_loss scores at most 0.25 of its points:', '0.5')
"""

from __future__ import annotations

from html import escape

from nbformat import NotebookNode

from course_utils.autograde.referee import Violation
from course_utils.protocol import REPORT_MIME, cell_points, exercises_graded, grade_calls


def judge_test_cell(cell: NotebookNode, changed: list[str] | None,
                    bounds: dict[str, tuple[float, list[Violation]]] | None = None) -> None:
    """Sets the test cell's score from its genuine reports, or to 0 (see the module's doc).

    Args:
        cell: an executed autograder test cell (its source is the instructor's).
        changed: what the kernel's guard found patched; None when it did not answer.
        bounds: per exercise the referee checked, the highest score its outcomes allow and the
            violations it found.
    """
    bounds = bounds or {}
    exercises = exercises_graded(cell.source)
    if changed is None:
        _no_points(cell, "NotVerified", "the kernel did not answer the integrity check after "
                                        "this cell, so its score cannot be trusted")
        return
    if changed:
        _show_tampered(cell, exercises, changed)
        return
    failed = any(output.output_type == "error" for output in cell.outputs)
    reports = [output.data[REPORT_MIME] for output in cell.outputs
               if REPORT_MIME in output.get("data", {})
               and output.data[REPORT_MIME].get("exercise") in exercises]
    if {report["exercise"] for report in reports} != set(exercises) \
            or len(reports) < len(grade_calls(cell.source)):
        if not failed:
            _no_points(cell, "NoReport", "this test cell showed no report from the graders for "
                                         f"{', '.join(exercises) or 'its exercise'}")
        return
    if failed:
        return
    maximum = float(cell.metadata["nbgrader"]["points"])
    scores = []
    for report in reports:
        limit, found = bounds.get(report["exercise"], (1.0, []))
        reported = _score(report)
        if reported > limit:
            _show_referee(cell, report["exercise"], limit, found)
        scores.append(min(reported, limit))
    earned = cell_points(scores, maximum)
    results = [output for output in cell.outputs if output.output_type == "execute_result"]
    if not results:
        cell.outputs.append(NotebookNode(output_type="execute_result", metadata={},
                                         execution_count=cell.get("execution_count"),
                                         data={"text/plain": repr(earned)}))
    elif _value(results[0]) is None or _value(results[0]) > earned:
        results[0].data = {"text/plain": repr(earned)}


def _show_referee(cell: NotebookNode, exercise: str, limit: float,
                  found: list[Violation]) -> None:
    """Shows, under the cell's reports, why its score is lower than they say."""
    lines = [f"Checked outside the notebook, {exercise} scores at most {limit:g} of its points:"]
    lines += [f"- {violation.says}" for violation in found]
    items = "".join(f"<li>{escape(violation.says)}</li>" for violation in found)
    results = [i for i, output in enumerate(cell.outputs) if output.output_type == "execute_result"]
    cell.outputs.insert(results[0] if results else len(cell.outputs), NotebookNode(
        output_type="display_data", metadata={}, data={
            "text/plain": "\n".join(lines),
            "text/html": f"<p>{escape(lines[0])}</p><ul>{items}</ul>"}))


def _score(report: dict) -> float:
    try:
        return min(max(float(report["score"]), 0.0), 1.0)
    except (KeyError, TypeError, ValueError):
        return 0.0


def _value(output: NotebookNode) -> float | None:
    try:
        return float(output.data["text/plain"])
    except (KeyError, TypeError, ValueError):
        return None


def _no_points(cell: NotebookNode, name: str, why: str) -> None:
    """Ends the cell in an error, which nbgrader scores 0, saying why."""
    cell.outputs = [output for output in cell.outputs if output.output_type != "execute_result"]
    cell.outputs.append(NotebookNode(output_type="error", ename=name, evalue=why,
                                     traceback=[f"\x1b[0;31m{name}\x1b[0m: {why}"]))


def _show_tampered(cell: NotebookNode, exercises: list[str], changed: list[str]) -> None:
    """Replaces the cell's reports by ``tampered`` reports naming what changed; scores 0."""
    from course_utils.graders import Report, plain_names
    names = ", ".join(f"`{name}`" for name in changed[:8]) + (" ..." if len(changed) > 8 else "")
    message = (f"The notebook's code changed {names}, which the graders rely on. Grading "
               "cannot be trusted after that, so this exercise scores 0. Remove the code that "
               "replaces or patches them.")
    # What the cell printed or showed came from code that cannot be trusted any more.
    cell.outputs = [output for output in cell.outputs
                    if output.output_type not in ("execute_result", "error", "stream")
                    and REPORT_MIME not in output.get("data", {})]
    for exercise in exercises or ["unknown"]:
        report = Report(exercise, codes={"tampered"}, feedback=[message],
                        plain_names=plain_names())
        cell.outputs.append(NotebookNode(output_type="display_data", metadata={},
                                         data=report._repr_mimebundle_()))
    _no_points(cell, "Tampered", f"{', '.join(exercises)}: graders or library functions changed")
