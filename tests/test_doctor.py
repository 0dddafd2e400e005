"""The loop doctor on a catalogue of loops written as people write them: each buggy loop must
produce its finding (and no finding for a mistake it does not make), each correct one nothing."""

from __future__ import annotations

import math
import subprocess
import sys
from typing import Callable

import pytest
import torch
from torch import nn

from course_utils import doctor
from course_utils.data import TensorLoader
from course_utils.graders import REPORT_MIME, grade
from submissions_training import train_one_epoch_no_zero_grad

BUGGY: dict[str, list[Callable[[], None]]] = {}
CORRECT: list[Callable[[], None]] = []


def buggy(code: str) -> Callable[[Callable[[], None]], Callable[[], None]]:
    def register(loop: Callable[[], None]) -> Callable[[], None]:
        BUGGY.setdefault(code, []).append(loop)
        return loop
    return register


def correct(loop: Callable[[], None]) -> Callable[[], None]:
    CORRECT.append(loop)
    return loop


def data(n: int = 48, batch_size: int = 8, seed: int = 0) -> TensorLoader:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 10, generator=g)
    return TensorLoader((x, (x[:, 0] > 0).long()), batch_size=batch_size, shuffle=True)


def dataloader(n: int = 48, batch_size: int = 8) -> torch.utils.data.DataLoader:
    x = torch.randn(n, 10)
    dataset = torch.utils.data.TensorDataset(x, (x[:, 0] > 0).long())
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True)


def mlp(dropout: bool = False, batchnorm: bool = False) -> nn.Module:
    layers: list[nn.Module] = [nn.Linear(10, 16)]
    if batchnorm:
        layers.append(nn.BatchNorm1d(16))
    layers.append(nn.ReLU())
    if dropout:
        layers.append(nn.Dropout(0.2))
    layers.append(nn.Linear(16, 2))
    return nn.Sequential(*layers)


# ---------------------------------------------------------------------------- buggy loops

@buggy("no_zero_grad")
def forgot_zero_grad() -> None:
    model, loader = mlp(), data()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loss_fn = nn.CrossEntropyLoss()
    for epoch in range(2):
        for x, y in loader:
            loss = loss_fn(model(x), y)
            loss.backward()
            optimizer.step()


@buggy("no_zero_grad")
def zero_grad_once_before_the_loop() -> None:
    model, loader = mlp(), dataloader()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    optimizer.zero_grad()
    for x, y in loader:
        out = model(x)
        loss = nn.functional.cross_entropy(out, y)
        loss.backward()
        optimizer.step()


@buggy("no_zero_grad")
def zero_grad_on_another_model() -> None:
    model, other, loader = mlp(), mlp(), data()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for x, y in loader:
        other.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()


@buggy("step_before_backward")
def step_then_backward() -> None:
    model, loader = mlp(), data()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loss_fn = nn.CrossEntropyLoss()
    for x, y in loader:
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        optimizer.step()
        loss.backward()


@buggy("step_before_backward")
def step_at_the_top() -> None:
    model, loader = nn.Linear(10, 2), dataloader()
    optimizer = torch.optim.Adam(model.parameters())
    for epoch in range(2):
        for x, y in loader:
            output = model(x)
            optimizer.step()
            optimizer.zero_grad()
            nn.functional.cross_entropy(output, y).backward()


@buggy("backward_without_step")
def step_after_the_batch_loop() -> None:
    model, loader = mlp(), data()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for epoch in range(3):
        for x, y in loader:
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
        optimizer.step()


@buggy("backward_without_step")
def accumulation_cleared_every_batch() -> None:
    model, loader = mlp(), dataloader(batch_size=4)
    optimizer = torch.optim.Adam(model.parameters())
    for i, (x, y) in enumerate(loader):
        optimizer.zero_grad()
        (nn.functional.cross_entropy(model(x), y) / 4).backward()
        if i % 4 == 3:
            optimizer.step()


