"""The mistakes report: how many students made each misconception, per exercise, after autograding.

Reads the reports the graders showed in the test cells of ``autograded/*/<lesson>/*.ipynb``
(their data, under the MIME type ``application/vnd.course-report+json``), prints a table, and
writes ``mistakes.csv``, ``not_graded.csv`` and a bar chart ``mistakes.png``.

Example:
    $ course-mistakes --lesson 06_epoch_loss --out mistakes
"""

from __future__ import annotations

import argparse
import csv
import sys
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
from nbformat import NotebookNode

from course_utils.graders import Report, plain_names
from course_utils.protocol import REPORT_MIME, exercise_of, is_test_cell


def reports_in(cell: NotebookNode) -> list[Report]:
    """The grader reports a cell displayed, read from their data.

    Example:
        >>> from nbformat.v4 import new_code_cell, new_output
        >>> report = Report("mse_loss", codes={"wrong_reduction"}, feedback=["A sum."])
        >>> shown = new_output("display_data", data=report._repr_mimebundle_())
        >>> [r.codes for r in reports_in(new_code_cell(outputs=[shown]))]
        [{'wrong_reduction'}]
    """
    return [Report.from_dict(output["data"][REPORT_MIME]) for output in cell.get("outputs", [])
            if REPORT_MIME in output.get("data", {})]


def cell_error(cell: NotebookNode) -> str | None:
    """The error a code cell ended with, as ``"Name: message"``, or None."""
    errors = [output for output in cell.get("outputs", []) if output.output_type == "error"]
    if not errors:
        return None
    return "; ".join(f"{e.ename}: {e.evalue}" if e.evalue else e.ename for e in errors)


@dataclass
class Outcome:
    """What the test cell of one exercise found in one student's notebook."""

    student: str
    lesson: str
    exercise: str
    reports: list[Report]
    problem: str | None = None  # why there is no report

    @property
    def codes(self) -> set[str]:
        return {code for report in self.reports for code in report.codes}


def notebook_outcomes(notebook: NotebookNode, student: str, lesson: str) -> list[Outcome]:
    """One outcome per test cell of an autograded notebook."""
    outcomes = []
    earlier_error = None
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        if not is_test_cell(cell):
            earlier_error = earlier_error or cell_error(cell)  # the first error explains the rest
            continue
        grade_id = cell.metadata["nbgrader"].get("grade_id", "?")
        exercise = exercise_of(cell.source) or grade_id
        reports = [r for r in reports_in(cell) if r.exercise == exercise]
        problem = None
        if not reports:
            problem = f"the test cell showed no report ({cell_error(cell) or 'no error shown'})"
            if earlier_error:
                problem += f" after an earlier cell raised {earlier_error}"
        outcomes.append(Outcome(student, lesson, exercise, reports, problem))
        earlier_error = None
    return outcomes


@dataclass
class ClassResults:
    """Outcomes of every graded test cell, and the submissions that could not be graded."""

    outcomes: list[Outcome] = field(default_factory=list)
    not_graded: list[tuple[str, str, str]] = field(default_factory=list)  # student, lesson, why

    def exercises(self) -> list[tuple[str, str]]:
        """(lesson, exercise) pairs in lesson order, exercises in notebook order."""
        seen: dict[tuple[str, str], None] = {}
        for outcome in sorted(self.outcomes, key=lambda o: o.lesson):
            seen.setdefault((outcome.lesson, outcome.exercise), None)
        return list(seen)

    def counts(self, lesson: str, exercise: str) -> tuple[int, int, dict[str, list[str]]]:
        """Students graded, students who passed, and the students behind each code."""
        graded = [o for o in self.outcomes
                  if (o.lesson, o.exercise) == (lesson, exercise) and o.reports]
        by_code: dict[str, list[str]] = {}
        for outcome in graded:
            for code in outcome.codes:
                by_code.setdefault(code, []).append(outcome.student)
        passed = sum(all(r.passed for r in o.reports) for o in graded)
        ranked = dict(sorted(by_code.items(), key=lambda item: (-len(item[1]), item[0])))
        return len(graded), passed, ranked

    def plain_names(self) -> dict[str, str]:
        """The plain name of each code the reports carry."""
        known = plain_names()
        return {code: known.get(code, code) for o in self.outcomes for code in o.codes}


def lessons_in(course: Path) -> list[str]:
    """Every lesson that has a submitted or autograded notebook."""
    return sorted({path.name for folder in ("submitted", "autograded")
                   for path in (course / folder).glob("*/*") if path.is_dir()})


def collect(course: Path, lessons: list[str] | None = None) -> ClassResults:
    """Reads the autograded notebooks of ``lessons`` (all by default) under ``course``."""
    results = ClassResults()
    for lesson in sorted(lessons or lessons_in(course)):
        students = sorted({path.parent.name for folder in ("submitted", "autograded")
                           for path in (course / folder).glob(f"*/{lesson}")})
        for student in students:
            graded = sorted((course / "autograded" / student / lesson).glob("*.ipynb"))
            if not graded:
                results.not_graded.append((student, lesson, _why_not_graded(
                    course / "submitted" / student / lesson)))
            for path in graded:
                try:
                    notebook = nbformat.read(path, as_version=4)
                except Exception as error:  # noqa: BLE001  (any unreadable file is reported)
                    results.not_graded.append((student, lesson, f"{path.name}: {error}"))
                    continue
                for outcome in notebook_outcomes(notebook, student, lesson):
                    results.outcomes.append(outcome)
                    if outcome.problem:
                        results.not_graded.append(
                            (student, lesson, f"{outcome.exercise}: {outcome.problem}"))
    return results


