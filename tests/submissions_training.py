"""Real submissions for lessons 05-09, correct ones and one or more for each known mistake.

Each is catalogued with the diagnosis codes its grading must report (none for a correct one)
and the declared checks it fails.
The ``fit`` submissions call the ``train_one_epoch`` and ``evaluate`` submissions above them,
as a notebook's ``fit`` calls the functions defined in earlier cells.
"""

from __future__ import annotations

import math
import pathlib
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from catalogues import Entry
from course_utils.data import TensorLoader, toy_classification, toy_regression


SUBMISSIONS: list[Entry] = []


def submission(exercise: str, *codes: str, fails: tuple[Any, ...] = (), **options: Any,
               ) -> Callable[[Any], Any]:
    """Catalogues the decorated function for ``exercise``: its codes and the checks it fails."""

    def register(fn: Any) -> Any:
        SUBMISSIONS.append(Entry(exercise, fn.__name__, fn, frozenset(codes), fails, **options))
        return fn

    return register


def register_pair(name: str, save: Callable[..., Any], load: Callable[..., Any], *codes: str,
                  fails: tuple[Any, ...] = ()) -> None:
    """Catalogues ``(save_checkpoint, load_checkpoint)`` as a checkpoint submission."""
    SUBMISSIONS.append(Entry("checkpoint", name, (save, load), frozenset(codes), fails))


# Globals of the kind a notebook has, which a submission may use by mistake instead of its
# arguments.
train_loader = TensorLoader(toy_regression(n=32, seed=7).tensors, batch_size=8)
val_loader = TensorLoader(toy_classification(n=24, seed=7).tensors, batch_size=8)


# ============================================================================ train_step

@submission("train_step")
def train_step_zero_grad_first(model, inputs, targets, loss_fn, optimizer):
    optimizer.zero_grad()
    loss = loss_fn(model(inputs), targets)
    loss.backward()
    optimizer.step()
    return loss.item()


@submission("train_step")
def train_step_zero_grad_after_step(model, inputs, targets, loss_fn, optimizer):
    outputs = model(inputs)
    loss = loss_fn(outputs, targets)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    return loss.item()


@submission("train_step")
def train_step_model_zero_grad(model, inputs, targets, loss_fn, optimizer):
    model.zero_grad()
    loss = loss_fn(model.forward(inputs), targets)
    loss.backward()
    optimizer.step()
    return float(loss)


@submission("train_step")
def train_step_keeps_zero_tensors(model, inputs, targets, loss_fn, optimizer):
    optimizer.zero_grad(set_to_none=False)
    loss = loss_fn(model(inputs), targets)
    loss.backward()
    optimizer.step()
    return np.float64(loss.detach().numpy())


def _batch_loss(model, inputs, targets, loss_fn):
    predictions = model(inputs)
    return loss_fn(predictions, targets)


@submission("train_step")
def train_step_with_helper(model, inputs, targets, loss_fn, optimizer):
    loss = _batch_loss(model, inputs, targets, loss_fn)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    value = loss.item()
    print(f"batch loss {value:.3f}")
    return value


@submission("train_step")
def train_step_with_closure(model, inputs, targets, loss_fn, optimizer):
    # The form LBFGS requires: step() calls the closure to compute the loss and gradients.
    def closure():
        optimizer.zero_grad()
        loss = loss_fn(model(inputs), targets)
        loss.backward()
        return loss

    return optimizer.step(closure).item()


@submission("train_step", "no_zero_grad", fails=("gradients",))
def train_step_closure_without_zero_grad(model, inputs, targets, loss_fn, optimizer):
    def closure():
        loss = loss_fn(model(inputs), targets)
        loss.backward()
        return loss

    return optimizer.step(closure=closure).item()


@submission("train_step", "no_zero_grad", fails=("gradients",))
def train_step_no_zero_grad(model, inputs, targets, loss_fn, optimizer):
    loss = loss_fn(model(inputs), targets)
    loss.backward()
    optimizer.step()
    return loss.item()


@submission("train_step", "zero_grad_after_backward", fails=("gradients",))
def train_step_zero_grad_after_backward(model, inputs, targets, loss_fn, optimizer):
    loss = loss_fn(model(inputs), targets)
    loss.backward()
    optimizer.zero_grad()
    optimizer.step()
    return loss.item()


@submission("train_step", "no_backward", fails=("backward_called", "gradients"))
def train_step_no_backward(model, inputs, targets, loss_fn, optimizer):
    optimizer.zero_grad()
    loss = loss_fn(model(inputs), targets)
    optimizer.step()
    return loss.item()


@submission("train_step", "no_step", fails=("step_called", "gradients"))
def train_step_no_step(model, inputs, targets, loss_fn, optimizer):
    optimizer.zero_grad()
    loss = loss_fn(model(inputs), targets)
    loss.backward()
    return loss.item()


@submission("train_step", "step_before_backward", fails=("step_after_backward", "gradients"))
def train_step_step_before_backward(model, inputs, targets, loss_fn, optimizer):
    optimizer.zero_grad()
    loss = loss_fn(model(inputs), targets)
    optimizer.step()
    loss.backward()
    return loss.item()


@submission("train_step", "step_before_backward", fails=("returns_float", ...))  # autograd raises
def train_step_steps_on_previous_gradient(model, inputs, targets, loss_fn, optimizer):
    loss = loss_fn(model(inputs), targets)
    optimizer.step()
    optimizer.zero_grad()
    loss.backward()
    return loss.item()


@submission("train_step", "wrong_value", fails=("one_step",))
def train_step_two_steps(model, inputs, targets, loss_fn, optimizer):
    optimizer.zero_grad()
    loss = loss_fn(model(inputs), targets)
    loss.backward()
    optimizer.step()
    optimizer.step()
    return loss.item()


@submission("train_step", "wrong_value", fails=("returned_loss",))
def train_step_recomputes_loss(model, inputs, targets, loss_fn, optimizer):
    optimizer.zero_grad()
    loss_fn(model(inputs), targets).backward()
    optimizer.step()
    return loss_fn(model(inputs), targets).item()


