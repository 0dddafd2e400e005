"""A simulated class: submissions of typical students, built from the released notebooks.

Each student's notebook starts from the released version in ``notebooks/`` and fills its answer
cells the way that student would: the solution code, a typical bug, nothing, or something
broken. The end-to-end tests and ``benchmarks/bench_autograde.py`` grade these with nbgrader
and with the course grader.

Example:
    >>> write_submission(course, "bea", "06_epoch_loss")   # doctest: +SKIP
    PosixPath('.../submitted/bea/06_epoch_loss/06_epoch_loss.ipynb')
"""

from __future__ import annotations

import ast
import html
import re
import runpy
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import nbformat
from nbformat import NotebookNode
from nbgrader.api import Gradebook
from nbgrader.utils import is_solution
from traitlets.config import Config

from course_utils.protocol import exercise_of, is_test_cell
from course_utils.autograde.environment import nbgrader_environment

ROOT = Path(__file__).resolve().parents[1]
# The course's own nbgrader configuration: the lessons in order and the stub students get.
NBGRADER_CONFIG = runpy.run_path(str(ROOT / "nbgrader_config.py"),
                                 init_globals={"get_config": Config})
LESSONS: list[str] = NBGRADER_CONFIG["LESSONS"]

SOLUTION_MARKERS = ("### BEGIN SOLUTION", "### END SOLUTION")


@dataclass(frozen=True)
class Bug:
    """A typical mistake in one exercise: the student's code and the diagnosis it should get."""

    exercise: str
    code: str
    source: str
    # Other codes the same mistake earns, where it has a second real symptom.
    also: tuple[str, ...] = ()


