"""Real submissions for lesson 11: `AugmentedDataset`, `pad_collate` and `make_loader`."""

from __future__ import annotations

import random

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import DataLoader, Dataset, RandomSampler, get_worker_info

from catalogues import Entry, buggy, correct

# ============================================================================ AugmentedDataset


class DatasetSubclass(Dataset):
    """The lesson's solution."""

    def __init__(self, images, labels, transform=None):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        image = self.images[index]
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.labels[index])


class PlainClass:
    """Any object with `__len__` and `__getitem__` is a map-style dataset; tensor labels."""

    def __init__(self, images, labels, transform=None):
        self.images = images
        self.labels = labels
        self.transform = transform or (lambda image: image)

    def __len__(self):
        return self.labels.shape[0]

    def __getitem__(self, i):
        return self.transform(self.images[i]), self.labels[i]


class PairsList(Dataset):
    """Keeps the pairs (views, not copies) in a list; labels as Python ints."""

    def __init__(self, images, labels, transform=None):
        self.pairs = list(zip(images, labels.tolist()))
        self.transform = transform

    def __len__(self):
        return len(self.pairs)

    def __getitem__(self, index):
        image, label = self.pairs[index]
        return (self.transform(image) if self.transform else image), label


class DatasetStub(Dataset):
    def __init__(self, images, labels, transform=None):
        # YOUR CODE HERE
        raise NotImplementedError()


class TransformAtInit(DatasetSubclass):
    """Augments every image once, when the dataset is built."""

    def __init__(self, images, labels, transform=None):
        super().__init__(images, labels, None)
        if transform is not None:
            self.images = torch.stack([transform(image) for image in images])


class TransformIgnored(DatasetSubclass):
    def __getitem__(self, index):
        return self.images[index], int(self.labels[index])


class LengthOfAnImage(DatasetSubclass):
    def __len__(self):
        return self.images.shape[-1]


class FloatLabel(DatasetSubclass):
    def __getitem__(self, index):
        image, label = super().__getitem__(index)
        return image, float(label)


class AlwaysTransforms(DatasetSubclass):
    """Calls the transform even when there is none."""

    def __getitem__(self, index):
        return self.transform(self.images[index]), int(self.labels[index])


# ============================================================================ pad_collate


def pad_collate_loop(batch):
    """The lesson's solution: a zero tensor of the final shape, each sequence copied in."""
    sequences = [sequence for sequence, _ in batch]
    lengths = torch.tensor([len(s) for s in sequences], dtype=torch.int64)
    padded = torch.zeros(len(batch), int(lengths.max()), sequences[0].shape[1])
    for row, sequence in enumerate(sequences):
        padded[row, :len(sequence)] = sequence
    labels = torch.tensor([label for _, label in batch], dtype=torch.int64)
    return padded, lengths, labels


def pad_collate_library(batch):
    sequences, labels = zip(*batch)
    return (pad_sequence(list(sequences), batch_first=True),
            torch.tensor([len(s) for s in sequences]), torch.tensor(labels))


def pad_collate_sorted(batch):
    """Longest first, as `pack_padded_sequence(enforce_sorted=True)` wants: all three together."""
    batch = sorted(batch, key=lambda pair: len(pair[0]), reverse=True)
    return pad_collate_library(batch)


def pad_collate_f_pad(batch):
    longest = max(len(sequence) for sequence, _ in batch)
    padded = torch.stack([F.pad(sequence, (0, 0, 0, longest - len(sequence)))
                          for sequence, _ in batch])
    return (padded, torch.as_tensor([len(s) for s, _ in batch]),
            torch.as_tensor([label for _, label in batch]))


def pad_collate_stub(batch):
    # YOUR CODE HERE
    raise NotImplementedError()


def pad_collate_stacked(batch):
    """What the default collate does: fails on sequences of different lengths."""
    return (torch.stack([s for s, _ in batch]), torch.tensor([len(s) for s, _ in batch]),
            torch.tensor([label for _, label in batch]))


def pad_collate_left(batch):
    padded, lengths, labels = pad_collate_loop([(s.flip(0), label) for s, label in batch])
    return padded.flip(1), lengths, labels


def pad_collate_time_first(batch):
    sequences, labels = zip(*batch)
    return (pad_sequence(list(sequences)), torch.tensor([len(s) for s in sequences]),
            torch.tensor(labels))


def pad_collate_no_lengths(batch):
    padded, _, labels = pad_collate_loop(batch)
    return padded, labels


def pad_collate_feature_lengths(batch):
    padded, _, labels = pad_collate_loop(batch)
    return padded, torch.tensor([s.shape[-1] for s, _ in batch]), labels


def pad_collate_sorted_sequences_only(batch):
    sequences = sorted((s for s, _ in batch), key=len, reverse=True)
    return (pad_sequence(sequences, batch_first=True), torch.tensor([len(s) for s in sequences]),
            torch.tensor([label for _, label in batch]))