@submission("train_step", "loss_tensor_accumulated", fails=("returns_float",))
def train_step_returns_loss_tensor(model, inputs, targets, loss_fn, optimizer):
    optimizer.zero_grad()
    loss = loss_fn(model(inputs), targets)
    loss.backward()
    optimizer.step()
    return loss


@submission("train_step", "wrong_return_type", fails=("returns_float",))
def train_step_returns_detached_tensor(model, inputs, targets, loss_fn, optimizer):
    optimizer.zero_grad()
    loss = loss_fn(model(inputs), targets)
    loss.backward()
    optimizer.step()
    return loss.detach()


@submission("train_step", "wrong_return_type", fails=("returns_float", "returned_loss"))
def train_step_forgets_return(model, inputs, targets, loss_fn, optimizer):
    optimizer.zero_grad()
    loss = loss_fn(model(inputs), targets)
    loss.backward()
    optimizer.step()


@submission("train_step", "wrong_value", fails=("finite", "returned_loss"))
def train_step_returns_nan(model, inputs, targets, loss_fn, optimizer):
    optimizer.zero_grad()
    loss = loss_fn(model(inputs), targets)
    loss.backward()
    optimizer.step()
    return math.nan  # the placeholder was never replaced


@submission("train_step", "not_implemented", fails=("returns_float", ...))
def train_step_stub(model, inputs, targets, loss_fn, optimizer):
    raise NotImplementedError()


@submission("train_step", "raised_exception", fails=("returns_float", ...))
def train_step_swaps_arguments(model, inputs, targets, loss_fn, optimizer):
    optimizer.zero_grad()
    loss = loss_fn(model(targets), inputs)  # the model gets (N, 1) targets: a shape error
    loss.backward()
    optimizer.step()
    return loss.item()


@submission("train_step", "timeout", fails=("returns_float", ...), timeout=0.5)
def train_step_until_converged(model, inputs, targets, loss_fn, optimizer):
    loss = loss_fn(model(inputs), targets)
    while loss.item() > 0:  # a mean squared error is never exactly 0 here
        optimizer.zero_grad()
        loss = loss_fn(model(inputs), targets)
        loss.backward()
        optimizer.step()
    return loss.item()


# ============================================================================ accumulation_step

@submission("accumulation_step")
def accumulation_step_scaled_losses(model, micro_batches, loss_fn, optimizer):
    optimizer.zero_grad()
    mean_loss = 0.0
    for inputs, targets in micro_batches:
        loss = loss_fn(model(inputs), targets) / len(micro_batches)
        loss.backward()
        mean_loss += loss.item()
    optimizer.step()
    return mean_loss


@submission("accumulation_step")
def accumulation_step_zero_grad_after_step(model, micro_batches, loss_fn, optimizer):
    losses = []
    for inputs, targets in micro_batches:
        loss = loss_fn(model(inputs), targets)
        (loss / len(micro_batches)).backward()
        losses.append(loss.item())
    optimizer.step()
    model.zero_grad(set_to_none=False)
    return sum(losses) / len(losses)


@submission("accumulation_step")
def accumulation_step_one_backward(model, micro_batches, loss_fn, optimizer):
    optimizer.zero_grad()
    total = sum(loss_fn(model(inputs), targets) for inputs, targets in micro_batches)
    mean = total / len(micro_batches)
    mean.backward()
    optimizer.step()
    return mean.item()


@submission("accumulation_step")
def accumulation_step_concatenated(model, micro_batches, loss_fn, optimizer):
    inputs = torch.cat([x for x, _ in micro_batches])
    targets = torch.cat([y for _, y in micro_batches])
    optimizer.zero_grad()
    loss = loss_fn(model(inputs), targets)
    loss.backward()
    optimizer.step()
    return loss.item()


@submission("accumulation_step", "no_zero_grad", fails=("gradients",))
def accumulation_step_no_zero_grad(model, micro_batches, loss_fn, optimizer):
    mean_loss = 0.0
    for inputs, targets in micro_batches:
        loss = loss_fn(model(inputs), targets) / len(micro_batches)
        loss.backward()
        mean_loss += loss.item()
    optimizer.step()
    return mean_loss


@submission("accumulation_step", "no_loss_scaling", fails=("gradients",))
def accumulation_step_no_loss_scaling(model, micro_batches, loss_fn, optimizer):
    optimizer.zero_grad()
    losses = []
    for inputs, targets in micro_batches:
        loss = loss_fn(model(inputs), targets)
        loss.backward()
        losses.append(loss.item())
    optimizer.step()
    return sum(losses) / len(losses)


@submission("accumulation_step", "zero_grad_each_micro_batch", fails=("gradients",))
def accumulation_step_zero_grad_in_loop(model, micro_batches, loss_fn, optimizer):
    mean_loss = 0.0
    for inputs, targets in micro_batches:
        optimizer.zero_grad()
        loss = loss_fn(model(inputs), targets) / len(micro_batches)
        loss.backward()
        mean_loss += loss.item()
    optimizer.step()
    return mean_loss


@submission("accumulation_step", "zero_grad_each_micro_batch", fails=("gradients",))
def accumulation_step_zero_grad_in_loop_unscaled(model, micro_batches, loss_fn, optimizer):
    losses = []
    for inputs, targets in micro_batches:
        optimizer.zero_grad()
        loss = loss_fn(model(inputs), targets)
        loss.backward()
        losses.append(loss.item())
    optimizer.step()
    return float(np.mean(losses))


@submission("accumulation_step", "step_each_micro_batch", fails=("one_step", "returned_loss"))
def accumulation_step_step_in_loop(model, micro_batches, loss_fn, optimizer):
    optimizer.zero_grad()
    mean_loss = 0.0
    for inputs, targets in micro_batches:
        loss = loss_fn(model(inputs), targets) / len(micro_batches)
        loss.backward()
        optimizer.step()
        mean_loss += loss.item()
    return mean_loss


@submission("accumulation_step", "wrong_value", fails=("returned_loss",))
def accumulation_step_returns_sum(model, micro_batches, loss_fn, optimizer):
    optimizer.zero_grad()
    total = 0.0
    for inputs, targets in micro_batches:
        loss = loss_fn(model(inputs), targets)
        (loss / len(micro_batches)).backward()
        total += loss.item()
    optimizer.step()
    return total


