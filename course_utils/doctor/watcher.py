"""Watching every training loop through PyTorch's global hooks, and naming its mistakes."""

from __future__ import annotations

import collections
import functools
import math
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.dropout import _DropoutNd
from torch.optim.lr_scheduler import LRScheduler

from course_utils.data import TensorLoader
from course_utils.doctor.findings import FINDINGS, Finding
from course_utils.graders.evidence import number
from course_utils.graders.recording import forward_state, grading_now, step_hook

# How many consecutive losses may stay alive before a running total is suspected, how many
# thrown-away backward passes make a pattern, and how many calls of each loss module are checked.
ALIVE_LOSSES = 3
THROWN_AWAY = 2
CHECKED_LOSS_CALLS = 5
# A step-sized schedule lasts at least as long as one epoch; these attributes give its length.
SCHEDULE_LENGTHS = ("T_max", "step_size", "total_steps", "milestones", "T_0")


def _safe(method: Callable[..., Any]) -> Callable[..., Any]:
    """A hook that never breaks the loop it watches, and looks away while a grader runs."""
    @functools.wraps(method)
    def hook(self: Watcher, *args: Any, **kwargs: Any) -> Any:
        if grading_now():
            return None
        try:
            return method(self, *args, **kwargs)
        except Exception:  # the doctor's own failure must never become the student's
            return None
    return hook


@dataclass
class Rep:
    """A parameter watched in place of its model or optimizer: where its ``.grad`` stood."""

    param: weakref.ref
    grad: weakref.ref | None = None  # the ``.grad`` tensor last seen
    version: int = -1  # its in-place version counter then
    after_step: tuple[Any, int] | None = None  # (grad ref, version) right after the last step
    stale: bool = False  # a backward added onto the gradient a step already used
    before: float = 0.0  # that stale gradient's norm

    def now(self) -> tuple[Any, int]:
        p = self.param()
        g = None if p is None else p.grad
        return (None, -1) if g is None else (g, g._version)

    def remember(self) -> None:
        g, self.version = self.now()
        self.grad = None if g is None else weakref.ref(g)

    def cleared(self) -> bool:
        """``.grad`` was cleared since remembered: None, a new tensor, or zeroed in place."""
        g, version = self.now()
        if g is None or self.grad is None or self.grad() is not g:
            return True
        # Changed in place: zeroed, or unscaled or clipped (a tiny tensor: cheap to look at).
        return version != self.version and not bool(g.any())

    def untouched(self) -> bool:
        """``.grad`` is the tensor last remembered, unchanged since."""
        g, version = self.now()
        return g is not None and self.grad is not None and self.grad() is g \
            and version == self.version


@dataclass
class ModelState:
    name: str
    rep: Rep | None
    layers: str  # its dropout and batch-norm layers, in words ("" if none)
    ref: weakref.ref = field(repr=False, default=None)
    checked_params: bool = False
    eval_forward: bool = False  # its last forward with gradients was in evaluation mode


@dataclass
class OptState:
    name: str
    params: set[int]
    rep: Rep | None
    steps: int = 0


@dataclass
class LoaderPass:
    batches: int
    forwards_grad: int = 0
    forwards_train_nograd: int = 0
    backwards: int = 0
    steps: int = 0
    model: ModelState | None = None
    scheduler_steps: dict[int, int] = field(default_factory=dict)


def _variable_name(obj: Any, fallback: str) -> str:
    """The name the code gave ``obj`` in the notebook or script (``model``), else ``fallback``."""
    import __main__
    for name, value in vars(__main__).items():
        if value is obj and not name.startswith("_"):
            return name
    return fallback


