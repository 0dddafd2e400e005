"""A grader's report: data first (``to_dict``), with text, HTML and a notebook display as views."""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Any

from course_utils.graders import scoring
from course_utils.protocol import REPORT_MIME, cell_points


@dataclass(frozen=True)
class CheckResult:
    """One declared check and how it went: passed, failed, or not run (counts as failed)."""

    name: str
    says: str
    weight: float
    lesson: bool
    outcome: str  # "passed", "failed" or "not run"

    @property
    def passed(self) -> bool:
        return self.outcome == "passed"


@dataclass
class Report:
    """What a grader found: the declared checks' results, diagnosis codes and feedback.

    Example:
        >>> r = Report("mse_loss", [CheckResult("value", "is the mean", 3, False, "failed"),
        ...                         CheckResult("graph", "keeps the graph", 1, False, "passed")],
        ...            codes={"wrong_reduction"}, feedback=["Your loss is a sum."])
        >>> r.passed, r.score, r.points(2), r.failed
        (False, 0.25, 0.5, ['value'])
        >>> sorted(r.to_dict())
        ['checks', 'codes', 'exercise', 'failed', 'feedback', 'passed', 'score']
    """

    exercise: str
    checks: list[CheckResult] = field(default_factory=list)
    codes: set[str] = field(default_factory=set)
    feedback: list[str] = field(default_factory=list)
    # What the student's code printed or warned while it was graded, and the codes' plain
    # names: both for people, neither part of the report's data.
    output: str = field(default="", compare=False)
    plain_names: dict[str, str] = field(default_factory=dict, repr=False, compare=False)

    @property
    def passed(self) -> bool:
        return not self.codes

    @property
    def score(self) -> float:
        """1.0 if passed, else the weighted share of passed checks (see ``scoring``)."""
        return 1.0 if self.passed else scoring.score(self.checks)

    @property
    def failed(self) -> list[str]:
        """Names of the checks that failed or could not run, in declaration order."""
        return [c.name for c in self.checks if not c.passed]

    def points(self, maximum: float) -> float:
        """Partial credit for nbgrader: ``score * maximum``, rounded to 2 decimals."""
        return cell_points([self.score], maximum)

    def to_dict(self) -> dict[str, Any]:
        """The report as plain JSON-ready data; every display of a report carries it."""
        return {
            "exercise": self.exercise,
            "passed": self.passed,
            "score": self.score,
            "codes": sorted(self.codes),
            "feedback": list(self.feedback),
            "checks": [{"name": c.name, "says": c.says, "weight": c.weight, "lesson": c.lesson,
                        "outcome": c.outcome} for c in self.checks],
            "failed": self.failed,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Report:
        """The report ``to_dict`` described (the plain names are not part of the data).

        Example:
            >>> r = Report("sgd_step", [CheckResult("value", "steps", 1, True, "not run")],
            ...            codes={"timeout"}, feedback=["Stopped."])
            >>> Report.from_dict(r.to_dict()) == r
            True
        """
        checks = [CheckResult(c["name"], c["says"], c["weight"], c["lesson"], c["outcome"])
                  for c in data["checks"]]
        return cls(data["exercise"], checks, set(data["codes"]), list(data["feedback"]))

    def _summary(self) -> str:
        if self.passed:
            return f"all {len(self.checks)} checks passed"
        passed = len(self.checks) - len(self.failed)
        return f"{passed} of {len(self.checks)} checks passed, score {self.score:.2f}"

    def __str__(self) -> str:
        lines = [f"{self.exercise}: {self._summary()}."]
        for code in sorted(self.codes):
            lines.append(f"  [{code}] {self.plain_names.get(code, code)}")
        lines += [f"- {text}" for text in self.feedback]
        return "\n".join(lines)

    __repr__ = __str__

    def _repr_html_(self) -> str:
        colour, title = ("#1a7f37", "Passed") if self.passed else ("#cf222e", "Not yet")
        items = "".join(f"<li>{_html_text(text)}</li>" for text in self.feedback)
        codes = " ".join(
            f"<code title='{html.escape(self.plain_names.get(c, c))}'>{c}</code>"
            for c in sorted(self.codes))
        return (f"<div style='border-left:4px solid {colour};padding:4px 10px'>"
                f"<b style='color:{colour}'>{title}</b> &mdash; <code>{self.exercise}</code>: "
                f"{self._summary()}. {codes}<ul style='margin:4px 0'>{items}</ul></div>")

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        """What Jupyter shows: text, HTML, and the report's data for tools."""
        return {"text/plain": str(self), "text/html": self._repr_html_(),
                REPORT_MIME: self.to_dict()}


def _html_text(text: str) -> str:
    """Escape feedback for HTML, showing `backticked` words as code and keeping line breaks."""
    parts = html.escape(text).split("`")
    out = "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))
    return out.replace("\n", "<br>")
