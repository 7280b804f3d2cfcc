"""`fit`: the ONE training loop (epochs, validation, checkpoints, resume, NaN guard), a small loop with callbacks.

Every entry point runs it: ``scripts/train_lenet.py`` (through `jaxdl.recipes.lenet`),
``scripts/train_sequence.py``, `jaxdl.NeuralNetwork.train`. What it does each epoch:

1. Trains over ``train_data.epoch(epoch)`` with the step of `jaxdl.make_train_step`. The
   step's metrics stay on the device and are fetched every ``log_every`` steps; a non-finite
   loss there, or non-finite params at the epoch's end, stops training (`TrainingDiverged`).
2. Evaluates ``validation_data`` with `jaxdl.evaluate`.
3. Appends a row to the history: ``epoch`` (1-based), ``step``, ``train_loss`` (mean loss
   per example), ``validation_loss``, ``validation_accuracy`` (a classifier's labels only),
   ``validation_<name>`` of ``metrics``, ``epoch_seconds``, ``elapsed_seconds``, and whatever
   callbacks add.
4. With an ``output_dir``: commits the epoch as one step of ``checkpoints/``
   (`jaxdl.checkpoint.RunCheckpoints`: the train state and, in the same step, the history,
   the best epoch, ``metadata``, ``model_config``), ranked by ``best_metric``. Orbax keeps the
   newest step (``last``) and the best one (``best``).

Everything else is a callback (`jaxdl.training.callbacks`): the log lines (`LogLines`),
``metrics.csv`` and ``metrics.png`` (`MetricsFiles`), the progress bar, early stopping.

Mid-epoch checkpoints (``checkpoint_every_steps=N``): after every step whose global step
count is a multiple of N (but an epoch's last), the train state is committed as an ordinary
step, with the data position in its metadata: ``{"epoch", "batches", "iterator", "steps",
"loss_sum", "examples"}`` (the epoch in progress, the batches consumed, the data iterator's
grain state, the running sums of the epoch's train loss). It is not ranked, so orbax drops
it once a newer step exists.

Resume: ``resume=True`` continues from the newest step: after its epoch, or inside it from
the stored data position. With an epoch-indexed data source the result is bit-identical to an
unbroken run (params, optimizer state, history except the timings).

Stopping: a non-finite loss returns a `FitResult` with ``status="diverged"``, the last good
train state (the last checkpoint's, or the starting one) and a message naming the checkpoint.
Ctrl-C ends the callbacks with ``status="interrupted"`` (`LogLines` prints where the last
checkpoint is and ``resume_command``), then re-raises.

Several devices (``mesh=``): the same loop runs the mesh step (state donated: the loop copies
the last good state it keeps). In a multi-process run every process runs `fit` and saves
(orbax writes once); process 0 alone runs the log, progress and metrics-file callbacks.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import pathlib
import time
from typing import Callable, Mapping, Sequence

import jax
import numpy as np

from jaxdl import distributed
from jaxdl.checkpoint import RunCheckpoints, RunDirectoryError, find_step_dir, load_checkpoint, run_directory
from jaxdl.layers.recurrent.memory import reset_memory
from jaxdl.losses import is_classification_loss
from jaxdl.training.callbacks import Callback, LogLines, MetricsFiles, ProgressBar
from jaxdl.training.data import EpochSource, check_epochs
from jaxdl.training.evaluation import check_metrics, evaluate
from jaxdl.training.parallel import global_rows, keep
from jaxdl.training.state import TrainState
from jaxdl.training.step import shared_steps

MODES = ("max", "min")


class TrainingDiverged(RuntimeError):
    """The training loss or the parameters became NaN or infinite."""


@dataclasses.dataclass
class FitResult:
    """What `fit` returns.

    Attributes:
        train_state: the final `TrainState` (the last good one when training diverged).
        history: one dict per finished epoch (all epochs of the run, resumed ones included).
        status: "completed", "diverged", "stopped" (a callback such as `EarlyStopping` asked to
            stop) or "interrupted" (only seen by callbacks: `fit` re-raises KeyboardInterrupt).
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
        """The step directory of the run's ``"last"`` or ``"best"`` checkpoint (None without one)."""
        return None if self.output_dir is None else find_step_dir(self.output_dir / "checkpoints", which)


