"""What autograding keeps of a notebook, without running one: submissions screened for links,
outputs capped, active content removed (the hostile class in tests/test_safe_autograde.py shows
the same end to end)."""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path

from nbformat import NotebookNode
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from course_utils.autograde.output_caps import CapOutput
from course_utils.autograde.sanitize import SanitizeNotebook, clean_data
from course_utils.autograde.submissions import refused_entries, screen_notebooks
from course_utils.graders import Report
from course_utils.graders.report import CheckResult
from course_utils.protocol import REPORT_MIME


def test_only_the_students_own_files_stay_in_a_submission(tmp_path: Path, caplog) -> None:
    secret = tmp_path / "gradebook.db"
    secret.write_text("secret")
    folder = tmp_path / "submitted" / "eve" / "02_loss"
    (folder / "data").mkdir(parents=True)
    (folder / "02_loss.ipynb").write_text("{}")
    (folder / "data" / "mine.csv").write_text("1,2")
    (folder / "data" / "db").symlink_to(secret)
    (folder / "book").symlink_to(tmp_path, target_is_directory=True)
    os.link(secret, folder / "copy.db")
    os.mkfifo(folder / "pipe")
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(folder / "socket"))
    assert set(refused_entries(folder)) == {"data/db", "book", "copy.db", "pipe", "socket"}
    notebooks = [str(folder / "02_loss.ipynb")]
    with caplog.at_level(logging.WARNING):
        screen_notebooks(notebooks)
    assert notebooks == [str(folder / "02_loss.ipynb")]
    assert sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) == [
        "02_loss.ipynb", "data", "data/mine.csv"]
    assert secret.read_text() == "secret"  # a link's target stays untouched
    assert "Refused copy.db of student 'eve': a hard link" in caplog.text


def test_a_linked_notebook_or_submission_folder_is_not_graded(tmp_path: Path) -> None:
    solution = tmp_path / "solutions" / "02_loss"
    solution.mkdir(parents=True)
    (solution / "02_loss.ipynb").write_text("{}")
    linked = tmp_path / "submitted" / "eve" / "02_loss"
    linked.mkdir(parents=True)
    (linked / "02_loss.ipynb").symlink_to(solution / "02_loss.ipynb")
    notebooks = [str(linked / "02_loss.ipynb")]
    screen_notebooks(notebooks)
    assert notebooks == [] and not (linked / "02_loss.ipynb").is_symlink()
    (tmp_path / "submitted" / "mal").mkdir()
    (tmp_path / "submitted" / "mal" / "02_loss").symlink_to(solution)
    notebooks = [str(tmp_path / "submitted" / "mal" / "02_loss" / "02_loss.ipynb")]
    screen_notebooks(notebooks)
    assert notebooks == [] and (solution / "02_loss.ipynb").exists()


def _stream(text: str) -> NotebookNode:
    return new_output("stream", name="stdout", text=text)


def test_output_is_capped_per_cell_and_per_notebook() -> None:
    report = Report("mse_loss", [CheckResult("value", "is the mean", 1, False, "passed")])
    test_cell = new_code_cell('points([grade("mse_loss", f)], 2)', metadata={
        "nbgrader": {"grade": True, "solution": False, "points": 2, "grade_id": "t"}})
    test_cell.outputs = [_stream("y" * 5000),
                         new_output("display_data", data=report._repr_mimebundle_()),
                         new_output("execute_result", data={"text/plain": "2.0"},
                                    execution_count=1)]
    flood = new_code_cell("")
    flood.outputs = [new_output("display_data", data={"text/html": "<p>x</p>" * 100})
                     for _ in range(100)]
    small = new_code_cell("")
    small.outputs = [_stream("fits")]
    nb = new_notebook(cells=[flood, test_cell, small])
    CapOutput(cell_chars=3000, notebook_chars=5000).preprocess(nb, {})
    assert len(flood.outputs) < 10 and "output truncated" in flood.outputs[-1].text
    # The report and the score are kept whole; the student's print is cut.
    assert [o.output_type for o in test_cell.outputs] == [
        "stream", "display_data", "execute_result", "stream"]
    assert test_cell.outputs[1].data[REPORT_MIME] == report.to_dict()
    assert test_cell.outputs[2].data["text/plain"] == "2.0"
    assert len(test_cell.outputs[0].text) < 3000
    # The notebook's budget is spent: the last cell shows only the marker.
    assert [o.text for o in small.outputs if "fits" in o.text] == []
    assert "output truncated" in small.outputs[-1].text


def test_active_content_is_removed_and_reports_stay() -> None:
    report = Report("mse_loss", [CheckResult("value", "is the mean", 1, False, "failed")],
                    codes={"wrong_reduction"}, feedback=["Your `loss` sums."])
    shown = NotebookNode(report._repr_mimebundle_())
    assert clean_data(shown)["text/html"].count("border-left:4px solid #cf222e") == 1
    assert clean_data(shown)[REPORT_MIME] == report.to_dict()
    attacks = {"application/javascript": "steal()", "image/svg+xml": "<svg onload=steal()>",
               "text/html": '<img src=x onerror="steal()"><script>steal()</script>ok',
               "image/png": 'x" onerror="steal()', "text/latex": r"\href{javascript:steal()}{x}",
               "application/vnd.jupyter.widget-view+json": {"model_id": "m"}}
    cleaned = clean_data(attacks)
    assert set(cleaned) == {"text/html"} and "steal" not in cleaned["text/html"]
    assert "removed: an output of type application/javascript" in \
        clean_data({"application/javascript": "steal()"})["text/plain"]
    cell = new_markdown_cell('Mine <img src=x onerror="steal()"> [a](javascript:steal())')
    code = new_code_cell("")
    code.outputs = [new_output("display_data", data={"text/markdown": "<b onclick=steal()>b</b>"},
                               metadata={"image/png": {"width": '1" onerror="steal()'}})]
    nb = new_notebook(cells=[cell, code, new_markdown_cell("## Plain *Markdown* stays")])
    SanitizeNotebook().preprocess(nb, {})
    assert "steal" not in str(nb) and "Mine" in cell.source
    assert code.outputs[0].data == {"text/html": "<p><b>b</b></p>\n"}
    assert nb.cells[2].source == "## Plain *Markdown* stays"
