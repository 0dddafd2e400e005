"""Evidence: comparing a student's tensors with the right ones, and describing them in feedback."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch


def generator(seed: int) -> torch.Generator:
    """A private random generator, so test data never depends on (or moves) the global RNG.

    Example:
        >>> torch.randn(2, generator=generator(0)).shape
        torch.Size([2])
    """
    return torch.Generator().manual_seed(seed)


def close(actual: torch.Tensor, expected: torch.Tensor, rtol: float = 1e-4,
          atol: float = 1e-5) -> bool:
    """True when two tensors have the same shape and values (compared in float64, NaN never equal).

    Example:
        >>> close(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 2.00001]))
        True
    """
    if not isinstance(actual, torch.Tensor) or actual.shape != expected.shape:
        return False
    return torch.allclose(actual.detach().double(), expected.detach().double(),
                          rtol=rtol, atol=atol)


def shape(value: torch.Tensor | torch.Size | tuple[int, ...]) -> str:
    """A shape written as students see it in Python: ``(4, 1)``, ``(4,)``, ``()``.

    Example:
        >>> shape(torch.zeros(4)), shape(torch.tensor(1.0))
        ('(4,)', '()')
    """
    dims = tuple(value.shape if isinstance(value, torch.Tensor) else value)
    return str(dims)


def number(value: float | torch.Tensor) -> str:
    """A number with 4 significant digits, for feedback.

    Example:
        >>> number(2 / 3), number(torch.tensor(12345.678))
        ('0.6667', '1.235e+04')
    """
    if isinstance(value, torch.Tensor):
        value = value.detach().item()
    return f"{float(value):.4g}"


def first_values(tensor: torch.Tensor, count: int = 3) -> str:
    """The first few values of a tensor, flattened, ``[0.1, -2, 3.5, ...]``; a 0-dim one bare.

    Example:
        >>> first_values(torch.tensor([[1.0, 2.0], [3.0, 4.0]])), first_values(torch.tensor(0.5))
        ('[1, 2, 3, ...]', '0.5')
    """
    if tensor.dim() == 0:
        return number(tensor)
    flat = tensor.detach().flatten()
    text = ", ".join(number(v) for v in flat[:count])
    return f"[{text}, ...]" if flat.numel() > count else f"[{text}]"


def kind(value: Any) -> str:
    """What a returned value is, in words: ``None``, ``a Python float``, ``a tensor of shape (3,)``.

    Example:
        >>> kind(None), kind(1.5), kind(np.float32(1)), kind(torch.zeros(3))
        ('`None`', 'a Python float', 'a numpy float32', 'a tensor of shape (3,)')
    """
    if value is None:
        return "`None`"
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {shape(value)}"
    if isinstance(value, np.ndarray):
        return f"a numpy array of shape {value.shape}"
    if isinstance(value, np.generic):
        return f"a numpy {type(value).__name__}"
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)} items"
    if isinstance(value, (bool, int, float)):
        return f"a Python {type(value).__name__}"
    return f"a `{type(value).__name__}`"


def ratio(actual: torch.Tensor, expected: torch.Tensor) -> float | None:
    """The constant ``c`` with ``actual == c * expected`` everywhere, or None if there is none.

    Example:
        >>> ratio(torch.tensor([1.0, -4.0]), torch.tensor([2.0, -8.0]))
        0.5
    """
    if not isinstance(actual, torch.Tensor) or actual.numel() != expected.numel():
        return None
    actual, expected = actual.detach().double().flatten(), expected.detach().double().flatten()
    nonzero = expected.abs() > 1e-6 * expected.abs().max()
    if not nonzero.any() or not torch.isfinite(actual).all():
        return None
    c = float(actual[nonzero][0] / expected[nonzero][0])
    return c if close(actual, c * expected) else None


def plain(value: Any) -> Any:
    """Evidence as JSON-ready data: numbers and text as they are, tensors and numpy values
    described as in feedback, containers item by item.

    Example:
        >>> plain({"got": torch.tensor(0.5), "shape": (4, 1), "rows": torch.ones(5)})
        {'got': 0.5, 'shape': [4, 1], 'rows': '[1, 1, 1, ...]'}
    """
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else number(value)
    if isinstance(value, torch.Tensor):
        return plain(value.detach().item()) if value.dim() == 0 else first_values(value)
    if isinstance(value, np.generic):
        return plain(value.item())
    if isinstance(value, (tuple, list, torch.Size)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    return str(value)