@submission("accumulation_step", "loss_tensor_accumulated", fails=("returns_float",))
def accumulation_step_sums_loss_tensors(model, micro_batches, loss_fn, optimizer):
    optimizer.zero_grad()
    mean_loss = 0
    for inputs, targets in micro_batches:
        loss = loss_fn(model(inputs), targets) / len(micro_batches)
        loss.backward()
        mean_loss += loss
    optimizer.step()
    return mean_loss


@submission("accumulation_step", "no_step", fails=("step_called", "gradients"))
def accumulation_step_no_step(model, micro_batches, loss_fn, optimizer):
    optimizer.zero_grad()
    mean_loss = 0.0
    for inputs, targets in micro_batches:
        loss = loss_fn(model(inputs), targets) / len(micro_batches)
        loss.backward()
        mean_loss += loss.item()
    return mean_loss


@submission("accumulation_step", "not_implemented", fails=("returns_float", ...))
def accumulation_step_stub(model, micro_batches, loss_fn, optimizer):
    raise NotImplementedError()


@submission("accumulation_step", "raised_exception", fails=("returns_float", ...))
def accumulation_step_unpacks_wrongly(model, micro_batches, loss_fn, optimizer):
    inputs, targets = micro_batches  # a list of 3 pairs, not one pair
    optimizer.zero_grad()
    loss = loss_fn(model(inputs), targets)
    loss.backward()
    optimizer.step()
    return loss.item()


# ============================================================================ train_one_epoch

@submission("train_one_epoch")
def train_one_epoch_weighted(model, loader, loss_fn, optimizer, device="cpu"):
    model.train()
    total = 0.0
    for inputs, targets in loader:
        optimizer.zero_grad()
        loss = loss_fn(model(inputs), targets)
        loss.backward()
        optimizer.step()
        total += loss.item() * len(inputs)
    return total / len(loader.dataset)


@submission("train_one_epoch")
def train_one_epoch_tqdm_device(model, loader, loss_fn, optimizer, device="cpu"):
    model.train()
    model.to(device)
    running = 0.0
    for inputs, targets in tqdm(loader, desc="training"):
        inputs, targets = inputs.to(device), targets.to(device)
        loss = loss_fn(model(inputs), targets)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        running += loss.item() * inputs.size(0)
    return running / len(loader.dataset)


@submission("train_one_epoch")
def train_one_epoch_counts_samples(model, loader, loss_fn, optimizer, device="cpu"):
    model.train()
    loss_sum, seen = 0.0, 0
    for batch, (inputs, targets) in enumerate(loader):
        model.zero_grad(set_to_none=False)
        loss = loss_fn(model(inputs), targets)
        loss.backward()
        optimizer.step()
        loss_sum += loss.item() * len(targets)
        seen += len(targets)
    return loss_sum / seen


@submission("train_one_epoch")
def train_one_epoch_detached_total(model, loader, loss_fn, optimizer, device="cpu"):
    model.train()
    total = torch.zeros(())
    for inputs, targets in loader:
        optimizer.zero_grad()
        loss = loss_fn(model(inputs), targets)
        loss.backward()
        optimizer.step()
        total += loss.detach() * len(targets)
    return (total / len(loader.dataset)).item()


@submission("train_one_epoch")
def train_one_epoch_with_train_step(model, loader, loss_fn, optimizer, device="cpu"):
    model.train()
    losses, sizes = [], []
    for inputs, targets in loader:
        losses.append(train_step_zero_grad_first(model, inputs, targets, loss_fn, optimizer))
        sizes.append(len(inputs))
    return float(np.average(losses, weights=sizes))


@submission("train_one_epoch")
def train_one_epoch_with_closure(model, loader, loss_fn, optimizer, device="cpu"):
    model.train()
    total, count = 0.0, 0
    for inputs, targets in loader:
        def closure():
            optimizer.zero_grad()
            loss = loss_fn(model(inputs), targets)
            loss.backward()
            return loss

        loss = optimizer.step(closure=closure)
        total += loss.item() * len(inputs)
        count += len(inputs)
    return total / count


@submission("train_one_epoch", "no_zero_grad", fails=("gradients",))
def train_one_epoch_no_zero_grad(model, loader, loss_fn, optimizer, device="cpu"):
    model.train()
    total = 0.0
    for inputs, targets in loader:
        loss = loss_fn(model(inputs), targets)
        loss.backward()
        optimizer.step()
        total += loss.item() * len(inputs)
    return total / len(loader.dataset)


@submission("train_one_epoch", "zero_grad_after_backward", fails=("gradients",))
def train_one_epoch_zero_grad_after_backward(model, loader, loss_fn, optimizer, device="cpu"):
    model.train()
    total = 0.0
    for inputs, targets in loader:
        loss = loss_fn(model(inputs), targets)
        loss.backward()
        optimizer.zero_grad()
        optimizer.step()
        total += loss.item() * len(inputs)
    return total / len(loader.dataset)


@submission("train_one_epoch", "no_backward", fails=("backward_called", "gradients"))
def train_one_epoch_no_backward(model, loader, loss_fn, optimizer, device="cpu"):
    model.train()
    total = 0.0
    for inputs, targets in loader:
        optimizer.zero_grad()
        loss = loss_fn(model(inputs), targets)
        optimizer.step()
        total += loss.item() * len(inputs)
    return total / len(loader.dataset)


@submission("train_one_epoch", "no_step", fails=("step_called", "gradients"))
def train_one_epoch_no_step(model, loader, loss_fn, optimizer, device="cpu"):
    model.train()
    total = 0.0
    for inputs, targets in loader:
        optimizer.zero_grad()
        loss = loss_fn(model(inputs), targets)
        loss.backward()
        total += loss.item() * len(inputs)
    return total / len(loader.dataset)


@submission("train_one_epoch", "step_before_backward", fails=("step_after_backward", "gradients"))
def train_one_epoch_step_before_backward(model, loader, loss_fn, optimizer, device="cpu"):
    model.train()
    total = 0.0
    for inputs, targets in loader:
        optimizer.zero_grad()
        loss = loss_fn(model(inputs), targets)
        optimizer.step()
        loss.backward()
        total += loss.item() * len(inputs)
    return total / len(loader.dataset)


