"""Real submissions for lesson 09's `clipped_step`, correct and buggy."""

from __future__ import annotations

import torch
from torch.nn.utils import clip_grad_norm_ as imported_clip

from catalogues import Entry, buggy, correct

STEP = "clipped_step"
ALL = ...  # the named check and every check after it: grading stopped there


def _backward(loss, scaler):
    if scaler is None:
        loss.backward()
    else:
        scaler.scale(loss).backward()


def _step(optimizer, scaler):
    if scaler is None:
        optimizer.step()
    else:
        scaler.step(optimizer)
        scaler.update()


def clipped_lesson(model, inputs, targets, loss_fn, optimizer, max_norm, scaler=None):
    """The lesson's solution."""
    optimizer.zero_grad()
    loss = loss_fn(model(inputs), targets)
    if scaler is None:
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
        optimizer.step()
    else:
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
        scaler.step(optimizer)
        scaler.update()
    return loss.item()


def clipped_by_hand(model, inputs, targets, loss_fn, optimizer, max_norm, scaler=None):
    """Computes the total norm and rescales every gradient by one factor itself; zeroes after."""
    loss = loss_fn(model(inputs), targets)
    _backward(loss, scaler)
    if scaler is not None:
        scaler.unscale_(optimizer)
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    total = torch.sqrt(sum((g ** 2).sum() for g in grads))
    factor = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    with torch.no_grad():
        for g in grads:
            g.mul_(factor)
    _step(optimizer, scaler)
    optimizer.zero_grad()
    return float(loss)


def clipped_autocast(model, inputs, targets, loss_fn, optimizer, max_norm, scaler=None):
    """bfloat16 autocast around the forward; `clip_grad_norm_` imported under its own name."""
    model.zero_grad(set_to_none=True)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        loss = loss_fn(model(inputs), targets)
    _backward(loss, scaler)
    if scaler is not None:
        scaler.unscale_(optimizer)
    imported_clip(model.parameters(), max_norm=max_norm)
    _step(optimizer, scaler)
    return loss.item()


