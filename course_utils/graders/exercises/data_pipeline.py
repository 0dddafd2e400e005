"""Graders for lesson 11: `AugmentedDataset`, `pad_collate` and `make_loader`, judged by what
the dataset returns, what the collate function builds and what the loader's workers draw."""

from __future__ import annotations

import random
import sys
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, get_worker_info

from course_utils.graders.declare import Check, Exercise, Misconception, generic
from course_utils.graders.evidence import first_values, generator, kind, shape
from course_utils.graders.judge import Judge

# ============================================================================ AugmentedDataset

IMAGES = 12
PROBED = (0, 5, IMAGES - 1)  # items read without a transform

DATASET_NOT_A_CLASS = generic(
    "wrong_return_type",
    "`AugmentedDataset` should be a class, but it is {got}: pass the class itself, without "
    "parentheses; the check builds its own datasets.")
NOT_A_DATASET = generic(
    "wrong_return_type",
    "`AugmentedDataset(images, labels)` made {got}, which has no `__len__` and `__getitem__`: a "
    "map-style dataset needs both (subclassing `torch.utils.data.Dataset` is the usual way).")
WRONG_ITEM = generic(
    "wrong_value",
    "`dataset[{index}]` should be image {index} and label {want} when no transform is given; it "
    "was ({image}, label {got}). Index the images and the labels with the same `index`, and "
    "leave the image as it is without a transform.")
WRONG_TRANSFORM = generic(
    "wrong_value",
    "With a transform that adds 1 at its first call, 2 at its second and so on, "
    "`dataset[{index}]` returned {got} for image {index}, which starts {image}: pass the image "
    "being read, `self.images[index]`, to the transform, once.")

AUGMENTED_DATASET = Exercise(
    "AugmentedDataset",
    [Check("dataset", "builds a dataset with `len()` and indexing from images and labels"),
     Check("length", "`len()` is the number of images"),
     Check("item", "item i is the pair (image i, label i), the label an integer"),
     Check("transform", "applies the transform to the image"),
     Check("fresh", "draws the transform anew at every access", weight=2, lesson=True)],
    [Misconception("wrong_length", "`len()` is not the number of samples",
                   "`len(dataset)` is {got} for a dataset of {want} images: `__len__` returns "
                   "the number of samples, `len(self.images)`."),
     Misconception("wrong_item_type", "an item is not an (input, label) pair with an integer "
                   "label",
                   "`dataset[{index}]` is {got}. An item is the pair `(image, label)`, the label "
                   "a Python int or an int64 tensor of 0 dimensions: the default collate stacks "
                   "those into a batch of class indices, which cross-entropy needs."),
     Misconception("transform_ignored", "the transform is never applied",
                   "With a transform given, `dataset[{index}]` returned image {index} unchanged: "
                   "call `self.transform(image)` in `__getitem__` when a transform was given."),
     Misconception("transform_at_init", "augmentation drawn once, at construction",
                   "Reading item {index} twice gave the same image, though the transform gives "
                   "another result at every call: {how} Every epoch would then train on one "
                   "frozen draw of the augmentation. Apply the transform in `__getitem__`, to "
                   "the image being read.")])


