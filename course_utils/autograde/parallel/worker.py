"""A long-lived grading process: autogrades one submission after another with nbgrader's own
``Autograde`` converter and the course's configuration, the next submission's sandboxed kernel
starting while it grades the current one.

nbgrader, its configuration and the gradebook connection code are loaded once per process, not
once per submission. Each submission is graded exactly as ``nbgrader autograde LESSON
--student ID`` grades it (the same converter, preprocessors, sandbox and gradebook writes);
only its kernel may have been started earlier (``course_utils.autograde.kernels.pool``).

Example:
    >>> app = open_app(Path("."), ["--force"])                       # doctest: +SKIP
    >>> grade_one(app, Job("02_loss", "bea")).status                 # doctest: +SKIP
    'graded'
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import time
import traceback
import warnings
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import nbformat
import nbgrader.api
import sqlalchemy
from nbgrader.apps import AutogradeApp
from nbgrader.converters import Autograde
from nbgrader.converters.base import NbGraderException
from sqlalchemy.exc import SAWarning

from course_utils.autograde.execute import SafeExecute
from course_utils.autograde.kernels import forked
from course_utils.autograde.kernels.policy import Sandbox
from course_utils.autograde.kernels.pool import RESOURCE, KernelPool
from course_utils.autograde.parallel.jobs import Job, Result, failure_reason
from course_utils.autograde.submissions import linked_folder, refused_entries

# Transient database errors after which grading the submission again is right.
RETRY_ON = ("database is locked",)
_LOG_FORMAT = "[%(name)s | %(levelname)s] %(message)s"


def open_app(course: Path, nbgrader_args: list[str]) -> AutogradeApp:
    """nbgrader's autograde application for ``course``, configured as on the command line
    (``nbgrader_config.py`` and ``nbgrader_args``); its own log output is silenced, each
    submission's is kept with its result."""
    # nbgrader opens the gradebook about ten times per notebook, each time with a new database
    # engine that compiles its queries anew: one engine per database serves them all here.
    nbgrader.api.create_engine = functools.cache(sqlalchemy.create_engine)
    os.chdir(course)
    app = AutogradeApp.instance()
    app.initialize(list(nbgrader_args))
    for handler in app.log.handlers:
        handler.setLevel(logging.CRITICAL + 1)
    return app


class _Capture(logging.Handler):
    """Keeps the log lines of one submission, formatted as nbgrader prints them."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.setFormatter(logging.Formatter(_LOG_FORMAT))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


class _AutogradeWithPool(Autograde):
    """nbgrader's ``Autograde`` that hands each notebook's executor the pool of kernels started
    ahead (``SafeExecute`` takes it from the notebook's resources)."""

    pool: KernelPool | None = None

    def init_single_notebook_resources(self, notebook_filename: str) -> dict[str, Any]:
        resources = super().init_single_notebook_resources(notebook_filename)
        if self.pool is not None:
            resources[RESOURCE] = self.pool
        return resources


def _autograde(app: AutogradeApp, job: Job, pool: KernelPool | None = None) -> tuple[bool, str]:
    """One ``nbgrader autograde`` of one submission, in this process: (succeeded, its log)."""
    capture = _Capture()
    app.log.addHandler(capture)
    try:
        app.coursedir.assignment_id = job.lesson
        app.coursedir.student_id = job.student
        converter = _AutogradeWithPool(coursedir=app.coursedir, parent=app)
        converter.pool = pool
        converter.start()
        succeeded = True
    except NbGraderException:
        succeeded = False
    except Exception:  # nbgrader failed outside its own error handling: this submission only
        capture.lines.append(traceback.format_exc())
        succeeded = False
    finally:
        app.log.removeHandler(capture)
    return succeeded, "\n".join(capture.lines)


def grade_one(app: AutogradeApp, job: Job, retries: int = 2,
              pool: KernelPool | None = None) -> Result:
    """Autogrades one submission, again after a transient database error; its notebook runs
    in the kernel ``pool`` started ahead for it, where there is one."""
    start = time.perf_counter()
    for attempt in range(1, retries + 2):
        succeeded, output = _autograde(app, job, pool)
        if succeeded or not any(text in output for text in RETRY_ON):
            break
    seconds = time.perf_counter() - start
    kernel = "" if pool is None else pool.origins.pop(os.path.abspath(app.coursedir.format_path(
        app.coursedir.autograded_directory, job.student, job.lesson)), "")
    if not succeeded:
        return Result(job, "failed", seconds, attempt, failure_reason(output), output, kernel)
    status = "skipped" if "Skipping existing assignment" in output else "graded"
    return Result(job, status, seconds, attempt, output=output, kernel=kernel)


def kernel_pool_for(app: AutogradeApp) -> KernelPool | None:
    """The pool of kernels started ahead, each forked from a zygote started now where it can
    start, where kernels are sandboxed (else None)."""
    if not Sandbox(config=app.config).enabled:
        return None
    executor = SafeExecute(config=app.config)
    extra = list(executor.extra_arguments)
    if executor.ipython_hist_file and not any(
            arg.startswith("--HistoryManager.hist_file") for arg in extra):
        extra.append(f"--HistoryManager.hist_file={executor.ipython_hist_file}")
    zygote = forked.start_for(
        os.path.join(app.coursedir.root, app.coursedir.autograded_directory),
        Sandbox(config=app.config))
    return KernelPool(app.config, app.coursedir, extra, zygote)


def _prepare(pool: KernelPool | None, app: AutogradeApp, job: Job | None) -> None:
    if pool is None or job is None:
        return
    source = Path(app.coursedir.format_path(app.coursedir.source_directory, ".", job.lesson))
    notebook = source / f"{job.lesson}.ipynb"
    submission = app.coursedir.format_path(app.coursedir.submitted_directory, job.student,
                                           job.lesson)
    # A submission holding links or devices gets its kernel once nbgrader's hook removed them.
    if not notebook.exists() or linked_folder(submission, Path(submission).parents[1]) \
            or refused_entries(submission):
        return
    kernel_name = nbformat.read(notebook, as_version=4).metadata.get(
        "kernelspec", {}).get("name", "python")
    keep_own = app.config.Autograde.get("exclude_overwriting", {}).get(job.lesson, [])
    try:
        pool.prepare(job.lesson, job.student, kernel_name, list(keep_own))
    except Exception:  # the notebook then gets a kernel started the usual way
        app.log.debug("Could not start a kernel ahead for %s", job, exc_info=True)


def serve(connection: Connection, course: Path, nbgrader_args: list[str],
          environment: dict[str, str], retries: int) -> None:
    """A grading process's life: asks for a submission (``("want", None)``), receives a
    ``Job`` or None (no more), and answers ``("done", Result)`` for each; always holds the
    next submission, whose kernel starts while the current one is graded."""
    os.environ.update(environment)
    # Kernels print their connection notes to stdout, and nbgrader's gradebook code warns
    # through SQLAlchemy: the progress display owns the terminal, each result keeps its log.
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    warnings.filterwarnings("ignore", category=SAWarning)
    app = open_app(course, nbgrader_args)
    pool = kernel_pool_for(app)

    def ask() -> Job | None:
        connection.send(("want", None))
        return connection.recv()

    try:
        current = ask()
        _prepare(pool, app, current)
        while current is not None:
            upcoming = ask()
            _prepare(pool, app, upcoming)
            connection.send(("done", grade_one(app, current, retries, pool)))
            current = upcoming
    finally:
        if pool is not None:
            pool.close()
            if pool.zygote is not None:
                pool.zygote.close()
