"""What every grader promises: silence, the student's tracebacks, time limits, state, reports."""

from __future__ import annotations

import contextlib
import functools
import json
import math
import random
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import nbformat

import numpy as np
import pytest
import torch
from tqdm import tqdm

from course_utils.graders import (REPORT_MIME, Check, CheckFailed, Exercise, Judge,
                                  Misconception, NoPoints, Report, Stop, check, exercises, generic,
                                  grade, load_exercises, points)
from course_utils.graders.report import CheckResult
from course_utils.graders.scoring import LESSON_CAP
from catalogues import failing, reference
from submissions_basic import ce_sum, mse_by_hand, mse_endless, mse_stub, mse_sum


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
    (found,) = report.findings
    assert found.evidence["error"] == "KeyError: 'weights'"
    assert found.message.startswith("Your code raised KeyError: 'weights'\n")
    frames = found.evidence["where"].splitlines()
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
    assert report.findings[0].evidence["seconds"] == 0.2


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

@pytest.mark.parametrize("exercise", exercises())
def test_none_instead_of_a_submission_is_a_wrong_return_type(exercise):
    report = grade(exercise, None)
    assert report.codes == {"wrong_return_type"} and report.score == 0
    assert report.findings[0].evidence == {"name": exercise}


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


def sgd_with_its_own_none_error(params, lr):
    raise ValueError("'NoneType' object has no attribute 'grad'")


def train_step_with_its_own_autograd_error(model, inputs, targets, loss_fn, optimizer):
    raise RuntimeError("one of the variables needed for gradient computation has been "
                       "modified by an inplace operation")


@pytest.mark.parametrize("exercise, student", [
    ("sgd_step", sgd_with_its_own_none_error),
    ("train_step", train_step_with_its_own_autograd_error),
])
def test_known_errors_are_recognised_by_type_and_origin_not_by_their_text(exercise, student):
    # The text of autograd's and of a None gradient's error, raised by the student's own code.
    report = grade(exercise, student)
    assert report.codes == {"raised_exception"}
    assert report.findings[0].evidence["error"].startswith(("ValueError", "RuntimeError"))


# ----------------------------------------------------------------------------- reports

def test_report_text_names_score_codes_and_feedback():
    report = grade("mse_loss", mse_sum)

    text = str(report)
    assert text.startswith(f"mse_loss: 3 of 4 checks passed, score {report.score:.2f}.")
    assert "[wrong_reduction] loss uses sum (or none) instead of the mean" in text
    assert "- For inputs of shape (8, 1)" in text
    assert str(grade("mse_loss", mse_by_hand)) == "mse_loss: all 4 checks passed."


def test_report_data_has_the_agreed_keys_and_every_display_carries_it():
    report = grade("cross_entropy", ce_sum)
    data = report.to_dict()

    assert list(data) == ["exercise", "passed", "score", "codes", "feedback", "checks", "failed"]
    assert (data["exercise"], data["passed"], data["score"]) == ("cross_entropy", False,
                                                                 report.score)
    assert data["codes"] == sorted(report.codes) and data["feedback"] == report.feedback
    assert data["failed"] == ["value"]
    assert [c["name"] for c in data["checks"]] == ["tensor", "scalar", "value", "graph", "stable"]
    json.dumps(data)  # plain data
    bundle = report._repr_mimebundle_()
    assert set(bundle) == {"text/plain", "text/html", REPORT_MIME}
    assert bundle[REPORT_MIME] == data and bundle["text/plain"] == str(report)
    assert Report.from_dict(data) == report


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


def test_points_show_each_report_and_the_points_line(capsys):
    wrong = grade("mse_loss", mse_sum)
    right = grade("mse_loss", mse_by_hand)

    assert wrong.points(3) == round(3 * wrong.score, 2) and right.points(3) == 3.0
    assert points([right, wrong], 4) == wrong.points(4)
    assert points(right, 2) == 2.0
    printed = capsys.readouterr().out
    assert printed.count("mse_loss: all 4 checks passed.") == 2
    assert f"{wrong.points(4):g} / 4 points\n" in printed and "2 / 2 points\n" in printed