@dataclasses.dataclass
class _Loop:
    """What one `fit` call keeps while it runs."""

    train_step: Callable
    eval_step: Callable
    loss_fn: Callable
    metrics: Mapping[str, Callable]
    best_metric: str | None
    best_mode: str
    callbacks: list
    checkpoints: RunCheckpoints | None
    saved: dict = dataclasses.field(default_factory=dict)  # model_config, metadata
    mesh: object = None
    log_every: int = 50
    every: int | None = None
    history: list = dataclasses.field(default_factory=list)
    best: dict | None = None
    last_saved: tuple | None = None  # (step directory words, train state) of the newest checkpoint this call wrote

    def call(self, hook: str, *args) -> None:
        for callback in self.callbacks:
            getattr(callback, hook)(*args)


def fit(model, loss_fn: Callable, optimizer, train_state: TrainState, train_data, *, epochs: int,
        validation_data=None, penalty=None, output_dir=None, resume: bool = False,
        metrics: Mapping[str, Callable] | None = None, best_metric: str | None = "auto",
        best_mode: str | None = None, callbacks: Sequence[Callback] = (), progress: bool = False, log_every: int = 50,
        log: Callable[[str], None] | None = print, plot: bool = True, metadata: dict | None = None,
        model_config: dict | None = None, resume_command: str | None = None,
        checkpoint_every_steps: int | None = None, mesh: jax.sharding.Mesh | None = None,
        overwrite: bool = False) -> FitResult:
    """Trains ``model`` for ``epochs`` epochs (see the module docstring for each step).

    Args:
        model, loss_fn, optimizer, penalty: as for `jaxdl.make_train_step`.
        train_state: the starting state (`jaxdl.create_train_state`); with ``resume=True``
            only its structure is used (the checkpoint's values replace it).
        train_data: an epoch-indexed source, a re-iterable, or a one-shot iterator for a
            single epoch (`jaxdl.training.data`).
        epochs: the total number of epochs of the run (a resumed run continues up to it).
        validation_data: evaluated after every epoch (same kinds as ``train_data``), or None.
        output_dir: where ``checkpoints/``, ``metrics.csv`` and ``metrics.png`` go; None keeps
            everything in memory. Checked before training: a directory that holds a run is
            refused unless ``resume=True`` (or ``overwrite=True``), one holding files a run
            does not write (or a ``metrics.csv`` without a checkpoint) unless
            ``overwrite=True``; a file or an unwritable directory is refused.
        resume: continue the run in ``output_dir`` from its newest checkpoint.
        overwrite: start a new run in an ``output_dir`` that holds an old run (its checkpoints
            and metrics files are removed first) or other files (left as they are). Not with
            ``resume``.
        metrics: name -> ``function(outputs, labels)`` giving one value per example, evaluated
            on ``validation_data`` after every epoch: the history, the log line,
            ``metrics.csv`` and ``metrics.png`` get a ``validation_<name>`` column.
        best_metric: the history column that ranks the checkpoints for ``best``; None for no
            best. "auto" (the default): "validation_accuracy" for a classifier's loss
            (`jaxdl.losses.is_classification_loss`), else "validation_loss", so a regression
            is never judged by an accuracy. Checked before training (a column a callback adds
            after the first epoch); without validation data a validation column means None.
        best_mode: "max" or "min"; None (the default): "min" for a column whose name has
            "loss" in it, else "max".
        callbacks: `Callback` objects, run in every process.
        progress: add a `ProgressBar`.
        log_every: fetch the step metrics (and check them for NaN) every this many steps.
        log: where `LogLines` sends one line per epoch and the messages; None for silence.
        plot: also draw ``metrics.png`` (`MetricsFiles`).
        metadata: JSON data stored in every checkpoint's metadata (e.g. hyperparameters).
        model_config: the JSON config that rebuilds the model, stored in the checkpoints.
        resume_command: the command that resumes this run, printed on Ctrl-C.
        checkpoint_every_steps: also commit a checkpoint (train state and data position)
            after every step whose global step count is a multiple of this. Needs ``output_dir``.
        mesh: train data-parallel on this mesh (`jaxdl.data_mesh`); in a multi-process run
            every process calls `fit` with the same arguments, and ``output_dir`` must be on a
            file system all processes see.

    Returns:
        A `FitResult`.

    Raises:
        RunDirectoryError: (a ValueError) naming the directory, before training (see
            ``output_dir`` and ``resume``).
        jaxdl.checkpoint.CheckpointError: for a run directory in an older checkpoint format.
        jaxdl.checkpoint.StorageError: (an OSError) when a checkpoint or metrics file cannot be written.
        TypeError: for an ``output_dir`` that is not a path, a ``best_metric`` that is not a string.
        ValueError: for invalid arguments, a one-shot iterator asked for several epochs, a
            ``best_metric`` that is not in the history, bad ``metrics``.
        KeyboardInterrupt: re-raised after the callbacks saw the interruption.
    """
    _check_positive(epochs=epochs, log_every=log_every)
    if checkpoint_every_steps is not None:
        _check_positive(checkpoint_every_steps=checkpoint_every_steps)
        if output_dir is None:
            raise ValueError("fit: checkpoint_every_steps needs an output_dir to write the checkpoints to.")
    metrics = check_metrics(metrics, "fit")
    best_metric, best_mode = _resolve_best(best_metric, best_mode, loss_fn, validation_data is not None, metrics,
                                           callbacks)
    output_dir = _output_path(output_dir, resume, overwrite)
    main = distributed.is_main_process()
    own = [] if not main else [
        *([LogLines(log, epochs, list(metrics))] if log is not None else []),
        *([MetricsFiles(output_dir, plot=plot)] if output_dir is not None else []),
        *([ProgressBar()] if progress else [])]
    train_step, eval_step = shared_steps(model, loss_fn, optimizer, penalty, mesh)
    loop = _Loop(train_step, eval_step, loss_fn, metrics, best_metric, best_mode, [*callbacks, *own], None,
                 {"model_config": model_config, "metadata": dict(metadata or {})}, mesh, log_every,
                 checkpoint_every_steps)
    with contextlib.ExitStack() as stack:
        if output_dir is not None:
            _check_output_dir(output_dir, resume, overwrite)
            if main:  # one run at a time (see jaxdl.checkpoint.run_directory)
                stack.enter_context(run_directory.run_lock(output_dir))
            with distributed.main_process_first("fit: open the run directory"):
                if main and overwrite:
                    removed = run_directory.remove_run(output_dir)
                    removed and loop.call("on_message", f"Overwriting {output_dir}: removed {', '.join(removed)}.")
            loop.checkpoints = RunCheckpoints(output_dir / run_directory.CHECKPOINTS, best_mode=best_mode)
            stack.callback(loop.checkpoints.close)
        return _run(loop, train_state, train_data, validation_data, epochs, output_dir, resume, resume_command)


