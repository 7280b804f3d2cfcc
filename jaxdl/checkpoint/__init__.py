"""Checkpoints: a thin layer over orbax-checkpoint, in plain directories.

One checkpoint (`save_checkpoint` / `load_checkpoint`, format version 3) is one plain
directory written by orbax in one commit: the arrays of the saved pytree, a JSON manifest (the
tree's entries, ``step``, ``model_config``, ``metadata``) and ``jaxdl_digest.json``
(`jaxdl.checkpoint.single`). A training run's checkpoints (`RunCheckpoints`, used by
`jaxdl.fit`) are an `orbax.checkpoint.CheckpointManager` whose steps are such directories,
``last`` and ``best`` kept by orbax's preservation policies (`jaxdl.checkpoint.run`). There
are no symbolic links: ``cp -r`` or ``rsync -a`` of a run directory, or of one step, is a
working copy.

What users rely on, and where it is kept:

* Every dtype jax has (bfloat16, float8, int4, complex, `jax.random` keys: their key data and
  implementation name) round-trips (`jaxdl.checkpoint.entries`).
* No pickle and no code executed on load: orbax's metadata and the manifest are JSON, the
  arrays TensorStore chunks.
* A checkpoint of another architecture is a `CheckpointMismatchError` naming the missing,
  unexpected and reshaped entries (`jaxdl.checkpoint.compatibility`).
* A truncated, edited, missing or extra file is a `CheckpointCorruptedError` naming it, never
  silently different arrays: orbax checks no checksums, so every step carries a digest written
  inside orbax's atomic commit and verified before anything is read (`jaxdl.checkpoint.digest`).
* A process killed at any moment leaves the previous or the new step; orbax removes old steps
  only after the new one is committed (`jaxdl.checkpoint.run`).
* Multi-process saves are orbax's: every process calls the save, orbax writes once. This
  package does not import `jaxdl.distributed`.
* Older formats (version 2's ``manifest.json`` and ``last``/``best`` links) are refused with
  a `CheckpointError` naming the version.

The exercise's pickle ``save``/``load`` live in `jaxdl.exercise.pickle_io`.

Example:
    >>> save_checkpoint("runs/lenet/final", train_state, model_config=config, metadata={"epoch": 3})
    >>> train_state, manifest = load_checkpoint("runs/lenet/final", template_state)
    >>> params, _ = load_checkpoint(find_step_dir("runs/lenet/checkpoints", "best"), params_template,
    ...                             prefix="params")
"""

from jaxdl.checkpoint.compatibility import MAX_LISTED
from jaxdl.checkpoint.entries import path_string
from jaxdl.checkpoint.errors import (
    CheckpointCorruptedError, CheckpointError, CheckpointMismatchError, RunDirectoryError, StorageError,
)
from jaxdl.checkpoint.files import write_bytes_atomic, write_text_atomic
from jaxdl.checkpoint.run import RunCheckpoints, find_step_dir
from jaxdl.checkpoint.single import (
    FORMAT, FORMAT_VERSION, load_checkpoint, read_manifest, save_checkpoint, verify_checkpoint,
)

__all__ = [
    "FORMAT", "FORMAT_VERSION", "MAX_LISTED", "CheckpointCorruptedError", "CheckpointError",
    "CheckpointMismatchError", "RunCheckpoints", "RunDirectoryError", "StorageError", "find_step_dir",
    "load_checkpoint", "path_string", "read_manifest", "save_checkpoint", "verify_checkpoint",
    "write_bytes_atomic", "write_text_atomic",
]
