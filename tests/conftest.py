"""The classes graded once per run and shared by every test that needs them, and how a run's tests
are grouped when they are spread over several processes (``make test`` uses pytest-xdist)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from hostile_class import HostileClass, grade_hostile_class
import ordinary_user
from simulated_class import GradedClass, grade_class


@pytest.fixture(scope="session")
def graded_class(tmp_path_factory: pytest.TempPathFactory) -> GradedClass:
    """The simulated class after release, autograde, feedback and export."""
    return grade_class(tmp_path_factory.mktemp("simulated") / "course")


@pytest.fixture(scope="session")
def hostile_class(tmp_path_factory: pytest.TempPathFactory) -> HostileClass:
    """The hostile class after autograde and feedback, with nbgrader alone (serial)."""
    return grade_hostile_class(tmp_path_factory.mktemp("hostile"))


@pytest.fixture(scope="session")
def grader() -> Iterator[ordinary_user.OrdinaryUser]:
    """The ordinary user who grades, with the environment for all users and a folder of its own
    (removed afterwards; the user and the environment stay for the next run)."""
    why = (ordinary_user.unavailable() or ordinary_user.create_user()
           or ordinary_user.build_environment())
    if why:
        pytest.skip(why)
    workspace = ordinary_user.new_workspace()
    yield ordinary_user.OrdinaryUser(ordinary_user.USER, ordinary_user.VENV, workspace)
    shutil.rmtree(workspace)


def group_of(item: pytest.Item) -> str:
    """The xdist group of a test: the expensive fixture it shares with others, else itself.

    A notebook's cells share one kernel, so they form one group; a test using a session-wide
    fixture of this project (a graded class) joins that fixture's group, and one using a
    module-wide fixture joins its module's, so that each is built in one process only.
    """
    path = item.nodeid.partition("::")[0]
    if not isinstance(item, pytest.Function):
        return path
    wide = [(definition.scope, name)
            for name, definitions in item._fixtureinfo.name2fixturedefs.items()
            for definition in definitions[-1:]
            if definition.scope != "function" and definition.baseid]  # pytest's own: baseid ""
    if any(scope == "session" for scope, _ in wide):
        return min(name for scope, name in wide if scope == "session")
    return path if wide else item.nodeid


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Marked in every run, before xdist's worker reads the marks into the tests' ids (its own
    # hook, which runs first otherwise); a run without --dist loadgroup ignores them.
    for item in items:
        item.add_marker(pytest.mark.xdist_group(group_of(item)))