@submission("train_one_epoch", "step_before_backward",
            fails=("returns_float", ...))  # autograd raises
def train_one_epoch_steps_on_previous_gradient(model, loader, loss_fn, optimizer, device="cpu"):
    model.train()
    total = 0.0
    for inputs, targets in loader:
        loss = loss_fn(model(inputs), targets)
        optimizer.step()
        optimizer.zero_grad()
        loss.backward()
        total += loss.item() * len(inputs)
    return total / len(loader.dataset)


@submission("train_one_epoch", "unweighted_batch_average", fails=("mean_loss",))
def train_one_epoch_mean_of_batch_means(model, loader, loss_fn, optimizer, device="cpu"):
    model.train()
    total = 0.0
    for inputs, targets in loader:
        optimizer.zero_grad()
        loss = loss_fn(model(inputs), targets)
        loss.backward()
        optimizer.step()
        total += loss.item()
    return total / len(loader)


@submission("train_one_epoch", "returns_last_batch_loss", fails=("mean_loss",))
def train_one_epoch_returns_last_loss(model, loader, loss_fn, optimizer, device="cpu"):
    model.train()
    for inputs, targets in loader:
        optimizer.zero_grad()
        loss = loss_fn(model(inputs), targets)
        loss.backward()
        optimizer.step()
    return loss.item()


@submission("train_one_epoch", "loss_tensor_accumulated", fails=("returns_float",))
def train_one_epoch_sums_loss_tensors(model, loader, loss_fn, optimizer, device="cpu"):
    model.train()
    total = 0.0
    for inputs, targets in loader:
        optimizer.zero_grad()
        loss = loss_fn(model(inputs), targets)
        loss.backward()
        optimizer.step()
        total += loss * len(inputs)
    return total / len(loader.dataset)


@submission("train_one_epoch", "wrong_return_type", fails=("returns_float",))
def train_one_epoch_returns_tensor(model, loader, loss_fn, optimizer, device="cpu"):
    model.train()
    total = 0.0
    for inputs, targets in loader:
        optimizer.zero_grad()
        loss = loss_fn(model(inputs), targets)
        loss.backward()
        optimizer.step()
        total += loss.detach() * len(inputs)
    return total / len(loader.dataset)


@submission("train_one_epoch", "wrong_return_type", fails=("returns_float", "mean_loss"))
def train_one_epoch_returns_batch_losses(model, loader, loss_fn, optimizer, device="cpu"):
    model.train()
    losses = []
    for inputs, targets in loader:
        optimizer.zero_grad()
        loss = loss_fn(model(inputs), targets)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


@submission("train_one_epoch", "no_train_mode", fails=("train_mode",))
def train_one_epoch_no_train_mode(model, loader, loss_fn, optimizer, device="cpu"):
    total = 0.0
    for inputs, targets in loader:
        optimizer.zero_grad()
        loss = loss_fn(model(inputs), targets)
        loss.backward()
        optimizer.step()
        total += loss.item() * len(inputs)
    return total / len(loader.dataset)


@submission("train_one_epoch", "ignores_loader", fails=("loader", ...))
def train_one_epoch_global_loader(model, loader, loss_fn, optimizer, device="cpu"):
    model.train()
    total = 0.0
    for inputs, targets in train_loader:
        optimizer.zero_grad()
        loss = loss_fn(model(inputs), targets)
        loss.backward()
        optimizer.step()
        total += loss.item() * len(inputs)
    return total / len(train_loader.dataset)


@submission("train_one_epoch", "ignores_loader", fails=("loader", ...))
def train_one_epoch_first_batch_only(model, loader, loss_fn, optimizer, device="cpu"):
    model.train()
    inputs, targets = next(iter(loader))
    optimizer.zero_grad()
    loss = loss_fn(model(inputs), targets)
    loss.backward()
    optimizer.step()
    return loss.item()


@submission("train_one_epoch", "wrong_value", fails=("finite", "mean_loss"))
def train_one_epoch_nan_start(model, loader, loss_fn, optimizer, device="cpu"):
    model.train()
    total = math.nan  # meant to be 0.0
    for inputs, targets in loader:
        optimizer.zero_grad()
        loss = loss_fn(model(inputs), targets)
        loss.backward()
        optimizer.step()
        total += loss.item() * len(inputs)
    return total / len(loader.dataset)


@submission("train_one_epoch", "wrong_return_type", fails=("returns_float", "mean_loss"))
def train_one_epoch_forgets_return(model, loader, loss_fn, optimizer, device="cpu"):
    model.train()
    for inputs, targets in loader:
        optimizer.zero_grad()
        loss_fn(model(inputs), targets).backward()
        optimizer.step()


@submission("train_one_epoch", "not_implemented", fails=("returns_float", ...))
def train_one_epoch_stub(model, loader, loss_fn, optimizer, device="cpu"):
    raise NotImplementedError()


@submission("train_one_epoch", "raised_exception", fails=("returns_float", ...))
def train_one_epoch_indexes_loader(model, loader, loss_fn, optimizer, device="cpu"):
    model.train()
    total = 0.0
    for i in range(len(loader)):
        inputs, targets = loader[i]  # loaders cannot be indexed
        optimizer.zero_grad()
        loss = loss_fn(model(inputs), targets)
        loss.backward()
        optimizer.step()
        total += loss.item() * len(inputs)
    return total / len(loader.dataset)


@submission("train_one_epoch", "timeout", fails=("returns_float", ...), timeout=0.5)
def train_one_epoch_endless(model, loader, loss_fn, optimizer, device="cpu"):
    model.train()
    batches = iter(loader)
    total, batch = 0.0, None
    while True:  # meant to stop when the loader is exhausted, but never checks
        batch = next(batches, batch)
        inputs, targets = batch
        optimizer.zero_grad()
        loss = loss_fn(model(inputs), targets)
        loss.backward()
        optimizer.step()
        total += loss.item()