@buggy("backward_without_step")
def zero_grad_between_backward_and_step() -> None:
    model, loader = mlp(), data()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for x, y in loader:
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.zero_grad()
        optimizer.step()


@buggy("backward_without_step")
def zero_grad_keeping_zeros_between_backward_and_step() -> None:
    model, loader = mlp(), data()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, weight_decay=0.1)
    for x, y in loader:
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.zero_grad(set_to_none=False)  # zeros kept: each step applies zeros
        optimizer.step()


@buggy("training_in_eval_mode")
def eval_left_on_after_validation() -> None:
    model, train, val = mlp(dropout=True), data(), data(seed=1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model.train()
    for epoch in range(2):
        for x, y in train:
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            for x, y in val:
                model(x)


@buggy("training_in_eval_mode")
def never_train_mode_batchnorm() -> None:
    model, loader = mlp(batchnorm=True), dataloader()
    model.eval()
    optimizer = torch.optim.Adam(model.parameters())
    for x, y in loader:
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()


def train_epoch(model: nn.Module, loader, optimizer) -> None:
    model.train()
    for x, y in loader:
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()


@buggy("validation_in_train_mode")
def validation_without_eval() -> None:
    model, train, val = mlp(dropout=True), data(), data(seed=1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for epoch in range(2):
        train_epoch(model, train, optimizer)
        correct = 0
        with torch.no_grad():
            for x, y in val:
                correct += (model(x).argmax(1) == y).sum().item()


@buggy("validation_in_train_mode")
def evaluate_helper_forgets_eval() -> None:
    def evaluate(model, loader):
        total = 0.0
        with torch.inference_mode():
            for x, y in loader:
                total += nn.functional.cross_entropy(model(x), y).item() * len(y)
        return total / len(loader.dataset)

    model, train, val = mlp(batchnorm=True), dataloader(), dataloader()
    optimizer = torch.optim.Adam(model.parameters())
    for epoch in range(2):
        train_epoch(model, train, optimizer)
        evaluate(model, val)


@buggy("validation_with_grad")
def validation_without_no_grad() -> None:
    model, train, val = mlp(), data(), data(seed=1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for epoch in range(2):
        train_epoch(model, train, optimizer)
        model.eval()
        losses = []
        for x, y in val:
            losses.append(nn.functional.cross_entropy(model(x), y).item())


@buggy("validation_with_grad")
def accuracy_helper_with_grad() -> None:
    def accuracy(model, loader):
        model.eval()
        hits = 0
        for x, y in loader:
            hits += (model(x).argmax(1) == y).sum().item()
        return hits / len(loader.dataset)

    model, train, val = mlp(dropout=True), dataloader(), dataloader()
    optimizer = torch.optim.Adam(model.parameters())
    for epoch in range(2):
        train_epoch(model, train, optimizer)
        accuracy(model, val)


@buggy("scheduler_per_batch")
def steplr_every_batch() -> None:
    model, loader = mlp(), data(n=96)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=3, gamma=0.1)
    for epoch in range(2):
        for x, y in loader:
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
            scheduler.step()


@buggy("scheduler_per_batch")
def cosine_epochs_every_batch() -> None:
    epochs = 4
    model, loader = mlp(), dataloader(n=96)
    optimizer = torch.optim.Adam(model.parameters())
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    for epoch in range(epochs):
        for x, y in loader:
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
            scheduler.step()


@buggy("scheduler_before_optimizer")
def scheduler_at_epoch_start() -> None:
    model, loader = mlp(), data()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    for epoch in range(3):
        scheduler.step()
        for x, y in loader:
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()


@buggy("scheduler_before_optimizer")
def exponential_before_training() -> None:
    model, loader = mlp(), dataloader()
    optimizer = torch.optim.Adam(model.parameters())
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=0.9)
    for epoch in range(2):
        scheduler.step()
        train_epoch(model, loader, optimizer)


@buggy("loss_tensor_accumulated")
def running_loss_tensor() -> None:
    model, loader = mlp(), data()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    running_loss = 0.0
    for x, y in loader:
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        running_loss += loss
    epoch_loss = running_loss / len(loader)
    assert epoch_loss.requires_grad


@buggy("loss_tensor_accumulated")
def losses_appended_to_a_list() -> None:
    model, loader = mlp(), dataloader()
    optimizer = torch.optim.Adam(model.parameters())
    history = []
    for x, y in loader:
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        history.append(loss)


@buggy("softmax_before_cross_entropy")
def softmax_in_the_loop() -> None:
    model, loader = mlp(), data()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    criterion = nn.CrossEntropyLoss()
    for x, y in loader:
        optimizer.zero_grad()
        probs = torch.softmax(model(x), dim=1)
        criterion(probs, y).backward()
        optimizer.step()


@buggy("softmax_before_cross_entropy")
def softmax_layer_in_the_model() -> None:
    model = nn.Sequential(mlp(), nn.Softmax(dim=1))
    loader = dataloader()
    optimizer = torch.optim.Adam(model.parameters())
    criterion = nn.CrossEntropyLoss()
    for x, y in loader:
        optimizer.zero_grad()
        criterion(model(x), y).backward()
        optimizer.step()


class TwoHeads(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(10, 16)
        self.head = nn.Linear(16, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.body(x)))


@buggy("params_not_in_optimizer")
def optimizer_of_the_head_only() -> None:
    model, loader = TwoHeads(), data()
    optimizer = torch.optim.SGD(model.head.parameters(), lr=0.1)
    for x, y in loader:
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()


@buggy("params_not_in_optimizer")
def layer_added_after_the_optimizer() -> None:
    model = mlp()
    optimizer = torch.optim.Adam(model.parameters())
    model.append(nn.Linear(2, 2))
    for x, y in dataloader():
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()


@buggy("non_finite_loss")
def learning_rate_far_too_high() -> None:
    torch.manual_seed(0)
    model, loader = nn.Linear(10, 1), data()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e3)
    for epoch in range(5):
        for x, y in loader:
            optimizer.zero_grad()
            loss = ((model(x * 100).squeeze(1) - y.float()) ** 2).mean()
            loss.backward()
            optimizer.step()


