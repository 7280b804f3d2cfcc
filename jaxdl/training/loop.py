"""`fit`: the ONE training loop (epochs, validation, checkpoints, resume, NaN guard), a small loop with callbacks.

Every entry point runs it: the recipes behind ``scripts/``, `jaxdl.NeuralNetwork.train`.
You build the steps, `fit` runs them::

    train_step = jaxdl.make_train_step(model, jaxdl.cross_entropy, jaxdl.Adam(1e-3))
    result = jaxdl.fit(train_step, train_state, train_batches, epochs=8,
                       validation_data=validation_batches, run=jaxdl.Run("runs/lenet"))

What it does each epoch:

1. Trains over ``train_data.epoch(epoch)`` with ``train_step``. The step's metrics stay on
   the device and are fetched every ``log_every`` steps; a non-finite loss there, or
   non-finite params at the epoch's end, stops training (`TrainingDiverged`).
2. Evaluates ``validation_data`` with `jaxdl.evaluate` and ``eval_step``.
3. Appends a row to the history: ``epoch`` (1-based), ``step``, ``train_loss`` (mean loss
   per example), ``validation_loss``, ``validation_accuracy`` (a classifier's labels only),
   ``validation_<name>`` of ``metrics``, ``epoch_seconds``, ``elapsed_seconds``, and whatever
   callbacks add.
4. With a `jaxdl.Run`: commits the epoch as one step of ``<output_dir>/checkpoints/``
   (`jaxdl.checkpoint.RunCheckpoints`: the train state and, in the same step, the history,
   the best epoch, the run's ``metadata`` and ``model_config``), ranked by ``best_metric``.
   Orbax keeps the newest step (``last``) and the best one (``best``).

Everything else is a callback (`jaxdl.training.callbacks`): the log lines (`LogLines`),
``metrics.csv`` and ``metrics.png`` (`MetricsFiles`), the progress bar, early stopping.

Mid-epoch checkpoints (``Run(checkpoint_every_steps=N)``): after every step whose global step
count is a multiple of N (but an epoch's last), the train state is committed as an ordinary
step, with the data position in its metadata: ``{"epoch", "batches", "iterator", "steps",
"loss_sum", "examples"}`` (the epoch in progress, the batches consumed, the data iterator's
grain state, the running sums of the epoch's train loss). It is not ranked, so orbax drops
it once a newer step exists.

Resume (``Run(resume=True)``): continues from the newest step: after its epoch, or inside it
from the stored data position. With an epoch-indexed data source the result is bit-identical
to an unbroken run (params, optimizer state, history except the timings).

Stopping: a non-finite loss returns a `FitResult` with ``status="diverged"``, the last good
train state (the last checkpoint's, or the starting one) and a message naming the checkpoint.
Ctrl-C ends the callbacks with ``status="interrupted"`` (`LogLines` prints where the last
checkpoint is, and its ``resume_command``), then re-raises.

Several devices: a step built with ``mesh=`` (`jaxdl.make_train_step`) trains data-parallel
(state donated: the loop copies the last good state it keeps). In a multi-process run every
process runs `fit` and saves (orbax writes once); the callbacks with ``main_process_only``
(log, progress, metrics files) run in process 0 alone.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import pathlib
import time
from typing import Callable, Mapping, Sequence

import jax
import numpy as np

from jaxdl import distributed
from jaxdl.checkpoint import RunCheckpoints, load_checkpoint, run_directory
from jaxdl.core import Layer
from jaxdl.layers.recurrent.memory import reset_memory
from jaxdl.losses import is_classification_loss
from jaxdl.training.callbacks import Callback, default_callbacks
from jaxdl.training.data import EpochSource, check_epochs
from jaxdl.training.evaluation import check_metrics, evaluate
from jaxdl.training.parallel import global_rows, keep
from jaxdl.training.run import Run, check_run_directory, run_step_dir
from jaxdl.training.state import TrainState
from jaxdl.training.step import CheckedStep, make_eval_step

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
        output_dir: where checkpoints and metrics are (None without a `jaxdl.Run`).
    """

    train_state: TrainState
    history: list
    status: str
    message: str
    best: dict | None = None
    output_dir: pathlib.Path | None = None

    def checkpoint_dir(self, which: str = "last") -> pathlib.Path | None:
        """The step directory of the run's ``"last"`` or ``"best"`` checkpoint (None without one)."""
        return None if self.output_dir is None else run_step_dir(self.output_dir, which)


