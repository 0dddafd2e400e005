"""What every grader promises: silence, the student's tracebacks, time limits, state, reports."""

from __future__ import annotations

import functools
import math
import random
import subprocess
import sys
import warnings
from typing import Any

import numpy as np
import pytest
import torch
from tqdm import tqdm

from course_utils.graders import Report, check, exercises, grade, points
from catalogues import failing, reference
from submissions_basic import mse_by_hand, mse_endless, mse_sum


def noisy(student: Any) -> Any:
    """The same submission, but it prints, writes to stderr, warns and shows a tqdm bar first."""
    if isinstance(student, tuple):  # graded together, like the checkpoint pair
        return tuple(noisy(part) for part in student)

    def make_noise() -> None:
        print("a line the student printed")
        sys.stderr.write("a line the student wrote to stderr\n")
        warnings.warn("a warning from the student's code")
        for _ in tqdm(range(3), desc="student progress"):
            pass

    if isinstance(student, type):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            make_noise()
            student.__init__(self, *args, **kwargs)
        return type(student.__name__, (student,), {"__init__": __init__})

    @functools.wraps(student)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        make_noise()
        return student(*args, **kwargs)
    return wrapper


# ----------------------------------------------------------------------------- silence

def test_noisy_submission_is_graded_in_silence(capfd):
    report = grade("mse_loss", noisy(mse_by_hand))
    failed = grade("mse_loss", noisy(mse_sum))

    out, err = capfd.readouterr()
    assert (out, err) == ("", "")
    assert report.passed and failed.codes == {"wrong_reduction"}
    for captured in (report.output, failed.output):
        assert "a line the student printed" in captured
        assert "a line the student wrote to stderr" in captured
        assert "a warning from the student's code" in captured
        assert "student progress" in captured


@pytest.mark.parametrize("exercise", exercises())
def test_every_grader_is_silent_on_passing_and_failing_submissions(exercise, capfd):
    submissions = [(student, passes) for student, passes in
                   ((reference(exercise), True), (failing(exercise), False)) if student is not None]
    if not submissions:
        pytest.skip(f"no catalogued submission for {exercise} yet")
    for student, passes in submissions:
        assert grade(exercise, noisy(student)).passed is passes
    assert capfd.readouterr() == ("", "")


# ----------------------------------------------------------------------------- tracebacks

def _lookup(table):
    return table["weights"]


def mse_with_failing_helper(pred, target):
    return _lookup({}) * ((pred - target) ** 2).mean()


def test_exception_feedback_shows_the_students_lines_only():
    report = grade("mse_loss", mse_with_failing_helper)

    assert report.codes == {"raised_exception"} and report.score == 0
    message, *frames = report.feedback[0].splitlines()
    assert message == "Your code raised KeyError: 'weights'"
    # Only the student's two frames: none of the grader's (call_student, _grade_loss, ...).
    assert len(frames) == 2
    assert frames[0].startswith("  test_grader_core.py, line ")
    assert frames[0].endswith("in mse_with_failing_helper: "
                              "return _lookup({}) * ((pred - target) ** 2).mean()")
    assert frames[1].endswith('in _lookup: return table["weights"]')


# ----------------------------------------------------------------------------- time limit

def mse_swallowing_everything(pred, target):
    while True:
        try:
            pass
        except Exception:
            pass


@pytest.mark.parametrize("student", [mse_endless, mse_swallowing_everything])
def test_endless_code_is_stopped_and_reported(student):
    report = grade("mse_loss", student, timeout=0.2)
    assert report.codes == {"timeout"}
    assert "0.2 seconds" in report.feedback[0]


ENDLESS_WITH_FINALISERS = """
import time
from course_utils.graders import grade

class Finalised:
    def __del__(self):  # most of the loop's time runs here, where exceptions are swallowed
        end = time.perf_counter() + 0.03
        while time.perf_counter() < end:
            pass

def mse_endless_with_finalisers(pred, target):
    while True:
        Finalised()
        end = time.perf_counter() + 0.003
        while time.perf_counter() < end:
            pass

print(sorted(grade("mse_loss", mse_endless_with_finalisers, timeout=0.2).codes))
"""


def test_a_time_limit_swallowed_by_a_finaliser_still_stops_the_code():
    """Python ignores an exception raised in a finaliser, so the alarm must come again."""
    done = subprocess.run([sys.executable, "-c", ENDLESS_WITH_FINALISERS], capture_output=True,
                          text=True, timeout=120)
    assert done.stdout.strip() == "['timeout']", done.stderr[-2000:]


# ----------------------------------------------------------------------------- global state