@buggy("non_finite_loss")
def log_of_zero() -> None:
    model, loader = mlp(), dataloader()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for x, y in loader:
        optimizer.zero_grad()
        p = torch.sigmoid(model(x)[:, 1]).clamp(0, 1)
        target = y.float()
        loss = -(target * torch.log(p * 0) + (1 - target) * torch.log(1 - p)).mean()
        loss.backward()
        optimizer.step()


# ---------------------------------------------------------------------------- correct loops

@correct
def plain_loop_zero_grad_first() -> None:
    model, loader = mlp(), data()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for epoch in range(2):
        train_epoch(model, loader, optimizer)


@correct
def zero_grad_after_step() -> None:
    model, loader = mlp(), dataloader()
    optimizer = torch.optim.Adam(model.parameters())
    for x, y in loader:
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()


@correct
def zero_grad_keeping_zeros() -> None:
    model, loader = mlp(), data()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for x, y in loader:
        optimizer.zero_grad(set_to_none=False)
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()


@correct
def model_zero_grad_set_to_none() -> None:
    model, loader = mlp(), data()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for x, y in loader:
        model.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()


@correct
def manual_grad_reset() -> None:
    model, loader = mlp(), data()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for x, y in loader:
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
        for p in model.parameters():
            p.grad = None


@correct
def gradient_accumulation() -> None:
    model, loader = mlp(), data(batch_size=4)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    accumulate = 3
    optimizer.zero_grad()
    for i, (x, y) in enumerate(loader):
        loss = nn.functional.cross_entropy(model(x), y) / accumulate
        loss.backward()
        if (i + 1) % accumulate == 0:
            optimizer.step()
            optimizer.zero_grad()


