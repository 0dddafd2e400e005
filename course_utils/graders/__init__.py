"""Auto-graders that watch what a student's code does and name the mistake.

``grade`` returns a ``Report`` (data first: ``report.to_dict()``); ``check`` shows it in a
check cell and raises unless it passed; ``points`` shows reports in a test cell and returns
nbgrader's partial credit. Each exercise is declared in a module of
``course_utils.graders.exercises`` (see ``declare.Exercise``), found automatically.

Example:
    >>> from course_utils.graders import grade
    >>> grade("mse_loss", lambda pred, target: ((pred - target) ** 2).mean()).passed
    True
"""

from course_utils.graders.declare import (Check, Exercise, Misconception, generic, plain_names,
                                          recognise)
from course_utils.graders.grading import exercises, grade, load_exercises
from course_utils.graders.judge import Judge, KnownError, Stop
from course_utils.graders.report import Finding, Report
from course_utils.protocol import REPORT_MIME
from course_utils.graders.show import CheckFailed, NoPoints, check, points

load_exercises()

__all__ = ["Check", "CheckFailed", "Exercise", "Finding", "Judge", "KnownError", "Misconception",
           "NoPoints", "REPORT_MIME", "Report", "Stop", "check", "exercises", "generic", "grade",
           "load_exercises", "plain_names", "points", "recognise"]