# ============================================================================ evaluate

@submission("evaluate")
def evaluate_no_grad(model, loader, loss_fn, device="cpu"):
    model.eval()
    total_loss, correct = 0.0, 0
    with torch.no_grad():
        for inputs, targets in loader:
            outputs = model(inputs)
            total_loss += loss_fn(outputs, targets).item() * len(targets)
            correct += (outputs.argmax(dim=1) == targets).sum().item()
    return total_loss / len(loader.dataset), correct / len(loader.dataset)


@submission("evaluate")
def evaluate_inference_mode_tqdm(model, loader, loss_fn, device="cpu"):
    model.eval()
    model.to(device)
    total_loss, correct, seen = 0.0, 0, 0
    with torch.inference_mode():
        for inputs, targets in tqdm(loader, desc="validating", leave=False):
            inputs, targets = inputs.to(device), targets.to(device)
            outputs = model(inputs)
            total_loss += loss_fn(outputs, targets).item() * inputs.size(0)
            _, predicted = torch.max(outputs, 1)
            correct += int((predicted == targets).sum())
            seen += inputs.size(0)
    model.train()
    return total_loss / seen, correct / seen


@submission("evaluate")
def evaluate_summed_loss(model, loader, loss_fn, device="cpu"):
    model.eval()
    loss_sum = 0.0
    hits = []
    with torch.no_grad():
        for inputs, targets in loader:
            logits = model(inputs)
            loss_sum += F.cross_entropy(logits, targets, reduction="sum").item()
            hits.append(logits.argmax(1) == targets)
    return loss_sum / len(loader.dataset), torch.cat(hits).float().mean().item()


@submission("evaluate")
@torch.no_grad()
def evaluate_decorated(model, loader, loss_fn, device="cpu"):
    model.eval()
    losses, correct = [], 0
    for inputs, targets in loader:
        outputs = model(inputs)
        losses.append(loss_fn(outputs, targets).item() * len(targets))
        correct += (outputs.argmax(1) == targets).sum().item()
    n = len(loader.dataset)
    return sum(losses) / n, correct / n


@submission("evaluate", "no_eval_mode", fails=("eval_mode",))
def evaluate_no_eval_mode(model, loader, loss_fn, device="cpu"):
    total_loss, correct = 0.0, 0
    with torch.no_grad():
        for inputs, targets in loader:
            outputs = model(inputs)
            total_loss += loss_fn(outputs, targets).item() * len(targets)
            correct += (outputs.argmax(dim=1) == targets).sum().item()
    return total_loss / len(loader.dataset), correct / len(loader.dataset)


@submission("evaluate", "grad_enabled_in_eval", fails=("no_graph",))
def evaluate_with_graph(model, loader, loss_fn, device="cpu"):
    model.eval()
    total_loss, correct = 0.0, 0
    for inputs, targets in loader:
        outputs = model(inputs)
        total_loss += loss_fn(outputs, targets).item() * len(targets)
        correct += (outputs.argmax(dim=1) == targets).sum().item()
    return total_loss / len(loader.dataset), correct / len(loader.dataset)


@submission("evaluate", "updates_parameters", "grad_enabled_in_eval",
            fails=("no_graph", "unchanged"))
