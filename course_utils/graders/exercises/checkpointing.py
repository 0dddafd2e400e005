"""Grader of saving and resuming training from a checkpoint (lesson 09)."""

from __future__ import annotations

import contextlib
import copy
import os
import tempfile
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn

from course_utils.data import TensorLoader
from course_utils.graders.declare import Check, Exercise, Misconception, generic
from course_utils.graders.evidence import kind, number
from course_utils.graders.judge import Judge
from course_utils.graders.sandbox import steady_conditions
from course_utils.graders.toys import regression_loader, regression_net

EPOCHS = 4
SAVED_AT = (1, 2)  # indices of the epochs after which a checkpoint is saved

NOT_A_PAIR = generic("wrong_return_type",
                     "Pass the pair `(save_checkpoint, load_checkpoint)`, not {got}.")
NOT_AT_PATH = generic(
    "wrong_value",
    "`save_checkpoint` did not write to the `path` it was given ({found} of {files} checkpoint "
    "files exist; {written}). Save to exactly that path, so each checkpoint is its own file.")
NOT_AN_INT = generic("wrong_return_type", "`load_checkpoint` returned {got}; it should return "
                                          "the epoch to resume at, an `int`.")
WRONG_EPOCH = Misconception(
    "epoch_not_restored", "resumes at the wrong epoch",
    "For a checkpoint saved after epoch index {saved} `load_checkpoint` returned {got}; training "
    "should resume at the next epoch, {want}. Save the epoch in the checkpoint and return it "
    "plus one.")
WEIGHTS_NOT_LOADED = Misconception(
    "resume_differs", "resumed training differs from uninterrupted training",
    "After `load_checkpoint` the model does not hold the saved weights (they differ by up to "
    "{gap}). Load the saved `state_dict` into the model you were given, in place; assigning a "
    "new model to the parameter name does not change the caller's model.")
NO_OPTIMIZER_STATE = Misconception(
    "optimizer_state_not_saved", "optimizer state missing from the checkpoint",
    "After `load_checkpoint`, {problem}. Without the optimizer's state the resumed run takes "
    "different steps than the uninterrupted one: save `optimizer.state_dict()` in the "
    "checkpoint and load it back.")
RESUMED_ELSEWHERE = WEIGHTS_NOT_LOADED.saying(
    "Training resumed from the checkpoint after epoch index {saved} ends with weights that "
    "differ from uninterrupted training by up to {gap}. Everything that shapes the next steps "
    "must be saved and restored.")

CHECKPOINT = Exercise(
    "checkpoint",
    [Check("saves", "saves each checkpoint to the path it is given"),
     Check("returns_int", "load_checkpoint returns an int"),
     Check("epoch", "load_checkpoint returns the epoch to resume at"),
     Check("weights", "restores the saved weights in place"),
     Check("optimizer_state", "restores the optimizer's state", lesson=True),
     Check("resumes_identically", "resumed training ends where uninterrupted training does",
           lesson=True)],
    [NO_OPTIMIZER_STATE, WRONG_EPOCH, WEIGHTS_NOT_LOADED, RESUMED_ELSEWHERE])


@contextlib.contextmanager
def _inside(folder: str) -> Iterator[None]:
    """Runs in ``folder``, so a checkpoint written to a fixed file name lands there too."""
    previous = os.getcwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(previous)


