"""nbval of the solutions holds on any machine: outputs survive other CPU kernels, skipped ones are asserted."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
SOLUTIONS = ROOT / "solutions"
SANITIZE = ROOT / "tests" / "nbval_sanitize.cfg"
IGNORE_OUTPUT = "nbval-ignore-output"
# torch's plain C++ kernels instead of the AVX2/AVX-512 ones: other rounding in reductions and
# elementwise maths, the drift another CPU or torch release brings. (The lessons fix the thread
# count, so changing it would perturb nothing.)
PERTURBATION = {"ATEN_CPU_CAPABILITY": "default"}


def solution_notebooks() -> list[Path]:
    return sorted(SOLUTIONS.glob("*/*.ipynb"))


def lesson_params() -> list:
    return [pytest.param(path, id=path.parent.name) for path in solution_notebooks()]


def tagged_ignore_output(path: Path) -> list[tuple[int, str]]:
    """(index, source) of the code cells of ``path`` whose outputs nbval does not compare."""
    notebook = nbformat.read(path, as_version=4)
    return [(index, cell.source) for index, cell in enumerate(notebook.cells)
            if cell.cell_type == "code" and IGNORE_OUTPUT in cell.metadata.get("tags", [])]


def has_assert(source: str) -> bool:
    """Whether the cell's code contains an ``assert`` statement (IPython magics ignored).

    Example:
        >>> has_assert("x = 1\\nassert x == 1, 'one'"), has_assert("print('assert')")
        (True, False)
    """
    code = "\n".join(line for line in source.splitlines() if not line.lstrip().startswith(("%", "!")))
    return any(isinstance(node, ast.Assert) for node in ast.walk(ast.parse(code)))


@pytest.mark.slow
def test_perturbation_reaches_torch():
    """The variable really switches torch's kernels in a child process (as in a Jupyter kernel)."""
    probe = "import torch; print(torch.backends.cpu.get_cpu_capability())"
    result = subprocess.run([sys.executable, "-c", probe], env={**os.environ, **PERTURBATION},
                            capture_output=True, text=True, timeout=120, check=True)
    assert result.stdout.strip().lower() == PERTURBATION["ATEN_CPU_CAPABILITY"]


@pytest.mark.parametrize("notebook", lesson_params())
def test_unchecked_outputs_are_asserted(notebook: Path):
    """A cell tagged nbval-ignore-output guards the claims of its prose with asserts."""
    bare = [index for index, source in tagged_ignore_output(notebook) if not has_assert(source)]
    assert not bare, (
        f"{notebook.relative_to(ROOT)}: cells {bare} are tagged {IGNORE_OUTPUT} but assert nothing, "
        "so nothing checks their results. End each with asserts of what its prose claims "
        "(see the top of tests/nbval_sanitize.cfg).")


@pytest.mark.slow
@pytest.mark.parametrize("notebook", lesson_params())
def test_outputs_hold_under_other_cpu_kernels(notebook: Path):
    """nbval passes with torch's default CPU kernels: no compared output depends on the machine."""
    if torch.backends.cpu.get_cpu_capability().lower() == PERTURBATION["ATEN_CPU_CAPABILITY"]:
        pytest.skip("this machine already runs torch's default kernels: nothing to perturb")
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval",
               "--nbval-sanitize-with", str(SANITIZE), str(notebook)]
    result = subprocess.run(command, cwd=ROOT, env={**os.environ, **PERTURBATION},
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, (
        f"{notebook.relative_to(ROOT)} prints something that changes with the CPU's kernels "
        f"({' '.join(f'{k}={v}' for k, v in PERTURBATION.items())}), as it would on another "
        "machine or torch release. Tag a cell whose output comes from many optimisation steps "
        f"`{IGNORE_OUTPUT}` and assert its claims instead (see the top of "
        f"tests/nbval_sanitize.cfg). nbval said:\n{result.stdout[-4000:]}")
