"""How long grading takes: every exercise on toy data, and `fit` on MNIST.

Run: ``python benchmarks/bench_graders.py [--repeats 5] [--only fit ...]``. Each exercise is graded with the first
correct submission of the test catalogues (``tests/submissions_*.py``, found through
``tests/catalogues.py``), so the timings cover a full, passing grading. Prints the median
seconds per grading against the goals: under 1 s on toy data, under 20 s for `fit` on MNIST.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the catalogues hold the reference submissions

from catalogues import reference  # noqa: E402
from course_utils.data import DATA_DIR, mnist_status  # noqa: E402
from course_utils.graders import exercises, grade  # noqa: E402

GOAL_SECONDS = {"toy": 1.0, "mnist": 20.0}


def time_grading(exercise: str, student: Any, data: str, repeats: int) -> tuple[float, bool]:
    """Median seconds of ``repeats`` gradings, and whether every one of them passed."""
    seconds, passed = [], True
    for _ in range(repeats):
        start = time.perf_counter()
        report = grade(exercise, student, data=data)
        seconds.append(time.perf_counter() - start)
        passed = passed and report.passed
    return statistics.median(seconds), passed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="gradings per exercise (median)")
    parser.add_argument("--mnist-repeats", type=int, default=3, help="gradings of fit on MNIST")
    parser.add_argument("--only", nargs="+", metavar="EXERCISE", choices=exercises(),
                        default=exercises(), help="time these exercises only")
    args = parser.parse_args()

    runs = [(name, "toy", args.repeats) for name in args.only]
    if "fit" in args.only:
        if all(state == "ok" for state in mnist_status(DATA_DIR).values()):
            runs.append(("fit", "mnist", args.mnist_repeats))
        else:
            print(f"MNIST is not prepared under {DATA_DIR}: `fit` on MNIST is skipped "
                  "(python -m course_utils.data prepares it).")

    print(f"{'exercise':<18} {'data':<6} {'median s':>9} {'goal s':>7}  result")
    for name, data, repeats in runs:
        student = reference(name)
        if student is None:
            print(f"{name:<18} {data:<6} {'-':>9} {GOAL_SECONDS[data]:>7g}  no correct submission "
                  "catalogued")
            continue
        median, passed = time_grading(name, student, data, repeats)
        verdict = "within goal" if median < GOAL_SECONDS[data] else "OVER GOAL"
        if not passed:
            verdict += ", but the reference submission FAILED"
        print(f"{name:<18} {data:<6} {median:>9.3f} {GOAL_SECONDS[data]:>7g}  {verdict}")


if __name__ == "__main__":
    main()
