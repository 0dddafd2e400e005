"""Where a grading process's time goes, per notebook: each phase's CPU time in the kernel, and
the grading process's own.

One grading process (``course_utils.autograde.parallel.worker``, run here in this process)
grades a class of the simulated students, forking each notebook's kernel ahead as
``course-grade`` does. Between phases it asks the kernel for its CPU time (a request of a few
milliseconds, counted in the phase it ends), and splits the kernel's time into: starting
(forked, imports done and preloaded, up to its first cell), the guard's baseline, the
notebook's own cells, the guard's checks after each test cell, and serving the referee. The
grading process's own CPU time and the wall time per notebook are printed beside them. The
first notebook of each lesson is left out: it pays the process's one-time costs. Not counted:
the zygote's forking and each kernel's confinement, done by its parents.

Run from the repository root (a minute or two; nothing else should be running):

    python benchmarks/bench_grading_phases.py                  # 8 students x 02 + 06
    python benchmarks/bench_grading_phases.py --students 4 --class-lessons 05_zero_grad
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

from sqlalchemy.exc import SAWarning

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from bench_autograde import CLASS_MIX  # noqa: E402
from course_utils.autograde import execute  # noqa: E402
from course_utils.autograde.parallel import worker  # noqa: E402
from course_utils.autograde.parallel.cli import find_jobs  # noqa: E402
from simulated_class import STUDENTS, make_course, run_nbgrader, write_submission  # noqa: E402

# The kernel's CPU time so far, in seconds, as a user expression.
KERNEL_CPU = "(lambda r: r.ru_utime + r.ru_stime)(__import__('resource').getrusage(0))"
PHASES = ["start and preload", "guard baseline", "own cells", "guard checks", "referee"]


class Phases:
    """CPU seconds by phase (and the grading process's, and wall seconds), summed over the
    notebooks counted."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = collections.defaultdict(float)
        self.counting = False

    def add(self, phase: str, seconds: float) -> None:
        if self.counting:
            self.seconds[phase] += seconds


def measure(phases: Phases) -> None:
    """Wraps ``SafeExecute`` so that each phase's kernel CPU time is added to ``phases``."""
    quietly, run_cell = execute.SafeExecute._quietly, execute.Execute.async_execute_cell

    async def kernel_cpu(self: Any) -> float:
        reply = await quietly(self, "", {"cpu": KERNEL_CPU})
        return float(reply["content"]["user_expressions"]["cpu"]["data"]["text/plain"])

    def phase_of(code: str, expressions: dict[str, str] | None) -> str:
        if code == execute._BASELINE:
            return "guard baseline"
        if "referee" in (expressions or {}):
            return "referee"
        return "guard checks"  # binding the graders' names, then unbinding and the check

    async def timed_quietly(self: Any, code: str, expressions: dict[str, str] | None = None,
                            timeout: float = execute._GUARD_TIMEOUT) -> Any:
        if code == execute._BASELINE:
            phases.add("start and preload", await kernel_cpu(self))
        before = await kernel_cpu(self)
        reply = await quietly(self, code, expressions, timeout)
        phases.add(phase_of(code, expressions), await kernel_cpu(self) - before)
        return reply

    async def timed_cell(self: Any, cell: Any, cell_index: int, execution_count: Any = None,
                         store_history: bool = True) -> Any:
        before = await kernel_cpu(self)
        cell = await run_cell(self, cell, cell_index, execution_count, store_history)
        phases.add("own cells", await kernel_cpu(self) - before)
        return cell

    execute.SafeExecute._quietly = timed_quietly
    execute.Execute.async_execute_cell = timed_cell


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--students", type=int, default=8, help="class size (default 8)")
    parser.add_argument("--class-lessons", nargs="+", default=["02_loss", "06_epoch_loss"],
                        help="lessons the class hands in (default: two fast lessons)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=SAWarning)  # nbgrader's gradebook code
    phases = Phases()
    measure(phases)
    here = os.getcwd()
    with tempfile.TemporaryDirectory() as folder:
        course = make_course(Path(folder) / "course")
        for lesson in args.class_lessons:
            release = run_nbgrader(course, "generate_assignment", lesson)
            if release.returncode != 0:
                raise SystemExit(f"nbgrader generate_assignment failed:\n{release.stderr}")
            for k in range(args.students):
                write_submission(course, f"s{k + 1:02d}", lesson,
                                 STUDENTS[CLASS_MIX[k % len(CLASS_MIX)]])
        jobs = find_jobs(course, args.class_lessons)
        app = worker.open_app(course, [])
        pool = worker.kernel_pool_for(app)
        if pool is None or pool.zygote is None:
            raise SystemExit("No zygote: this measures kernels forked from one.")
        try:
            worker._prepare(pool, app, jobs[0])
            for index, job in enumerate(jobs):
                # The first notebook of each lesson pays the process's one-time costs.
                phases.counting = job.lesson in {earlier.lesson for earlier in jobs[:index]}
                wall, cpu = time.perf_counter(), time.process_time()
                worker._prepare(pool, app, jobs[index + 1] if index + 1 < len(jobs) else None)
                result = worker.grade_one(app, job, pool=pool)
                if result.status != "graded" or result.kernel != "forked":
                    raise SystemExit(f"{job}: {result.status} in a kernel '{result.kernel}' "
                                     f"({result.reason})")
                if phases.counting:
                    phases.add("wall", time.perf_counter() - wall)
                    phases.add("process", time.process_time() - cpu)
        finally:
            pool.close()
            pool.zygote.close()
            os.chdir(here)
    counted = len(jobs) - len(args.class_lessons)
    print(f"\n{counted} notebooks ({args.students} students x {' + '.join(args.class_lessons)}, "
          "the first of each lesson left out), seconds per notebook:")
    for phase in PHASES:
        print(f"  kernel, {phase:<20} {phases.seconds[phase] / counted:6.3f}")
    kernel = sum(phases.seconds[phase] for phase in PHASES) / counted
    process = phases.seconds["process"] / counted
    print(f"  kernel, all                  {kernel:6.3f}")
    print(f"  grading process              {process:6.3f}")
    print(f"  CPU, both                    {kernel + process:6.3f}")
    print(f"  wall                         {phases.seconds['wall'] / counted:6.3f}")

if __name__ == "__main__":
    main()
