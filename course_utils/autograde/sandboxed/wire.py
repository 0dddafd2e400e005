"""The referee's data-only wire: JSON whose tensors travel as raw bytes, never as pickles.

Requests go from nbgrader's process into the student's kernel and outcomes come back this way.
Decoding builds nothing but dicts, lists, strings, numbers and tensors of a few plain dtypes, so
whatever a kernel sends, the trusted side runs none of it.

Example:
    >>> import torch
    >>> data = decode(encode({"w": torch.tensor([[1.5, -2.0]]), "steps": [1, 2], "ok": True}))
    >>> data["w"], data["steps"], data["ok"]
    (tensor([[ 1.5000, -2.0000]]), [1, 2], True)
"""

from __future__ import annotations

import base64
import json
from typing import Any

import numpy
import torch

TENSOR = "__tensor__"
# The dtypes a tensor may have on the wire, by the name it travels under.
DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float64": torch.float64,
                                  "int64": torch.int64, "bool": torch.bool}
_NAMES = {dtype: name for name, dtype in DTYPES.items()}
# Outcomes larger than this are refused, not parsed.
MAX_CHARS = 20_000_000


def _plain(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu()
        if tensor.dtype not in _NAMES:
            tensor = tensor.to(torch.float64 if tensor.is_floating_point() else torch.int64)
        raw = tensor.contiguous().numpy().tobytes()
        return {TENSOR: [_NAMES[tensor.dtype], list(tensor.shape),
                         base64.b64encode(raw).decode("ascii")]}
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"{type(value).__name__} does not travel on the wire")


def encode(value: Any) -> str:
    """``value`` (dicts, lists, numbers, strings, None and tensors) as JSON text."""
    return json.dumps(_plain(value), allow_nan=True)


def _tensor(spec: Any) -> torch.Tensor:
    name, shape, data = spec
    dtype = DTYPES[name]
    raw = base64.b64decode(data, validate=True)
    array = numpy.frombuffer(raw, dtype=str(dtype).removeprefix("torch.")).copy()
    return torch.from_numpy(array).reshape([int(size) for size in shape])


def _rich(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {TENSOR}:
            return _tensor(value[TENSOR])
        return {key: _rich(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_rich(item) for item in value]
    return value


def decode(text: str) -> Any:
    """The value ``encode`` gave ``text``; ValueError for anything else (too long, not JSON,
    a malformed tensor)."""
    if not isinstance(text, str) or len(text) > MAX_CHARS:
        raise ValueError("not an answer of the wire's size and kind")
    try:
        return _rich(json.loads(text))
    except (KeyError, TypeError, ValueError, RecursionError) as exc:
        raise ValueError(f"malformed answer: {exc}") from None
