"""Instruments that watch a student's training loop run, and the checks that read what they saw."""

from __future__ import annotations

import copy
import functools
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from course_utils.data import TensorLoader, toy_classification, toy_regression
from course_utils.graders.evidence import kind, number
from course_utils.graders._legacy import LegacyJudge as Judge

Params = dict[str, torch.Tensor]
Grads = dict[str, "torch.Tensor | None"]


@dataclass
class Event:
    """One thing that happened: a batch taken, a pass finished, a forward, backward or step."""

    kind: str  # "batch", "end" (a loader pass finished), "forward", "backward" or "step"
    loader: str = ""
    pass_index: int = -1
    batch_index: int = -1
    training: bool = False
    grad_enabled: bool = False
    params: Params | None = None  # parameter values at that moment, where kept
    grads: Grads | None = None  # `.grad` of each parameter when `step()` ran, where kept
    batch: tuple[torch.Tensor, ...] | None = None


class WatchedModel(nn.Module):
    """The model handed to the student: runs ``net`` and reports every forward pass.

    ``forward`` itself reports (not a hook), so ``model.forward(x)`` is seen like ``model(x)``.
    """

    def __init__(self, net: nn.Module, on_forward: Callable[[nn.Module], None]):
        super().__init__()
        self.net = net
        self._on_forward = on_forward

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        self._on_forward(self)
        return self.net(inputs)


class RecordingLoader:
    """Hands out the batches of ``source`` like a ``DataLoader`` and records each one it hands out.

    Example:
        >>> recorder = Recorder(nn.Linear(10, 1))
        >>> loader = recorder.loader(TensorLoader(toy_regression(n=10).tensors, 4), "loader")
        >>> len(loader), [len(x) for x, y in loader], recorder.passes()[0].complete
        (3, [4, 4, 2], True)
    """

    def __init__(self, source: Any, recorder: Recorder, name: str, keep_batches: bool):
        self.source = source
        self.keep_batches = keep_batches
        self.dataset = source.dataset
        self.batch_size = getattr(source, "batch_size", None)
        self.name = name
        self._recorder = recorder
        self._passes = 0

    def __len__(self) -> int:
        return len(self.source)

    def __iter__(self) -> Iterator[Any]:
        recorder, pass_index = self._recorder, self._passes
        self._passes += 1
        for index, batch in enumerate(self.source):
            # Parameters are kept at every batch on small models; on large ones only at the
            # start of a pass, which is enough to tell whether a pass changed them.
            keep = recorder.keep_tensors or index == 0
            recorder.log(Event("batch", self.name, pass_index, index,
                               params=recorder.snapshot() if keep else None,
                               batch=tuple(batch) if self.keep_batches else None))
            yield batch
        recorder.log(Event("end", self.name, pass_index, params=recorder.snapshot()))


@dataclass
class Pass:
    """One pass over a recorded loader: its batches and every event from its first batch on."""

    loader: str
    batches: list[Event]
    events: list[Event]
    complete: bool
    end_params: Params | None

    @property
    def forwards(self) -> list[Event]:
        return [e for e in self.events if e.kind == "forward"]

    @property
    def start_params(self) -> Params | None:
        return self.batches[0].params if self.batches else None


@dataclass
class Iteration:
    """The events of one optimisation step's worth of work and the data it should learn from."""

    events: list[Event]
    params: Params | None  # the parameters when its forward pass ran
    inputs: torch.Tensor | None
    targets: torch.Tensor | None