def _why_not_graded(submitted: Path) -> str:
    notebooks = sorted(submitted.glob("*.ipynb"))
    if not notebooks:
        return "no notebook was submitted"
    for path in notebooks:
        try:
            nbformat.read(path, as_version=4)
        except Exception as error:  # noqa: BLE001
            reason = "is not valid JSON" if isinstance(error, ValueError) else "is unreadable"
            return f"{path.name} {reason} ({type(error).__name__}), so nbgrader could not grade it"
    return "autograding failed or has not run yet: see nbgrader's output for this student"


def format_report(results: ClassResults) -> str:
    """The report as plain text, one block per lesson."""
    lines = []
    current = None
    plain = results.plain_names()
    width = max(map(len, plain), default=0)
    for lesson, exercise in results.exercises():
        if lesson != current:
            current = lesson
            lines.append(f"\n{lesson}")
        graded, passed, by_code = results.counts(lesson, exercise)
        lines.append(f"  {exercise}: {passed} of {graded} students passed")
        for code, students in by_code.items():
            lines.append(f"    {len(students):3d}  {code:<{width}}  {plain[code]}")
    if not results.outcomes:
        lines.append("No autograded notebooks found: run `nbgrader autograde <lesson>` first.")
    if results.not_graded:
        lines.append("\nCould not be graded")
        for student, lesson, why in results.not_graded:
            lines.append(f"  {student} ({lesson}): {why}")
    return "\n".join(lines).lstrip("\n")


def write_csv(results: ClassResults, out: Path) -> tuple[Path, Path]:
    """Writes ``mistakes.csv`` (one row per exercise and code) and ``not_graded.csv``."""
    out.mkdir(parents=True, exist_ok=True)
    mistakes, not_graded = out / "mistakes.csv", out / "not_graded.csv"
    plain = results.plain_names()
    with mistakes.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["lesson", "exercise", "code", "plain_name", "students", "graded",
                         "student_ids"])
        for lesson, exercise in results.exercises():
            graded, _, by_code = results.counts(lesson, exercise)
            for code, students in by_code.items():
                writer.writerow([lesson, exercise, code, plain[code], len(students), graded,
                                 " ".join(students)])
    with not_graded.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["student_id", "lesson", "reason"])
        writer.writerows(results.not_graded)
    return mistakes, not_graded


def draw_chart(results: ClassResults, path: Path) -> Path:
    """Draws one horizontal bar per (exercise, misconception): the number of students."""
    from matplotlib.figure import Figure  # only needed here; keeps the text report quick

    plain = results.plain_names()
    bars = [(f"{exercise}: {plain[code]} ({code})", len(students), graded)
            for lesson, exercise in results.exercises()
            for graded, _, by_code in [results.counts(lesson, exercise)]
            for code, students in by_code.items()]
    figure = Figure(figsize=(12, 1.2 + 0.35 * max(len(bars), 1)), layout="constrained")
    axes = figure.add_subplot()
    if bars:
        labels, counts, graded = zip(*reversed(bars))  # first exercise on top
        axes.barh(labels, counts, color="#cf222e")
        for y, (count, of) in enumerate(zip(counts, graded)):
            axes.text(count, y, f" {count} of {of}", va="center")
        axes.set_xlim(0, max(graded) * 1.1)
        axes.set_xlabel("students")
        axes.xaxis.get_major_locator().set_params(integer=True)
    else:
        axes.text(0.5, 0.5, "No mistakes found", ha="center", va="center")
        axes.set_axis_off()
    students = len({o.student for o in results.outcomes})
    figure.suptitle(f"Misconceptions found by the graders ({students} students)")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    return path


def main(argv: list[str] | None = None) -> int:
    """Command line: ``course-mistakes [--lesson ID]... [--course DIR] [--out DIR]``."""
    parser = argparse.ArgumentParser(
        prog="course-mistakes",
        description="Counts the misconceptions the graders found in autograded notebooks.")
    parser.add_argument("--lesson", action="append",
                        help="lesson id, e.g. 06_epoch_loss (repeatable; default: all lessons)")
    parser.add_argument("--course", type=Path, default=Path("."),
                        help="nbgrader course directory (default: current directory)")
    parser.add_argument("--out", type=Path, default=Path("mistakes"),
                        help="folder for mistakes.csv, not_graded.csv and mistakes.png "
                             "(default: mistakes)")
    args = parser.parse_args(argv)
    results = collect(args.course, args.lesson)
    print(format_report(results))
    if not results.outcomes and not results.not_graded:
        return 1
    files = [*write_csv(results, args.out), draw_chart(results, args.out / "mistakes.png")]
    print("\nWrote " + ", ".join(str(path) for path in files))
    return 0


if __name__ == "__main__":
    sys.exit(main())
