"""The loop doctor: watches any training loop and names its mistakes, with evidence and the fix.

In a notebook ``%load_ext course_utils.doctor`` (``%unload_ext`` to stop; ``%doctor quiet`` in a
cell that makes a mistake on purpose, to show it, keeps that cell quiet); in code
``with course_utils.doctor.watch(): ...``; for a script ``python -m course_utils.doctor
train.py [args]``. ``findings()`` returns everything found so far. It is off during
autograding (``NBGRADER_EXECUTION`` set) and looks away while a grader runs.

Example:
    >>> import torch
    >>> from torch import nn
    >>> model = nn.Linear(3, 1)
    >>> optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    >>> with watch(show=False) as found:
    ...     for _ in range(3):
    ...         model(torch.ones(4, 3)).pow(2).mean().backward()
    ...         optimizer.step()
    >>> found.codes
    ['no_zero_grad']
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, Iterator

from course_utils.doctor.findings import FINDINGS, DoctorReport, Finding
from course_utils.doctor.watcher import Watcher
from course_utils.jupyter import in_jupyter

__all__ = ["FINDINGS", "DoctorReport", "Finding", "findings", "load_ipython_extension",
           "unload_ipython_extension", "watch"]

_found: list[Finding] = []  # everything found since the doctor was turned on
_watcher: Watcher | None = None
_shell: Any = None
_quiet = False  # the current cell makes its mistakes on purpose


def autograding() -> bool:
    """True while nbgrader executes a notebook: the doctor stays off then."""
    return bool(os.environ.get("NBGRADER_EXECUTION"))


def findings() -> DoctorReport:
    """Every finding since the doctor was turned on, as a report."""
    return DoctorReport(list(_found))


def _show_now(finding: Finding) -> None:
    """In a notebook, each finding is shown the moment it is found, as a report."""
    if _quiet:
        return
    _found.append(finding)
    from IPython.display import display
    display(DoctorReport([finding]))


@contextlib.contextmanager
def watch(show: bool = True) -> Iterator[DoctorReport]:
    """Watches the loops run inside the block; yields the report, filled as findings come.

    With ``show`` the report is shown (in Jupyter) or printed once at the end, if it has any
    finding. Inside a notebook where the extension is loaded, the block is already watched.
    """
    report = DoctorReport()

    def collect(finding: Finding) -> None:
        _found.append(finding)
        report.findings.append(finding)

    if autograding() or _watcher is not None:
        yield report
        return
    watcher = Watcher(collect)
    watcher.install()
    try:
        yield report
    finally:
        watcher.uninstall()
        if show and report.findings:
            _display(report)


def _display(report: DoctorReport) -> None:
    if in_jupyter():
        from IPython.display import display
        display(report)
    else:
        print(report, flush=True)


def load_ipython_extension(shell: Any) -> None:
    """``%load_ext course_utils.doctor``: watches every cell from now on (not while grading)."""
    global _watcher, _shell
    # Defined while autograding too, so that a lesson's `%doctor quiet` runs there (and does
    # nothing: no loop is watched).
    shell.register_magic_function(doctor_magic, "line", "doctor")
    if autograding() or _watcher is not None:
        return
    _watcher, _shell = Watcher(_show_now), shell
    _watcher.install()
    shell.events.register("pre_run_cell", _new_cell)


def doctor_magic(line: str) -> DoctorReport | None:
    """``%doctor``: the findings so far; ``%doctor quiet``: nothing is named in this cell."""
    global _quiet
    argument = line.split("#")[0].strip()  # a comment may say why
    if argument == "quiet":
        _quiet = True
        return None
    if argument:
        raise ValueError(f"%doctor takes no argument or `quiet`, not {argument!r}")
    return findings()


def unload_ipython_extension(shell: Any) -> None:
    """``%unload_ext course_utils.doctor``: removes every hook; nothing is watched any more."""
    global _watcher, _shell
    if _watcher is None:
        return
    _watcher.uninstall()
    shell.events.unregister("pre_run_cell", _new_cell)
    _watcher, _shell = None, None


def _new_cell(*_: Any) -> None:
    """Each cell is a new loop: a finding shows again when the cell runs again."""
    global _quiet
    _quiet = False
    if _watcher is not None:
        _watcher.reset()
