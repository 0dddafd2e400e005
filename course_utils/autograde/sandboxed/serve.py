"""The student's kernel serves the referee: it calls the notebook's functions on the referee's
inputs and sends back what came out, as data (``wire``), and decides nothing.

nbgrader's process (``course_utils.autograde.referee``) asks after a test cell, through the
kernel's own protocol (a ``user_expressions`` entry), for one of these scenarios:

- ``call``: a function called on tensors, with the gradients of its result reaching them;
- ``sgd_step``: parameters with their gradients handed to an update;
- ``loop``: a model, its optimizer, a loss, loaders... (``Setting``), handed to the function
  in one or more calls, with the state the model is left in after each;
- ``checkpoint``: a trained model saved, loaded into a fresh one, both trained on;
- ``module``: the student's class made and called on inputs;
- ``dataset``: the student's dataset made over tensors and read;
- ``each``: several of these for the same function.

Code in this kernel may replace any of this; all it can change is the outcome, which the
referee compares with its own, so to pass it has to compute the right values.

Example:
    >>> import torch
    >>> from course_utils.autograde.sandboxed.wire import decode, encode
    >>> def double(x):
    ...     return 2 * x
    >>> request = {"scenario": "call", "names": ["double"],
    ...            "calls": [{"args": [torch.ones(2)], "grad": [0]}]}
    >>> [call] = decode(run(encode(request), {"double": double}))["outcome"]
    >>> call["returned"]["tensor"], call["grads"][0]
    (tensor([2., 2.]), tensor([2., 2.]))
"""

from __future__ import annotations

import os
import tempfile
from typing import Any, Callable

import torch
from torch import nn

from course_utils.autograde.sandboxed.wire import decode, encode
from course_utils.data import TensorLoader
from course_utils.graders.sandbox import (NotImplementedYet, StudentError, StudentTimeout,
                                          call_student, preserved_global_state)

# Seconds each call into the notebook's code may take.
CALL_TIMEOUT = 20.0
LAYERS: dict[str, Callable[..., nn.Module]] = {
    "linear": nn.Linear, "relu": nn.ReLU, "tanh": nn.Tanh, "batchnorm": nn.BatchNorm1d,
    "dropout": nn.Dropout}
LOSSES: dict[str, Callable[[], nn.Module]] = {"mse": nn.MSELoss, "cross_entropy": nn.CrossEntropyLoss}


def build_model(spec: dict[str, Any]) -> nn.Module:
    """The model a request describes: its layers, their state and its mode.

    Example:
        >>> model = build_model({"layers": [["linear", 2, 1]], "train": False})
        >>> model.training, model[0].weight.shape
        (False, torch.Size([1, 2]))
    """
    model = nn.Sequential(*(LAYERS[name](*arguments) for name, *arguments in spec["layers"]))
    if "state" in spec:
        model.load_state_dict(spec["state"])
    return model.train(bool(spec.get("train", True)))


def state_of(model: nn.Module, optimizer: torch.optim.Optimizer | None = None
             ) -> dict[str, torch.Tensor]:
    """A copy of the model's parameters and buffers, and the learning rate of each of the
    optimizer's parameter groups (``"$lrs"``)."""
    state = {name: value.detach().clone() for name, value in model.state_dict().items()}
    if optimizer is not None:
        state["$lrs"] = torch.tensor([group["lr"] for group in optimizer.param_groups],
                                     dtype=torch.float64)
    return state


def returned(value: Any) -> Any:
    """What a call returned, as the wire carries it: tensors and numbers as they are, a tuple,
    list or dict item by item, anything else as the name of its type."""
    if isinstance(value, torch.Tensor):
        return {"tensor": value.detach().clone(), "graph": value.requires_grad}
    if isinstance(value, bool) or value is None:
        return {"type": type(value).__name__}
    if isinstance(value, (int, float)):
        return {"number": float(value), "type": type(value).__name__}
    if isinstance(value, (tuple, list)):
        return {"items": [returned(item) for item in value], "type": type(value).__name__}
    if isinstance(value, dict):
        return {"keys": {str(key): returned(item) for key, item in value.items()},
                "type": type(value).__name__}
    try:  # numpy scalars and the like
        return {"number": float(value), "type": type(value).__name__}
    except (TypeError, ValueError):
        return {"type": type(value).__name__}


def _student(fn: Any, *args: Any) -> tuple[Any, dict[str, Any]]:
    """What the call returned, and the outcome as data."""
    try:
        value = call_student(fn, *args, timeout=CALL_TIMEOUT)
    except NotImplementedYet:
        return None, {"error": "not_implemented"}
    except StudentTimeout:
        return None, {"error": "timeout"}
    except StudentError as error:
        return None, {"error": "raised_exception", "exception": type(error.error).__name__}
    return value, {"returned": returned(value)}