class Recorder:
    """Watches a model, its loaders and its optimizer while student code trains or evaluates it.

    Args:
        net: the network to watch; the student receives ``recorder.model``, which wraps it.
        keep_tensors: keep parameters at every batch and gradients at every step (small models).

    Example:
        >>> recorder = Recorder(nn.Linear(10, 1))
        >>> optimizer = recorder.watch(torch.optim.SGD(recorder.model.parameters(), lr=0.1))
        >>> recorder.model(torch.ones(2, 10)).sum().backward(); optimizer.step()
        >>> [e.kind for e in recorder.events]
        ['forward', 'backward', 'step']
    """

    def __init__(self, net: nn.Module, keep_tensors: bool = True):
        self.events: list[Event] = []
        self.keep_tensors = keep_tensors
        # A frozen copy evaluated at recorded parameter values, for the reference numbers.
        self.reference = copy.deepcopy(net).eval().requires_grad_(False)
        self.model = WatchedModel(net, self._forward)
        self._names = {id(p): name for name, p in net.named_parameters()}
        # The first layer's weight gets a gradient in every backward pass through the model.
        next(net.parameters()).register_post_accumulate_grad_hook(
            lambda param: self.log(Event("backward")))

    def log(self, event: Event) -> None:
        self.events.append(event)

    def mark(self) -> int:
        """Where the event log stands now, to cut out the events of one call later."""
        return len(self.events)

    def snapshot(self) -> Params:
        """A copy of the current parameter values."""
        # Normal tensors even when the student's code runs under `torch.inference_mode()`.
        with torch.inference_mode(False), torch.no_grad():
            return {name: p.detach().clone() for name, p in self.model.net.named_parameters()}

    def watch(self, optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
        """Makes ``optimizer`` record the gradients present whenever its ``step()`` runs."""
        optimizer.register_step_pre_hook(self._step)
        return optimizer

    def loader(self, source: Any, name: str, keep_batches: bool | None = None,
               ) -> RecordingLoader:
        """A recording loader over ``source`` (with ``__len__``, ``__iter__`` and ``.dataset``).

        ``name`` is the parameter the student's function receives it as, for feedback.
        Its batches are kept for the reference numbers when ``keep_batches`` is true
        (by default when the recorder keeps tensors).
        """
        return RecordingLoader(source, self, name,
                               self.keep_tensors if keep_batches is None else keep_batches)

    def _forward(self, module: nn.Module) -> None:
        self.log(Event("forward", training=module.training, grad_enabled=torch.is_grad_enabled()))

    def _step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        grads = None
        if self.keep_tensors:
            with torch.inference_mode(False), torch.no_grad():
                grads = {self._names.get(id(p), str(id(p))):
                         None if p.grad is None else p.grad.detach().clone()
                         for group in optimizer.param_groups for p in group["params"]}
        self.log(Event("step", grads=grads))

    # ------------------------------------------------------------------ reading the log

    def passes(self, start: int = 0) -> list[Pass]:
        """The loader passes that began at or after event ``start``, in the order they began."""
        events = self.events
        firsts = [i for i in range(start, len(events))
                  if events[i].kind == "batch" and events[i].batch_index == 0]
        found = []
        for position, first in enumerate(firsts):
            name, index = events[first].loader, events[first].pass_index
            end = next((i for i in range(first, len(events)) if events[i].kind == "end"
                        and events[i].loader == name and events[i].pass_index == index), None)
            # An unfinished pass lasts until the next pass begins.
            later = firsts[position + 1:]
            stop = end if end is not None else (later[0] if later else len(events))
            window = events[first:stop]
            found.append(Pass(name, [e for e in window if e.kind == "batch" and e.loader == name
                                     and e.pass_index == index], window, end is not None,
                              events[end].params if end is not None else None))
        return found

    @staticmethod
    def iterations(pass_: Pass) -> list[Iteration]:
        """Cuts a training pass into one iteration per batch."""
        starts = [i for i, e in enumerate(pass_.events) if e.kind == "batch"]
        bounds = zip(starts, starts[1:] + [len(pass_.events)])
        result = []
        for first, stop in bounds:
            batch = pass_.events[first]
            inputs, targets = batch.batch[:2] if batch.batch is not None else (None, None)
            result.append(Iteration(pass_.events[first:stop], batch.params, inputs, targets))
        return result

    # ------------------------------------------------------------------ reference numbers

    def outputs(self, params: Params, inputs: torch.Tensor) -> torch.Tensor:
        """The network's output at the given parameter values; the watched model is untouched."""
        with torch.inference_mode(False), torch.no_grad():
            return functional_call(self.reference, params, (inputs,))

    def loss(self, params: Params, inputs: torch.Tensor, targets: torch.Tensor,
             loss_fn: Callable[..., torch.Tensor]) -> float:
        return float(loss_fn(self.outputs(params, inputs), targets))

    def gradient(self, params: Params, inputs: torch.Tensor, targets: torch.Tensor,
                 loss_fn: Callable[..., torch.Tensor]) -> Params:
        """The gradient of the mean loss on ``(inputs, targets)`` at the given parameter values."""
        with torch.inference_mode(False), torch.enable_grad():
            leaves = {name: p.detach().clone().requires_grad_(True) for name, p in params.items()}
            loss = loss_fn(functional_call(self.reference, leaves, (inputs,)), targets)
            grads = torch.autograd.grad(loss, list(leaves.values()))
        return dict(zip(leaves, grads))


# What autograd says when `step()` changed the weights between the forward pass and `backward()`.
STEP_BEFORE_BACKWARD_ERRORS = {
    "modified by an inplace operation": (
        "step_before_backward",
        "`optimizer.step()` ran before `backward()`: the step changed the weights in place "
        "while the graph of the loss still needed their old values, so autograd refused to "
        "compute the gradients. Compute the gradients first, then step."),
}


def steady_conditions(grader: Callable[..., None]) -> Callable[..., None]:
    """Runs a grader with gradient tracking on and one CPU thread, restoring both afterwards.

    Student code meets the gradient mode a fresh kernel has, so a notebook that switched
    gradients off neither breaks training nor hides a missing ``torch.no_grad()``. One thread,
    because the graded networks are small: extra threads only add synchronisation, which on a
    busy 2-core machine made each step 10 to 50 times slower.
    """

    @functools.wraps(grader)
    def run(*args: Any, **kwargs: Any) -> None:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with torch.inference_mode(False), torch.enable_grad():
                grader(*args, **kwargs)
        finally:
            torch.set_num_threads(threads)

    return run


# ---------------------------------------------------------------------- toy problems

def regression_net() -> nn.Module:
    """A small regression network (10 -> 8 -> 1), initialised from the global RNG."""
    return nn.Sequential(nn.Linear(10, 8), nn.Tanh(), nn.Linear(8, 1))


def classification_net() -> nn.Module:
    """A small classifier of 2-D points into 3 classes, initialised from the global RNG."""
    return nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 3))