@correct
def micro_batches_per_step() -> None:
    model, loader = mlp(), dataloader(batch_size=16)
    optimizer = torch.optim.Adam(model.parameters())
    for x, y in loader:
        optimizer.zero_grad()
        for xs, ys in zip(x.chunk(4), y.chunk(4)):
            (nn.functional.cross_entropy(model(xs), ys) / 4).backward()
        optimizer.step()


@correct
def lbfgs_closure() -> None:
    model, loader = mlp(), data(batch_size=24)
    optimizer = torch.optim.LBFGS(model.parameters(), lr=0.5, max_iter=4)
    for x, y in loader:
        def closure():
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            return loss
        optimizer.step(closure)


@correct
def sgd_with_closure_keyword() -> None:
    model, loader = mlp(), data()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for x, y in loader:
        def closure():
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            return loss
        optimizer.step(closure=closure)


@correct
def grad_scaler_with_clipping() -> None:
    model, loader = mlp(), data()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu")
    for x, y in loader:
        optimizer.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = nn.functional.cross_entropy(model(x).float(), y)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        scaler.step(optimizer)
        scaler.update()


@correct
def gan_two_optimizers() -> None:
    generator = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 10))
    discriminator = nn.Sequential(nn.Linear(10, 16), nn.LeakyReLU(0.2), nn.Linear(16, 1))
    opt_g = torch.optim.Adam(generator.parameters(), lr=2e-4)
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=2e-4)
    bce = nn.BCEWithLogitsLoss()
    for real, _ in data():
        z = torch.randn(len(real), 4)
        fake = generator(z)
        opt_d.zero_grad()
        d_loss = bce(discriminator(real), torch.ones(len(real), 1)) + \
            bce(discriminator(fake.detach()), torch.zeros(len(real), 1))
        d_loss.backward()
        opt_d.step()
        opt_g.zero_grad()
        g_loss = bce(discriminator(fake), torch.ones(len(real), 1))
        g_loss.backward()
        opt_g.step()


@correct
def frozen_backbone() -> None:
    model = TwoHeads()
    model.body.requires_grad_(False)
    optimizer = torch.optim.SGD(model.head.parameters(), lr=0.1)
    for epoch in range(2):
        for x, y in data():
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()


@correct
def frozen_batchnorm_backbone_in_eval() -> None:
    backbone = nn.Sequential(nn.Linear(10, 16), nn.BatchNorm1d(16), nn.ReLU()).eval()
    backbone.requires_grad_(False)
    head = nn.Linear(16, 2)
    optimizer = torch.optim.Adam(head.parameters())
    for x, y in dataloader():
        optimizer.zero_grad()
        nn.functional.cross_entropy(head(backbone(x)), y).backward()
        optimizer.step()


