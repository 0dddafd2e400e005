"""Readies the course for the Formgrader: a gradebook that knows every lesson and its points."""

from __future__ import annotations

import argparse
import os
import runpy
import sqlite3
import sys
from pathlib import Path

from traitlets.config import Config

from course_utils.autograde.environment import nbgrader_environment

GRADEBOOK = "gradebook.db"


def course_config(course: Path) -> Config:
    """The nbgrader configuration ``nbgrader_config.py`` of the course sets.

    Example:
        >>> course_config(Path(__file__).resolve().parents[2]).CourseDirectory.source_directory
        'solutions'
    """
    return _read_config(course)["c"]


def course_lessons(course: Path) -> list[str]:
    """The lessons listed in ``LESSONS`` of the course's ``nbgrader_config.py``, in order.

    Example:
        >>> course_lessons(Path(__file__).resolve().parents[2])[0]
        '01_forward_pass'
    """
    return list(_read_config(course)["LESSONS"])


def _read_config(course: Path) -> dict:
    return runpy.run_path(str(course / "nbgrader_config.py"), init_globals={"get_config": Config})


def schema_head() -> str:
    """The revision of nbgrader's gradebook schema that this nbgrader creates.

    Example:
        >>> len(schema_head()) == 12
        True
    """
    import nbgrader
    from alembic.config import Config as AlembicConfig
    from alembic.script import ScriptDirectory

    alembic = AlembicConfig()
    alembic.set_main_option("script_location", str(Path(nbgrader.__file__).parent / "alembic"))
    return ScriptDirectory.from_config(alembic).get_current_head()


def stamp_schema(database: Path) -> bool:
    """Records the schema revision in a gradebook that lacks it; True if it had to.

    nbgrader creates the tables first and asks the ``alembic`` program for the revision
    afterwards; where that program was not on ``PATH`` the gradebook is left without its
    ``alembic_version`` table, and later schema upgrades would fail on it. The tables are
    those of this nbgrader, so its head revision is the right one.
    """
    with sqlite3.connect(database) as connection:
        tables = {row[0] for row in connection.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not tables or "alembic_version" in tables:
            return False
        connection.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)")
        connection.execute("INSERT INTO alembic_version (version_num) VALUES (?)",
                           (schema_head(),))
    return True


def lessons_to_generate(course: Path, lessons: list[str]) -> list[str]:
    """The lessons whose student version or points the gradebook does not have yet."""
    database = course / GRADEBOOK
    missing = [lesson for lesson in lessons
               if not (course / "notebooks" / lesson / f"{lesson}.ipynb").is_file()]
    if not database.is_file():
        return lessons
    from nbgrader.api import Gradebook, MissingEntry

    with Gradebook(f"sqlite:///{database}") as gradebook:
        for lesson in lessons:
            try:
                known = gradebook.find_assignment(lesson).max_score > 0
            except MissingEntry:
                known = False
            if not known and lesson not in missing:
                missing.append(lesson)
    return [lesson for lesson in lessons if lesson in missing]


def prepare(course: Path) -> list[str]:
    """Makes the gradebook complete and returns the lessons it had to generate.

    Each such lesson goes through nbgrader's ``generate_assignment``, which writes its student
    version (the same file as the committed one while ``solutions/`` is unchanged) and records
    its graded cells and points.
    """
    database = course / GRADEBOOK
    if database.is_file() and stamp_schema(database):
        print(f"{GRADEBOOK}: recorded the missing schema version {schema_head()}")
    generated = lessons_to_generate(course, course_lessons(course))
    if not generated:
        return []
    from nbgrader.apps import NbGraderAPI
    from nbgrader.coursedir import CourseDirectory
    from traitlets.config.loader import PyFileConfigLoader

    config = PyFileConfigLoader("nbgrader_config.py", path=str(course)).load_config()
    api = NbGraderAPI(CourseDirectory(config=config), config=config)
    # nbgrader runs the `alembic` program when it creates the gradebook: PATH must have it.
    os.environ["PATH"] = nbgrader_environment()["PATH"]
    for lesson in generated:
        result = api.generate_assignment(lesson, force=True)
        if not result["success"]:
            raise RuntimeError(f"nbgrader generate_assignment {lesson} failed:\n"
                               f"{result.get('log', '')}{result.get('error', '')}")
        print(f"{lesson}: generated, points recorded in {GRADEBOOK}")
    return generated


def main(argv: list[str] | None = None) -> None:
    """``python -m course_utils.autograde.gradebook [COURSE]``: ready the gradebook (run by
    ``make course``)."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("course", nargs="?", type=Path, default=Path.cwd(),
                        help="the course directory (default: the current one)")
    course = parser.parse_args(argv).course.resolve()
    try:
        prepare(course)
    except RuntimeError as error:
        sys.exit(str(error))


if __name__ == "__main__":
    main()