def regression_loader(seed: int, n: int = 18, batch_size: int = 8) -> TensorLoader:
    """Toy regression batches of 8, 8 and 2 samples; the small last batch is much harder.

    Its targets are shifted by 4, so its loss stands out: the per-sample mean, the mean of the
    batch means and the last batch's loss are then clearly different numbers.
    """
    inputs, targets = toy_regression(n=n, seed=seed).tensors
    targets = targets.clone()
    targets[-(n % batch_size or batch_size):] += 4.0
    return TensorLoader((inputs, targets), batch_size)


def classification_loader(seed: int, n: int = 18, batch_size: int = 8) -> TensorLoader:
    """Toy classification batches of 8, 8 and 2 points; the last batch is mislabelled on purpose.

    A decent classifier then gets the last batch wrong, so the per-sample accuracy differs
    from the mean of per-batch accuracies (and likewise for the loss).
    """
    points, labels = toy_classification(n=n, classes=3, seed=seed).tensors
    labels = labels.clone()
    last = n % batch_size or batch_size
    labels[-last:] = (labels[-last:] + 1) % 3
    return TensorLoader((points, labels), batch_size)


# ---------------------------------------------------------------------- checks on what was seen

def _tolerant(got: float, want: float) -> bool:
    return math.isclose(got, want, rel_tol=1e-4, abs_tol=1e-6)