def evaluate_trains_on_validation(model, loader, loss_fn, device="cpu"):
    model.eval()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    total_loss, correct = 0.0, 0
    for inputs, targets in loader:
        outputs = model(inputs)
        loss = loss_fn(outputs, targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total_loss += loss.item() * len(targets)
        correct += (outputs.argmax(dim=1) == targets).sum().item()
    return total_loss / len(loader.dataset), correct / len(loader.dataset)


@submission("evaluate", "accuracy_percent", fails=("accuracy",))
def evaluate_percent(model, loader, loss_fn, device="cpu"):
    loss, accuracy = evaluate_no_grad(model, loader, loss_fn, device)
    return loss, 100 * accuracy


@submission("evaluate", "wrong_accuracy", fails=("accuracy",))
def evaluate_divides_by_batches(model, loader, loss_fn, device="cpu"):
    model.eval()
    total_loss, correct = 0.0, 0
    with torch.no_grad():
        for inputs, targets in loader:
            outputs = model(inputs)
            total_loss += loss_fn(outputs, targets).item() * len(targets)
            correct += (outputs.argmax(dim=1) == targets).sum().item()
    return total_loss / len(loader.dataset), correct / len(loader)


@submission("evaluate", "wrong_accuracy", fails=("accuracy",))
def evaluate_compares_max_values(model, loader, loss_fn, device="cpu"):
    model.eval()
    total_loss, correct = 0.0, 0
    with torch.no_grad():
        for inputs, targets in loader:
            outputs = model(inputs)
            total_loss += loss_fn(outputs, targets).item() * len(targets)
            correct += (outputs.max(dim=1).values == targets).sum().item()  # values, not indices
    return total_loss / len(loader.dataset), correct / len(loader.dataset)


@submission("evaluate", "unweighted_batch_average", fails=("mean_loss",))
def evaluate_mean_of_batch_means(model, loader, loss_fn, device="cpu"):
    model.eval()
    losses, correct = [], 0
    with torch.no_grad():
        for inputs, targets in loader:
            outputs = model(inputs)
            losses.append(loss_fn(outputs, targets).item())
            correct += (outputs.argmax(dim=1) == targets).sum().item()
    return sum(losses) / len(losses), correct / len(loader.dataset)


@submission("evaluate", "unweighted_batch_average", fails=("accuracy",))
def evaluate_mean_of_batch_accuracies(model, loader, loss_fn, device="cpu"):
    model.eval()
    total_loss, accuracies = 0.0, []
    with torch.no_grad():
        for inputs, targets in loader:
            outputs = model(inputs)
            total_loss += loss_fn(outputs, targets).item() * len(targets)
            accuracies.append((outputs.argmax(dim=1) == targets).float().mean().item())
    return total_loss / len(loader.dataset), float(np.mean(accuracies))


@submission("evaluate", "returns_last_batch_loss", fails=("mean_loss",))
def evaluate_last_batch_loss(model, loader, loss_fn, device="cpu"):
    model.eval()
    correct = 0
    with torch.no_grad():
        for inputs, targets in loader:
            outputs = model(inputs)
            loss = loss_fn(outputs, targets)
            correct += (outputs.argmax(dim=1) == targets).sum().item()
    return loss.item(), correct / len(loader.dataset)


@submission("evaluate", "loss_tensor_accumulated", "grad_enabled_in_eval",
            fails=("no_graph", "returns_float"))
def evaluate_sums_loss_tensors(model, loader, loss_fn, device="cpu"):
    model.eval()
    total_loss, correct = 0.0, 0
    for inputs, targets in loader:
        outputs = model(inputs)
        total_loss += loss_fn(outputs, targets) * len(targets)
        correct += (outputs.argmax(dim=1) == targets).sum().item()
    return total_loss / len(loader.dataset), correct / len(loader.dataset)


@submission("evaluate", "wrong_return_type", fails=("returns_float",))
def evaluate_tensor_accuracy(model, loader, loss_fn, device="cpu"):
    model.eval()
    total_loss, correct = 0.0, 0
    with torch.no_grad():
        for inputs, targets in loader:
            outputs = model(inputs)
            total_loss += loss_fn(outputs, targets).item() * len(targets)
            correct += (outputs.argmax(dim=1) == targets).sum()
    return total_loss / len(loader.dataset), correct / len(loader.dataset)


@submission("evaluate", "wrong_return_type", fails=("returns_pair", ...))
def evaluate_returns_dict(model, loader, loss_fn, device="cpu"):
    loss, accuracy = evaluate_no_grad(model, loader, loss_fn, device)
    return {"loss": loss, "accuracy": accuracy}


@submission("evaluate", "ignores_loader", fails=("loader", ...))
def evaluate_global_loader(model, loader, loss_fn, device="cpu"):
    return evaluate_no_grad(model, val_loader, loss_fn, device)


@submission("evaluate", "not_implemented", fails=("eval_mode", ...))
def evaluate_stub(model, loader, loss_fn, device="cpu"):
    raise NotImplementedError()


@submission("evaluate", "raised_exception", fails=("eval_mode", ...))
def evaluate_accuracy_of_floats(model, loader, loss_fn, device="cpu"):
    model.eval()
    correct = 0
    with torch.no_grad():
        for inputs, targets in loader:
            outputs = model(inputs)
            correct += (outputs.argmax(dim=1) == targets).sum().item()
    return loss.item(), correct / len(loader.dataset)  # noqa: F821 (`loss` never defined)


@submission("evaluate", "timeout", fails=("eval_mode", ...), timeout=0.5)
def evaluate_waits_for_more(model, loader, loss_fn, device="cpu"):
    model.eval()
    seen = 0
    with torch.no_grad():
        while seen < len(loader.dataset) + 1:  # one more than there is
            for inputs, targets in loader:
                model(inputs)
                seen += 0  # meant to be len(targets)
    return 0.0, 0.0


# ============================================================================ fit

def _history(epochs_done: list[tuple[float, float, float]]) -> dict[str, list[float]]:
    return {"train_loss": [t for t, _, _ in epochs_done],
            "val_loss": [v for _, v, _ in epochs_done],
            "val_acc": [a for _, _, a in epochs_done]}


@submission("fit")
def fit_with_helpers(model, train_loader, val_loader, loss_fn, optimizer, epochs, device="cpu"):
    history = {"train_loss": [], "val_loss": [], "val_acc": []}
    for epoch in range(epochs):
        train_loss = train_one_epoch_weighted(model, train_loader, loss_fn, optimizer, device)
        val_loss, val_acc = evaluate_no_grad(model, val_loader, loss_fn, device)
        history["train_loss"].append(train_loss)
        history["val_loss"].append(val_loss)
        history["val_acc"].append(val_acc)
    return history


@submission("fit")
def fit_with_callback(model, train_loader, val_loader, loss_fn, optimizer, epochs, device="cpu",
                      on_epoch_end=None):
    history = {"train_loss": [], "val_loss": [], "val_acc": [], "epoch": []}
    for epoch in tqdm(range(epochs), desc="epochs"):
        history["train_loss"].append(
            train_one_epoch_tqdm_device(model, train_loader, loss_fn, optimizer, device))
        val_loss, val_acc = evaluate_inference_mode_tqdm(model, val_loader, loss_fn, device)
        history["val_loss"].append(val_loss)
        history["val_acc"].append(val_acc)
        history["epoch"].append(epoch)
        if on_epoch_end is not None:
            on_epoch_end(history)
    return history


@submission("fit")
def fit_inline(model, train_loader, val_loader, loss_fn, optimizer, epochs, device="cpu"):
    done = []
    for epoch in range(epochs):
        model.train()
        train_total = 0.0
        for inputs, targets in train_loader:
            optimizer.zero_grad()
            loss = loss_fn(model(inputs), targets)
            loss.backward()
            optimizer.step()
            train_total += loss.item() * len(targets)
        model.eval()
        val_total, correct = 0.0, 0
        with torch.no_grad():
            for inputs, targets in val_loader:
                outputs = model(inputs)
                val_total += loss_fn(outputs, targets).item() * len(targets)
                correct += (outputs.argmax(1) == targets).sum().item()
        n_train, n_val = len(train_loader.dataset), len(val_loader.dataset)
        done.append((train_total / n_train, val_total / n_val, correct / n_val))
        print(f"epoch {epoch + 1}: train {done[-1][0]:.3f}, val {done[-1][1]:.3f}")
    return _history(done)


@submission("fit", "wrong_value", fails=("epoch_order",))
def fit_validates_first(model, train_loader, val_loader, loss_fn, optimizer, epochs, device="cpu"):
    done = []
    for epoch in range(epochs):
        val_loss, val_acc = evaluate_no_grad(model, val_loader, loss_fn, device)
        train_loss = train_one_epoch_weighted(model, train_loader, loss_fn, optimizer, device)
        done.append((train_loss, val_loss, val_acc))
    return _history(done)


@submission("fit", "history_wrong_shape", "wrong_value",
            fails=("history_shape", "epoch_order", "train_loss", "val_loss", "val_acc"))
def fit_one_epoch_short(model, train_loader, val_loader, loss_fn, optimizer, epochs, device="cpu"):
    done = []
    for epoch in range(1, epochs):
        train_loss = train_one_epoch_weighted(model, train_loader, loss_fn, optimizer, device)
        done.append((train_loss, *evaluate_no_grad(model, val_loader, loss_fn, device)))
    return _history(done)


@submission("fit", "history_wrong_shape",
            fails=("history_shape", "train_loss", "val_loss", "val_acc"))
def fit_keeps_last_epoch_only(model, train_loader, val_loader, loss_fn, optimizer, epochs,
                              device="cpu"):
    history = {}
    for epoch in range(epochs):
        history["train_loss"] = train_one_epoch_weighted(model, train_loader, loss_fn, optimizer)
        history["val_loss"], history["val_acc"] = evaluate_no_grad(model, val_loader, loss_fn)
    return history


@submission("fit", "no_eval_mode", fails=("eval_mode",))
def fit_without_eval_mode(model, train_loader, val_loader, loss_fn, optimizer, epochs,
                          device="cpu"):
    done = []
    for epoch in range(epochs):
        train_loss = train_one_epoch_weighted(model, train_loader, loss_fn, optimizer, device)
        done.append((train_loss, *evaluate_no_eval_mode(model, val_loader, loss_fn, device)))
    return _history(done)


@submission("fit", "grad_enabled_in_eval", fails=("no_graph",))
def fit_validation_with_graph(model, train_loader, val_loader, loss_fn, optimizer, epochs,
                              device="cpu"):
    done = []
    for epoch in range(epochs):
        train_loss = train_one_epoch_weighted(model, train_loader, loss_fn, optimizer, device)
        done.append((train_loss, *evaluate_with_graph(model, val_loader, loss_fn, device)))
    return _history(done)


@submission("fit", "updates_parameters", "grad_enabled_in_eval", fails=("no_graph", "unchanged"))
def fit_trains_on_validation(model, train_loader, val_loader, loss_fn, optimizer, epochs,
                             device="cpu"):
    done = []
    for epoch in range(epochs):
        train_loss = train_one_epoch_weighted(model, train_loader, loss_fn, optimizer, device)
        done.append((train_loss,
                     *evaluate_trains_on_validation(model, val_loader, loss_fn, device)))
    return _history(done)


@submission("fit", "no_train_mode", fails=("train_mode",))
def fit_without_train_mode(model, train_loader, val_loader, loss_fn, optimizer, epochs,
                           device="cpu"):
    done = []
    for epoch in range(epochs):
        train_loss = train_one_epoch_no_train_mode(model, train_loader, loss_fn, optimizer)
        done.append((train_loss, *evaluate_no_grad(model, val_loader, loss_fn, device)))
    return _history(done)


@submission("fit", "no_zero_grad", fails=("gradients",))
def fit_without_zero_grad(model, train_loader, val_loader, loss_fn, optimizer, epochs,
                          device="cpu"):
    done = []
    for epoch in range(epochs):
        train_loss = train_one_epoch_no_zero_grad(model, train_loader, loss_fn, optimizer)
        done.append((train_loss, *evaluate_no_grad(model, val_loader, loss_fn, device)))
    return _history(done)


@submission("fit", "unweighted_batch_average", fails=("train_loss",))
def fit_with_unweighted_train_loss(model, train_loader, val_loader, loss_fn, optimizer, epochs,
                                   device="cpu"):
    done = []
    for epoch in range(epochs):
        train_loss = train_one_epoch_mean_of_batch_means(model, train_loader, loss_fn, optimizer)
        done.append((train_loss, *evaluate_no_grad(model, val_loader, loss_fn, device)))
    return _history(done)


@submission("fit", "accuracy_percent", fails=("val_acc",))
def fit_with_percent_accuracy(model, train_loader, val_loader, loss_fn, optimizer, epochs,
                              device="cpu"):
    done = []
    for epoch in range(epochs):
        train_loss = train_one_epoch_weighted(model, train_loader, loss_fn, optimizer, device)
        done.append((train_loss, *evaluate_percent(model, val_loader, loss_fn, device)))
    return _history(done)


@submission("fit", "loss_tensor_accumulated", fails=("returns_float",))
def fit_with_tensor_train_loss(model, train_loader, val_loader, loss_fn, optimizer, epochs,
                               device="cpu"):
    done = []
    for epoch in range(epochs):
        train_loss = train_one_epoch_sums_loss_tensors(model, train_loader, loss_fn, optimizer)
        done.append((train_loss, *evaluate_no_grad(model, val_loader, loss_fn, device)))
    return _history(done)


@submission("fit", "ignores_loader", fails=("loader", ...))
def fit_validates_on_training_data(model, train_loader, val_loader, loss_fn, optimizer, epochs,
                                   device="cpu"):
    done = []
    for epoch in range(epochs):
        train_loss = train_one_epoch_weighted(model, train_loader, loss_fn, optimizer, device)
        done.append((train_loss, *evaluate_no_grad(model, train_loader, loss_fn, device)))
    return _history(done)


@submission("fit", "ignores_loader", fails=("loader", ...))
def fit_with_evaluate_on_global_loader(model, train_loader, val_loader, loss_fn, optimizer,
                                       epochs, device="cpu"):
    done = []
    for epoch in range(epochs):
        train_loss = train_one_epoch_weighted(model, train_loader, loss_fn, optimizer, device)
        done.append((train_loss, *evaluate_global_loader(model, val_loader, loss_fn, device)))
    return _history(done)


@submission("fit", "wrong_return_type",
            fails=("returns_dict", "history_shape", "returns_float", "finite", "train_loss",
                  "val_loss", "val_acc"))
def fit_forgets_return(model, train_loader, val_loader, loss_fn, optimizer, epochs, device="cpu"):
    history = {"train_loss": [], "val_loss": [], "val_acc": []}
    for epoch in range(epochs):
        history["train_loss"].append(train_one_epoch_weighted(model, train_loader, loss_fn,
                                                              optimizer))
        val_loss, val_acc = evaluate_no_grad(model, val_loader, loss_fn)
        history["val_loss"].append(val_loss)
        history["val_acc"].append(val_acc)


@submission("fit", "not_implemented", fails=("returns_dict", ...))
def fit_stub(model, train_loader, val_loader, loss_fn, optimizer, epochs, device="cpu"):
    raise NotImplementedError()


@submission("fit", "raised_exception", fails=("returns_dict", ...))
def fit_unpacks_evaluate_wrongly(model, train_loader, val_loader, loss_fn, optimizer, epochs,
                                 device="cpu"):
    history = {"train_loss": [], "val_loss": [], "val_acc": []}
    for epoch in range(epochs):
        history["train_loss"].append(train_one_epoch_weighted(model, train_loader, loss_fn,
                                                              optimizer))
        val_loss, val_acc, _ = evaluate_no_grad(model, val_loader, loss_fn)
        history["val_loss"].append(val_loss)
        history["val_acc"].append(val_acc)
    return history


@submission("fit", "timeout", fails=("returns_dict", ...), timeout=0.5)
def fit_until_good_enough(model, train_loader, val_loader, loss_fn, optimizer, epochs,
                          device="cpu"):
    history = {"train_loss": [], "val_loss": [], "val_acc": []}
    val_acc = 0.0
    while val_acc < 1.01:  # an accuracy never exceeds 1
        history["train_loss"].append(train_one_epoch_weighted(model, train_loader, loss_fn,
                                                              optimizer))
        val_loss, val_acc = evaluate_no_grad(model, val_loader, loss_fn)
    return history


@submission("fit", data="mnist")
def fit_on_mnist(model, train_loader, val_loader, loss_fn, optimizer, epochs, device="cpu"):
    return fit_with_helpers(model, train_loader, val_loader, loss_fn, optimizer, epochs, device)


@submission("fit", "accuracy_below_threshold", fails=("accuracy_reached",), data="mnist")
def fit_with_own_learning_rate(model, train_loader, val_loader, loss_fn, optimizer, epochs,
                               device="cpu"):
    for group in optimizer.param_groups:
        group["lr"] = 1e-5  # "small steps are safer"
    return fit_with_helpers(model, train_loader, val_loader, loss_fn, optimizer, epochs, device)


# ============================================================================ checkpoint

def save_checkpoint(path, model, optimizer, epoch):
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "epoch": epoch}, path)