def _call(fn: Any, request: dict[str, Any]) -> list[dict[str, Any]]:
    outcomes = []
    for call in request["calls"]:
        args = [arg.clone().requires_grad_(i in call.get("grad", []))
                if isinstance(arg, torch.Tensor) else arg for i, arg in enumerate(call["args"])]
        with torch.set_grad_enabled(not call.get("no_grad", False)):
            value, outcome = _student(fn, *args)
        if isinstance(value, torch.Tensor) and value.requires_grad and call.get("grad"):
            inputs = [args[i] for i in call["grad"]]
            weights = call.get("cotangent", torch.ones_like(value))
            try:  # no gradients reported reads as a result cut off from its inputs
                outcome["grads"] = list(torch.autograd.grad((value * weights).sum(), inputs,
                                                            allow_unused=True))
            except RuntimeError:
                pass
        outcomes.append(outcome)
    return outcomes


def _sgd_step(fn: Any, request: dict[str, Any]) -> dict[str, Any]:
    params = [torch.nn.Parameter(item["value"].clone()) for item in request["params"]]
    for param, item in zip(params, request["params"]):
        param.grad = None if item["grad"] is None else item["grad"].clone()
    _, outcome = _student(fn, params, request["lr"])
    outcome["values"] = [param.detach().clone() for param in params]
    outcome["grads"] = [param.grad for param in params]
    return outcome


class Setting:
    """The objects a loop request names, made from its data: ``$model``, ``$optimizer`` (SGD),
    ``$loss``, ``$loader``, ``$val_loader``, ``$scaler``, ``$scheduler`` (StepLR per epoch) and
    ``$make_optimizer`` (SGD with momentum, for a learning rate)."""

    def __init__(self, request: dict[str, Any]):
        self.request = request
        self.model = build_model(request["model"])
        self.optimizer = torch.optim.SGD(self.model.parameters(), **request.get("sgd", {"lr": 0.1}))
        self.objects: dict[str, Any] = {"$model": self.model, "$optimizer": self.optimizer}

    def object(self, name: str) -> Any:
        if name not in self.objects:
            self.objects[name] = self._make(name)
        return self.objects[name]

    def _make(self, name: str) -> Any:
        request = self.request
        if name == "$loss":
            return LOSSES[request["loss"]]()
        if name in ("$loader", "$val_loader"):
            inputs, targets = request["data" if name == "$loader" else "val_data"]
            return TensorLoader((inputs, targets), request["batch_size"])
        if name == "$scaler":
            return torch.amp.GradScaler("cpu", init_scale=request.get("init_scale", 2.0 ** 16))
        if name == "$scheduler":
            return torch.optim.lr_scheduler.StepLR(self.optimizer, step_size=1,
                                                   gamma=request["gamma"])
        if name == "$make_optimizer":
            return lambda params, lr: torch.optim.SGD(params, lr=lr, momentum=0.9)
        raise KeyError(name)

    def state(self) -> dict[str, torch.Tensor]:
        """The model's state, the optimizer's learning rates and the scaler's scale, if any."""
        state = state_of(self.model, self.optimizer)
        if "$scaler" in self.objects:
            state["$scale"] = torch.tensor([float(self.objects["$scaler"].get_scale())],
                                           dtype=torch.float64)
        return state

    def arguments(self, template: list[Any]) -> list[Any]:
        """The call's arguments: names of objects replaced by the objects, data as it came."""
        return [self.object(arg) if isinstance(arg, str) and arg.startswith("$") else arg
                for arg in template]


def _loop(fn: Any, request: dict[str, Any]) -> list[dict[str, Any]]:
    """The notebook's function called once per entry of ``calls`` on one setting, the model's
    state and mode recorded after each call."""
    setting = Setting(request)
    outcomes = []
    for template in request["calls"]:
        _, outcome = _student(fn, *setting.arguments(template))
        outcome["state"] = setting.state()
        outcomes.append(outcome)
        if "error" in outcome:
            break
    return outcomes


def train_once(setting: Setting, inputs: torch.Tensor, targets: torch.Tensor) -> None:
    """One plain training step of the setting's model (the referee's, not the student's)."""
    setting.optimizer.zero_grad()
    setting.object("$loss")(setting.model(inputs), targets).backward()
    setting.optimizer.step()