def check_numbers(judge: Judge, values: Sequence[Any], names: Sequence[str],
                  ) -> list[float | None]:
    """Checks that every value is a Python (or numpy) float; returns them as floats.

    Counts two checks, the type and finiteness, reporting the first offending value. A
    one-element tensor is reported (``loss_tensor_accumulated`` when it carries a graph,
    ``wrong_return_type`` otherwise) but its value is still returned, so value checks run.
    Unusable values come back as None.

    Args:
        names: how feedback names each value ("The loss `evaluate` returned").
    """
    floats: list[float | None] = []
    type_problem: tuple[str, str] | None = None
    for i, value in enumerate(values):
        name = names[i]
        if isinstance(value, torch.Tensor):
            floats.append(float(value.detach()) if value.numel() == 1 else None)
            if type_problem:
                continue
            if value.requires_grad or value.grad_fn is not None:
                type_problem = ("loss_tensor_accumulated",
                                f"{name} is a tensor ({number(value.detach().flatten()[0])}) "
                                "that still carries the autograd graph "
                                f"(`grad_fn={type(value.grad_fn).__name__}`): a loss tensor that "
                                "is kept (returned, stored or added up) holds on to its whole "
                                "graph, so memory grows with every batch. Take the number out of "
                                "each batch's loss with `.item()`.")
            else:
                type_problem = ("wrong_return_type",
                                f"{name} is {kind(value)}, not a Python float. Convert numbers "
                                "you return with `.item()` (or `float(...)`).")
        elif isinstance(value, (int, float, np.integer, np.floating)) \
                and not isinstance(value, bool):
            floats.append(float(value))
        else:
            floats.append(None)
            type_problem = type_problem or (
                "wrong_return_type", f"{name} is {kind(value)}; it should be a Python float.")
    code, message = type_problem or ("wrong_return_type", "")
    judge.expect(type_problem is None, code, message)
    bad = next((i for i, v in enumerate(floats) if v is not None and not math.isfinite(v)), None)
    judge.expect(bad is None, "wrong_value",
                 "" if bad is None else f"{names[bad]} is {floats[bad]}, not a finite number: "
                 "look for a division by zero or a value you never filled in.")
    return [v if v is not None and math.isfinite(v) else None for v in floats]


def first_mismatch(pairs: Sequence[tuple[float | None, float]]) -> int:
    """The index of the first ``(got, want)`` pair that differs, or 0 when all agree."""
    return next((i for i, (got, want) in enumerate(pairs)
                 if got is not None and not _tolerant(got, want)), 0)


def require_loader_used(judge: Judge, passes: Sequence[Pass], loader: RecordingLoader,
                        forwards: int, who: str) -> None:
    """Stops grading unless there was a pass over ``loader`` and every pass took all batches."""
    mine = [p for p in passes if p.loader == loader.name]
    partial = next((p for p in mine if not p.complete), None)
    if not mine:
        message = (f"{who} never took a batch from the `{loader.name}` it was given "
                   f"(0 of {len(loader)} batches), although the model ran {forwards} forward "
                   "passes: it seems to loop over another loader, such as a global variable of "
                   "the notebook. Loop over the loader passed in as an argument.")
    else:
        message = (f"{who} took only {len(partial.batches) if partial else 0} of {len(loader)} "
                   f"batches from `{loader.name}`: an epoch goes through all of them. Loop over "
                   "the whole loader (no `break`, no early `return`).")
    judge.require(bool(mine) and partial is None, "ignores_loader", message)


def check_value(judge: Judge, got: float | None, want: float, what: str,
                mistakes: Sequence[tuple[str, float, str]], wrong: str,
                wrong_code: str = "wrong_value") -> None:
    """One check that ``got`` equals ``want``, naming the mistake when ``got`` matches a known one.

    Args:
        mistakes: ``(code, value, message)`` for each known mistake; ``message`` may use
            ``{got}`` and ``{want}``. The first one ``got`` matches is reported.
        wrong: the message (with ``{got}`` and ``{want}``) when ``got`` matches no known mistake.
        wrong_code: the code reported then.
    """
    if got is None:
        return
    if _tolerant(got, want):
        judge.expect(True, "wrong_value", "")
        return
    for code, value, message in mistakes:
        if _tolerant(got, value):
            judge.expect(False, code, message.format(got=number(got), want=number(want),
                                                     what=what))
            return
    judge.expect(False, wrong_code, wrong.format(got=number(got), want=number(want), what=what))


def count(events: Sequence[Event], what: str) -> int:
    return sum(e.kind == what for e in events)


def check_train_mode(judge: Judge, forwards: Sequence[Event], who: str) -> None:
    """Every training forward ran in training mode (the model was handed over in eval mode)."""
    off = sum(not e.training for e in forwards)
    judge.expect(off == 0, "no_train_mode",
                 f"{who} ran the forward pass in evaluation mode (`model.training` was False in "
                 f"{off} of {len(forwards)} forward passes). The model was handed over in "
                 "evaluation mode, as it is right after validation; dropout and batch norm "
                 "only train properly in training mode, so switch it with `model.train()` at "
                 "the start of each training epoch.")


