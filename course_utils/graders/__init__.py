"""Auto-graders that watch what a student's code does and name the mistake.

Example:
    >>> from course_utils.graders import grade, check
    >>> grade("mse_loss", lambda pred, target: ((pred - target) ** 2).mean()).passed
    True
"""

from course_utils.graders._core import PLAIN_NAMES, Report, check, exercises, grade, points
from course_utils.graders import (  # noqa: F401  (importing registers each exercise's grader)
    autograd_grads,
    checkpointing,
    evaluation,
    losses,
    models,
    optim,
    training,
)

__all__ = ["PLAIN_NAMES", "Report", "check", "exercises", "grade", "points"]
