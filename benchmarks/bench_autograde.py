"""Times nbgrader autograding: one student's whole course, and a class, serially and in parallel,
each protected (the course's sandbox, the default) and unprotected (``--Sandbox.enabled=False``).

Serial is nbgrader's own way, one lesson command after another (``nbgrader autograde
<lesson>``); parallel is ``course_utils.parallel_grade`` with W workers (default: one per
core). Each run starts from the same freshly released gradebook. The class mixes the simulated students of
the end-to-end test (solution, two sets of typical bugs, untouched notebook).

Run from the repository root (takes minutes; nothing else should be running):

    python benchmarks/bench_autograde.py                      # class of 20 on two fast lessons
    python benchmarks/bench_autograde.py --students 8 --class-lessons 03_backward --workers 2 3
    python benchmarks/bench_autograde.py --class-only --students 8 --workers 2
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from course_utils.parallel_grade import available_cores, find_jobs, grade_class  # noqa: E402
from simulated_class import STUDENTS, make_course, run_nbgrader, write_submission  # noqa: E402

CLASS_MIX = ["perfect", "bea", "carl", "untouched"]


def reset(course: Path, released_gradebook: Path) -> None:
    """Back to the state right after release: no grades, no autograded notebooks."""
    shutil.copy(released_gradebook, course / "gradebook.db")
    shutil.rmtree(course / "autograded", ignore_errors=True)


# nbgrader options of each protection level.
PROTECTION = {"protected": [], "unprotected": ["--Sandbox.enabled=False"]}


def serial(course: Path, lessons: list[str], options: list[str]) -> float:
    """Seconds for ``nbgrader autograde <lesson>`` over the lessons, one after another."""
    start = time.perf_counter()
    for lesson in lessons:
        run = run_nbgrader(course, "autograde", lesson, *options)
        if run.returncode != 0:
            raise RuntimeError(f"nbgrader autograde {lesson} failed:\n{run.stderr[-3000:]}")
    return time.perf_counter() - start


def parallel(course: Path, lessons: list[str], workers: int, options: list[str]) -> float:
    """Seconds for ``course_utils.parallel_grade`` over the same submissions."""
    jobs = find_jobs(course, lessons)
    start = time.perf_counter()
    results = grade_class(course, jobs, workers, nbgrader_args=options, echo=False)
    seconds = time.perf_counter() - start
    failed = [r for r in results if r.status != "graded"]
    if failed:
        raise RuntimeError(f"parallel grading failed: {failed[0].job}: {failed[0].reason}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--students", type=int, default=20, help="class size (default 20)")
    parser.add_argument("--class-lessons", nargs="+", default=["02_loss", "06_epoch_loss"],
                        help="lessons the class hands in (default: two fast lessons)")
    parser.add_argument("--workers", type=int, nargs="+", default=[available_cores()],
                        help="parallel worker counts to time (default: one per core, "
                             "%(default)s)")
    parser.add_argument("--class-only", action="store_true",
                        help="time the class only, not one student's whole course")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        course = make_course(Path(folder) / "course")
        release = run_nbgrader(course, "generate_assignment", "*")
        if release.returncode != 0:
            raise SystemExit(f"nbgrader generate_assignment failed:\n{release.stderr}")
        lessons = sorted(path.name for path in (course / "notebooks").iterdir())
        released_gradebook = Path(folder) / "released-gradebook.db"
        shutil.copy(course / "gradebook.db", released_gradebook)

        def one_student() -> None:
            for lesson in lessons:
                write_submission(course, "perfect", lesson)

        def a_class() -> None:
            for k in range(args.students):
                for lesson in args.class_lessons:
                    write_submission(course, f"s{k + 1:02d}", lesson,
                                     STUDENTS[CLASS_MIX[k % len(CLASS_MIX)]])

        rows = []
        workloads = [(f"one student, {len(lessons)} lessons", one_student, lessons),
                     (f"{args.students} students, {' + '.join(args.class_lessons)}", a_class,
                      args.class_lessons)]
        for label, hand_in, lesson_set in workloads[args.class_only:]:
            shutil.rmtree(course / "submitted", ignore_errors=True)
            hand_in()
            for protection, options in PROTECTION.items():
                reset(course, released_gradebook)
                timings = [serial(course, lesson_set, options)]
                for workers in args.workers:
                    reset(course, released_gradebook)
                    timings.append(parallel(course, lesson_set, workers, options))
                rows.append((f"{label}, {protection}", len(find_jobs(course, lesson_set)),
                             timings))
                print(f"done: {label}, {protection}", file=sys.stderr, flush=True)

    print(f"\nAutograding on {available_cores()} cores: nbgrader one notebook after another "
          "(serial) and course_utils.parallel_grade with W workers")
    header = "".join(f"{f'W={w} s':>9}{'speed-up':>9}" for w in args.workers)
    print(f"{'what':<54}{'notebooks':>10}{'serial s':>10}{header}")
    for label, notebooks, (one_by_one, *at_once) in rows:
        cells = "".join(f"{t:>9.1f}{one_by_one / t:>8.2f}x" for t in at_once)
        print(f"{label:<54}{notebooks:>10}{one_by_one:>10.1f}{cells}")
    print("\nCost of the protection (protected time / unprotected time - 1)")
    for (label, _, protected), (_, _, unprotected) in zip(rows[::2], rows[1::2]):
        ways = ["serial"] + [f"W={w}" for w in args.workers]
        costs = "  ".join(f"{way} {p / u - 1:+.0%}"
                          for way, p, u in zip(ways, protected, unprotected))
        print(f"{label.rsplit(', ', 1)[0]:<40}{costs}")


if __name__ == "__main__":
    main()
