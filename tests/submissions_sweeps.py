"""Real submissions for lesson 12's `lr_sweep`, correct and buggy."""

from __future__ import annotations

import copy
import itertools

import torch

from catalogues import Entry, buggy, correct

SWEEP = "lr_sweep"
ALL = ...  # the named check and every check after it: grading stopped there


def sweep_lesson(model, loader, loss_fn, make_optimizer, lrs, steps):
    """The lesson's solution: a deep copy of the state_dict, a new iterator per lr."""
    initial = copy.deepcopy(model.state_dict())
    results = []
    for lr in lrs:
        model.load_state_dict(initial)
        optimizer = make_optimizer(model.parameters(), lr)
        model.train()
        batches = iter(loader)
        total = 0.0
        for _ in range(steps):
            try:
                inputs, targets = next(batches)
            except StopIteration:
                batches = iter(loader)
                inputs, targets = next(batches)
            optimizer.zero_grad()
            loss = loss_fn(model(inputs), targets)
            loss.backward()
            optimizer.step()
            total += loss.item()
        results.append(total / steps)
    model.load_state_dict(initial)
    return results


def sweep_cycle(model, loader, loss_fn, make_optimizer, lrs, steps):
    """Cloned tensors of the state, `itertools.cycle` per lr, zero_grad after the step."""
    saved = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    losses = []
    for lr in lrs:
        model.load_state_dict(saved)
        model.train()
        optimizer = make_optimizer(model.parameters(), lr=lr)
        step_losses = []
        for inputs, targets in itertools.islice(itertools.cycle(loader), steps):
            loss = loss_fn(model.forward(inputs), targets)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step_losses.append(float(loss))
        losses.append(sum(step_losses) / len(step_losses))
    model.load_state_dict(saved)
    return losses


def sweep_fresh_copy(model, loader, loss_fn, make_optimizer, lrs, steps):
    """A fresh deep copy of the saved state loaded before each lr, and a closure step."""
    saved = copy.deepcopy(model.state_dict())
    means = []
    for lr in lrs:
        model.load_state_dict(copy.deepcopy(saved))
        model.train()
        optimizer = make_optimizer(model.parameters(), lr)
        batches = [batch for _, batch in zip(range(steps), itertools.cycle(loader))]
        total = 0.0
        for inputs, targets in batches:
            def closure():
                optimizer.zero_grad()
                loss = loss_fn(model(inputs), targets)
                loss.backward()
                return loss
            total += optimizer.step(closure).item()
        means.append(total / steps)
    model.load_state_dict(saved)
    return tuple(means)


def _train(model, loader, loss_fn, optimizer, steps):
    """`steps` steps over the loader from its start, cycling; their mean loss."""
    model.train()
    total, done = 0.0, 0
    while done < steps:
        for inputs, targets in loader:
            if done == steps:
                break
            total += _step(model, inputs, targets, loss_fn, optimizer)
            done += 1
    return total / steps


def sweep_stub(model, loader, loss_fn, make_optimizer, lrs, steps):
    raise NotImplementedError()


def sweep_not_restored(model, loader, loss_fn, make_optimizer, lrs, steps):
    """Never restores: each lr continues from the previous one's weights."""
    results = [_train(model, loader, loss_fn, make_optimizer(model.parameters(), lr), steps)
               for lr in lrs]
    return results


def sweep_shallow_state(model, loader, loss_fn, make_optimizer, lrs, steps):
    """Saves `model.state_dict()` without copying it: it holds the live tensors."""
    initial = model.state_dict()
    results = []
    for lr in lrs:
        model.load_state_dict(initial)
        results.append(_train(model, loader, loss_fn, make_optimizer(model.parameters(), lr),
                              steps))
    model.load_state_dict(initial)
    return results


def sweep_parameters_only(model, loader, loss_fn, make_optimizer, lrs, steps):
    """Restores the parameters but not the buffers."""
    saved = [p.detach().clone() for p in model.parameters()]

    def restore():
        with torch.no_grad():
            for p, value in zip(model.parameters(), saved):
                p.copy_(value)

    results = []
    for lr in lrs:
        restore()
        results.append(_train(model, loader, loss_fn, make_optimizer(model.parameters(), lr),
                              steps))
    restore()
    return results