class _CountingTransform:
    """A stand-in augmentation that gives another result at every call: it adds the number of
    the call (1, 2, 3, ...), so each result also says which call made it."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return image + self.calls


def _is_label(label: Any) -> bool:
    if isinstance(label, torch.Tensor):
        return label.dim() == 0 and label.dtype == torch.int64
    return isinstance(label, (int, np.integer)) and not isinstance(label, bool)


@AUGMENTED_DATASET
def grade_augmented_dataset(judge: Judge, student: Any, *, data: str = "toy") -> None:
    """Grades `AugmentedDataset`: length, items without a transform, and a transform applied
    to the image at every read."""
    gen = generator(judge.seed)
    images = torch.rand(IMAGES, 1, 28, 28, generator=gen)
    labels = torch.randint(0, 10, (IMAGES,), generator=gen)
    if not isinstance(student, type):
        judge.require("dataset", False, DATASET_NOT_A_CLASS, got=kind(student))
    with judge.context("building `AugmentedDataset(images, labels)`"):
        plain = judge.call(student, images, labels)
    judge.require("dataset", hasattr(plain, "__len__") and hasattr(plain, "__getitem__"),
                  NOT_A_DATASET, got=kind(plain))
    ok, length = judge.attempt("length", len, plain, doing="calling `len()` on your dataset")
    if ok:
        judge.check("length", length == IMAGES, *AUGMENTED_DATASET.mistakes("wrong_length"),
                    got=length, want=IMAGES)
    for index in PROBED:
        ok, item = judge.attempt("item", plain.__getitem__, index,
                                 doing=f"reading item {index} of a dataset without a transform")
        if not ok or not _check_item(judge, item, index, images, labels):
            break
    _check_transform(judge, student, images, labels)


def _check_item(judge: Judge, item: Any, index: int, images: torch.Tensor,
                labels: torch.Tensor) -> bool:
    """Judges "item" on one item read without a transform."""
    (wrong_type,) = AUGMENTED_DATASET.mistakes("wrong_item_type")
    if not (isinstance(item, (tuple, list)) and len(item) == 2):
        return judge.fail("item", wrong_type, index=index, got=kind(item))
    image, label = item
    if not _is_label(label):
        got = f"a pair whose label is {kind(label)}"
        if isinstance(label, torch.Tensor):
            got += f" of dtype {label.dtype}"
        return judge.fail("item", wrong_type, index=index, got=got)
    same_image = isinstance(image, torch.Tensor) and image.shape == images[index].shape \
        and torch.equal(image, images[index])
    return judge.check("item", same_image and int(label) == int(labels[index]), WRONG_ITEM,
                       index=index, want=int(labels[index]), image=kind(image), got=int(label))


def _check_transform(judge: Judge, student: Any, images: torch.Tensor,
                     labels: torch.Tensor) -> None:
    """Judges "transform" and "fresh": a transform that gives another result at every call."""
    transform = _CountingTransform()
    with judge.context("building `AugmentedDataset(images, labels, transform)`"):
        dataset = judge.call(student, images, labels, transform)
    at_init = transform.calls
    index = 3
    reads = []
    for _ in range(2):
        with judge.context(f"reading item {index} of a dataset with a transform"):
            item = judge.call(dataset.__getitem__, index, check="transform")
        if not (isinstance(item, (tuple, list)) and len(item) == 2
                and isinstance(item[0], torch.Tensor) and item[0].shape == images[index].shape):
            judge.stop(*AUGMENTED_DATASET.mistakes("wrong_item_type"), index=index,
                       got=kind(item))
        reads.append(item[0])
    added = reads[0] - images[index]
    constant = torch.allclose(added, added.flatten()[0].expand_as(added))
    if torch.equal(reads[0], images[index]):
        judge.require("transform", False, *AUGMENTED_DATASET.mistakes("transform_ignored"),
                      index=index)
    judge.require("transform", constant and float(added.flatten()[0]) >= 1, WRONG_TRANSFORM,
                  index=index, got=first_values(reads[0]), image=first_values(images[index]))
    fresh = not torch.equal(reads[0], reads[1])
    how = (f"the transform ran {at_init} times while the dataset was built and never when an "
           "item was read." if at_init else "the transformed image was kept and returned again.")
    judge.check("fresh", fresh, *AUGMENTED_DATASET.mistakes("transform_at_init"), index=index,
                how=how)


# ============================================================================ pad_collate

LENGTHS = (3, 6, 1, 4)  # not sorted, so an order change shows
FEATURES = 2

NOT_A_TRIPLE = generic("wrong_return_type", "Your `pad_collate` returned {got}; return the tuple "
                                            "`(padded, lengths, labels)` of three tensors.")
WRONG_PADDED = generic(
    "wrong_value",
    "`padded` is {got} of dtype {dtype}; for sequences of lengths {lengths} with {features} "
    "features each it should be a float tensor of shape {want}: (batch, longest, features).")
UNKNOWN_ROW = generic("wrong_value", "Row {row} of `padded` begins {got} (first feature), which "
                                     "is none of the batch's sequences: copy each sequence "
                                     "whole into its own row.")
REPEATED_ROWS = generic("wrong_value", "Your rows hold the sequences {order} of the batch: each "
                                       "sequence should appear in exactly one row.")
WRONG_LABELS = generic("wrong_value", "`{name}` is {kind} of dtype {dtype}, values {values}; for "
                                      "your rows it should be the int64 values {want}.")

PAD_COLLATE = Exercise(
    "pad_collate",
    [Check("returns", "returns (padded, lengths, labels), three tensors"),
     Check("shape", "pads to (batch, longest, features), batch first"),
     Check("padding", "puts each sequence at the start of its row, zeros after it", weight=2,
           lesson=True),
     Check("lengths", "returns each sequence's length as int64"),
     Check("labels", "keeps each label with its sequence, as int64")],
    [Misconception("lengths_missing", "the lengths are not returned",
                   "Your `pad_collate` returned {got}: `(padded, labels)` without the lengths. "
                   "After padding, the lengths are the only record of where each sequence "
                   "ends; return `(padded, lengths, labels)`."),
     Misconception("not_batch_first", "padded batch is (length, batch, features)",
                   "`padded` has shape {got}, that is (longest, batch, features): "
                   "`pad_sequence` returns that layout unless told `batch_first=True`. Return "
                   "shape {want}, one row per sequence."),
     Misconception("wrong_padding_side", "zeros before the sequence instead of after it",
                   "Row {row} of `padded` is sequence {index} with the zeros in front: "
                   "{got}. Put each sequence at the start of its row and the zeros after it, "
                   "where `lengths` says the sequence has ended."),
     Misconception("wrong_padding_value", "padding is not zeros",
                   "Row {row} of `padded` holds sequence {index} and then {got} where it "
                   "should hold zeros: pad with 0."),
     Misconception("wrong_lengths", "the lengths are wrong",
                   "`lengths` is {got}, but the sequences in your rows have lengths {want} "
                   "(int64): use each sequence's number of time steps, `len(sequence)`."),
     Misconception("sorted_without_labels", "sequences sorted by length, labels or lengths "
                   "left in the old order",
                   "Your rows hold the sequences in the order {order} (sorted), but {what} "
                   "{got} is still in the batch's order: a sorted batch must move the "
                   "sequences, their lengths and their labels together, or nothing at all.")])


def _sequences(seed: int) -> list[tuple[torch.Tensor, int]]:
    gen = generator(seed)
    labels = torch.randperm(10, generator=gen)[:len(LENGTHS)].tolist()
    return [(torch.randn(n, FEATURES, generator=gen) + 5.0, label)  # no value near 0
            for n, label in zip(LENGTHS, labels)]


@PAD_COLLATE
def grade_pad_collate(judge: Judge, student: Any, *, data: str = "toy") -> None:
    """Grades `pad_collate` on four sequences of different lengths: the layout of `padded`,
    where the zeros are, and lengths and labels that stay with their sequences."""
    batch = _sequences(judge.seed)
    with judge.context("collating a batch of four sequences"):
        out = judge.call(student, list(batch))
    tensors = isinstance(out, (tuple, list)) and all(isinstance(t, torch.Tensor) for t in out)
    if tensors and len(out) == 2:
        judge.require("returns", False, *PAD_COLLATE.mistakes("lengths_missing"), got=kind(out))
    judge.require("returns", tensors and len(out) == 3, NOT_A_TRIPLE, got=kind(out))
    padded, lengths, labels = out
    want = (len(LENGTHS), max(LENGTHS), FEATURES)
    if tuple(padded.shape) == (want[1], want[0], want[2]):
        judge.require("shape", False, *PAD_COLLATE.mistakes("not_batch_first"),
                      got=shape(padded), want=shape(want))
    judge.require("shape", tuple(padded.shape) == want and padded.is_floating_point(),
                  WRONG_PADDED, got=kind(padded), dtype=str(padded.dtype), lengths=list(LENGTHS),
                  features=FEATURES, want=shape(want))
    order = _rows(judge, padded, batch)
    if order is None:
        return
    _check_column(judge, "lengths", lengths, [LENGTHS[i] for i in order], order,
                  list(LENGTHS), *PAD_COLLATE.mistakes("wrong_lengths"))
    _check_column(judge, "labels", labels, [batch[i][1] for i in order], order,
                  [label for _, label in batch], WRONG_LABELS)


def _rows(judge: Judge, padded: torch.Tensor, batch: list[tuple[torch.Tensor, int]],
          ) -> list[int] | None:
    """Judges "padding"; returns which sequence each row holds, or None when rows hold none."""
    longest = padded.shape[1]
    order: list[int] = []
    for row in range(len(batch)):
        values = padded[row].detach()
        at_start = [i for i, (seq, _) in enumerate(batch) if torch.equal(values[:len(seq)], seq)]
        at_end = [i for i, (seq, _) in enumerate(batch)
                  if torch.equal(values[longest - len(seq):], seq)]
        if at_start:
            index = at_start[0]
            rest = values[len(batch[index][0]):]
            if rest.any() and judge.pending() == "padding":  # the first such row tells all
                judge.fail("padding", *PAD_COLLATE.mistakes("wrong_padding_value"), row=row,
                           index=index, got=first_values(rest))
        elif at_end:
            index = at_end[0]
            if judge.pending() == "padding":
                judge.fail("padding", *PAD_COLLATE.mistakes("wrong_padding_side"), row=row,
                           index=index, got=first_values(values[:, 0], longest))
        else:
            judge.fail("padding", UNKNOWN_ROW, row=row, got=first_values(values[:, 0], longest))
            return None
        order.append(index)
    if sorted(order) != list(range(len(batch))):
        judge.fail("padding", REPEATED_ROWS, order=order)
        return None
    if judge.pending() == "padding":
        judge.check("padding", True)
    return order


def _check_column(judge: Judge, name: str, got: torch.Tensor, want: list[int],
                  order: list[int], unsorted: list[int], mistake: Misconception) -> None:
    """Judges "lengths" or "labels": one int64 value per row, for the sequence in that row."""
    values = got.tolist() if got.dim() == 1 else None
    if values == unsorted and order != sorted(order):
        judge.fail(name, *PAD_COLLATE.mistakes("sorted_without_labels"), order=order,
                   what=f"`{name}`", got=values)
        return
    judge.check(name, values == want and got.dtype == torch.int64, mistake, name=name,
                kind=kind(got), dtype=str(got.dtype), values=first_values(got, 8),
                got=f"{first_values(got, 8)} of dtype {got.dtype}", want=want)


# ============================================================================ make_loader

SAMPLES, BATCH, WORKERS, EPOCHS = 24, 4, 2, 2
SOURCES = ("`random`", "`numpy.random`", "`torch`", "the dataset's own NumPy generator")

NOT_A_LOADER = generic("wrong_return_type", "`make_loader` returned {got}; return a "
                                            "`torch.utils.data.DataLoader`.")
WRONG_SETTINGS = generic(
    "wrong_value",
    "Asked for batches of {batch} and {workers} workers, your loader has "
    "`batch_size={got_batch}` and `num_workers={got_workers}`: pass both arguments on to the "
    "`DataLoader`.")

MAKE_LOADER = Exercise(
    "make_loader",
    [Check("loader", "returns a DataLoader with the batch size and workers asked for"),
     Check("shuffles", "shuffles the samples"),
     Check("order", "gives the same order for the same seed, whatever the global random state"),
     Check("augmentations", "gives the same augmentations for the same seed, in every worker",
           weight=2, lesson=True),
     Check("seed", "gives another order for another seed"),
     Check("workers", "lets every worker and every epoch draw its own augmentations", weight=2,
           lesson=True)],
    [Misconception("no_shuffle", "the loader does not shuffle",
                   "Your loader gave the samples in order, {got}: pass `shuffle=True` (the "
                   "`generator` then fixes the shuffled order)."),
     Misconception("not_reproducible", "same seed, different batches",
                   "Twice with seed {seed} and the same global random state, your loader gave "
                   "{what} {first} and then {second}: something draws a fresh random seed (as "
                   "`torch.Generator().seed()` does). Make the generator with "
                   "`torch.Generator().manual_seed(seed)`."),
     Misconception("global_seed_only", "the order depends on the global random state",
                   "With seed {seed} your loader gave {what} {first}, and {second} after other "
                   "code drew random numbers: {why} Pass `generator=torch.Generator()"
                   ".manual_seed(seed)` to the `DataLoader`: it draws both the shuffle and the "
                   "workers' base seed."),
     Misconception("seed_ignored", "different seeds, same order",
                   "Seeds {seed} and {other} gave the same order, {got}: the seed must pick "
                   "the order; seed the loader's generator with it."),
     Misconception("workers_share_seed", "workers or epochs draw the same augmentation numbers",
                   "{who} drew the same numbers from {source}: {got}. {why}")])


class _Augmenting(Dataset):
    """Item i: (four augmentation numbers, i, the worker that drew them). The numbers come from
    `random`, NumPy's global generator, `torch`, and a NumPy generator the dataset holds, made
    in each worker from that worker's torch seed, as the lesson teaches."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.rng: np.random.Generator | None = None

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        if self.rng is None:  # first use in this process: each worker makes its own
            self.rng = np.random.default_rng(torch.initial_seed())
        draws = [random.random(), np.random.random(), torch.rand(()).item(), self.rng.random()]
        info = get_worker_info()
        return torch.tensor(draws, dtype=torch.float64), index, -1 if info is None else info.id


