"""Hidden tests in autograding: put back without a false alarm, and kept out of feedback.

A released test cell lacks its hidden tests, so nbgrader's ``OverwriteCells`` finds its checksum
changed in every submission and warns "Attribute 'checksum' for cell ... has changed!" for
everyone (nbgrader #1961). ``RestoreCells`` restores such a cell silently and warns only where a
student really edited a read-only cell. ``HideHiddenTests`` removes the hidden lines from the
feedback pages (nbgrader #917): from the test cells' code and from error tracebacks, keeping
every report the cell printed.

Enabled in ``nbgrader_config.py``:

    c.Autograde.sanitize_preprocessors = [...,
        "course_utils.autograde.hidden_tests.RestoreCells", ...]
    c.GenerateFeedback.preprocessors = ["nbgrader.preprocessors.GetGrades",
        "course_utils.autograde.hidden_tests.HideHiddenTests",
        "nbconvert.preprocessors.CSSHTMLHeaderPreprocessor"]

Example:
    >>> released_source("a = 1\\n### BEGIN HIDDEN TESTS\\nb = 2\\n### END HIDDEN TESTS\\nc = 3")
    'a = 1\\nc = 3'
"""

from __future__ import annotations

import re

from nbconvert.exporters.exporter import ResourcesDict
from nbformat import NotebookNode
from nbgrader import utils
from nbgrader.api import MissingEntry
from nbgrader.preprocessors import ClearHiddenTests, NbGraderPreprocessor

from course_utils.autograde.restore_cells import RestoreDeletedCells

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _split(source: str) -> tuple[str, list[str]]:
    """The source as released, and the hidden lines (stripped, non-empty) it loses."""
    cell = NotebookNode(cell_type="code", source=source, metadata={})
    ClearHiddenTests()._remove_hidden_test_region(cell)
    kept = set(cell.source.split("\n"))
    hidden = [line.strip() for line in source.split("\n")
              if line not in kept and line.strip()]
    return cell.source, hidden


def released_source(source: str) -> str:
    """A cell's source as students get it: without its hidden tests."""
    return _split(source)[0]


class RestoreCells(RestoreDeletedCells):
    """Puts back the instructor's test cells; warns only about cells a student changed."""

    def preprocess_cell(self, cell: NotebookNode, resources: ResourcesDict,
                        cell_index: int) -> tuple[NotebookNode, ResourcesDict]:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if grade_id is not None and utils.is_locked(cell):
            try:
                source_cell = self.gradebook.find_source_cell(grade_id, self.notebook_id,
                                                              self.assignment_id)
            except MissingEntry:
                source_cell = None
            # Unchanged as released: put the hidden tests back without a warning.
            if source_cell is not None and source_cell.locked \
                    and cell.source == released_source(source_cell.source):
                cell.source = source_cell.source
        return super().preprocess_cell(cell, resources, cell_index)


class HideHiddenTests(NbGraderPreprocessor):
    """Removes hidden test lines from test cells and their tracebacks, for feedback pages."""

    def preprocess_cell(self, cell: NotebookNode, resources: ResourcesDict,
                        cell_index: int) -> tuple[NotebookNode, ResourcesDict]:
        if cell.cell_type != "code" or not utils.is_grade(cell):
            return cell, resources
        cell.source, hidden = _split(cell.source)
        if hidden:
            for output in cell.get("outputs", []):
                if output.output_type == "error":
                    output.traceback = [_without(frame, hidden) for frame in output.traceback]
        return cell, resources


def _without(text: str, hidden: list[str]) -> str:
    """``text`` without the lines that show one of the ``hidden`` lines."""
    return "\n".join(line for line in text.split("\n")
                     if not any(h in _ANSI.sub("", line) for h in hidden))
