"""`fit`: the ONE training loop (epochs, validation, checkpoints, resume, NaN guard).

Every entry point runs it: ``scripts/train_lenet.py`` (through `jaxdl.recipes.lenet`),
``scripts/train_sequence.py``, `jaxdl.NeuralNetwork.train`. What it does each epoch:

1. Trains over ``train_data.epoch(epoch)`` with the step of `jaxdl.make_train_step`
   (the step checks concrete labels on the host against the model's output first). The
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
   with the history in the checkpoint's metadata, then writes ``metrics.csv`` and, when due
   (at the end, or `PLOT_INTERVAL_SECONDS` after the last drawing), ``metrics.png`` from that
   history.

Mid-epoch checkpoints (``checkpoint_every_steps=N`` with an ``output_dir``): after every
step whose global step count is a multiple of N (except an epoch's last step, which the
epoch's checkpoint follows), the step metrics are fetched and checked and the train state is
saved as ``checkpoints/mid_epoch`` (`jaxdl.checkpoint.save_checkpoint`: one atomic link
swap, replacing the previous one) with, in its metadata, the history so far and the data
position: ``{"epoch", "batches", "iterator", "steps", "loss_sum", "examples"}`` (the epoch in
progress, the batches consumed, the data iterator's state (grain's ``get_state()``, see
`jaxdl.training.data`) and the running sums of the epoch's train loss). The epoch's
commit then removes it; one left older than ``checkpoints/last`` (a kill in between) is
ignored and removed.

The output directory (see `fit`'s ``output_dir``) is checked before anything is trained or
any collective starts: in every process for what it holds (a run, other files, a committed
checkpoint to resume), and in the writing process for whether it can write there and has room
for a checkpoint; that process holds the run's lock (`jaxdl.checkpoint.run_directory`) until
`fit` returns, so a second run into the directory is refused at once.

Resume: ``resume=True`` continues from the newer of ``checkpoints/last`` (with the next
epoch) and ``checkpoints/mid_epoch`` (inside its epoch, from the stored data position, with
the stored loss sums). With an epoch-indexed data source (shuffling and augmentation a
function of seed and epoch, e.g. `jaxdl.datasets.pipeline.EpochBatches`) the result is
bit-identical to an unbroken run: params, optimizer state, history (except the timings).
Callbacks see only the steps this call trains (``on_epoch_start`` gets the number left).

Stopping: a non-finite loss returns a `FitResult` with ``status="diverged"``, the last good
train state (the last checkpoint's, or the state before the first epoch) and a message that
names the checkpoint it came from, or says none was written. Ctrl-C (KeyboardInterrupt)
logs where the last checkpoint is and ``resume_command`` (if given), then re-raises.

Several devices (``mesh=``, `jaxdl.training.parallel`): the same loop runs the mesh step
(global batch sharded, state replicated and donated: the loop copies the last good state it
keeps). In a multi-process run (`jaxdl.distributed`) every process runs `fit`; process 0
alone logs, shows progress and writes metrics.csv/png, and the checkpoint writes are
collective (process 0 writes, the others wait), so the run directory must be on a file
system all processes see.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import pathlib
import time
from typing import Any, Callable, Mapping, Sequence

import jax
import numpy as np

from jaxdl import checkpoint, distributed
from jaxdl.checkpoint import run_directory
from jaxdl.checkpoint.errors import RunDirectoryError
from jaxdl.checkpoint.directory import checkpoint_bytes, check_free_space
from jaxdl.checkpoint.entries import named_leaves
from jaxdl.checkpoint.faults import fault_point
from jaxdl.checkpoint.files import remove as remove_path
from jaxdl.layers.recurrent.memory import reset_memory
from jaxdl.training.callbacks import Callback, ProgressBar
from jaxdl.training.data import EpochSource, check_epochs
from jaxdl.losses import is_classification_loss
from jaxdl.training.evaluation import check_metrics, evaluate
from jaxdl.training.history import plot_history, remove_stale_temporaries, write_metrics_csv
from jaxdl.training.parallel import global_rows, keep
from jaxdl.training.state import TrainState
from jaxdl.training.step import shared_steps

MODES = ("max", "min")
#: The mid-epoch checkpoint's name in ``<output_dir>/checkpoints`` (module docstring).
MID_EPOCH = "mid_epoch"


class TrainingDiverged(RuntimeError):
    """The training loss or the parameters became NaN or infinite."""


@dataclasses.dataclass
class FitResult:
    """What `fit` returns.

    Attributes:
        train_state: the final `TrainState` (the last good one when training diverged).
        history: one dict per finished epoch (all epochs of the run, resumed ones included).
        status: "completed", "diverged", or "stopped" (a callback such as `EarlyStopping`
            asked to stop before the last epoch).
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
    metrics: Mapping[str, Callable]
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
    checkpoint_every_steps: int | None = None
    position: dict | None = None  # where the first epoch of this call starts (a mid-epoch resume)
    mid_epoch: dict | None = None  # the data position of the newest mid-epoch checkpoint
    mid_epoch_state: Any = None  # its train state, when this call saved it
    mesh: Any = None  # the data-parallel mesh, or None (one device)
    plotted_rows: int = 0  # history rows in the newest metrics.png
    plotted_at: float = dataclasses.field(default_factory=time.monotonic)  # when it was drawn (or fit started)


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
        output_dir: where ``checkpoints/last``, ``checkpoints/best``, ``metrics.csv`` and
            ``metrics.png`` go; None keeps everything in memory. It is checked before training:
            a directory that already holds a run is refused unless ``resume=True`` (or
            ``overwrite=True``), one holding anything else (files a jaxdl run does not write,
            or a ``metrics.csv`` without a checkpoint) unless ``overwrite=True``; a file, an
            unwritable directory or a full disk is refused. One run at a time: the writing
            process holds ``<output_dir>/.jaxdl-run.lock`` (`jaxdl.checkpoint.run_directory`)
            for the whole call, and a second `fit` into the directory is refused at once.
        resume: continue the run in ``output_dir`` from ``checkpoints/last`` or, when newer,
            ``checkpoints/mid_epoch``.
        overwrite: start a new run in an ``output_dir`` that holds an old run (its checkpoints,
            ``metrics.csv`` and ``metrics.png`` are removed first) or files a run does not
            write (they are left as they are). Not with ``resume``.
        metrics: name -> ``function(outputs, labels)`` giving one value per example, evaluated
            on ``validation_data`` after every epoch (`jaxdl.evaluate`): the history, the log
            line, ``metrics.csv`` and ``metrics.png`` get a ``validation_<name>`` column.
        best_metric: the history column that picks ``checkpoints/best`` ("validation_loss",
            "validation_<name>" of ``metrics``...); None for no best (also when there is no
            validation data and the column is a validation one). "auto" (the default):
            "validation_accuracy" for a classifier's loss (`jaxdl.losses.is_classification_loss`:
            `jaxdl.cross_entropy`, `jaxdl.softmax_cross_entropy`), else "validation_loss", so
            a regression is never judged by an accuracy. Checked before training: a column
            that cannot be in the history is a ValueError (one that a callback adds is checked
            after the first epoch).
        best_mode: "max" or "min"; None (the default): "min" for a column whose name has
            "loss" in it, else "max".
        callbacks: `Callback` objects; ``progress=True`` adds a `ProgressBar`.
        log_every: fetch the step metrics (and check them for NaN) every this many steps.
        log: called with one line per epoch and the stop messages; None for silence.
        plot: also write ``metrics.png`` (matplotlib) into ``output_dir``: redrawn after an
            epoch when `PLOT_INTERVAL_SECONDS` have passed since the last drawing, and always
            when the run ends (completed, diverged or interrupted). Drawing takes 0.3-1 s, a
            sixth of an epoch of LeNet on two cores; ``metrics.csv`` is written every epoch.
        metadata: JSON data stored in every checkpoint's metadata (e.g. hyperparameters).
        model_config: the JSON config that rebuilds the model, stored in the checkpoints.
        resume_command: the command that resumes this run, printed on Ctrl-C.
        checkpoint_every_steps: also save ``checkpoints/mid_epoch`` (train state and data
            position) after every step whose global step count is a multiple of this; None
            for epoch checkpoints only. Needs ``output_dir``.
        mesh: train data-parallel on this mesh (`jaxdl.data_mesh`; `jaxdl.make_train_step`):
            each batch is the global batch, or in a multi-process run this process's rows of
            it (`jaxdl.process_batches`); the batch size must be a multiple of the device
            count. In a multi-process run every process calls `fit` with the same arguments;
            process 0 alone logs, shows progress and writes metrics, plots and (collectively,
            `jaxdl.checkpoint.collective`) checkpoints; ``output_dir`` must be on a file system
            all processes see. Callbacks run in every process.

    Returns:
        A `FitResult`.

    Raises:
        RunDirectoryError: (a ValueError) naming the directory, before training: an
            ``output_dir`` that holds a run (without ``resume`` or ``overwrite``) or other
            files (without ``overwrite``), ``resume`` without a committed checkpoint, an
            ``output_dir`` (or its ``checkpoints``) that is a file or cannot be written, or
            one another run is writing into (naming its pid).
        jaxdl.checkpoint.StorageError: (an OSError) naming the directory and the cause when a
            checkpoint or metrics file cannot be written (e.g. "no space left on device at ...").
        TypeError: for an ``output_dir`` that is not a path.
        ValueError: for invalid arguments, a one-shot iterator asked for several epochs, or a
            ``best_metric`` that is not in the history (or an accuracy for labels that are not a
            classifier's), bad ``metrics``.
        KeyboardInterrupt: re-raised after logging how to resume.
    """
    _check_arguments(epochs, log_every)
    metrics = check_metrics(metrics, "fit")
    best_metric, best_mode = _resolve_best(best_metric, best_mode, loss_fn, validation_data is not None, metrics,
                                           callbacks)
    if checkpoint_every_steps is not None:
        _check_arguments(checkpoint_every_steps=checkpoint_every_steps)
        if output_dir is None:
            raise ValueError("fit: checkpoint_every_steps needs an output_dir to write the checkpoints to.")
    output_dir = _output_path(output_dir, resume, overwrite)
    with _run_lock(output_dir):
        _check_output_dir(output_dir, train_state, resume, overwrite)
        return _fit(model, loss_fn, optimizer, train_state, train_data, epochs=epochs,
                    validation_data=validation_data, penalty=penalty, output_dir=output_dir, resume=resume,
                    overwrite=overwrite, metrics=metrics, best_metric=best_metric, best_mode=best_mode,
                    callbacks=callbacks,
                    progress=progress, log_every=log_every, log=log, plot=plot, metadata=metadata,
                    model_config=model_config, resume_command=resume_command,
                    checkpoint_every_steps=checkpoint_every_steps, mesh=mesh)


def _fit(model, loss_fn, optimizer, train_state, train_data, *, epochs, validation_data, penalty, output_dir,
         resume, overwrite, metrics, best_metric, best_mode, callbacks, progress, log_every, log, plot, metadata,
         model_config, resume_command, checkpoint_every_steps, mesh) -> FitResult:
    """`fit` after its checks, with the run directory locked."""
    train_step, eval_step = shared_steps(model, loss_fn, optimizer, penalty, mesh)
    main = distributed.is_main_process()
    run = _Run(
        train_step=train_step, eval_step=eval_step, loss_fn=loss_fn, source=EpochSource(train_data, "train_data"),
        validation=None if validation_data is None else EpochSource(validation_data, "validation_data"),
        epochs=epochs, metrics=metrics, best_metric=best_metric, best_mode=best_mode, log_every=log_every,
        callbacks=[*callbacks, *([ProgressBar()] if progress and main else [])],
        log=(log if main else None) or (lambda line: None),
        checkpoints=None, output_dir=output_dir, plot=plot, metadata=dict(metadata or {}),
        model_config=model_config, checkpoint_every_steps=checkpoint_every_steps, mesh=mesh)
    with distributed.main_process_first("fit: open the run directory"):  # process 0 cleans it first
        train_state = _open(run, train_state, resume, overwrite)
    check_epochs(run.source, epochs - len(run.history))
    if run.validation is not None:
        check_epochs(run.validation, epochs - len(run.history))
    for callback in run.callbacks:
        callback.on_fit_start(epochs, len(run.history))
    # Train from a copy when the step donates its state (a mesh step): the caller's state, kept
    # as the last good one, stays valid (e.g. a previous fit's result passed in again).
    last_good, train_state = train_state, _kept(run, train_state)
    elapsed_before = run.history[-1]["elapsed_seconds"] if run.history else 0.0
    started = time.perf_counter()
    for epoch in range(len(run.history), epochs):
        try:
            train_state = _epoch(run, train_state, epoch, started, elapsed_before)
        except TrainingDiverged as error:
            good = last_good if run.mid_epoch_state is None else run.mid_epoch_state
            return _finish(run, good, "diverged", _diverged_message(run, error))
        except KeyboardInterrupt:
            _draw_plot(run, final=True)  # metrics.csv is already written for every finished epoch
            run.log(_interrupted_message(run, epoch, resume_command))
            raise
        last_good = _kept(run, train_state)
        stopper = next((callback for callback in run.callbacks if getattr(callback, "stop_training", False)), None)
        if stopper is not None and epoch + 1 < epochs:
            reason = getattr(stopper, "stop_reason", None) or f"{type(stopper).__name__} asked to stop"
            return _finish(run, train_state, "stopped", f"Stopped after epoch {epoch + 1} of {epochs}: {reason}. "
                                                        f"{_summary(run)}")
    return _finish(run, train_state, "completed", _summary(run))


def _kept(run: _Run, train_state: TrainState) -> TrainState:
    """``train_state``, copied when the step donates it (a mesh step) so that it outlives the next step."""
    return train_state if run.mesh is None else keep(train_state)


def _check_arguments(epochs=1, log_every=1, **others) -> None:
    for name, value in (("epochs", epochs), ("log_every", log_every), *others.items()):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"fit: {name} must be a positive int, got {value!r}.")


def history_columns_known(has_validation: bool, metrics: Mapping[str, Callable]) -> list[str]:
    """The metric columns every epoch's row has (before any callback adds its own)."""
    columns = ["train_loss"]
    if has_validation:
        columns += ["validation_loss", "validation_accuracy", *(f"validation_{name}" for name in metrics)]
    return columns


def _resolve_best(best_metric, best_mode, loss_fn, has_validation: bool, metrics: Mapping[str, Callable],
                  callbacks) -> tuple[str | None, str]:
    """``best_metric`` and ``best_mode`` with "auto" and None decided (see `fit`), checked."""
    if best_metric == "auto":
        best_metric = "validation_accuracy" if is_classification_loss(loss_fn) else "validation_loss"
    if best_metric is not None and not isinstance(best_metric, str):
        raise TypeError(f"fit: best_metric must be a history column's name, 'auto' or None, got {best_metric!r}.")
    if not has_validation and best_metric is not None and best_metric.startswith("validation_"):
        best_metric = None
    known = history_columns_known(has_validation, metrics)
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


def _run_lock(output_dir: pathlib.Path | None):
    """The run directory's lock (`jaxdl.checkpoint.run_directory.run_lock`), held by the writing
    process (process 0); nothing without an output_dir or in the other processes."""
    if output_dir is None or not distributed.is_main_process():
        return contextlib.nullcontext()
    return run_directory.run_lock(output_dir)


def _check_output_dir(output_dir: pathlib.Path | None, train_state: TrainState, resume: bool,
                      overwrite: bool) -> None:
    """Checks, in every process and before anything collective, that ``output_dir`` fits the request
    (see `fit`'s Raises); the writing process also checks that it can write there."""
    if output_dir is None:
        return
    committed = resume_checkpoint_dir(output_dir) is not None or run_directory.has_epochs(output_dir)
    if resume and not committed:
        raise RunDirectoryError(f"fit: resume=True but {output_dir / 'checkpoints'} holds no checkpoint (no epoch "
                                f"was committed); start without resume.")
    if not (resume or overwrite):
        _check_new_run_directory(output_dir, committed)
    if distributed.is_main_process():
        for directory in (output_dir, output_dir / run_directory.CHECKPOINTS):
            if directory.is_dir():
                run_directory.check_writable(directory)
        if not (resume or overwrite):  # a resumed run holds its earlier checkpoints; an overwritten one frees its own
            check_free_space(output_dir, checkpoint_bytes(named_leaves(train_state)))


def _check_new_run_directory(output_dir: pathlib.Path, committed: bool) -> None:
    """A new run goes into a directory without a run and without files a run does not write."""
    if committed:
        raise RunDirectoryError(f"fit: {output_dir} already holds a run ({_committed_words(output_dir)}); resume it "
                                f"(resume=True), start it anew (overwrite=True) or choose another output directory.")
    metrics = [name for name in run_directory.METRICS_FILES if (output_dir / name).exists()]
    others = sorted(run_directory.foreign_entries(output_dir) + metrics)
    if others:
        shown = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
        note = "; metrics without a checkpoint are not a run" if metrics else ""
        raise RunDirectoryError(
            f"fit: {output_dir} holds files that are not a jaxdl run's ({shown}{note}); choose another output "
            f"directory, or pass overwrite=True to write the run there (files a run does not write are left as "
            f"they are; metrics.csv and metrics.png are replaced).")


def _open(run: _Run, train_state: TrainState, resume: bool, overwrite: bool = False) -> TrainState:
    """Opens the checkpoint set; restores the last checkpoint and history when resuming."""
    if run.output_dir is None:
        return train_state
    if overwrite and distributed.is_main_process():
        removed = run_directory.remove_run(run.output_dir)
        if removed:
            run.log(f"Overwriting {run.output_dir}: removed {', '.join(removed)}.")
    run.checkpoints = checkpoint.CheckpointSet(run.output_dir / "checkpoints", metric=run.best_metric,
                                               mode=run.best_mode)
    if distributed.is_main_process():
        remove_stale_temporaries(run.output_dir)  # left by a kill inside a metrics.csv/png write
    latest = run.checkpoints.latest_epoch()
    mid_epoch = _mid_epoch_position(run.output_dir, latest)
    if mid_epoch is None:
        _remove_mid_epoch(run.output_dir)  # older than checkpoints/last (a kill after an epoch's commit)
    if not resume:
        if latest is not None or mid_epoch is not None:
            where = (f"checkpoints/last, epoch {latest}" if mid_epoch is None else
                     f"checkpoints/{MID_EPOCH}, epoch {mid_epoch['epoch'] + 1}")
            raise RunDirectoryError(f"fit: {run.output_dir} already holds a run ({where}); "
                             f"resume it (resume=True) or choose another output directory.")
        return train_state
    if latest is None and mid_epoch is None:
        raise RunDirectoryError(f"fit: resume=True but {run.output_dir / 'checkpoints'} holds no checkpoint; start "
                         f"without resume.")
    if mid_epoch is None:
        train_state, manifest = run.checkpoints.restore(train_state, "last")
    else:
        train_state, manifest = checkpoint.load_checkpoint(run.output_dir / "checkpoints" / MID_EPOCH, train_state)
        run.position = run.mid_epoch = mid_epoch
    run.history = list(manifest["metadata"]["history"])
    run.best = manifest["metadata"].get("best")
    _write_outputs(run, final=True)  # a kill after the checkpoint but before metrics.csv left it a row short
    where = (f"after epoch {len(run.history)} of {run.epochs}" if mid_epoch is None else
             f"in epoch {mid_epoch['epoch'] + 1} of {run.epochs} after batch {mid_epoch['batches']}")
    run.log(f"Resuming {run.output_dir} {where} (step {int(train_state.step)}).")
    return train_state


def _committed_words(output_dir: pathlib.Path) -> str:
    """Which checkpoint a run in ``output_dir`` would resume from, e.g. "checkpoints/last, epoch 3"."""
    latest, mid_epoch = _committed(output_dir)
    if mid_epoch is not None:
        return f"checkpoints/{MID_EPOCH}, epoch {mid_epoch['epoch'] + 1}"
    return "checkpoints" if latest is None else f"checkpoints/last, epoch {latest}"


def resume_checkpoint_dir(output_dir) -> pathlib.Path | None:
    """The checkpoint ``fit(..., resume=True)`` continues the run in ``output_dir`` from:
    ``checkpoints/mid_epoch`` when it is newer than ``checkpoints/last``, else
    ``checkpoints/last``; None when the run holds neither."""
    latest, mid_epoch = _committed(pathlib.Path(output_dir))
    if mid_epoch is not None:
        return pathlib.Path(output_dir) / "checkpoints" / MID_EPOCH
    return None if latest is None else pathlib.Path(output_dir) / "checkpoints" / "last"


def _committed(output_dir: pathlib.Path) -> tuple[int | None, dict | None]:
    """(epochs in ``checkpoints/last`` or None, the newer mid-epoch checkpoint's position or None)."""
    try:
        latest = checkpoint.read_manifest(output_dir / "checkpoints" / "last")["run"]["epoch"]
    except (FileNotFoundError, checkpoint.CheckpointError, KeyError, TypeError):
        latest = None
    return latest, _mid_epoch_position(output_dir, latest)


def _mid_epoch_position(output_dir: pathlib.Path, latest_epoch: int | None) -> dict | None:
    """The data position of ``checkpoints/mid_epoch``, or None when there is none or it is
    older than the last epoch checkpoint (``latest_epoch`` epochs finished)."""
    try:
        manifest = checkpoint.read_manifest(pathlib.Path(output_dir) / "checkpoints" / MID_EPOCH)
    except FileNotFoundError:
        return None
    position = (manifest.get("metadata") or {}).get("position")
    if not isinstance(position, dict) or position.get("epoch", -1) < (latest_epoch or 0):
        return None
    return position


def _remove_mid_epoch(output_dir: pathlib.Path) -> None:
    """Removes ``checkpoints/mid_epoch``: the link first (then it is gone), then its data."""
    if not distributed.is_main_process():
        return
    directory = pathlib.Path(output_dir) / "checkpoints"
    link = directory / MID_EPOCH
    if link.is_symlink():
        link.unlink()
    for path in directory.glob(f".{MID_EPOCH}.*-*"):  # the data, and what a killed writer left
        remove_path(path)


def _epoch(run: _Run, train_state: TrainState, epoch: int, started: float, elapsed_before: float) -> TrainState:
    """Trains, validates and records one epoch; returns the new train state."""
    epoch_start = time.perf_counter()
    position, run.position = run.position, None
    steps = run.source.steps(epoch)
    _check_same_epoch_length(position, steps, epoch)
    batches = run.source.epoch(epoch, position)
    for callback in run.callbacks:
        callback.on_epoch_start(epoch, steps if steps is None or position is None else steps - position["batches"])
    try:
        train_state, train_loss = _train_epoch(run, train_state, batches, epoch, steps, position)
    finally:
        batches.close()
    if not _all_finite(train_state.params):
        raise TrainingDiverged(f"the parameters became NaN or infinite in epoch {epoch + 1}")
    row = {"epoch": epoch + 1, "step": int(train_state.step), "train_loss": train_loss}
    if run.validation is not None:
        result = evaluate(run.eval_step, train_state.params, train_state.state, run.validation.epoch(epoch),
                          run.loss_fn, metrics=run.metrics)
        row.update(validation_loss=result["loss"], validation_accuracy=result["accuracy"],
                   **{f"validation_{name}": result[name] for name in run.metrics})
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
        if run.mid_epoch is not None:
            _remove_mid_epoch(run.output_dir)
            run.mid_epoch = run.mid_epoch_state = None
        _write_outputs(run, final=epoch + 1 == run.epochs)
        fault_point("metrics written")
    run.log(_epoch_line(run, row, improved))
    return train_state


def _train_epoch(run: _Run, train_state: TrainState, batches, epoch: int, steps: int | None,
                 position: dict | None) -> tuple[TrainState, float]:
    """The epoch's steps (from ``position`` on, when given); returns (train_state, mean loss per example)."""
    pending = []
    loss_sum, examples = (0.0, 0) if position is None else (position["loss_sum"], position["examples"])
    every = run.checkpoint_every_steps
    step = int(train_state.step) if every else 0  # the global step count, kept on the host
    for batch in batches:
        if batch.reset:
            train_state = train_state._replace(state=reset_memory(train_state.state))
        train_state, metrics = run.train_step(train_state, batch.x, batch.labels, where="fit")  # labels checked
        pending.append((metrics, global_rows(run.mesh, int(np.shape(batch.x)[0]))))
        if len(pending) == run.log_every:
            loss_sum, examples = _drain(run, pending, epoch, train_state, loss_sum, examples)
        step += 1
        if every and step % every == 0 and batches.batches != steps:
            loss_sum, examples = _drain(run, pending, epoch, train_state, loss_sum, examples)
            _save_mid_epoch(run, train_state, {**batches.position(), "steps": steps, "loss_sum": loss_sum,
                                               "examples": examples})
    loss_sum, examples = _drain(run, pending, epoch, train_state, loss_sum, examples)
    if examples == 0:
        raise ValueError(f"fit: train_data gave no batch in epoch {epoch + 1}.")
    return train_state, loss_sum / examples


def _check_same_epoch_length(position: dict | None, steps: int | None, epoch: int) -> None:
    """A mid-epoch position is only meaningful for an epoch of the same number of steps: another
    batch size or other data would skip or repeat examples silently."""
    saved = None if position is None else position.get("steps")
    if saved is not None and steps is not None and saved != steps:
        raise ValueError(
            f"fit: checkpoints/{MID_EPOCH} was saved in an epoch of {saved} steps, but epoch {epoch + 1} of the "
            f"training data now has {steps} (another batch size or other data); resume with the data of the "
            f"interrupted run.")


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
    for entry in entries:  # one step at a time: the sum does not depend on when it is drained
        loss_sum += entry["example_loss"] * entry["examples"]
    return loss_sum, examples + sum(entry["examples"] for entry in entries)


def _save_mid_epoch(run: _Run, train_state: TrainState, position: dict) -> None:
    """Saves ``checkpoints/mid_epoch``: the train state and the data ``position`` (module docstring)."""
    if not _all_finite(train_state.params):
        raise TrainingDiverged(f"the parameters became NaN or infinite in epoch {position['epoch'] + 1} "
                               f"(at step {int(train_state.step)})")
    checkpoint.save_checkpoint(run.output_dir / "checkpoints" / MID_EPOCH, train_state, model_config=run.model_config,
                               metadata={**_checkpoint_metadata(run), "position": position})
    run.mid_epoch, run.mid_epoch_state = position, _kept(run, train_state)


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
                         f"needs a classifier's labels: integer, one-hot or 0/1; these look like regression "
                         f"targets); pick another, e.g. best_metric='validation_loss' (the default for a loss "
                         f"that is not a classifier's), or None for no best checkpoint.")
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