@dataclasses.dataclass
class _Loop:
    """What one `fit` call keeps while it runs."""

    train_step: Callable
    eval_step: Callable | None
    model: object
    loss_fn: Callable | None
    metrics: Mapping[str, Callable]
    best_metric: str | None
    best_mode: str
    callbacks: list
    run: Run | None
    mesh: object = None
    log_every: int = 50
    checkpoints: RunCheckpoints | None = None
    history: list = dataclasses.field(default_factory=list)
    best: dict | None = None
    last_saved: tuple | None = None  # (step directory words, train state) of the newest checkpoint this call wrote

    @property
    def step_options(self) -> dict:
        """A checked step's label errors name `fit`; a step of the caller's own takes no options."""
        return {"where": "fit"} if isinstance(self.train_step, CheckedStep) else {}

    @property
    def every(self) -> int | None:
        return None if self.run is None else self.run.checkpoint_every_steps

    def call(self, hook: str, *args) -> None:
        for callback in self.callbacks:
            getattr(callback, hook)(*args)


def fit(train_step: Callable, train_state: TrainState, train_data, *, epochs: int, eval_step: Callable | None = None,
        validation_data=None, metrics: Mapping[str, Callable] | None = None, best_metric: str | None = "auto",
        best_mode: str | None = None, run: Run | None = None, callbacks: Sequence[Callback] | None = None,
        log_every: int = 50) -> FitResult:
    """Runs ``train_step`` over ``train_data`` for ``epochs`` epochs (see the module docstring).

    Args:
        train_step: ``step(train_state, x, labels) -> (train_state, metrics)``, as
            `jaxdl.make_train_step` builds it (its ``model``, ``loss_fn`` and ``mesh``
            attributes tell `fit` how to validate, reset memory and count a mesh's rows; a step
            of your own needs ``model`` and ``loss_fn`` attributes for validation).
        train_state: the starting state (`jaxdl.create_train_state`); with ``run.resume`` only
            its structure is used (the checkpoint's values replace it).
        train_data: an epoch-indexed source, a re-iterable, or a one-shot iterator for a
            single epoch (`jaxdl.training.data`).
        epochs: the total number of epochs of the run (a resumed run continues up to it).
        eval_step: the evaluation step for ``validation_data``; default
            ``make_eval_step(train_step.model, mesh=train_step.mesh)``. Pass the one you will
            use afterwards (e.g. on the test split) to compile it once.
        validation_data: evaluated after every epoch (same kinds as ``train_data``), or None.
        metrics: name -> ``function(outputs, labels)`` giving one value per example, evaluated
            on ``validation_data`` after every epoch: the history, the log line,
            ``metrics.csv`` and ``metrics.png`` get a ``validation_<name>`` column.
        best_metric: the history column that ranks the checkpoints for ``best``; None for no
            best. "auto" (the default): "validation_accuracy" for a classifier's loss
            (`jaxdl.losses.is_classification_loss`), else "validation_loss", so a regression
            is never judged by an accuracy. Checked before training (against the columns of
            fit and of callbacks that declare theirs); without validation data a validation
            column means None.
        best_mode: "max" or "min"; None (the default): "min" for a column whose name has
            "loss" in it, else "max".
        run: a `jaxdl.Run` (output directory, resume, overwrite, mid-epoch checkpoints,
            metadata); None keeps everything in memory.
        callbacks: `Callback` objects; None (the default) runs `default_callbacks(run)`
            (log lines, and the metrics files with a run). Those with ``main_process_only``
            run in process 0 of a multi-process run only.
        log_every: fetch the step metrics (and check them for NaN) every this many steps.

    Returns:
        A `FitResult`.

    Raises:
        RunDirectoryError: (a ValueError) naming the directory, before training (see `jaxdl.Run`).
        jaxdl.checkpoint.CheckpointError: for a run directory in an older checkpoint format.
        jaxdl.checkpoint.StorageError: (an OSError) when a checkpoint or metrics file cannot be written.
        TypeError: for a model given where the step goes (the call of jaxdl 0.x), a ``run``
            that is not a `jaxdl.Run`, callbacks that are not `Callback` objects, a step
            without the attributes validation needs, a ``best_metric`` that is not a string.
        ValueError: for invalid arguments, a one-shot iterator asked for several epochs, a
            ``best_metric`` that is not in the history, bad ``metrics``.
        KeyboardInterrupt: re-raised after the callbacks saw the interruption.
    """
    _check_step(train_step)
    _check_positive(epochs=epochs, log_every=log_every)
    if run is not None and not isinstance(run, Run):
        raise TypeError(f"fit: run must be a jaxdl.Run (e.g. jaxdl.Run('runs/lenet')) or None, got "
                        f"{type(run).__name__} {run!r}.")
    callbacks = _check_callbacks(default_callbacks(run) if callbacks is None else callbacks)
    metrics = check_metrics(metrics, "fit")
    loss_fn = _step_attribute(train_step, "loss_fn", validation_data is not None)
    model = getattr(train_step, "model", None)
    mesh = getattr(train_step, "mesh", None)
    if validation_data is not None and eval_step is None:
        eval_step = make_eval_step(_step_attribute(train_step, "model", True), mesh=mesh)
    best_metric, best_mode = _resolve_best(best_metric, best_mode, loss_fn, validation_data is not None, metrics,
                                           callbacks)
    main = distributed.is_main_process()
    loop = _Loop(train_step, eval_step, model if model is not None else getattr(eval_step, "model", None), loss_fn,
                 metrics, best_metric, best_mode, [c for c in callbacks if main or not c.main_process_only], run,
                 mesh, log_every)
    with contextlib.ExitStack() as stack:
        if run is not None:
            check_run_directory(run)
            if main:  # one run at a time (see jaxdl.checkpoint.run_directory)
                stack.enter_context(run_directory.run_lock(run.output_dir))
            with distributed.main_process_first("fit: open the run directory"):
                if main and run.overwrite:
                    removed = run_directory.remove_run(run.output_dir)
                    removed and loop.call("on_message", f"Overwriting {run.output_dir}: removed {', '.join(removed)}.")
            loop.checkpoints = RunCheckpoints(run.checkpoints, best_mode=best_mode)
            stack.callback(loop.checkpoints.close)
        return _run(loop, train_state, train_data, validation_data, epochs)