def _checkpoint(functions: tuple[Any, Any], request: dict[str, Any]) -> dict[str, Any]:
    """A model trained one step is saved, and a fresh one to another file; the fresh one loads
    the first file, then trains one more step."""
    save, load = functions
    (x1, y1), (x2, y2) = request["batches"]
    trained, fresh = Setting(request), Setting({**request, "model": request["fresh_model"]})
    train_once(trained, x1, y1)
    folder = tempfile.mkdtemp(prefix="referee-")
    path = os.path.join(folder, "trained.pt")
    _, saved = _student(save, path, trained.model, trained.optimizer, request["epoch"])
    if "error" not in saved:
        _, saved = _student(save, os.path.join(folder, "fresh.pt"), fresh.model,
                            fresh.optimizer, 0)
    if "error" in saved:
        return {"saved": saved}
    _, loaded = _student(load, path, fresh.model, fresh.optimizer)
    outcome = {"saved": saved, "loaded": loaded, "state_loaded": fresh.state()}
    if "error" not in loaded:
        train_once(fresh, x2, y2)
        outcome["state_resumed"] = fresh.state()
    return outcome


def _module(cls: Any, request: dict[str, Any]) -> dict[str, Any]:
    """The student's class made, its parameters, and its output and the gradients reaching its
    parameters for each input."""
    model, outcome = _student(cls)
    if "error" in outcome or not isinstance(model, nn.Module):
        return {"error": outcome.get("error", "not_a_module")}
    params = list(model.parameters())
    outcome = {"parameters": [param.detach().clone() for param in params], "outputs": []}
    for inputs, cotangent in request["inputs"]:
        output, called = _student(model, inputs)
        if isinstance(output, torch.Tensor) and output.shape == cotangent.shape \
                and output.requires_grad and params:
            grads = torch.autograd.grad((output * cotangent).sum(), params, allow_unused=True)
            called["grads"] = list(grads)
        outcome["outputs"].append(called)
    return outcome


class Shifting:
    """A transform that adds how many times it has been called: each access shows in the data."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return image + self.calls


def _dataset(cls: Any, request: dict[str, Any]) -> dict[str, Any]:
    """The student's dataset made over the request's data, with and without a transform, and
    its length and the items the request reads, in order."""
    images, labels = request["data"]
    outcome: dict[str, Any] = {}
    for name, transform in (("plain", None), ("shifting", Shifting())):
        dataset, made = _student(cls, images, labels, transform)
        if "error" in made:
            return {"error": made["error"]}
        _, length = _student(len, dataset)
        outcome[name] = {"length": length.get("returned"),
                         "items": [_student(lambda i: dataset[i], index)[1]
                                   for index in request["reads"]]}
    return outcome


def _each(fn: Any, request: dict[str, Any]) -> list[Any]:
    """Several requests for the same function, each on a setting of its own."""
    return [SCENARIOS[part["scenario"]](fn, part) for part in request["requests"]]


SCENARIOS: dict[str, Callable[[Any, dict[str, Any]], Any]] = {
    "call": _call, "sgd_step": _sgd_step, "loop": _loop, "each": _each,
    "checkpoint": _checkpoint, "module": _module, "dataset": _dataset}


def run(request: str, namespace: dict[str, Any]) -> str:
    """Answers one encoded request with the notebook's functions it names, from ``namespace``
    (one function, or a tuple of them where the request names several)."""
    try:
        asked = decode(request)
        missing = [name for name in asked["names"] if namespace.get(name) is None]
        if missing:
            return encode({"missing": missing[0]})
        found = [namespace[name] for name in asked["names"]]
        fn = found[0] if len(found) == 1 else tuple(found)
        with preserved_global_state():
            torch.manual_seed(int(asked.get("seed", 0)))
            torch.set_num_threads(1)  # models this small only wait for a second thread
            outcome = SCENARIOS[asked["scenario"]](fn, asked)
        return encode({"outcome": outcome})
    except Exception as exc:  # the referee reads a failure to serve as no outcome
        return encode({"failed": f"{type(exc).__name__}: {exc}"})


class Answer:
    """Shown as JSON (``application/json``), the form the kernel protocol carries to the referee."""

    def __init__(self, text: str):
        self.text = text

    def _repr_json_(self) -> dict[str, str]:
        return {"answer": self.text}


def serve(request: str) -> Answer:
    """``run`` in the notebook's namespace, as nbgrader's process calls it after a test cell."""
    import __main__

    from IPython import get_ipython
    shell = get_ipython()
    namespace = shell.user_ns if shell is not None else vars(__main__)
    return Answer(run(request, namespace))
