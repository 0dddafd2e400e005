"""Recording what a student's training loop does: forwards, backwards, steps, batches, weights."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import nn
from torch.func import functional_call

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

    def _step(self, optimizer: torch.optim.Optimizer, args: tuple[Any, ...],
              kwargs: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
        """Records the step, or, for ``step(closure)``, the gradients its closure computes.

        With a closure (as LBFGS requires) the gradients are computed inside ``step()``, so the
        step is recorded when the closure first returns: those are the gradients it applies.
        """
        # ``args`` starts with the optimizer itself; a closure may follow it or be a keyword.
        closure = kwargs.get("closure", args[1] if len(args) > 1 else None)
        if closure is None:
            self._log_step(optimizer)
            return None
        recorded = False

        def closure_recorded() -> Any:
            nonlocal recorded
            loss = closure()
            if not recorded:
                recorded = True
                self._log_step(optimizer)
            return loss

        if "closure" in kwargs:
            return args, {**kwargs, "closure": closure_recorded}
        return (args[0], closure_recorded, *args[2:]), kwargs

    def _log_step(self, optimizer: torch.optim.Optimizer) -> None:
        grads = None
        if self.keep_tensors or self.keep_next_step:
            self.keep_next_step = self.keep_tensors
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




def count(events: Sequence[Event], what: str) -> int:
    """How many of ``events`` are of kind ``what`` ("forward", "backward", "step"...)."""
    return sum(e.kind == what for e in events)
