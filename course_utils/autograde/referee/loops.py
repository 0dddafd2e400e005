"""The referee's probes of the training and validation loops: what a model holds after the
student's code trained or evaluated it, and what that code returned, against a reference run.

A loop probe runs the lesson's own loop on the same setting (``serve.Setting``) here, and the
known wrong loops beside it: a model left as one of those leaves it points at that mistake's
check; a model left otherwise points at every check its training could have failed.

Example:
    >>> probe = PROBES["train_step"](seed=1)
    >>> from course_utils.autograde.sandboxed.serve import run
    >>> from course_utils.autograde.sandboxed.wire import decode, encode
    >>> def no_zero_grad(model, inputs, targets, loss_fn, optimizer):
    ...     loss = loss_fn(model(inputs), targets)
    ...     loss.backward()
    ...     optimizer.step()
    ...     return loss.item()
    >>> outcome = decode(run(encode(probe.request), {"train_step": no_zero_grad}))["outcome"]
    >>> [violation.checks for violation in probe.judge(outcome)]
    [('gradients',)]
"""

from __future__ import annotations

import copy
import itertools
import math
import warnings
from typing import Any, Callable, Sequence

import torch
from torch import nn

from course_utils.autograde.referee import Probe, Violation, everything
from course_utils.autograde.referee.functions import ATOL, RTOL
from course_utils.autograde.sandboxed.serve import Setting, build_model, state_of, train_once

LR = 0.1
# Checks that a model trained wrong could come from.
TRAINING = ("step_called", "backward_called", "step_after_backward", "one_step", "gradients")
# How a probe compares what a call returned with the reference's value: the violations found.
Returns = Callable[[dict[str, Any], Any, int], list[Violation]]
Variant = tuple[tuple[str, ...], Callable[..., Any]]
# Relative and absolute tolerances: float32's, and that of bfloat16, which CPU autocast uses.
Tolerance = tuple[float, float]
EXACT: Tolerance = (RTOL, ATOL)
AUTOCAST: Tolerance = (2e-2, 1e-3)


def same_state(got: Any, want: dict[str, torch.Tensor], tolerance: Tolerance = EXACT) -> bool:
    rtol, atol = tolerance
    return isinstance(got, dict) and set(got) == set(want) and all(
        isinstance(got[name], torch.Tensor) and got[name].shape == value.shape
        and torch.allclose(got[name].double(), value.double(), rtol=rtol, atol=atol)
        for name, value in want.items())


def number(returned: dict[str, Any]) -> float | None:
    """The float a call returned (a Python or NumPy number, not a tensor or an int), else None."""
    value = returned.get("number") if isinstance(returned, dict) else None
    kind = returned.get("type") if isinstance(returned, dict) else None
    return float(value) if isinstance(value, (int, float)) and kind != "int" else None


def near(got: float, want: float, tolerance: Tolerance = EXACT) -> bool:
    """Equal within ``tolerance``; any non-finite number is near a non-finite reference."""
    if not math.isfinite(want):
        return not math.isfinite(got)
    return math.isclose(got, want, rel_tol=tolerance[0], abs_tol=tolerance[1])


def floats(returned: dict[str, Any], want: Sequence[float], what: str, kind: tuple[str, ...],
           value: tuple[str, ...], tolerance: Tolerance = EXACT) -> list[Violation]:
    """A list of floats: ``kind`` explains another shape or type, ``value`` other numbers."""
    items = returned.get("items") if isinstance(returned, dict) else None
    got = [number(item) for item in items or []]
    if items is None or len(got) != len(want) or None in got:
        return [Violation(kind, f"{what}: not {len(want)} floats")]
    if any(not math.isfinite(g) and math.isfinite(w) for g, w in zip(got, want)):
        return [Violation(("finite",), f"{what}: {got}")]
    wrong = [i for i, (g, w) in enumerate(zip(got, want)) if not near(g, w, tolerance)]
    return [Violation(value, f"{what}: {got[wrong[0]]:.6g} instead of {want[wrong[0]]:.6g}")] \
        if wrong else []


