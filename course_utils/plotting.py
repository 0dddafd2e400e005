"""Figures of training: per-epoch loss and accuracy curves, drawn from a history dict."""

from __future__ import annotations

import sys
from typing import Mapping, Sequence, TextIO

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from course_utils.jupyter import in_jupyter

History = Mapping[str, Sequence[float]]


def plot_history(history: History, figure: Figure | None = None) -> Figure:
    """Draws per-epoch losses (left) and accuracies (right) from a ``fit`` history.

    Keys ending in ``_loss`` go on the loss panel and keys ending in ``_acc`` on the accuracy
    panel, so ``train_acc`` or other extras appear when present.

    Args:
        history: ``{"train_loss": [...], "val_loss": [...], "val_acc": [...]}``, one value
            per epoch.
        figure: a figure to draw into (cleared first); a new one by default.

    Returns:
        The figure, with one line per key.

    Example:
        >>> fig = plot_history({"train_loss": [0.9, 0.4], "val_loss": [0.8, 0.5],
        ...                     "val_acc": [0.7, 0.9]})
        >>> [line.get_label() for ax in fig.axes for line in ax.lines]
        ['train_loss', 'val_loss', 'val_acc']
    """
    figure = figure if figure is not None else plt.figure(figsize=(9, 3.2))
    figure.clear()
    loss_ax, acc_ax = figure.subplots(1, 2)
    for ax, suffix, title in ((loss_ax, "_loss", "Loss per epoch"),
                              (acc_ax, "_acc", "Accuracy per epoch")):
        for key, values in history.items():
            if key.endswith(suffix) and len(values):
                epochs = range(1, len(values) + 1)
                ax.plot(epochs, list(values), marker="o", label=key)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend()
            ax.xaxis.get_major_locator().set_params(integer=True)
    loss_ax.set_ylabel("mean loss per sample")
    acc_ax.set_ylabel("fraction correct")
    figure.tight_layout()
    return figure


def format_epoch(history: History, total_epochs: int | None = None) -> str:
    """One line summing up the last epoch of a history.

    Example:
        >>> format_epoch({"train_loss": [0.5, 0.25], "val_acc": [0.9, 0.95]}, total_epochs=3)
        'epoch 2/3  train_loss 0.2500  val_acc 0.9500'
    """
    epochs = max((len(v) for v in history.values()), default=0)
    counter = f"{epochs}/{total_epochs}" if total_epochs else f"{epochs}"
    values = "  ".join(f"{key} {values[-1]:.4f}" for key, values in history.items() if values)
    return f"epoch {counter}  {values}"


class LivePlot:
    """Redraws the curves after every epoch: in place in Jupyter, one printed line elsewhere.

    Call it with the history so far at the end of each epoch, e.g. as ``fit``'s per-epoch
    callback.

    Args:
        total_epochs: shown as ``epoch 2/5`` in the printed line.
        jupyter: force the Jupyter (True) or text (False) behaviour; detected by default.
        stream: where the text lines go (standard output by default).

    Example:
        >>> live = LivePlot(total_epochs=2, jupyter=False)
        >>> live({"train_loss": [0.5], "val_loss": [0.4], "val_acc": [0.9]})
        epoch 1/2  train_loss 0.5000  val_loss 0.4000  val_acc 0.9000
    """

    def __init__(self, total_epochs: int | None = None, jupyter: bool | None = None,
                 stream: TextIO | None = None):
        self.total_epochs = total_epochs
        self.jupyter = in_jupyter() if jupyter is None else jupyter
        self.stream = stream
        self.figure: Figure | None = None
        self._handle = None

    def __call__(self, history: History) -> None:
        if not self.jupyter:
            print(format_epoch(history, self.total_epochs), file=self.stream or sys.stdout,
                  flush=True)
            return
        from IPython.display import display

        if self.figure is None:
            self.figure = plt.figure(figsize=(9, 3.2))
            # Keep the inline backend from showing the figure a second time when the cell ends.
            plt.close(self.figure)
        plot_history(history, self.figure)
        if self._handle is None:
            self._handle = display(self.figure, display_id=True)
        else:
            self._handle.update(self.figure)
