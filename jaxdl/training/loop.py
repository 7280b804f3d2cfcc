"""`fit`: the ONE training loop (epochs, validation, checkpoints, resume, NaN guard).

Every entry point runs it: ``scripts/train_lenet.py`` (through `jaxdl.recipes.lenet`),
``scripts/train_sequence.py``, `jaxdl.NeuralNetwork.train`. What it does each epoch:

1. Trains over ``train_data.epoch(epoch)`` with the step of `jaxdl.make_train_step`
   (integer labels are checked on the host against the model's class count first). The
   step's metrics stay on the device and are fetched every ``log_every`` steps (the host does
   not wait for each step); a non-finite loss there, or non-finite params at the epoch's
   end, stops training (`TrainingDiverged`, see below).
2. Evaluates ``validation_data`` with `jaxdl.evaluate` (evaluation mode, memorized states
   reset then carried from chunk to chunk).
3. Appends a row to the history: ``epoch`` (1-based), ``step``, ``train_loss`` (mean loss
   per example over the epoch's steps, from the step's ``example_loss``),
   ``validation_loss``, ``validation_accuracy``, ``epoch_seconds``, ``elapsed_seconds``, and
   whatever callbacks add.
4. With an ``output_dir``: commits ``checkpoints/last`` (every epoch) and
   ``checkpoints/best`` (by ``best_metric``) in one step (`jaxdl.checkpoint.CheckpointSet`),
   with the history in the checkpoint's metadata, then writes ``metrics.csv`` and
   ``metrics.png`` from that history.

Resume: ``resume=True`` restores ``checkpoints/last`` and its history and continues with the
next epoch. With an epoch-indexed data source (shuffling and augmentation a function of seed
and epoch) the result is bit-identical to an unbroken run.

Stopping: a non-finite loss returns a `FitResult` with ``status="diverged"``, the last good
train state (the last checkpoint's, or the state before the first epoch) and a message that
names the checkpoint it came from, or says none was written. Ctrl-C (KeyboardInterrupt)
logs where the last checkpoint is and ``resume_command`` (if given), then re-raises.
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
import time
from typing import Any, Callable, Sequence

import jax
import numpy as np

from jaxdl import checkpoint
from jaxdl.checkpoint.faults import fault_point
from jaxdl.layers.recurrent.memory import reset_memory
from jaxdl.training.callbacks import Callback, ProgressBar
from jaxdl.training.data import EpochSource, check_epochs, check_integer_labels
from jaxdl.training.evaluation import evaluate
from jaxdl.training.history import plot_history, remove_stale_temporaries, write_metrics_csv
from jaxdl.training.state import TrainState
from jaxdl.training.step import shared_steps

MODES = ("max", "min")


class RunDirectoryError(ValueError):
    """The ``output_dir`` does not fit the request: it holds a run (without ``resume``) or no
    checkpoint to resume."""


class TrainingDiverged(RuntimeError):
    """The training loss or the parameters became NaN or infinite."""


@dataclasses.dataclass
class FitResult:
    """What `fit` returns.

    Attributes:
        train_state: the final `TrainState` (the last good one when training diverged).
        history: one dict per finished epoch (all epochs of the run, resumed ones included).
        status: "completed" or "diverged".
        message: a one-line summary (the explanation when diverged).
        best: ``{"epoch": int, <best_metric>: value}`` of the best epoch so far, or None.
        output_dir: where checkpoints and metrics are (None without one).
    """

    train_state: TrainState
    history: list
    status: str
    message: str
    best: dict | None = None
    output_dir: pathlib.Path | None = None

    def checkpoint_dir(self, which: str = "last") -> pathlib.Path | None:
        """The ``checkpoints/last`` or ``checkpoints/best`` directory of the run."""
        return None if self.output_dir is None else self.output_dir / "checkpoints" / which


@dataclasses.dataclass
class _Run:
    """The loop's bookkeeping (one per `fit` call)."""

    train_step: Callable
    eval_step: Callable
    loss_fn: Callable
    source: EpochSource
    validation: EpochSource | None
    epochs: int
    best_metric: str | None
    best_mode: str
    log_every: int
    callbacks: Sequence[Callback]
    log: Callable[[str], None]
    checkpoints: Any
    output_dir: pathlib.Path | None
    plot: bool
    metadata: dict
    model_config: dict | None
    history: list = dataclasses.field(default_factory=list)
    best: dict | None = None
    output_shapes: dict = dataclasses.field(default_factory=dict)