def _fresh(seed: int) -> tuple[nn.Module, torch.optim.Optimizer]:
    """A network and an Adam optimizer: Adam's running averages make its state matter."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = regression_net()
    return net, torch.optim.Adam(net.parameters(), lr=0.05)


def _train_epoch(net: nn.Module, optimizer: torch.optim.Optimizer, loader: TensorLoader) -> None:
    with torch.enable_grad():
        for inputs, targets in loader:
            optimizer.zero_grad()
            nn.functional.mse_loss(net(inputs), targets).backward()
            optimizer.step()


def _params(net: nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in net.named_parameters()}


def _largest_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max(float((a[n] - b[n]).abs().max()) for n in a)


def _optimizer_difference(saved: dict[str, Any], loaded: dict[str, Any]) -> str | None:
    """How the loaded optimizer state differs from the saved one, in words; None if it does not."""
    steps = int(next(iter(saved["state"].values()))["step"])
    if not loaded["state"]:
        return (f"the optimizer you passed to `load_checkpoint` still has no state, while the "
                f"saved one held Adam's running averages (`exp_avg`, `exp_avg_sq`) for "
                f"{len(saved['state'])} parameter tensors after {steps} steps")
    for index, state in saved["state"].items():
        mine = loaded["state"].get(index, {})
        for key, value in state.items():
            if key not in mine:
                return f"the optimizer's `{key}` for parameter tensor {index} is missing"
            gap = float((torch.as_tensor(mine[key]).double() - torch.as_tensor(value).double())
                        .abs().max())
            if gap:
                return (f"the optimizer's `{key}` for parameter tensor {index} differs from the "
                        f"saved one by up to {number(gap)}")
    if saved["param_groups"] != loaded["param_groups"]:
        return (f"the optimizer's settings differ from the saved ones (learning rate "
                f"{loaded['param_groups'][0].get('lr')} instead of "
                f"{saved['param_groups'][0].get('lr')}, or another entry of `param_groups`)")
    return None


@CHECKPOINT
@steady_conditions
def grade_checkpoint(judge: Judge, pair: Any, *, data: str) -> None:
    """Trains 4 epochs, saving after epoch indices 1 and 2, then resumes each in fresh objects.

    ``pair`` is ``(save_checkpoint, load_checkpoint)``. Resuming must restore the weights and
    the optimizer state in place, return the next epoch, and end at exactly the weights of
    uninterrupted training. Grading always uses toy data.
    """
    # "saves" is judged once saving ran, so the untouched stub fails it and scores 0.
    if not (isinstance(pair, (tuple, list)) and len(pair) == 2 and all(map(callable, pair))):
        judge.require("saves", False, NOT_A_PAIR, got=kind(pair))
    save_checkpoint, load_checkpoint = pair
    loader = regression_loader(judge.seed)
    net, optimizer = _fresh(judge.seed)
    with tempfile.TemporaryDirectory() as folder, _inside(folder):
        paths = {epoch: os.path.join(folder, f"after_epoch_{epoch}.pt") for epoch in SAVED_AT}
        saved = {}
        for epoch in range(EPOCHS):
            _train_epoch(net, optimizer, loader)
            if epoch in SAVED_AT:
                with judge.context(f"saving after epoch index {epoch}"):
                    judge.call(save_checkpoint, paths[epoch], net, optimizer, epoch)
                saved[epoch] = _params(net), copy.deepcopy(optimizer.state_dict())
        uninterrupted = _params(net)
        missing = [path for path in paths.values() if not os.path.isfile(path)]
        others = sorted(set(os.listdir(folder)) - {os.path.basename(p) for p in paths.values()})
        written = f"the folder holds {', '.join(f'`{name}`' for name in others)}" if others \
            else "nothing else was written either"
        judge.require("saves", not missing, NOT_AT_PATH, found=len(paths) - len(missing),
                      files=len(paths), written=written)

        resumed = {}
        for epoch in SAVED_AT:
            fresh_net, fresh_optimizer = _fresh(judge.seed + 1)
            with judge.context(f"loading the checkpoint saved after epoch index {epoch}"):
                start = judge.call(load_checkpoint, paths[epoch], fresh_net, fresh_optimizer)
            resumed[epoch] = fresh_net, fresh_optimizer, start
    first = SAVED_AT[0]
    starts = {epoch: resumed[epoch][2] for epoch in SAVED_AT}
    odd = [s for s in starts.values()
           if not isinstance(s, (int, np.integer)) or isinstance(s, bool)]
    if judge.check("returns_int", not odd, NOT_AN_INT, got=kind(odd[0]) if odd else ""):
        wrong = next((e for e, s in starts.items() if s != e + 1), None)
        judge.check("epoch", wrong is None, WRONG_EPOCH, saved=wrong,
                    got=repr(starts.get(wrong)), want=(wrong or 0) + 1)

    gaps = {e: _largest_difference(saved[e][0], _params(resumed[e][0])) for e in SAVED_AT}
    restored = not any(gaps.values())
    judge.check("weights", restored, WEIGHTS_NOT_LOADED, gap=number(max(gaps.values())))
    problem = next((p for p in (_optimizer_difference(saved[e][1], resumed[e][1].state_dict())
                                for e in SAVED_AT) if p), None)
    judge.check("optimizer_state", problem is None, NO_OPTIMIZER_STATE, problem=problem)
    if not restored or problem:
        return  # Resuming would only repeat what the two checks above found.
    fresh_net, fresh_optimizer, _ = resumed[first]
    for _ in range(first + 1, EPOCHS):
        _train_epoch(fresh_net, fresh_optimizer, loader)
    gap = _largest_difference(uninterrupted, _params(fresh_net))
    judge.check("resumes_identically", gap <= 1e-6, RESUMED_ELSEWHERE, saved=first,
                gap=number(gap))
