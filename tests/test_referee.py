"""The referee never lowers an honest score, and bounds a forged one by the outcomes.

Every catalogued submission of an exercise the referee checks is served in this process, as the
kernel would serve it, and judged: a correct one shows no violation; a buggy one gets a bound at
least the score its honest report earns (so protection changes no honest score), and below full
marks. The wire and the serving side are attacked with what a hostile kernel could send.
"""

from __future__ import annotations

import pytest
import torch

from catalogues import Entry, all_submissions
from course_utils.graders import load_exercises
from course_utils.autograde.referee import IN_KERNEL_ONLY, Violation, bound, probe_makers
from course_utils.autograde.sandboxed.serve import Answer, run
from course_utils.autograde.sandboxed.wire import decode, encode

PROBES = probe_makers()
# Entries graded on MNIST too: the probes are small, and the bound counts the entry's checks.
REFEREED = [entry for entry in all_submissions()
            if entry.exercise in PROBES and entry.timeout is None]


@pytest.fixture(autouse=True)
def in_a_scratch_folder(tmp_path, monkeypatch) -> None:
    """Some submissions write files where they run (a checkpoint under a fixed name)."""
    monkeypatch.chdir(tmp_path)


def violations(entry: Entry, seed: int) -> list[Violation]:
    probe = PROBES[entry.exercise](seed)
    names = probe.request["names"]
    students = entry.student if len(names) > 1 else [entry.student]
    answer = decode(run(encode(probe.request), dict(zip(names, students))))
    assert "outcome" in answer, answer
    return probe.judge(answer["outcome"])


def test_every_exercise_is_refereed_or_declared_in_kernel_only() -> None:
    for exercise, declared in load_exercises().items():
        checks = {check.name for check in declared.checks}
        assert exercise in PROBES or checks <= IN_KERNEL_ONLY.get(exercise, set()), \
            f"{exercise} has no referee probe: its points would rest on the kernel's word"


def test_every_refereed_exercise_has_correct_and_buggy_entries() -> None:
    for exercise in PROBES:
        kinds = {entry.correct for entry in REFEREED if entry.exercise == exercise}
        assert kinds == {True, False}, exercise


@pytest.mark.parametrize("seed", [11, 12])
@pytest.mark.parametrize("entry", REFEREED, ids=str)
def test_the_bound_keeps_every_honest_score(entry: Entry, seed: int) -> None:
    found = violations(entry, seed)
    limit = bound(entry.exercise, entry.data, found)
    if entry.correct:
        assert found == []
    else:
        assert limit >= entry.expected_score(), found
        named = {name for name in entry.fails if isinstance(name, str)}  # not those after a stop
        assert limit < 1.0 or named <= IN_KERNEL_ONLY.get(entry.exercise, set()), \
            f"a buggy {entry.exercise} went unseen: {entry.codes}"


def test_a_forged_full_score_for_a_loop_without_zero_grad_is_capped() -> None:
    entry = next(entry for entry in REFEREED
                 if entry.exercise == "train_step" and "no_zero_grad" in entry.codes)
    found = violations(entry, seed=5)
    assert [violation.checks for violation in found] == [("gradients",)]
    assert bound("train_step", "toy", found) == 0.5


@pytest.mark.parametrize("answer", [
    "[" * 100_000 + "]" * 100_000,  # nesting deeper than the parser allows
    '{"__tensor__": ["object", [1], "AA=="]}',  # a dtype the wire does not carry
    '{"__tensor__": ["float32", [3], "AAAA"]}',  # fewer bytes than the shape needs
    "x" * 20_000_001,  # longer than an answer may be
    '{"__tensor__": ["float32", [1], "not base64!"]}',
])
def test_a_malformed_answer_is_refused_not_parsed(answer: str) -> None:
    with pytest.raises(ValueError):
        decode(answer)


def test_an_answer_can_carry_no_code_to_run() -> None:
    pickled = __import__("pickle").dumps(torch.ones(1))
    with pytest.raises(ValueError):
        decode(pickled.decode("latin-1"))
    assert Answer("{}")._repr_json_() == {"answer": "{}"}


def test_a_kernel_without_the_function_says_so() -> None:
    probe = PROBES["mse_loss"](0)
    assert decode(run(encode(probe.request), {})) == {"missing": "mse_loss"}
