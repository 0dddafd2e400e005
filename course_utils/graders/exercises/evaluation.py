"""Graders of evaluation and of the whole fit loop (lessons 07-08)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from course_utils.data import mnist_loaders, toy_classification
from course_utils.graders.averages import (AVERAGE_CHECKS, AVERAGE_MISTAKES, check_accuracy,
                                           check_mean_loss, evaluation_numbers, pass_numbers,
                                           training_numbers)
from course_utils.graders.declare import Check, Exercise, Misconception, generic, lesson
from course_utils.graders.evidence import kind, number
from course_utils.graders.judge import Judge
from course_utils.graders.modes import (EVAL_CHECKS, EVAL_MISTAKES, IGNORES_LOADER, LOADER_CHECK,
                                        NO_TRAIN_MODE, TRAIN_MODE_CHECK, check_eval_mode,
                                        check_train_mode, check_unchanged, require_loader_used)
from course_utils.graders.recording import Pass, Recorder, count
from course_utils.graders.sandbox import steady_conditions
from course_utils.graders.steps import (STEP_CHECKS, STEP_MISTAKES, step_before_backward,
                                        check_training)
from course_utils.graders.toys import classification_loader, classification_net
from course_utils.graders.values import LOSS_TENSOR, NUMBER_CHECKS, check_numbers, first_mismatch

HISTORY_KEYS = ("train_loss", "val_loss", "val_acc")
# After 2 epochs on this subset a correct loop reached 0.879-0.905 validation accuracy over
# seeds 0-29 (mean 0.894); one that barely learns stays far below (0.34 with a tiny learning rate).
MNIST_ACCURACY = 0.85
MNIST_SUBSET = (6000, 1000)
TOY_FIT_TIMEOUT = 10.0  # seconds; a correct fit on the toy data takes a few hundredths

NOT_A_PAIR = generic("wrong_return_type", "`evaluate` returned {got}; it should return a pair "
                                          "`(loss, accuracy)` of Python floats.")
NOT_A_DICT = generic("wrong_return_type", "`fit` returned {got}; it should return the history, "
                                          "a dict with the lists {keys}.")
HISTORY_SHAPE = Misconception(
    "history_wrong_shape", "history is not one value per epoch per key",
    "After {epochs} epochs the history should hold one float per epoch under each key, but "
    "{found}. Append each epoch's numbers to these lists.")
WRONG_ORDER = generic(
    "wrong_value",
    "For {epochs} epochs `fit` should train over the training loader, then validate over the "
    "validation loader, once each per epoch; yours went: {order}. Validate after each epoch's "
    "training, so the numbers describe the model that epoch produced.")
BELOW_THRESHOLD = Misconception(
    "accuracy_below_threshold", "model does not reach the required accuracy",
    "After {epochs} epochs on {images} MNIST images the model classifies {got}% of the "
    "validation images correctly; a working loop reaches at least {want}% here. Check that "
    "`fit` trains with the optimizer it was given, unchanged (learning rate included), for the "
    "number of epochs asked.")

EVALUATE = Exercise(
    "evaluate",
    [*lesson(EVAL_CHECKS, "eval_mode", "no_graph"), LOADER_CHECK,
     Check("returns_pair", "returns a pair (loss, accuracy)"), *NUMBER_CHECKS,
     *lesson(AVERAGE_CHECKS, "accuracy")],
    [*EVAL_MISTAKES, IGNORES_LOADER, LOSS_TENSOR, *AVERAGE_MISTAKES])

FIT = Exercise(
    "fit",
    [Check("returns_dict", "returns the history as a dict"),
     Check("history_shape", "keeps one value per epoch under each key"), *NUMBER_CHECKS,
     LOADER_CHECK, Check("epoch_order", "trains, then validates, once each per epoch",
                         lesson=True),
     TRAIN_MODE_CHECK, *EVAL_CHECKS, *lesson(STEP_CHECKS, "gradients"),
     Check("train_loss", "records each epoch's per-sample mean training loss", data="toy"),
     Check("val_loss", "records each epoch's per-sample mean validation loss"),
     Check("val_acc", "records each epoch's validation accuracy"),
     Check("accuracy_reached", f"reaches {100 * MNIST_ACCURACY:g}% validation accuracy",
           data="mnist")],
    [HISTORY_SHAPE, BELOW_THRESHOLD, LOSS_TENSOR, IGNORES_LOADER, NO_TRAIN_MODE, *EVAL_MISTAKES,
     *STEP_MISTAKES, *AVERAGE_MISTAKES],
    timeout=60)


def _pretrained_classifier(seed: int) -> nn.Module:
    """A classifier trained a little on other toy points, so that its accuracy means something."""
    net = classification_net()
    points, labels = toy_classification(n=90, classes=3, seed=seed + 1000).tensors
    optimizer = torch.optim.Adam(net.parameters(), lr=0.05)
    with torch.enable_grad():
        for _ in range(25):
            optimizer.zero_grad()
            nn.functional.cross_entropy(net(points), labels).backward()
            optimizer.step()
    return net


@EVALUATE
@steady_conditions
def grade_evaluate(judge: Judge, evaluate: Callable[..., Any], *, data: str) -> None:
    """Evaluates a trained toy classifier handed over in training mode, on batches of 8, 8 and 2.

    Grading always uses toy data.
    """
    recorder = Recorder(_pretrained_classifier(judge.seed))
    loss_fn = nn.CrossEntropyLoss()
    loader = recorder.loader(classification_loader(judge.seed), "loader")
    model = recorder.model.train()  # As during training: the function must switch it.
    before = recorder.snapshot()
    with judge.context("running `evaluate`"):
        result = judge.call(evaluate, model, loader, loss_fn)

    who = "Your `evaluate`"
    forwards = [e for e in recorder.events if e.kind == "forward"]
    check_eval_mode(judge, forwards, who)
    check_unchanged(judge, before, recorder.snapshot(), count(recorder.events, "step"), who)
    passes = recorder.passes()
    require_loader_used(judge, passes, loader, len(forwards), who)
    judge.require("returns_pair", isinstance(result, (tuple, list)) and len(result) == 2,
                  NOT_A_PAIR, got=kind(result))
    loss, accuracy = check_numbers(judge, list(result), ["The loss `evaluate` returned",
                                                         "The accuracy `evaluate` returned"])
    numbers = evaluation_numbers(recorder, passes[0], loss_fn)
    check_mean_loss(judge, loss, numbers, "The loss `evaluate` returned")
    check_accuracy(judge, accuracy, numbers, "The accuracy `evaluate` returned")


@dataclass
class _FitSetup:
    """What ``fit`` is graded on: data, a fresh network, its optimizer and the number of epochs."""

    net: nn.Module
    train: Any
    val: Any
    make_optimizer: Callable[[Any], torch.optim.Optimizer]
    epochs: int
    mnist: bool


def _toy_fit(seed: int) -> _FitSetup:
    return _FitSetup(classification_net(), classification_loader(seed),
                     classification_loader(seed + 500),
                     lambda params: torch.optim.SGD(params, lr=0.3), epochs=3, mnist=False)


def _mnist_fit(seed: int) -> _FitSetup:
    train, val = mnist_loaders(batch_size=64, subset=MNIST_SUBSET, seed=seed)
    net = nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 64),
                        nn.ReLU(), nn.Linear(64, 10))
    return _FitSetup(net, train, val, lambda params: torch.optim.Adam(params, lr=1e-3),
                     epochs=2, mnist=True)


def _check_history(judge: Judge, history: Any, epochs: int) -> dict[str, list[float | None]]:
    """Checks the history's shape and types; returns its values as floats (None where unusable)."""
    if not judge.check("returns_dict", isinstance(history, dict), NOT_A_DICT, got=kind(history),
                       keys=", ".join(f"`{k!r}`" for k in HISTORY_KEYS)):
        return {}  # the loop itself can still be judged
    shapes = {key: kind(history[key]) if key in history else "missing" for key in HISTORY_KEYS}
    good = {key: isinstance(history.get(key), (list, tuple)) and len(history[key]) == epochs
            for key in HISTORY_KEYS}
    judge.check("history_shape", all(good.values()), HISTORY_SHAPE, epochs=epochs,
                found=", ".join(f"`history[{k!r}]` is {shapes[k]}" for k in HISTORY_KEYS
                                if not good[k]))
    entries = [(key, epoch, value) for key in HISTORY_KEYS if good[key]
               for epoch, value in enumerate(history[key])]
    floats = check_numbers(judge, [value for _, _, value in entries],
                           [f"`history[{key!r}][{epoch}]` (epoch {epoch + 1})"
                            for key, epoch, _ in entries])
    values: dict[str, list[float | None]] = {}
    for (key, _, _), value in zip(entries, floats):
        values.setdefault(key, []).append(value)
    return values


