"""nbgrader's Validate names the exercise and its first diagnosis for a test cell short of points.

nbgrader's Validate (the toolbar button and ``nbgrader validate``) runs the notebook and, for
a test cell that returned partial credit without an error, says only "Partial credit; passed
some but not all of the tests". It shows instead what a test cell wrote to stderr, so after the
run this puts there one line per failing report, read from the report data the cell displayed:

    `train_step` earns 1.5 of 3 points: [no_zero_grad] The gradients are never cleared ...

A test cell that scored 0 ends in an error that says the same (``points`` raises it) and is
left as it is. ``nbgrader_config.py`` installs the two hooks for Validate's execution only
(``c.Validator.Execute``), so autograding, where stderr would cost the cell its points, never
sees them. nbclient offers no hook after the last cell, so one on the notebook's start appends
an empty cell whose start, after every real cell ran, does the work and then removes it.
"""

from __future__ import annotations

import textwrap
from typing import Any

from nbformat import NotebookNode

from course_utils.protocol import REPORT_MIME
# Marks the appended cell and holds the notebook it belongs to.
_LAST_CELL = "course_validation_notebook"


def append_last_cell(notebook: NotebookNode, **_: Any) -> None:
    """``on_notebook_start`` hook: appends the empty cell that ``on_cell_start`` waits for."""
    notebook.cells.append(NotebookNode(cell_type="markdown", source="", metadata=NotebookNode(),
                                       **{_LAST_CELL: notebook}))


def explain_after_last_cell(cell: NotebookNode, **_: Any) -> None:
    """``on_cell_start`` hook: at the appended cell, explains every test cell and drops it."""
    notebook = cell.get(_LAST_CELL)
    if notebook is None:
        return
    explain_test_cells(notebook)
    notebook.cells.remove(cell)


def explain_test_cells(notebook: NotebookNode) -> None:
    """Adds to each executed test cell below full points without an error what it missed.

    Example:
        >>> from nbformat.v4 import new_code_cell, new_notebook, new_output
        >>> report = {"exercise": "mse_loss", "passed": False, "score": 0.5,
        ...           "codes": ["wrong_reduction"], "feedback": ["Your loss is a sum."]}
        >>> cell = new_code_cell("points(reports, 2)", metadata={"nbgrader": {
        ...     "grade": True, "solution": False, "points": 2, "grade_id": "t"}}, outputs=[
        ...     new_output("display_data", {"text/plain": "...", REPORT_MIME: report}),
        ...     new_output("execute_result", {"text/plain": "1.0"}, execution_count=1)])
        >>> explain_test_cells(new_notebook(cells=[cell]))
        >>> print(cell.outputs[-1].text)
        `mse_loss` earns 1 of 2 points: [wrong_reduction] Your loss is a sum.
        <BLANKLINE>
    """
    from nbgrader.utils import determine_grade, has_failed, is_grade

    for cell in notebook.cells:
        if cell.cell_type != "code" or not is_grade(cell) or has_failed(cell):
            continue
        earned, maximum = determine_grade(cell)
        reports = [output.data[REPORT_MIME] for output in cell.get("outputs", [])
                   if output.output_type in ("display_data", "execute_result")
                   and REPORT_MIME in output.get("data", {})]
        failing = [report for report in reports if not report["passed"]]
        if earned is None or earned >= maximum or not failing:
            continue
        # `nbgrader validate` cuts lines longer than 87 characters; the dialog keeps breaks.
        text = "".join(textwrap.fill(explanation(report, earned, maximum), width=80,
                                     subsequent_indent="    ") + "\n" for report in failing)
        cell.outputs.append(NotebookNode(output_type="stream", name="stderr", text=text))


def explanation(report: dict[str, Any], earned: float, maximum: float) -> str:
    """One line a student can act on: the exercise, the points, its diagnoses, the first explained.

    The same form as the error ``points`` raises when a test cell is worth 0.

    Example:
        >>> explanation({"exercise": "evaluate", "codes": ["no_eval_mode", "wrong_accuracy"],
        ...              "feedback": ["Dropout was active.\\nDetails ..."]}, 2.4, 4)
        '`evaluate` earns 2.4 of 4 points: [no_eval_mode, wrong_accuracy] Dropout was active.'
    """
    first = report["feedback"][0].splitlines()[0] if report["feedback"] else ""
    return (f"`{report['exercise']}` earns {earned:g} of {maximum:g} points: "
            f"[{', '.join(report['codes'])}] {first}")