@correct
def helper_functions_train_and_evaluate() -> None:
    def train_step(model, x, y, loss_fn, optimizer):
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        return loss.item()

    def evaluate(model, loader, loss_fn):
        model.eval()
        total, n = 0.0, 0
        with torch.no_grad():
            for x, y in loader:
                total += loss_fn(model(x), y).item() * len(y)
                n += len(y)
        return total / n

    model, train, val = mlp(dropout=True), data(), data(seed=1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loss_fn = nn.CrossEntropyLoss()
    for epoch in range(3):
        model.train()
        running = sum(train_step(model, x, y, loss_fn, optimizer) for x, y in train)
        evaluate(model, val, loss_fn)
        assert math.isfinite(running)


@correct
def validation_each_epoch_inference_mode() -> None:
    model, train, val = mlp(batchnorm=True, dropout=True), dataloader(), dataloader()
    optimizer = torch.optim.Adam(model.parameters())
    history = []
    for epoch in range(3):
        train_epoch(model, train, optimizer)
        model.eval()
        with torch.inference_mode():
            hits = sum((model(x).argmax(1) == y).sum().item() for x, y in val)
        history.append(hits / len(val.dataset))


class Jitter(nn.Module):
    """A data augmentation written as a module (as torchvision's are): no parameters."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 0.1 * torch.randn_like(x)


class JitteredPoints(torch.utils.data.Dataset):
    """Points augmented as they are loaded: the module runs inside the loader's pass."""

    def __init__(self, n: int = 48) -> None:
        self.x, self.jitter = torch.randn(n, 10), Jitter()

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.jitter(self.x[i]), (self.x[i, 0] > 0).long()


@correct
def augmenting_loader_timed_alone() -> None:
    loader = torch.utils.data.DataLoader(JitteredPoints(), batch_size=8)
    for epoch in range(2):
        for x, y in loader:  # the loader alone, as when timing it: nothing is trained
            pass
    model = mlp()
    train_epoch(model, loader, torch.optim.SGD(model.parameters(), lr=0.1))


class LitClassifier(nn.Module):
    """A Lightning-style module: the trainer below calls its hooks."""

    def __init__(self) -> None:
        super().__init__()
        self.net = mlp(dropout=True)
        self.loss_fn = nn.CrossEntropyLoss()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = self.loss_fn(self(x), y)
        self.last_loss = loss.detach()
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        return self.loss_fn(self(x), y)

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self.parameters(), lr=1e-3)
        return optimizer, torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.9)


class MiniTrainer:
    def fit(self, module, train_loader, val_loader, epochs: int) -> None:
        optimizer, scheduler = module.configure_optimizers()
        for epoch in range(epochs):
            module.train()
            for i, batch in enumerate(train_loader):
                loss = module.training_step(batch, i)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            scheduler.step()
            module.eval()
            with torch.no_grad():
                for i, batch in enumerate(val_loader):
                    module.validation_step(batch, i)


@correct
def lightning_style_class() -> None:
    MiniTrainer().fit(LitClassifier(), data(), data(seed=1), epochs=3)


@correct
def step_sized_warmup_then_cosine() -> None:
    model, loader = mlp(), data(n=96)
    epochs = 3
    total = epochs * len(loader)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    warmup = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=0.1, total_iters=4)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total - 4)
    scheduler = torch.optim.lr_scheduler.SequentialLR(optimizer, [warmup, cosine],
                                                      milestones=[4])
    for epoch in range(epochs):
        for x, y in loader:
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
            scheduler.step()


@correct
def one_cycle_per_batch() -> None:
    model, loader = mlp(), dataloader(n=96)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.1,
                                                    total_steps=2 * len(loader))
    for epoch in range(2):
        for x, y in loader:
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
            scheduler.step()


@correct
def cosine_in_steps_per_batch() -> None:
    model, loader = mlp(), data(n=96)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=2 * len(loader))
    for epoch in range(2):
        for x, y in loader:
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
            scheduler.step()


@correct
def steplr_per_epoch() -> None:
    model, loader = mlp(), dataloader()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.1)
    for epoch in range(4):
        train_epoch(model, loader, optimizer)
        scheduler.step()


@correct
def plateau_scheduler_on_validation() -> None:
    model, train, val = mlp(), data(), data(seed=1)
    optimizer = torch.optim.Adam(model.parameters())
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, patience=0)
    for epoch in range(3):
        train_epoch(model, train, optimizer)
        model.eval()
        with torch.no_grad():
            val_loss = sum(nn.functional.cross_entropy(model(x), y).item() for x, y in val)
        scheduler.step(val_loss)


@correct
def running_loss_with_item() -> None:
    model, loader = mlp(), data()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    running, history = 0.0, []
    for x, y in loader:
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        running += loss.item() * len(y)
        history.append(loss.detach())


@correct
def log_softmax_with_nll() -> None:
    model, loader = nn.Sequential(mlp(), nn.LogSoftmax(dim=1)), dataloader()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    criterion = nn.NLLLoss()
    for x, y in loader:
        optimizer.zero_grad()
        criterion(model(x), y).backward()
        optimizer.step()


