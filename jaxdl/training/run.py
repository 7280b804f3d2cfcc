"""`Run`: where `jaxdl.fit` keeps a run on disk, and how it starts there (new, resumed, overwritten).

``fit(..., run=jaxdl.Run("runs/lenet"))`` writes ``runs/lenet/checkpoints/`` (one orbax step
per epoch, `jaxdl.checkpoint.RunCheckpoints`); the `MetricsFiles` callback writes
``metrics.csv`` and ``metrics.png`` beside it. Without a `Run`, `fit` keeps everything in
memory. The directory is checked before training (`check_run_directory`): a directory that
holds a run is refused unless ``resume=True`` (continue it) or ``overwrite=True`` (start it
anew); one holding files a run does not write, unless ``overwrite=True``; a file or an
unwritable directory is refused.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from typing import Any, Mapping

from jaxdl.checkpoint import RunDirectoryError, find_step_dir, run_directory


@dataclasses.dataclass(frozen=True)
class Run:
    """A training run's output directory and how `jaxdl.fit` uses it.

    Args:
        output_dir: where ``checkpoints/`` (and, with `MetricsFiles`, ``metrics.csv`` and
            ``metrics.png``) go: a str or ``os.PathLike``, kept as a `pathlib.Path`. In a
            multi-process run it must be on a file system all processes see.
        resume: continue the run in ``output_dir`` from its newest checkpoint (after its epoch,
            or inside it from the stored data position).
        overwrite: start a new run in an ``output_dir`` that holds an old run (its checkpoints
            and metrics files are removed first) or other files (left as they are). Not with
            ``resume``.
        checkpoint_every_steps: also commit a checkpoint (train state and data position)
            after every step whose global step count is a multiple of this (an epoch's last
            step excepted: the epoch's own checkpoint follows it).
        metadata: JSON data stored in every checkpoint's metadata (e.g. hyperparameters).
        model_config: the JSON config that rebuilds the model, stored in the checkpoints.

    Raises:
        TypeError: for an ``output_dir`` that is not a path, flags that are not bools,
            a ``checkpoint_every_steps`` that is not an int, metadata that is not a mapping.
        ValueError: for an empty ``output_dir``, ``resume`` with ``overwrite``, a
            ``checkpoint_every_steps`` below 1.
        RunDirectoryError: (a ValueError) when ``output_dir`` or its ``checkpoints`` is a file.
    """

    output_dir: pathlib.Path
    resume: bool = False
    overwrite: bool = False
    checkpoint_every_steps: int | None = None
    metadata: Mapping[str, Any] | None = None
    model_config: Mapping[str, Any] | None = None

    def __post_init__(self):
        object.__setattr__(self, "output_dir", _as_path(self.output_dir))
        for name in ("resume", "overwrite"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"Run: {name} must be a bool, got {getattr(self, name)!r}.")
        if self.resume and self.overwrite:
            raise ValueError("Run: overwrite=True starts a new run and resume=True continues one; pass one of them.")
        every = self.checkpoint_every_steps
        if every is not None:
            if isinstance(every, bool) or not isinstance(every, int):
                raise TypeError(f"Run: checkpoint_every_steps must be an int or None, got {every!r}.")
            if every < 1:
                raise ValueError(f"Run: checkpoint_every_steps must be >= 1, got {every}.")
        for name in ("metadata", "model_config"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Mapping):
                raise TypeError(f"Run: {name} must be a mapping (JSON data) or None, got {type(value).__name__}.")
        run_directory.check_not_file(self.output_dir, "Run")

    @property
    def checkpoints(self) -> pathlib.Path:
        """The run's checkpoint directory, ``output_dir / "checkpoints"``."""
        return run_directory.checkpoints_dir(self.output_dir)


def run_step_dir(output_dir, which: str = "last") -> pathlib.Path | None:
    """The step directory of the ``"last"`` or ``"best"`` checkpoint in the run directory
    ``output_dir`` (None without one)."""
    return find_step_dir(run_directory.checkpoints_dir(output_dir), which)


def resume_checkpoint_dir(output_dir) -> pathlib.Path | None:
    """The step directory ``fit(..., run=Run(output_dir, resume=True))`` continues from (the
    newest one), or None when the run holds none."""
    return run_step_dir(output_dir, "last")


def check_run_directory(run: Run) -> None:
    """Checks, in every process and before anything collective, that ``run.output_dir`` fits
    the request (see the module docstring).

    Raises:
        RunDirectoryError: naming the directory and what to do.
    """
    latest = resume_checkpoint_dir(run.output_dir)
    if run.resume and latest is None:
        raise RunDirectoryError(f"fit: resume=True but {run.checkpoints} holds no checkpoint (no epoch was "
                                f"committed); start without resume.", remedy="start_anew")
    if run.resume or run.overwrite:
        return
    if latest is not None:
        raise RunDirectoryError(f"fit: {run.output_dir} already holds a run (checkpoints/{latest.name}); resume it "
                                f"(resume=True), start it anew (overwrite=True) or choose another output directory.",
                                remedy="resume_or_overwrite")
    metrics = [name for name in run_directory.METRICS_FILES if (run.output_dir / name).exists()]
    others = sorted(run_directory.foreign_entries(run.output_dir) + metrics)
    if others:
        shown = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
        note = "; metrics without a checkpoint are not a run" if metrics else ""
        raise RunDirectoryError(
            f"fit: {run.output_dir} holds files that are not a jaxdl run's ({shown}{note}); choose another output "
            f"directory, or pass overwrite=True to write the run there (files a run does not write are left as "
            f"they are; metrics.csv and metrics.png are replaced).", remedy="overwrite")


def _as_path(output_dir) -> pathlib.Path:
    if not isinstance(output_dir, (str, os.PathLike)):
        raise TypeError(f"Run: output_dir must be a path (str or os.PathLike), got {type(output_dir).__name__} "
                        f"{output_dir!r}.")
    if os.fspath(output_dir) in ("", b""):
        raise ValueError("Run: output_dir is an empty string; pass a directory (e.g. 'runs/lenet'; '.' for the "
                         "current one), or no Run to keep everything in memory.")
    return pathlib.Path(os.fsdecode(output_dir))
