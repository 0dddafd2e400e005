"""Curves drawn from a history, and the live plot in a real kernel and in a terminal."""

from __future__ import annotations

import io

import matplotlib
import nbformat
import pytest
from nbclient import NotebookClient

from course_utils.plotting import LivePlot, format_epoch, plot_history

matplotlib.use("Agg")

HISTORY = {"train_loss": [0.9, 0.5, 0.3], "val_loss": [0.8, 0.55, 0.4],
           "val_acc": [0.71, 0.85, 0.9]}


def test_plot_history_draws_each_key_on_its_panel():
    figure = plot_history(HISTORY)
    loss_ax, acc_ax = figure.axes
    drawn = {line.get_label(): (list(line.get_xdata()), list(line.get_ydata()))
             for ax in figure.axes for line in ax.lines}
    assert drawn == {key: ([1, 2, 3], values) for key, values in HISTORY.items()}
    assert [line.get_label() for line in loss_ax.lines] == ["train_loss", "val_loss"]
    assert [line.get_label() for line in acc_ax.lines] == ["val_acc"]
    assert loss_ax.get_xlabel() == acc_ax.get_xlabel() == "epoch"


def test_plot_history_shows_extra_accuracy_keys_and_redraws_into_a_figure():
    figure = plot_history(HISTORY)
    plot_history({**HISTORY, "train_acc": [0.7, 0.86, 0.93]}, figure)
    assert len(figure.axes) == 2
    assert sorted(line.get_label() for line in figure.axes[1].lines) == ["train_acc", "val_acc"]


def test_format_epoch_sums_up_the_last_epoch():
    assert format_epoch(HISTORY, total_epochs=5) == \
        "epoch 3/5  train_loss 0.3000  val_loss 0.4000  val_acc 0.9000"


def test_live_plot_prints_one_line_per_epoch_outside_jupyter():
    stream = io.StringIO()
    live = LivePlot(total_epochs=3, stream=stream)
    assert live.jupyter is False
    for epoch in range(1, 4):
        live({key: values[:epoch] for key, values in HISTORY.items()})
    lines = stream.getvalue().splitlines()
    assert lines == [format_epoch({k: v[:e] for k, v in HISTORY.items()}, 3) for e in (1, 2, 3)]


@pytest.mark.slow
def test_live_plot_redraws_one_image_in_place_in_a_kernel():
    cell = (
        "from course_utils.plotting import LivePlot\n"
        f"history = {HISTORY!r}\n"
        "live = LivePlot(total_epochs=3)\n"
        "for epoch in range(1, 4):\n"
        "    live({key: values[:epoch] for key, values in history.items()})\n"
        "print(live.jupyter, len(live.figure.axes[0].lines[0].get_xdata()))\n"
    )
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(cell)])
    NotebookClient(notebook, timeout=120, kernel_name="python3").execute()
    outputs = notebook.cells[0].outputs
    images = [o for o in outputs if o.output_type == "display_data"]
    assert len(images) == 1, "the plot is updated in place, not appended once per epoch"
    assert "image/png" in images[0].data
    assert outputs[-1].text.strip() == "True 3"
