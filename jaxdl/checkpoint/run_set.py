"""Run checkpoints (`CheckpointSet`, for a training loop): the last epoch and the best one, one commit per epoch.

`CheckpointSet.save` writes the epoch's checkpoint into a temporary directory, renames it to
``epoch-<n>``, writes a new head directory whose links name the new last and best epochs,
and swaps ``head``: one rename makes the new last, the new best and the epoch's metadata
visible together, or none of them (``last`` and ``best`` resolve through ``head``, so even a
reader that never opens the set sees a consistent pair). Then epochs that are neither last
nor best are removed. The best epoch is the first with the best ``metric_value`` (NaN and
infinities never become best), or whatever the caller passes as ``best=``. (The layout is
drawn in `jaxdl.checkpoint`.)

A process killed at any moment leaves the previous or the new state; opening the set (or the
next save) removes what a killed writer left (temporary and uncommitted epoch directories,
stale heads) and recreates missing ``last``/``best`` links. Without a ``head`` link (a first
save killed after its epoch directory was complete, or ``head`` deleted by hand) opening
rebuilds it from the newest complete ``epoch-*`` directory and the best epoch its manifest
records, instead of deleting them. Saves are serialized by the same directory lock; one
process should own a set, others may read it. orbax's ``CheckpointManager`` is not used: its
step directories and best-tracking have no single commit point for "last + best + metadata"
and no hashes, and its symlink-free layout cannot give users stable ``last``/``best`` paths.
"""

from __future__ import annotations

import dataclasses
import math
import os
import pathlib
import re
import uuid
from typing import Any

import numpy as np

from jaxdl import distributed
from jaxdl.checkpoint.collective import check_writable, collective_write
from jaxdl.checkpoint.directory import write_checkpoint_dir
from jaxdl.checkpoint.errors import CheckpointCorruptedError, CheckpointError
from jaxdl.checkpoint.faults import fault_point
from jaxdl.checkpoint.files import fsync_directory, locked, remove, replace_link
from jaxdl.checkpoint.layout import MANIFEST_NAME, UUID_HEX
from jaxdl.checkpoint.manifest import check_json, read_manifest_file
from jaxdl.checkpoint.single import load_checkpoint
from jaxdl.checkpoint.validation import KINDS

_EPOCH_DIR = re.compile(r"epoch-([0-9]{6,})")
_HEAD_DIR = re.compile(rf"\.head-{UUID_HEX}")
_SET_TEMP = re.compile(rf"\.tmp-{UUID_HEX}|\.(head|last|best)\.link-{UUID_HEX}")


@dataclasses.dataclass(frozen=True)
class _Head:
    """The committed state: the last and best epochs' directory names and their run records."""

    last: str
    last_run: dict
    best: str | None
    best_run: dict | None