# Two students with different typical mistakes; the same mistake in `train_one_epoch`, so the
# mistakes report has a misconception shared by two students.
BUGS: dict[str, dict[str, Bug]] = {
    "bea": {bug.exercise: bug for bug in [
        Bug("SimpleNN", "wrong_output_shape", '''
class SimpleNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.hidden = nn.Linear(10, 50)
        self.out = nn.Linear(50, 1)

    def forward(self, x):
        return self.out(torch.relu(self.hidden(x))).squeeze(1)
'''),
        Bug("MNISTMLP", "softmax_in_model", '''
class MNISTMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 64),
                                    nn.ReLU(), nn.Linear(64, 10))

    def forward(self, x):
        return torch.softmax(self.layers(x.flatten(1)), dim=1)
'''),
        Bug("mse_loss", "wrong_reduction", '''
def mse_loss(pred, target):
    return ((pred - target) ** 2).sum()
'''),
        Bug("cross_entropy", "softmax_before_cross_entropy", '''
def cross_entropy(logits, targets):
    probabilities = torch.softmax(logits, dim=1)
    largest = probabilities.max(dim=1, keepdim=True).values
    log_sum_exp = largest.squeeze(1) + (probabilities - largest).exp().sum(dim=1).log()
    return (log_sum_exp - probabilities[torch.arange(len(targets)), targets]).mean()
'''),
        Bug("linear_mse_grads", "wrong_gradient", '''
def linear_mse_grads(w, b, x, y):
    residual = x @ w + b - y
    return x.T @ residual / len(y), residual.mean()
'''),
        Bug("sgd_step", "gradient_ascent", '''
def sgd_step(params, lr):
    with torch.no_grad():
        for p in params:
            if p.grad is not None:
                p += lr * p.grad
'''),
        Bug("train_step", "no_zero_grad", '''
def train_step(model, inputs, targets, loss_fn, optimizer):
    loss = loss_fn(model(inputs), targets)
    loss.backward()
    optimizer.step()
    return loss.item()
'''),
        Bug("accumulation_step", "no_loss_scaling", '''
def accumulation_step(model, micro_batches, loss_fn, optimizer):
    optimizer.zero_grad()
    total = 0.0
    for inputs, targets in micro_batches:
        loss = loss_fn(model(inputs), targets)
        loss.backward()
        total += loss.item()
    optimizer.step()
    return total / len(micro_batches)
'''),
        Bug("train_one_epoch", "returns_last_batch_loss", '''
def train_one_epoch(model, loader, loss_fn, optimizer, device="cpu"):
    model.train()
    for inputs, targets in loader:
        inputs, targets = inputs.to(device), targets.to(device)
        optimizer.zero_grad()
        loss = loss_fn(model(inputs), targets)
        loss.backward()
        optimizer.step()
    return loss.item()
'''),
        Bug("evaluate", "accuracy_percent", '''
def evaluate(model, loader, loss_fn, device="cpu"):
    model.eval()
    total_loss, correct, seen = 0.0, 0, 0
    with torch.no_grad():
        for inputs, targets in loader:
            inputs, targets = inputs.to(device), targets.to(device)
            logits = model(inputs)
            total_loss += loss_fn(logits, targets).item() * len(targets)
            correct += (logits.argmax(dim=1) == targets).sum().item()
            seen += len(targets)
    return total_loss / seen, 100 * correct / seen
'''),
        Bug("checkpoint", "optimizer_state_not_saved", '''
def save_checkpoint(path, model, optimizer, epoch):
    torch.save({"model": model.state_dict(), "epoch": epoch}, path)


def load_checkpoint(path, model, optimizer):
    state = torch.load(path)
    model.load_state_dict(state["model"])
    return state["epoch"] + 1
'''),
        Bug("train_with_schedule", "scheduler_before_optimizer", '''
def train_with_schedule(model, loader, loss_fn, optimizer, scheduler, epochs):
    model.train()
    losses = []
    for epoch in range(epochs):
        scheduler.step()
        total_loss, seen = 0.0, 0
        for inputs, targets in loader:
            optimizer.zero_grad()
            loss = loss_fn(model(inputs), targets)
            loss.backward()
            optimizer.step()
            total_loss += loss.item() * len(inputs)
            seen += len(inputs)
        losses.append(total_loss / seen)
    return losses
'''),
        Bug("clipped_step", "clipped_after_step", '''
def clipped_step(model, inputs, targets, loss_fn, optimizer, max_norm, scaler=None):
    optimizer.zero_grad()
    loss = loss_fn(model(inputs), targets)
    if scaler is None:
        loss.backward()
        optimizer.step()
    else:
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        scaler.step(optimizer)
        scaler.update()
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    return loss.item()
'''),
        Bug("conv_transpose2d", "weight_layout_swapped", '''
def conv_transpose2d(x, weight, bias=None, stride=1, padding=0):
    n, _, height, width = x.shape
    c_out, _, kernel_h, kernel_w = weight.shape
    full = torch.zeros(n, c_out, (height - 1) * stride + kernel_h,
                       (width - 1) * stride + kernel_w)
    for i in range(height):
        for j in range(width):
            full[:, :, i * stride:i * stride + kernel_h, j * stride:j * stride + kernel_w] += \\
                torch.einsum("nc,ockl->nokl", x[:, :, i, j], weight)
    out = full[:, :, padding:full.shape[2] - padding, padding:full.shape[3] - padding]
    return out if bias is None else out + bias.view(1, -1, 1, 1)
'''),
        Bug("conv2d", "kernel_flipped", '''
def conv2d(x, weight, bias=None, stride=1, padding=0):
    weight = weight.flip(-2, -1)
    windows = F.unfold(x, weight.shape[2:], padding=padding, stride=stride)
    out = weight.flatten(1) @ windows
    if bias is not None:
        out = out + bias[:, None]
    height = (x.shape[2] + 2 * padding - weight.shape[2]) // stride + 1
    return out.view(x.shape[0], weight.shape[0], height, -1)
'''),
        Bug("MNISTCNN", "wrong_output_shape", '''
class MNISTCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.classifier = nn.Linear(32 * 7 * 7, 10)

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1)).squeeze()
'''),
        Bug("AugmentedDataset", "transform_at_init", '''
class AugmentedDataset(Dataset):
    def __init__(self, images, labels, transform=None):
        if transform is not None:
            images = torch.stack([transform(image) for image in images])
        self.images, self.labels = images, labels

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        return self.images[index], int(self.labels[index])
'''),
        Bug("pad_collate", "not_batch_first", '''
def pad_collate(batch):
    sequences, labels = zip(*batch)
    return (pad_sequence(list(sequences)), torch.tensor([len(s) for s in sequences]),
            torch.tensor(labels))
'''),
        Bug("make_loader", "workers_share_seed", '''
def make_loader(dataset, batch_size, seed, num_workers=2):
    def same_seed_everywhere(worker_id):
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)

    return DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=num_workers,
                      worker_init_fn=same_seed_everywhere,
                      generator=torch.Generator().manual_seed(seed))
'''),
        Bug("lr_sweep", "state_not_restored", '''
def lr_sweep(model, loader, loss_fn, make_optimizer, lrs, steps):
    start = model.state_dict()
    means = []
    for lr in lrs:
        model.load_state_dict(start)
        model.train()
        opt = make_optimizer(model.parameters(), lr)
        running = 0.0
        for step, (x, y) in enumerate(itertools.cycle(loader)):
            if step == steps:
                break
            opt.zero_grad()
            batch_loss = loss_fn(model(x), y)
            batch_loss.backward()
            opt.step()
            running += batch_loss.item()
        means.append(running / steps)
    model.load_state_dict(start)
    return means
''', also=("model_left_trained",)),  # state_dict() holds the live tensors: nothing is restored
    ]},
    "carl": {bug.exercise: bug for bug in [
        Bug("SimpleNN", "wrong_architecture", '''
class SimpleNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(10, 50), nn.Linear(50, 1))

    def forward(self, x):
        return self.layers(x)
'''),
        Bug("mse_loss", "detached_result", '''
def mse_loss(pred, target):
    return torch.tensor(((pred - target) ** 2).mean().item())
'''),
        Bug("cross_entropy", "numerically_unstable", '''
def cross_entropy(logits, targets):
    probabilities = logits.exp() / logits.exp().sum(dim=1, keepdim=True)
    return -probabilities[torch.arange(len(targets)), targets].log().mean()
'''),
        Bug("sgd_step", "no_in_place_update", '''
def sgd_step(params, lr):
    for p in params:
        if p.grad is not None:
            p = p - lr * p.grad
'''),
        Bug("train_step", "zero_grad_after_backward", '''
def train_step(model, inputs, targets, loss_fn, optimizer):
    loss = loss_fn(model(inputs), targets)
    loss.backward()
    optimizer.zero_grad()
    optimizer.step()
    return loss.item()
'''),
        Bug("accumulation_step", "step_each_micro_batch", '''
def accumulation_step(model, micro_batches, loss_fn, optimizer):
    optimizer.zero_grad()
    total = 0.0
    for inputs, targets in micro_batches:
        loss = loss_fn(model(inputs), targets) / len(micro_batches)
        loss.backward()
        optimizer.step()
        total += loss.item()
    return total
'''),
        Bug("train_one_epoch", "returns_last_batch_loss", '''
def train_one_epoch(model, loader, loss_fn, optimizer, device="cpu"):
    model.train()
    for inputs, targets in loader:
        optimizer.zero_grad()
        loss = loss_fn(model(inputs.to(device)), targets.to(device))
        loss.backward()
        optimizer.step()
    return loss.item()
'''),
        Bug("evaluate", "no_eval_mode", '''
def evaluate(model, loader, loss_fn, device="cpu"):
    total_loss, correct, seen = 0.0, 0, 0
    with torch.no_grad():
        for inputs, targets in loader:
            logits = model(inputs.to(device))
            total_loss += loss_fn(logits, targets.to(device)).item() * len(targets)
            correct += (logits.argmax(dim=1) == targets.to(device)).sum().item()
            seen += len(targets)
    return total_loss / seen, correct / seen
'''),
        Bug("checkpoint", "epoch_not_restored", '''
def save_checkpoint(path, model, optimizer, epoch):
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "epoch": epoch}, path)


def load_checkpoint(path, model, optimizer):
    state = torch.load(path)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    return state["epoch"]
'''),
        Bug("train_with_schedule", "scheduler_per_batch", '''
def train_with_schedule(model, loader, loss_fn, optimizer, scheduler, epochs):
    model.train()
    losses = []
    for epoch in range(epochs):
        total_loss, seen = 0.0, 0
        for inputs, targets in loader:
            optimizer.zero_grad()
            loss = loss_fn(model(inputs), targets)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total_loss += loss.item() * len(inputs)
            seen += len(inputs)
        losses.append(total_loss / seen)
    return losses
'''),
        Bug("clipped_step", "step_without_scaler", '''
def clipped_step(model, inputs, targets, loss_fn, optimizer, max_norm, scaler=None):
    optimizer.zero_grad()
    loss = loss_fn(model(inputs), targets)
    if scaler is None:
        loss.backward()
    else:
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    optimizer.step()
    if scaler is not None:
        scaler.update()
    return loss.item()
'''),
        Bug("conv_transpose2d", "padding_not_cropped", '''
def conv_transpose2d(x, weight, bias=None, stride=1, padding=0):
    n, _, height, width = x.shape
    _, c_out, kernel_h, kernel_w = weight.shape
    out = torch.zeros(n, c_out, (height - 1) * stride + kernel_h,
                      (width - 1) * stride + kernel_w)
    for i in range(height):
        for j in range(width):
            out[:, :, i * stride:i * stride + kernel_h, j * stride:j * stride + kernel_w] += \\
                torch.einsum("nc,cokl->nokl", x[:, :, i, j], weight)
    return out if bias is None else out + bias.view(1, -1, 1, 1)
'''),
        Bug("conv2d", "library_conv_used", '''
def conv2d(x, weight, bias=None, stride=1, padding=0):
    return torch.nn.functional.conv2d(x, weight, bias, stride=stride, padding=padding)
'''),
        Bug("MNISTCNN", "wrong_architecture", '''
class MNISTCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(32 * 7 * 7, 10))

    def forward(self, x):
        return self.layers(x)
'''),
        Bug("AugmentedDataset", "wrong_item_type", '''
class AugmentedDataset(Dataset):
    def __init__(self, images, labels, transform=None):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        image = self.images[index]
        if self.transform:
            image = self.transform(image)
        return {"image": image, "label": self.labels[index].item()}
'''),
        Bug("pad_collate", "sorted_without_labels", '''
def pad_collate(batch):
    sequences = sorted([sequence for sequence, _ in batch], key=len, reverse=True)
    lengths = torch.tensor([len(sequence) for sequence in sequences])
    labels = torch.tensor([label for _, label in batch])
    return pad_sequence(sequences, batch_first=True), lengths, labels
'''),
        Bug("make_loader", "global_seed_only", '''
def make_loader(dataset, batch_size, seed, num_workers=2):
    return DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=num_workers,
                      worker_init_fn=seed_worker)
''', also=("seed_ignored",)),  # the seed changes nothing: one order for all seeds
        Bug("lr_sweep", "optimizer_reused", '''
def lr_sweep(model, loader, loss_fn, make_optimizer, lrs, steps):
    initial = copy.deepcopy(model.state_dict())
    optimizer = make_optimizer(model.parameters(), lrs[0])
    results = []
    for lr in lrs:
        model.load_state_dict(initial)
        for group in optimizer.param_groups:
            group["lr"] = lr
        model.train()
        losses = []
        for inputs, targets in itertools.islice(itertools.cycle(loader), steps):
            optimizer.zero_grad()
            loss = loss_fn(model(inputs), targets)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        results.append(sum(losses) / steps)
    model.load_state_dict(initial)
    return results
'''),
    ]},
}