def fit(model, loss_fn: Callable, optimizer, train_state: TrainState, train_data, *, epochs: int,
        validation_data=None, penalty=None, output_dir=None, resume: bool = False,
        best_metric: str | None = "validation_accuracy", best_mode: str = "max",
        callbacks: Sequence[Callback] = (), progress: bool = False, log_every: int = 50,
        log: Callable[[str], None] | None = print, plot: bool = True, metadata: dict | None = None,
        model_config: dict | None = None, resume_command: str | None = None) -> FitResult:
    """Trains ``model`` for ``epochs`` epochs (see the module docstring for each step).

    Args:
        model, loss_fn, optimizer, penalty: as for `jaxdl.make_train_step`.
        train_state: the starting state (`jaxdl.create_train_state`); with ``resume=True``
            only its structure is used (the checkpoint's values replace it).
        train_data: an epoch-indexed source, a re-iterable, or a one-shot iterator for a
            single epoch (`jaxdl.training.data`).
        epochs: the total number of epochs of the run (a resumed run continues up to it).
        validation_data: evaluated after every epoch (same kinds as ``train_data``), or None.
        output_dir: where ``checkpoints/last``, ``checkpoints/best``, ``metrics.csv`` and
            ``metrics.png`` go; None keeps everything in memory. A directory that already holds
            a run is refused unless ``resume=True``.
        resume: continue the run in ``output_dir`` from ``checkpoints/last``.
        best_metric: the history column that picks ``checkpoints/best``; None for no best
            (also when there is no validation data and the column is a validation one).
        best_mode: "max" (accuracy) or "min" (loss).
        callbacks: `Callback` objects; ``progress=True`` adds a `ProgressBar`.
        log_every: fetch the step metrics (and check them for NaN) every this many steps.
        log: called with one line per epoch and the stop messages; None for silence.
        plot: also write ``metrics.png`` (matplotlib) into ``output_dir``.
        metadata: JSON data stored in every checkpoint's metadata (e.g. hyperparameters).
        model_config: the JSON config that rebuilds the model, stored in the checkpoints.
        resume_command: the command that resumes this run, printed on Ctrl-C.

    Returns:
        A `FitResult`.

    Raises:
        RunDirectoryError: (a ValueError) for an ``output_dir`` that already holds a run
            (without ``resume``), or ``resume`` without a checkpoint.
        ValueError: for invalid arguments, a one-shot iterator asked for several epochs, or a
            ``best_metric`` that is not in the history.
        KeyboardInterrupt: re-raised after logging how to resume.
    """
    _check_arguments(epochs, log_every, best_mode)
    if validation_data is None and best_metric is not None and best_metric.startswith("validation_"):
        best_metric = None
    output_dir = None if output_dir is None else pathlib.Path(output_dir)
    train_step, eval_step = shared_steps(model, loss_fn, optimizer, penalty)
    run = _Run(
        train_step=train_step, eval_step=eval_step, loss_fn=loss_fn, source=EpochSource(train_data, "train_data"),
        validation=None if validation_data is None else EpochSource(validation_data, "validation_data"),
        epochs=epochs, best_metric=best_metric, best_mode=best_mode, log_every=log_every,
        callbacks=[*callbacks, *([ProgressBar()] if progress else [])], log=log or (lambda line: None),
        checkpoints=None, output_dir=output_dir, plot=plot, metadata=dict(metadata or {}),
        model_config=model_config)
    train_state = _open(run, train_state, resume)
    check_epochs(run.source, epochs - len(run.history))
    if run.validation is not None:
        check_epochs(run.validation, epochs - len(run.history))
    for callback in run.callbacks:
        callback.on_fit_start(epochs, len(run.history))
    last_good = train_state
    elapsed_before = run.history[-1]["elapsed_seconds"] if run.history else 0.0
    started = time.perf_counter()
    for epoch in range(len(run.history), epochs):
        try:
            train_state = _epoch(run, train_state, epoch, started, elapsed_before)
        except TrainingDiverged as error:
            return _finish(run, last_good, "diverged", _diverged_message(run, error))
        except KeyboardInterrupt:
            run.log(_interrupted_message(run, epoch, resume_command))
            raise
        last_good = train_state
    return _finish(run, train_state, "completed", _summary(run))


def _check_arguments(epochs, log_every, best_mode) -> None:
    for name, value in (("epochs", epochs), ("log_every", log_every)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"fit: {name} must be a positive int, got {value!r}.")
    if best_mode not in MODES:
        raise ValueError(f"fit: best_mode must be one of {MODES}, got {best_mode!r}.")


