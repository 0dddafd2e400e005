"""Data for the course: seeded toy datasets and MNIST as in-memory tensors and loaders."""

from __future__ import annotations

import argparse
import functools
import math
import os
import struct
import sys
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import TensorDataset

# Obtaining the files lives in mnist_files; its public names stay importable from here.
from course_utils.mnist_files import (DATA_DIR, MNIST_SHA256, MNISTUnavailable, _course_root,
                                      _raw_dir, mnist_status, prepare_mnist, sha256_of)

__all__ = ["DATA_DIR", "MNIST_MEAN", "MNIST_SHA256", "MNIST_STD", "MNISTUnavailable",
           "TensorLoader", "load_mnist_tensors", "main", "mnist_loaders", "mnist_status",
           "prepare_mnist", "sha256_of", "toy_classification", "toy_regression"]


def _generator(seed: int) -> torch.Generator:
    # A private generator keeps toy data reproducible without touching the global RNG.
    return torch.Generator().manual_seed(seed)


def toy_regression(n: int = 100, features: int = 10, seed: int = 0) -> TensorDataset:
    """Noisy linear regression data: ``features`` inputs, one target.

    Args:
        n: number of samples.
        features: number of input features.
        seed: the same seed always gives the same tensors.

    Returns:
        A ``TensorDataset`` of ``x`` with shape (n, features) and ``y`` with shape (n, 1),
        both float32.

    Example:
        >>> x, y = toy_regression(n=8)[:]
        >>> x.shape, y.shape
        (torch.Size([8, 10]), torch.Size([8, 1]))
    """
    gen = _generator(seed)
    x = torch.randn(n, features, generator=gen)
    true_w = torch.randn(features, 1, generator=gen)
    y = x @ true_w + 0.5 + 0.1 * torch.randn(n, 1, generator=gen)
    return TensorDataset(x, y)


def toy_classification(n: int = 300, classes: int = 3, seed: int = 0) -> TensorDataset:
    """Points in the plane in ``classes`` Gaussian blobs placed around a circle.

    Args:
        n: number of samples (spread as evenly as possible over the classes).
        classes: number of classes.
        seed: the same seed always gives the same tensors.

    Returns:
        A ``TensorDataset`` of float32 points with shape (n, 2) and int64 labels with
        shape (n,), in shuffled order.

    Example:
        >>> points, labels = toy_classification(n=6, classes=3)[:]
        >>> points.shape, labels.dtype
        (torch.Size([6, 2]), torch.int64)
    """
    gen = _generator(seed)
    labels = torch.arange(n) % classes
    labels = labels[torch.randperm(n, generator=gen)]
    angles = labels.to(torch.float32) * (2 * math.pi / classes)
    centres = 2.0 * torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)
    points = centres + 0.6 * torch.randn(n, 2, generator=gen)
    return TensorDataset(points, labels)


# ------------------------------------------------------------- MNIST tensors and loaders

# torchvision's Normalize constants for MNIST, used by the textbook pipeline.
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


@functools.lru_cache(maxsize=4)
def _read_idx(path: Path) -> torch.Tensor:
    """Reads an IDX file of unsigned bytes into a uint8 tensor."""
    data = path.read_bytes()
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    shape = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if zero != 0 or dtype_code != 0x08 or body.size != math.prod(shape):
        raise MNISTUnavailable(f"{path} is not a valid IDX file: run python -m course_utils.data")
    return torch.from_numpy(body.copy()).reshape(shape)


def _resolve_root(root: str | os.PathLike) -> Path:
    root = Path(root)
    if not root.is_absolute() and not root.exists() and (_course_root() / root).exists():
        return _course_root() / root
    return root