# An endless loop inside a function: the graders stop it after their time limit.
ENDLESS_TRAIN_ONE_EPOCH = Bug("train_one_epoch", "timeout", '''
def train_one_epoch(model, loader, loss_fn, optimizer, device="cpu"):
    model.train()
    batches = iter(loader)
    inputs, targets = next(batches)
    total, seen = 0.0, 0
    while seen < len(loader.dataset):
        optimizer.zero_grad()
        loss = loss_fn(model(inputs), targets)
        loss.backward()
        optimizer.step()
        total += loss.item() * len(inputs)
    return total / seen
''')

# An endless loop at the top level of an answer cell: only nbgrader's `Execute.timeout` stops it.
ENDLESS_TOP_LEVEL_LOOP = '''

tries = 0
while tries < 3:
    result = None
'''


def strip_solution_markers(source: str) -> str:
    """The instructor's answer as a student would type it: the solution without its markers."""
    return "\n".join(line for line in source.splitlines()
                     if line.strip() not in SOLUTION_MARKERS)


def nbgrader_meta(cell: NotebookNode) -> dict:
    """The cell's nbgrader metadata (empty for ordinary cells)."""
    return cell.get("metadata", {}).get("nbgrader", {})


def is_answer(cell: NotebookNode) -> bool:
    """True for a cell students write their code in."""
    return cell.cell_type == "code" and is_solution(cell)


