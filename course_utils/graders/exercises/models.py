"""Graders for lesson 01: the models `SimpleNN` (10→50→1) and `MNISTMLP` (784→128→64→10)."""

from __future__ import annotations

import difflib
from typing import Any, Callable

import torch
from torch import nn

from course_utils.graders.declare import Check, Exercise, Misconception, generic
from course_utils.graders.evidence import close, first_values, generator, kind, number, shape
from course_utils.graders.judge import Judge

# One (input size, output size) pair per linear layer.
Sizes = tuple[int, ...]
# A linear layer as the model holds it, oriented so that ``x @ weight + bias`` applies it.
Layer = tuple[torch.Tensor, torch.Tensor]

MODULE_CHECKS = [Check("module", "is an `nn.Module` class with a `forward` method"),
                 Check("parameters", "has the parameters of the layers asked for")]
MODEL_CHECKS = [Check("forward", "computes Linear → ReLU → ... → Linear with its own layers"),
                Check("gradients_flow", "lets gradients reach every parameter")]
SHAPE = Misconception("wrong_output_shape", "model output has the wrong shape")
ARCHITECTURE = Misconception("wrong_architecture", "model layers differ from the ones asked for")
DETACHED = Misconception("detached_result",
                         "result (loss or model output) is cut off from the autograd graph")
OBJECT_NOT_CLASS = generic(
    "wrong_return_type",
    "You passed a model object (an instance of `{name}`), not the class: pass `{name}` itself, "
    "without parentheses; the check builds its own models.")
NOT_A_CLASS = generic("wrong_return_type", "`{name}` should be a class that inherits from "
                                           "`nn.Module`, but it is {got}.")
NOT_A_MODULE = generic(
    "wrong_return_type",
    "`{name}()` made {got}, which is not an `nn.Module`: let the class inherit from `nn.Module` "
    "and call `super().__init__()` first in `__init__`.")
NO_FORWARD = generic(
    "raised_exception",
    "`model(x)` cannot run: `{name}` has no method named `forward`{guess}. Calling a model runs "
    "its `forward` method, so the computation goes there.")
NO_PARAMETERS = ARCHITECTURE.saying(
    "Your `{name}` has no parameters at all, so there is nothing to train. Layers kept in a "
    "plain Python list, or created inside `forward`, are not registered with the model: create "
    "each layer in `__init__` and assign it to an attribute of `self` (an `nn.Sequential` "
    "counts).")
WRONG_PARAMETERS = ARCHITECTURE.saying(
    "Your `{name}` has {tensors} parameter tensors with shapes {shapes}: {count:,} numbers in "
    "all. {arrow} needs a weight matrix and a bias vector for each of its {layers} linear "
    "layers, {wanted_count:,} numbers. Check the input and output size of each `nn.Linear` and "
    "that no extra layer is left over.")
NO_OUTPUT = generic("wrong_return_type", "For {label} of shape {input_shape} your model returned "
                                         "{got}: `forward` must `return` the output tensor.")
WRONG_SHAPE = SHAPE.saying(
    "For a batch of {batch} {label} of shape {input_shape} your model returned shape {got}; the "
    "exercise asks for {want}, one row of {outputs} output{plural} per sample. Keep the batch as "
    "the first dimension (flatten each sample, not the whole batch) and do not squeeze the "
    "result.")
SOFTMAX = Misconception(
    "softmax_in_model", "softmax inside the model instead of raw logits",
    "Every row of your model's output is non-negative and sums to 1 (first row {row}, sum "
    "{total}): these are softmax probabilities. The model should return raw logits: "
    "`nn.CrossEntropyLoss` applies log-softmax itself, and squashing the outputs first makes "
    "learning slow. A `log_softmax` at the end is fine.")
NO_RELU = ARCHITECTURE.saying(
    "Your model's output equals its linear layers applied one after the other with nothing "
    "between them: the ReLU after each hidden layer is missing. Stacked linear layers without a "
    "nonlinearity collapse into a single linear function.")
RELU_AT_END = ARCHITECTURE.saying(
    "Your model applies a ReLU after its last layer too, so it can never output a negative "
    "number. The last layer's output is the result and must be free to take any sign; the ReLU "
    "belongs after the hidden layers only.")
WRONG_FORWARD = ARCHITECTURE.saying(
    "With your model's own layers, {arrow} with a ReLU after each hidden layer gives {want} for "
    "the first sample, but your model returned {got}. Check that the layers run in order, each "
    "exactly once, with a ReLU between them.")
NO_GRAPH = DETACHED.saying(
    "Your model's output is not connected to the autograd graph (`output.grad_fn` is None), so "
    "training could never change the weights. Look in `forward` for `torch.no_grad()`, "
    "`.detach()`, `.data`, `.item()` or a detour through numpy.")