def check_eval_mode(judge: Judge, forwards: Sequence[Event], who: str) -> None:
    """Every evaluation forward ran in eval mode and without building a graph."""
    training = sum(e.training for e in forwards)
    judge.expect(training == 0, "no_eval_mode",
                 f"{who} ran the model in training mode (`model.training` was True in {training} "
                 f"of {len(forwards)} forward passes). In training mode dropout drops units at "
                 "random and batch norm uses (and updates) batch statistics, so validation "
                 "numbers are noisy and wrong. Switch to evaluation mode with `model.eval()` "
                 "before the loop.")
    graphs = sum(e.grad_enabled for e in forwards)
    judge.expect(graphs == 0, "grad_enabled_in_eval",
                 f"{who} built an autograd graph during evaluation (gradient tracking was on in "
                 f"{graphs} of {len(forwards)} forward passes): that costs memory and time for "
                 "gradients nobody needs. Run the evaluation loop inside `torch.no_grad()` "
                 "(or `torch.inference_mode()`).")


def check_unchanged(judge: Judge, before: Params | None, after: Params | None, steps: int,
                    who: str) -> None:
    """Evaluation left every parameter as it was."""
    if before is None or after is None:
        return
    moved = [name for name in before if not torch.equal(before[name], after[name])]
    change = max((float((after[n] - before[n]).abs().max()) for n in moved), default=0.0)
    stepped = f"; the training optimizer stepped {steps} times" if steps else ""
    judge.expect(not moved and steps == 0, "updates_parameters",
                 f"{who} changed the model's parameters ({len(moved)} of {len(before)} parameter "
                 f"tensors moved, by up to {number(change)}{stepped}). Evaluation must only "
                 "measure the model: no `backward()`, no optimizer step, no changes to the "
                 "weights.")


def _flat(grads: Grads, like: Params) -> torch.Tensor:
    """The gradients as one vector, zeros where ``.grad`` was None."""
    return torch.cat([(torch.zeros_like(p) if grads.get(n) is None else grads[n]).flatten()
                      for n, p in like.items()])


def _norm(vector: torch.Tensor) -> str:
    return number(vector.norm())


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return bool((a - b).norm() <= 1e-4 * b.norm() + 1e-7)


# For one iteration: ``(code, gradient, message)`` of each known mistake.
Mistakes = Callable[[Iteration], list[tuple[str, Params, str]]]


def check_training(judge: Judge, recorder: Recorder, iterations: Sequence[Iteration],
                   loss_fn: Callable[..., torch.Tensor], *, who: str, unit: str = "batch",
                   alternatives: Mistakes | None = None,
                   extra_steps: tuple[str, str] = ("wrong_value", "")) -> None:
    """Judges the steps of a training loop from what happened in each iteration.

    Checks that ``step()`` and ``backward()`` ran, in that order, once per iteration, and that
    the gradients present at each ``step()`` are those of the iteration's own loss.

    Args:
        iterations: one per batch (or per call, for a single step).
        who: names the student's function in feedback ("Your `train_one_epoch`").
        unit: what one iteration learns from, in feedback ("batch", "call").
        alternatives: for an iteration, ``(code, gradient, message)`` of known mistakes;
            ``message`` may use ``{step}``, ``{got}`` and ``{want}`` (gradient norms).
        extra_steps: ``(code, message)`` when an iteration calls ``step()`` more than once;
            ``message`` may use ``{steps}``.
    """
    steps = [count(it.events, "step") for it in iterations]
    backwards = sum(count(it.events, "backward") for it in iterations)
    n = len(iterations)
    plural = f"{n} {unit}{'es' if unit.endswith('ch') else 's'}" if n != 1 else f"1 {unit}"
    stepped = judge.expect(sum(steps) > 0, "no_step",
                           f"{who} never called `optimizer.step()` (0 steps for {plural}), so the "
                           "parameters did not change at all: `backward()` only computes "
                           "gradients, the optimizer's `step()` is what applies them.")
    backed = judge.expect(backwards > 0, "no_backward",
                          f"{who} never called `backward()` (0 backward passes for {plural}), so "
                          "`.grad` stayed empty and `optimizer.step()` had nothing to apply. "
                          "Compute the gradients of the loss before stepping.")
    late = next((k for k, it in enumerate(iterations) if _step_before_backward(it.events)), None)
    ordered = judge.expect(late is None, "step_before_backward",
                           f"{who} called `optimizer.step()` before `backward()` "
                           f"(first in {unit} {(late or 0) + 1}): the step then applies whatever "
                           "`.grad` held before (nothing at first, later the previous "
                           f"{unit}'s gradient). Compute the gradients first, then step.")
    extra = next((s for s in steps if s > 1), None)
    code, message = extra_steps
    judge.expect(extra is None, code, message.format(steps=extra) if message else
                 f"{who} called `optimizer.step()` {extra} times for one {unit}; "
                 f"each {unit} should give exactly one step.")
    if not (stepped and backed and ordered and recorder.keep_tensors):
        return
    judge.expect(*_gradient_verdict(recorder, iterations, steps, loss_fn, who, unit,
                                    alternatives))