#: ``metrics.png`` is redrawn at most this often during a run (and always at its end; see `fit`).
PLOT_INTERVAL_SECONDS = 30.0


def _write_outputs(run: _Run, *, final: bool = False) -> None:
    """``metrics.csv``, and ``metrics.png`` when it is due (`_draw_plot`)."""
    if not _writes_outputs(run):
        return
    write_metrics_csv(run.output_dir / "metrics.csv", run.history)
    _draw_plot(run, final)


def _draw_plot(run: _Run, final: bool) -> None:
    """Redraws ``metrics.png`` if it lacks some of the history and it is due: at the end
    (``final``) or `PLOT_INTERVAL_SECONDS` after the last drawing."""
    if not (_writes_outputs(run) and run.plot) or run.plotted_rows == len(run.history):
        return
    if final or time.monotonic() - run.plotted_at >= PLOT_INTERVAL_SECONDS:
        plot_history(run.output_dir / "metrics.png", run.history)
        run.plotted_rows, run.plotted_at = len(run.history), time.monotonic()


def _writes_outputs(run: _Run) -> bool:
    """Whether this process writes the run's metrics files (process 0 of a run with an output_dir)."""
    return run.output_dir is not None and bool(run.history) and distributed.is_main_process()


def _epoch_line(run: _Run, row: dict, improved: bool) -> str:
    parts = [f"train loss {row['train_loss']:.4f}"]
    if row.get("validation_loss") is not None:
        parts.append(f"validation loss {row['validation_loss']:.4f}")
    if row.get("validation_accuracy") is not None:
        parts.append(f"validation accuracy {100 * row['validation_accuracy']:.2f}%")
    parts += [f"validation {name} {row[f'validation_{name}']:.4g}" for name in run.metrics]
    return (f"epoch {row['epoch']}/{run.epochs}: {', '.join(parts)} "
            f"({row['epoch_seconds']:.0f} s{', best' if improved else ''})")


