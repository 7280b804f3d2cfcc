"""Checkpoints: orbax-checkpoint arrays + a hash-sealed JSON manifest, and the exercise's pickle API.

Safe format (`save_checkpoint` / `load_checkpoint`, format version 2)
--------------------------------------------------------------------
``save_checkpoint(directory, tree)`` makes ``directory`` a relative symbolic link to a hidden
sibling directory that holds one complete checkpoint::

    <parent>/<name> -> .<name>.data-<uuid>          # the link: replaced atomically
    <parent>/.<name>.data-<uuid>/
        arrays/                                   # written by orbax-checkpoint
            _METADATA, _CHECKPOINT_METADATA, manifest.ocdbt, commit_success.txt,
            d/..., ocdbt.process_0/...            # TensorStore (zarr + OCDBT) files
        manifest.json                             # written last

* ``arrays/``: an orbax-checkpoint PyTree checkpoint of a flat dict ``{"arr_0": array, ...}``,
  one array per leaf of the saved pytree, without pickle (`jaxdl.checkpoint.arrays`); every
  dtype jax has round-trips, `jax.random` keys included (`jaxdl.checkpoint.entries`).
* ``manifest.json``: format, versions, ``model_config``, ``step``, ``metadata``, ``run``, one
  entry per leaf, every other file's size and sha256, and the sha256 of the manifest itself
  (`jaxdl.checkpoint.manifest`).

Guarantees, and why each is written here rather than left to orbax:

* Integrity (orbax has no checksums): loading re-hashes every file and re-checks the
  manifest's digest before orbax reads anything; a truncated, edited, missing or extra file,
  a symbolic link inside the checkpoint, or an edited manifest is a `CheckpointCorruptedError`
  naming the file (and the field), never silently wrong arrays. After orbax restores, every
  array's shape and dtype are checked against the manifest again (`manifest`, `entries`).
* Confinement (orbax trusts its paths): every path in the manifest must be relative, without
  ``..``, and resolve inside the checkpoint directory; the directory is resolved once, so a
  checkpoint replaced while it is being read is never mixed with its successor
  (`validation`, `single`).
* Validation: a malformed manifest (not an object, a missing field, a wrong type) is a
  `CheckpointCorruptedError` naming the file and the field, never a KeyError or TypeError
  (`validation`).
* Atomic replacement (orbax commits ``arrays/`` by renaming a temporary directory, but cannot
  replace an existing checkpoint): the new checkpoint is written, fsynced and sealed in a new
  hidden directory; the link ``<name>`` is then swapped with one ``os.replace`` of a
  temporary link. A process killed at any moment leaves either the old or the new complete
  checkpoint. Leftovers of a killed writer (``.<name>.data-*`` not linked,
  ``.<name>.link-*``) are removed by the next save. A real (non-link) directory at
  ``<name>`` (written by jaxdl 0.1's format 1, or made by hand) is first renamed to
  ``.<name>.replaced-<uuid>``; if the process dies before the link is in place, the next
  save renames it back (until then ``<name>`` is missing). Saves into one parent directory
  are serialized by an advisory lock (``flock``) on that directory (`single`, `files`).
* Orbax runs synchronously (`orbax.checkpoint.Checkpointer`, not the async one): when
  `save_checkpoint` returns, every file is written and fsynced. Orbax's log messages are
  dropped (a `logging.Filter` on the ``absl`` and root loggers for records from orbax's
  sources), so training prints nothing from it (`arrays`).
* Files follow the process umask (nothing is forced to 0600) (`files`).
* `read_manifest` checks the manifest (fields, digest) only; `verify_checkpoint` and
  `load_checkpoint` check every file too. Format 1 (``.npz``, jaxdl before orbax) is refused
  with a clear `CheckpointError` (`single`, `validation`).

Copy a checkpoint with ``cp -rL`` (or ``rsync -L``): ``<name>`` is a link. A copied
checkpoint directory loads as well as the original (all paths inside are relative).

Run checkpoints (`CheckpointSet`, for a training loop)
-----------------------------------------------------
``CheckpointSet("<run>/checkpoints", metric="validation_accuracy", mode="max")`` keeps the
last epoch and the best one::

    checkpoints/
        last -> head/last                 # fixed links, made once: pass them to load_checkpoint
        best -> head/best
        head -> .head-<uuid>              # THE commit: swapped with one os.replace per epoch
        .head-<uuid>/last -> ../epoch-000007
        .head-<uuid>/best -> ../epoch-000005   # absent while no epoch became best
        epoch-000005/                     # complete checkpoints (manifest.json + arrays/) whose
        epoch-000007/                     #   manifest's "run" records epoch, metric, value, best epoch

One rename of ``head`` makes the new last, the new best and the epoch's metadata visible
together; a process killed at any moment leaves the previous or the new state
(`jaxdl.checkpoint.run_set`).

Pickle API (`save` / `load`), the exercise's ``NeuralNetwork.save``/``load``: one object in
one file. Loading unpickles with an allow-list (NumPy and JAX arrays, plain Python data, the
exercise facade's classes and what they hold): a pickle that names anything else (``os.system``,
``eval``, ...) is refused with `UnsafePickleError` before any of it runs
(`jaxdl.checkpoint.pickle_api`).

The modules, from the bottom up:

* `errors` (also `StorageError`: a write the disk refused, naming the directory and the cause),
  `layout` (the format's names), `faults` (fault injection for the tests).
* `files`: atomic writes, fsync, hashing, listing, links, directory locks.
* `arrays`: orbax-checkpoint I/O (imported on first use, silenced, synchronous; process-local).
* `collective`: saves in a multi-process run (`jaxdl.distributed`): every process calls
  `save_checkpoint` / `CheckpointSet.save`, process 0 writes the (replicated) arrays and the
  commit, the others wait at a barrier; each process reads for itself.
* `entries`: a pytree <-> named manifest entries and stored arrays (dtype rules, key arrays).
* `compatibility`: whether a checkpoint's entries fit a template (`CheckpointMismatchError`).
* `validation`, `manifest`: the manifest's fields checked; built, sealed, read, files verified.
* `directory`: writing one complete checkpoint directory, reading its arrays.
* `single`: `save_checkpoint` (the link swap), `read_manifest`, `verify_checkpoint`,
  `load_checkpoint`.
* `run_set`: `CheckpointSet`.
* `run_directory`: a training run's output directory: its lock (one run at a time), its entries.
* `pickle_api`: `save`, `load` (an allow-list unpickler).

Example:
    >>> save_checkpoint("runs/lenet/final", train_state, model_config=config, metadata={"epoch": 3})
    >>> train_state, manifest = load_checkpoint("runs/lenet/final", template_state)
    >>> run = CheckpointSet("runs/lenet/checkpoints", metric="validation_accuracy", mode="max")
    >>> became_best = run.save(4, train_state, metadata={"history": history}, metric_value=0.991)
    >>> params, manifest = load_checkpoint(run.best_dir, params_template, prefix="params")
"""

from jaxdl.checkpoint.compatibility import MAX_LISTED
from jaxdl.checkpoint.entries import path_string
from jaxdl.checkpoint.errors import (
    CheckpointCorruptedError, CheckpointError, CheckpointMismatchError, RunDirectoryError, StorageError,
)
from jaxdl.checkpoint.files import write_bytes_atomic, write_text_atomic
from jaxdl.checkpoint.layout import ARRAYS_DIR, FORMAT, FORMAT_VERSION, MANIFEST_NAME
from jaxdl.checkpoint.pickle_api import UnsafePickleError, load, save
from jaxdl.checkpoint.run_set import CheckpointSet
from jaxdl.checkpoint.single import load_checkpoint, read_manifest, save_checkpoint, verify_checkpoint

__all__ = [
    "ARRAYS_DIR", "FORMAT", "FORMAT_VERSION", "MANIFEST_NAME", "CheckpointCorruptedError", "CheckpointError",
    "CheckpointMismatchError", "CheckpointSet", "RunDirectoryError", "StorageError", "UnsafePickleError", "load",
    "load_checkpoint", "path_string", "read_manifest", "save", "save_checkpoint", "verify_checkpoint",
    "write_bytes_atomic", "write_text_atomic",
]
