"""Helpers, data and auto-graders for a course on the PyTorch training loop."""

__version__ = "0.1.0"
