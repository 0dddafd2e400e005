"""One MNIST epoch three ways: torchvision's textbook pipeline, mnist_loaders, and the bare floor.

Run: ``python benchmarks/bench_mnist_epoch.py [--repeats 3]``. Each pipeline trains the same
MLP (784-128-64-10) with Adam at batch size 64 for one epoch; the floor runs only forward,
backward and step on batches already sliced in memory. Prints medians and ratios.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable, Iterable

import torch
from torch import nn
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from course_utils.data import DATA_DIR, MNIST_MEAN, MNIST_STD, load_mnist_tensors, mnist_loaders

BATCH_SIZE = 64


def make_model() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 64),
                         nn.ReLU(), nn.Linear(64, 10))


def train_epoch(batches: Iterable) -> float:
    """Trains a fresh seeded model for one pass over ``batches``; returns the seconds taken."""
    torch.manual_seed(0)
    model = make_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    start = time.perf_counter()
    for images, labels in batches:
        optimizer.zero_grad()
        loss_fn(model(images), labels).backward()
        optimizer.step()
    return time.perf_counter() - start


def textbook_loader() -> DataLoader:
    transform = transforms.Compose([transforms.ToTensor(),
                                    transforms.Normalize((MNIST_MEAN,), (MNIST_STD,))])
    dataset = datasets.MNIST(root=str(DATA_DIR), train=True, download=False, transform=transform)
    return DataLoader(dataset, batch_size=BATCH_SIZE, shuffle=True,
                      generator=torch.Generator().manual_seed(0))


def ready_batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    images, labels = load_mnist_tensors(DATA_DIR, train=True)
    return [(images[i:i + BATCH_SIZE], labels[i:i + BATCH_SIZE])
            for i in range(0, len(labels), BATCH_SIZE)]


def median_seconds(run: Callable[[], float], repeats: int) -> float:
    return statistics.median(run() for _ in range(repeats))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs per pipeline (median)")
    args = parser.parse_args()

    start = time.perf_counter()
    load_mnist_tensors(DATA_DIR, train=True)
    load_seconds = time.perf_counter() - start

    batches = ready_batches()
    textbook = textbook_loader()
    fast_train, _ = mnist_loaders(batch_size=BATCH_SIZE)
    results = {
        "textbook: torchvision MNIST + ToTensor/Normalize + DataLoader":
            median_seconds(lambda: train_epoch(textbook), args.repeats),
        "mnist_loaders (tensors in memory, shuffled slices)":
            median_seconds(lambda: train_epoch(fast_train), args.repeats),
        "floor: forward/backward/step on ready batches":
            median_seconds(lambda: train_epoch(batches), args.repeats),
    }
    textbook_s, fast_s, floor_s = results.values()
    print(f"One MNIST epoch, MLP 784-128-64-10, Adam, batch {BATCH_SIZE}, "
          f"median of {args.repeats}, {torch.get_num_threads()} torch threads")
    print(f"(loading and normalising the 60,000 training images once: {load_seconds:.2f} s)")
    for name, seconds in results.items():
        print(f"  {seconds:7.2f} s  {name}")
    print(f"mnist_loaders / floor:    {fast_s / floor_s:5.2f}x  (goal: within 1.3x)")
    print(f"textbook / mnist_loaders: {textbook_s / fast_s:5.2f}x  (goal: at least 6x)")


if __name__ == "__main__":
    main()