def solution_answers(course: Path, lesson: str) -> dict[str, str]:
    """The solution code of each answer cell of a lesson, by grade id."""
    source = nbformat.read(course / "solutions" / lesson / f"{lesson}.ipynb", as_version=4)
    return {nbgrader_meta(cell)["grade_id"]: strip_solution_markers(cell.source)
            for cell in source.cells if is_answer(cell)}


def released(course: Path, lesson: str) -> NotebookNode:
    """The student version of a lesson, as ``nbgrader generate_assignment`` wrote it."""
    return nbformat.read(course / "notebooks" / lesson / f"{lesson}.ipynb", as_version=4)


def defined_names(source: str) -> list[str]:
    """Names of the top-level functions and classes that ``source`` defines."""
    return [node.name for node in ast.parse(source).body
            if isinstance(node, (ast.FunctionDef, ast.ClassDef))]


def replace_definitions(source: str, replacement: str) -> str:
    """``source`` with each top-level definition that ``replacement`` also defines swapped for it.

    Example:
        >>> replace_definitions("import os\\ndef f(x):\\n    return x", "def f(x):\\n    return 0")
        'import os\\ndef f(x):\\n    return 0'
    """
    new = {node.name: node for node in ast.parse(replacement).body
           if isinstance(node, (ast.FunctionDef, ast.ClassDef))}
    lines = source.splitlines()
    replaced = replacement.splitlines()
    # From the bottom up, so earlier line numbers stay valid.
    for node in reversed(ast.parse(source).body):
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name in new:
            start = min([node.lineno] + [d.lineno for d in node.decorator_list]) - 1
            fresh = new[node.name]
            body = replaced[min([fresh.lineno] + [d.lineno for d in fresh.decorator_list]) - 1:
                            fresh.end_lineno]
            lines[start:node.end_lineno] = body
    return "\n".join(lines)