def pad_collate_minus_one(batch):
    sequences, labels = zip(*batch)
    return (pad_sequence(list(sequences), batch_first=True, padding_value=-1.0),
            torch.tensor([len(s) for s in sequences]), torch.tensor(labels))


def pad_collate_float_labels(batch):
    padded, lengths, labels = pad_collate_loop(batch)
    return padded, lengths, labels.float()


# ============================================================================ make_loader


def seed_worker(worker_id):
    """From PyTorch's notes on reproducibility."""
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)
    random.seed(worker_seed)


def make_loader_seed_worker(dataset, batch_size, seed, num_workers=2):
    """The lesson's solution."""
    return DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=num_workers,
                      worker_init_fn=seed_worker,
                      generator=torch.Generator().manual_seed(seed))


def make_loader_generator_only(dataset, batch_size, seed, num_workers=2):
    """PyTorch seeds `random`, `torch` and NumPy in each worker by itself."""
    return DataLoader(dataset, batch_size, shuffle=True, num_workers=num_workers,
                      generator=torch.Generator().manual_seed(seed))


def make_loader_persistent(dataset, batch_size, seed, num_workers=2):
    return DataLoader(dataset, batch_size, shuffle=True, num_workers=num_workers,
                      persistent_workers=True, generator=torch.Generator().manual_seed(seed))


def make_loader_worker_info(dataset, batch_size, seed, num_workers=2):
    """A sampler and the loader share one generator; workers seeded from their info."""
    def init(worker_id):
        np.random.seed(get_worker_info().seed % 2**32)

    generator = torch.Generator()
    generator.manual_seed(seed)
    return DataLoader(dataset, batch_size, sampler=RandomSampler(dataset, generator=generator),
                      num_workers=num_workers, worker_init_fn=init, generator=generator)


def make_loader_stub(dataset, batch_size, seed, num_workers=2):
    # YOUR CODE HERE
    raise NotImplementedError()


def make_loader_unseeded(dataset, batch_size, seed, num_workers=2):
    """`Generator.seed()` takes no seed: it draws a fresh one from the operating system."""
    generator = torch.Generator()
    generator.seed()
    return DataLoader(dataset, batch_size, shuffle=True, num_workers=num_workers,
                      generator=generator)


def make_loader_global_seed(dataset, batch_size, seed, num_workers=2):
    """Seeds the global generator once, when the loader is made."""
    torch.manual_seed(seed)
    return DataLoader(dataset, batch_size, shuffle=True, num_workers=num_workers)


def make_loader_sampler_generator(dataset, batch_size, seed, num_workers=2):
    """The order is seeded, the workers' seeds are not (the loader has no generator)."""
    sampler = RandomSampler(dataset, generator=torch.Generator().manual_seed(seed))
    return DataLoader(dataset, batch_size, sampler=sampler, num_workers=num_workers)


def make_loader_constant(dataset, batch_size, seed, num_workers=2):
    def init(worker_id):
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)

    return DataLoader(dataset, batch_size, shuffle=True, num_workers=num_workers,
                      worker_init_fn=init, generator=torch.Generator().manual_seed(seed))


def make_loader_copied_generator(dataset, batch_size, seed, num_workers=2):
    """Each worker gets a copy of `rng` in the state it had: all draw the same NumPy seed."""
    rng = np.random.default_rng(seed)

    def init(worker_id):
        np.random.seed(int(rng.integers(2**32)))

    return DataLoader(dataset, batch_size, shuffle=True, num_workers=num_workers,
                      worker_init_fn=init, generator=torch.Generator().manual_seed(seed))


def make_loader_seed_plus_id(dataset, batch_size, seed, num_workers=2):
    """Workers differ from each other, but start the same way every epoch."""
    def init(worker_id):
        random.seed(seed + worker_id)
        np.random.seed(seed + worker_id)
        torch.manual_seed(seed + worker_id)

    return DataLoader(dataset, batch_size, shuffle=True, num_workers=num_workers,
                      worker_init_fn=init, generator=torch.Generator().manual_seed(seed))


def make_loader_fixed_seed(dataset, batch_size, seed, num_workers=2):
    return DataLoader(dataset, batch_size, shuffle=True, num_workers=num_workers,
                      generator=torch.Generator().manual_seed(0))


def make_loader_in_order(dataset, batch_size, seed, num_workers=2):
    return DataLoader(dataset, batch_size, num_workers=num_workers,
                      generator=torch.Generator().manual_seed(seed))


def make_loader_no_workers(dataset, batch_size, seed, num_workers=2):
    return DataLoader(dataset, batch_size, shuffle=True,
                      generator=torch.Generator().manual_seed(seed))