def _run(loop: _Loop, train_state, train_data, validation_data, epochs, output_dir, resume, resume_command):
    source = EpochSource(train_data, "train_data")
    validation = None if validation_data is None else EpochSource(validation_data, "validation_data")
    position = None
    if resume:
        train_state, position = _restore(loop, train_state, output_dir, epochs)
    first = len(loop.history)
    check_epochs(source, epochs - first)
    if validation is not None:
        check_epochs(validation, epochs - first)
    loop.call("on_fit_start", epochs, first)
    if resume:
        loop.call("on_resume", list(loop.history), loop.best)
    # Train from a copy when the step donates its state (a mesh step): the caller's state, kept
    # as the last good one, stays valid.
    last_good, train_state = train_state, _kept(loop, train_state)
    elapsed_before = loop.history[-1]["elapsed_seconds"] if loop.history else 0.0
    started = time.perf_counter()
    for epoch in range(first, epochs):
        try:
            train_state = _epoch(loop, train_state, source, validation, epoch, position,
                                 elapsed_before + time.perf_counter() - started)
            position = None
        except TrainingDiverged as error:
            good = last_good if loop.last_saved is None else loop.last_saved[1]
            return _finish(loop, good, "diverged", _diverged_message(loop, error), output_dir)
        except KeyboardInterrupt:
            message = f"Interrupted in epoch {epoch + 1}; {_last_checkpoint_words(loop)}."
            if resume_command and loop.checkpoints is not None and loop.checkpoints.latest_step() is not None:
                message += f" Continue with: {resume_command}"
            _finish(loop, train_state, "interrupted", message, output_dir)
            raise
        last_good = loop.last_saved[1] if loop.last_saved is not None else _kept(loop, train_state)
        stopper = next((callback for callback in loop.callbacks if getattr(callback, "stop_training", False)), None)
        if stopper is not None and epoch + 1 < epochs:
            reason = getattr(stopper, "stop_reason", None) or f"{type(stopper).__name__} asked to stop"
            return _finish(loop, train_state, "stopped", f"Stopped after epoch {epoch + 1} of {epochs}: {reason}. "
                                                         f"{_summary(loop)}", output_dir)
    return _finish(loop, train_state, "completed", _summary(loop), output_dir)