def _step_before_backward(events: Sequence[Event]) -> bool:
    """A ``step()`` with no ``backward()`` before it in its iteration, but one after it."""
    kinds = [e.kind for e in events]
    if "step" not in kinds:
        return False
    first_step = kinds.index("step")
    return "backward" not in kinds[:first_step] and "backward" in kinds[first_step:]


def _gradient_verdict(recorder: Recorder, iterations: Sequence[Iteration], steps: list[int],
                      loss_fn: Callable[..., torch.Tensor], who: str, unit: str,
                      alternatives: Mistakes | None) -> tuple[bool, str, str]:
    """``(ok, code, message)`` for the gradients at every step, from the first wrong one."""
    previous: torch.Tensor | None = None
    step_number = 0
    for it, taken in zip(iterations, steps):
        step_events = [e for e in it.events if e.kind == "step"]
        step_number += taken
        if taken != 1 or it.params is None or it.inputs is None:
            usable = step_events and it.params is not None and step_events[-1].grads is not None
            previous = _flat(step_events[-1].grads, it.params) if usable else None
            continue
        got = _flat(step_events[0].grads, it.params)
        want_grads = recorder.gradient(it.params, it.inputs, it.targets, loss_fn)
        want = _flat(want_grads, it.params)
        numbers = dict(step=step_number, got=_norm(got), want=_norm(want))
        if _same(got, want):
            previous = got
            continue
        if not got.any():
            none = all(g is None for g in step_events[0].grads.values())
            return (False, "zero_grad_after_backward",
                    f"At step {step_number} `.grad` was {'`None`' if none else 'all zeros'} "
                    f"although `backward()` had run for this {unit} (its gradient has norm "
                    f"{numbers['want']}): the gradients were "
                    "cleared between `backward()` and `step()`, so the step changed nothing. "
                    "Clear them before the forward pass or after `step()`, never in between.")
        for code, grads, message in (alternatives(it) if alternatives else []):
            if _same(got, _flat(grads, it.params)):
                return False, code, message.format(**numbers)
        if previous is not None and previous.any() and _same(got, previous + want):
            across = "from one call to the next" if unit == "call" else f"across {unit}es"
            return (False, "no_zero_grad",
                    f"{who} lets gradients accumulate {across}: at step {step_number} `.grad` "
                    f"was this {unit}'s gradient plus the one left over from the step before "
                    f"(norm {numbers['got']} instead of {numbers['want']}). `backward()` adds "
                    f"into `.grad`; clear it once per {unit} with `optimizer.zero_grad()`, "
                    "before the forward pass or after `step()`.")
        return (False, "wrong_value",
                f"At step {step_number} `.grad` (norm {numbers['got']}) was not the gradient of "
                f"this {unit}'s loss (norm {numbers['want']}). Call `backward()` on the loss "
                f"of the current {unit}, computed with the `loss_fn` you were given.")
    return True, "wrong_value", ""


@dataclass
class EvalNumbers:
    """Reference numbers of one evaluation pass, right and wrong ways of averaging."""

    loss: float
    batch_mean_loss: float
    last_loss: float
    accuracy: float
    batch_mean_accuracy: float
    correct: int
    batches: int


def eval_numbers(recorder: Recorder, batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
                 params: Sequence[Params], loss_fn: Callable[..., torch.Tensor]) -> EvalNumbers:
    """Loss and accuracy of the network at ``params[i]`` on ``batches[i]``, averaged 3 ways."""
    losses, sizes, hits = [], [], []
    for (inputs, targets), values in zip(batches, params):
        outputs = recorder.outputs(values, inputs)
        losses.append(float(loss_fn(outputs, targets)))
        sizes.append(len(targets))
        hits.append(int((outputs.argmax(dim=1) == targets).sum()))
    total = sum(sizes)
    return EvalNumbers(
        loss=sum(loss * size for loss, size in zip(losses, sizes)) / total,
        batch_mean_loss=sum(losses) / len(losses),
        last_loss=losses[-1],
        accuracy=sum(hits) / total,
        batch_mean_accuracy=sum(h / s for h, s in zip(hits, sizes)) / len(sizes),
        correct=sum(hits),
        batches=len(sizes))