def _run(loop: _Loop, train_state, train_data, validation_data, epochs):
    source = EpochSource(train_data, "train_data")
    validation = None if validation_data is None else EpochSource(validation_data, "validation_data")
    position = None
    resume = loop.run is not None and loop.run.resume
    if resume:
        train_state, position = _restore(loop, train_state, epochs)
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
            return _finish(loop, good, "diverged", _diverged_message(loop, error))
        except KeyboardInterrupt:
            _finish(loop, train_state, "interrupted", f"Interrupted in epoch {epoch + 1}; "
                                                      f"{_last_checkpoint_words(loop)}.")
            raise
        last_good = loop.last_saved[1] if loop.last_saved is not None else _kept(loop, train_state)
        stopper = next((callback for callback in loop.callbacks if getattr(callback, "stop_training", False)), None)
        if stopper is not None and epoch + 1 < epochs:
            reason = getattr(stopper, "stop_reason", None) or f"{type(stopper).__name__} asked to stop"
            return _finish(loop, train_state, "stopped", f"Stopped after epoch {epoch + 1} of {epochs}: {reason}. "
                                                         f"{_summary(loop)}")
    return _finish(loop, train_state, "completed", _summary(loop))


def _restore(loop: _Loop, train_state, epochs: int):
    """The newest checkpoint's train state and data position (None after an epoch); sets the history."""
    output_dir = loop.run.output_dir
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
            train_state = train_state._replace(state=reset_memory(_memory_model(loop), train_state.state))
        train_state, metrics = loop.train_step(train_state, batch.x, batch.labels, **loop.step_options)
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
    metadata = {**(loop.run.metadata or {}), "epoch": len(loop.history), "history": loop.history, "best": loop.best,
                "best_metric": loop.best_metric, "best_mode": loop.best_mode, "position": position}
    step = int(train_state.step)
    loop.checkpoints.save(step, train_state, metadata=metadata, model_config=loop.run.model_config,
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
                  callbacks: Sequence[Callback]) -> tuple[str | None, str]:
    """``best_metric`` and ``best_mode`` with "auto" and None decided (see `fit`), checked."""
    if best_metric == "auto":
        best_metric = "validation_accuracy" if is_classification_loss(loss_fn) else "validation_loss"
    if best_metric is not None and not isinstance(best_metric, str):
        raise TypeError(f"fit: best_metric must be a history column's name, 'auto' or None, got {best_metric!r}.")
    if not has_validation and best_metric is not None and best_metric.startswith("validation_"):
        best_metric = None
    known = ["train_loss", *(["validation_loss", "validation_accuracy", *(f"validation_{name}" for name in metrics)]
                             if has_validation else [])]
    declared = [callback.columns for callback in callbacks]
    if best_metric is not None and None not in declared:  # every callback says which columns it adds
        known += [column for columns in declared for column in columns]
        if best_metric not in known:
            raise ValueError(f"fit: best_metric {best_metric!r} is not a column of the history; expected one of "
                             f"{known}, or None for no best checkpoint.")
    if best_mode is None:
        best_mode = "min" if best_metric is not None and "loss" in best_metric else "max"
    if best_mode not in MODES:
        raise ValueError(f"fit: best_mode must be one of {MODES} or None, got {best_mode!r}.")
    return best_metric, best_mode