def _order(passes: list[Pass]) -> str:
    return ", ".join("training" if p.loader == "train_loader" else "validation" for p in passes)


@FIT
@steady_conditions
def grade_fit(judge: Judge, fit: Callable[..., Any], *, data: str) -> None:
    """Runs ``fit`` on a fresh model handed over in eval mode and watches every epoch.

    Each epoch must train over the whole training loader (in training mode, with correct
    steps), then validate over the whole validation loader (in eval mode, without a graph,
    without changing the weights); the history must match what happened. With
    ``data="mnist"`` a fixed MNIST subset is used and the final accuracy must pass a threshold.
    The registered 60 s time limit is meant for MNIST; on toy data it is at most 10 s, so an
    endless loop is reported quickly.
    """
    if data == "mnist":
        setup = _mnist_fit(judge.seed)
    else:
        setup = _toy_fit(judge.seed)
        judge.timeout = min(judge.timeout, TOY_FIT_TIMEOUT)
    # On MNIST the gradients and per-batch weights are not kept: too large to hold cheaply.
    recorder = Recorder(setup.net, keep_tensors=not setup.mnist)
    optimizer = recorder.watch(setup.make_optimizer(recorder.model.parameters()))
    train = recorder.loader(setup.train, "train_loader")
    val = recorder.loader(setup.val, "val_loader", keep_batches=True)
    loss_fn = nn.CrossEntropyLoss()
    model = recorder.model.eval()
    with judge.context("running `fit`", [step_before_backward(recorder)]):
        history = judge.call(fit, model, train, val, loss_fn, optimizer, setup.epochs)

    who = "Your `fit`"
    values = _check_history(judge, history, setup.epochs)
    passes = recorder.passes()
    forwards = count(recorder.events, "forward")
    require_loader_used(judge, passes, train, forwards, who)
    require_loader_used(judge, passes, val, forwards, who)
    expected = [train.name, val.name] * setup.epochs
    judge.check("epoch_order", [p.loader for p in passes] == expected, WRONG_ORDER,
                epochs=setup.epochs, order=_order(passes))
    trained = [p for p in passes if p.loader == train.name]
    validated = [p for p in passes if p.loader == val.name]
    check_train_mode(judge, [f for p in trained for f in p.forwards], f"{who} (training)")
    check_eval_mode(judge, [f for p in validated for f in p.forwards], f"{who} (validation)")
    moved = next((p for p in validated if p.start_params is not None and p.end_params is not None
                  and any(not torch.equal(p.start_params[n], p.end_params[n])
                          for n in p.start_params)), validated[0])
    check_unchanged(judge, moved.start_params, moved.end_params, count(moved.events, "step"),
                    f"{who} (validation)")
    iterations = [it for p in trained for it in recorder.iterations(p)]
    check_training(judge, recorder, iterations, loss_fn, who=f"{who} (training)")

    epochs = min(setup.epochs, len(trained), len(validated))
    if not setup.mnist and "train_loss" in values:
        numbers = [training_numbers(recorder, recorder.iterations(p), loss_fn)
                   for p in trained[:epochs]]
        e = first_mismatch(list(zip(values["train_loss"], [n.loss for n in numbers])))
        check_mean_loss(judge, values["train_loss"][e], numbers[e],
                        f"`history['train_loss'][{e}]` (epoch {e + 1})", check="train_loss")
    val_numbers = [evaluation_numbers(recorder, p, loss_fn) for p in validated[:epochs]]
    for key, attribute, judged in (("val_loss", "loss", check_mean_loss),
                                   ("val_acc", "accuracy", check_accuracy)):
        if key in values:
            e = first_mismatch([(got, getattr(n, attribute))
                                for got, n in zip(values[key], val_numbers)])
            judged(judge, values[key][e], val_numbers[e],
                   f"`history[{key!r}][{e}]` (epoch {e + 1})", check=key)
    if setup.mnist:
        batches = list(setup.val)
        final = pass_numbers(recorder, batches, [recorder.snapshot()] * len(batches), loss_fn)
        judge.check("accuracy_reached", final.accuracy >= MNIST_ACCURACY, BELOW_THRESHOLD,
                    epochs=setup.epochs, images=MNIST_SUBSET[0], got=number(100 * final.accuracy),
                    want=f"{100 * MNIST_ACCURACY:g}")