def _restore(loop: _Loop, train_state, output_dir: pathlib.Path, epochs: int):
    """The newest checkpoint's train state and data position (None after an epoch); sets the history."""
    directory = loop.checkpoints.step_dir(loop.checkpoints.latest_step())
    train_state, manifest = load_checkpoint(directory, train_state)
    saved = manifest["metadata"]
    if (saved.get("best_metric"), saved.get("best_mode")) != (loop.best_metric, loop.best_mode):
        raise ValueError(f"fit: {output_dir} keeps the best epoch by {saved.get('best_metric')!r} "
                         f"({saved.get('best_mode')}), not {loop.best_metric!r} ({loop.best_mode}); resume it with "
                         f"best_metric={saved.get('best_metric')!r}, best_mode={saved.get('best_mode')!r}.")
    loop.history, loop.best = list(saved.get("history", [])), saved.get("best")
    position = saved.get("position")
    where = (f"after epoch {len(loop.history)} of {epochs}" if position is None else
             f"in epoch {position['epoch'] + 1} of {epochs} after batch {position['batches']}")
    loop.call("on_message", f"Resuming {output_dir} {where} (step {int(train_state.step)}).")
    return train_state, position


def _epoch(loop: _Loop, train_state: TrainState, source: EpochSource, validation, epoch: int, position,
           elapsed: float) -> TrainState:
    """Trains, validates, records and commits one epoch; returns the new train state."""
    start = time.perf_counter()
    steps = source.steps(epoch)
    _check_same_epoch_length(position, steps, epoch)
    batches = source.epoch(epoch, position)
    loop.call("on_epoch_start", epoch, steps if steps is None or position is None else steps - position["batches"])
    try:
        train_state, train_loss = _train_epoch(loop, train_state, batches, epoch, steps, position)
    finally:
        batches.close()
    _check_finite(train_state, f"in epoch {epoch + 1}")
    row = {"epoch": epoch + 1, "step": int(train_state.step), "train_loss": train_loss}
    if validation is not None:
        result = evaluate(loop.eval_step, train_state.params, train_state.state, validation.epoch(epoch),
                          loop.loss_fn, metrics=loop.metrics)
        row.update(validation_loss=result["loss"], validation_accuracy=result["accuracy"],
                   **{f"validation_{name}": result[name] for name in loop.metrics})
    now = time.perf_counter()
    row.update(epoch_seconds=now - start, elapsed_seconds=elapsed + now - start)
    loop.call("on_epoch_end", row, train_state)
    metric = _update_best(loop, row)
    loop.history.append(row)
    _save(loop, train_state, metric=metric)
    loop.call("on_epoch_saved", list(loop.history), loop.best)
    return train_state


