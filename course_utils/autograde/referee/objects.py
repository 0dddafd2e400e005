"""The referee's probes of the exercises that are classes or data code: the models, the dataset
and the collate function.

A model is judged against the architecture the lesson asks for, with the student's own
parameters: matched to the reference's by shape, they must give the reference's outputs (up to
a constant per row for classifiers: ``log_softmax`` outputs are logits too) and gradients.

Example:
    >>> from torch import nn
    >>> class WithSoftmax(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.net = nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(),
    ...                                  nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10))
    ...     def forward(self, x):
    ...         return self.net(x).softmax(dim=1)
    >>> from course_utils.autograde.sandboxed.serve import run
    >>> from course_utils.autograde.sandboxed.wire import decode, encode
    >>> probe = PROBES["MNISTMLP"](seed=0)
    >>> outcome = decode(run(encode(probe.request), {"MNISTMLP": WithSoftmax}))["outcome"]
    >>> sorted({violation.checks for violation in probe.judge(outcome)})
    [('no_softmax',)]
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from course_utils.autograde.referee import Probe, Violation, everything
from course_utils.autograde.referee.functions import close

Architecture = Callable[[], nn.Module]


def _simple_nn() -> nn.Module:
    return nn.Sequential(nn.Linear(10, 50), nn.ReLU(), nn.Linear(50, 1))


def _mnist_mlp() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 64),
                         nn.ReLU(), nn.Linear(64, 10))


def _mnist_cnn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(32 * 7 * 7, 10))


def matched(reference: nn.Module, parameters: list[Any]) -> bool:
    """Loads the student's ``parameters`` into ``reference``, each to the first unused reference
    parameter of its shape (or, for a matrix used as ``x @ w``, of its transpose's); False when
    the shapes do not pair up one to one."""
    free = list(reference.parameters())
    if len(parameters) != len(free) or not all(isinstance(v, torch.Tensor) for v in parameters):
        return False
    pairs = []
    for value in parameters:
        same = [(param, value) for param in free if param.shape == value.shape]
        same += [(param, value.T) for param in free
                 if value.dim() == 2 and param.shape == value.T.shape]
        if not same:
            return False
        free.remove(same[0][0])
        pairs.append(same[0])
    with torch.no_grad():
        for param, value in pairs:
            param.copy_(value)
    return True


def _module_probe(exercise: str, architecture: Architecture, shapes: list[tuple[int, ...]],
                  input_checks: list[str], classifier: bool, seed: int) -> Probe:
    generator = torch.Generator().manual_seed(seed)
    inputs = [torch.randn(*shape, generator=generator) for shape in shapes]
    cotangents = [torch.randn(shape[0], 10 if classifier else 1, generator=generator)
                  for shape in shapes]
    if classifier:  # rows summing to 0 give logits and log_softmax outputs the same gradients
        cotangents = [c - c.mean(dim=1, keepdim=True) for c in cotangents]

    def judge(outcome: Any) -> list[Violation]:
        if not isinstance(outcome, dict) or "error" in outcome:
            return [everything(exercise, "the class could not be made")]
        reference = architecture()
        if not matched(reference, outcome.get("parameters") or []):
            return [Violation(("module", "parameters"), "its parameters are not the lesson's")]
        found = []
        for (x, cotangent, check), call in zip(zip(inputs, cotangents, input_checks),
                                               outcome.get("outputs") or []):
            want = reference(x)
            got = call.get("returned", {}).get("tensor") if isinstance(call, dict) else None
            if got is None or got.shape != want.shape:
                found.append(Violation((check,), f"no output of shape {tuple(want.shape)}"))
                continue
            if classifier:
                if close(got, want.detach().softmax(1)):
                    found.append(Violation(("no_softmax",), "it outputs probabilities"))
                    continue
                got, want = got.log_softmax(1), want.log_softmax(1)
            if not close(got, want.detach()):
                found.append(Violation(("forward",), "its outputs are not the lesson's"))
                continue
            wanted = torch.autograd.grad((reference(x) * cotangent).sum(),
                                         list(reference.parameters()))
            if not _same_gradients(call.get("grads") or [], wanted):
                found.append(Violation(("gradients_flow",), "its gradients are not the lesson's"))
        return found

    request = {"scenario": "module", "names": [exercise],
               "inputs": [[x, c] for x, c in zip(inputs, cotangents)]}
    return Probe(exercise, request, judge)


def _same_gradients(grads: list[Any], wanted: tuple[torch.Tensor, ...]) -> bool:
    """Each reference gradient has a gradient of its values (or its transpose's) among
    ``grads``."""
    free = [g for g in grads if isinstance(g, torch.Tensor)]
    for want in wanted:
        same = [g for g in free if close(g, want) or (g.dim() == 2 and close(g.T, want))]
        if not same:
            return False
        free.remove(same[0])
    return True


def simple_nn(seed: int) -> Probe:
    return _module_probe("SimpleNN", _simple_nn, [(5, 10), (1, 10)], ["runs_on_samples"] * 2,
                         False, seed)


def mnist_mlp(seed: int) -> Probe:
    return _module_probe("MNISTMLP", _mnist_mlp, [(4, 1, 28, 28), (4, 784), (1, 1, 28, 28),
                                                  (1, 784)],
                         ["runs_on_images", "runs_on_flattened_images"] * 2, True, seed)


def mnist_cnn(seed: int) -> Probe:
    return _module_probe("MNISTCNN", _mnist_cnn, [(3, 1, 28, 28), (1, 1, 28, 28)],
                         ["runs_on_images"] * 2, True, seed)


def pad_collate(seed: int) -> Probe:
    generator = torch.Generator().manual_seed(seed)
    lengths = [3, 5, 2, 4]  # all different: a row is known by its length
    labels = [1, 0, 3, 2]
    batch = [[torch.randn(length, 2, generator=generator), label]
             for length, label in zip(lengths, labels)]
    padded = torch.zeros(len(batch), max(lengths), 2)
    for row, (sequence, _) in enumerate(batch):
        padded[row, :len(sequence)] = sequence

    def judge(outcome: Any) -> list[Violation]:
        got = outcome[0].get("returned", {}) if isinstance(outcome, list) and outcome else {}
        if "error" in (outcome[0] if isinstance(outcome, list) and outcome else {"error": 1}):
            return [everything("pad_collate", "the call raised")]
        items = [item.get("tensor") for item in got.get("items") or []]
        if len(items) != 3 or None in items:
            return [Violation(("returns",), "not three tensors")]
        found = []
        # Sorting by length is allowed when all three follow: rows are found by their length.
        got_lengths = items[1].tolist() if items[1].dtype == torch.int64 else []
        if sorted(got_lengths) != sorted(lengths):
            found.append(Violation(("lengths",), "the lengths are not the sequences'"))
            got_lengths = lengths
        order = [lengths.index(length) for length in got_lengths]
        if items[0].shape != padded.shape:
            found.append(Violation(("shape",), f"padded shape {tuple(items[0].shape)}"))
        elif not close(items[0], padded[order]):
            found.append(Violation(("padding",), "the padded batch is not the lesson's"))
        if items[2].dtype != torch.int64 or items[2].tolist() != [labels[i] for i in order]:
            found.append(Violation(("labels",), "the labels are not the batch's"))
        return found

    return Probe("pad_collate", {"scenario": "call", "names": ["pad_collate"],
                                 "calls": [{"args": [batch], "grad": []}]}, judge)


def augmented_dataset(seed: int) -> Probe:
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(6, 1, 28, 28, generator=generator)
    labels = torch.randint(0, 10, (6,), generator=generator)
    reads = [2, 2, 5]

    def item(got: Any) -> tuple[torch.Tensor | None, float | None]:
        """The image and the label (a Python int, or a 0-dim int64 tensor) of a read item."""
        pair = got.get("returned", {}).get("items") if isinstance(got, dict) else None
        if not pair or len(pair) != 2:
            return None, None
        image, label = pair[0].get("tensor"), pair[1].get("tensor")
        if pair[1].get("type") == "int":
            return image, pair[1].get("number")
        if isinstance(label, torch.Tensor) and label.dtype == torch.int64 and label.dim() == 0:
            return image, label.item()
        return image, None

    def judge(outcome: Any) -> list[Violation]:
        if not isinstance(outcome, dict) or "error" in outcome:
            return [everything("AugmentedDataset", "the dataset could not be made")]
        found = []
        for name, shift in (("plain", lambda k: 0), ("shifting", lambda k: k + 1)):
            part = outcome.get(name) or {}
            length = part.get("length") or {}
            if length.get("type") != "int" or length.get("number") != len(images):
                found.append(Violation(("length",), f"{name}: the length is not {len(images)}"))
            read = [item(got) for got in part.get("items") or []]
            if len(read) != len(reads) or any(x is None or y is None for x, y in read):
                found.append(Violation(("item",), f"{name}: no (image, int label) pairs"))
                continue
            if [y for _, y in read] != labels[reads].tolist():
                found.append(Violation(("item",), f"{name}: the labels are not the data's"))
            if any(not close(x, images[i] + shift(k)) for k, (i, (x, _)) in
                   enumerate(zip(reads, read))):
                transformed = [close(x, images[i]) for i, (x, _) in zip(reads, read)]
                suspects = ("transform",) if all(transformed) else ("fresh", "transform")
                found.append(Violation(suspects if name == "shifting" else ("item",),
                                       f"{name}: the items are not the transformed images"))
        return found

    return Probe("AugmentedDataset", {"scenario": "dataset", "names": ["AugmentedDataset"],
                                      "data": [images, labels], "reads": reads}, judge)


PROBES: dict[str, Callable[[int], Probe]] = {
    "SimpleNN": simple_nn, "MNISTMLP": mnist_mlp, "MNISTCNN": mnist_cnn,
    "pad_collate": pad_collate, "AugmentedDataset": augmented_dataset}
