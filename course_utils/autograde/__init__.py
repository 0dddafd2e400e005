"""Autograding untrusted notebooks with nbgrader: the trusted side that runs in nbgrader's process.

Its wings, each importing only from the ones below it and from the student-facing package:
``sandboxed`` (what runs beside student code), ``kernels`` (how kernels are confined and
started), this package's own modules (nbgrader's preprocessors, scores, gradebook, reports of
a class) and ``parallel`` (grading a class with many processes).
"""