def test_points_of_zero_raise_naming_the_exercise_and_diagnosis_after_showing_reports(capsys):
    stub = grade("mse_loss", mse_stub)
    with pytest.raises(NoPoints) as failure:
        points([grade("mse_loss", mse_by_hand), stub], 2)
    assert isinstance(failure.value, AssertionError)
    message = str(failure.value)
    assert message.startswith("`mse_loss` earns 0 of 2 points: [not_implemented] This exercise")
    assert failure.value._render_traceback_() == [f"\x1b[0;31mNoPoints\x1b[0m: {message}"]
    printed = capsys.readouterr().out
    assert "mse_loss: all 4 checks passed." in printed and "[not_implemented]" in printed
    assert printed.endswith("0 / 2 points\n")


def test_check_shows_the_report_and_raises_with_the_feedback(capsys):
    with pytest.raises(CheckFailed) as failure:
        check("mse_loss", mse_sum)
    assert isinstance(failure.value, AssertionError)
    assert str(failure.value) == "\n".join(grade("mse_loss", mse_sum).feedback)
    (line,) = failure.value._render_traceback_()
    assert "`mse_loss` is not right yet: 1 problem (wrong_reduction), explained above." in line
    assert "[wrong_reduction]" in capsys.readouterr().out

    assert check("mse_loss", mse_by_hand) is None  # shown once: nothing left to show as a value
    assert capsys.readouterr().out == "mse_loss: all 4 checks passed.\n"


def test_unknown_exercise_lists_the_known_ones():
    with pytest.raises(KeyError, match="mse_los'.*known exercises:.*mse_loss.*sgd_step"):
        grade("mse_los", mse_by_hand)


def test_unknown_data_choice_is_refused():
    with pytest.raises(ValueError, match="data must be 'toy' or 'mnist'"):
        grade("mse_loss", mse_by_hand, data="cifar")


# ----------------------------------------------------------------------------- declared checks

DEMO = Exercise("demo_half", [Check("type", "returns a float"),
                              Check("value", "halves its input", weight=2, lesson=True),
                              Check("sign", "keeps the sign")])


WRONG = generic("wrong_value", "{name} is wrong")


def judged(*steps: tuple[str, bool]) -> Report:
    judge = Judge(DEMO, timeout=1)
    for name, ok in steps:
        judge.check(name, ok, WRONG, name=name)
    return judge.report()


def test_score_is_the_weighted_share_of_declared_checks_with_the_lesson_cap():
    assert judged(("type", True), ("value", True), ("sign", True)).score == 1.0
    assert judged(("type", True), ("value", True), ("sign", False)).score == 0.75
    # The lesson check failed: 2 of 4 weight passed, and the cap holds it at LESSON_CAP anyway.
    assert judged(("type", True), ("value", False), ("sign", True)).score == min(0.5, LESSON_CAP)


def test_a_check_that_could_not_run_counts_as_failed():
    report = judged(("type", False))
    assert [c.outcome for c in report.checks] == ["failed", "not run", "not run"]
    assert report.failed == ["type", "value", "sign"] and report.score == 0.0
    with pytest.raises(RuntimeError, match="value, sign were never judged"):
        judged(("type", True))  # a grader that skips checks without a failure has a bug
    stopped = Judge(DEMO, timeout=1)
    stopped.check("type", True)
    with contextlib.suppress(Stop):
        stopped.call(lambda: 1 / 0)
    report = stopped.report()
    assert report.codes == {"raised_exception"}
    assert [c.outcome for c in report.checks] == ["passed", "failed", "not run"]
    assert report.score == 0.25


def test_a_check_passes_only_if_every_judgement_of_it_passes():
    report = judged(("type", True), ("type", False), ("type", True))
    assert report.checks[0].outcome == "failed"


def test_graders_cannot_judge_undeclared_checks_or_report_undeclared_codes():
    judge = Judge(DEMO, timeout=1)
    with pytest.raises(KeyError, match="declares no check 'size'"):
        judge.check("size", True)
    with pytest.raises(ValueError, match="does not declare the code 'softmax_in_model'"):
        judge.check("type", False, Misconception("softmax_in_model", "softmax", "..."))
    with pytest.raises(ValueError, match="type failed without a misconception"):
        judge.check("type", False)