def _train_epoch(loop: _Loop, train_state: TrainState, batches, epoch: int, steps: int | None,
                 position: dict | None) -> tuple[TrainState, float]:
    """The epoch's steps (from ``position`` on, when given); returns (train_state, mean loss per example)."""
    pending = []
    sums = [0.0, 0] if position is None else [position["loss_sum"], position["examples"]]
    step = int(train_state.step) if loop.every else 0  # the global step count, kept on the host
    for batch in batches:
        if batch.reset:
            train_state = train_state._replace(state=reset_memory(loop.eval_step.model, train_state.state))
        train_state, metrics = loop.train_step(train_state, batch.x, batch.labels, where="fit")
        pending.append((metrics, global_rows(loop.mesh, int(np.shape(batch.x)[0]))))
        if len(pending) == loop.log_every:
            _drain(loop, pending, epoch, train_state, sums)
        step += 1
        if loop.every and step % loop.every == 0 and batches.batches != steps:
            _drain(loop, pending, epoch, train_state, sums)
            _check_finite(train_state, f"in epoch {epoch + 1} (at step {step})")
            _save(loop, train_state, position={**batches.position(), "steps": steps, "loss_sum": sums[0],
                                               "examples": sums[1]})
    _drain(loop, pending, epoch, train_state, sums)
    if sums[1] == 0:
        raise ValueError(f"fit: train_data gave no batch in epoch {epoch + 1}.")
    return train_state, sums[0] / sums[1]


def _drain(loop: _Loop, pending: list, epoch: int, train_state, sums: list) -> None:
    """Fetches pending step metrics, checks them for NaN/inf, hands them to the callbacks, adds them to ``sums``."""
    if not pending:
        return
    values = jax.device_get([metrics for metrics, _ in pending])
    entries = [{**{name: float(value) for name, value in metrics.items()}, "examples": size}
               for metrics, (_, size) in zip(values, pending)]
    pending.clear()
    for entry in entries:
        if not math.isfinite(entry["loss"]):
            raise TrainingDiverged(f"the loss became {entry['loss']} in epoch {epoch + 1} "
                                   f"(around step {int(train_state.step)})")
    loop.call("on_steps", epoch, entries)
    for entry in entries:  # one step at a time: the sum does not depend on when it is drained
        sums[0] += entry["example_loss"] * entry["examples"]
        sums[1] += entry["examples"]


def _save(loop: _Loop, train_state: TrainState, *, metric: float | None = None, position: dict | None = None) -> None:
    """Commits ``train_state`` with the history (and a mid-epoch ``position``) as one step."""
    if loop.checkpoints is None:
        return
    metadata = {**loop.saved["metadata"], "epoch": len(loop.history), "history": loop.history, "best": loop.best,
                "best_metric": loop.best_metric, "best_mode": loop.best_mode, "position": position}
    step = int(train_state.step)
    loop.checkpoints.save(step, train_state, metadata=metadata, model_config=loop.saved["model_config"],
                          metric=metric)
    where = (f"epoch {len(loop.history)}" if position is None else
             f"epoch {position['epoch'] + 1}, after batch {position['batches']}")
    loop.last_saved = (f"{loop.checkpoints.step_dir(step)} ({where})", _kept(loop, train_state))


