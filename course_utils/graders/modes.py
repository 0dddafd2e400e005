"""Judging how a loop treats its model and loader: modes, gradient tracking, every batch.

Training runs in training mode; evaluation in evaluation mode, without a graph and without
changing the weights; both go through every batch of the loader they were given.
"""

from __future__ import annotations

from typing import Sequence

import torch

from course_utils.graders.declare import Check, Misconception
from course_utils.graders.evidence import number
from course_utils.graders.judge import Judge
from course_utils.graders.recording import Event, Params, Pass, RecordingLoader

LOADER_CHECK = Check("loader", "goes through every batch of the loader it was given")
TRAIN_MODE_CHECK = Check("train_mode", "runs the model in training mode")
EVAL_CHECKS = [Check("eval_mode", "runs the model in evaluation mode"),
               Check("no_graph", "evaluates without building an autograd graph"),
               Check("unchanged", "leaves the model's parameters unchanged")]

IGNORES_LOADER = Misconception(
    "ignores_loader", "does not iterate over the loader it was given",
    "{who} never took a batch from the `{loader}` it was given (0 of {batches} batches), "
    "although the model ran {forwards} forward passes: it seems to loop over another loader, "
    "such as a global variable of the notebook. Loop over the loader passed in as an argument.")
PARTIAL_PASS = Misconception(
    "ignores_loader", IGNORES_LOADER.plain,
    "{who} took only {taken} of {batches} batches from `{loader}`: an epoch goes through all of "
    "them. Loop over the whole loader (no `break`, no early `return`).")
NO_TRAIN_MODE = Misconception(
    "no_train_mode", "model not put in training mode",
    "{who} ran the forward pass in evaluation mode (`model.training` was False in {count} of "
    "{forwards} forward passes). The model was handed over in evaluation mode, as it is right "
    "after validation; dropout and batch norm only train properly in training mode, so switch "
    "it with `model.train()` at the start of each training epoch.")
NO_EVAL_MODE = Misconception(
    "no_eval_mode", "model not put in evaluation mode",
    "{who} ran the model in training mode (`model.training` was True in {count} of {forwards} "
    "forward passes). In training mode dropout drops units at random and batch norm uses (and "
    "updates) batch statistics, so validation numbers are noisy and wrong. Switch to "
    "evaluation mode with `model.eval()` before the loop.")
GRAPH_IN_EVAL = Misconception(
    "grad_enabled_in_eval", "evaluation builds an autograd graph (no torch.no_grad())",
    "{who} built an autograd graph during evaluation (gradient tracking was on in {count} of "
    "{forwards} forward passes): that costs memory and time for gradients nobody needs. Run "
    "the evaluation loop inside `torch.no_grad()` (or `torch.inference_mode()`).")
UPDATES_PARAMETERS = Misconception(
    "updates_parameters", "evaluation changes the model's parameters",
    "{who} changed the model's parameters ({moved} of {tensors} parameter tensors moved, by up "
    "to {change}{stepped}). Evaluation must only measure the model: no `backward()`, no "
    "optimizer step, no changes to the weights.")
EVAL_MISTAKES = [NO_EVAL_MODE, GRAPH_IN_EVAL, UPDATES_PARAMETERS]


def require_loader_used(judge: Judge, passes: Sequence[Pass], loader: RecordingLoader,
                        forwards: int, who: str) -> None:
    """Judges "loader" and stops grading unless every pass over ``loader`` took all batches."""
    mine = [p for p in passes if p.loader == loader.name]
    partial = next((p for p in mine if not p.complete), None)
    mistake = PARTIAL_PASS if mine else IGNORES_LOADER
    judge.require("loader", bool(mine) and partial is None, mistake, who=who,
                  loader=loader.name, batches=len(loader), forwards=forwards,
                  taken=len(partial.batches) if partial else 0)


def check_train_mode(judge: Judge, forwards: Sequence[Event], who: str) -> None:
    """Judges "train_mode": every training forward ran in training mode."""
    off = sum(not e.training for e in forwards)
    judge.check("train_mode", off == 0, NO_TRAIN_MODE, who=who, count=off,
                forwards=len(forwards))


def check_eval_mode(judge: Judge, forwards: Sequence[Event], who: str) -> None:
    """Judges "eval_mode" and "no_graph": evaluation forwards in eval mode, without a graph."""
    training = sum(e.training for e in forwards)
    judge.check("eval_mode", training == 0, NO_EVAL_MODE, who=who, count=training,
                forwards=len(forwards))
    graphs = sum(e.grad_enabled for e in forwards)
    judge.check("no_graph", graphs == 0, GRAPH_IN_EVAL, who=who, count=graphs,
                forwards=len(forwards))


def check_unchanged(judge: Judge, before: Params, after: Params, steps: int, who: str) -> None:
    """Judges "unchanged": evaluation left every parameter as it was and took no step."""
    moved = [name for name in before if not torch.equal(before[name], after[name])]
    change = max((float((after[n] - before[n]).abs().max()) for n in moved), default=0.0)
    judge.check("unchanged", not moved and steps == 0, UPDATES_PARAMETERS, who=who,
                moved=len(moved), tensors=len(before), change=number(change),
                stepped=f"; the training optimizer stepped {steps} times" if steps else "")