NO_GRADIENT = DETACHED.saying(
    "After `backward()` these parameters have no gradient: {names}. They are not used in "
    "`forward`, are frozen (`requires_grad=False`), or their result is cut off from the graph, "
    "so training would never change them.")


def runs_on(label: str) -> Check:
    """The check that the model runs on ``label`` and returns one row per sample."""
    return Check(f"runs_on_{label.replace(' ', '_')}",
                 f"runs on {label} and returns one row of outputs per sample", lesson=True)


SIMPLE_NN = Exercise("SimpleNN", [*MODULE_CHECKS, runs_on("samples"), *MODEL_CHECKS],
                     [SHAPE, ARCHITECTURE, DETACHED])
MNIST_MLP = Exercise(
    "MNISTMLP",
    [*MODULE_CHECKS, runs_on("images"), runs_on("flattened images"),
     Check("no_softmax", "returns logits, not probabilities"), *MODEL_CHECKS],
    [SHAPE, ARCHITECTURE,
     SOFTMAX,
     DETACHED])


@SIMPLE_NN
def grade_simple_nn(judge: Judge, student: Any, *, data: str = "toy") -> None:
    """Grades `SimpleNN`: 10 inputs → 50 hidden units → ReLU → 1 output of shape (N, 1)."""
    gen = generator(judge.seed)
    samples = [torch.randn(n, 10, generator=gen) for n in (4, 1, 7)]
    _grade_model(judge, student, "SimpleNN", (10, 50, 1), {"samples": samples})


@MNIST_MLP
def grade_mnist_mlp(judge: Judge, student: Any, *, data: str = "toy") -> None:
    """Grades `MNISTMLP`: images (N, 1, 28, 28) or (N, 784) → 128 → 64 → 10 logits."""
    gen = generator(judge.seed)
    images = [torch.randn(n, 1, 28, 28, generator=gen) for n in (5, 1)]
    flat = [torch.randn(n, 784, generator=gen) for n in (5, 1)]
    _grade_model(judge, student, "MNISTMLP", (784, 128, 64, 10),
                 {"images": images, "flattened images": flat})


def _grade_model(judge: Judge, student: Any, name: str, sizes: Sizes,
                 layouts: dict[str, list[torch.Tensor]]) -> None:
    """Judges the class, parameters, output shapes, what forward computes, and gradient flow."""
    model = instantiate(judge, student, name)
    layers = _check_parameters(judge, model, name, sizes)
    runs: list[tuple[torch.Tensor, torch.Tensor]] = []
    for label, batches in layouts.items():
        ran, shapes_ok = check_output_shapes(judge, model, name, sizes[-1], label, batches)
        runs += ran
        if not shapes_ok:  # the same mistake would show again on the next layout
            break
    if not runs:
        return  # nothing ran: the checks of what it computes cannot run
    if sizes[-1] > 1:
        check_no_softmax(judge, runs[0][1])
    if layers is not None:
        _check_forward(judge, layers, sizes, runs)
    check_gradients_flow(judge, model, name, runs[0][0])


def instantiate(judge: Judge, student: Any, name: str) -> nn.Module:
    """Judges "module": builds the student's model, or stops grading.

    It is judged once the model is built, so the untouched stub (which raises while being
    built) fails it and scores 0.
    """
    if isinstance(student, nn.Module):
        judge.require("module", False, OBJECT_NOT_CLASS, name=name)
    if not isinstance(student, type):
        judge.require("module", False, NOT_A_CLASS, name=name, got=kind(student))
    model = judge.call(student)
    judge.require("module", isinstance(model, nn.Module), NOT_A_MODULE, name=name,
                  got=kind(model))
    own_methods = set(dir(type(model))) - set(dir(nn.Module))
    similar = difflib.get_close_matches("forward", sorted(own_methods), n=1)
    guess = f" (there is a method `{similar[0]}`: a typo?)" if similar else ""
    judge.require("module", type(model).forward is not nn.Module.forward, NO_FORWARD, name=name,
                  guess=guess)
    return model


def _check_parameters(judge: Judge, model: nn.Module, name: str,
                      sizes: Sizes) -> list[Layer] | None:
    """Compares parameter shapes with the layers asked for; returns those layers if they match."""
    params = list(model.parameters())
    pairs = list(zip(sizes, sizes[1:]))
    # A weight may be stored either way round ((out, in) as in nn.Linear, or (in, out)).
    found = sorted(tuple(sorted(p.shape)) for p in params)
    wanted = sorted([tuple(sorted(pair)) for pair in pairs] + [(n_out,) for _, n_out in pairs])
    if not params:
        ok = judge.check("parameters", found == wanted, NO_PARAMETERS, name=name)
    else:
        ok = judge.check("parameters", found == wanted, WRONG_PARAMETERS, name=name,
                         tensors=len(params), shapes=", ".join(shape(p) for p in params),
                         count=sum(p.numel() for p in params), arrow=" → ".join(map(str, sizes)),
                         layers=len(pairs),
                         wanted_count=sum(n_in * n_out + n_out for n_in, n_out in pairs))
    if not ok:
        return None
    layers = []
    for n_in, n_out in pairs:
        weight = next(p for p in params
                      if p.dim() == 2 and sorted(p.shape) == sorted((n_in, n_out)))
        bias = next(p for p in params if tuple(p.shape) == (n_out,))
        layers.append((weight.T if tuple(weight.shape) == (n_out, n_in) else weight, bias))
    return layers