class Watcher:
    """Installs the hooks, follows the loop's events, and reports each finding once per loop."""

    def __init__(self, report: Callable[[Finding], None]):
        self._report = report
        self._handles: list[Any] = []
        self._patched: list[tuple[Any, str, Any]] = []
        self.reset()

    def reset(self) -> None:
        """Forgets the loops seen so far (a new cell, a new block)."""
        self.models: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self.children: weakref.WeakSet = weakref.WeakSet()
        self.optimizers: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self.loss_calls: dict[int, int] = {}
        self.passes: list[LoaderPass] = []
        self.pending: list[set[int]] = []  # reps each unconsumed backward touched
        self.thrown: dict[int, int] = {}
        self.losses: collections.deque = collections.deque(maxlen=ALIVE_LOSSES + 1)
        self.seen: set[tuple[str, int]] = set()
        self.rep_of: dict[int, Rep] = {}  # one per parameter, shared by its model and optimizer
        self.tick = self.last_forward = self.last_backward = self.last_step = 0
        self.backwards = self.steps = 0
        self.non_finite: dict[str, str | int] | None = None  # the first NaN/inf loss
        self.inside_step = False  # a closure's backward passes inside step() are its own

    # ------------------------------------------------------------------ installing

    def install(self) -> None:
        from torch.nn.modules.module import register_module_forward_pre_hook
        from torch.optim.optimizer import (register_optimizer_step_post_hook,
                                           register_optimizer_step_pre_hook)
        self._handles = [register_module_forward_pre_hook(self._forward),
                         register_optimizer_step_pre_hook(self._step_begins),
                         register_optimizer_step_pre_hook(step_hook(self._step)),
                         register_optimizer_step_post_hook(self._after_step)]
        self._patch(torch.Tensor, "backward", self._wrap_backward)
        self._patch(LRScheduler, "step", self._wrap_scheduler_step)
        for loader in (torch.utils.data.DataLoader, TensorLoader):
            self._patch(loader, "__iter__", self._wrap_iter)

    def uninstall(self) -> None:
        for handle in self._handles:
            handle.remove()
        for owner, name, original in reversed(self._patched):
            setattr(owner, name, original)
        self._handles, self._patched = [], []

    def _patch(self, owner: Any, name: str, wrap: Callable[[Any], Any]) -> None:
        original = owner.__dict__[name]
        self._patched.append((owner, name, original))
        setattr(owner, name, functools.wraps(original)(wrap(original)))

    def _found(self, code: str, subject: Any, **evidence: Any) -> None:
        key = (code, id(subject))
        if key in self.seen:
            return
        self.seen.add(key)
        self._report(Finding(code, FINDINGS[code].say(**evidence)))

    # ------------------------------------------------------------------ forward passes

    @_safe
    def _forward(self, module: nn.Module, inputs: tuple[Any, ...]) -> None:
        if module in self.children:
            return
        if isinstance(module, nn.modules.loss._Loss):
            self._loss_inputs(module, inputs)
            return
        state = self.models.get(module)
        if state is None:
            state = self._new_model(module)
        mode = forward_state(module)
        current = self.passes[-1] if self.passes else None
        if mode["grad_enabled"]:
            self.tick += 1
            self.last_forward = self.tick
            state.eval_forward = bool(state.layers) and not mode["training"]
            # Only a module with trainable parameters, or inputs that carry a graph, builds
            # one: a data augmentation written as a module (torchvision's) does not.
            builds_graph = state.rep is not None or any(
                isinstance(x, torch.Tensor) and x.requires_grad for x in inputs)
            if current is not None and builds_graph:
                current.forwards_grad += 1
                current.model = state
        elif mode["training"] and state.layers and current is not None:
            current.forwards_train_nograd += 1
            current.model = state

    def _new_model(self, module: nn.Module) -> ModelState:
        for child in module.modules():
            if child is not module:
                self.children.add(child)
        layers = sorted({type(m).__name__ for m in module.modules()
                         if isinstance(m, (_DropoutNd, _BatchNorm))})
        state = ModelState(_variable_name(module, type(module).__name__),
                           self._rep(module.parameters()), " and ".join(layers),
                           weakref.ref(module))
        self.models[module] = state
        return state

    def _rep(self, params: Iterator[torch.Tensor]) -> Rep | None:
        """The smallest trainable parameter, watched in place of all of them."""
        trainable = [p for p in params if p.requires_grad]
        if not trainable:
            return None
        param = min(trainable, key=lambda p: p.numel())
        rep = self.rep_of.get(id(param))
        if rep is None or rep.param() is not param:
            rep = self.rep_of[id(param)] = Rep(weakref.ref(param))
            rep.remember()
        return rep

    def _loss_inputs(self, module: nn.Module, inputs: tuple[Any, ...]) -> None:
        calls = self.loss_calls.get(id(module), 0)
        if calls >= CHECKED_LOSS_CALLS or not isinstance(module, nn.CrossEntropyLoss):
            return
        self.loss_calls[id(module)] = calls + 1
        x = inputs[0] if inputs else None
        if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.shape[1] < 2:
            return
        with torch.no_grad():
            rows = x.detach().float()
            probabilities = bool(rows.min() >= 0) and \
                bool(((rows.sum(1) - 1).abs() < 1e-4).all())
        if probabilities:
            self._found("softmax_before_cross_entropy", module,
                        loss=_variable_name(module, type(module).__name__),
                        row="[" + ", ".join(number(v) for v in rows[0, :3]) + ", ...]")

    # ------------------------------------------------------------------ backward passes

    def _wrap_backward(self, original: Callable[..., Any]) -> Callable[..., Any]:
        watcher = self

        def backward(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            watcher._before_backward(tensor)
            result = original(tensor, *args, **kwargs)
            watcher._after_backward()
            return result
        return backward

    def _reps(self) -> dict[int, Rep]:
        reps = {}
        for state in list(self.models.values()) + list(self.optimizers.values()):
            if state.rep is not None and state.rep.param() is not None:
                reps[id(state.rep.param())] = state.rep
        return reps

    @_safe
    def _before_backward(self, loss: torch.Tensor) -> None:
        self.backwards += 1
        self.tick += 1
        if self.last_step > self.last_forward > self.last_backward:
            # Forward, then step, then this backward: the step came before its backward.
            for opt, state in list(self.optimizers.items()):
                self._found("step_before_backward", opt, optimizer=state.name, step=state.steps)
        self.last_backward = self.tick
        for current in self.passes:
            current.backwards += 1
        self._non_finite(loss)
        self._keep_alive_check(loss)
        reps = self._reps()
        self._staleness(reps)
        self._thrown_away(reps)
        self._reps_before = {key: rep.now() for key, rep in reps.items()}

    def _non_finite(self, loss: torch.Tensor) -> None:
        """Notes the first non-finite loss; named when a step applies its gradients."""
        if self.non_finite is not None or loss.dim() != 0 or math.isfinite(loss.detach().item()):
            return
        self.non_finite = {"value": number(loss), "step": self.backwards}

    def _keep_alive_check(self, loss: torch.Tensor) -> None:
        """Tags the loss's graph; a graph outlives its ``backward()`` only if something keeps it."""
        node = loss.grad_fn
        if node is None:
            return
        tag = _GraphTag()
        node.metadata["course_utils.doctor"] = tag
        self.losses.append(weakref.ref(tag))
        if len(self.losses) > ALIVE_LOSSES and \
                all(ref() is not None for ref in list(self.losses)[:ALIVE_LOSSES]):
            self._found("loss_tensor_accumulated", self, count=ALIVE_LOSSES + 1)

    def _staleness(self, reps: dict[int, Rep]) -> None:
        """Marks each parameter whose ``.grad`` still holds what its last step used."""
        for rep in reps.values():
            if rep.after_step is not None and rep.after_step[0]() is not None:
                g, version = rep.now()
                # Zeros a step applied hold no earlier gradient: adding onto them is harmless.
                if g is rep.after_step[0]() and version == rep.after_step[1] and bool(g.any()):
                    rep.stale = True
                    rep.before = float(g.norm())
                    continue
            if rep.cleared():
                rep.stale = False

    def _thrown_away(self, reps: dict[int, Rep]) -> None:
        """Counts earlier backward passes whose every gradient was cleared before any step."""
        kept = []
        # Only gradients a training loop's optimizer would use count: inspecting gradients
        # (backward, read `.grad`, clear) is no mistake.
        trained = set().union(*(s.params for s in self.optimizers.values()))
        for touched in self.pending:
            alive = {key for key in touched if key in reps and not reps[key].cleared()}
            if alive:
                kept.append(alive)
                continue
            for key in touched & trained:
                self.thrown[key] = self.thrown.get(key, 0) + 1
                # Stepping before backward throws gradients away too; that is its name.
                if self.thrown[key] >= THROWN_AWAY and not any(
                        code == "step_before_backward" for code, _ in self.seen):
                    model = next((s for s in self.models.values()
                                  if s.rep is not None and key in reps and s.rep is reps[key]),
                                 None)
                    self._found("backward_without_step", model or self,
                                count=self.thrown[key],
                                model=model.name if model else "the model")
        self.pending = kept

    @_safe
    def _after_backward(self) -> None:
        touched = set()
        before = getattr(self, "_reps_before", {})
        for key, rep in self._reps().items():
            g, version = rep.now()
            was, was_version = before.get(key, (None, -1))
            if g is not was or version != was_version:  # identity: tensors compare by value
                touched.add(key)
            rep.remember()
        if touched and not self.inside_step:
            self.pending.append(touched)

    # ------------------------------------------------------------------ optimizer steps

    def _opt_state(self, optimizer: torch.optim.Optimizer) -> OptState:
        state = self.optimizers.get(optimizer)
        if state is None:
            params = [p for group in optimizer.param_groups for p in group["params"]]
            state = OptState(_variable_name(optimizer, "optimizer"), {id(p) for p in params},
                             self._rep(iter(params)))
            self.optimizers[optimizer] = state
        return state

    @_safe
    def _step(self, optimizer: torch.optim.Optimizer) -> None:
        """The gradients this step applies are in ``.grad`` now."""
        state = self._opt_state(optimizer)
        state.steps += 1
        self.steps += 1
        self.tick += 1
        self.last_step = self.tick
        for current in self.passes:
            current.steps += 1
        if self.non_finite is not None:
            self._found("non_finite_loss", self, **self.non_finite)
        self._thrown_away(self._reps())  # cleared before this step: not the step's to use
        for touched in self.pending:
            if touched & state.params:
                for key in touched:
                    self.thrown.pop(key, None)
        self.pending = [t for t in self.pending if not t & state.params]
        reps = [state.rep] + [m.rep for m in self.models.values()
                              if m.rep is not None and id(m.rep.param()) in state.params]
        stale = next((r for r in reps if r is not None and r.stale), None)
        if stale is not None:
            self._found("no_zero_grad", optimizer, step=state.steps, optimizer=state.name,
                        before=number(stale.before))
        for model in list(self.models.values()):
            if model.rep is None or id(model.rep.param()) not in state.params:
                continue
            if model.eval_forward:
                self._found("training_in_eval_mode", model, step=state.steps,
                            optimizer=state.name, model=model.name, layers=model.layers)
            if not model.checked_params and state.steps >= 3:
                model.checked_params = True
                self._unoptimized(model)

    def _unoptimized(self, model: ModelState) -> None:
        module = model.ref()
        if module is None:
            return
        stepped = set().union(*(s.params for s in self.optimizers.values()))
        missing = [name for name, p in module.named_parameters()
                   if p.requires_grad and p.grad is not None and id(p) not in stepped]
        if missing:
            self._found("params_not_in_optimizer", model, count=len(missing), model=model.name,
                        names=", ".join(f"`{n}`" for n in missing[:3])
                        + (", ..." if len(missing) > 3 else ""))

    def _step_begins(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        self.inside_step = True

    @_safe
    def _after_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        self.inside_step = False
        state = self._opt_state(optimizer)
        for rep in [state.rep] + [m.rep for m in self.models.values() if m.rep is not None]:
            if rep is None or id(rep.param()) not in state.params:
                continue
            g, version = rep.now()
            rep.after_step = (weakref.ref(g), version) if g is not None else None
            rep.stale = False

    # ------------------------------------------------------------------ schedulers, loaders

    def _wrap_scheduler_step(self, original: Callable[..., Any]) -> Callable[..., Any]:
        watcher = self

        def step(scheduler: LRScheduler, *args: Any, **kwargs: Any) -> Any:
            if getattr(scheduler, "_step_count", 0) > 0:  # not the constructor's own step
                watcher._scheduler_step(scheduler)
            return original(scheduler, *args, **kwargs)
        return step

    @_safe
    def _scheduler_step(self, scheduler: LRScheduler) -> None:
        optimizer = scheduler.optimizer
        name = _variable_name(scheduler, type(scheduler).__name__)
        if not getattr(optimizer, "_opt_called", False):
            self._found("scheduler_before_optimizer", scheduler, scheduler=name,
                        optimizer=_variable_name(optimizer, "optimizer"),
                        lr0=number(optimizer.param_groups[0]["lr"]))
        if not self.passes:
            return
        current = self.passes[-1]
        count = current.scheduler_steps.get(id(scheduler), 0) + 1
        current.scheduler_steps[id(scheduler)] = count
        length = _schedule_length(scheduler)
        if count >= 2 and count >= current.steps and length is not None \
                and length < current.batches:
            self._found("scheduler_per_batch", scheduler, scheduler=name,
                        size=_schedule_size(scheduler), count=count, batches=current.batches,
                        lr=number(optimizer.param_groups[0]["lr"]))

    def _wrap_iter(self, original: Callable[..., Any]) -> Callable[..., Any]:
        watcher = self

        def iterate(loader: Any) -> Iterator[Any]:
            if grading_now():
                return original(loader)
            return watcher._watched_pass(loader, original(loader))
        return iterate

    def _watched_pass(self, loader: Any, batches: Iterator[Any]) -> Iterator[Any]:
        try:
            size = len(loader)
        except TypeError:
            size = 0
        current = LoaderPass(size)
        self.passes.append(current)
        try:
            yield from batches
        finally:
            if current in self.passes:
                self.passes.remove(current)
            self._pass_ended(current)

    @_safe
    def _pass_ended(self, current: LoaderPass) -> None:
        if current.steps or current.backwards or current.model is None:
            return
        model = current.model
        if current.forwards_train_nograd:
            self._found("validation_in_train_mode", model, batches=current.batches,
                        model=model.name, count=current.forwards_train_nograd,
                        layers=model.layers)
        if current.forwards_grad >= 2:
            self._found("validation_with_grad", model, batches=current.batches,
                        model=model.name, count=current.forwards_grad)


class _GraphTag:
    """Rides on a loss's graph: alive exactly as long as that graph is."""


def _schedule_length(scheduler: LRScheduler) -> int | None:
    """How many steps an epoch-sized schedule takes to run its course, where it says."""
    for attribute in SCHEDULE_LENGTHS:
        value = getattr(scheduler, attribute, None)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if attribute == "milestones" and value:
            return max(value)
    return None


def _schedule_size(scheduler: LRScheduler) -> str:
    for attribute in SCHEDULE_LENGTHS:
        value = getattr(scheduler, attribute, None)
        if value:
            value = max(value) if attribute == "milestones" else value
            return f"`{attribute}={value}`"
    return "its size"