def epoch_loss_numbers(recorder: Recorder, iterations: Sequence[Iteration],
                       loss_fn: Callable[..., torch.Tensor]) -> tuple[float, float, float]:
    """``(per-sample mean, mean of batch means, last batch)`` of the losses a training pass saw."""
    losses = [recorder.loss(it.params, it.inputs, it.targets, loss_fn) for it in iterations]
    sizes = [len(it.targets) for it in iterations]
    return (sum(loss * size for loss, size in zip(losses, sizes)) / sum(sizes),
            sum(losses) / len(losses), losses[-1])


def check_epoch_loss(judge: Judge, value: float | None, numbers: tuple[float, float, float],
                     what: str) -> None:
    """The epoch loss is the per-sample mean, not the mean of batch means nor the last batch's."""
    right, batch_mean, last = numbers
    check_value(judge, value, right, what, [
        ("unweighted_batch_average", batch_mean,
         "{what} is {got}, the plain mean of the batch losses; the per-sample mean is {want}. "
         "The last batch is smaller, so averaging batch means gives its few samples too much "
         "weight: add up each batch's loss times its number of samples, then divide by the "
         "number of samples."),
        ("returns_last_batch_loss", last,
         "{what} is {got}, the loss of the last batch only; the mean over the epoch is {want}. "
         "Keep a running total over all batches instead of returning the last `loss`."),
    ], "{what} is {got}, but the per-sample mean loss of the epoch is {want}. Weight each "
       "batch's mean loss by its number of samples and divide by the number of samples.")


def check_eval_values(judge: Judge, loss: float | None, accuracy: float | None,
                      numbers: EvalNumbers, loss_what: str, accuracy_what: str) -> None:
    """The evaluation loss is the per-sample mean and the accuracy a fraction of all samples."""
    check_value(judge, loss, numbers.loss, loss_what, [
        ("unweighted_batch_average", numbers.batch_mean_loss,
         "{what} is {got}, the plain mean of the batch losses; the per-sample mean is {want}. "
         "The last batch is smaller, so weight each batch's loss by its number of samples."),
        ("returns_last_batch_loss", numbers.last_loss,
         "{what} is {got}, the last batch's loss only; over all samples it is {want}. "
         "Keep a running total over all batches."),
    ], "{what} is {got}, but the per-sample mean loss over the loader is {want}.")
    check_value(judge, accuracy, numbers.accuracy, accuracy_what, [
        ("accuracy_percent", 100 * numbers.accuracy,
         "{what} is {got}, a percentage; the course uses a fraction between 0 and 1 "
         "(here {want}). Do not multiply by 100."),
        ("unweighted_batch_average", numbers.batch_mean_accuracy,
         "{what} is {got}, the plain mean of per-batch accuracies; over all samples it is "
         "{want}. Count correct predictions over the whole loader and divide once by the "
         "number of samples."),
        ("wrong_accuracy", float(numbers.correct),
         "{what} is {got}, the number of correct predictions; the accuracy is that count "
         "divided by the number of samples ({want})."),
        ("wrong_accuracy", numbers.correct / numbers.batches,
         "{what} is {got}: the number of correct predictions divided by the number of "
         "batches. Divide by the number of samples (`len(loader.dataset)`) instead: {want}."),
    ], "{what} is {got}, but the fraction of correctly classified samples is {want}. The "
       "predicted class is the index of the largest logit; count how often it equals the "
       "label, over all samples.", wrong_code="wrong_accuracy")


def pass_eval_numbers(recorder: Recorder, pass_: Pass,
                      loss_fn: Callable[..., torch.Tensor]) -> EvalNumbers:
    """Reference numbers of an evaluation pass, at the parameters each batch met."""
    params = [b.params if b.params is not None else pass_.start_params for b in pass_.batches]
    return eval_numbers(recorder, [b.batch for b in pass_.batches], params, loss_fn)
