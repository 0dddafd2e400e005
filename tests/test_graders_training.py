"""The graders of lessons 05-09 judge real submissions by what they do, naming each mistake."""

from __future__ import annotations

import os
import re

import pytest
import torch

from course_utils.graders import Finding, grade
from catalogues import Entry
from submissions_training import SUBMISSIONS, train_one_epoch_weighted

TOY = [s for s in SUBMISSIONS if s.data == "toy"]
ENDS_EARLY = {"not_implemented", "raised_exception", "timeout"}
EXERCISES = sorted({s.exercise for s in SUBMISSIONS})


def _grade(sub: Entry, seed: int = 0):
    return grade(sub.exercise, sub.student, data=sub.data, timeout=sub.timeout, seed=seed)


# ----------------------------------------------------------------------------- evidence

def _feedback(exercise: str, name: str, seed: int = 0) -> str:
    sub = next(s for s in SUBMISSIONS if s.exercise == exercise and s.name == name)
    return "\n".join(_grade(sub, seed).feedback)


def _finding(exercise: str, name: str, code: str) -> Finding:
    sub = next(s for s in SUBMISSIONS if s.exercise == exercise and s.name == name)
    return next(f for f in _grade(sub).findings if f.code == code)


def test_accumulating_gradients_are_reported_with_both_norms():
    found = _finding("train_one_epoch", "train_one_epoch_no_zero_grad", "no_zero_grad")
    assert found.check == "gradients" and found.evidence["step"] == 2
    assert float(found.evidence["got"]) != float(found.evidence["want"])


def test_unweighted_average_names_both_means():
    found = _finding("train_one_epoch", "train_one_epoch_mean_of_batch_means",
                     "unweighted_batch_average")
    assert abs(float(found.evidence["got"]) - float(found.evidence["want"])) > 0.1


def test_missing_loss_scaling_says_how_many_times_too_large():
    found = _finding("accumulation_step", "accumulation_step_no_loss_scaling", "no_loss_scaling")
    got, want = float(found.evidence["got"]), float(found.evidence["want"])
    assert "3 times" in found.message and got == pytest.approx(3 * want, rel=1e-2)


def test_percent_accuracy_quotes_the_fraction():
    found = _finding("evaluate", "evaluate_percent", "accuracy_percent")
    got, want = float(found.evidence["got"]), float(found.evidence["want"])
    assert got == pytest.approx(100 * want, rel=1e-3)


def test_modes_are_reported_with_counts_of_forward_passes():
    assert "3 of 3 forward passes" in _feedback("evaluate", "evaluate_no_eval_mode")
    assert "3 of 3 forward passes" in _feedback("train_one_epoch", "train_one_epoch_no_train_mode")


def test_a_global_loader_is_named_as_the_likely_cause():
    text = _feedback("train_one_epoch", "train_one_epoch_global_loader")
    assert "0 of 3 batches" in text and "global" in text


def test_fit_reports_the_order_it_saw():
    text = _feedback("fit", "fit_validates_first")
    assert "validation, training, validation, training" in text


def test_exceptions_show_the_students_own_line():
    text = _feedback("train_one_epoch", "train_one_epoch_indexes_loader")
    assert "TypeError" in text and "loader[i]" in text
    places = re.findall(r"^  (\S+), line \d+", text, flags=re.MULTILINE)
    assert places == ["submissions_training.py"]  # the grader's own frames are left out


def _quotes_a_number(value: object) -> bool:
    # Numbers, and text quoting one as feedback writes them ("0.25", "3 calls", "nan").
    return not isinstance(value, bool) and bool(re.search(r"\d|nan|inf", str(value)))


def test_every_diagnosis_quotes_its_evidence():
    for sub in TOY:
        if not sub.codes or sub.codes & ENDS_EARLY:
            continue
        for found in _grade(sub).findings:
            quoted = [v for v in found.evidence.values() if str(v) in found.message]
            assert quoted, (str(sub), found)
            if found.code == "wrong_return_type":  # the evidence is what came back
                assert any(re.search(r"`None`|tensor|list|dict", str(v)) for v in quoted), found
            else:
                assert any(_quotes_a_number(v) for v in quoted), (str(sub), found)


# ----------------------------------------------------------------------------- side effects

def test_grading_writes_nothing_to_the_terminal_and_keeps_the_output(capfd):
    sub = next(s for s in SUBMISSIONS if s.name == "train_one_epoch_tqdm_device")
    report = _grade(sub)
    out, err = capfd.readouterr()
    assert (out, err) == ("", "")
    assert "training" in report.output  # the tqdm bar, captured


def test_grading_restores_global_state():
    threads = torch.get_num_threads()
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    with torch.no_grad():
        for exercise in EXERCISES:
            sub = next(s for s in TOY if s.exercise == exercise and not s.codes)
            assert _grade(sub).passed
        assert not torch.is_grad_enabled()
    assert torch.equal(torch.rand(3), expected)
    assert torch.get_num_threads() == threads


def test_a_fixed_checkpoint_file_name_does_not_litter_the_working_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sub = next(s for s in SUBMISSIONS if s.name == "fixed_file_name")
    assert _grade(sub).codes == {"wrong_value"}
    assert os.getcwd() == str(tmp_path) and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("mode", [torch.no_grad, torch.inference_mode])
def test_graders_run_with_gradients_on_whatever_the_notebook_set(mode):
    forgot_no_grad = next(s for s in SUBMISSIONS if s.name == "evaluate_with_graph")
    with mode():
        assert grade("train_one_epoch", train_one_epoch_weighted).passed
        assert _grade(forgot_no_grad).codes == {"grad_enabled_in_eval"}
