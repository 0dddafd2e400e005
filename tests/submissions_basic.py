"""Real submissions for lessons 01-04, correct and buggy, with the grade each one must get.

The correct ones double as reference solutions for ``benchmarks/bench_graders.py``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class Submission:
    """A submission and what grading it must give: no codes means it is correct."""

    exercise: str
    name: str
    student: Any
    codes: frozenset[str] = frozenset()
    score: float = 1.0
    evidence: tuple[str, ...] = ()  # phrases the feedback must contain
    timeout: float | None = None

    @property
    def correct(self) -> bool:
        return not self.codes


def correct(name: str, student: Any, exercise: str) -> Submission:
    return Submission(exercise, name, student)


def buggy(name: str, student: Any, exercise: str, codes: set[str], score: float,
          *evidence: str, timeout: float | None = None) -> Submission:
    return Submission(exercise, name, student, frozenset(codes), score, evidence, timeout)


# ============================================================================ SimpleNN

class SimpleNNSequential(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(10, 50), nn.ReLU(), nn.Linear(50, 1))

    def forward(self, x):
        return self.net(x)


class SimpleNNLayers(nn.Module):
    def __init__(self):
        super().__init__()
        self.hidden = nn.Linear(10, 50)
        self.out = nn.Linear(50, 1)

    def forward(self, x):
        return self.out(F.relu(self.hidden(x)))


class SimpleNNParameters(nn.Module):
    """Weights stored the other way round, applied as ``x @ w``."""

    def __init__(self):
        super().__init__()
        self.w1 = nn.Parameter(0.3 * torch.randn(10, 50))
        self.b1 = nn.Parameter(torch.zeros(50))
        self.w2 = nn.Parameter(0.1 * torch.randn(50, 1))
        self.b2 = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return torch.clamp(x @ self.w1 + self.b1, min=0) @ self.w2 + self.b2


class SimpleNNStub(nn.Module):
    def __init__(self):
        super().__init__()
        # YOUR CODE HERE
        raise NotImplementedError()

    def forward(self, x):
        # YOUR CODE HERE
        raise NotImplementedError()


class SimpleNNForwardStub(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(10, 50), nn.Linear(50, 1)

    def forward(self, x):
        # YOUR CODE HERE
        raise NotImplementedError()


class SimpleNNNoReLU(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(10, 50), nn.Linear(50, 1))

    def forward(self, x):
        return self.net(x)


class SimpleNNReLUAtEnd(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(10, 50), nn.ReLU(), nn.Linear(50, 1), nn.ReLU())

    def forward(self, x):
        return self.net(x)


class SimpleNNSqueezed(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(10, 50), nn.ReLU(), nn.Linear(50, 1))

    def forward(self, x):
        return self.net(x).squeeze()


class SimpleNNHidden64(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(10, 64), nn.ReLU(), nn.Linear(64, 1))

    def forward(self, x):
        return self.net(x)


class SimpleNNPythonList(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = [nn.Linear(10, 50), nn.ReLU(), nn.Linear(50, 1)]

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


class SimpleNNNotAModule:
    def __init__(self):
        self.fc1, self.fc2 = nn.Linear(10, 50), nn.Linear(50, 1)

    def __call__(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


class SimpleNNForwardTypo(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(10, 50), nn.Linear(50, 1)

    def foward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


class SimpleNNNoReturn(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(10, 50), nn.Linear(50, 1)

    def forward(self, x):
        x = self.fc2(torch.relu(self.fc1(x)))


class SimpleNNNoGrad(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(10, 50), nn.ReLU(), nn.Linear(50, 1))

    def forward(self, x):
        with torch.no_grad():
            return self.net(x)


class SimpleNNDetachedHidden(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(10, 50), nn.Linear(50, 1)

    def forward(self, x):
        hidden = torch.relu(self.fc1(x)).detach()
        return self.fc2(hidden)


class SimpleNNUnusedLayer(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(10, 50), nn.Linear(50, 1)
        self.extra = nn.Linear(1, 1)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


class SimpleNNFixedBatch(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(10, 50), nn.ReLU(), nn.Linear(50, 1))

    def forward(self, x):
        return self.net(x.reshape(4, 10))


class SimpleNNEndless(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(10, 50), nn.ReLU(), nn.Linear(50, 1))

    def forward(self, x):
        out = self.net(x)
        while out.shape[-1] != 2:
            out = out + 0
        return out


# ============================================================================ MNISTMLP

class MNISTMLPSequential(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(),
                                 nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10))

    def forward(self, x):
        return self.net(x)


class MNISTMLPLayers(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(784, 128), nn.Linear(128, 64), nn.Linear(64, 10)

    def forward(self, x):
        x = x.view(x.size(0), -1)
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


class MNISTMLPLogSoftmax(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(784, 128), nn.Linear(128, 64), nn.Linear(64, 10)])

    def forward(self, x):
        x = x.reshape(-1, 28 * 28)
        for layer in self.layers[:-1]:
            x = torch.relu(layer(x))
        return F.log_softmax(self.layers[-1](x), dim=1)


class MNISTMLPStub(nn.Module):
    def __init__(self):
        super().__init__()
        # YOUR CODE HERE
        raise NotImplementedError()


class MNISTMLPSoftmax(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(),
                                 nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10),
                                 nn.Softmax(dim=1))

    def forward(self, x):
        return self.net(x)


class MNISTMLPNoFlatten(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(),
                                 nn.Linear(64, 10))

    def forward(self, x):
        return self.net(x)


class MNISTMLPImagesOnly(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(),
                                 nn.Linear(64, 10))

    def forward(self, x):
        return self.net(x.reshape(x.shape[0], x.shape[2] * x.shape[3]))


class MNISTMLPSqueezesOutput(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(),
                                 nn.Linear(64, 10))

    def forward(self, x):
        return self.net(x.view(x.size(0), -1)).squeeze()


class MNISTMLPNoReLU(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.Linear(128, 64),
                                 nn.Linear(64, 10))

    def forward(self, x):
        return self.net(x)


class MNISTMLPSigmoid(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.Sigmoid(),
                                 nn.Linear(128, 64), nn.Sigmoid(), nn.Linear(64, 10))

    def forward(self, x):
        return self.net(x)


class MNISTMLPOneHidden(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10))

    def forward(self, x):
        return self.net(x)


class MNISTMLPPredictsClasses(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(),
                                 nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10))

    def forward(self, x):
        return self.net(x).argmax(dim=1)


# ============================================================================ mse_loss

def mse_by_hand(pred, target):
    return ((pred - target) ** 2).mean()


def mse_functional(pred, target):
    return F.mse_loss(pred, target)


def mse_module(pred, target):
    return nn.MSELoss()(pred, target)


def mse_sum_over_count(pred, target):
    diff = pred - target
    return (diff * diff).sum() / diff.numel()


def mse_stub(pred, target):
    # YOUR CODE HERE
    raise NotImplementedError()


def mse_sum(pred, target):
    return ((pred - target) ** 2).sum()


def mse_no_reduction(pred, target):
    return (pred - target) ** 2


def mse_mean_over_batch_dim(pred, target):
    return ((pred - target) ** 2).mean(dim=0)


def mse_item(pred, target):
    return ((pred - target) ** 2).mean().item()


def mse_no_return(pred, target):
    loss = ((pred - target) ** 2).mean()


def mse_numpy(pred, target):
    return np.mean((pred.detach().numpy() - target.numpy()) ** 2)


def mse_rewrapped(pred, target):
    return torch.tensor(((pred - target) ** 2).mean().item(), requires_grad=True)


def mse_absolute(pred, target):
    return (pred - target).abs().mean()


def mse_square_of_mean(pred, target):
    return (pred - target).mean() ** 2


def mse_nan(pred, target):
    return torch.tensor(float("nan")) * pred.sum()


def mse_bad_argument(pred, target):
    return F.mse_loss(pred, target, reduction="average")


def mse_endless(pred, target):
    loss = ((pred - target) ** 2).mean()
    while loss > -1:
        loss = loss * 1.0
    return loss


# ============================================================================ cross_entropy

def ce_functional(logits, targets):
    return F.cross_entropy(logits, targets)


def ce_logsumexp(logits, targets):
    picked = logits[torch.arange(len(targets)), targets]
    return (torch.logsumexp(logits, dim=1) - picked).mean()


def ce_max_shift(logits, targets):
    shifted = logits - logits.max(dim=1, keepdim=True).values
    log_probs = shifted - shifted.exp().sum(dim=1, keepdim=True).log()
    return -log_probs.gather(1, targets.unsqueeze(1)).mean()


def ce_nll_of_log_softmax(logits, targets):
    return F.nll_loss(F.log_softmax(logits, dim=1), targets)


def ce_stub(logits, targets):
    # YOUR CODE HERE
    raise NotImplementedError()


def ce_softmax_first(logits, targets):
    return F.cross_entropy(torch.softmax(logits, dim=1), targets)


def ce_log_of_softmax(logits, targets):
    probs = torch.softmax(logits, dim=1)
    return -torch.log(probs[torch.arange(len(targets)), targets]).mean()


def ce_naive_exp(logits, targets):
    exp = logits.exp()
    probs = exp / exp.sum(dim=1, keepdim=True)
    return -probs[torch.arange(len(targets)), targets].log().mean()


def ce_sum(logits, targets):
    return F.cross_entropy(logits, targets, reduction="sum")


def ce_no_reduction(logits, targets):
    return F.cross_entropy(logits, targets, reduction="none")


def ce_nll_of_logits(logits, targets):
    return F.nll_loss(logits, targets)


def ce_detached_normaliser(logits, targets):
    log_probs = logits - torch.logsumexp(logits, dim=1, keepdim=True).detach()
    return -log_probs[torch.arange(len(targets)), targets].mean()


def ce_float_targets(logits, targets):
    return F.cross_entropy(logits, targets.float())


def ce_item(logits, targets):
    return F.cross_entropy(logits, targets).item()


# ============================================================================ linear_mse_grads

def grads_by_matrix_product(w, b, x, y):
    residual = x @ w + b - y
    return 2 * x.T @ residual / len(y), 2 * residual.mean()


def grads_by_broadcasting(w, b, x, y):
    residual = (x * w).sum(dim=1) + b - y
    return (2 * residual[:, None] * x).mean(dim=0), 2 * residual.sum() / x.shape[0]


def grads_expanded(w, b, x, y):
    n = x.shape[0]
    dw = 2 / n * (x.T @ x @ w + b * x.sum(dim=0) - x.T @ y)
    db = 2 / n * (x.sum(dim=0) @ w + n * b - y.sum())
    return dw, db


def grads_stub(w, b, x, y):
    # YOUR CODE HERE
    raise NotImplementedError()


def grads_no_factor_two(w, b, x, y):
    residual = x @ w + b - y
    return x.T @ residual / len(y), residual.mean()


def grads_sum_not_mean(w, b, x, y):
    residual = x @ w + b - y
    return 2 * x.T @ residual, 2 * residual.sum()


def grads_wrong_sign(w, b, x, y):
    residual = y - (x @ w + b)
    return 2 * x.T @ residual / len(y), 2 * residual.mean()


def grads_db_not_summed(w, b, x, y):
    residual = x @ w + b - y
    return 2 * x.T @ residual / len(y), 2 * residual / len(y)


def grads_dw_column(w, b, x, y):
    residual = x @ w + b - y
    return 2 * x.T @ residual[:, None] / len(y), 2 * residual.mean()


def grads_forgot_bias(w, b, x, y):
    residual = x @ w - y
    return 2 * x.T @ residual / len(y), 2 * residual.mean()


def grads_by_autograd(w, b, x, y):
    w.requires_grad_()
    b.requires_grad_()
    loss = ((x @ w + b - y) ** 2).mean()
    loss.backward()
    return w.grad, b.grad


def grads_only_dw(w, b, x, y):
    return 2 * x.T @ (x @ w + b - y) / len(y)


def grads_numpy(w, b, x, y):
    x, y, w = x.numpy(), y.numpy(), w.numpy()
    residual = x @ w + b.item() - y
    return 2 * x.T @ residual / len(y), 2 * residual.mean()


def grads_nan(w, b, x, y):
    return torch.full_like(w, math.nan), torch.full_like(b, math.inf)


# ============================================================================ sgd_step

def sgd_no_grad(params, lr):
    with torch.no_grad():
        for p in params:
            if p.grad is not None:
                p -= lr * p.grad


def sgd_data(params, lr):
    for p in params:
        if p.grad is None:
            continue
        p.data = p.data - lr * p.grad


def sgd_add_alpha(params, lr):
    with torch.no_grad():
        for p in params:
            if p.grad is not None:
                p.add_(p.grad, alpha=-lr)


def sgd_torch_optimizer(params, lr):
    torch.optim.SGD(params, lr=lr).step()


def sgd_stub(params, lr):
    # YOUR CODE HERE
    raise NotImplementedError()


def sgd_rebinds_name(params, lr):
    with torch.no_grad():
        for p in params:
            if p.grad is not None:
                p = p - lr * p.grad


def sgd_replaces_list_items(params, lr):
    with torch.no_grad():
        for i, p in enumerate(params):
            if p.grad is not None:
                params[i] = p - lr * p.grad


def sgd_ascent(params, lr):
    with torch.no_grad():
        for p in params:
            if p.grad is not None:
                p += lr * p.grad


def sgd_tracked(params, lr):
    for p in params:
        if p.grad is not None:
            p -= lr * p.grad


def sgd_no_none_check(params, lr):
    with torch.no_grad():
        for p in params:
            p -= lr * p.grad


def sgd_zeroes_gradients(params, lr):
    with torch.no_grad():
        for p in params:
            if p.grad is not None:
                p -= lr * p.grad
                p.grad.zero_()


def sgd_scales_gradients(params, lr):
    with torch.no_grad():
        for p in params:
            if p.grad is not None:
                p.grad.mul_(lr)
                p.sub_(p.grad)


def sgd_fills_missing_gradients(params, lr):
    with torch.no_grad():
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            p -= lr * p.grad


def sgd_returns_at_none(params, lr):
    with torch.no_grad():
        for p in params:
            if p.grad is None:
                return
            p -= lr * p.grad


def sgd_ignores_lr(params, lr):
    with torch.no_grad():
        for p in params:
            if p.grad is not None:
                p -= p.grad


def sgd_nan(params, lr):
    with torch.no_grad():
        for p in params:
            if p.grad is not None:
                p.copy_(p.grad / 0 * 0)


def sgd_wrong_attribute(params, lr):
    with torch.no_grad():
        params -= lr * params.grad


def sgd_endless(params, lr):
    step = 0
    while step < len(params):
        p = params[step]
        if p.grad is not None:
            with torch.no_grad():
                p -= lr * p.grad
            step += 1


SUBMISSIONS: list[Submission] = [
    # ---- SimpleNN
    correct("sequential", SimpleNNSequential, "SimpleNN"),
    correct("named_layers", SimpleNNLayers, "SimpleNN"),
    correct("raw_parameters", SimpleNNParameters, "SimpleNN"),
    buggy("stub", SimpleNNStub, "SimpleNN", {"not_implemented"}, 0.0, "not done yet"),
    buggy("forward_stub", SimpleNNForwardStub, "SimpleNN", {"not_implemented"}, 0.67,
          "not done yet"),
    buggy("no_relu", SimpleNNNoReLU, "SimpleNN", {"wrong_architecture"}, 0.8,
          "ReLU after each hidden layer is missing"),
    buggy("relu_at_end", SimpleNNReLUAtEnd, "SimpleNN", {"wrong_architecture"}, 0.8,
          "ReLU after its last layer"),
    buggy("squeezed", SimpleNNSqueezed, "SimpleNN", {"wrong_output_shape"}, 0.67,
          "returned shape (4,)", "(4, 1)"),
    buggy("hidden_64", SimpleNNHidden64, "SimpleNN", {"wrong_architecture"}, 0.75,
          "(64, 10)", "769 numbers", "601 numbers"),
    buggy("python_list", SimpleNNPythonList, "SimpleNN", {"wrong_architecture"}, 0.75,
          "no parameters at all"),
    buggy("not_a_module", SimpleNNNotAModule, "SimpleNN", {"wrong_return_type"}, 0.0,
          "not an `nn.Module`"),
    buggy("instance", SimpleNNSequential(), "SimpleNN", {"wrong_return_type"}, 0.0,
          "not the class"),
    buggy("forward_typo", SimpleNNForwardTypo, "SimpleNN", {"raised_exception"}, 0.5,
          "no method named `forward`", "`foward`"),
    buggy("no_return", SimpleNNNoReturn, "SimpleNN", {"wrong_return_type"}, 0.67, "`None`"),
    buggy("no_grad_forward", SimpleNNNoGrad, "SimpleNN", {"detached_result"}, 0.8,
          "`output.grad_fn` is None"),
    buggy("detached_hidden", SimpleNNDetachedHidden, "SimpleNN", {"detached_result"}, 0.8,
          "`fc1.weight`", "`fc1.bias`"),
    buggy("unused_layer", SimpleNNUnusedLayer, "SimpleNN",
          {"wrong_architecture", "detached_result"}, 0.5, "603 numbers", "`extra.weight`"),
    buggy("fixed_batch", SimpleNNFixedBatch, "SimpleNN", {"raised_exception"}, 0.8,
          "samples of shape (1, 10)", "in forward", "x.reshape(4, 10)"),
    buggy("endless", SimpleNNEndless, "SimpleNN", {"timeout"}, 0.67, "0.5 seconds",
          timeout=0.5),
    # ---- MNISTMLP
    correct("sequential", MNISTMLPSequential, "MNISTMLP"),
    correct("view", MNISTMLPLayers, "MNISTMLP"),
    correct("log_softmax", MNISTMLPLogSoftmax, "MNISTMLP"),
    buggy("stub", MNISTMLPStub, "MNISTMLP", {"not_implemented"}, 0.0, "not done yet"),
    buggy("softmax", MNISTMLPSoftmax, "MNISTMLP", {"softmax_in_model"}, 0.86, "sums to 1"),
    buggy("no_flatten", MNISTMLPNoFlatten, "MNISTMLP", {"raised_exception"}, 0.86,
          "images of shape (5, 1, 28, 28)"),
    buggy("images_only", MNISTMLPImagesOnly, "MNISTMLP", {"raised_exception"}, 0.86,
          "flattened images of shape (5, 784)", "IndexError"),
    buggy("squeezes_output", MNISTMLPSqueezesOutput, "MNISTMLP", {"wrong_output_shape"}, 0.83,
          "batch of 1 images of shape (1, 1, 28, 28)", "returned shape (10,)", "(1, 10)"),
    buggy("no_relu", MNISTMLPNoReLU, "MNISTMLP", {"wrong_architecture"}, 0.86,
          "nothing between them"),
    buggy("sigmoid", MNISTMLPSigmoid, "MNISTMLP", {"wrong_architecture"}, 0.86,
          "for the first sample"),
    buggy("one_hidden_layer", MNISTMLPOneHidden, "MNISTMLP", {"wrong_architecture"}, 0.83,
          "(256, 784)", "109,386 numbers"),
    buggy("predicts_classes", MNISTMLPPredictsClasses, "MNISTMLP", {"wrong_output_shape"}, 0.67,
          "returned shape (5,)"),
    # ---- mse_loss
    correct("by_hand", mse_by_hand, "mse_loss"),
    correct("functional", mse_functional, "mse_loss"),
    correct("module", mse_module, "mse_loss"),
    correct("sum_over_count", mse_sum_over_count, "mse_loss"),
    buggy("stub", mse_stub, "mse_loss", {"not_implemented"}, 0.0, "not done yet"),
    buggy("sum", mse_sum, "mse_loss", {"wrong_reduction"}, 0.75, "sum of the squared errors"),
    buggy("no_reduction", mse_no_reduction, "mse_loss", {"wrong_reduction"}, 0.75,
          "shape (8, 1)", "one loss per element"),
    buggy("mean_over_batch_dim", mse_mean_over_batch_dim, "mse_loss", {"wrong_reduction"}, 0.75,
          "shape (1,)"),
    buggy("item", mse_item, "mse_loss", {"wrong_return_type"}, 0.0, "a Python float"),
    buggy("no_return", mse_no_return, "mse_loss", {"wrong_return_type"}, 0.0,
          "`None`", "forget `return`"),
    buggy("numpy", mse_numpy, "mse_loss", {"wrong_return_type"}, 0.0, "a numpy float32"),
    buggy("rewrapped", mse_rewrapped, "mse_loss", {"detached_result"}, 0.75,
          "`loss.grad_fn` is None"),
    buggy("absolute", mse_absolute, "mse_loss", {"wrong_value"}, 0.75, "the mean squared error is"),
    buggy("square_of_mean", mse_square_of_mean, "mse_loss", {"wrong_value"}, 0.75,
          "the mean squared error is 2.095"),
    buggy("nan", mse_nan, "mse_loss", {"wrong_value"}, 0.75, "your loss is nan"),
    buggy("bad_argument", mse_bad_argument, "mse_loss", {"raised_exception"}, 0.0,
          "ValueError", "in mse_bad_argument"),
    buggy("endless", mse_endless, "mse_loss", {"timeout"}, 0.0, "stopped after", timeout=0.3),
    # ---- cross_entropy
    correct("functional", ce_functional, "cross_entropy"),
    correct("logsumexp", ce_logsumexp, "cross_entropy"),
    correct("max_shift", ce_max_shift, "cross_entropy"),
    correct("nll_of_log_softmax", ce_nll_of_log_softmax, "cross_entropy"),
    buggy("stub", ce_stub, "cross_entropy", {"not_implemented"}, 0.0, "not done yet"),
    buggy("softmax_first", ce_softmax_first, "cross_entropy", {"softmax_before_cross_entropy"},
          0.8, "softmax is applied twice"),
    buggy("log_of_softmax", ce_log_of_softmax, "cross_entropy", {"numerically_unstable"}, 0.8,
          "your loss is inf", "size 1e4"),
    buggy("naive_exp", ce_naive_exp, "cross_entropy", {"numerically_unstable"}, 0.8,
          "your loss is nan"),
    buggy("sum", ce_sum, "cross_entropy", {"wrong_reduction"}, 0.8, "sum over the batch"),
    buggy("no_reduction", ce_no_reduction, "cross_entropy", {"wrong_reduction"}, 0.75,
          "shape (8,)"),
    buggy("nll_of_logits", ce_nll_of_logits, "cross_entropy", {"wrong_value"}, 0.8,
          "your loss is"),
    buggy("detached_normaliser", ce_detached_normaliser, "cross_entropy", {"detached_result"},
          0.8, "right value, but its gradient"),
    buggy("float_targets", ce_float_targets, "cross_entropy", {"raised_exception"}, 0.0,
          "in ce_float_targets"),
    buggy("item", ce_item, "cross_entropy", {"wrong_return_type"}, 0.0, "a Python float"),
    # ---- linear_mse_grads
    correct("matrix_product", grads_by_matrix_product, "linear_mse_grads"),
    correct("broadcasting", grads_by_broadcasting, "linear_mse_grads"),
    correct("expanded", grads_expanded, "linear_mse_grads"),
    buggy("stub", grads_stub, "linear_mse_grads", {"not_implemented"}, 0.0,
          "not done yet"),
    buggy("no_factor_two", grads_no_factor_two, "linear_mse_grads", {"wrong_gradient"}, 0.6,
          "exactly half"),
    buggy("sum_not_mean", grads_sum_not_mean, "linear_mse_grads", {"wrong_gradient"}, 0.6,
          "N = 6 times too large"),
    buggy("wrong_sign", grads_wrong_sign, "linear_mse_grads", {"wrong_gradient"}, 0.6,
          "wrong sign"),
    buggy("db_not_summed", grads_db_not_summed, "linear_mse_grads", {"wrong_gradient"}, 0.8,
          "`db` has shape (6,)", "`b` has shape ()"),
    buggy("dw_column", grads_dw_column, "linear_mse_grads", {"wrong_gradient"}, 0.8,
          "`dw` has shape (3, 1)"),
    buggy("forgot_bias", grads_forgot_bias, "linear_mse_grads", {"wrong_gradient"}, 0.6,
          "your `dw` is", "chain rule"),
    buggy("autograd", grads_by_autograd, "linear_mse_grads", {"raised_exception"}, 0.0,
          "`torch.no_grad()`", "in grads_by_autograd"),
    buggy("only_dw", grads_only_dw, "linear_mse_grads", {"wrong_return_type"}, 0.0,
          "a tensor of shape (3,)"),
    buggy("numpy", grads_numpy, "linear_mse_grads", {"wrong_return_type"}, 0.0,
          "a numpy array"),
    buggy("nan", grads_nan, "linear_mse_grads", {"wrong_gradient"}, 0.6, "nan", "inf"),
    # ---- sgd_step
    correct("no_grad", sgd_no_grad, "sgd_step"),
    correct("data", sgd_data, "sgd_step"),
    correct("add_alpha", sgd_add_alpha, "sgd_step"),
    correct("torch_optimizer", sgd_torch_optimizer, "sgd_step"),
    buggy("stub", sgd_stub, "sgd_step", {"not_implemented"}, 0.0, "not done yet"),
    buggy("rebinds_name", sgd_rebinds_name, "sgd_step", {"no_in_place_update"}, 0.67,
          "still holds its old values", "points the name `p`"),
    buggy("replaces_list_items", sgd_replaces_list_items, "sgd_step", {"no_in_place_update"},
          0.67, "new tensors into the list"),
    buggy("ascent", sgd_ascent, "sgd_step", {"gradient_ascent"}, 0.67, "up the gradient"),
    buggy("tracked", sgd_tracked, "sgd_step", {"update_tracked_by_autograd"}, 0.0,
          "`with torch.no_grad():`", "in sgd_tracked"),
    buggy("no_none_check", sgd_no_none_check, "sgd_step", {"none_grad_crash"}, 0.67,
          "`.grad` is None", "NoneType"),
    buggy("zeroes_gradients", sgd_zeroes_gradients, "sgd_step", {"modifies_gradients"}, 0.75,
          "afterwards it is [0, 0, 0, ...]"),
    buggy("scales_gradients", sgd_scales_gradients, "sgd_step", {"modifies_gradients"}, 0.75,
          "`params[0].grad`"),
    buggy("fills_missing_gradients", sgd_fills_missing_gradients, "sgd_step",
          {"modifies_gradients"}, 0.75, "`params[1]` had no gradient"),
    buggy("returns_at_none", sgd_returns_at_none, "sgd_step", {"wrong_value"}, 0.75,
          "`params[2]`"),
    buggy("ignores_lr", sgd_ignores_lr, "sgd_step", {"wrong_value"}, 0.67, "10 times"),
    buggy("nan", sgd_nan, "sgd_step", {"wrong_value"}, 0.67, "nan"),
    buggy("wrong_attribute", sgd_wrong_attribute, "sgd_step", {"raised_exception"}, 0.0,
          "AttributeError", "in sgd_wrong_attribute"),
    buggy("endless", sgd_endless, "sgd_step", {"timeout"}, 0.67, "updating parameters where",
          timeout=0.5),
]

