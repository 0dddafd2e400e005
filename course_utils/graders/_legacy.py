"""Graders not yet declared check by check: every ``expect`` call counts as one check of weight 1."""

from __future__ import annotations

from typing import Any, Callable, NoReturn

from course_utils.graders.declare import Exercise, Grader, Misconception
from course_utils.graders.judge import Judge, Stop
from course_utils.graders.report import CheckResult, Report

PLAIN_NAMES: dict[str, str] = {
    "wrong_output_shape": "model output has the wrong shape",
    "wrong_architecture": "model layers differ from the ones asked for",
    "softmax_in_model": "softmax inside the model instead of raw logits",
    "detached_result": "result (loss or model output) is cut off from the autograd graph",
    "wrong_gradient": "analytic gradient is wrong",
    "no_in_place_update": "parameters not updated in place",
    "gradient_ascent": "update goes up the gradient instead of down",
    "update_tracked_by_autograd": "update recorded by autograd (no torch.no_grad())",
    "none_grad_crash": "crashes on parameters without a gradient",
    "modifies_gradients": "the update changes .grad",
    "no_zero_grad": "gradients never zeroed, so they accumulate",
    "zero_grad_after_backward": "gradients zeroed between backward() and step()",
    "no_backward": "backward() never called",
    "no_step": "optimizer.step() never called",
    "step_before_backward": "step() runs before backward()",
    "loss_tensor_accumulated": "loss tensors summed instead of .item() floats",
    "returns_last_batch_loss": "returns the last batch's loss as the epoch loss",
    "unweighted_batch_average": "mean of batch means, ignoring batch sizes",
    "no_train_mode": "model not put in training mode",
    "ignores_loader": "does not iterate over the loader it was given",
    "no_loss_scaling": "micro-batch losses not divided by their number",
    "zero_grad_each_micro_batch": "gradients zeroed inside the micro-batch loop",
    "step_each_micro_batch": "step() inside the micro-batch loop",
    "no_eval_mode": "model not put in evaluation mode",
    "grad_enabled_in_eval": "evaluation builds an autograd graph (no torch.no_grad())",
    "updates_parameters": "evaluation changes the model's parameters",
    "accuracy_percent": "accuracy as a percentage instead of a fraction",
    "wrong_accuracy": "accuracy is computed wrongly",
    "history_wrong_shape": "history is not one value per epoch per key",
    "accuracy_below_threshold": "model does not reach the required accuracy",
    "optimizer_state_not_saved": "optimizer state missing from the checkpoint",
    "epoch_not_restored": "resumes at the wrong epoch",
    "resume_differs": "resumed training differs from uninterrupted training",
}


class LegacyJudge(Judge):
    """Counts each ``expect`` as a check of weight 1, as the graders did before declarations."""

    def __init__(self, exercise: Exercise, timeout: float, seed: int = 0):
        super().__init__(exercise, timeout, seed)
        self.results: list[bool] = []

    def expect(self, ok: Any, code: str, message: str) -> bool:
        ok = bool(ok)
        if not ok:
            self._record(code, message)
        self.results.append(ok)
        return ok

    def require(self, ok: Any, code: str, message: str) -> None:  # type: ignore[override]
        if not self.expect(ok, code, message):
            raise Stop

    def stop(self, code: str, message: str) -> NoReturn:
        self.expect(False, code, message)
        raise Stop

    def report(self) -> Report:
        results = [CheckResult(f"check {i}", "", 1.0, False, "passed" if ok else "failed")
                   for i, ok in enumerate(self.results, start=1)]
        return Report(self.exercise.name, results, set(self.codes), list(self.feedback),
                      self.output, self.exercise.plain_names)


class LegacyExercise(Exercise):
    """An exercise whose grader counts checks as it goes (``LegacyJudge``)."""

    def make_judge(self, timeout: float, seed: int) -> Judge:
        return LegacyJudge(self, timeout, seed)


def exercise(name: str, timeout: float = 10.0) -> Any:
    """Registers ``grader(judge, student, data=...)`` as the grader of exercise ``name``."""

    def register(grader: Grader) -> Grader:
        return LegacyExercise(name, [], [Misconception(c, p) for c, p in PLAIN_NAMES.items()],
                              timeout)(grader)

    return register


def attempt(judge: LegacyJudge, fn: Callable[..., Any], *args: Any, doing: str) -> tuple[bool, Any]:
    """Calls student code like ``judge.call``, but an exception fails only this check.

    Grading goes on after an exception so the other checks still earn partial credit;
    the untouched stub and a timeout still end the grading.

    Returns:
        ``(True, what fn returned)``, or ``(False, None)`` when it raised.
    """
    with judge.context(doing):
        try:
            return True, judge.call(fn, *args)
        except Stop:
            if judge.codes & {"not_implemented", "timeout"}:
                raise
            return False, None
