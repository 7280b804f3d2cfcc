"""Hooks into `jaxdl.fit`: the `Callback` base class and the callbacks fit itself uses.

`fit` calls, in order: ``on_fit_start(epochs, first_epoch)``; ``on_resume(history, best)``
when it continues a run; per epoch ``on_epoch_start(epoch, steps)``, ``on_steps(epoch,
metrics)`` every ``log_every`` steps and at the epoch's end (``metrics``: the host values of
those steps' metric dicts, with ``examples``, the batch size, added), ``on_epoch_end(row,
train_state)`` (a callback may add keys to ``row``: they are saved in the history, the
checkpoint and metrics.csv), ``on_epoch_saved(history, best)`` once the epoch's checkpoint is
committed (``history[-1]`` is the epoch's row; ``best`` the best epoch's record or None); its
messages through ``on_message(text)``; and ``on_fit_end(result)`` (also when interrupted:
``result.status == "interrupted"``, and the KeyboardInterrupt is raised again after).
Epochs are 0-based in calls and 1-based in ``row["epoch"]``.

A callback stops training by setting ``stop_training = True`` (and, for the log,
``stop_reason``) in ``on_epoch_end``: `fit` then returns after that epoch's checkpoint with
status "stopped" (`EarlyStopping` does this).

Without ``callbacks=``, `fit` runs `default_callbacks`: `LogLines` (one line per epoch,
printed) and, with a `jaxdl.Run`, `MetricsFiles` (``metrics.csv``, ``metrics.png``). A list
of your own replaces them: add ``*jaxdl.default_callbacks(run)`` to keep them, or
`ProgressBar()` for a bar. A callback with ``main_process_only = True`` (the three that write
to the terminal or the run directory) runs in process 0 of a multi-process run only; the
others run in every process.

A callback that adds columns to the history names them in ``columns`` (a tuple), so `fit`
can check a ``best_metric`` before training; ``columns = None`` (the base class's) means
"unknown", and the check waits for the first epoch's row.
"""

from __future__ import annotations

import math
import pathlib
import time
from typing import Callable

from jaxdl.checkpoint.faults import fault_point
from jaxdl.training.history import plot_history, remove_stale_temporaries, write_metrics_csv


class Callback:
    """Does nothing; subclass it and override the hooks you need.

    Attributes:
        stop_training: set it to True in ``on_epoch_end`` to end `fit` after that epoch.
        stop_reason: the reason `fit` logs and returns in its message.
        main_process_only: run only in process 0 of a multi-process run (False: in every process).
        columns: the history columns the callback adds (``()`` for none), or None when unknown.
    """

    stop_training: bool = False
    stop_reason: str | None = None
    main_process_only: bool = False
    columns: tuple[str, ...] | None = None

    def on_fit_start(self, epochs: int, first_epoch: int) -> None:
        """Before the first epoch this call trains (``first_epoch`` > 0 when resuming)."""

    def on_epoch_start(self, epoch: int, steps: int | None) -> None:
        """Before an epoch; ``steps`` is its number of batches when the data source knows it."""

    def on_steps(self, epoch: int, metrics: list[dict]) -> None:
        """After a group of steps, with each step's metrics as Python floats."""

    def on_epoch_end(self, row: dict, train_state) -> None:
        """After an epoch's training and validation, before its checkpoint is written."""

    def on_resume(self, history: list[dict], best: dict | None) -> None:
        """When `fit` continues a run, with the history and best epoch restored from its checkpoint."""

    def on_epoch_saved(self, history: list[dict], best: dict | None) -> None:
        """After an epoch's checkpoint is committed (right after ``on_epoch_end`` without an output_dir)."""

    def on_message(self, text: str) -> None:
        """A message of `fit` (resuming, overwriting, a summary): `LogLines` prints them."""

    def on_fit_end(self, result) -> None:
        """After training stopped: completed, stopped, diverged or interrupted (``result.status``)."""


#: ``metrics.png`` is redrawn at most this often during a run (and always at its end).
PLOT_INTERVAL_SECONDS = 30.0