@correct
def soft_targets_with_cross_entropy() -> None:
    model, loader = mlp(), data()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    criterion = nn.CrossEntropyLoss(label_smoothing=0.1)
    for x, y in loader:
        optimizer.zero_grad()
        criterion(model(x), y).backward()
        optimizer.step()


@correct
def param_groups_with_two_learning_rates() -> None:
    model = TwoHeads()
    optimizer = torch.optim.SGD([{"params": model.body.parameters(), "lr": 0.01},
                                 {"params": model.head.parameters()}], lr=0.1)
    for x, y in dataloader():
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()


@correct
def two_optimizers_one_model() -> None:
    model = TwoHeads()
    opt_body = torch.optim.SGD(model.body.parameters(), lr=0.01)
    opt_head = torch.optim.Adam(model.head.parameters())
    for x, y in data():
        opt_body.zero_grad()
        opt_head.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt_body.step()
        opt_head.step()


@correct
def regression_with_mse() -> None:
    model = nn.Sequential(nn.Linear(10, 50), nn.ReLU(), nn.Linear(50, 1))
    x, y = torch.randn(64, 10), torch.randn(64, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    loss_fn = nn.MSELoss()
    for step in range(20):
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()


@correct
def manual_sgd_without_optimizer() -> None:
    w = torch.zeros(10, requires_grad=True)
    b = torch.zeros((), requires_grad=True)
    for x, y in data():
        loss = ((x @ w + b - y.float()) ** 2).mean()
        loss.backward()
        with torch.no_grad():
            for p in (w, b):
                p -= 0.1 * p.grad
                p.grad.zero_()


@correct
def train_accuracy_measured_after_step() -> None:
    model, loader = mlp(dropout=True), data()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    hits = 0
    model.train()
    for x, y in loader:
        optimizer.zero_grad()
        out = model(x)
        nn.functional.cross_entropy(out, y).backward()
        optimizer.step()
        hits += (out.argmax(1) == y).sum().item()


ALL = [(code, loop) for code, loops in BUGGY.items() for loop in loops] + \
    [("", loop) for loop in CORRECT]


def found_by(loop: Callable[[], None]) -> list[str]:
    torch.manual_seed(0)
    with doctor.watch(show=False) as report:
        loop()
    return sorted(set(report.codes))


@pytest.fixture(scope="module")
def table() -> dict[str, list[str]]:
    """Each loop of the catalogue and what the doctor found in it; printed as a table."""
    results = {loop.__name__: found_by(loop) for _, loop in ALL}
    codes = sorted(doctor.FINDINGS)
    print(f"\n{'loop':42} {'expected':28} found")
    for expected, loop in ALL:
        print(f"{loop.__name__:42} {expected or '-':28} {', '.join(results[loop.__name__]) or '-'}")
    hits = sum(results[loop.__name__] == [code] for code, loop in ALL if code)
    silent = sum(not results[loop.__name__] for loop in CORRECT)
    print(f"buggy loops named exactly: {hits}/{len(ALL) - len(CORRECT)}; "
          f"correct loops silent: {silent}/{len(CORRECT)}; findings covered: "
          f"{len(set(BUGGY) & set(codes))}/{len(codes)}")
    return results


def test_catalogue_covers_every_finding() -> None:
    assert set(BUGGY) == set(doctor.FINDINGS)
    assert all(len(loops) >= 2 for loops in BUGGY.values())
    assert len(CORRECT) >= 25


@pytest.mark.parametrize("code,loop", [(c, l) for c, l in ALL if c],
                         ids=[l.__name__ for c, l in ALL if c])
def test_buggy_loop_is_named(table: dict[str, list[str]], code: str, loop) -> None:
    assert table[loop.__name__] == [code]


@pytest.mark.parametrize("loop", CORRECT, ids=[l.__name__ for l in CORRECT])
def test_correct_loop_is_silent(table: dict[str, list[str]], loop) -> None:
    assert table[loop.__name__] == []


def test_report_is_shown_like_a_graders() -> None:
    with doctor.watch(show=False) as report:
        forgot_zero_grad()
    bundle = report._repr_mimebundle_()
    assert bundle[REPORT_MIME]["codes"] == ["no_zero_grad"]
    assert "zero_grad()" in bundle["text/plain"] and "<code>" in bundle["text/html"]
    assert "no_zero_grad" in str(doctor.findings())


def test_each_finding_once_per_loop() -> None:
    with doctor.watch(show=False) as report:
        forgot_zero_grad()
    assert report.codes == ["no_zero_grad"]


def test_off_when_autograding_and_leaves_no_hooks(monkeypatch: pytest.MonkeyPatch) -> None:
    backward = torch.Tensor.backward
    with doctor.watch(show=False):
        assert torch.Tensor.backward is not backward
    assert torch.Tensor.backward is backward
    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")
    with doctor.watch(show=False) as report:
        assert torch.Tensor.backward is backward
        forgot_zero_grad()
    assert report.codes == []


def test_a_quiet_cell_runs_while_autograding(monkeypatch: pytest.MonkeyPatch) -> None:
    from IPython.core.interactiveshell import InteractiveShell
    shell = InteractiveShell.instance()
    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")
    backward = torch.Tensor.backward
    try:
        shell.run_cell("%load_ext course_utils.doctor", store_history=False)
        result = shell.run_cell("%doctor quiet  # on purpose", store_history=False)
    finally:
        shell.run_cell("%unload_ext course_utils.doctor", store_history=False)
    assert result.success and torch.Tensor.backward is backward


def test_looks_away_while_a_grader_runs() -> None:
    with doctor.watch(show=False) as report:
        graded = grade("train_one_epoch", train_one_epoch_no_zero_grad)
    assert "no_zero_grad" in graded.codes and report.codes == []


def test_script_prints_its_findings_once(tmp_path) -> None:
    script = tmp_path / "train.py"
    script.write_text(
        "import sys, torch\nfrom torch import nn\nmodel = nn.Linear(3, 2)\n"
        "opt = torch.optim.SGD(model.parameters(), lr=0.1)\n"
        "for _ in range(int(sys.argv[1])):\n"
        "    nn.functional.cross_entropy(model(torch.ones(4, 3)), torch.zeros(4).long())"
        ".backward()\n    opt.step()\n")
    run = subprocess.run([sys.executable, "-m", "course_utils.doctor", str(script), "5"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.count("[no_zero_grad]") == 1 and run.stderr == ""


def test_extension_in_an_ipython_shell(capsys: pytest.CaptureFixture) -> None:
    from IPython.core.interactiveshell import InteractiveShell
    shell = InteractiveShell.instance()
    buggy_cell = ("import torch\nfrom torch import nn\nm = nn.Linear(3, 2)\n"
                  "o = torch.optim.SGD(m.parameters(), lr=0.1)\nfor _ in range(3):\n"
                  "    nn.functional.cross_entropy(m(torch.ones(4, 3)), torch.zeros(4).long())"
                  ".backward()\n    o.step()\n")
    backward = torch.Tensor.backward
    try:
        shell.run_cell("%load_ext course_utils.doctor", store_history=False)
        shell.run_cell(buggy_cell, store_history=False)
        shell.run_cell(buggy_cell, store_history=False)  # a new cell run: named again
        shell.run_cell("%doctor quiet  # on purpose\n" + buggy_cell, store_history=False)
    finally:
        shell.run_cell("%unload_ext course_utils.doctor", store_history=False)
    out = capsys.readouterr()
    assert out.out.count("[no_zero_grad]") == 2 and out.err == ""
    assert torch.Tensor.backward is backward