def a_float(value: tuple[str, ...], kind: tuple[str, ...] = ("returns_float",),
            tolerance: Tolerance = EXACT) -> Returns:
    """The call returns one float, the reference's; ``value`` explains another number."""
    def compare(returned: dict[str, Any], want: Any, call: int) -> list[Violation]:
        return [Violation(v.checks, f"call {call}: {v.says}") for v in
                floats({"items": [returned]}, [want], "returned", kind, value, tolerance)]
    return compare


def reference_run(request: dict[str, Any], loop: Callable[..., Any]) -> list[tuple[Any, Any]]:
    """What ``loop`` returns and leaves the model as, call by call, on the request's setting, up
    to a call PyTorch refuses."""
    threads = torch.get_num_threads()
    with torch.random.fork_rng(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the wrong loops' own, as PyTorch warns of them
        torch.manual_seed(int(request.get("seed", 0)))
        torch.set_num_threads(1)  # models this small only wait for a second thread
        try:
            setting = Setting(request)
            done = []
            for template in request["calls"]:
                try:
                    value = loop(*setting.arguments(template))
                except RuntimeError:  # a wrong loop PyTorch stops (the lesson's never does)
                    break
                done.append((value, setting.state()))
        finally:
            torch.set_num_threads(threads)
    return done


def loop_probe(exercise: str, request: dict[str, Any], lesson: Callable[..., Any],
               returns: Returns, variants: Sequence[Variant] = (),
               moved: tuple[str, ...] = TRAINING, tolerance: Tolerance = EXACT) -> Probe:
    """A probe of a loop: after each call the model must hold what the lesson's loop leaves, and
    then the call must return what it returns (``returns``); a model left as a known wrong loop
    (``variants``) leaves it points at that loop's checks, otherwise at ``moved``, and the calls
    after it are not judged (they start from another model)."""
    request = {"scenario": "loop", "names": [exercise], **request}
    wanted = reference_run(request, lesson)
    known = [(checks, reference_run(request, loop)) for checks, loop in variants]

    def judge(outcome: Any) -> list[Violation]:
        if not isinstance(outcome, list) or len(outcome) != len(wanted) or \
                any(not isinstance(call, dict) or "error" in call for call in outcome):
            return [everything(exercise, "a call raised, or not every call ran")]
        found = []
        for index, (call, (value, state)) in enumerate(zip(outcome, wanted)):
            if not same_state(call.get("state"), state, tolerance):
                suspects = next((checks for checks, run in known if index < len(run)
                                 and same_state(call.get("state"), run[index][1], tolerance)),
                                moved)
                # What it returned follows from that training: judged only after a right one.
                return found + [Violation(suspects, f"call {index}: the model afterwards is not "
                                                    "what the lesson's loop leaves")]
            found += returns(call.get("returned", {}), value, index)
        return found

    return Probe(exercise, request, judge)


def model_spec(seed: int, layers: list[list[Any]], train: bool = True) -> dict[str, Any]:
    """A model for the request, initialised from ``seed``."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return {"layers": layers, "train": train,
                "state": state_of(build_model({"layers": layers}))}


REGRESSION = [["linear", 4, 6], ["tanh"], ["linear", 6, 1]]
# Batch norm makes the mode visible in every number.
NORMED = [["linear", 4, 6], ["batchnorm", 6], ["relu"], ["linear", 6, 1]]


def batches(generator: torch.Generator, count: int, size: int = 5) -> list[list[torch.Tensor]]:
    return [[torch.randn(size, 4, generator=generator), torch.randn(size, 1, generator=generator)]
            for _ in range(count)]


def regression_data(generator: torch.Generator, n: int = 10) -> list[torch.Tensor]:
    """Inputs and targets whose last two samples stand out (the loader's short last batch)."""
    targets = torch.randn(n, 1, generator=generator)
    targets[-2:] += 4.0
    return [torch.randn(n, 4, generator=generator), targets]


def step(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, loss_fn: nn.Module,
         optimizer: torch.optim.Optimizer, zero: bool = True) -> float:
    """The lesson's training step (``zero=False``: without clearing the gradients)."""
    if zero:
        optimizer.zero_grad()
    loss = loss_fn(model(inputs), targets)
    loss.backward()
    optimizer.step()
    return loss.item()


def epoch(model: nn.Module, loader: Any, loss_fn: nn.Module, optimizer: torch.optim.Optimizer,
          train: bool = True, zero: bool = True) -> float:
    """The lesson's epoch: the per-sample mean loss (``train``, ``zero``: the wrong loops)."""
    model.train(train)
    total = 0.0
    for inputs, targets in loader:
        total += step(model, inputs, targets, loss_fn, optimizer, zero) * len(inputs)
    return total / len(loader.dataset)


def train_step(seed: int) -> Probe:
    generator = torch.Generator().manual_seed(seed)
    calls = [["$model", x, y, "$loss", "$optimizer"] for x, y in batches(generator, 3)]
    return loop_probe(
        "train_step", {"model": model_spec(seed, REGRESSION), "loss": "mse", "calls": calls},
        step, a_float(("returned_loss",)),
        [(("gradients",), lambda *args: step(*args, zero=False))])


def train_one_epoch(seed: int) -> Probe:
    generator = torch.Generator().manual_seed(seed)
    request = {"model": model_spec(seed, NORMED, train=False), "loss": "mse",
               "data": regression_data(generator), "batch_size": 4,
               "calls": [["$model", "$loader", "$loss", "$optimizer"]]}
    return loop_probe(
        "train_one_epoch", request, epoch, a_float(("mean_loss",), ("returns_float",)),
        [(("train_mode",), lambda *args: epoch(*args, train=False)),
         (("gradients",), lambda *args: epoch(*args, zero=False))],
        moved=("loader", "train_mode") + TRAINING)


def _evaluate(model: nn.Module, loader: Any, loss_fn: nn.Module) -> tuple[float, float]:
    model.eval()
    loss, correct = 0.0, 0
    with torch.no_grad():
        for inputs, targets in loader:
            logits = model(inputs)
            loss += loss_fn(logits, targets).item() * len(inputs)
            correct += (logits.argmax(1) == targets).sum().item()
    return loss / len(loader.dataset), correct / len(loader.dataset)


def _pair(returned: dict[str, Any], want: tuple[float, float], call: int) -> list[Violation]:
    kind = ("returns_pair", "returns_float")
    loss = floats({"items": (returned.get("items") or [])[:1]}, want[:1], "the loss", kind,
                  ("mean_loss", "loader"))
    accuracy = floats({"items": (returned.get("items") or [])[1:]}, want[1:], "the accuracy",
                      kind, ("accuracy", "loader"))
    if len(returned.get("items") or []) != 2:
        return [Violation(kind, "not a pair of floats")]
    return loss + accuracy


def evaluate(seed: int) -> Probe:
    generator = torch.Generator().manual_seed(seed)
    spec = model_spec(seed, [["linear", 3, 8], ["batchnorm", 8], ["relu"], ["dropout", 0.5],
                             ["linear", 8, 4]], train=True)
    # Running statistics far from the data's, so that training mode shows in every number.
    spec["state"]["1.running_mean"] = torch.randn(8, generator=generator)
    data = [torch.randn(10, 3, generator=generator), torch.randint(0, 4, (10,), generator=generator)]
    return loop_probe("evaluate", {"model": spec, "loss": "cross_entropy", "data": data,
                                   "batch_size": 4, "calls": [["$model", "$loader", "$loss"]]},
                      _evaluate, _pair, moved=("eval_mode", "unchanged"))


def _accumulate(model: nn.Module, micro_batches: list[Any], loss_fn: nn.Module,
                optimizer: torch.optim.Optimizer, scaled: bool = True, zero: str = "once",
                step_each: bool = False) -> float:
    """The lesson's accumulation step, and its known wrong forms."""
    if zero == "once":
        optimizer.zero_grad()
    total = 0.0
    for inputs, targets in micro_batches:
        if zero == "each":
            optimizer.zero_grad()
        loss = loss_fn(model(inputs), targets)
        (loss / len(micro_batches) if scaled else loss).backward()
        total += loss.item()
        if step_each:
            optimizer.step()
    if not step_each:
        optimizer.step()
    return total / len(micro_batches)


def accumulation_step(seed: int) -> Probe:
    generator = torch.Generator().manual_seed(seed)
    calls = [["$model", batches(generator, 3, size=4), "$loss", "$optimizer"] for _ in range(2)]
    return loop_probe(
        "accumulation_step", {"model": model_spec(seed, REGRESSION), "loss": "mse",
                              "calls": calls},
        _accumulate, a_float(("returned_loss",)),
        [(("gradients",), lambda *args: _accumulate(*args, scaled=False)),
         (("gradients",), lambda *args: _accumulate(*args, zero="each")),
         (("gradients",), lambda *args: _accumulate(*args, zero="never")),
         (("one_step",), lambda *args: _accumulate(*args, step_each=True))])


def _schedule(model: nn.Module, loader: Any, loss_fn: nn.Module,
              optimizer: torch.optim.Optimizer, scheduler: Any, epochs: int,
              when: str = "after", train: bool = True) -> list[float]:
    """The lesson's scheduled training (``when``: where the scheduler steps in the wrong ones;
    ``train``: without training mode)."""
    losses = []
    for _ in range(epochs):
        if when == "before":
            scheduler.step()
        model.train(train)
        total = 0.0
        for inputs, targets in loader:
            total += step(model, inputs, targets, loss_fn, optimizer) * len(inputs)
            if when == "each batch":
                scheduler.step()
        if when == "after":
            scheduler.step()
        losses.append(total / len(loader.dataset))
    return losses


def train_with_schedule(seed: int) -> Probe:
    generator = torch.Generator().manual_seed(seed)
    request = {"model": model_spec(seed, NORMED, train=False), "loss": "mse", "gamma": 0.5,
               "data": regression_data(generator), "batch_size": 4,
               "calls": [["$model", "$loader", "$loss", "$optimizer", "$scheduler", 3]]}

    def returns(returned: dict[str, Any], want: list[float], call: int) -> list[Violation]:
        return floats(returned, want, "the epoch losses", ("returns_list", "returns_float"),
                      ("mean_loss",))

    return loop_probe(
        "train_with_schedule", request, _schedule, returns,
        [(("schedule",), lambda *args, when=when: _schedule(*args, when=when))
         for when in ("before", "each batch", "never")]
        + [(("train_mode",), lambda *args: _schedule(*args, train=False))],
        moved=("loader", "train_mode", "schedule") + TRAINING)


def _clipped(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, loss_fn: nn.Module,
             optimizer: torch.optim.Optimizer, max_norm: float, scaler: Any = None,
             clip: str = "norm", unscale: bool = True, through_scaler: bool = True,
             update: bool = True) -> float:
    """The lesson's clipped step, and its known wrong forms (``clip``: "norm", "each"
    parameter on its own, "none"; the scaler's ``unscale_``, ``step`` and ``update`` left out)."""
    optimizer.zero_grad()
    loss = loss_fn(model(inputs), targets)
    if scaler is None:
        loss.backward()
    else:
        scaler.scale(loss).backward()
        if unscale:
            scaler.unscale_(optimizer)
    if clip == "norm":
        nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    elif clip == "each":
        for param in model.parameters():
            nn.utils.clip_grad_norm_(param, max_norm)
    if scaler is None or not through_scaler:
        optimizer.step()
    else:
        scaler.step(optimizer)
    if scaler is not None and update:
        scaler.update()
    return loss.item()


def clipped_step(seed: int) -> Probe:
    generator = torch.Generator().manual_seed(seed)
    spec = model_spec(seed, REGRESSION)
    # Updates large enough to tell apart within autocast's tolerance.
    plain = [["$model", x, y, "$loss", "$optimizer", max_norm]
             for (x, y), max_norm in zip(batches(generator, 3), (0.5, 100.0, 0.3))]
    scaled = [["$model", x, y, "$loss", "$optimizer", 0.5, "$scaler"]
              for x, y in batches(generator, 3)]
    scaled[1][1] = torch.full_like(scaled[1][1], math.inf)  # a batch the scaler must skip
    variants: list[Variant] = [
        (("gradients",), lambda *args: _clipped(*args, clip="none")),
        (("gradients",), lambda *args: _clipped(*args, clip="each")),
        (("gradients",), lambda *args: _clipped(*args, unscale=False)),
        (("gradients",), lambda *args: _clipped(*args, clip="none", unscale=False)),
        (("scaler", "skips_non_finite"), lambda *args: _clipped(*args, through_scaler=False)),
        (("scaler",), lambda *args: _clipped(*args, update=False))]
    probes = [loop_probe("clipped_step", {"model": spec, "loss": "mse", "calls": calls,
                                          "sgd": {"lr": 1.0}},
                         _clipped, a_float(("returned_loss",), tolerance=AUTOCAST), variants,
                         moved=TRAINING + ("scaler", "skips_non_finite"), tolerance=AUTOCAST)
              for calls in (plain, scaled)]

    def judge(outcome: Any) -> list[Violation]:
        if not isinstance(outcome, list) or len(outcome) != len(probes):
            return [everything("clipped_step", "no outcome for each setting")]
        return [violation for probe, part in zip(probes, outcome)
                for violation in probe.judge(part)]

    return Probe("clipped_step", {"scenario": "each", "names": ["clipped_step"],
                                  "requests": [probe.request for probe in probes]}, judge)


def checkpoint(seed: int) -> Probe:
    generator = torch.Generator().manual_seed(seed)
    request = {"scenario": "checkpoint", "names": ["save_checkpoint", "load_checkpoint"],
               "model": model_spec(seed, REGRESSION), "fresh_model": model_spec(seed + 1, REGRESSION),
               "sgd": {"lr": LR, "momentum": 0.9}, "loss": "mse", "epoch": 4,
               "batches": batches(generator, 2)}
    # The model trained without a break: one step, then another (momentum carried over).
    with torch.random.fork_rng():
        setting = Setting(request)
        train_once(setting, *request["batches"][0])
        after_one = setting.state()
        train_once(setting, *request["batches"][1])
        after_two = setting.state()

    def judge(outcome: Any) -> list[Violation]:
        if not isinstance(outcome, dict) or "error" in outcome.get("saved", {"error": 1}) \
                or "error" in outcome.get("loaded", {"error": 1}):
            return [everything("checkpoint", "saving or loading raised")]
        found = []
        returned = outcome["loaded"].get("returned", {})
        if returned.get("type") != "int":
            found.append(Violation(("returns_int",), "load_checkpoint returned no int"))
        elif returned.get("number") != request["epoch"] + 1:
            found.append(Violation(("epoch",), f"resumes at epoch {returned.get('number')}"))
        if not same_state(outcome.get("state_loaded"), after_one):
            found.append(Violation(("saves", "weights"), "the loaded model differs"))
        elif not same_state(outcome.get("state_resumed"), after_two):
            found.append(Violation(("optimizer_state", "resumes_identically"),
                                   "training on from the checkpoint differs"))
        return found

    return Probe("checkpoint", request, judge)


def _fit(model: nn.Module, train_loader: Any, val_loader: Any, loss_fn: nn.Module,
         optimizer: torch.optim.Optimizer, epochs: int, validate_first: bool = False,
         zero: bool = True) -> dict[str, list[float]]:
    """The lesson's fit (``validate_first``, ``zero``: its known wrong forms)."""
    history: dict[str, list[float]] = {"train_loss": [], "val_loss": [], "val_acc": []}
    for _ in range(epochs):
        if validate_first:
            val_loss, val_acc = _evaluate(model, val_loader, loss_fn)
        history["train_loss"].append(epoch(model, train_loader, loss_fn, optimizer, zero=zero))
        if not validate_first:
            val_loss, val_acc = _evaluate(model, val_loader, loss_fn)
        history["val_loss"].append(val_loss)
        history["val_acc"].append(val_acc)
    return history


def fit(seed: int) -> Probe:
    generator = torch.Generator().manual_seed(seed)
    spec = model_spec(seed, [["linear", 3, 8], ["batchnorm", 8], ["relu"], ["linear", 8, 4]],
                      train=False)

    def points(n: int) -> list[torch.Tensor]:
        return [torch.randn(n, 3, generator=generator), torch.randint(0, 4, (n,), generator=generator)]

    request = {"model": spec, "loss": "cross_entropy", "data": points(10), "val_data": points(6),
               "batch_size": 4, "calls": [["$model", "$loader", "$val_loader", "$loss",
                                           "$optimizer", 2]]}

    def returns(returned: dict[str, Any], want: dict[str, list[float]],
                call: int) -> list[Violation]:
        keys = returned.get("keys") if isinstance(returned, dict) else None
        if not isinstance(keys, dict) or not set(want) <= set(keys):
            return [Violation(("returns_dict", "history_shape"), "no history of the three keys")]
        return [violation for key in want for violation in floats(
            keys[key], want[key], key, ("history_shape", "returns_float"), (key,))]

    return loop_probe(
        "fit", request, _fit, returns,
        [(("epoch_order",), lambda *args: _fit(*args, validate_first=True)),
         (("gradients",), lambda *args: _fit(*args, zero=False))],
        moved=("loader", "epoch_order", "train_mode", "eval_mode", "unchanged") + TRAINING)


def _sweep(model: nn.Module, loader: Any, loss_fn: nn.Module, make_optimizer: Any,
           lrs: list[float], steps: int, restore: bool = True, fresh: bool = True,
           same_batches: bool = True, leave_trained: bool = False) -> list[float]:
    """The lesson's learning-rate sweep, and its known wrong forms."""
    initial = copy.deepcopy(model.state_dict())
    model.train()
    optimizer, shared = None, itertools.cycle(loader)
    means = []
    for lr in lrs:
        if restore:
            model.load_state_dict(initial)
        if fresh or optimizer is None:
            optimizer = make_optimizer(model.parameters(), lr)
        else:
            for group in optimizer.param_groups:
                group["lr"] = lr
        batches = itertools.cycle(loader) if same_batches else shared
        means.append(sum(step(model, *next(batches), loss_fn, optimizer)
                         for _ in range(steps)) / steps)
    if not leave_trained:
        model.load_state_dict(initial)
    return means


def lr_sweep(seed: int) -> Probe:
    generator = torch.Generator().manual_seed(seed)
    request = {"scenario": "loop", "names": ["lr_sweep"],
               "model": model_spec(seed, NORMED, train=False), "loss": "mse",
               "data": regression_data(generator), "batch_size": 4,
               "calls": [["$model", "$loader", "$loss", "$make_optimizer", [0.01, 0.1, 0.3], 4]]}
    [(means, state)] = reference_run(request, _sweep)
    wrong = {checks: reference_run(request, lambda *args, options=options: _sweep(*args, **options))
             for checks, options in ((("restored",), {"restore": False}),
                                     (("fresh_optimizer",), {"fresh": False}),
                                     (("same_batches",), {"same_batches": False}))}
    returned_wrong = ("returns_list", "returns_float")

    def judge(outcome: Any) -> list[Violation]:
        if not isinstance(outcome, list) or len(outcome) != 1 or "error" in outcome[0]:
            return [everything("lr_sweep", "the call raised")]
        found = []
        if not same_state(outcome[0].get("state"), state):
            found.append(Violation(("left_restored", "trains_model"), "the model is not restored"))
        returned = outcome[0].get("returned", {})
        for violation in floats(returned, means, "the mean losses", returned_wrong,
                                ("mean_loss",)):
            if violation.checks == ("mean_loss",):  # a known wrong sweep, or any training check
                got = [number(item) for item in returned.get("items") or []]
                violation = Violation(next(
                    (checks for checks, [(values, _)] in wrong.items()
                     if all(near(g, w) for g, w in zip(got, values))),
                    ("restored", "fresh_optimizer", "same_batches", "mean_loss", "train_mode",
                     "step_count") + TRAINING), violation.says)
            found.append(violation)
        return found

    return Probe("lr_sweep", request, judge)


PROBES: dict[str, Callable[[int], Probe]] = {
    "train_step": train_step, "train_one_epoch": train_one_epoch, "evaluate": evaluate,
    "accumulation_step": accumulation_step, "train_with_schedule": train_with_schedule,
    "clipped_step": clipped_step, "checkpoint": checkpoint, "fit": fit, "lr_sweep": lr_sweep}