def _check_step(train_step) -> None:
    """A step, not a model (jaxdl 0.x's ``fit(model, loss_fn, optimizer, train_state, data)``)."""
    if isinstance(train_step, Layer):
        raise TypeError("fit: the first argument is the train step, got a model (a Layer). Build the step first: "
                        "fit(jaxdl.make_train_step(model, loss_fn, optimizer), train_state, train_data, epochs=...) "
                        "(penalty= and mesh= go to make_train_step; output_dir=, resume= to jaxdl.Run).")
    if not callable(train_step):
        raise TypeError(f"fit: train_step must be callable (jaxdl.make_train_step), got {type(train_step).__name__}.")


def _step_attribute(train_step, name: str, needed: bool):
    """``train_step.<name>`` (``model`` or ``loss_fn``, which `jaxdl.make_train_step` sets); an error when needed and missing."""
    value = getattr(train_step, name, None)
    if value is None and needed:
        alternative = " (or pass eval_step=, e.g. jaxdl.make_eval_step(model))" if name == "model" else ""
        raise TypeError(f"fit: train_step has no {name!r} attribute, which validation needs (the steps of "
                        f"jaxdl.make_train_step have one); set train_step.{name}{alternative}.")
    return value


def _check_callbacks(callbacks) -> list[Callback]:
    if isinstance(callbacks, Callback) or not isinstance(callbacks, (list, tuple)):
        raise TypeError(f"fit: callbacks must be a list of Callback objects (or None for the defaults), got "
                        f"{type(callbacks).__name__}.")
    for callback in callbacks:
        if not isinstance(callback, Callback):
            raise TypeError(f"fit: callbacks must be Callback objects (subclass jaxdl.Callback), got "
                            f"{type(callback).__name__} {callback!r}.")
    return list(callbacks)


def _memory_model(loop: _Loop):
    """The model whose memory a data source's ``reset`` batch clears."""
    if loop.model is None:
        raise TypeError("fit: the data asks to reset the recurrent memory (Batch.reset), but train_step has no "
                        "'model' attribute to find it (the steps of jaxdl.make_train_step have one).")
    return loop.model


def _last_checkpoint_words(loop: _Loop) -> str:
    if loop.checkpoints is None:
        return "no checkpoint is written without a jaxdl.Run"
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


def _finish(loop: _Loop, train_state: TrainState, status: str, message: str) -> FitResult:
    result = FitResult(train_state, loop.history, status, message, loop.best,
                       None if loop.run is None else loop.run.output_dir)
    loop.call("on_fit_end", result)
    return result