def _global_state(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class _Epoch:
    """What one pass over the loader gave: the order, the draws and who drew them."""

    def __init__(self, loader: Any) -> None:
        draws, order, workers = [], [], []
        for batch in loader:
            draws.append(batch[0])
            order += batch[1].tolist()
            workers += batch[2].tolist()
        self.draws = torch.cat(draws) if draws else torch.zeros(0, len(SOURCES))
        self.order, self.workers = order, workers

    def of_worker(self, worker: int) -> torch.Tensor:
        return self.draws[[w == worker for w in self.workers]]


def _run(judge: Judge, make_loader: Any, seed: int, state: int, epochs: int = EPOCHS,
         ) -> list[_Epoch]:
    """Builds a loader with ``seed`` after setting the global generators to ``state``, moves
    them on, and iterates ``epochs`` times."""
    _global_state(state)
    with judge.context(f"calling `make_loader(dataset, {BATCH}, {seed}, "
                       f"num_workers={WORKERS})`"):
        loader = judge.call(make_loader, _Augmenting(SAMPLES), BATCH, seed, num_workers=WORKERS)
    if judge.pending() == "loader":
        _check_loader(judge, loader)
    _use_fork(loader)
    _global_state(state + 1000)  # other code drew random numbers since
    with judge.context("iterating over your loader"):
        return [judge.call(_Epoch, loader) for _ in range(epochs)]


def _check_loader(judge: Judge, loader: Any) -> None:
    judge.require("loader", isinstance(loader, DataLoader), NOT_A_LOADER, got=kind(loader))
    judge.require("loader", loader.batch_size == BATCH and loader.num_workers == WORKERS,
                  WRONG_SETTINGS, batch=BATCH, workers=WORKERS, got_batch=loader.batch_size,
                  got_workers=loader.num_workers)


def _use_fork(loader: DataLoader) -> None:
    """Workers start by forking on Linux (the default before Python 3.14): in milliseconds,
    and inside the autograding sandbox."""
    if sys.platform.startswith("linux") and loader.multiprocessing_context is None:
        loader.multiprocessing_context = "fork"


def _order(epochs: list[_Epoch]) -> list[list[int]]:
    return [e.order for e in epochs]


def _same_draws(a: list[_Epoch], b: list[_Epoch]) -> bool:
    return all(torch.equal(x.draws, y.draws) for x, y in zip(a, b))


@MAKE_LOADER
def grade_make_loader(judge: Judge, student: Any, *, data: str = "toy") -> None:
    """Grades `make_loader` by running it twice with the same seed under different global
    random states, once with another seed, and comparing orders and the workers' draws."""
    seed, other = 3 + judge.seed, 11 + judge.seed
    first = _run(judge, student, seed, state=1)
    (no_shuffle,) = MAKE_LOADER.mistakes("no_shuffle")
    shuffled = first[0].order != list(range(SAMPLES))
    judge.check("shuffles", shuffled, no_shuffle,
                got=first_values(torch.tensor(first[0].order), 8))
    again = _run(judge, student, seed, state=2)
    same_state = None
    if _order(first) != _order(again) or not _same_draws(first, again):
        same_state = _run(judge, student, seed, state=1)
    _check_reproducible(judge, "order", seed, first, again, same_state,
                        lambda e: first_values(torch.tensor(e[0].order), 8), "the order")
    _check_reproducible(judge, "augmentations", seed, first, again, same_state,
                        lambda e: first_values(e[0].draws[:, 1], 3),
                        "the `numpy.random` draws")
    if shuffled:
        _check_seed(judge, student, seed, other, first)
    else:
        judge.fail("seed", no_shuffle, got=first_values(torch.tensor(first[0].order), 8))
    _check_workers(judge, first)


def _check_reproducible(judge: Judge, name: str, seed: int, first: list[_Epoch],
                        again: list[_Epoch], same_state: list[_Epoch] | None,
                        describe: Any, what: str) -> None:
    """Judges "order" or "augmentations" across the runs with one seed."""
    def same(a: list[_Epoch], b: list[_Epoch]) -> bool:
        return _order(a) == _order(b) if name == "order" else _same_draws(a, b)

    if same(first, again):
        judge.check(name, True)
        return
    if same_state is not None and not same(first, same_state):
        (mistake,) = MAKE_LOADER.mistakes("not_reproducible")
        judge.fail(name, mistake, seed=seed, what=what, first=describe(first),
                   second=describe(same_state))
    else:
        (mistake,) = MAKE_LOADER.mistakes("global_seed_only")
        why = ("the shuffle draws from torch's global generator." if name == "order" else
               "the workers' seeds come from torch's global generator, because the "
               "`DataLoader` itself has no `generator` of its own (a sampler's generator "
               "does not seed the workers).")
        judge.fail(name, mistake, seed=seed, what=what, first=describe(first),
                   second=describe(again), why=why)


def _check_seed(judge: Judge, student: Any, seed: int, other: int,
                first: list[_Epoch]) -> None:
    (ignored,) = MAKE_LOADER.mistakes("seed_ignored")
    changed = _run(judge, student, other, state=1, epochs=1)
    judge.check("seed", changed[0].order != first[0].order, ignored, seed=seed, other=other,
                got=first_values(torch.tensor(first[0].order), 8))


def _check_workers(judge: Judge, epochs: list[_Epoch]) -> None:
    """Judges "workers": worker 0 against worker 1, and each worker's epochs against each other."""
    (shared,) = MAKE_LOADER.mistakes("workers_share_seed")
    pairs = [(f"Worker 0 and worker 1 of epoch {n + 1}", e.of_worker(0), e.of_worker(1),
              "Every worker started from the same seed, so all of them draw the same "
              "\"random\" augmentations: a `worker_init_fn` that seeds each worker with one "
              "constant, or a generator object copied into every worker, does this. Leave the "
              "seeding to PyTorch (it seeds `random`, `torch` and NumPy in each worker from "
              "the loader's generator) or derive each worker's seed from "
              "`torch.initial_seed()`.")
             for n, e in enumerate(epochs)]
    pairs += [(f"Worker {w} in epoch 1 and in epoch 2", epochs[0].of_worker(w),
               epochs[1].of_worker(w),
               "The workers start afresh every epoch, and yours are seeded the same way each "
               "time (a constant plus the worker's id, say), so every epoch repeats the last "
               "one's augmentations. Derive the seeds from `torch.initial_seed()`, which "
               "PyTorch sets anew from the loader's generator every epoch.")
              for w in range(WORKERS)]
    for who, a, b, why in pairs:
        n = min(len(a), len(b))
        for column, source in enumerate(SOURCES):
            if n and torch.equal(a[:n, column], b[:n, column]):
                judge.fail("workers", shared, who=who, source=source,
                           got=first_values(a[:n, column], 3), why=why)
                return
    judge.check("workers", True)
