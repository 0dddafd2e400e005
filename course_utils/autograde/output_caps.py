"""Output caps: what a cell and a notebook may show, truncated with a visible marker beyond that.

A student's code can print megabytes of long lines or flood a cell with displays; nbgrader
would keep all of it in the autograded notebook and the feedback page (its own ``LimitOutput``
counts lines, not characters, and never counts displays). ``CapOutput`` runs right after the
notebook's execution, before its scores are saved or the notebook is written: each cell keeps
at most ``cell_chars`` characters of output (its outputs as JSON), a notebook at most
``notebook_chars``. The graders' reports, the value a test cell ends with and an error are
always kept (their text cut to ``cell_chars``); other outputs past the limit are dropped, the
one that crosses it is cut, and a marker says how much was left out. An honest lesson's largest
cell shows under 100 000 characters, a whole notebook under 250 000.

Settings, in ``nbgrader_config.py`` or on the command line (``--CapOutput.cell_chars=2000000``):

    c.CapOutput.cell_chars = 1_000_000
    c.CapOutput.notebook_chars = 5_000_000

Example:
    >>> cell = NotebookNode(cell_type="code", metadata={}, source="", outputs=[
    ...     NotebookNode(output_type="stream", name="stdout", text="x" * 500)])
    >>> cap_cell(cell, 100) <= 100
    True
    >>> cell.outputs[0].text[:3], cell.outputs[-1].text.strip()[:41]
    ('xxx', '... output truncated: 455 characters left')
"""

from __future__ import annotations

import json
from typing import Any

from nbconvert.exporters.exporter import ResourcesDict
from nbformat import NotebookNode
from nbgrader.preprocessors import NbGraderPreprocessor
from traitlets import Integer

from course_utils.protocol import REPORT_MIME, is_test_cell


def _size(output: Any) -> int:
    return len(json.dumps(output, ensure_ascii=False))


def _marker(left_out: int, limit: int) -> str:
    return (f"\n... output truncated: {left_out:,} characters left out (this cell may keep "
            f"{limit:,}) ...\n")


def _kept_whole(cell: NotebookNode, output: NotebookNode) -> bool:
    """Outputs grading needs: reports, errors, and the value a test cell ends with."""
    return (REPORT_MIME in output.get("data", {}) or output.output_type == "error"
            or output.output_type == "execute_result" and is_test_cell(cell))


def _cut_strings(value: Any, limit: int) -> Any:
    """``value`` with every string in it cut to ``limit`` characters (marked)."""
    if isinstance(value, str):
        return value if len(value) <= limit else value[:limit] + _marker(len(value) - limit,
                                                                         limit)
    if isinstance(value, list):
        return [_cut_strings(item, limit) for item in value]
    if isinstance(value, dict):
        return NotebookNode({key: _cut_strings(item, limit) for key, item in value.items()})
    return value


def _cut_text(output: NotebookNode, room: int) -> NotebookNode | None:
    """A text output cut to about ``room`` characters with a marker; None if it is not text."""
    if output.output_type == "stream":
        text = output.text
    elif set(output.get("data", {})) == {"text/plain"}:
        text = output.data["text/plain"]
    else:
        return None
    keep = max(room - _size({**output, "text": ""}), 0)
    cut = text[:keep]
    if output.output_type == "stream":
        output.text = cut
    else:
        output.data = NotebookNode({"text/plain": cut})
    return output


def cap_cell(cell: NotebookNode, limit: int) -> int:
    """Caps ``cell``'s outputs at ``limit`` characters (see the module's doc); the characters
    it keeps."""
    kept: list[NotebookNode] = []
    used = left_out = 0
    for output in cell.get("outputs", []):
        size = _size(output)
        if _kept_whole(cell, output):
            output = _cut_strings(output, limit) if size > limit else output
            kept.append(output)
            used += min(size, _size(output))
            continue
        if used + size <= limit and not left_out:
            kept.append(output)
            used += size
            continue
        if not left_out:
            cut = _cut_text(output, limit - used)
            if cut is not None and _size(cut) < size:
                kept.append(cut)
                size -= _size(cut)
                used += _size(cut)
        left_out += size
    if left_out:
        kept.append(NotebookNode(output_type="stream", name="stdout",
                                 text=_marker(left_out, limit)))
    cell.outputs = kept
    return used


class CapOutput(NbGraderPreprocessor):
    """Caps each cell's and the notebook's output (see the module's doc)."""

    cell_chars = Integer(1_000_000, help="Characters of output a cell keeps (its outputs as "
                                         "JSON); beyond, truncated with a marker.").tag(config=True)
    notebook_chars = Integer(5_000_000, help="Characters of output a notebook keeps; beyond, "
                                             "each cell's is truncated.").tag(config=True)

    def preprocess(self, nb: NotebookNode,
                   resources: ResourcesDict) -> tuple[NotebookNode, ResourcesDict]:
        remaining = self.notebook_chars
        for cell in nb.cells:
            if cell.cell_type == "code":
                remaining -= cap_cell(cell, max(min(self.cell_chars, remaining), 0))
        return nb, resources
