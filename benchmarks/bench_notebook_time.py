"""How long a lesson takes in a fresh kernel: the whole notebook, and its slowest cells.

Run: ``python benchmarks/bench_notebook_time.py 10_convolution [--repeats 3]``. Executes a copy
of ``solutions/<lesson>/<lesson>.ipynb`` top to bottom in a new kernel, as a student's "Restart
and run all" does, and prints the wall time (kernel start included), the time inside cells, and
the slowest cells. The load average is printed too: other programs on the machine slow every
wall-clock number down, so compare runs made under similar load. The kernel's CPU time (user +
system) is much less affected by them: for lessons that run torch on one thread, it estimates
the wall time on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from datetime import datetime
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell

ROOT = Path(__file__).resolve().parents[1]
# Appended to the notebook: prints the kernel's own CPU seconds, user + system.
CPU_PROBE = ("import resource as _r; _u = _r.getrusage(_r.RUSAGE_SELF); "
             "print(_u.ru_utime + _u.ru_stime)")


def cell_seconds(cell: nbformat.NotebookNode) -> float:
    """Seconds between the kernel receiving a cell and replying, from nbclient's timing metadata."""
    timing = cell.metadata.get("execution", {})
    start, end = timing.get("iopub.execute_input"), timing.get("shell.execute_reply")
    if not (start and end):
        return 0.0
    return (datetime.fromisoformat(end.rstrip("Z")) - datetime.fromisoformat(start.rstrip("Z"))
            ).total_seconds()


def run_once(lesson: str) -> tuple[float, list[tuple[float, float, int, str]]]:
    """Wall time of one fresh run, and ``(wall seconds, kernel CPU seconds, index, first line)``
    for each code cell of the lesson."""
    path = ROOT / "solutions" / lesson / f"{lesson}.ipynb"
    notebook = nbformat.read(path, as_version=4)
    lesson_cells, notebook.cells = notebook.cells, [new_code_cell(CPU_PROBE)]
    for cell in lesson_cells:  # a probe after each code cell measures its CPU time
        notebook.cells.append(cell)
        if cell.cell_type == "code":
            notebook.cells.append(new_code_cell(CPU_PROBE))
    start = time.perf_counter()
    NotebookClient(notebook, timeout=600, kernel_name="python3", record_timing=True,
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    wall = time.perf_counter() - start
    cpu_readings = [float(cell.outputs[0].text) for cell in notebook.cells
                    if cell.source == CPU_PROBE]
    code = [(index, cell) for index, cell in enumerate(lesson_cells) if cell.cell_type == "code"]
    ran = [cell for cell in notebook.cells if cell.cell_type == "code" and cell.source != CPU_PROBE]
    cells = [(cell_seconds(done), after - before, index,
              cell.source.splitlines()[0] if cell.source else "")
             for (index, cell), done, before, after in zip(code, ran, cpu_readings,
                                                           cpu_readings[1:])]
    return wall, cells


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("lesson", help="e.g. 10_convolution")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--top", type=int, default=3, help="how many of the slowest cells to show")
    args = parser.parse_args()
    walls, insides = [], []
    for repeat in range(1, args.repeats + 1):
        load = os.getloadavg()[0]
        wall, cells = run_once(args.lesson)
        inside = sum(seconds for seconds, _, _, _ in cells)
        cpu = sum(cpu for _, cpu, _, _ in cells)
        walls.append(wall)
        insides.append(inside)
        slowest = sorted(cells, reverse=True)[:args.top]
        print(f"run {repeat}: load average {load:.1f}, wall {wall:.1f} s (kernel start and "
              f"overhead {wall - inside:.1f} s), inside cells {inside:.1f} s wall and "
              f"{cpu:.1f} s kernel CPU")
        for seconds, cpu_seconds, index, first_line in slowest:
            print(f"    cell {index:2d}: {seconds:6.1f} s wall, {cpu_seconds:6.1f} s CPU  "
                  f"{first_line[:50]}")
    if args.repeats > 1:
        print(f"median wall {statistics.median(walls):.1f} s, "
              f"median inside cells {statistics.median(insides):.1f} s")


if __name__ == "__main__":
    main()
