"""Submissions are files: links, devices and pipes in a submission folder are dropped unread.

A submission folder collected by hand (an LMS zip, a copy from a shared drive) may hold
entries that are not the student's own files: a symbolic link to the instructor's solution or
the gradebook, a hard link to a course file (one file under two names), a device, a FIFO or a
socket. nbgrader would read through them: copy a link's target beside the graded notebook (where
the kernel reads it), grade a linked solution as the student's notebook and show it in the
feedback. ``before_grading``, nbgrader's ``pre_convert_hook`` (``nbgrader autograde`` and
``course-grade`` alike), runs before anything of a submission is read and removes every such
entry from the submission folder, logging the student, the file and what it was; a notebook
removed so is not graded (it scores 0 as a missing notebook). A submission folder that is
itself a link is not graded at all. Removing a link leaves its target untouched.

Example:
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> (folder / "notes.txt").write_text("mine")
    4
    >>> (folder / "answer.ipynb").symlink_to(folder / "notes.txt")
    >>> refusal(folder / "answer.ipynb")[:19], refusal(folder / "notes.txt")
    ('a symbolic link to ', None)
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path
from typing import Any

from traitlets.config import Application

from course_utils.autograde.kernels.policy import require_sandbox

# What each kind of file system entry is called in the log.
_KINDS = {stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device",
          stat.S_IFIFO: "a FIFO (named pipe)", stat.S_IFSOCK: "a socket"}


def refusal(path: str | os.PathLike[str]) -> str | None:
    """Why ``path`` is not a file of the student's own (what it is), or None for a folder or a
    regular file with no other name. Never follows a link."""
    try:
        info = os.lstat(path)
    except OSError as error:
        return f"unreadable ({error.strerror})"
    if stat.S_ISLNK(info.st_mode):
        try:
            return f"a symbolic link to {os.readlink(path)}"
        except OSError:
            return "a symbolic link"
    if stat.S_ISDIR(info.st_mode):
        return None
    if stat.S_ISREG(info.st_mode):
        return None if info.st_nlink == 1 else \
            f"a hard link (one file with {info.st_nlink} names, some outside the submission)"
    return _KINDS.get(stat.S_IFMT(info.st_mode), "not a regular file")


def refused_entries(folder: str | os.PathLike[str]) -> dict[str, str]:
    """Every entry below ``folder`` that is not the student's own file or folder: relative
    path -> what it is. Links to folders are listed, never entered."""
    found: dict[str, str] = {}
    for top, folders, files in os.walk(folder):
        for name in [*folders, *files]:
            path = os.path.join(top, name)
            why = refusal(path)
            if why is not None:
                found[os.path.relpath(path, folder)] = why
    return found


def linked_folder(folder: str | os.PathLike[str], submitted: str | os.PathLike[str]) -> str | None:
    """The first of ``folder`` and its parents up to ``submitted`` (excluded) that is a link,
    relative to ``submitted``; None when there is none."""
    folder, submitted = Path(os.path.abspath(folder)), Path(os.path.abspath(submitted))
    for path in [folder, *folder.parents]:
        if path == submitted or submitted not in path.parents:
            return None
        if path.is_symlink():
            return str(path.relative_to(submitted))
    return None


def screen(folder: str, student: str, log: logging.Logger) -> list[str]:
    """Removes every refused entry of the submission ``folder``
    (``submitted/<student>/<lesson>``, see ``refused_entries``), logging each; the relative
    paths removed. A submission folder that is a link, or lies in one, is left alone and
    returned as ``["."]``: it is not graded."""
    submitted = os.path.dirname(os.path.dirname(os.path.abspath(folder)))
    link = linked_folder(folder, submitted)
    if link is not None:
        log.error("Not grading the submission of student '%s': its folder %s is a link (to "
                  "%s), not a folder of the student's own", student, link,
                  os.readlink(os.path.join(submitted, link)))
        return ["."]
    removed = []
    for name, why in refused_entries(folder).items():
        try:
            os.unlink(os.path.join(folder, name))
        except OSError as error:
            log.error("Could not remove %s of student '%s' (%s): %s", name, student, why, error)
            continue
        log.warning("Refused %s of student '%s': %s, not a file the student handed in; "
                    "removed from the submission folder unread, and not graded", name, student,
                    why)
        removed.append(name)
    return removed


def _log() -> logging.Logger:
    app = Application.instance() if Application.initialized() else None
    return app.log if app is not None else logging.getLogger(__name__)


def screen_notebooks(notebooks: list[str]) -> None:
    """Screens the submission of ``notebooks`` (see ``screen``) and takes the notebooks it
    removed out of that list (nbgrader's own), so that they are not graded."""
    if not notebooks:
        return
    folder = os.path.dirname(os.path.abspath(notebooks[0]))
    student = os.path.basename(os.path.dirname(folder))
    removed = screen(folder, student, _log())
    if "." in removed:
        notebooks.clear()
        return
    gone = {os.path.join(folder, name) for name in removed}
    notebooks[:] = [path for path in notebooks if os.path.abspath(path) not in gone]


def before_grading(notebooks: list[str] | None = None, **hook_arguments: Any) -> None:
    """nbgrader's ``pre_convert_hook``: stops where the sandbox cannot start
    (``require_sandbox``), then screens the submission (``screen_notebooks``)."""
    require_sandbox(**hook_arguments)
    screen_notebooks(notebooks if notebooks is not None else [])