SUBMISSIONS: list[Entry] = [
    # ---- AugmentedDataset
    correct("AugmentedDataset", "subclass", DatasetSubclass),
    correct("AugmentedDataset", "plain_class", PlainClass),
    correct("AugmentedDataset", "pairs_list", PairsList),
    buggy("AugmentedDataset", "stub", DatasetStub, {"not_implemented"}, ("dataset", ...),
          "not done yet"),
    buggy("AugmentedDataset", "instance", DatasetSubclass(torch.zeros(2, 1, 28, 28),
                                                          torch.zeros(2, dtype=torch.int64)),
          {"wrong_return_type"}, ("dataset", ...), "should be a class"),
    buggy("AugmentedDataset", "transform_at_init", TransformAtInit, {"transform_at_init"},
          ("fresh",), "ran 12 times while the dataset was built"),
    buggy("AugmentedDataset", "transform_ignored", TransformIgnored, {"transform_ignored"},
          ("transform", ...), "returned image 3 unchanged"),
    buggy("AugmentedDataset", "image_width", LengthOfAnImage, {"wrong_length"}, ("length",),
          "`len(dataset)` is 28 for a dataset of 12 images"),
    buggy("AugmentedDataset", "float_label", FloatLabel, {"wrong_item_type"}, ("item",),
          "label is a Python float"),
    buggy("AugmentedDataset", "always_transforms", AlwaysTransforms, {"raised_exception"},
          ("item",), "without a transform", "'NoneType' object is not callable"),
    # ---- pad_collate
    correct("pad_collate", "loop", pad_collate_loop),
    correct("pad_collate", "pad_sequence", pad_collate_library),
    correct("pad_collate", "sorted_together", pad_collate_sorted),
    correct("pad_collate", "F_pad", pad_collate_f_pad),
    buggy("pad_collate", "stub", pad_collate_stub, {"not_implemented"}, ("returns", ...),
          "not done yet"),
    buggy("pad_collate", "stacked", pad_collate_stacked, {"raised_exception"}, ("returns", ...),
          "stack expects each tensor to be equal size"),
    buggy("pad_collate", "left_padded", pad_collate_left, {"wrong_padding_side"}, ("padding",),
          "with the zeros in front"),
    buggy("pad_collate", "time_first", pad_collate_time_first, {"not_batch_first"},
          ("shape", ...), "shape (6, 4, 2)", "batch_first=True"),
    buggy("pad_collate", "no_lengths", pad_collate_no_lengths, {"lengths_missing"},
          ("returns", ...), "without the lengths"),
    buggy("pad_collate", "feature_lengths", pad_collate_feature_lengths, {"wrong_lengths"},
          ("lengths",), "[3, 6, 1, 4]"),
    buggy("pad_collate", "sorted_sequences_only", pad_collate_sorted_sequences_only,
          {"sorted_without_labels"}, ("labels",), "order [1, 3, 0, 2]", "`labels`"),
    buggy("pad_collate", "minus_one", pad_collate_minus_one, {"wrong_padding_value"},
          ("padding",), "[-1, -1"),
    buggy("pad_collate", "float_labels", pad_collate_float_labels, {"wrong_value"},
          ("labels",), "torch.float32"),
    # ---- make_loader
    correct("make_loader", "seed_worker", make_loader_seed_worker),
    correct("make_loader", "generator_only", make_loader_generator_only),
    correct("make_loader", "persistent", make_loader_persistent),
    correct("make_loader", "worker_info", make_loader_worker_info),
    buggy("make_loader", "stub", make_loader_stub, {"not_implemented"}, ("loader", ...),
          "not done yet"),
    buggy("make_loader", "unseeded", make_loader_unseeded, {"not_reproducible"},
          ("order", "augmentations"), "same global random state", "manual_seed(seed)"),
    buggy("make_loader", "global_seed", make_loader_global_seed,
          {"global_seed_only", "seed_ignored"}, ("order", "augmentations", "seed"),
          "after other code drew random numbers"),
    buggy("make_loader", "sampler_generator", make_loader_sampler_generator,
          {"global_seed_only"}, ("augmentations",), "a sampler's generator"),
    buggy("make_loader", "constant_worker_seed", make_loader_constant, {"workers_share_seed"},
          ("workers",), "Worker 0 and worker 1 of epoch 1"),
    buggy("make_loader", "copied_generator", make_loader_copied_generator,
          {"workers_share_seed"}, ("workers",), "`numpy.random`"),
    buggy("make_loader", "seed_plus_id", make_loader_seed_plus_id, {"workers_share_seed"},
          ("workers",), "Worker 0 in epoch 1 and in epoch 2", "every epoch repeats"),
    buggy("make_loader", "fixed_seed", make_loader_fixed_seed, {"seed_ignored"}, ("seed",),
          "Seeds 3 and 11 gave the same order"),
    buggy("make_loader", "in_order", make_loader_in_order, {"no_shuffle"},
          ("shuffles", "seed"), "`shuffle=True`"),
    buggy("make_loader", "no_workers", make_loader_no_workers, {"wrong_value"},
          ("loader", ...), "`num_workers=0`"),
]