def fill_answers(notebook: NotebookNode, answers: dict[str, str]) -> NotebookNode:
    """Puts ``answers`` (by grade id) into the notebook's answer cells; returns the notebook."""
    for cell in notebook.cells:
        if is_answer(cell) and nbgrader_meta(cell)["grade_id"] in answers:
            cell.source = answers[nbgrader_meta(cell)["grade_id"]]
    return notebook


def with_bugs(answers: dict[str, str], bugs: list[Bug]) -> dict[str, str]:
    """The answers with each bug's definitions put in place of the correct ones."""
    answers = dict(answers)
    for bug in bugs:
        names = set(defined_names(bug.source))
        for grade_id, source in answers.items():
            if names & set(defined_names(source)):
                answers[grade_id] = replace_definitions(source, bug.source)
    return answers


def first_test(notebook: NotebookNode) -> NotebookNode:
    """The notebook's first autograder test cell."""
    return next(cell for cell in notebook.cells if is_test_cell(cell))


def first_answer_id(notebook: NotebookNode) -> str:
    """The grade id of the notebook's first answer cell."""
    return next(nbgrader_meta(cell)["grade_id"] for cell in notebook.cells if is_answer(cell))


# --- the students -------------------------------------------------------------------------
# Each takes the course folder and a lesson and returns the text of the submitted notebook.

def perfect(course: Path, lesson: str) -> str:
    """Writes the solution code into every answer cell."""
    return nbformat.writes(fill_answers(released(course, lesson), solution_answers(course, lesson)))


def buggy(student: str) -> Callable[[Path, str], str]:
    """A student who makes the typical mistakes listed under their name in ``BUGS``."""

    def build(course: Path, lesson: str) -> str:
        answers = with_bugs(solution_answers(course, lesson), list(BUGS[student].values()))
        return nbformat.writes(fill_answers(released(course, lesson), answers))

    return build


def untouched(course: Path, lesson: str) -> str:
    """Hands in the released notebook as it came."""
    return nbformat.writes(released(course, lesson))


def tampered(course: Path, lesson: str) -> str:
    """Gets the first exercise wrong (bea's mistake) and edits its test cell to ``assert True``."""
    notebook = released(course, lesson)
    test = first_test(notebook)
    bug = BUGS["bea"][exercise_of(test.source)]
    fill_answers(notebook, with_bugs(solution_answers(course, lesson), [bug]))
    test.source = "assert True"
    return nbformat.writes(notebook)