def _last_checkpoint_words(run: _Run) -> str:
    if run.checkpoints is None:
        return "no checkpoint is written without an output_dir"
    if run.mid_epoch is not None:
        return (f"the last checkpoint is {run.output_dir / 'checkpoints' / MID_EPOCH} (epoch "
                f"{run.mid_epoch['epoch'] + 1}, after batch {run.mid_epoch['batches']})")
    latest = run.checkpoints.latest_epoch()
    if latest is None:
        return "no checkpoint was written yet"
    return f"the last checkpoint is {run.output_dir / 'checkpoints' / 'last'} (epoch {latest})"


def _diverged_message(run: _Run, error: TrainingDiverged) -> str:
    state = ("the returned state is that checkpoint's" if run.history or run.mid_epoch is not None else
             "the returned state is the one training started from")
    return f"Training stopped: {error}. {_last_checkpoint_words(run).capitalize()}; {state}."


def _interrupted_message(run: _Run, epoch: int, resume_command: str | None) -> str:
    message = f"Interrupted in epoch {epoch + 1}; {_last_checkpoint_words(run)}."
    if resume_command and run.checkpoints is not None and (run.checkpoints.latest_epoch() is not None
                                                           or run.mid_epoch is not None):
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
    _draw_plot(run, final=True)  # a diverged run's plot may lag the history (metrics.csv does not)
    result = FitResult(train_state, run.history, status, message, run.best, run.output_dir)
    for callback in run.callbacks:
        callback.on_fit_end(result)
    return result
