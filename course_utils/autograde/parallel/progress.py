"""The terminal display of a class being graded: done, failed, time left; outcomes at the end.

On a terminal one status line is redrawn in place; elsewhere (a log file, CI) each finished
submission prints a line of its own.

Example:
    >>> progress = Progress(4, stream=io.StringIO(), clock=iter([0.0, 10.0, 10.0]).__next__)
    >>> progress.status(done=1, failed=0)
    '1/4 done, 0 failed, 0:10 elapsed, about 0:30 left'
"""

from __future__ import annotations

import io
import sys
import time
from typing import Callable, TextIO

from course_utils.autograde.parallel.jobs import Result, describe


def _clock_text(seconds: float) -> str:
    minutes, seconds = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"


class Progress:
    """Counts finished submissions and shows how far grading is."""

    def __init__(self, total: int, stream: TextIO | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.total = total
        self.stream = stream or sys.stdout
        self.clock = clock
        self.start = clock()
        self.results: list[Result] = []
        self.live = bool(getattr(self.stream, "isatty", lambda: False)())

    def status(self, done: int, failed: int) -> str:
        """The status line: how many done and failed, and the time left at the pace so far."""
        elapsed = self.clock() - self.start
        left = (f"about {_clock_text(elapsed / done * (self.total - done))} left"
                if 0 < done < self.total else "finished" if done else "starting")
        return (f"{done}/{self.total} done, {failed} failed, {_clock_text(elapsed)} elapsed, "
                f"{left}")

    def _counts(self) -> tuple[int, int]:
        return len(self.results), sum(r.status == "failed" for r in self.results)

    def add(self, result: Result) -> None:
        """Records a finished submission and updates the display."""
        self.results.append(result)
        done, failed = self._counts()
        if self.live:
            self.stream.write(f"\r\033[K{self.status(done, failed)}")
        else:
            self.stream.write(f"[{done}/{self.total}] {describe(result)}  "
                              f"({self.status(done, failed)})\n")
        self.stream.flush()

    def tick(self) -> None:
        """Redraws the status line (on a terminal), so that the clock moves between results."""
        if self.live:
            self.stream.write(f"\r\033[K{self.status(*self._counts())}")
            self.stream.flush()

    def summary(self, results: list[Result], workers: int) -> str:
        """The outcome of every submission, failures last, and the totals."""
        failed = [r for r in results if r.status == "failed"]
        lines = [describe(r) for r in results if r.status != "failed"]
        lines += [describe(r) for r in failed]
        ahead = sum(r.kernel in ("ahead", "forked") for r in results)
        forked = sum(r.kernel == "forked" for r in results)
        lines.append(f"{len(results) - len(failed)} of {len(results)} submissions done in "
                     f"{self.clock() - self.start:.0f} s with {workers} grading processes, "
                     f"{ahead} in kernels started ahead, {forked} forked warm"
                     + (f"; {len(failed)} FAILED." if failed else "."))
        return ("\n" if self.live else "") + "\n".join(lines)
