"""Times autograding a class three ways: nbgrader serial, the course's grader, and the floor.

- **nbgrader serial**: ``nbgrader autograde <lesson>`` for each lesson, one after another, with
  the course's configuration (sandboxed kernels), as an instructor runs it without help.
- **course grader**: ``course_utils.autograde.parallel.cli`` with W grading processes (default:
  one per core), the same protections on.
- **floor**: the notebooks' own cells (the autograded notebooks, hidden tests included) run one
  after another in one already-warm kernel (torch, matplotlib and the graders imported, one
  notebook run before timing starts): what grading would cost with no kernel, process or
  import paid per notebook, and no parallelism.

Each grading run starts from the same freshly released gradebook, and the course grader's
per-cell scores are checked against serial nbgrader's. The class mixes the simulated students
of the end-to-end test (solution, two sets of typical bugs, untouched notebook).
``--protection-cost`` also times both graders with ``--Sandbox.enabled=False``.

Run from the repository root (takes minutes; nothing else should be running):

    python benchmarks/bench_autograde.py                         # 20 students, 2 fast lessons
    python benchmarks/bench_autograde.py --students 8 --workers 1 2
    python benchmarks/bench_autograde.py --one-student --protection-cost
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from course_utils.autograde.parallel.jobs import failure_reason  # noqa: E402
from course_utils.autograde.kernels.pool import PRELOAD  # noqa: E402
from course_utils.autograde.environment import available_cores  # noqa: E402
from course_utils.autograde.parallel.cli import find_jobs, grade_class  # noqa: E402
from simulated_class import (STUDENTS, gradebook_cells, make_course, run_nbgrader,  # noqa: E402
                             write_submission)

CLASS_MIX = ["perfect", "bea", "carl", "untouched"]
UNPROTECTED = ["--Sandbox.enabled=False"]


def reset(course: Path, released_gradebook: Path) -> None:
    """Back to the state right after release: no grades, no autograded notebooks."""
    shutil.copy(released_gradebook, course / "gradebook.db")
    shutil.rmtree(course / "autograded", ignore_errors=True)


def serial(course: Path, lessons: list[str], options: list[str]) -> float:
    """Seconds for ``nbgrader autograde <lesson>`` over the lessons, one after another."""
    start = time.perf_counter()
    for lesson in lessons:
        run = run_nbgrader(course, "autograde", lesson, *options)
        if run.returncode != 0:  # reported, and its scores compared as they are
            failed = re.findall(r"error processing assignment '[^']+' for student '([^']+)'",
                                run.stderr)
            print(f"nbgrader autograde {lesson} failed for {failed}: "
                  f"{failure_reason(run.stderr)}", file=sys.stderr, flush=True)
    return time.perf_counter() - start


def course_grader(course: Path, lessons: list[str], workers: int, options: list[str]) -> float:
    """Seconds for ``course_utils.autograde.parallel.cli`` over the same submissions."""
    jobs = find_jobs(course, lessons)
    start = time.perf_counter()
    results = grade_class(course, jobs, workers, nbgrader_args=options, echo=False)
    seconds = time.perf_counter() - start
    for result in results:
        if result.status != "graded":  # reported, and its scores compared as they are
            print(f"course grader: {result.job} {result.status}: {result.reason}",
                  file=sys.stderr, flush=True)
    return seconds


def execute(client: NotebookClient) -> None:
    """Runs the client's notebook in its kernel, which stays up for the next."""
    client.execute()
    client.kc.stop_channels()


