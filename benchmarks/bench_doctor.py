"""The loop doctor's cost: one MNIST epoch with the doctor watching, beside the bare loop.

Run: ``python benchmarks/bench_doctor.py [--repeats 5]``. Both train the MLP of lesson 08
(784-128-64-10) with Adam at batch size 64 for one epoch over ``mnist_loaders``; runs
alternate (bare, watched, bare, ...) so that load from other processes hits both alike.
Prints the medians and their ratio (the doctor's budget: at most 1.05).
"""

from __future__ import annotations

import argparse
import statistics

from bench_mnist_epoch import BATCH_SIZE, train_epoch

from course_utils import doctor
from course_utils.data import mnist_loaders

BUDGET = 1.05


def watched_epoch(loader) -> float:
    with doctor.watch():
        return train_epoch(loader)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="runs of each (median)")
    args = parser.parse_args()
    loader, _ = mnist_loaders(batch_size=BATCH_SIZE)
    train_epoch(loader)  # warm-up: first-touch allocations, lazy imports
    bare, watched = [], []
    for _ in range(args.repeats):
        bare.append(train_epoch(loader))
        watched.append(watched_epoch(loader))
    bare_s, watched_s = statistics.median(bare), statistics.median(watched)
    ratio = watched_s / bare_s
    print(f"bare loop         {bare_s:6.2f} s  (median of {args.repeats})")
    print(f"doctor watching   {watched_s:6.2f} s  (median of {args.repeats})")
    print(f"ratio {ratio:.3f} ({'within' if ratio <= BUDGET else 'OVER'} the budget of "
          f"{BUDGET:.2f})")


if __name__ == "__main__":
    main()