def test_each_failure_is_a_finding_from_which_codes_feedback_and_passed_derive():
    judge = Judge(DEMO, timeout=1)
    judge.check("type", True)
    judge.fail("value", WRONG, name="value")
    judge.check("sign", torch.tensor(-1.0) > 0, WRONG, name=torch.tensor(2.5))
    report = judge.report()
    assert [f.to_dict() for f in report.findings] == [
        {"check": "value", "code": "wrong_value", "message": "value is wrong",
         "evidence": {"name": "value"}},
        {"check": "sign", "code": "wrong_value", "message": "2.5 is wrong",
         "evidence": {"name": 2.5}}]
    assert report.codes == {"wrong_value"} and not report.passed
    assert report.feedback == ["value is wrong", "2.5 is wrong"]
    json.dumps([f.to_dict() for f in report.findings])
    # Failed checks and findings cannot disagree.
    with pytest.raises(ValueError, match="disagree"):
        Report("demo_half", report.checks)
    with pytest.raises(ValueError, match="disagree"):
        Report("demo_half", [CheckResult("type", "", 1, False, "passed")],
               findings=report.findings)


def test_every_exercise_declares_checks_and_plain_names_for_its_codes():
    declared = load_exercises()
    assert set(declared) == set(exercises())
    for exercise in declared.values():
        assert exercise.grader is not None
        assert all(exercise.plain_names.values())


# ----------------------------------------------------------------------------- in a kernel

KERNEL_CELLS = [
    "from course_utils.graders import check, grade, points\n"
    "def mse_sum(p, t):\n    return ((p - t) ** 2).sum()\n"
    "def mse_stub(p, t):\n    raise NotImplementedError()",
    'check("mse_loss", mse_sum);',
    'check("mse_loss", lambda p, t: ((p - t) ** 2).mean())',
    'grade("mse_loss", mse_sum)',
    'points([grade("mse_loss", mse_sum)], 2)',
    'points([grade("mse_loss", mse_stub)], 2)',
]


@pytest.mark.slow
def test_in_a_kernel_reports_are_shown_once_with_their_data_and_errors_are_one_line():
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in KERNEL_CELLS])
    env_root = str(Path(__file__).resolve().parents[1])
    nbclient.NotebookClient(nb, timeout=120, allow_errors=True, resources={
        "metadata": {"path": env_root}}).execute()
    failing, passing, value, partial, zero = (cell.outputs for cell in nb.cells[1:])

    def kinds(outputs):
        return [o.output_type for o in outputs]

    assert kinds(failing) == ["display_data", "error"]
    assert failing[0].data[REPORT_MIME]["codes"] == ["wrong_reduction"]
    assert failing[1].ename == "CheckFailed" and len(failing[1].traceback) == 1
    assert "explained above" in failing[1].traceback[0]
    assert kinds(passing) == ["display_data"]  # shown once, though it ends the cell
    assert passing[0].data[REPORT_MIME]["passed"] is True
    assert kinds(value) == ["execute_result"] and REPORT_MIME in value[0].data
    assert kinds(partial) == ["display_data", "stream", "execute_result"]
    score = partial[0].data[REPORT_MIME]["score"]
    assert partial[1].text == f"{round(2 * score, 2):g} / 2 points\n"
    assert float(partial[2].data["text/plain"]) == round(2 * score, 2)
    assert kinds(zero) == ["display_data", "stream", "error"]
    assert zero[2].ename == "NoPoints" and "`mse_loss` earns 0 of 2 points" in zero[2].evalue
    assert len(zero[2].traceback) == 1


# ----------------------------------------------------------------------------- README example

README_GRADING = """
import sys
sys.path.insert(0, sys.argv[1])
import relu_grader
from course_utils.graders import grade

def relu_stub(x):
    raise NotImplementedError()

for student in (lambda x: x.clamp(min=0), lambda x: x.clamp(max=0), relu_stub,
                lambda x: torch.relu(x).detach()):
    report = grade("relu", student)
    print(sorted(report.codes), report.failed, report.score)
"""


def test_the_readme_example_of_adding_an_exercise_works(tmp_path):
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("## Adding an exercise", 1)[1]
    (tmp_path / "relu_grader.py").write_text(section.split("```python\n")[1].split("```")[0])
    done = subprocess.run([sys.executable, "-c", "import torch\n" + README_GRADING,
                           str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines() == [
        "[] [] 1.0",
        "['negative_part'] ['value'] 0.5",
        "['not_implemented'] ['tensor', 'value', 'graph'] 0.0",
        "['detached_result'] ['graph'] 0.75",
    ]