def check_output_shapes(judge: Judge, model: nn.Module, name: str, outputs: int, label: str,
                         batches: list[torch.Tensor]
                         ) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], bool]:
    """Runs ``model(x)`` on each batch; judges "runs_on_<label>": every output is (N, outputs).

    Returns:
        The ``(input, output)`` pairs up to the first failure, and False if a shape was wrong.
    """
    check = runs_on(label).name
    runs = []
    for x in batches:
        # A copy, so a forward that changes its input in place cannot change the evidence.
        ok, out = judge.attempt(check, model, x.clone(),
                                doing=f"running `{name}` on {label} of shape {shape(x)}")
        if not ok:
            return runs, True
        judge.require(check, isinstance(out, torch.Tensor), NO_OUTPUT, label=label,
                      input_shape=shape(x), got=kind(out))
        wanted = (x.shape[0], outputs)
        if tuple(out.shape) != wanted:
            judge.fail(check, WRONG_SHAPE, batch=x.shape[0], label=label, input_shape=shape(x),
                       got=shape(out), want=str(wanted), outputs=outputs,
                       plural="s" if outputs > 1 else "")
            return runs, False
        runs.append((x, out))
    judge.check(check, True)
    return runs, True


def check_no_softmax(judge: Judge, out: torch.Tensor) -> None:
    row_sums = out.detach().sum(dim=1)
    probabilities = bool((out >= 0).all()) and close(row_sums, torch.ones_like(row_sums))
    judge.check("no_softmax", not probabilities, SOFTMAX, row=first_values(out[0]),
                total=number(row_sums[0]))


def _forward(layers: list[Layer], x: torch.Tensor, hidden: Callable[[torch.Tensor], torch.Tensor],
             last: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Applies the model's own layers, ``hidden`` after each but the last, ``last`` at the end."""
    h = x.flatten(1)
    for i, (weight, bias) in enumerate(layers):
        h = h @ weight + bias
        h = hidden(h) if i < len(layers) - 1 else last(h)
    return h


def _check_forward(judge: Judge, layers: list[Layer], sizes: Sizes,
                   runs: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    """Checks that forward is Linear → ReLU → ... → Linear, using the model's own layers."""
    def same(variant: Callable[[torch.Tensor], torch.Tensor]) -> bool:
        with torch.no_grad():
            return all(close(out, variant(x)) for x, out in runs)

    def keep(h: torch.Tensor) -> torch.Tensor:
        return h

    def reference(x: torch.Tensor) -> torch.Tensor:
        return _forward(layers, x, torch.relu, keep)

    accepted = [reference]
    if sizes[-1] > 1:  # log-softmax keeps logits' meaning; softmax was judged on its own.
        accepted += [lambda x: torch.log_softmax(reference(x), dim=1),
                     lambda x: torch.softmax(reference(x), dim=1)]
    if any(same(variant) for variant in accepted):
        judge.check("forward", True)
        return
    if same(lambda x: _forward(layers, x, keep, keep)):
        judge.fail("forward", NO_RELU)
    elif same(lambda x: _forward(layers, x, torch.relu, torch.relu)):
        judge.fail("forward", RELU_AT_END)
    else:
        x, out = runs[0]
        with torch.no_grad():
            expected = reference(x)
        judge.fail("forward", WRONG_FORWARD, arrow=" → ".join(map(str, sizes)),
                   want=first_values(expected[0]), got=first_values(out[0]))


def check_gradients_flow(judge: Judge, model: nn.Module, name: str, x: torch.Tensor) -> None:
    with torch.enable_grad():
        ok, out = judge.attempt("gradients_flow", model, x.clone(),
                                doing=f"running `{name}` on a batch of shape {shape(x)}")
        if not ok:
            return
        if out.grad_fn is None:
            judge.fail("gradients_flow", NO_GRAPH)
            return
        model.zero_grad(set_to_none=True)
        ok, _ = judge.attempt("gradients_flow", out.sum().backward,
                              doing="computing gradients of your model's output with "
                                    "`backward()`")
    if ok:
        missing = [param for param, value in model.named_parameters() if value.grad is None]
        judge.check("gradients_flow", not missing, NO_GRADIENT,
                    names=", ".join(f"`{m}`" for m in missing))