def load_checkpoint(path, model, optimizer):
    checkpoint = torch.load(path)
    model.load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    return checkpoint["epoch"] + 1


register_pair("state_dicts", save_checkpoint, load_checkpoint)


def save_next_epoch(path, model, optimizer, epoch):
    path = pathlib.Path(path)
    torch.save({"model_state": model.state_dict(), "optimizer_state": optimizer.state_dict(),
                "next_epoch": epoch + 1}, path)


def load_next_epoch(path, model, optimizer):
    checkpoint = torch.load(pathlib.Path(path), map_location="cpu", weights_only=True)
    optimizer.load_state_dict(checkpoint["optimizer_state"])
    model.load_state_dict(checkpoint["model_state"])
    return int(checkpoint["next_epoch"])


register_pair("next_epoch_saved", save_next_epoch, load_next_epoch)


def save_two_files(path, model, optimizer, epoch):
    torch.save(model.state_dict(), path)
    torch.save({"optimizer": optimizer.state_dict(), "epoch": epoch}, str(path) + ".extra")


def load_two_files(path, model, optimizer):
    model.load_state_dict(torch.load(path, weights_only=False))
    extra = torch.load(str(path) + ".extra", weights_only=False)
    optimizer.load_state_dict(extra["optimizer"])
    return extra["epoch"] + 1