def _check_finite(train_state: TrainState, where: str) -> None:
    for leaf in jax.tree.leaves(train_state.params):
        leaf = np.asarray(leaf)
        if np.issubdtype(leaf.dtype, np.inexact) and not np.all(np.isfinite(leaf)):
            raise TrainingDiverged(f"the parameters became NaN or infinite {where}")


def _check_same_epoch_length(position: dict | None, steps: int | None, epoch: int) -> None:
    """A mid-epoch position is only meaningful for an epoch of the same number of steps."""
    saved = None if position is None else position.get("steps")
    if saved is not None and steps is not None and saved != steps:
        raise ValueError(
            f"fit: the checkpoint was saved in an epoch of {saved} steps, but epoch {epoch + 1} of the training "
            f"data now has {steps} (another batch size or other data); resume with the data of the interrupted run.")


def _update_best(loop: _Loop, row: dict) -> float | None:
    """Records ``row`` as the best epoch if its ``best_metric`` beats the best so far; returns
    the value the checkpoint is ranked by (None without a best_metric)."""
    if loop.best_metric is None:
        return None
    if loop.best_metric not in row:
        raise ValueError(f"fit: best_metric {loop.best_metric!r} is not in the history's columns {sorted(row)}.")
    value = row[loop.best_metric]
    if value is None:  # e.g. validation_accuracy for labels that are not a class array
        raise ValueError(f"fit: best_metric {loop.best_metric!r} has no value in epoch {row['epoch']} (accuracy "
                         f"needs a classifier's labels: integer, one-hot or 0/1; these look like regression "
                         f"targets); pick another, e.g. best_metric='validation_loss' (the default for a loss "
                         f"that is not a classifier's), or None for no best checkpoint.")
    if not math.isfinite(value):
        return None
    previous = None if loop.best is None else loop.best[loop.best_metric]
    if previous is None or (value > previous if loop.best_mode == "max" else value < previous):
        loop.best = {"epoch": row["epoch"], loop.best_metric: value}
    return value


def _kept(loop: _Loop, train_state: TrainState) -> TrainState:
    """``train_state``, copied when the step donates it (a mesh step) so that it outlives the next step."""
    return train_state if loop.mesh is None else keep(train_state)


def _check_positive(**values) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"fit: {name} must be a positive int, got {value!r}.")


def _resolve_best(best_metric, best_mode, loss_fn, has_validation: bool, metrics: Mapping[str, Callable],
                  callbacks) -> tuple[str | None, str]:
    """``best_metric`` and ``best_mode`` with "auto" and None decided (see `fit`), checked."""
    if best_metric == "auto":
        best_metric = "validation_accuracy" if is_classification_loss(loss_fn) else "validation_loss"
    if best_metric is not None and not isinstance(best_metric, str):
        raise TypeError(f"fit: best_metric must be a history column's name, 'auto' or None, got {best_metric!r}.")
    if not has_validation and best_metric is not None and best_metric.startswith("validation_"):
        best_metric = None
    known = ["train_loss", *(["validation_loss", "validation_accuracy", *(f"validation_{name}" for name in metrics)]
                             if has_validation else [])]
    if best_metric is not None and best_metric not in known and not callbacks:
        raise ValueError(f"fit: best_metric {best_metric!r} is not a column of the history; expected one of {known} "
                         f"(or a column a callback adds), or None for no best checkpoint.")
    if best_mode is None:
        best_mode = "min" if best_metric is not None and "loss" in best_metric else "max"
    if best_mode not in MODES:
        raise ValueError(f"fit: best_mode must be one of {MODES} or None, got {best_mode!r}.")
    return best_metric, best_mode