def deleted_test(course: Path, lesson: str) -> str:
    """Solves everything but deletes the first test cell."""
    notebook = fill_answers(released(course, lesson), solution_answers(course, lesson))
    test = first_test(notebook)
    notebook.cells = [cell for cell in notebook.cells if cell is not test]
    return nbformat.writes(notebook)


def syntax_error(course: Path, lesson: str) -> str:
    """Solves everything, but the first answer's first ``def``/``class`` line lacks its colon."""
    notebook = released(course, lesson)
    answers = solution_answers(course, lesson)
    first = first_answer_id(notebook)
    answers[first] = re.sub(r"(?m)^((?:def|class) .*):\s*$", r"\1", answers[first], count=1)
    return nbformat.writes(fill_answers(notebook, answers))


def endless_loops(course: Path, lesson: str) -> str:
    """Solves everything, but loops forever: inside ``train_one_epoch`` where the lesson asks
    for it, else at the top level of the first answer cell, after the code."""
    notebook = released(course, lesson)
    answers = solution_answers(course, lesson)
    looping = with_bugs(answers, [ENDLESS_TRAIN_ONE_EPOCH])
    if looping == answers:
        looping[first_answer_id(notebook)] += ENDLESS_TOP_LEVEL_LOOP
    return nbformat.writes(fill_answers(notebook, looping))


