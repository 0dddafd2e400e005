"""The package's wings by trust: every module imports, and no import runs back up a wing."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import course_utils

PACKAGE = Path(course_utils.__file__).resolve().parent
# From the bottom up: what students import, what runs beside student code in the sandbox, how
# kernels are confined and started, nbgrader's side, and grading a class in parallel. A module
# may import its own wing and those below it, never one above.
WINGS = ("course_utils", "course_utils.autograde.sandboxed", "course_utils.autograde.kernels",
         "course_utils.autograde", "course_utils.autograde.parallel")


def module_names() -> list[str]:
    """Every module of the package, by dotted name."""
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def wing(module: str) -> int:
    """The rank of the wing ``module`` belongs to: the longest wing that contains it."""
    containing = [name for name in WINGS if module == name or module.startswith(name + ".")]
    return WINGS.index(max(containing, key=len))


def course_imports(module: str) -> set[str]:
    """The ``course_utils`` modules ``module`` imports, wherever in the file (lazy ones too)."""
    path = PACKAGE.parent / (module.replace(".", "/") + ".py")
    if not path.exists():
        path = PACKAGE.parent / module.replace(".", "/") / "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            # ``from package import module``
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    modules = set(module_names())
    return {name for name in found if name in modules and name != module}


MODULES = module_names()


@pytest.mark.parametrize("module", MODULES)
def test_every_module_imports(module: str) -> None:
    importlib.import_module(module)


@pytest.mark.parametrize("module", MODULES)
def test_no_import_runs_up_a_wing(module: str) -> None:
    upward = {name for name in course_imports(module) if wing(name) > wing(module)}
    assert not upward, f"{module} ({WINGS[wing(module)]}) imports {sorted(upward)}"


def test_the_wings_rank_as_the_folders_nest() -> None:
    assert wing("course_utils.graders.report") == 0
    assert wing("course_utils.autograde.sandboxed.guard") == 1
    assert wing("course_utils.autograde.execute") == 3
    assert course_imports("course_utils.autograde.execute") >= {"course_utils.protocol"}


def test_no_import_circles() -> None:
    graph = {module: course_imports(module) for module in MODULES}
    # Importing a module imports its packages first: those edges are not circles.
    for module, imports in graph.items():
        graph[module] = {name for name in imports if not module.startswith(name + ".")}
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        if module in path:
            pytest.fail("import circle: " + " -> ".join(path[path.index(module):] + [module]))
        if module in done:
            return
        for name in sorted(graph[module]):
            visit(name, path + [module])
        done.add(module)

    for module in MODULES:
        visit(module, [])


def test_the_student_wing_does_not_import_torch_where_the_grading_side_reads_it() -> None:
    """``protocol`` is what nbgrader's process shares with the graders: it needs no torch."""
    imports = course_imports("course_utils.protocol")
    tree = ast.parse((PACKAGE / "protocol.py").read_text())
    third_party = {alias.name.split(".")[0] for node in ast.walk(tree)
                   if isinstance(node, ast.Import) for alias in node.names}
    third_party |= {node.module.split(".")[0] for node in ast.walk(tree)
                    if isinstance(node, ast.ImportFrom) and node.module}
    assert not imports and "torch" not in third_party