register_pair("two_files", save_two_files, load_two_files)


def save_model_only(path, model, optimizer, epoch):
    torch.save({"model": model.state_dict(), "epoch": epoch}, path)


def load_model_only(path, model, optimizer):
    checkpoint = torch.load(path)
    model.load_state_dict(checkpoint["model"])
    return checkpoint["epoch"] + 1


register_pair("optimizer_not_saved", save_model_only, load_model_only,
              "optimizer_state_not_saved", fails=("optimizer_state", ...))


def load_returns_saved_epoch(path, model, optimizer):
    checkpoint = torch.load(path)
    model.load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    return checkpoint["epoch"]


register_pair("returns_saved_epoch", save_checkpoint, load_returns_saved_epoch,
              "epoch_not_restored", fails=("epoch",))


def save_whole_model(path, model, optimizer, epoch):
    torch.save({"model": model, "optimizer": optimizer.state_dict(), "epoch": epoch}, path)


def load_rebinds_model(path, model, optimizer):
    checkpoint = torch.load(path, weights_only=False)
    model = checkpoint["model"]  # rebinds the local name only; the caller's model is unchanged
    optimizer.load_state_dict(checkpoint["optimizer"])
    return checkpoint["epoch"] + 1


register_pair("rebinds_model", save_whole_model, load_rebinds_model, "resume_differs",
              fails=("weights", "resumes_identically"))


def load_forgets_return(path, model, optimizer):
    checkpoint = torch.load(path)
    model.load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])


register_pair("load_returns_none", save_checkpoint, load_forgets_return, "wrong_return_type",
              fails=("returns_int", "epoch"))


def save_to_fixed_file(path, model, optimizer, epoch):
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "epoch": epoch}, "checkpoint.pt")


def load_from_fixed_file(path, model, optimizer):
    return load_checkpoint("checkpoint.pt", model, optimizer)


register_pair("fixed_file_name", save_to_fixed_file, load_from_fixed_file, "wrong_value",
              fails=("saves", ...))


def save_stub(path, model, optimizer, epoch):
    raise NotImplementedError()


register_pair("save_stub", save_stub, load_checkpoint, "not_implemented", fails=("saves", ...))


def load_wrong_key(path, model, optimizer):
    checkpoint = torch.load(path)
    model.load_state_dict(checkpoint["model_state_dict"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    return checkpoint["epoch"] + 1


register_pair("load_wrong_key", save_checkpoint, load_wrong_key, "raised_exception",
              fails=("returns_int", ...))