class CheckpointSet:
    """The checkpoints of a training run: the last epoch and the best one.

    ``directory/last`` and ``directory/best`` are checkpoint directories for
    `load_checkpoint` / `read_manifest` (see `jaxdl.checkpoint` for the layout). Each
    `save` is one commit: after a crash at any point, the set holds either the previous or
    the new last/best pair with its metadata, each complete.

    The best epoch is chosen by ``metric`` (``save(..., metric_value=...)``: the first epoch
    with the highest value for ``mode="max"``, the lowest for ``"min"``; NaN and infinite
    values never become best), or by the caller (``save(..., best=True)``). Until an epoch
    becomes best, ``best`` holds no checkpoint.

    Opening the set removes what a killed writer left behind (when no other process is
    saving into it). One process at a time should save into a set; others may read it. In a
    multi-process run (`jaxdl.distributed`) `save` is a collective call that process 0 carries
    out, and only process 0 cleans when opening (`jaxdl.checkpoint.collective`).

    Args:
        directory: the run's checkpoint directory (e.g. ``runs/lenet/checkpoints``), created
            if needed.
        metric: the name of the metric that picks the best epoch (e.g.
            ``"validation_accuracy"``), or None when the caller decides (``best=``).
        mode: ``"max"`` (higher is better) or ``"min"``.

    Raises:
        ValueError: for an invalid mode, or a set written with another metric or mode.
        CheckpointError: when ``last`` or ``best`` exist but were not made by a CheckpointSet.
        CheckpointCorruptedError: when the committed state is damaged.
    """

    def __init__(self, directory: str | os.PathLike, *, metric: str | None = None, mode: str = "max"):
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', not {mode!r}.")
        if metric is not None and (not isinstance(metric, str) or not metric):
            raise ValueError(f"metric must be a non-empty name or None, not {metric!r}.")
        self.directory = pathlib.Path(directory)
        self.metric, self.mode = metric, mode
        self.directory.mkdir(parents=True, exist_ok=True)
        self._check_links(create=False)
        with locked(self.directory, blocking=False) as writable:
            if writable and _is_writer():
                self._clean()
        head = self._head()
        if head is not None and (head.last_run["metric"], head.last_run["mode"]) != (metric, mode):
            raise ValueError(f"{self.directory} keeps the best epoch by {head.last_run['metric']!r} "
                             f"({head.last_run['mode']}), not {metric!r} ({mode}).")

    @property
    def last_dir(self) -> pathlib.Path:
        """The newest committed epoch's checkpoint (a link; pass it to `load_checkpoint`)."""
        return self.directory / "last"

    @property
    def best_dir(self) -> pathlib.Path:
        """The best committed epoch's checkpoint (a link; pass it to `load_checkpoint`)."""
        return self.directory / "best"

    def latest_epoch(self) -> int | None:
        """The newest committed epoch, or None before the first save."""
        head = self._head()
        return None if head is None else head.last_run["epoch"]

    def best_epoch(self) -> int | None:
        """The best committed epoch, or None while no epoch became best."""
        head = self._head()
        return None if head is None or head.best_run is None else head.best_run["epoch"]

    def best_value(self) -> float | None:
        """The best epoch's metric value, or None (no best epoch, or none recorded)."""
        head = self._head()
        value = None if head is None or head.best_run is None else head.best_run["value"]
        return None if value is None else float(value)

    def restore(self, template, which: str = "last", *, prefix: str = "") -> tuple[Any, dict]:
        """`load_checkpoint` of the ``"last"`` or ``"best"`` epoch into ``template``.

        Raises:
            FileNotFoundError: before the first save, or for ``"best"`` while there is none.
            CheckpointError: as `load_checkpoint`.
        """
        if which not in ("last", "best"):
            raise ValueError(f"which must be 'last' or 'best', not {which!r}.")
        head = self._head()
        name = None if head is None else getattr(head, which)
        if name is None:
            raise FileNotFoundError(f"No checkpoint in {self.directory / which} yet.")
        return load_checkpoint(self.directory / name, template, prefix=prefix)

    def save(self, epoch: int, tree, *, metadata: dict | None = None, metric_value: float | None = None,
             best: bool | None = None, model_config: dict | None = None) -> bool:
        """Commits ``tree`` as epoch ``epoch``: the new last, and the new best if it is better.

        Args:
            epoch: the epoch number; must be greater than `latest_epoch`.
            tree: the pytree to save (e.g. the `jaxdl.TrainState`).
            metadata: JSON-serializable dict stored with the epoch (e.g. the whole metrics
                history, the configuration); visible together with the epoch's arrays.
            metric_value: the epoch's value of the set's ``metric`` (recorded in the
                manifest's ``run``); it picks the best epoch unless ``best`` is given.
            best: the caller's decision whether this epoch becomes best (overrides the
                comparison of ``metric_value``).
            model_config: the JSON config that rebuilds the model.

        Returns:
            Whether this epoch became the best.

        Raises:
            ValueError: for an epoch that is not after the latest one.
            TypeError: for metadata or model_config that are not JSON dicts, or a metric
                value that is not a number.
            CheckpointError: for a leaf that cannot be stored.

        In a multi-process run every process calls it with the same arguments; process 0
        writes, and all return (the same value) once the epoch is committed.
        """
        check_json("metadata", metadata)
        check_json("model_config", model_config)
        if not KINDS["int"](epoch) or epoch < 0:
            raise ValueError(f"epoch must be a non-negative int, not {epoch!r}.")
        value = _metric_number(metric_value)
        check_writable(tree)
        with collective_write(f"CheckpointSet.save {epoch}") as writes:
            if writes:
                return self._save(epoch, tree, value, best, metadata=metadata, model_config=model_config)
        return self.best_epoch() == epoch

    def _save(self, epoch: int, tree, value: float | None, best: bool | None, *, metadata: dict | None,
              model_config: dict | None) -> bool:
        """`save` in the writing process: commits the epoch under the directory lock."""
        with locked(self.directory):
            self._clean()
            head = self._head()
            if head is not None and epoch <= head.last_run["epoch"]:
                raise ValueError(f"epoch {epoch} is not after the latest committed epoch {head.last_run['epoch']}.")
            is_best = self._becomes_best(value, best, head)
            try:
                self._commit(epoch, tree, value, is_best, head, metadata=metadata, model_config=model_config)
            except BaseException:
                self._clean()
                raise
            self._clean()
        return is_best

    # -- internals ------------------------------------------------------------------------

    def _becomes_best(self, value: float | None, best: bool | None, head: _Head | None) -> bool:
        if best is not None:
            return bool(best)
        if value is None or not math.isfinite(value):
            return False
        previous = None if head is None or head.best_run is None else head.best_run["value"]
        if previous is None:
            return True
        return value > previous if self.mode == "max" else value < previous

    def _commit(self, epoch: int, tree, value: float | None, is_best: bool, head: _Head | None, *,
                metadata: dict | None, model_config: dict | None) -> None:
        """Writes the epoch's checkpoint, then a new head naming last and best, and swaps ``head``."""
        name = f"epoch-{epoch:06d}"
        best_name = name if is_best else (None if head is None else head.best)
        best_epoch = None if best_name is None else int(_EPOCH_DIR.fullmatch(best_name).group(1))
        run = {"epoch": epoch, "metric": self.metric, "mode": self.mode, "value": value, "best_epoch": best_epoch}
        temp = self.directory / f".tmp-{uuid.uuid4().hex}"
        write_checkpoint_dir(temp, tree, model_config=model_config, metadata=metadata, run=run)
        os.rename(temp, self.directory / name)
        fsync_directory(self.directory)
        fault_point("epoch renamed")
        self._write_head(name, best_name)

    def _write_head(self, last: str, best: str | None) -> None:
        """Writes a head directory naming ``last`` and ``best`` and swaps ``head`` to it (the commit)."""
        head_dir = self.directory / f".head-{uuid.uuid4().hex}"
        head_dir.mkdir()
        os.symlink(f"../{last}", head_dir / "last")
        if best is not None:
            os.symlink(f"../{best}", head_dir / "best")
        fsync_directory(head_dir)
        fault_point("head written")
        self._check_links(create=True)
        replace_link(self.directory / "head", head_dir.name)
        fault_point("committed")

    def _check_links(self, *, create: bool) -> None:
        """Checks (and with ``create`` makes) the fixed links ``last -> head/last``, ``best -> head/best``."""
        for which in ("last", "best"):
            link, target = self.directory / which, f"head/{which}"
            if link.is_symlink() and os.readlink(link) == target:
                continue
            if os.path.lexists(link):
                raise CheckpointError(f"{link} exists but is not the link {which} -> {target} that CheckpointSet "
                                      f"makes (a checkpoint written by save_checkpoint?); move it away.")
            if create:
                replace_link(link, target)

    def _head_dir_name(self) -> str | None:
        link = self.directory / "head"
        if not link.is_symlink():
            if os.path.lexists(link):
                raise CheckpointCorruptedError(f"{link} must be a link to a .head-* directory.")
            return None
        target = os.readlink(link)
        if not _HEAD_DIR.fullmatch(target):
            raise CheckpointCorruptedError(f"{link} points to {target!r}, not to a .head-* directory.")
        return target

    def _head(self) -> _Head | None:
        """The committed last and best (None before the first commit)."""
        head_name = self._head_dir_name()
        if head_name is None:
            return None
        last = self._head_target(head_name, "last")
        best = self._head_target(head_name, "best", optional=True)
        return _Head(last, self._run_record(last), best, None if best is None else self._run_record(best))

    def _head_target(self, head_name: str, which: str, *, optional: bool = False) -> str | None:
        link = self.directory / head_name / which
        if optional and not os.path.lexists(link):
            return None
        target = os.readlink(link) if link.is_symlink() else ""
        match = re.fullmatch(r"\.\./(epoch-[0-9]{6,})", target)
        if match is None:
            raise CheckpointCorruptedError(f"{link} must be a link to ../epoch-<n>, not {target!r}.")
        return match.group(1)

    def _run_record(self, name: str) -> dict:
        manifest = read_manifest_file(self.directory / name)
        if manifest["run"] is None:
            raise CheckpointCorruptedError(f"{self.directory / name / MANIFEST_NAME}: field 'run' is null; not an "
                                           f"epoch of a CheckpointSet.")
        return manifest["run"]

    def _clean(self) -> None:
        """Removes temporaries, uncommitted epochs and old heads; repairs a missing head and links.

        Call with the lock held.
        """
        if self._head_dir_name() is None:
            self._rebuild_head()
        head_name = self._head_dir_name()
        keep = set()
        if head_name is not None:
            head = self._head()
            keep = {head_name, head.last, head.best}
        for path in self.directory.iterdir():
            name = path.name
            stale = (_SET_TEMP.fullmatch(name) or _HEAD_DIR.fullmatch(name)
                     or (_EPOCH_DIR.fullmatch(name) and path.is_dir() and not path.is_symlink()))
            if stale and name not in keep:
                remove(path)
        if head_name is not None:
            self._check_links(create=True)
        fsync_directory(self.directory)

    def _rebuild_head(self) -> None:
        """Without a ``head`` link (a first save killed before its commit, or ``head`` deleted by
        hand), commits a head naming the newest complete epoch as last and the best epoch its
        manifest records, instead of discarding the epochs."""
        runs = {}
        for path in self.directory.iterdir():
            if _EPOCH_DIR.fullmatch(path.name) and path.is_dir() and not path.is_symlink():
                try:
                    runs[path.name] = self._run_record(path.name)
                except (OSError, CheckpointError):
                    continue  # incomplete or damaged: not a candidate
        if not runs:
            return
        last = max(runs, key=lambda name: runs[name]["epoch"])
        best_epoch = runs[last]["best_epoch"]
        best = None if best_epoch is None else f"epoch-{best_epoch:06d}"
        self._write_head(last, best if best in runs else None)


def _is_writer() -> bool:
    return distributed.is_main_process()


def _metric_number(value) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) and not (
            hasattr(value, "shape") and np.shape(value) == ()):
        raise TypeError(f"metric_value must be a number or None, not {type(value).__name__}.")
    return float(value)
