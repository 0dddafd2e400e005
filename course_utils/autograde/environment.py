"""The environment nbgrader's processes run in: this Python's scripts first on ``PATH``, and the
machine's cores shared out among grading processes.

Example:
    >>> available_cores() >= 1
    True
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

_THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def available_cores() -> int:
    """The CPU cores this process may use (fewer than the machine's under a CPU affinity mask)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def nbgrader_environment(workers: int = 1) -> dict[str, str]:
    """The environment for grading: this Python's scripts first on ``PATH`` (nbgrader runs
    ``alembic`` from there to set up a new gradebook) and, for several workers, the cores
    shared out among their kernels: PyTorch processes that each use every core slow each other
    down."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    if workers > 1:
        threads = str(max(1, available_cores() // workers))
        for variable in _THREAD_VARIABLES:
            env.setdefault(variable, threads)
    return env