def clipped_closure(model, inputs, targets, loss_fn, optimizer, max_norm, scaler=None):
    """Without a scaler, `optimizer.step(closure)` with the clipping inside the closure."""
    if scaler is not None:
        return clipped_lesson(model, inputs, targets, loss_fn, optimizer, max_norm, scaler)

    def closure():
        optimizer.zero_grad()
        loss = loss_fn(model(inputs), targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
        return loss

    return optimizer.step(closure).item()


def clipped_stub(model, inputs, targets, loss_fn, optimizer, max_norm, scaler=None):
    # YOUR CODE HERE
    raise NotImplementedError()


def clipped_never(model, inputs, targets, loss_fn, optimizer, max_norm, scaler=None):
    optimizer.zero_grad()
    loss = loss_fn(model(inputs), targets)
    _backward(loss, scaler)
    _step(optimizer, scaler)
    return loss.item()


def clipped_before_backward(model, inputs, targets, loss_fn, optimizer, max_norm, scaler=None):
    optimizer.zero_grad()
    loss = loss_fn(model(inputs), targets)
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    _backward(loss, scaler)
    _step(optimizer, scaler)
    return loss.item()


def clipped_after_step(model, inputs, targets, loss_fn, optimizer, max_norm, scaler=None):
    optimizer.zero_grad()
    loss = loss_fn(model(inputs), targets)
    _backward(loss, scaler)
    _step(optimizer, scaler)
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    return loss.item()


def clipped_before_unscale(model, inputs, targets, loss_fn, optimizer, max_norm, scaler=None):
    """Clips the scaled gradients: `scaler.step` unscales them afterwards."""
    optimizer.zero_grad()
    loss = loss_fn(model(inputs), targets)
    _backward(loss, scaler)
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    _step(optimizer, scaler)
    return loss.item()


def _unscaled_gradients(model, inputs, targets, loss_fn, optimizer, scaler):
    """Clears, runs the forward and backward, and unscales; returns the loss."""
    optimizer.zero_grad()
    loss = loss_fn(model(inputs), targets)
    _backward(loss, scaler)
    if scaler is not None:
        scaler.unscale_(optimizer)
    return loss


def clipped_per_parameter(model, inputs, targets, loss_fn, optimizer, max_norm, scaler=None):
    loss = _unscaled_gradients(model, inputs, targets, loss_fn, optimizer, scaler)
    for parameter in model.parameters():
        torch.nn.utils.clip_grad_norm_(parameter, max_norm)
    _step(optimizer, scaler)
    return loss.item()


def clipped_by_value(model, inputs, targets, loss_fn, optimizer, max_norm, scaler=None):
    loss = _unscaled_gradients(model, inputs, targets, loss_fn, optimizer, scaler)
    torch.nn.utils.clip_grad_value_(model.parameters(), max_norm)
    _step(optimizer, scaler)
    return loss.item()


def clipped_optimizer_step(model, inputs, targets, loss_fn, optimizer, max_norm, scaler=None):
    """Scales and unscales, then steps the optimizer itself: a NaN batch reaches the weights."""
    loss = _unscaled_gradients(model, inputs, targets, loss_fn, optimizer, scaler)
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    optimizer.step()
    if scaler is not None:
        scaler.update()
    return loss.item()


def clipped_no_update(model, inputs, targets, loss_fn, optimizer, max_norm, scaler=None):
    loss = _unscaled_gradients(model, inputs, targets, loss_fn, optimizer, scaler)
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    if scaler is None:
        optimizer.step()
    else:
        scaler.step(optimizer)                 # and never scaler.update()
    return loss.item()


def clipped_returns_scaled(model, inputs, targets, loss_fn, optimizer, max_norm, scaler=None):
    optimizer.zero_grad()
    loss = loss_fn(model(inputs), targets)
    if scaler is not None:
        loss = scaler.scale(loss)
    loss.backward()
    if scaler is not None:
        scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    _step(optimizer, scaler)
    return loss.item()


def clipped_no_zero_grad(model, inputs, targets, loss_fn, optimizer, max_norm, scaler=None):
    loss = loss_fn(model(inputs), targets)
    _backward(loss, scaler)
    if scaler is not None:
        scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    _step(optimizer, scaler)
    return loss.item()


def clipped_zero_grad_after_backward(model, inputs, targets, loss_fn, optimizer, max_norm,
                                     scaler=None):
    """Clears the gradients between backward() and the clip: every step sees `None`."""
    loss = loss_fn(model(inputs), targets)
    _backward(loss, scaler)
    if scaler is not None:
        scaler.unscale_(optimizer)
    optimizer.zero_grad()
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    _step(optimizer, scaler)
    return loss.item()


def clipped_returns_tensor(model, inputs, targets, loss_fn, optimizer, max_norm, scaler=None):
    loss = _unscaled_gradients(model, inputs, targets, loss_fn, optimizer, scaler)
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    _step(optimizer, scaler)
    return loss


SUBMISSIONS: list[Entry] = [
    correct(STEP, "lesson", clipped_lesson),
    correct(STEP, "by_hand", clipped_by_hand),
    correct(STEP, "autocast", clipped_autocast),
    correct(STEP, "closure", clipped_closure),
    buggy(STEP, "stub", clipped_stub, {"not_implemented"}, ("returns_float", ALL),
          "not done yet"),
    buggy(STEP, "never", clipped_never, {"not_clipped"}, ("gradients",),
          "it was not clipped"),
    buggy(STEP, "before_backward", clipped_before_backward, {"clipped_before_backward"},
          ("gradients",), "before `backward()`"),
    buggy(STEP, "after_step", clipped_after_step, {"clipped_after_step"}, ("gradients",),
          "only after `step()`"),
    buggy(STEP, "before_unscale", clipped_before_unscale, {"clipped_scaled_gradients"},
          ("gradients",), "`scaler.unscale_(optimizer)`"),
    buggy(STEP, "per_parameter", clipped_per_parameter, {"wrong_clipping"}, ("gradients",),
          "on its own"),
    buggy(STEP, "by_value", clipped_by_value, {"wrong_clipping"}, ("gradients",),
          "`clip_grad_value_`"),
    buggy(STEP, "optimizer_step", clipped_optimizer_step, {"step_without_scaler"},
          ("scaler", "skips_non_finite"), "directly 3 times in 3 calls", "became NaN"),
    buggy(STEP, "no_update", clipped_no_update, {"scaler_not_updated"}, ("scaler", ALL),
          "`scaler.update()`"),
    buggy(STEP, "returns_scaled", clipped_returns_scaled, {"scaled_loss_returned"},
          ("returned_loss",), "the loss multiplied by the scaler's factor"),
    buggy(STEP, "no_zero_grad", clipped_no_zero_grad, {"no_zero_grad"}, ("gradients",),
          "from one call to the next"),
    buggy(STEP, "zero_grad_after_backward", clipped_zero_grad_after_backward,
          {"zero_grad_after_backward"}, ("gradients",), "cleared between `backward()` and `step()`"),
    buggy(STEP, "returns_tensor", clipped_returns_tensor, {"loss_tensor_accumulated"},
          ("returns_float",), "`grad_fn="),
]