def load_mnist_tensors(root: str | os.PathLike = "data", train: bool = True,
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """All images of one MNIST split, normalised as ``ToTensor()`` + ``Normalize`` would.

    Returns:
        float32 images of shape (N, 1, 28, 28) and int64 labels of shape (N,).

    Example:
        >>> images, labels = load_mnist_tensors(train=False)
        >>> images.shape
        torch.Size([10000, 1, 28, 28])
    """
    raw = _raw_dir(_resolve_root(root))
    prefix = "train" if train else "t10k"
    paths = [raw / f"{prefix}-images-idx3-ubyte", raw / f"{prefix}-labels-idx1-ubyte"]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise MNISTUnavailable(f"MNIST files missing ({', '.join(missing)}): run "
                               "python -m course_utils.data to fetch and verify them.")
    pixels, labels = (_read_idx(p.resolve()) for p in paths)
    # The same arithmetic as ToTensor() then Normalize(), so both pipelines agree bit for bit.
    mean = torch.as_tensor(MNIST_MEAN, dtype=torch.float32)
    std = torch.as_tensor(MNIST_STD, dtype=torch.float32)
    images = pixels.unsqueeze(1).to(torch.float32).div(255).sub_(mean).div_(std)
    return images, labels.to(torch.int64)


class TensorLoader:
    """Batches of in-memory tensors, shuffled by slicing a permutation: a fast ``DataLoader``.

    ``len(loader)`` is the number of batches and ``loader.dataset`` a ``TensorDataset``, as
    with a ``DataLoader``. With ``shuffle=True`` each pass uses a new order drawn from a
    private generator, so runs are reproducible without touching the global RNG.

    Example:
        >>> loader = TensorLoader(toy_regression(n=10).tensors, batch_size=4)
        >>> len(loader), [len(x) for x, y in loader]
        (3, [4, 4, 2])
    """

    def __init__(self, tensors: tuple[torch.Tensor, ...], batch_size: int = 64,
                 shuffle: bool = False, seed: int = 0):
        self.dataset = TensorDataset(*tensors)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self._generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return math.ceil(len(self.dataset) / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        tensors = self.dataset.tensors
        n = len(self.dataset)
        order = torch.randperm(n, generator=self._generator) if self.shuffle else None
        for start in range(0, n, self.batch_size):
            if order is None:
                yield tuple(t[start:start + self.batch_size] for t in tensors)
            else:
                index = order[start:start + self.batch_size]
                yield tuple(t[index] for t in tensors)


def mnist_loaders(batch_size: int = 64, root: str | os.PathLike = "data",
                  subset: int | tuple[int, int] | None = None, seed: int = 0,
                  ) -> tuple[TensorLoader, TensorLoader]:
    """Fast MNIST loaders over tensors held in memory: the same samples and normalisation as
    ``torchvision.datasets.MNIST`` with ``ToTensor()`` and ``Normalize((0.1307,), (0.3081,))``.

    Args:
        batch_size: samples per batch (the last batch may be smaller).
        root: the data folder; a relative path not found from the current folder is looked up
            in the course folder, so notebooks in subfolders find ``data/``.
        subset: keep only the first ``n`` training and ``n // 6`` test images (MNIST's own
            ratio), or a pair ``(n_train, n_test)``; ``None`` keeps all.
        seed: seeds the training loader's shuffling.

    Returns:
        ``(train_loader, test_loader)``: the training loader shuffles each epoch, the test
        loader keeps the file order. Batches are ``(B, 1, 28, 28)`` float32 images and
        ``(B,)`` int64 labels.

    Example:
        >>> train_loader, test_loader = mnist_loaders(subset=600)
        >>> len(train_loader.dataset), len(test_loader.dataset), len(train_loader)
        (600, 100, 10)
    """
    train_images, train_labels = load_mnist_tensors(root, train=True)
    test_images, test_labels = load_mnist_tensors(root, train=False)
    if subset is not None:
        n_train, n_test = subset if isinstance(subset, tuple) else (subset, max(1, subset // 6))
        train_images, train_labels = train_images[:n_train], train_labels[:n_train]
        test_images, test_labels = test_images[:n_test], test_labels[:n_test]
    train = TensorLoader((train_images, train_labels), batch_size, shuffle=True, seed=seed)
    test = TensorLoader((test_images, test_labels), batch_size, shuffle=False)
    return train, test


def main(argv: list[str] | None = None) -> int:
    """Command line: fetch and verify MNIST (``python -m course_utils.data``)."""
    parser = argparse.ArgumentParser(description="Fetch and verify the MNIST files.")
    parser.add_argument("--root", default=str(DATA_DIR), help="data folder (default: %(default)s)")
    parser.add_argument("--quiet", action="store_true", help="print nothing on success")
    args = parser.parse_args(argv)
    try:
        prepare_mnist(args.root, progress=not args.quiet)
    except MNISTUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