def floor(course: Path, lessons: list[str]) -> float:
    """Seconds to run the autograded notebooks' cells in one warm kernel, one after another."""
    notebooks = sorted(path for lesson in lessons
                       for path in (course / "autograded").glob(f"*/{lesson}/{lesson}.ipynb"))
    manager = KernelManager(kernel_name="python3")
    with tempfile.TemporaryDirectory() as folder:
        manager.start_kernel(cwd=folder, env={**os.environ, "NBGRADER_EXECUTION": "autograde"})
        try:
            def run(path: Path) -> float:
                notebook = nbformat.read(path, as_version=4)
                for cell in notebook.cells:
                    cell.outputs = [] if cell.cell_type == "code" else cell.get("outputs")
                client = NotebookClient(notebook, km=manager, timeout=600, allow_errors=True,
                                        resources={"metadata": {"path": folder}})
                start = time.perf_counter()
                execute(client)
                seconds = time.perf_counter() - start
                execute(NotebookClient(nbformat.v4.new_notebook(cells=[
                    nbformat.v4.new_code_cell("%reset -f")]), km=manager))
                return seconds

            execute(NotebookClient(nbformat.v4.new_notebook(cells=[
                nbformat.v4.new_code_cell(PRELOAD)]), km=manager))
            run(notebooks[0])
            return sum(run(path) for path in notebooks)
        finally:
            manager.shutdown_kernel(now=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--students", type=int, default=20, help="class size (default 20)")
    parser.add_argument("--class-lessons", nargs="+", default=["02_loss", "06_epoch_loss"],
                        help="lessons the class hands in (default: two fast lessons)")
    parser.add_argument("--workers", type=int, nargs="+", default=[available_cores()],
                        help="grading processes of the course grader to time (default: one "
                             "per core, %(default)s)")
    parser.add_argument("--one-student", action="store_true",
                        help="also time one student's whole course (every lesson)")
    parser.add_argument("--protection-cost", action="store_true",
                        help="also time both graders without the sandbox")
    parser.add_argument("--no-serial", action="store_true",
                        help="skip serial nbgrader (no speed-up, no score comparison)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        course = make_course(Path(folder) / "course")
        released = sorted({path.parent.name for path in (course / "solutions").glob("*/*.ipynb")}
                          if args.one_student else set(args.class_lessons))
        for lesson in released:
            release = run_nbgrader(course, "generate_assignment", lesson)
            if release.returncode != 0:
                raise SystemExit(f"nbgrader generate_assignment failed:\n{release.stderr}")
        released_gradebook = Path(folder) / "released-gradebook.db"
        shutil.copy(course / "gradebook.db", released_gradebook)

        def one_student() -> None:
            for lesson in released:
                write_submission(course, "perfect", lesson)

        def a_class() -> None:
            for k in range(args.students):
                for lesson in args.class_lessons:
                    write_submission(course, f"s{k + 1:02d}", lesson,
                                     STUDENTS[CLASS_MIX[k % len(CLASS_MIX)]])

        workloads = [(f"{args.students} students x {len(args.class_lessons)} lessons", a_class,
                      args.class_lessons)]
        if args.one_student:
            workloads.insert(0, (f"one student x {len(released)} lessons", one_student,
                                 released))
        protections = [("protected", [])] + ([("unprotected", UNPROTECTED)]
                                             if args.protection_cost else [])
        rows = []
        for label, hand_in, lessons in workloads:
            shutil.rmtree(course / "submitted", ignore_errors=True)
            hand_in()
            notebooks = len(find_jobs(course, lessons))
            gradebook = course / "gradebook.db"
            for protection, options in protections:
                serial_s, serial_scores = None, None
                if not args.no_serial:
                    reset(course, released_gradebook)
                    serial_s = serial(course, lessons, options)
                    serial_scores = gradebook_cells(gradebook)
                graders = []
                for workers in args.workers:
                    reset(course, released_gradebook)
                    seconds = course_grader(course, lessons, workers, options)
                    same = None if serial_scores is None else gradebook_cells(gradebook) == serial_scores
                    graders.append((workers, seconds, same))
                floor_s = floor(course, lessons)
                rows.append((f"{label}, {protection}", notebooks, serial_s, graders, floor_s))
                print(f"done: {label}, {protection}", file=sys.stderr, flush=True)

    load = os.getloadavg()
    print(f"\nAutograding on {available_cores()} cores (load average at the end "
          f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}). Seconds for the whole class; per "
          "notebook in brackets.")
    for label, notebooks, serial_s, graders, floor_s in rows:
        per = floor_s / notebooks
        print(f"\n{label}: {notebooks} notebooks")
        print(f"  floor (own cells, one warm kernel) {floor_s:8.1f} s  [{per:5.2f} s]")
        if serial_s is not None:
            print(f"  nbgrader serial                    {serial_s:8.1f} s  "
                  f"[{serial_s / notebooks:5.2f} s]  {serial_s / floor_s:5.2f}x the floor")
        for workers, seconds, same in graders:
            speed = f"  {serial_s / seconds:5.2f}x faster than serial" if serial_s else ""
            scores = {True: ", per-cell scores equal serial's",
                      False: ", per-cell scores DIFFER from serial's", None: ""}[same]
            print(f"  course grader, {workers} process{'es' if workers > 1 else '  '}     "
                  f"{seconds:8.1f} s  [{seconds / notebooks:5.2f} s]  "
                  f"{seconds / floor_s:5.2f}x the floor (process time "
                  f"{seconds * workers / floor_s:4.2f}x){speed}{scores}")
    if args.protection_cost:
        print("\nCost of the protection (protected time / unprotected time - 1)")
        for protected, unprotected in zip(rows[::2], rows[1::2]):
            costs = [f"serial {protected[2] / unprotected[2] - 1:+.0%}"] if protected[2] else []
            costs += [f"{w} processes {p / u - 1:+.0%}"
                      for (w, p, _), (_, u, _) in zip(protected[3], unprotected[3])]
            print(f"  {protected[0].rsplit(', ', 1)[0]:<40}{'  '.join(costs)}")


if __name__ == "__main__":
    main()