def mse_that_changes_global_state(pred, target):
    torch.manual_seed(1234)
    np.random.seed(1234)
    random.seed(1234)
    torch.rand(5)
    torch.set_grad_enabled(False)
    torch.set_default_dtype(torch.float64)
    torch.set_num_threads(1)
    return ((pred - target) ** 2).mean()


def test_global_state_is_restored_after_grading():
    torch.manual_seed(7)
    np.random.seed(7)
    random.seed(7)
    before = (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate(),
              torch.is_grad_enabled(), torch.get_default_dtype(), torch.get_num_threads())

    grade("mse_loss", mse_that_changes_global_state)
    grade("sgd_step", reference("sgd_step"))

    after = (torch.get_rng_state(), np.random.get_state()[1], random.getstate(),
             torch.is_grad_enabled(), torch.get_default_dtype(), torch.get_num_threads())
    assert torch.equal(before[0], after[0])
    assert np.array_equal(before[1], after[1])
    assert before[2:] == after[2:]


# ----------------------------------------------------------------------------- odd values

@pytest.mark.parametrize("exercise", ["SimpleNN", "MNISTMLP", "mse_loss", "cross_entropy",
                                      "linear_mse_grads", "sgd_step"])
def test_none_instead_of_a_submission_is_a_wrong_return_type(exercise):
    report = grade(exercise, None)
    assert report.codes == {"wrong_return_type"} and report.score == 0
    assert "None" in report.feedback[0]


def mse_infinite(pred, target):
    return ((pred - target) ** 2).mean() * math.inf


def grads_infinite(w, b, x, y):
    return torch.full_like(w, -math.inf), torch.full_like(b, math.nan)


@pytest.mark.parametrize("exercise, student, code, shown", [
    ("mse_loss", mse_infinite, "wrong_value", "your loss is inf"),
    ("linear_mse_grads", grads_infinite, "wrong_gradient", "[-inf, -inf"),
])
def test_infinite_and_nan_results_are_wrong_values(exercise, student, code, shown):
    report = grade(exercise, student)
    assert report.codes == {code}
    assert shown in "\n".join(report.feedback)


# ----------------------------------------------------------------------------- reports

def test_report_text_names_score_codes_and_feedback():
    report = grade("mse_loss", mse_sum)

    text = str(report)
    assert text.startswith("mse_loss: 3 of 4 checks passed (score 0.75).")
    assert "[wrong_reduction] loss uses sum (or none) instead of the mean" in text
    assert "- For inputs of shape (8, 1)" in text
    assert str(grade("mse_loss", mse_by_hand)) == "mse_loss: all 4 checks passed."


def mse_with_markup_error(pred, target):
    raise ValueError("<b>not bold</b> & `not code`")


def test_report_html_shows_code_and_escapes_markup():
    passed = grade("mse_loss", mse_by_hand)._repr_html_()
    assert "Passed" in passed and "all 4 checks passed" in passed

    failed = grade("mse_loss", mse_sum)._repr_html_()
    assert "Not yet" in failed and "<code title=" in failed and ">wrong_reduction</code>" in failed

    html = grade("mse_loss", mse_with_markup_error)._repr_html_()
    assert "&lt;b&gt;not bold&lt;/b&gt; &amp; <code>not code</code>" in html
    assert "<b>not bold" not in html
    assert "<br>" in html  # the traceback line stays on a line of its own


def test_points_give_partial_credit(capsys):
    wrong = grade("mse_loss", mse_sum)
    right = grade("mse_loss", mse_by_hand)

    assert wrong.points(3) == 2.25 and right.points(3) == 3.0
    assert points([right, wrong], 4) == 3.0
    assert points(right, 2) == 2.0
    printed = capsys.readouterr().out
    assert printed.count("mse_loss: all 4 checks passed.") == 2
    assert "mse_loss: 3 of 4 checks passed" in printed


def test_check_raises_with_the_feedback_and_returns_the_report_on_success(capsys):
    with pytest.raises(AssertionError) as failure:
        check("mse_loss", mse_sum)
    assert str(failure.value) == "\n".join(grade("mse_loss", mse_sum).feedback)

    report = check("mse_loss", mse_by_hand)
    assert isinstance(report, Report) and report.passed
    assert capsys.readouterr().out.endswith("mse_loss: all 4 checks passed.\n")


def test_unknown_exercise_lists_the_known_ones():
    with pytest.raises(KeyError, match="mse_los'.*known exercises:.*mse_loss.*sgd_step"):
        grade("mse_los", mse_by_hand)


def test_unknown_data_choice_is_refused():
    with pytest.raises(ValueError, match="data must be 'toy' or 'mnist'"):
        grade("mse_loss", mse_by_hand, data="cifar")
