"""The student's kernel serves the referee: it calls the notebook's functions on the referee's
inputs and sends back what came out, as data (``wire``), and decides nothing.

nbgrader's process (``course_utils.autograde.referee``) asks after a test cell, through the
kernel's own protocol (a ``user_expressions`` entry), for one of these scenarios:

- ``call``: a function called on tensors, with the gradients of its result reaching them;
- ``sgd_step``: parameters with their gradients handed to an update;
- ``loop``: a model, its optimizer, a loss, loaders... (``Setting``), handed to the function
  in one or more calls, with the state the model is left in after each;
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
        outcome["state"] = state_of(setting.model, setting.optimizer)
        outcomes.append(outcome)
        if "error" in outcome:
            break
    return outcomes


def _each(fn: Any, request: dict[str, Any]) -> list[Any]:
    """Several requests for the same function, each on a setting of its own."""
    return [SCENARIOS[part["scenario"]](fn, part) for part in request["requests"]]


SCENARIOS: dict[str, Callable[[Any, dict[str, Any]], Any]] = {
    "call": _call, "sgd_step": _sgd_step, "loop": _loop, "each": _each}


def run(request: str, namespace: dict[str, Any]) -> str:
    """Answers one encoded request with the notebook's function found in ``namespace``."""
    try:
        asked = decode(request)
        fn = namespace.get(asked["names"][0])
        if fn is None:
            return encode({"missing": asked["names"][0]})
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
