"""Real submissions for lessons 01-04, correct and buggy, with the grade each one must get.

The correct ones double as reference solutions for ``benchmarks/bench_graders.py``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from catalogues import Entry, buggy, correct


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


SUBMISSIONS: list[Entry] = [
    # ---- SimpleNN
    correct("SimpleNN", "sequential", SimpleNNSequential),
    correct("SimpleNN", "named_layers", SimpleNNLayers),
    correct("SimpleNN", "raw_parameters", SimpleNNParameters),
    buggy("SimpleNN", "stub", SimpleNNStub, {"not_implemented"}, ("module", ...), "not done yet"),
    buggy("SimpleNN", "forward_stub", SimpleNNForwardStub, {"not_implemented"},
          ("runs_on_samples", ...), "not done yet"),
    buggy("SimpleNN", "no_relu", SimpleNNNoReLU, {"wrong_architecture"}, ("forward",),
          "ReLU after each hidden layer is missing"),
    buggy("SimpleNN", "relu_at_end", SimpleNNReLUAtEnd, {"wrong_architecture"}, ("forward",),
          "ReLU after its last layer"),
    buggy("SimpleNN", "squeezed", SimpleNNSqueezed, {"wrong_output_shape"},
          ("runs_on_samples", ...), "returned shape (4,)", "(4, 1)"),
    buggy("SimpleNN", "hidden_64", SimpleNNHidden64, {"wrong_architecture"},
          ("parameters", "forward"), "(64, 10)", "769 numbers", "601 numbers"),
    buggy("SimpleNN", "python_list", SimpleNNPythonList, {"wrong_architecture"},
          ("parameters", "forward"), "no parameters at all"),
    buggy("SimpleNN", "not_a_module", SimpleNNNotAModule, {"wrong_return_type"}, ("module", ...),
          "not an `nn.Module`"),
    buggy("SimpleNN", "instance", SimpleNNSequential(), {"wrong_return_type"}, ("module", ...),
          "not the class"),
    buggy("SimpleNN", "forward_typo", SimpleNNForwardTypo, {"raised_exception"}, ("module", ...),
          "no method named `forward`", "`foward`"),
    buggy("SimpleNN", "no_return", SimpleNNNoReturn, {"wrong_return_type"},
          ("runs_on_samples", ...), "`None`"),
    buggy("SimpleNN", "no_grad_forward", SimpleNNNoGrad, {"detached_result"}, ("gradients_flow",),
          "`output.grad_fn` is None"),
    buggy("SimpleNN", "detached_hidden", SimpleNNDetachedHidden, {"detached_result"},
          ("gradients_flow",), "`fc1.weight`", "`fc1.bias`"),
    buggy("SimpleNN", "unused_layer", SimpleNNUnusedLayer,
          {"wrong_architecture", "detached_result"}, ("parameters", "forward", "gradients_flow"),
          "603 numbers", "`extra.weight`"),
    buggy("SimpleNN", "fixed_batch", SimpleNNFixedBatch, {"raised_exception"},
          ("runs_on_samples",), "samples of shape (1, 10)", "in forward", "x.reshape(4, 10)"),
    buggy("SimpleNN", "endless", SimpleNNEndless, {"timeout"}, ("runs_on_samples", ...),
          "0.5 seconds", timeout=0.5),
    # ---- MNISTMLP
    correct("MNISTMLP", "sequential", MNISTMLPSequential),
    correct("MNISTMLP", "view", MNISTMLPLayers),
    correct("MNISTMLP", "log_softmax", MNISTMLPLogSoftmax),
    buggy("MNISTMLP", "stub", MNISTMLPStub, {"not_implemented"}, ("module", ...), "not done yet"),
    buggy("MNISTMLP", "softmax", MNISTMLPSoftmax, {"softmax_in_model"}, ("no_softmax",),
          "sums to 1"),
    buggy("MNISTMLP", "no_flatten", MNISTMLPNoFlatten, {"raised_exception"}, ("runs_on_images",),
          "images of shape (5, 1, 28, 28)"),
    buggy("MNISTMLP", "images_only", MNISTMLPImagesOnly, {"raised_exception"},
          ("runs_on_flattened_images",), "flattened images of shape (5, 784)", "IndexError"),
    buggy("MNISTMLP", "squeezes_output", MNISTMLPSqueezesOutput, {"wrong_output_shape"},
          ("runs_on_images", "runs_on_flattened_images"),
          "batch of 1 images of shape (1, 1, 28, 28)", "returned shape (10,)", "(1, 10)"),
    buggy("MNISTMLP", "no_relu", MNISTMLPNoReLU, {"wrong_architecture"}, ("forward",),
          "nothing between them"),
    buggy("MNISTMLP", "sigmoid", MNISTMLPSigmoid, {"wrong_architecture"}, ("forward",),
          "for the first sample"),
    buggy("MNISTMLP", "one_hidden_layer", MNISTMLPOneHidden, {"wrong_architecture"},
          ("parameters", "forward"), "(256, 784)", "109,386 numbers"),
    buggy("MNISTMLP", "predicts_classes", MNISTMLPPredictsClasses, {"wrong_output_shape"},
          ("runs_on_images", ...), "returned shape (5,)"),
    # ---- mse_loss
    correct("mse_loss", "by_hand", mse_by_hand),
    correct("mse_loss", "functional", mse_functional),
    correct("mse_loss", "module", mse_module),
    correct("mse_loss", "sum_over_count", mse_sum_over_count),
    buggy("mse_loss", "stub", mse_stub, {"not_implemented"}, ("tensor", ...), "not done yet"),
    buggy("mse_loss", "sum", mse_sum, {"wrong_reduction"}, ("value",),
          "sum of the squared errors"),
    buggy("mse_loss", "no_reduction", mse_no_reduction, {"wrong_reduction"}, ("scalar",),
          "shape (8, 1)", "one loss per element"),
    buggy("mse_loss", "mean_over_batch_dim", mse_mean_over_batch_dim, {"wrong_reduction"},
          ("scalar",), "shape (1,)"),
    buggy("mse_loss", "item", mse_item, {"wrong_return_type"}, ("tensor", ...), "a Python float"),
    buggy("mse_loss", "no_return", mse_no_return, {"wrong_return_type"}, ("tensor", ...), "`None`",
          "forget `return`"),
    buggy("mse_loss", "numpy", mse_numpy, {"wrong_return_type"}, ("tensor", ...),
          "a numpy float32"),
    buggy("mse_loss", "rewrapped", mse_rewrapped, {"detached_result"}, ("graph",),
          "`loss.grad_fn` is None"),
    buggy("mse_loss", "absolute", mse_absolute, {"wrong_value"}, ("value",),
          "the mean squared error is"),
    buggy("mse_loss", "square_of_mean", mse_square_of_mean, {"wrong_value"}, ("value",),
          "the mean squared error is 2.095"),
    buggy("mse_loss", "nan", mse_nan, {"wrong_value"}, ("value",), "your loss is nan"),
    buggy("mse_loss", "bad_argument", mse_bad_argument, {"raised_exception"}, ("tensor", ...),
          "ValueError", "in mse_bad_argument"),
    buggy("mse_loss", "endless", mse_endless, {"timeout"}, ("tensor", ...), "stopped after",
          timeout=0.3),
    # ---- cross_entropy
    correct("cross_entropy", "functional", ce_functional),
    correct("cross_entropy", "logsumexp", ce_logsumexp),
    correct("cross_entropy", "max_shift", ce_max_shift),
    correct("cross_entropy", "nll_of_log_softmax", ce_nll_of_log_softmax),
    buggy("cross_entropy", "stub", ce_stub, {"not_implemented"}, ("tensor", ...), "not done yet"),
    buggy("cross_entropy", "softmax_first", ce_softmax_first, {"softmax_before_cross_entropy"},
          ("value",), "softmax is applied twice"),
    buggy("cross_entropy", "log_of_softmax", ce_log_of_softmax, {"numerically_unstable"},
          ("stable",), "your loss is inf", "size 1e4"),
    buggy("cross_entropy", "naive_exp", ce_naive_exp, {"numerically_unstable"}, ("stable",),
          "your loss is nan"),
    buggy("cross_entropy", "sum", ce_sum, {"wrong_reduction"}, ("value",), "sum over the batch"),
    buggy("cross_entropy", "no_reduction", ce_no_reduction, {"wrong_reduction"}, ("scalar",),
          "shape (8,)"),
    buggy("cross_entropy", "nll_of_logits", ce_nll_of_logits, {"wrong_value"}, ("value",),
          "your loss is"),
    buggy("cross_entropy", "detached_normaliser", ce_detached_normaliser, {"detached_result"},
          ("graph",), "right value, but its gradient"),
    buggy("cross_entropy", "float_targets", ce_float_targets, {"raised_exception"},
          ("tensor", ...), "in ce_float_targets"),
    buggy("cross_entropy", "item", ce_item, {"wrong_return_type"}, ("tensor", ...),
          "a Python float"),
    # ---- linear_mse_grads
    correct("linear_mse_grads", "matrix_product", grads_by_matrix_product),
    correct("linear_mse_grads", "broadcasting", grads_by_broadcasting),
    correct("linear_mse_grads", "expanded", grads_expanded),
    buggy("linear_mse_grads", "stub", grads_stub, {"not_implemented"}, ("returns_pair", ...),
          "not done yet"),
    buggy("linear_mse_grads", "no_factor_two", grads_no_factor_two, {"wrong_gradient"},
          ("dw_value", "db_value"), "exactly half"),
    buggy("linear_mse_grads", "sum_not_mean", grads_sum_not_mean, {"wrong_gradient"},
          ("dw_value", "db_value"), "N = 6 times too large"),
    buggy("linear_mse_grads", "wrong_sign", grads_wrong_sign, {"wrong_gradient"},
          ("dw_value", "db_value"), "wrong sign"),
    buggy("linear_mse_grads", "db_not_summed", grads_db_not_summed, {"wrong_gradient"},
          ("db_shape",), "`db` has shape (6,)", "`b` has shape ()"),
    buggy("linear_mse_grads", "dw_column", grads_dw_column, {"wrong_gradient"}, ("dw_shape",),
          "`dw` has shape (3, 1)"),
    buggy("linear_mse_grads", "forgot_bias", grads_forgot_bias, {"wrong_gradient"},
          ("dw_value", "db_value"), "your `dw` is", "chain rule"),
    buggy("linear_mse_grads", "autograd", grads_by_autograd, {"raised_exception"},
          ("returns_pair", ...), "`torch.no_grad()`", "in grads_by_autograd"),
    buggy("linear_mse_grads", "only_dw", grads_only_dw, {"wrong_return_type"},
          ("returns_pair", ...), "a tensor of shape (3,)"),
    buggy("linear_mse_grads", "numpy", grads_numpy, {"wrong_return_type"}, ("returns_pair", ...),
          "a numpy array"),
    buggy("linear_mse_grads", "nan", grads_nan, {"wrong_gradient"}, ("dw_value", "db_value"),
          "nan", "inf"),
    # ---- sgd_step
    correct("sgd_step", "no_grad", sgd_no_grad),
    correct("sgd_step", "data", sgd_data),
    correct("sgd_step", "add_alpha", sgd_add_alpha),
    correct("sgd_step", "torch_optimizer", sgd_torch_optimizer),
    buggy("sgd_step", "stub", sgd_stub, {"not_implemented"}, ("update", ...), "not done yet"),
    buggy("sgd_step", "rebinds_name", sgd_rebinds_name, {"no_in_place_update"},
          ("update", "updates_rest"), "still holds its old values", "points the name `p`"),
    buggy("sgd_step", "replaces_list_items", sgd_replaces_list_items, {"no_in_place_update"},
          ("update", "updates_rest"), "new tensors into the list"),
    buggy("sgd_step", "ascent", sgd_ascent, {"gradient_ascent"}, ("update", "updates_rest"),
          "up the gradient"),
    buggy("sgd_step", "tracked", sgd_tracked, {"update_tracked_by_autograd"}, ("update", ...),
          "`with torch.no_grad():`", "in sgd_tracked"),
    buggy("sgd_step", "no_none_check", sgd_no_none_check, {"none_grad_crash"}, ("skips_none", ...),
          "`.grad` is None", "NoneType"),
    buggy("sgd_step", "zeroes_gradients", sgd_zeroes_gradients, {"modifies_gradients"},
          ("keeps_gradients",), "afterwards it is [0, 0, 0, ...]"),
    buggy("sgd_step", "scales_gradients", sgd_scales_gradients, {"modifies_gradients"},
          ("keeps_gradients",), "`params[0].grad`"),
    buggy("sgd_step", "fills_missing_gradients", sgd_fills_missing_gradients,
          {"modifies_gradients"}, ("skips_none",), "`params[1]` had no gradient"),
    buggy("sgd_step", "returns_at_none", sgd_returns_at_none, {"wrong_value"}, ("updates_rest",),
          "`params[2]`"),
    buggy("sgd_step", "ignores_lr", sgd_ignores_lr, {"wrong_value"}, ("update", "updates_rest"),
          "10 times"),
    buggy("sgd_step", "nan", sgd_nan, {"wrong_value"}, ("update", "updates_rest"), "nan"),
    buggy("sgd_step", "wrong_attribute", sgd_wrong_attribute, {"raised_exception"},
          ("update", ...), "AttributeError", "in sgd_wrong_attribute"),
    buggy("sgd_step", "endless", sgd_endless, {"timeout"}, ("skips_none", ...),
          "updating parameters where", timeout=0.5),
]