def sweep_optimizer_reused(model, loader, loss_fn, make_optimizer, lrs, steps):
    """One optimizer for all lrs, its learning rate changed in place: momentum carries over."""
    initial = copy.deepcopy(model.state_dict())
    optimizer = make_optimizer(model.parameters(), lrs[0])
    results = []
    for lr in lrs:
        model.load_state_dict(initial)
        for group in optimizer.param_groups:
            group["lr"] = lr
        results.append(_train(model, loader, loss_fn, optimizer, steps))
    model.load_state_dict(initial)
    return results


def sweep_left_trained(model, loader, loss_fn, make_optimizer, lrs, steps):
    """Restores before each lr but not after the last one."""
    initial = copy.deepcopy(model.state_dict())
    results = []
    for lr in lrs:
        model.load_state_dict(initial)
        results.append(_train(model, loader, loss_fn, make_optimizer(model.parameters(), lr),
                              steps))
    return results


def _step(model, inputs, targets, loss_fn, optimizer):
    optimizer.zero_grad()
    loss = loss_fn(model(inputs), targets)
    loss.backward()
    optimizer.step()
    return loss.item()


def _cycled(loader, steps):
    return itertools.islice(itertools.cycle(loader), steps)


def _mean(losses):
    return sum(losses) / len(losses)


def _sweep(model, loader, loss_fn, make_optimizer, lrs, steps, step=_step, train=True,
           take=_cycled, summarise=_mean):
    """The lesson's loop, with one of its parts swapped for a buggy one."""
    initial = copy.deepcopy(model.state_dict())
    results = []
    for lr in lrs:
        model.load_state_dict(initial)
        if train:
            model.train()
        optimizer = make_optimizer(model.parameters(), lr)
        results.append(summarise([step(model, x, y, loss_fn, optimizer)
                                  for x, y in take(loader, steps)]))
    model.load_state_dict(initial)
    return results


def _no_zero_grad(model, inputs, targets, loss_fn, optimizer):
    loss = loss_fn(model(inputs), targets)
    loss.backward()
    optimizer.step()
    return loss.item()


def _no_backward(model, inputs, targets, loss_fn, optimizer):
    optimizer.zero_grad()
    loss = loss_fn(model(inputs), targets)
    optimizer.step()
    return loss.item()


def _no_step(model, inputs, targets, loss_fn, optimizer):
    optimizer.zero_grad()
    loss = loss_fn(model(inputs), targets)
    loss.backward()
    return loss.item()


def _tensor_loss(model, inputs, targets, loss_fn, optimizer):
    optimizer.zero_grad()
    loss = loss_fn(model(inputs), targets)
    loss.backward()
    optimizer.step()
    return loss


def sweep_one_iterator(model, loader, loss_fn, make_optimizer, lrs, steps):
    """One endless iterator for the whole sweep: each lr continues where the last one stopped."""
    shared = itertools.cycle(loader)
    return _sweep(model, loader, loss_fn, make_optimizer, lrs, steps,
                  take=lambda loader, steps: itertools.islice(shared, steps))


def sweep_no_zero_grad(model, loader, loss_fn, make_optimizer, lrs, steps):
    return _sweep(model, loader, loss_fn, make_optimizer, lrs, steps, step=_no_zero_grad)


def sweep_no_backward(model, loader, loss_fn, make_optimizer, lrs, steps):
    return _sweep(model, loader, loss_fn, make_optimizer, lrs, steps, step=_no_backward)


def sweep_no_step(model, loader, loss_fn, make_optimizer, lrs, steps):
    return _sweep(model, loader, loss_fn, make_optimizer, lrs, steps, step=_no_step)


def sweep_loss_tensors(model, loader, loss_fn, make_optimizer, lrs, steps):
    """Adds up the loss tensors: each lr's mean keeps every step's graph."""
    return _sweep(model, loader, loss_fn, make_optimizer, lrs, steps, step=_tensor_loss)


def sweep_no_train_mode(model, loader, loss_fn, make_optimizer, lrs, steps):
    """Trains the model in the mode it arrived in."""
    return _sweep(model, loader, loss_fn, make_optimizer, lrs, steps, train=False)


