"""Grading a whole class: a command that shares submissions among long-lived grading processes
(``cli``), each process (``worker``), the submissions and their results (``jobs``) and the
terminal display (``progress``)."""
