"""Cells that train send as many output messages on a slow machine as on a fast one.

nbval sends a cell, waits for the kernel's reply, and only then reads the cell's output messages,
waiting at most 5 seconds for each. Until then they wait in ZMQ queues that hold 1000 messages
each (the high-water mark) and drop the rest, the final idle status among them, and nbval then
fails with "Timeout of 5 seconds exceeded waiting for output". A progress bar that redraws by
time (tqdm's default) sends more messages the slower the machine, so a training cell that passes
on a fast machine fails on a slow one. The lessons redraw by count instead; this guard runs the
lessons that train on MNIST on a deliberately slowed kernel, reading messages as nbval does.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from queue import Empty

import nbformat
import pytest
from nbval.kernel import RunningKernel

ROOT = Path(__file__).resolve().parent.parent
LESSONS_THAT_TRAIN = ["08_mnist", "10_convolution"]
# Far below the queues' 1000, and far above what a cell redrawing by count sends (under 100).
MESSAGE_BUDGET = 250
# nbval's wait for each message once the cell has replied.
OUTPUT_TIMEOUT = 5
CELL_TIMEOUT = 900


@contextmanager
def pinned(cpu: int) -> Iterator[None]:
    """Processes started inside inherit this process's affinity: one core only."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


@contextmanager
def throttled(pid: int, period: float = 0.02) -> Iterator[None]:
    """The process stopped for half of every ``period``: it runs as on a machine twice as slow,
    and leaves its core to other processes meanwhile."""
    done = threading.Event()

    def alternate() -> None:
        while not done.is_set():
            os.kill(pid, signal.SIGSTOP)
            time.sleep(period / 2)
            os.kill(pid, signal.SIGCONT)
            time.sleep(period / 2)

    switcher = threading.Thread(target=alternate, daemon=True)
    switcher.start()
    try:
        yield
    finally:
        done.set()
        switcher.join()
        os.kill(pid, signal.SIGCONT)


def progress_drawing(source: str) -> bool:
    """Whether a cell draws progress, the output that could grow with the machine's slowness.

    Example:
        >>> progress_drawing("with tqdm(total=3) as bar:"), progress_drawing("print(1)")
        (True, False)
    """
    return "tqdm(" in source or "LivePlot(" in source


def run_as_nbval_does(kernel: RunningKernel, source: str) -> tuple[str, int, str]:
    """Runs one cell; returns its reply's status, the messages it sent, and what went wrong."""
    msg_id = kernel.execute_cell_input(source, allow_stdin=False)
    reply = kernel.get_message(stream="shell", timeout=CELL_TIMEOUT)
    while reply["parent_header"].get("msg_id") != msg_id:
        reply = kernel.get_message(stream="shell", timeout=CELL_TIMEOUT)
    messages, error = 0, ""
    while True:
        try:
            message = kernel.get_message(stream="iopub", timeout=OUTPUT_TIMEOUT)
        except Empty:
            return reply["content"]["status"], messages, (
                f"no idle status within {OUTPUT_TIMEOUT} s after {messages} messages: the rest "
                "were dropped")
        if message["parent_header"].get("msg_id") != msg_id:
            continue
        messages += 1
        if message["msg_type"] == "error":
            error = f"{message['content']['ename']}: {message['content']['evalue']}"
        if message["msg_type"] == "status" and message["content"]["execution_state"] == "idle":
            return reply["content"]["status"], messages, error


@pytest.mark.slow
@pytest.mark.parametrize("lesson", LESSONS_THAT_TRAIN)
def test_training_cells_send_a_bounded_number_of_messages_on_a_slow_machine(lesson: str) -> None:
    notebook = ROOT / "solutions" / lesson / f"{lesson}.ipynb"
    cells = [cell for cell in nbformat.read(notebook, as_version=4).cells
             if cell.cell_type == "code"]
    cpu = max(os.sched_getaffinity(0))
    with pinned(cpu):
        kernel = RunningKernel("python3", cwd=str(notebook.parent))
    sent = {}
    try:
        for index, cell in enumerate(cells):
            if progress_drawing(cell.source):
                with throttled(kernel.km.provisioner.pid):
                    status, sent[index], error = run_as_nbval_does(kernel, cell.source)
            else:
                status, _, error = run_as_nbval_does(kernel, cell.source)
            assert status == "ok" and not error, (
                f"{lesson}, code cell {index} failed on a slowed kernel: {error}\n{cell.source}")
    finally:
        kernel.stop()
    assert sent, f"{lesson} draws no progress: nothing to guard"
    too_many = {index: count for index, count in sent.items() if count > MESSAGE_BUDGET}
    assert not too_many, (
        f"{lesson}: code cells {too_many} sent more than {MESSAGE_BUDGET} messages on a slowed "
        "kernel. Redraw progress by count, e.g. tqdm(..., miniters=len(loader) // 10, "
        "mininterval=0), not by time.")
