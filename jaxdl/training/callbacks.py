"""Hooks into `jaxdl.fit`: the `Callback` base class and a tqdm `ProgressBar`.

`fit` calls, in order: ``on_fit_start(epochs, first_epoch)``; per epoch
``on_epoch_start(epoch, steps)``, ``on_steps(epoch, metrics)`` every ``log_every`` steps and
at the epoch's end (``metrics``: the host values of those steps' metric dicts, with
``examples``, the batch size, added), ``on_epoch_end(row, train_state)`` (a callback may add
keys to ``row``: they are saved in the history, the checkpoint and metrics.csv); and
``on_fit_end(result)``. Epochs are 0-based in calls and 1-based in ``row["epoch"]``.

A callback stops training by setting ``stop_training = True`` (and, for the log,
``stop_reason``) in ``on_epoch_end``: `fit` then returns after that epoch's checkpoint with
status "stopped" (`EarlyStopping` does this).
"""

from __future__ import annotations

import math


class Callback:
    """Does nothing; subclass it and override the hooks you need.

    Attributes:
        stop_training: set it to True in ``on_epoch_end`` to end `fit` after that epoch.
        stop_reason: the reason `fit` logs and returns in its message.
    """

    stop_training: bool = False
    stop_reason: str | None = None

    def on_fit_start(self, epochs: int, first_epoch: int) -> None:
        """Before the first epoch this call trains (``first_epoch`` > 0 when resuming)."""

    def on_epoch_start(self, epoch: int, steps: int | None) -> None:
        """Before an epoch; ``steps`` is its number of batches when the data source knows it."""

    def on_steps(self, epoch: int, metrics: list[dict]) -> None:
        """After a group of steps, with each step's metrics as Python floats."""

    def on_epoch_end(self, row: dict, train_state) -> None:
        """After an epoch's training and validation, before its checkpoint is written."""

    def on_fit_end(self, result) -> None:
        """After training stopped (completed or diverged; not on KeyboardInterrupt)."""


class ProgressBar(Callback):
    """A tqdm bar per epoch: examples per second and the running mean loss per example.

    Args:
        leave: keep each finished epoch's bar on screen.
    """

    def __init__(self, *, leave: bool = True):
        self.leave = leave
        self._bar = None
        self._epochs = 0
        self._loss_sum = 0.0
        self._examples = 0

    def on_fit_start(self, epochs: int, first_epoch: int) -> None:
        self._epochs = epochs

    def on_epoch_start(self, epoch: int, steps: int | None) -> None:
        from tqdm.auto import tqdm

        self._loss_sum, self._examples = 0.0, 0
        self._bar = tqdm(total=steps, unit="batch", desc=f"epoch {epoch + 1}/{self._epochs}", leave=self.leave,
                         dynamic_ncols=True)

    def on_steps(self, epoch: int, metrics: list[dict]) -> None:
        for entry in metrics:
            self._loss_sum += entry["example_loss"] * entry["examples"]
            self._examples += entry["examples"]
        self._bar.update(len(metrics))
        if self._examples:
            self._bar.set_postfix(loss=f"{self._loss_sum / self._examples:.4f}", refresh=False)

    def on_epoch_end(self, row: dict, train_state) -> None:
        self._close()

    def on_fit_end(self, result) -> None:
        self._close()

    def _close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


class EarlyStopping(Callback):
    """Stops `jaxdl.fit` when ``metric`` has not improved for ``patience`` epochs.

    An epoch improves on the best so far when its value is better by more than ``min_delta``
    (larger for mode "max", smaller for "min"); a non-finite value never improves. After
    ``patience`` epochs in a row without improvement, `fit` stops with status "stopped";
    ``checkpoints/best`` still holds the best epoch by `fit`'s ``best_metric``. Counting starts
    with the epochs this `fit` call trains (a resumed run starts counting afresh).

    Args:
        metric: a history column, e.g. "validation_loss" or "validation_<name>" of `fit`'s
            ``metrics``.
        patience: epochs without improvement to tolerate (>= 1).
        mode: "min", "max", or None: "min" when ``metric`` has "loss" in its name, else "max".
        min_delta: the smallest change that counts as an improvement (>= 0).

    Raises:
        TypeError: for a metric name that is not a string.
        ValueError: for a bad ``patience``, ``mode`` or ``min_delta``; and in ``on_epoch_end``
            for a ``metric`` that is not in the epoch's row (naming the columns there are).
    """

    def __init__(self, metric: str = "validation_loss", *, patience: int = 3, mode: str | None = None,
                 min_delta: float = 0.0):
        if not isinstance(metric, str):
            raise TypeError(f"EarlyStopping: metric must be a history column's name, got {metric!r}.")
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
            raise ValueError(f"EarlyStopping: patience must be an int >= 1, got {patience!r}.")
        mode = ("min" if "loss" in metric else "max") if mode is None else mode
        if mode not in ("min", "max"):
            raise ValueError(f"EarlyStopping: mode must be 'min', 'max' or None, got {mode!r}.")
        if isinstance(min_delta, bool) or not isinstance(min_delta, (int, float)) or not min_delta >= 0:
            raise ValueError(f"EarlyStopping: min_delta must be a number >= 0, got {min_delta!r}.")
        self.metric, self.patience, self.mode, self.min_delta = metric, patience, mode, float(min_delta)
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.waited = 0

    def on_fit_start(self, epochs: int, first_epoch: int) -> None:
        self.best, self.best_epoch, self.waited = None, None, 0
        self.stop_training, self.stop_reason = False, None

    def on_epoch_end(self, row: dict, train_state) -> None:
        if self.metric not in row:
            raise ValueError(f"EarlyStopping: metric {self.metric!r} is not in the history's columns {sorted(row)}.")
        value = row[self.metric]
        if value is not None and math.isfinite(value) and self._improves(value):
            self.best, self.best_epoch, self.waited = value, row["epoch"], 0
            return
        self.waited += 1
        if self.waited >= self.patience:
            self.stop_training = True
            best = "no finite value yet" if self.best is None else f"best {self.best:.6g} at epoch {self.best_epoch}"
            self.stop_reason = (f"{self.metric} did not improve for {self.waited} epoch"
                                f"{'s' if self.waited > 1 else ''} ({best}; patience {self.patience})")

    def _improves(self, value: float) -> bool:
        if self.best is None:
            return True
        return value > self.best + self.min_delta if self.mode == "max" else value < self.best - self.min_delta
