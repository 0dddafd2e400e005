"""Every submission catalogue in tests/ (modules named ``submissions_*.py``), looked up together.

A catalogue module holds a list ``SUBMISSIONS`` whose entries have ``exercise``, ``student``
and ``codes`` (empty for a correct submission), like ``submissions_basic.Submission``.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

CATALOGUE_DIR = Path(__file__).resolve().parent


def all_submissions() -> list[Any]:
    """Every entry of every catalogue, in file order."""
    entries: list[Any] = []
    for path in sorted(CATALOGUE_DIR.glob("submissions_*.py")):
        entries += getattr(importlib.import_module(path.stem), "SUBMISSIONS", [])
    return entries


def reference(exercise: str) -> Any | None:
    """The first correct submission for ``exercise``, or None when no catalogue has one."""
    return next((s.student for s in all_submissions()
                 if s.exercise == exercise and not s.codes), None)


def failing(exercise: str) -> Any | None:
    """The first buggy submission for ``exercise`` that fails quickly (toy data, no timeout)."""
    return next((s.student for s in all_submissions()
                 if s.exercise == exercise and s.codes and "timeout" not in s.codes
                 and getattr(s, "data", "toy") == "toy"), None)
