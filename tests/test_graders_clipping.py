"""What the grader of `clipped_step` (lesson 09) relies on; its catalogue is graded in
test_graders.py."""

from __future__ import annotations

import sys

import torch

from course_utils.graders import grade
from course_utils.graders.exercises.clipping import clip
from submissions_clipping import SUBMISSIONS


def test_the_clipping_lesson_caps_the_score():
    for name in ("never", "before_unscale", "optimizer_step"):
        entry = next(s for s in SUBMISSIONS if s.name == name)
        assert grade(entry.exercise, entry.student).score <= 0.5


def test_clip_keeps_the_direction_and_bounds_the_norm():
    gradient = torch.tensor([3.0, 4.0])
    assert torch.allclose(clip(gradient, 1.0), gradient / 5, atol=1e-6)
    assert torch.equal(clip(gradient, 10.0), gradient)


def test_grading_restores_the_profiler_and_the_thread_count():
    def profiler(frame, event, arg):
        return None

    lesson = next(s for s in SUBMISSIONS if s.correct)
    threads = torch.get_num_threads()
    sys.setprofile(profiler)
    try:
        report = grade("clipped_step", lesson.student)
        assert sys.getprofile() is profiler
    finally:
        sys.setprofile(None)
    assert report.passed and torch.get_num_threads() == threads
