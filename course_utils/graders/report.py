"""A grader's report: data first (``to_dict``), with text, HTML and a notebook display as views."""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Any, Iterable

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


@dataclass(frozen=True)
class Finding:
    """One failure: the check it failed, its diagnosis code, the feedback, and its evidence.

    ``evidence`` holds the JSON-ready values the message was filled with (``evidence.plain``).
    A report read back from its data knows its codes and feedback but not which goes with
    which: its findings carry no check, and a message of several codes carries no code.
    """

    check: str | None
    code: str | None
    message: str
    evidence: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"check": self.check, "code": self.code, "message": self.message,
                "evidence": dict(self.evidence)}


class Report:
    """What a grader found: the declared checks' results, and the findings of each failure.

    ``codes``, ``feedback``, the headline and ``passed`` all derive from ``checks`` and
    ``findings``; a report whose checks failed has findings, and one with findings has a
    failed check (unless its checks are unknown, as for a report made without grading).
    ``codes`` and ``feedback`` build the findings of a report known only as data.

    Example:
        >>> r = Report("mse_loss", [CheckResult("value", "is the mean", 3, False, "failed"),
        ...                         CheckResult("graph", "keeps the graph", 1, False, "passed")],
        ...            findings=[Finding("value", "wrong_reduction", "Your loss is a sum.",
        ...                              {"got": 6.0})])
        >>> r.passed, r.score, r.points(2), r.failed, r.codes, r.feedback
        (False, 0.25, 0.5, ['value'], {'wrong_reduction'}, ['Your loss is a sum.'])
        >>> sorted(r.to_dict())
        ['checks', 'codes', 'exercise', 'failed', 'feedback', 'passed', 'score']
    """

    def __init__(self, exercise: str, checks: Iterable[CheckResult] = (),
                 codes: Iterable[str] = (), feedback: Iterable[str] = (), output: str = "",
                 plain_names: dict[str, str] | None = None, *,
                 findings: Iterable[Finding] | None = None):
        self.exercise = exercise
        self.checks = list(checks)
        codes, feedback = set(codes), list(feedback)
        if findings is not None and (codes or feedback):
            raise ValueError("give a report's findings, or its codes and feedback, not both")
        self.findings = list(findings) if findings is not None else _findings(codes, feedback)
        # What the student's code printed or warned while it was graded, and the codes' plain
        # names: both for people, neither part of the report's data.
        self.output = output
        self.plain_names = dict(plain_names or {})
        if self.checks and bool(self.failed) != bool(self.findings):
            raise ValueError(f"{exercise}: failed checks {self.failed} disagree with the "
                             f"findings {[f.code for f in self.findings]}")

    @property
    def codes(self) -> set[str]:
        return {f.code for f in self.findings if f.code is not None}

    @property
    def feedback(self) -> list[str]:
        return [f.message for f in self.findings if f.message]

    @property
    def passed(self) -> bool:
        """Every declared check passed (a report without checks: nothing was found)."""
        return not self.failed and not self.findings

    @property
    def score(self) -> float:
        """1.0 if passed, else the weighted share of passed checks (see ``scoring``)."""
        return 1.0 if self.passed else scoring.score(self.checks)

    @property
    def failed(self) -> list[str]:
        """Names of the checks that failed or could not run, in declaration order."""
        return [c.name for c in self.checks if not c.passed]

    def __eq__(self, other: object) -> bool:
        """Reports are equal when their data (``to_dict``) is: evidence and output aside."""
        return isinstance(other, Report) and self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]

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
            ...            findings=[Finding("value", "timeout", "Stopped.", {"seconds": 10})])
            >>> Report.from_dict(r.to_dict()) == r
            True
        """
        checks = [CheckResult(c["name"], c["says"], c["weight"], c["lesson"], c["outcome"])
                  for c in data["checks"]]
        return cls(data["exercise"], checks, data["codes"], data["feedback"])

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


def _findings(codes: set[str], feedback: list[str]) -> list[Finding]:
    """The findings of a report known only by its codes and feedback."""
    if len(codes) == 1:
        code = next(iter(codes))
        return [Finding(None, code, message) for message in feedback or [""]]
    return ([Finding(None, None, message) for message in feedback]
            + [Finding(None, code, "") for code in sorted(codes)])


def _html_text(text: str) -> str:
    """Escape feedback for HTML, showing `backticked` words as code and keeping line breaks."""
    parts = html.escape(text).split("`")
    out = "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))
    return out.replace("\n", "<br>")
