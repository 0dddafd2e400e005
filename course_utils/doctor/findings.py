"""What the loop doctor names: each finding's code, plain name and message, and its report."""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Any

from course_utils.graders.declare import Misconception
from course_utils.graders.report import _html_text
from course_utils.protocol import REPORT_MIME

FINDINGS = {m.code: m for m in [
    Misconception(
        "no_zero_grad", "gradients never cleared, so they accumulate across steps",
        "Step {step} of `{optimizer}` used gradients that still held the previous step's: "
        "`backward()` added this batch's gradient onto the one left in `.grad` (the smallest "
        "parameter's gradient had norm {before} before this backward). Clear the gradients "
        "once per step with `optimizer.zero_grad()`, before the forward pass or after `step()`."),
    Misconception(
        "step_before_backward", "step() runs before backward()",
        "`{optimizer}.step()` ran after the forward pass but before its `backward()` (step "
        "{step}): each step applied the previous batch's gradient (nothing at first). Call "
        "`loss.backward()` first, then `optimizer.step()`."),
    Misconception(
        "backward_without_step", "gradients computed and thrown away",
        "{count} backward passes computed gradients that were cleared before any optimizer "
        "step used them (`.grad` of `{model}` was cleared between two `backward()` calls with "
        "no `step()` between): the model does not learn from them. Call `optimizer.step()` "
        "after each `backward()` (or after k of them, for deliberate accumulation), then clear."),
    Misconception(
        "training_in_eval_mode", "training steps taken with the model in evaluation mode",
        "Step {step} of `{optimizer}` trained `{model}` while it was in evaluation mode "
        "(`{model}.training` was False; its {layers} behave as at inference: no dropout, "
        "frozen batch statistics). Call `model.train()` at the start of each training epoch, "
        "after validation has put it in evaluation mode."),
    Misconception(
        "validation_in_train_mode", "validation with dropout or batch norm in training mode",
        "A pass over a loader of {batches} batches ran `{model}` under `torch.no_grad()` with "
        "no step, as validation does, but in training mode ({count} forward passes with "
        "`{model}.training` True): its {layers} drop units at random or use batch statistics, "
        "so the numbers are noisy and batch norm's running statistics change. Call "
        "`model.eval()` before validating (and `model.train()` before training again)."),
    Misconception(
        "validation_with_grad", "validation builds an autograd graph",
        "A pass over a loader of {batches} batches ran `{model}` {count} times with gradient "
        "tracking on but never called `backward()`: every forward built a graph nobody needs, "
        "costing memory and time. Wrap validation in `with torch.no_grad():` (or "
        "`torch.inference_mode()`)."),
    Misconception(
        "scheduler_per_batch", "an epoch-sized schedule stepped every batch",
        "`{scheduler}` ({size}) was stepped {count} times during one pass over a loader of "
        "{batches} batches, once per batch: a schedule sized in epochs then runs its course "
        "(learning rate now {lr}) within the first epoch. Call `scheduler.step()` once per "
        "epoch, after the epoch's batches, or size the schedule in steps."),
    Misconception(
        "scheduler_before_optimizer", "scheduler stepped before the optimizer",
        "`{scheduler}.step()` ran before `{optimizer}` had taken any step, so the schedule runs "
        "one epoch early and the first learning rate {lr0} is never used. Call "
        "`scheduler.step()` after the epoch's `optimizer.step()` calls."),
    Misconception(
        "loss_tensor_accumulated", "a running total keeps every batch's graph alive",
        "The graphs of the last {count} losses are all still alive after their `backward()`: "
        "something keeps the loss tensors (e.g. `running_loss += loss`), so memory grows "
        "with every step. Add `loss.item()` (a Python float) to running totals instead."),
    Misconception(
        "softmax_before_cross_entropy", "probabilities given to CrossEntropyLoss",
        "`{loss}` received probabilities (every row of its input is between 0 and 1 and sums "
        "to 1, e.g. {row}): it applies `log_softmax` itself, so a softmax before it squashes "
        "the gradients. Give it the raw logits (remove the softmax from the model or loop)."),
    Misconception(
        "params_not_in_optimizer", "parameters get gradients but are never updated",
        "{count} parameter tensors of `{model}` ({names}) receive gradients but belong to no "
        "optimizer that steps, so they never change. Build the optimizer from "
        "`model.parameters()` after creating every layer (or add them as a parameter group)."),
    Misconception(
        "non_finite_loss", "the loss became NaN or infinite",
        "The loss was {value} at backward pass {step} (the first non-finite one): from here "
        "on the gradients and weights become NaN. Lower the learning rate, clip gradients, or "
        "look for a log of 0 or a division by zero in the loss."),
]}


@dataclass
class Finding:
    """One mistake seen in a loop: its code and the message with its evidence."""

    code: str
    message: str

    @property
    def plain(self) -> str:
        return FINDINGS[self.code].plain


@dataclass
class DoctorReport:
    """The findings of one loop, shown like a grader's report (text, HTML and data).

    Example:
        >>> r = DoctorReport([Finding("no_zero_grad", "Step 2 used ...")])
        >>> print(r)
        loop doctor: 1 finding.
          [no_zero_grad] gradients never cleared, so they accumulate across steps
        - Step 2 used ...
        >>> r.to_dict()["codes"]
        ['no_zero_grad']
    """

    findings: list[Finding] = field(default_factory=list)

    @property
    def codes(self) -> list[str]:
        return [f.code for f in self.findings]

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data, in the shape of a grader's report's data."""
        return {"exercise": "loop doctor", "passed": not self.findings,
                "score": 0.0 if self.findings else 1.0, "codes": sorted(set(self.codes)),
                "feedback": [f.message for f in self.findings], "checks": [],
                "failed": [], "findings": [{"code": f.code, "plain": f.plain,
                                             "message": f.message} for f in self.findings]}

    def _summary(self) -> str:
        n = len(self.findings)
        return "no findings" if not n else f"{n} finding{'s' * (n > 1)}"

    def __str__(self) -> str:
        lines = [f"loop doctor: {self._summary()}."]
        lines += [f"  [{f.code}] {f.plain}" for f in self.findings]
        lines += [f"- {f.message}" for f in self.findings]
        return "\n".join(lines)

    __repr__ = __str__

    def _repr_html_(self) -> str:
        items = "".join(f"<li><code title='{html.escape(f.plain)}'>{f.code}</code> "
                        f"{_html_text(f.message)}</li>" for f in self.findings)
        return ("<div style='border-left:4px solid #9a6700;padding:4px 10px'>"
                "<b style='color:#9a6700'>Loop doctor</b> &mdash; "
                f"{self._summary()}.<ul style='margin:4px 0'>{items}</ul></div>")

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        """What Jupyter shows: text, HTML, and the report's data for tools."""
        return {"text/plain": str(self), "text/html": self._repr_html_(),
                REPORT_MIME: self.to_dict()}
