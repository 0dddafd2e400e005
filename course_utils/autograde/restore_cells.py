"""An nbgrader preprocessor that puts back test cells a student deleted, so they are graded."""

from __future__ import annotations

import uuid

from nbconvert.exporters.exporter import ResourcesDict
from nbformat import NotebookNode
from nbgrader.preprocessors import OverwriteCells


class RestoreDeletedCells(OverwriteCells):
    """nbgrader's ``OverwriteCells`` with a working ``add_missing_cells``.

    nbgrader 0.9.6 puts a deleted test cell back after the cell that precedes it in the
    instructor's notebook, but looks that cell up among answer and test cells only. In this
    course a read-only check cell precedes every test cell, so nbgrader's own version fails with
    a ``KeyError`` and the whole notebook goes ungraded. This version places the cell after the
    nearest preceding nbgrader cell that is still in the submission (or first, if none is).

    ``course_utils.autograde.hidden_tests.RestoreCells`` builds on it and is the one
    ``nbgrader_config.py`` enables (with ``c.OverwriteCells.add_missing_cells = True``).
    """

    def add_missing_grade_cells(self, nb: NotebookNode, resources: ResourcesDict
                                ) -> tuple[NotebookNode, ResourcesDict]:
        source = self.gradebook.find_notebook(self.notebook_id, self.assignment_id)
        grade_cells = {cell.name: cell for cell in source.grade_cells}
        answer_ids = {cell.name for cell in source.solution_cells}
        # The gradebook keeps the instructor's cells in notebook order.
        order = [cell.name for cell in source.source_cells]
        for position, source_cell in enumerate(source.source_cells):
            present = [cell.metadata.get("nbgrader", {}).get("grade_id") for cell in nb.cells]
            if source_cell.name not in grade_cells or source_cell.name in present:
                continue
            self.log.warning("Grade cell %s is missing from the submission: adding it back",
                             source_cell.name)
            earlier = [name for name in order[:position] if name in present]
            index = present.index(earlier[-1]) + 1 if earlier else 0
            cell = self.missing_cell_transform(source_cell, grade_cells[source_cell.name].max_score,
                                               is_solution=source_cell.name in answer_ids)
            if (nb.nbformat, nb.nbformat_minor) >= (4, 5):  # cell ids exist from format 4.5 on
                cell.id = uuid.uuid4().hex[:8]
            nb.cells.insert(index, cell)
        return nb, resources