def sweep_dict(model, loader, loss_fn, make_optimizer, lrs, steps):
    """Returns a dict keyed by learning rate instead of a list."""
    return dict(zip(lrs, sweep_lesson(model, loader, loss_fn, make_optimizer, lrs, steps)))


def sweep_last_loss(model, loader, loss_fn, make_optimizer, lrs, steps):
    """Returns each lr's last step's loss instead of the mean over its steps."""
    return _sweep(model, loader, loss_fn, make_optimizer, lrs, steps,
                  summarise=lambda losses: losses[-1])


def sweep_no_cycling(model, loader, loss_fn, make_optimizer, lrs, steps):
    """Stops when the loader runs out, short of `steps` steps."""
    return _sweep(model, loader, loss_fn, make_optimizer, lrs, steps,
                  take=lambda loader, steps: itertools.islice(loader, steps))


def sweep_trains_a_copy(model, loader, loss_fn, make_optimizer, lrs, steps):
    """Trains a fresh deep copy of the model at each lr; the model itself never trains."""
    return [_sweep(copy.deepcopy(model), loader, loss_fn, make_optimizer, [lr], steps)[0]
            for lr in lrs]


SUBMISSIONS: list[Entry] = [
    correct(SWEEP, "lesson", sweep_lesson),
    correct(SWEEP, "cycle", sweep_cycle),
    correct(SWEEP, "fresh_copy", sweep_fresh_copy),
    buggy(SWEEP, "stub", sweep_stub, {"not_implemented"}, ("returns_list", ALL), "not done yet"),
    buggy(SWEEP, "not_restored", sweep_not_restored,
          {"state_not_restored", "model_left_trained"}, ("restored", "left_restored"),
          "the parameters the previous one ended"),
    buggy(SWEEP, "shallow_state", sweep_shallow_state,
          {"state_not_restored", "model_left_trained"}, ("restored", "left_restored"),
          "a plain `state_dict()` holds the live tensors"),
    buggy(SWEEP, "parameters_only", sweep_parameters_only,
          {"state_not_restored", "model_left_trained"}, ("restored", "left_restored"),
          "(`0.batches_seen`)"),
    buggy(SWEEP, "optimizer_reused", sweep_optimizer_reused, {"optimizer_reused"},
          ("fresh_optimizer",), "`make_optimizer` was called 1 times for 3"),
    buggy(SWEEP, "left_trained", sweep_left_trained, {"model_left_trained"}, ("left_restored",),
          "once more after the last learning rate"),
    buggy(SWEEP, "one_iterator", sweep_one_iterator, {"different_batches"}, ("same_batches",),
          "trained on the batches 2, 3, 1, 2"),
    buggy(SWEEP, "no_zero_grad", sweep_no_zero_grad, {"no_zero_grad"}, ("gradients",),
          "accumulate across batches"),
    buggy(SWEEP, "no_backward", sweep_no_backward, {"no_backward"},
          ("backward_called", "gradients"),
          "never called `backward()`"),
    buggy(SWEEP, "no_step", sweep_no_step, {"no_step"},
          ("step_called", "gradients"), "never called `optimizer.step()`"),
    buggy(SWEEP, "loss_tensors", sweep_loss_tensors, {"loss_tensor_accumulated"},
          ("returns_float",), "`grad_fn="),
    buggy(SWEEP, "no_train_mode", sweep_no_train_mode, {"no_train_mode"}, ("train_mode",),
          "in evaluation mode"),
    buggy(SWEEP, "dict", sweep_dict, {"wrong_return_type"},
          ("returns_list", "returns_float", "mean_loss"), "a list of 3 floats"),
    buggy(SWEEP, "last_loss", sweep_last_loss, {"returns_last_batch_loss"}, ("mean_loss",),
          "the loss of its last step only"),
    buggy(SWEEP, "trains_a_copy", sweep_trains_a_copy, {"wrong_value"}, ("trains_model", ALL),
          "the sweep trained a copy of it"),
    buggy(SWEEP, "no_cycling", sweep_no_cycling, {"wrong_value"}, ("step_count", ALL),
          "9 forward passes for 3 learning rates"),
]
