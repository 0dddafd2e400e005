"""Whether code runs inside a Jupyter kernel, for code that shows things differently there."""

from __future__ import annotations


def in_jupyter() -> bool:
    """True inside a Jupyter kernel (JupyterLab, nbclient, nbgrader), False in scripts and tests.

    Example:
        >>> in_jupyter()
        False
    """
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})