def _output_path(output_dir, resume: bool, overwrite: bool) -> pathlib.Path | None:
    """``output_dir`` as a path (None stays None), checked with ``resume`` and ``overwrite``."""
    if overwrite and resume:
        raise ValueError("fit: overwrite=True starts a new run and resume=True continues one; pass one of them.")
    if output_dir is None:
        if resume:
            raise ValueError("fit: resume=True needs the output_dir of the run to continue.")
        return None
    if not isinstance(output_dir, (str, os.PathLike)):
        raise TypeError(f"fit: output_dir must be a path (str or os.PathLike) or None, got "
                        f"{type(output_dir).__name__} {output_dir!r}.")
    if os.fspath(output_dir) in ("", b""):
        raise ValueError("fit: output_dir is an empty string; pass a directory (e.g. 'runs/lenet'; '.' for the "
                         "current one) or None to keep everything in memory.")
    output_dir = pathlib.Path(os.fsdecode(output_dir))
    run_directory.check_not_file(output_dir)
    return output_dir


def resume_checkpoint_dir(output_dir) -> pathlib.Path | None:
    """The step directory ``fit(..., resume=True)`` continues the run in ``output_dir`` from (the
    newest one), or None when the run holds none."""
    return find_step_dir(pathlib.Path(output_dir) / run_directory.CHECKPOINTS, "last")


def _check_output_dir(output_dir: pathlib.Path, resume: bool, overwrite: bool) -> None:
    """Checks, in every process and before anything collective, that ``output_dir`` fits the
    request (see `fit`'s Raises)."""
    latest = resume_checkpoint_dir(output_dir)
    if resume and latest is None:
        raise RunDirectoryError(f"fit: resume=True but {output_dir / 'checkpoints'} holds no checkpoint (no epoch "
                                f"was committed); start without resume.")
    if not (resume or overwrite):
        if latest is not None:
            raise RunDirectoryError(f"fit: {output_dir} already holds a run (checkpoints/{latest.name}); resume it "
                                    f"(resume=True), start it anew (overwrite=True) or choose another output "
                                    f"directory.")
        metrics = [name for name in run_directory.METRICS_FILES if (output_dir / name).exists()]
        others = sorted(run_directory.foreign_entries(output_dir) + metrics)
        if others:
            shown = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
            note = "; metrics without a checkpoint are not a run" if metrics else ""
            raise RunDirectoryError(
                f"fit: {output_dir} holds files that are not a jaxdl run's ({shown}{note}); choose another output "
                f"directory, or pass overwrite=True to write the run there (files a run does not write are left "
                f"as they are; metrics.csv and metrics.png are replaced).")


def _last_checkpoint_words(loop: _Loop) -> str:
    if loop.checkpoints is None:
        return "no checkpoint is written without an output_dir"
    latest = loop.last_saved[0] if loop.last_saved else loop.checkpoints.step_dir(loop.checkpoints.latest_step())
    return "no checkpoint was written yet" if latest is None else f"the last checkpoint is {latest}"


def _diverged_message(loop: _Loop, error: TrainingDiverged) -> str:
    state = ("the returned state is that checkpoint's" if loop.last_saved is not None else
             f"the returned state is the one after epoch {len(loop.history)}" if loop.history else
             "the returned state is the one training started from")
    return f"Training stopped: {error}. {_last_checkpoint_words(loop).capitalize()}; {state}."


def _summary(loop: _Loop) -> str:
    if not loop.history:
        return "Nothing to do."
    summary = f"Done: {len(loop.history)} epochs, {loop.history[-1]['elapsed_seconds']:.0f} s"
    if loop.best is not None:
        best = loop.checkpoints.step_dir(loop.checkpoints.best_step()) if loop.checkpoints is not None else None
        where = f" ({best})" if best is not None else ""
        value = loop.best[loop.best_metric]
        shown = f"{100 * value:.2f}%" if loop.best_metric.endswith("accuracy") else f"{value:.4f}"
        summary += f"; best {loop.best_metric} {shown} at epoch {loop.best['epoch']}{where}"
    return summary + "."


def _finish(loop: _Loop, train_state: TrainState, status: str, message: str, output_dir) -> FitResult:
    result = FitResult(train_state, loop.history, status, message, loop.best, output_dir)
    loop.call("on_fit_end", result)
    return result
