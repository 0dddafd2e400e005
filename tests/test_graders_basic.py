"""The lesson 01-04 catalogue names the evidence of every mistake (its grades are checked in
test_graders.py)."""

from __future__ import annotations

from submissions_basic import SUBMISSIONS


def test_every_buggy_submission_names_its_evidence():
    assert all(s.evidence for s in SUBMISSIONS if not s.correct)