def _open(run: _Run, train_state: TrainState, resume: bool) -> TrainState:
    """Opens the checkpoint set; restores the last checkpoint and history when resuming."""
    if run.output_dir is None:
        if resume:
            raise ValueError("fit: resume=True needs the output_dir of the run to continue.")
        return train_state
    run.checkpoints = checkpoint.CheckpointSet(run.output_dir / "checkpoints", metric=run.best_metric,
                                               mode=run.best_mode)
    remove_stale_temporaries(run.output_dir)  # left by a kill inside a metrics.csv/png write
    latest = run.checkpoints.latest_epoch()
    if not resume:
        if latest is not None:
            raise RunDirectoryError(f"fit: {run.output_dir} already holds a run (checkpoints/last, epoch {latest}); "
                             f"resume it (resume=True) or choose another output directory.")
        return train_state
    if latest is None:
        raise RunDirectoryError(f"fit: resume=True but {run.output_dir / 'checkpoints'} holds no checkpoint; start "
                         f"without resume.")
    train_state, manifest = run.checkpoints.restore(train_state, "last")
    run.history = list(manifest["metadata"]["history"])
    run.best = manifest["metadata"].get("best")
    _write_outputs(run)  # a kill after the checkpoint but before metrics.csv left it a row short
    run.log(f"Resuming {run.output_dir} after epoch {len(run.history)} of {run.epochs} "
            f"(step {int(train_state.step)}).")
    return train_state


def _epoch(run: _Run, train_state: TrainState, epoch: int, started: float, elapsed_before: float) -> TrainState:
    """Trains, validates and records one epoch; returns the new train state."""
    epoch_start = time.perf_counter()
    batches = run.source.epoch(epoch)
    steps = run.source.steps(epoch)
    for callback in run.callbacks:
        callback.on_epoch_start(epoch, steps)
    train_state, train_loss = _train_epoch(run, train_state, batches, epoch)
    if not _all_finite(train_state.params):
        raise TrainingDiverged(f"the parameters became NaN or infinite in epoch {epoch + 1}")
    row = {"epoch": epoch + 1, "step": int(train_state.step), "train_loss": train_loss}
    if run.validation is not None:
        result = evaluate(run.eval_step, train_state.params, train_state.state, run.validation.epoch(epoch),
                          run.loss_fn)
        row.update(validation_loss=result["loss"], validation_accuracy=result["accuracy"])
    now = time.perf_counter()
    row.update(epoch_seconds=now - epoch_start, elapsed_seconds=elapsed_before + now - started)
    for callback in run.callbacks:
        callback.on_epoch_end(row, train_state)
    improved = _update_best(run, row)
    run.history.append(row)
    if run.checkpoints is not None:
        run.checkpoints.save(epoch + 1, train_state, metadata=_checkpoint_metadata(run), best=improved,
                             metric_value=row.get(run.best_metric) if run.best_metric else None,
                             model_config=run.model_config)
        _write_outputs(run)
        fault_point("metrics written")
    run.log(_epoch_line(run, row, improved))
    return train_state


def _train_epoch(run: _Run, train_state: TrainState, batches, epoch: int) -> tuple[TrainState, float]:
    """The epoch's steps; returns (train_state, mean loss per example)."""
    pending, loss_sum, examples = [], 0.0, 0
    for batch in batches:
        if batch.reset:
            train_state = train_state._replace(state=reset_memory(train_state.state))
        check_integer_labels(batch.labels, _output_shape(run, train_state, batch.x), "fit")
        train_state, metrics = run.train_step(train_state, batch.x, batch.labels)
        pending.append((metrics, int(np.shape(batch.x)[0])))
        if len(pending) == run.log_every:
            loss_sum, examples = _drain(run, pending, epoch, train_state, loss_sum, examples)
    loss_sum, examples = _drain(run, pending, epoch, train_state, loss_sum, examples)
    if examples == 0:
        raise ValueError(f"fit: train_data gave no batch in epoch {epoch + 1}.")
    return train_state, loss_sum / examples


def _output_shape(run: _Run, train_state: TrainState, x) -> tuple:
    """The model's output shape for an input like ``x`` (traced once per input shape)."""
    key = (tuple(np.shape(x)), str(getattr(x, "dtype", "")))
    if key not in run.output_shapes:
        outputs = jax.eval_shape(run.eval_step, train_state.params, train_state.state, x)[0]
        run.output_shapes[key] = tuple(outputs.shape)
    return run.output_shapes[key]


