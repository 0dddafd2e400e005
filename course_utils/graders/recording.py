"""Recording what a student's training loop does: forwards, backwards, steps, batches, weights."""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import nn
from torch.func import functional_call

Params = dict[str, torch.Tensor]
Grads = dict[str, "torch.Tensor | None"]


def forward_state(module: nn.Module) -> dict[str, bool]:
    """The mode of a module about to run its forward pass, and whether autograd records it.

    Example:
        >>> forward_state(nn.Linear(1, 1).eval())
        {'training': False, 'grad_enabled': True}
    """
    return {"training": module.training, "grad_enabled": torch.is_grad_enabled()}


def step_gradients(optimizer: torch.optim.Optimizer, names: dict[int, str]) -> Grads:
    """A copy of the ``.grad`` of every parameter ``optimizer`` updates, by name (``names``)."""
    with torch.inference_mode(False), torch.no_grad():
        return {names.get(id(p), str(id(p))): None if p.grad is None else p.grad.detach().clone()
                for group in optimizer.param_groups for p in group["params"]}


StepPreHook = Callable[[torch.optim.Optimizer, tuple[Any, ...], dict[str, Any]],
                       "tuple[tuple[Any, ...], dict[str, Any]] | None"]


def step_hook(on_step: Callable[[torch.optim.Optimizer], None]) -> StepPreHook:
    """An optimizer step pre-hook that calls ``on_step(optimizer)`` once the gradients the step
    applies are in ``.grad``: at once, or for ``step(closure)`` when the closure first returns.

    With a closure (as LBFGS requires) the gradients are computed inside ``step()``, so they
    are seen when the closure first returns: those are the gradients the step applies.

    Example:
        >>> seen = []
        >>> w = nn.Parameter(torch.ones(2))
        >>> opt = torch.optim.SGD([w], lr=0.1)
        >>> handle = opt.register_step_pre_hook(step_hook(lambda o: seen.append(w.grad.sum())))
        >>> opt.step(lambda: (opt.zero_grad(), (w * 3).sum().backward())[1]); seen
        [tensor(6.)]
    """
    def pre_hook(optimizer: torch.optim.Optimizer, args: tuple[Any, ...],
                 kwargs: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
        # ``args`` starts with the optimizer itself; a closure may follow it or be a keyword.
        closure = kwargs.get("closure", args[1] if len(args) > 1 else None)
        if closure is None:
            on_step(optimizer)
            return None
        seen = False

        def closure_seen() -> Any:
            nonlocal seen
            loss = closure()
            if not seen:
                seen = True
                on_step(optimizer)
            return loss

        if "closure" in kwargs:
            return args, {**kwargs, "closure": closure_seen}
        return (args[0], closure_seen, *args[2:]), kwargs

    return pre_hook


_grading = 0


@contextlib.contextmanager
def grading() -> Iterator[None]:
    """Marks a grader at work, so that tools watching every loop (the doctor) look away."""
    global _grading
    _grading += 1
    try:
        yield
    finally:
        _grading -= 1


def grading_now() -> bool:
    """True while a grader runs a student's code."""
    return _grading > 0



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
        >>> from course_utils.data import TensorLoader, toy_regression
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
            # Tensors are kept at every batch on small models; on large ones only for the first
            # batch of a pass: enough to judge its step and whether a pass changed the weights.
            keep = recorder.keep_tensors or index == 0
            recorder.keep_next_step = keep
            recorder.log(Event("batch", self.name, pass_index, index,
                               params=recorder.snapshot() if keep else None,
                               batch=tuple(batch) if self.keep_batches or keep else None))
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
        keep_tensors: keep parameters at every batch and gradients at every step (small models);
            otherwise only for the first batch of each loader pass.

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
        self.keep_next_step = keep_tensors  # whether the next step's gradients are kept
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
        optimizer.register_step_pre_hook(step_hook(self._log_step))
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
        self.log(Event("forward", **forward_state(module)))

    def _log_step(self, optimizer: torch.optim.Optimizer) -> None:
        grads = None
        if self.keep_tensors or self.keep_next_step:
            self.keep_next_step = self.keep_tensors
            grads = step_gradients(optimizer, self._names)
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




def count(events: Sequence[Event], what: str) -> int:
    """How many of ``events`` are of kind ``what`` ("forward", "backward", "step"...)."""
    return sum(e.kind == what for e in events)
