"""Every declared exercise has a catalogue that exercises its whole declaration (fast: no grading)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from catalogues import AND_THE_REST, all_submissions
from course_utils.graders import load_exercises
from course_utils.graders.declare import GENERIC_CODES

EXERCISES = load_exercises()
SUBMISSIONS = all_submissions()
# Reported only while nbgrader autogrades, where the graders themselves are guarded.
AUTOGRADING_ONLY = {"tampered"}


def declaring(code: str) -> set[str]:
    """The exercises that declare ``code``."""
    return {name for name, exercise in EXERCISES.items() if code in exercise.plain_names}


@pytest.mark.parametrize("exercise", sorted(EXERCISES))
def test_each_exercise_has_correct_variants_and_its_stub(exercise):
    mine = [s for s in SUBMISSIONS if s.exercise == exercise]
    assert sum(s.correct for s in mine) >= 3, f"{exercise}: fewer than 3 correct variants"
    stubs = [s for s in mine if s.codes == {"not_implemented"}]
    assert any(s.expected_score() == 0.0 for s in stubs), f"{exercise}: no stub scoring 0"


@pytest.mark.parametrize("exercise", sorted(EXERCISES))
def test_each_code_an_exercise_declares_has_a_buggy_submission(exercise):
    """Its own codes among its entries; a code several exercises share, among one of theirs."""
    covered = {code: {s.exercise for s in SUBMISSIONS if code in s.codes}
               for code in EXERCISES[exercise].plain_names}
    missing = {code for code, exercises in covered.items()
               if code not in GENERIC_CODES
               and not (exercises & declaring(code) if len(declaring(code)) > 1
                        else exercise in exercises)}
    assert not missing, f"{exercise}: no catalogued submission gets {sorted(missing)}"


def test_a_code_has_one_plain_name_in_every_exercise():
    names: dict[str, set[str]] = {}
    for exercise in EXERCISES.values():
        for code, plain in exercise.plain_names.items():
            names.setdefault(code, set()).add(plain)
    assert {code: plains for code, plains in names.items() if len(plains) > 1} == {}


def test_every_generic_code_is_catalogued():
    seen = set().union(*(s.codes for s in SUBMISSIONS))
    assert set(GENERIC_CODES) - AUTOGRADING_ONLY <= seen


def test_entries_name_declared_checks_and_codes():
    for entry in SUBMISSIONS:
        assert entry.exercise in EXERCISES, entry
        assert entry.codes <= EXERCISES[entry.exercise].plain_names.keys(), entry
        assert bool(entry.codes) == bool(entry.failed_checks()), entry  # raises on unknown checks
        assert AND_THE_REST not in entry.fails[:-1], entry


def test_the_readmes_table_of_lesson_checks_matches_the_declarations():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    rows = re.findall(r"^  \| `(\w+)` \| (.+) \|$", readme, flags=re.MULTILINE)
    assert rows
    for exercise, lesson_checks in rows:
        declared = "; ".join(c.says for c in EXERCISES[exercise].checks if c.lesson)
        assert lesson_checks == declared, exercise