def invalid_json(course: Path, lesson: str) -> str:
    """A notebook file cut off halfway, as after a failed upload."""
    text = perfect(course, lesson)
    return text[: len(text) // 2]


STUDENTS: dict[str, Callable[[Path, str], str]] = {
    "perfect": perfect,
    "bea": buggy("bea"),
    "carl": buggy("carl"),
    "untouched": untouched,
    "tampered": tampered,
    "deleted_test": deleted_test,
    "syntax_error": syntax_error,
    "endless_loops": endless_loops,
    "invalid_json": invalid_json,
}


def write_submission(course: Path, student: str, lesson: str,
                     build: Callable[[Path, str], str] | None = None) -> Path:
    """Writes ``student``'s notebook to ``submitted/<student>/<lesson>/<lesson>.ipynb``."""
    path = course / "submitted" / student / lesson / f"{lesson}.ipynb"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text((build or STUDENTS[student])(course, lesson))
    return path


def make_course(path: Path) -> Path:
    """A course directory with this repository's instructor notebooks and nbgrader configuration."""
    shutil.copytree(ROOT / "solutions", path / "solutions",
                    ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    shutil.copy(ROOT / "nbgrader_config.py", path)
    return path


def released_like(graded: GradedClass, folder: Path, lessons: list[str],
                  students: list[str] | None = None) -> Path:
    """A course made in ``folder``, released as ``graded`` was (its student notebooks and its
    gradebook before grading), holding its submissions of ``lessons`` (by ``students``, or by
    everyone who handed them in), graded by no one yet."""
    course = make_course(folder)
    shutil.copytree(graded.path / "notebooks", course / "notebooks")
    shutil.copy(graded.released_gradebook, course / "gradebook.db")
    for lesson in lessons:
        for submission in sorted((graded.path / "submitted").glob(f"*/{lesson}")):
            if students is None or submission.parent.name in students:
                shutil.copytree(submission, course / "submitted" / submission.parent.name / lesson)
    return course


def run_nbgrader(course: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Runs this environment's nbgrader in the course directory, as an instructor would."""
    return subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=course,
                          env=nbgrader_environment(), capture_output=True, text=True,
                          timeout=3600)


def run_course_grader(course: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Runs the course grader (``course-grade``) in the course directory with two processes."""
    return subprocess.run([sys.executable, "-m", "course_utils.autograde.parallel.cli",
                           "--workers", "2", *args], cwd=course, env=nbgrader_environment(),
                          capture_output=True, text=True, timeout=3600)


# The configuration's lessons whose instructor notebook exists.
GRADED_LESSONS = [lesson for lesson in LESSONS
           if (ROOT / "solutions" / lesson / f"{lesson}.ipynb").is_file()]
MNIST_LESSONS = {"08_mnist"}
EDGE_LESSONS = [lesson for lesson in ("02_loss", "06_epoch_loss") if lesson in GRADED_LESSONS]
EDGE_STUDENTS = ["untouched", "tampered", "deleted_test", "syntax_error", "endless_loops",
                 "invalid_json"]
# nbgrader_config.py allows 180 s per cell, which 08_mnist's MNIST cells need. An endless loop
# at the top level of an answer cell runs until that limit. The edge lessons' longest honest
# cell grades `train_one_epoch` twice with the graders' 10 s limit each (the endless-loop
# student), so 40 s is safe there and saves 140 s of waiting.
EDGE_EXECUTE_TIMEOUT = 40
# The other lessons are graded by the course grader, which gives nbgrader's scores (compared
# on the edge lessons, where every kind of notebook is) in a fraction of its time.
COURSE_GRADER_LESSONS = [lesson for lesson in GRADED_LESSONS if lesson not in EDGE_LESSONS]


def lessons_of(student: str) -> list[str]:
    """The lessons ``student`` hands in (the untouched release goes in for every lesson)."""
    if student in EDGE_STUDENTS and student != "untouched":
        return EDGE_LESSONS
    if student in BUGS:
        return [lesson for lesson in GRADED_LESSONS if lesson not in MNIST_LESSONS]
    return GRADED_LESSONS


STUDENT_IDS = ["perfect", *BUGS, *EDGE_STUDENTS]


@dataclass
class GradedClass:
    """The temporary course directory after the whole workflow, and what each command said."""

    path: Path
    released_gradebook: Path  # the gradebook after release, before any grading
    # Each lesson's grading run: nbgrader's for an edge lesson, the course grader's for the rest.
    autograde: dict[str, subprocess.CompletedProcess[str]]
    feedback: subprocess.CompletedProcess[str]
    export: subprocess.CompletedProcess[str]

    def autograded(self, student: str, lesson: str) -> nbformat.NotebookNode:
        return nbformat.read(self.path / "autograded" / student / lesson / f"{lesson}.ipynb",
                             as_version=4)

    def feedback_text(self, student: str, lesson: str) -> str:
        page = (self.path / "feedback" / student / lesson / f"{lesson}.html").read_text()
        return html.unescape(re.sub(r"<[^>]+>", "", page))


def grade_class(folder: Path) -> GradedClass:
    """The instructor's whole workflow on the simulated class, in a course made in ``folder``:
    release, autograde (``nbgrader autograde`` for the edge lessons, the course grader for the
    others), feedback and export."""
    course = make_course(folder)
    release = run_nbgrader(course, "generate_assignment", "*")  # every lesson, one process
    if release.returncode != 0:
        raise RuntimeError(f"nbgrader could not release the lessons:\n{release.stderr[-4000:]}")
    released_gradebook = course.parent / "released-gradebook.db"
    shutil.copy(course / "gradebook.db", released_gradebook)

    for student in STUDENT_IDS:
        for lesson in lessons_of(student):
            write_submission(course, student, lesson)
    autograde = {lesson: run_nbgrader(course, "autograde", lesson,
                                      f"--Execute.timeout={EDGE_EXECUTE_TIMEOUT}")
                 for lesson in EDGE_LESSONS}
    autograde.update(dict.fromkeys(COURSE_GRADER_LESSONS,
                                   run_course_grader(course, *COURSE_GRADER_LESSONS)))
    return GradedClass(course, released_gradebook, autograde,
                       feedback=run_nbgrader(course, "generate_feedback", "*"),
                       export=run_nbgrader(course, "export", "--to", "grades.csv"))


@dataclass
class CellGrade:
    """What the gradebook holds for one test cell of one submission."""

    auto_score: float | None
    score: float
    max_score: float
    needs_manual_grade: bool


def gradebook_cells(db: Path) -> dict[tuple[str, str, str], CellGrade]:
    """Every graded cell in the gradebook, by (student, lesson, cell id)."""
    cells = {}
    with Gradebook(f"sqlite:///{db}") as gradebook:
        for lesson in gradebook.assignments:
            for submission in gradebook.assignment_submissions(lesson.name):
                for notebook in submission.notebooks:
                    for g in notebook.grades:
                        cells[submission.student_id, lesson.name, g.name] = CellGrade(
                            g.auto_score, g.score, g.max_score, g.needs_manual_grade)
    return cells
