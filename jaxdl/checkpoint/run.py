"""A training run's checkpoints: `RunCheckpoints`, over `orbax.checkpoint.CheckpointManager`.

Layout: one plain directory per saved step (the global train step), nothing else::

    <run>/checkpoints/
        step_00000400/     # a complete checkpoint (`jaxdl.checkpoint.single`): load_checkpoint reads it
        step_00000720/

A save is one orbax step: the train state and the JSON manifest (history, configuration, data
position, in its ``metadata``) are items of the same step, committed by one rename
(`jaxdl.checkpoint.digest`), so a process killed at any moment leaves the previous steps or
the new one, never a step without its history. Mid-epoch saves are ordinary steps.

Which steps stay is orbax's preservation policy: ``LatestN(1)`` (the newest step: ``last``,
what a resume continues from) and, with a ``best_metric``, ``BestN(n=1)`` ranked by the metric
value the save passes (``best``; steps saved without one, e.g. mid-epoch ones, are not ranked
and go once they are not the newest). Ties keep the earlier step. Orbax applies the policy
after the new step is committed, so ``last`` and ``best`` are never missing. `latest_step` and
`best_step` find them through the manager; `step_dir` gives their paths.

In a multi-process run every process creates the `RunCheckpoints` and calls `save` with the
same (replicated) state; orbax writes once and synchronizes the processes.
"""

from __future__ import annotations

import math
import os
import pathlib

from jaxdl.checkpoint import digest
from jaxdl.checkpoint.backend import orbax, os_error_code
from jaxdl.checkpoint.errors import CheckpointError, storage_error
from jaxdl.checkpoint.faults import fault_point
from jaxdl.checkpoint.single import step_args

STEP_PREFIX = "step"
STEP_DIGITS = 8


def _rank(metrics: dict) -> tuple[float, int]:
    """The preservation policy's key: higher is better (``rank`` is the value, negated for "min"),
    then the earlier step."""
    return metrics["rank"], -metrics["step"]


def check_not_older_format(directory: pathlib.Path) -> None:
    """CheckpointError when ``directory`` holds format version 2's run layout (``last``/``best`` links)."""
    if directory.is_dir() and any(os.path.lexists(directory / name) for name in ("head", "last", "best")):
        raise CheckpointError(f"{directory} holds checkpoints in jaxdl's checkpoint format version 2 (last/best "
                              f"links into head/); this jaxdl reads format version 3 (one orbax directory per "
                              f"step). Continue that run with the jaxdl that started it, or start a new run.")


class RunCheckpoints:
    """The steps of one run in ``directory`` (see the module docstring).

    Args:
        directory: the run's checkpoint directory (created on the first save).
        best_mode: "max" or "min": how the metric values passed to `save` rank.
        read_only: only find and read steps (no save, nothing created or cleaned).

    Raises:
        CheckpointError: for a directory in an older layout (naming its version).
    """

    def __init__(self, directory: str | os.PathLike, *, best_mode: str = "max", read_only: bool = False):
        self.directory = pathlib.Path(directory)  # as given: the paths it names are printed
        check_not_older_format(self.directory)
        if best_mode not in ("max", "min"):
            raise ValueError(f"RunCheckpoints: best_mode must be 'max' or 'min', got {best_mode!r}.")
        self.best_mode = best_mode
        ocp = orbax()
        policy = ocp.checkpoint_managers
        options = ocp.CheckpointManagerOptions(
            step_prefix=STEP_PREFIX, step_format_fixed_length=STEP_DIGITS, enable_async_checkpointing=False,
            preservation_policy=policy.AnyPreservationPolicy([
                policy.LatestN(n=1),
                policy.BestN(get_metric_fn=_rank, n=1, keep_checkpoints_without_metrics=False)]),
            best_fn=_rank, best_mode="max",  # orbax writes the metrics (the ``metrics`` item) only with a best_fn
            temporary_path_class=digest.renaming_class(), cleanup_tmp_directories=not read_only,
            create=False, read_only=read_only)
        self.manager = ocp.CheckpointManager(self.directory.absolute(), options=options)

    def save(self, step: int, tree, *, metadata: dict | None = None, model_config: dict | None = None,
             metric: float | None = None) -> None:
        """Commits ``tree`` and its manifest as step ``step``; ``metric`` (None, or not finite:
        unranked) is the value ``best`` is chosen by.

        Raises:
            StorageError: (an OSError) naming the directory and the cause when the disk refuses.
        """
        ranked = metric is not None and math.isfinite(metric)
        metrics = ({"value": metric, "rank": metric if self.best_mode == "max" else -metric, "step": int(step)}
                   if ranked else None)
        args = step_args(tree, model_config=model_config, metadata=metadata)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self.manager.save(int(step), args=args, metrics=metrics, force=True)
        except Exception as error:
            code = os_error_code(error)
            if code is None:
                raise
            raise storage_error(self.directory, OSError(code, os.strerror(code)), "write a checkpoint") from error
        fault_point("old steps removed")

    def steps(self) -> list[int]:
        """The committed steps, oldest first."""
        return sorted(self.manager.all_steps())

    def latest_step(self) -> int | None:
        """The newest committed step (``last``), or None."""
        return self.manager.latest_step()

    def best_step(self) -> int | None:
        """The step with the best metric (``best``; the earlier one of a tie), or None."""
        return self.manager.best_step() if any(self.manager.metrics(step) for step in self.steps()) else None

    def step_dir(self, step: int | None) -> pathlib.Path | None:
        """The directory of ``step`` (None for None)."""
        return None if step is None else self.directory / f"{STEP_PREFIX}_{int(step):0{STEP_DIGITS}d}"

    def close(self) -> None:
        self.manager.close()


def find_step_dir(directory: str | os.PathLike, which: str) -> pathlib.Path | None:
    """The ``"last"`` or ``"best"`` step directory of the run checkpoints in ``directory``, or None.

    Raises:
        ValueError: for another ``which``.
        CheckpointError: for an older layout (naming its version).
    """
    if which not in ("last", "best"):
        raise ValueError(f"find_step_dir: which must be 'last' or 'best', got {which!r}.")
    directory = pathlib.Path(directory)
    check_not_older_format(directory)
    if not directory.is_dir():
        return None
    run = RunCheckpoints(directory, read_only=True)
    try:
        return run.step_dir(run.latest_step() if which == "last" else run.best_step())
    finally:
        run.close()