class MetricsFiles(Callback):
    """Writes ``metrics.csv`` after every epoch's checkpoint, and ``metrics.png`` when due.

    The csv follows the checkpoint (it never holds an epoch the checkpoint lacks) and is
    rewritten from the restored history when a run is resumed, so a kill between the two never
    loses a row. The plot is redrawn when `PLOT_INTERVAL_SECONDS` have passed since the last
    drawing, and at the end of the run (drawing takes 0.3-1 s).

    Args:
        output_dir: the run's directory (``run.output_dir`` of `fit`'s `jaxdl.Run`).
        plot: also draw ``metrics.png``.
    """

    main_process_only = True
    columns = ()

    def __init__(self, output_dir, *, plot: bool = True):
        self.output_dir, self.plot = pathlib.Path(output_dir), plot
        self._history: list[dict] = []
        self._plotted_rows, self._plotted_at = 0, time.monotonic()

    def on_resume(self, history: list[dict], best: dict | None) -> None:
        remove_stale_temporaries(self.output_dir)  # left by a kill inside a metrics.csv/png write
        self.on_epoch_saved(history, best)
        self._draw(final=True)

    def on_epoch_saved(self, history: list[dict], best: dict | None) -> None:
        self._history = list(history)
        if self._history:
            write_metrics_csv(self.output_dir / "metrics.csv", self._history)
            self._draw(final=False)
        fault_point("metrics written")

    def on_fit_end(self, result) -> None:
        self._draw(final=True)

    def _draw(self, final: bool) -> None:
        if not self.plot or not self._history or self._plotted_rows == len(self._history):
            return
        if final or time.monotonic() - self._plotted_at >= PLOT_INTERVAL_SECONDS:
            plot_history(self.output_dir / "metrics.png", self._history)
            self._plotted_rows, self._plotted_at = len(self._history), time.monotonic()


class LogLines(Callback):
    """One line per epoch (losses, accuracy, other validation columns, seconds, whether it is
    the best) and fit's messages.

    Args:
        log: called with each line (default `print`).
        resume_command: the command that continues the run, printed after the message of an
            interrupted run (Ctrl-C) when the run has a checkpoint.
    """

    main_process_only = True
    columns = ()

    def __init__(self, log: Callable[[str], None] = print, *, resume_command: str | None = None):
        if not callable(log):
            raise TypeError(f"LogLines: log must be callable (e.g. print), got {log!r}.")
        self.log, self.resume_command = log, resume_command
        self.epochs = 0

    def on_fit_start(self, epochs: int, first_epoch: int) -> None:
        self.epochs = epochs

    def on_epoch_saved(self, history: list[dict], best: dict | None) -> None:
        row = history[-1]
        parts = [f"train loss {row['train_loss']:.4f}"]
        if row.get("validation_loss") is not None:
            parts.append(f"validation loss {row['validation_loss']:.4f}")
        if row.get("validation_accuracy") is not None:
            parts.append(f"validation accuracy {100 * row['validation_accuracy']:.2f}%")
        parts += [f"validation {name[len('validation_'):]} {value:.4g}" for name, value in row.items()
                  if name.startswith("validation_") and name not in _SHOWN and isinstance(value, (int, float))]
        improved = best is not None and best["epoch"] == row["epoch"]
        self.log(f"epoch {row['epoch']}/{self.epochs}: {', '.join(parts)} "
                 f"({row['epoch_seconds']:.0f} s{', best' if improved else ''})")

    def on_message(self, text: str) -> None:
        self.log(text)

    def on_fit_end(self, result) -> None:
        if result.status != "interrupted":  # the other endings return their message to the caller
            return
        message = result.message
        if self.resume_command and result.checkpoint_dir("last") is not None:
            message += f" Continue with: {self.resume_command}"
        self.log(message)


_SHOWN = ("validation_loss", "validation_accuracy")


def default_callbacks(run=None, *, log: Callable[[str], None] | None = print, plot: bool = True,
                      progress: bool = False, resume_command: str | None = None) -> list[Callback]:
    """The usual callbacks; with no arguments, what `jaxdl.fit` runs without ``callbacks=``.

    Args:
        run: the `jaxdl.Run` of the `fit` call, or None.
        log: `LogLines` sends its lines here; None for no `LogLines`.
        plot: `MetricsFiles` also draws ``metrics.png``.
        progress: add a `ProgressBar`.
        resume_command: `LogLines`'s ``resume_command``.

    Returns:
        `LogLines` (unless ``log`` is None), `MetricsFiles` in ``run.output_dir`` (with a run)
        and `ProgressBar` (with ``progress``), in that order.
    """
    return [*([LogLines(log, resume_command=resume_command)] if log is not None else []),
            *([MetricsFiles(run.output_dir, plot=plot)] if run is not None else []),
            *([ProgressBar()] if progress else [])]


class ProgressBar(Callback):
    """A tqdm bar per epoch: examples per second and the running mean loss per example.

    Args:
        leave: keep each finished epoch's bar on screen.
    """

    main_process_only = True
    columns = ()

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
    the best checkpoint still holds the best epoch by `fit`'s ``best_metric``. Counting starts
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

    columns = ()

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