def _drain(run: _Run, pending: list, epoch: int, train_state, loss_sum: float, examples: int):
    """Fetches pending step metrics, checks them for NaN/inf and hands them to the callbacks."""
    if not pending:
        return loss_sum, examples
    values = jax.device_get([metrics for metrics, _ in pending])
    entries = [{**{name: float(value) for name, value in metrics.items()}, "examples": size}
               for metrics, (_, size) in zip(values, pending)]
    pending.clear()
    for entry in entries:
        if not math.isfinite(entry["loss"]):
            raise TrainingDiverged(f"the loss became {entry['loss']} in epoch {epoch + 1} "
                                   f"(around step {int(train_state.step)})")
    for callback in run.callbacks:
        callback.on_steps(epoch, entries)
    loss_sum += sum(entry["example_loss"] * entry["examples"] for entry in entries)
    return loss_sum, examples + sum(entry["examples"] for entry in entries)


def _all_finite(tree) -> bool:
    return all(bool(np.all(np.isfinite(np.asarray(leaf)))) for leaf in jax.tree.leaves(tree)
               if np.issubdtype(np.asarray(leaf).dtype, np.inexact))


def _update_best(run: _Run, row: dict) -> bool:
    """Records ``row`` as the best epoch if its ``best_metric`` beats the best so far."""
    if run.best_metric is None:
        return False
    if run.best_metric not in row:
        raise ValueError(f"fit: best_metric {run.best_metric!r} is not in the history's columns {sorted(row)}.")
    value = row[run.best_metric]
    if value is None:  # e.g. validation_accuracy for labels that are not a class array
        raise ValueError(f"fit: best_metric {run.best_metric!r} has no value in epoch {row['epoch']} (accuracy "
                         f"needs integer or one-hot labels); pick another, e.g. best_metric='validation_loss', "
                         f"best_mode='min', or None for no best checkpoint.")
    if not math.isfinite(value):
        return False
    previous = None if run.best is None else run.best[run.best_metric]
    better = previous is None or (value > previous if run.best_mode == "max" else value < previous)
    if better:
        run.best = {"epoch": row["epoch"], run.best_metric: value}
    return better


def _checkpoint_metadata(run: _Run) -> dict:
    return {**run.metadata, "epoch": len(run.history), "history": run.history, "best": run.best,
            "best_metric": run.best_metric, "best_mode": run.best_mode}


def _write_outputs(run: _Run) -> None:
    if run.output_dir is None or not run.history:
        return
    write_metrics_csv(run.output_dir / "metrics.csv", run.history)
    if run.plot:
        plot_history(run.output_dir / "metrics.png", run.history)


def _epoch_line(run: _Run, row: dict, improved: bool) -> str:
    parts = [f"train loss {row['train_loss']:.4f}"]
    if row.get("validation_loss") is not None:
        parts.append(f"validation loss {row['validation_loss']:.4f}")
    if row.get("validation_accuracy") is not None:
        parts.append(f"validation accuracy {100 * row['validation_accuracy']:.2f}%")
    return (f"epoch {row['epoch']}/{run.epochs}: {', '.join(parts)} "
            f"({row['epoch_seconds']:.0f} s{', best' if improved else ''})")


def _last_checkpoint_words(run: _Run) -> str:
    if run.checkpoints is None:
        return "no checkpoint is written without an output_dir"
    latest = run.checkpoints.latest_epoch()
    if latest is None:
        return "no checkpoint was written yet"
    return f"the last checkpoint is {run.output_dir / 'checkpoints' / 'last'} (epoch {latest})"


def _diverged_message(run: _Run, error: TrainingDiverged) -> str:
    state = ("the returned state is that checkpoint's" if run.history else
             "the returned state is the one training started from")
    return f"Training stopped: {error}. {_last_checkpoint_words(run).capitalize()}; {state}."


def _interrupted_message(run: _Run, epoch: int, resume_command: str | None) -> str:
    message = f"Interrupted in epoch {epoch + 1}; {_last_checkpoint_words(run)}."
    if resume_command and run.checkpoints is not None and run.checkpoints.latest_epoch() is not None:
        message += f" Continue with: {resume_command}"
    return message


def _summary(run: _Run) -> str:
    if not run.history:
        return "Nothing to do."
    summary = f"Done: {len(run.history)} epochs, {run.history[-1]['elapsed_seconds']:.0f} s"
    if run.best is not None:
        where = f" ({run.output_dir / 'checkpoints' / 'best'})" if run.output_dir is not None else ""
        value = run.best[run.best_metric]
        shown = f"{100 * value:.2f}%" if run.best_metric.endswith("accuracy") else f"{value:.4f}"
        summary += f"; best {run.best_metric} {shown} at epoch {run.best['epoch']}{where}"
    return summary + "."


def _finish(run: _Run, train_state: TrainState, status: str, message: str) -> FitResult:
    result = FitResult(train_state, run.history, status, message, run.best, run.output_dir)
    for callback in run.callbacks:
        callback.on_fit_end(result)
    return result
