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

* ``arrays/``: an orbax-checkpoint PyTree checkpoint (`orbax.checkpoint.PyTreeCheckpointHandler`,
  TensorStore zarr arrays in OCDBT files) of a flat dict ``{"arr_0": array, "arr_1": ...}``,
  one array per leaf of the saved pytree. Orbax stores arrays as raw TensorStore chunks and
  its metadata as JSON: there is no pickle on this path and loading never executes code.
  Every dtype jax has round-trips (bool, int2/int4 ... int64, uint*, float8 ... float64,
  bfloat16, complex): dtypes TensorStore cannot store (uint2, uint4, float8_e4m3 in
  TensorStore 0.1.86) are stored as their raw bytes (``"storage": "bytes"``). Zero-size
  arrays (which orbax refuses) are stored in the manifest only (``"array": null``).
  `jax.random` key arrays (new-style typed keys) are stored as their raw data
  (`jax.random.key_data`) with their implementation name and rebuilt with
  `jax.random.wrap_key_data`.
* ``manifest.json``: a JSON object with ``format`` (``"jaxdl.checkpoint"``),
  ``format_version`` (2), ``jaxdl_version``, ``orbax_checkpoint_version``, ``created``,
  ``model_config`` (the JSON config `jaxdl.models.build_model` rebuilds the model from, or
  null), ``step`` (the tree's ``step`` attribute, or null), ``metadata`` (free-form JSON
  object), ``run`` (null, or ``{"epoch", "metric", "mode", "value", "best_epoch"}`` in a
  `CheckpointSet` epoch), ``entries`` (one per leaf: ``path`` such as ``params/conv_0/weights`` or
  ``opt_state/0/0/mu/conv_0/weights``, ``array`` (its orbax key or null), ``shape``,
  ``dtype``; keys add ``key_impl``, ``data_shape``, ``data_dtype``), ``files`` (EVERY other
  file of the checkpoint: relative ``path``, ``size``, ``sha256``) and ``manifest_sha256``:
  the sha256 of the manifest's own canonical JSON (sorted keys, no spaces) without that
  field, so the metadata, the entry names and the file list are covered too.

Guarantees, and why each is written here rather than left to orbax:

* Integrity (orbax has no checksums): loading re-hashes every file and re-checks the
  manifest's digest before orbax reads anything; a truncated, edited, missing or extra file,
  a symbolic link inside the checkpoint, or an edited manifest is a `CheckpointCorruptedError`
  naming the file (and the field), never silently wrong arrays. After orbax restores, every
  array's shape and dtype are checked against the manifest again.
* Confinement (orbax trusts its paths): every path in the manifest must be relative, without
  ``..``, and resolve inside the checkpoint directory; the directory is resolved once, so a
  checkpoint replaced while it is being read is never mixed with its successor.
* Validation: a malformed manifest (not an object, a missing field, a wrong type) is a
  `CheckpointCorruptedError` naming the file and the field, never a KeyError or TypeError.
* Atomic replacement (orbax commits ``arrays/`` by renaming a temporary directory, but cannot
  replace an existing checkpoint): the new checkpoint is written, fsynced and sealed in a new
  hidden directory; the link ``<name>`` is then swapped with one ``os.replace`` of a
  temporary link. A process killed at any moment leaves either the old or the new complete
  checkpoint. Leftovers of a killed writer (``.<name>.data-*`` not linked,
  ``.<name>.link-*``) are removed by the next save. A real (non-link) directory at
  ``<name>`` (written by jaxdl 0.1's format 1, or made by hand) is first renamed to
  ``.<name>.replaced-<uuid>``; if the process dies before the link is in place, the next
  save renames it back (until then ``<name>`` is missing). Saves into one parent directory
  are serialized by an advisory lock (``flock``) on that directory.
* Orbax runs synchronously (`orbax.checkpoint.Checkpointer`, not the async one): when
  `save_checkpoint` returns, every file is written and fsynced. Orbax's log messages are
  dropped (a `logging.Filter` on the ``absl`` and root loggers for records from orbax's
  sources, ``_ORBAX_LOG_FILTER``), so training prints nothing from it.
* Files follow the process umask (nothing is forced to 0600).
* `read_manifest` checks the manifest (fields, digest) only; `verify_checkpoint` and
  `load_checkpoint` check every file too. Format 1 (``.npz``, jaxdl before orbax) is refused
  with a clear `CheckpointError`.

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

`CheckpointSet.save` writes the epoch's checkpoint into a temporary directory, renames it to
``epoch-<n>``, writes a new head directory whose links name the new last and best epochs,
and swaps ``head``: one rename makes the new last, the new best and the epoch's metadata
visible together, or none of them (``last`` and ``best`` resolve through ``head``, so even a
reader that never opens the set sees a consistent pair). Then epochs that are neither last
nor best are removed. The best epoch is the first with the best ``metric_value`` (NaN and
infinities never become best), or whatever the caller passes as ``best=``.

A process killed at any moment leaves the previous or the new state; opening the set (or the
next save) removes what a killed writer left (temporary and uncommitted epoch directories,
stale heads) and recreates missing ``last``/``best`` links. Without a ``head`` link (a first
save killed after its epoch directory was complete, or ``head`` deleted by hand) opening
rebuilds it from the newest complete ``epoch-*`` directory and the best epoch its manifest
records, instead of deleting them. Saves are serialized by the same directory lock; one
process should own a set, others may read it. orbax's ``CheckpointManager`` is not used: its
step directories and best-tracking have no single commit point for "last + best + metadata"
and no hashes, and its symlink-free layout cannot give users stable ``last``/``best`` paths.

Pickle API (`save` / `load`), the exercise's ``NeuralNetwork.save``/``load``: any picklable
object in one file. UNSAFE for files you did not write yourself: unpickling runs arbitrary
code. Prefer the safe format for anything shared.

Example:
    >>> save_checkpoint("runs/lenet/final", train_state, model_config=config, metadata={"epoch": 3})
    >>> train_state, manifest = load_checkpoint("runs/lenet/final", template_state)
    >>> run = CheckpointSet("runs/lenet/checkpoints", metric="validation_accuracy", mode="max")
    >>> became_best = run.save(4, train_state, metadata={"history": history}, metric_value=0.991)
    >>> params, manifest = load_checkpoint(run.best_dir, params_template, prefix="params")
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import hashlib
import json
import logging
import math
import os
import pathlib
import pickle
import re
import shutil
import uuid
from typing import Any, Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np

from jaxdl.core import path_names

__all__ = [
    "ARRAYS_DIR", "FORMAT", "FORMAT_VERSION", "MANIFEST_NAME", "CheckpointCorruptedError", "CheckpointError",
    "CheckpointMismatchError", "CheckpointSet", "load", "load_checkpoint", "path_string", "read_manifest", "save",
    "save_checkpoint", "verify_checkpoint", "write_bytes_atomic", "write_text_atomic",
]

FORMAT = "jaxdl.checkpoint"
FORMAT_VERSION = 2
MANIFEST_NAME = "manifest.json"
#: The orbax checkpoint's directory inside a checkpoint.
ARRAYS_DIR = "arrays"
#: How many differences of each kind a mismatch error lists before summarizing.
MAX_LISTED = 20

_HEX32 = "[0-9a-f]{32}"
_SHA256 = re.compile("[0-9a-f]{64}")


class CheckpointError(ValueError):
    """Base class of checkpoint errors."""


class CheckpointCorruptedError(CheckpointError):
    """The checkpoint's files do not match its manifest, or the manifest is malformed."""


class CheckpointMismatchError(CheckpointError):
    """The checkpoint's entries do not fit the template (a different architecture)."""


# ----------------------------------------------------------------------------------------
# Fault injection: tests set `_fault_hook` to stop (raise, or SIGKILL the process) at a
# named point between two writes.

_fault_hook: Callable[[str], None] | None = None


def _fault_point(name: str) -> None:
    if _fault_hook is not None:
        _fault_hook(name)


# ----------------------------------------------------------------------------------------
# Files: atomic writes, fsync, hashing, locking, links.


def _fsync_directory(directory: pathlib.Path) -> None:
    """Makes the entries of ``directory`` durable (no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_atomic(path: pathlib.Path, write: Callable[[Any], Any]) -> None:
    """Calls ``write(binary_file)`` on a temporary file next to ``path``, then renames it.

    The temporary file is created with mode 0666 minus the umask, fsynced before
    ``os.replace`` and removed if ``write`` fails, so ``path`` always holds either its old
    content or the complete new one.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Writes ``data`` to ``path`` atomically (temporary file, fsync, rename)."""
    _write_atomic(pathlib.Path(path), lambda file: file.write(data))


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Writes ``text`` (UTF-8) to ``path`` atomically (temporary file, fsync, rename)."""
    write_bytes_atomic(path, text.encode("utf-8"))


def _hash_file(path: pathlib.Path, *, sync: bool = False) -> tuple[int, str]:
    """(size, sha256) of a file; with ``sync`` the file is fsynced too."""
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
            size += len(block)
        if sync:
            os.fsync(file.fileno())
    return size, digest.hexdigest()


def _list_files(root: pathlib.Path, error: type[CheckpointError]) -> list[str]:
    """The relative POSIX paths of all files under ``root``, without ``MANIFEST_NAME``.

    Raises ``error`` for a symbolic link or anything that is not a file or a directory.
    """
    found = []

    def walk(directory: pathlib.Path, prefix: str) -> None:
        with os.scandir(directory) as entries:
            for entry in entries:
                relative = prefix + entry.name
                if entry.is_symlink():
                    raise error(f"Checkpoint {root}: {relative} is a symbolic link; checkpoints hold plain "
                                f"files only.")
                if entry.is_dir(follow_symlinks=False):
                    walk(pathlib.Path(entry.path), relative + "/")
                elif entry.is_file(follow_symlinks=False):
                    if relative != MANIFEST_NAME:
                        found.append(relative)
                else:
                    raise error(f"Checkpoint {root}: {relative} is not a regular file.")

    walk(root, "")
    return sorted(found)


def _sync_tree(root: pathlib.Path) -> None:
    """fsyncs every directory under ``root`` (the files are fsynced while hashed)."""
    for directory, _, _ in os.walk(root):
        _fsync_directory(pathlib.Path(directory))


def _remove(path: pathlib.Path) -> None:
    """Removes a link, file or directory tree; missing is fine."""
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    elif path.is_dir():
        shutil.rmtree(path, ignore_errors=True)


def _replace_link(link: pathlib.Path, target: str) -> None:
    """Points ``link`` at the relative ``target`` atomically (temporary link + os.replace)."""
    temp = link.parent / f".{link.name}.link-{uuid.uuid4().hex}"
    os.symlink(target, temp)
    try:
        _fault_point("link created")
        os.replace(temp, link)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    _fsync_directory(link.parent)


@contextlib.contextmanager
def _locked(directory: pathlib.Path, *, blocking: bool = True) -> Iterator[bool]:
    """Holds an exclusive advisory lock (flock) on ``directory``; yields whether it got it.

    The lock serializes writers in one parent directory (threads and processes alike) so
    that one writer never removes another's temporary files. Where ``fcntl`` or directory
    locks are unavailable it yields True without locking.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover (Windows)
        yield True
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        except OSError:  # a file system without flock
            yield True
            return
        yield True
    finally:
        os.close(fd)  # releases the lock


# ----------------------------------------------------------------------------------------
# Orbax: imported on first use (it takes seconds), logging silenced, synchronous.


class _OrbaxLogFilter(logging.Filter):
    """Drops log records that come from orbax's source files."""

    def __init__(self, package_dir: str):
        super().__init__()
        self.package_dir = package_dir

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.pathname.startswith(self.package_dir)


_ORBAX_LOG_FILTER: _OrbaxLogFilter | None = None


def _orbax():
    """The ``orbax.checkpoint`` module (imported on first use), with its logging silenced."""
    global _ORBAX_LOG_FILTER
    if _ORBAX_LOG_FILTER is None:  # before the import: orbax logs while it imports
        import importlib.util

        package_dir = list(importlib.util.find_spec("orbax").submodule_search_locations)[0]
        _ORBAX_LOG_FILTER = _OrbaxLogFilter(os.path.join(package_dir, ""))
        for name in ("absl", None):
            logging.getLogger(name).addFilter(_ORBAX_LOG_FILTER)
    import orbax.checkpoint as ocp

    return ocp


def _orbax_save(directory: pathlib.Path, arrays: dict[str, np.ndarray]) -> None:
    """Writes ``arrays`` as an orbax PyTree checkpoint; returns when it is committed."""
    ocp = _orbax()
    checkpointer = ocp.Checkpointer(ocp.PyTreeCheckpointHandler())
    try:
        checkpointer.save(os.path.abspath(directory), args=ocp.args.PyTreeSave(arrays))
    finally:
        checkpointer.close()


def _orbax_restore(directory: pathlib.Path, wanted: set[str], stored: dict[str, jax.ShapeDtypeStruct]
                   ) -> dict[str, np.ndarray]:
    """Reads the arrays ``wanted`` (NumPy arrays) of an orbax checkpoint holding ``stored``.

    Only those are read where orbax can restore part of a tree (``partial_restore``, orbax
    0.12); older versions read all of ``stored``.
    """
    ocp = _orbax()
    partial = _has_partial_restore(ocp)
    names = sorted(wanted) if partial else sorted(stored)
    restore_args = {name: ocp.RestoreArgs(restore_type=np.ndarray) for name in names}
    options = {"item": {name: stored[name] for name in names}, "partial_restore": True} if partial else {}
    checkpointer = ocp.Checkpointer(ocp.PyTreeCheckpointHandler())
    try:
        return checkpointer.restore(os.path.abspath(directory), args=ocp.args.PyTreeRestore(
            restore_args=restore_args, **options))
    finally:
        checkpointer.close()


def _has_partial_restore(ocp) -> bool:
    return "partial_restore" in getattr(ocp.args.PyTreeRestore, "__dataclass_fields__", {})


def _tensorstore_has(dtype: np.dtype) -> bool:
    import tensorstore

    try:
        tensorstore.dtype(dtype.name)
    except (ValueError, TypeError):
        return False
    return True


# ----------------------------------------------------------------------------------------
# Pytree <-> manifest entries and stored arrays.


def path_string(path) -> str:
    """A jax key path as ``a/b/0/c`` (dict keys, NamedTuple fields and indices joined by /)."""
    return "/".join(path_names(path))


def _is_key_array(leaf) -> bool:
    return hasattr(leaf, "dtype") and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key)


def _named_leaves(tree) -> dict[str, Any]:
    leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
    named = {}
    for path, leaf in leaves:
        name = path_string(path) or "root"
        if name in named:
            raise CheckpointError(f"Two leaves share the path {name!r}; checkpoint paths must be unique.")
        named[name] = leaf
    return named


def _array_dtype(name: str) -> np.dtype | None:
    """The dtype called ``name`` if it is a numeric or bool dtype jax knows, else None."""
    try:
        dtype = jnp.dtype(name)
    except (TypeError, ValueError):
        return None
    if dtype == np.bool_ or jax.dtypes.issubdtype(dtype, np.number):
        return dtype
    return None


def _key_impl_name(leaf) -> str | None:
    """The implementation name of a key array or key ShapeDtypeStruct (None if unknown)."""
    if isinstance(leaf, jax.Array):
        return str(jax.random.key_impl(leaf))
    impl = getattr(leaf.dtype, "_impl", None)  # jax.ShapeDtypeStruct: no public accessor
    return getattr(impl, "name", None)


def _leaf_entry(leaf) -> tuple[dict, np.ndarray]:
    """The manifest entry (without path and array name) and the array to store of one leaf."""
    if _is_key_array(leaf):
        data = np.asarray(jax.random.key_data(leaf))
        return {"shape": list(leaf.shape), "dtype": "key", "key_impl": _key_impl_name(leaf),
                "data_shape": list(data.shape), "data_dtype": str(data.dtype)}, data
    array = np.asarray(leaf)
    if _array_dtype(str(array.dtype)) is None:
        raise CheckpointError(f"Cannot store a leaf of type {type(leaf).__name__} (dtype {array.dtype}) in a "
                              f"checkpoint: only numeric, bool and jax.random key arrays.")
    entry = {"shape": list(array.shape), "dtype": str(array.dtype)}
    if not _tensorstore_has(array.dtype):
        entry["storage"] = "bytes"
        array = np.ascontiguousarray(array).reshape(-1).view(np.uint8)
    return entry, array


def _entries_and_arrays(tree) -> tuple[list[dict], dict[str, np.ndarray]]:
    """The manifest entries of every leaf and the non-empty arrays to store by orbax key."""
    entries, arrays = [], {}
    for index, (name, leaf) in enumerate(_named_leaves(tree).items()):
        entry, array = _leaf_entry(leaf)
        key = f"arr_{index}" if array.size else None  # orbax refuses zero-size arrays
        if key is not None:
            arrays[key] = array
        entries.append({"path": name, "array": key, **entry})
    return entries, arrays


def _stored_signature(entry: dict) -> jax.ShapeDtypeStruct:
    """Shape and dtype of the array orbax holds for ``entry``."""
    if entry["dtype"] == "key":
        return jax.ShapeDtypeStruct(tuple(entry["data_shape"]), jnp.dtype(entry["data_dtype"]))
    dtype = jnp.dtype(entry["dtype"])
    if entry.get("storage") == "bytes":
        return jax.ShapeDtypeStruct((math.prod(entry["shape"]) * dtype.itemsize,), np.dtype(np.uint8))
    return jax.ShapeDtypeStruct(tuple(entry["shape"]), dtype)


def _restore_leaf(source: str, entry: dict, stored: np.ndarray | None):
    """The jax array of one entry from the array orbax restored (None: zero-size)."""
    expected = _stored_signature(entry)
    if stored is None:
        stored = np.zeros(expected.shape, expected.dtype)
    if not isinstance(stored, np.ndarray) or stored.shape != expected.shape or stored.dtype != expected.dtype:
        held = f"{stored.dtype}{list(stored.shape)}" if isinstance(stored, np.ndarray) else type(stored).__name__
        raise CheckpointCorruptedError(f"Checkpoint {source}: entry {entry['path']}: the arrays hold {held}, "
                                       f"the manifest says {expected.dtype}{list(expected.shape)}.")
    if entry["dtype"] == "key":
        try:
            return jax.random.wrap_key_data(jnp.asarray(stored), impl=entry["key_impl"])
        except (TypeError, ValueError) as error:
            raise CheckpointCorruptedError(f"Checkpoint {source}: entry {entry['path']}: not a valid "
                                           f"{entry['key_impl']!r} key: {error}") from error
    if entry.get("storage") == "bytes":
        stored = stored.view(jnp.dtype(entry["dtype"])).reshape(entry["shape"])
    return jnp.asarray(stored)


# ----------------------------------------------------------------------------------------
# The manifest: building, sealing, validating.


def _canonical_digest(manifest: dict) -> str:
    """sha256 of the manifest's canonical JSON without its ``manifest_sha256`` field."""
    content = {key: value for key, value in manifest.items() if key != "manifest_sha256"}
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _seal(manifest: dict) -> str:
    """The manifest's JSON text with its ``manifest_sha256``.

    The digest is computed on the manifest as JSON reads it back (tuples become lists,
    keys strings), so that reading and re-hashing gives the same digest.
    """
    manifest = json.loads(json.dumps(manifest))
    manifest["manifest_sha256"] = _canonical_digest(manifest)
    return json.dumps(manifest, indent=1) + "\n"


def _check_json(name: str, value, *, allow_none: bool = True) -> None:
    """Raises TypeError unless ``value`` is a JSON-serializable dict (or None)."""
    if value is None and allow_none:
        return
    if not isinstance(value, dict):
        raise TypeError(f"{name} must be a dict, not {type(value).__name__}.")
    try:
        json.dumps(value)
    except (TypeError, ValueError) as error:
        raise TypeError(f"{name} must be JSON-serializable: {error}") from error


_KINDS = {
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "str": lambda v: isinstance(v, str),
    "dict": lambda v: isinstance(v, dict),
    "list": lambda v: isinstance(v, list),
    "null": lambda v: v is None,
}


class _Fields:
    """Reads typed fields of a manifest, raising CheckpointCorruptedError naming the file and field."""

    def __init__(self, source: pathlib.Path):
        self.source = source

    def fail(self, field: str, problem: str):
        raise CheckpointCorruptedError(f"{self.source}: field {field!r} {problem}.")

    def get(self, obj: dict, key: str, kinds: str, field: str = "", *, optional: bool = False):
        field = f"{field}.{key}" if field else key
        if key not in obj:
            if optional:
                return None
            self.fail(field, "is missing")
        value = obj[key]
        if not any(_KINDS[kind](value) for kind in kinds.split("|")):
            self.fail(field, f"must be {kinds.replace('|', ' or ')}, not {type(value).__name__} ({_short(value)})")
        return value


def _short(value) -> str:
    text = json.dumps(value) if not isinstance(value, float) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _check_header(fields: _Fields, manifest) -> None:
    """Format and version (checked first: a newer format may lay out everything else differently)."""
    if not isinstance(manifest, dict):
        raise CheckpointCorruptedError(f"{fields.source}: the manifest must be a JSON object, not a "
                                       f"{type(manifest).__name__}.")
    if fields.get(manifest, "format", "str") != FORMAT:
        raise CheckpointError(f"{fields.source} is not a jaxdl checkpoint (format {manifest.get('format')!r}).")
    version = fields.get(manifest, "format_version", "int")
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{fields.source} has format version {version}; this jaxdl reads up to "
                              f"{FORMAT_VERSION}. Upgrade jaxdl to load it.")
    if version < FORMAT_VERSION:
        raise CheckpointError(f"{fields.source} has format version {version} (arrays in a .npz file, written by "
                              f"an older jaxdl); this jaxdl reads format {FORMAT_VERSION} only. Load it with the "
                              f"jaxdl that wrote it and save it again, or train again.")


def _check_body(fields: _Fields, manifest: dict) -> None:
    """Types of every field, entries and files (CheckpointCorruptedError naming the field)."""
    for key in ("jaxdl_version", "orbax_checkpoint_version", "created"):
        fields.get(manifest, key, "str")
    fields.get(manifest, "model_config", "dict|null")
    fields.get(manifest, "step", "int|null")
    fields.get(manifest, "metadata", "dict")
    _check_run(fields, fields.get(manifest, "run", "dict|null"))
    _check_entries(fields, fields.get(manifest, "entries", "list"))
    _check_files(fields, fields.get(manifest, "files", "list"))
    digest = fields.get(manifest, "manifest_sha256", "str")
    if not _SHA256.fullmatch(digest):
        fields.fail("manifest_sha256", "must be 64 lowercase hex digits")


def _check_run(fields: _Fields, run: dict | None) -> None:
    if run is None:
        return
    fields.get(run, "epoch", "int", "run")
    fields.get(run, "metric", "str|null", "run")
    fields.get(run, "value", "number|null", "run")
    fields.get(run, "best_epoch", "int|null", "run")
    if fields.get(run, "mode", "str", "run") not in ("max", "min"):
        fields.fail("run.mode", "must be 'max' or 'min'")


def _check_entries(fields: _Fields, entries: list) -> None:
    paths, arrays = set(), set()
    for index, entry in enumerate(entries):
        where = f"entries[{index}]"
        if not isinstance(entry, dict):
            fields.fail(where, f"must be an object, not {type(entry).__name__}")
        path = fields.get(entry, "path", "str", where)
        array = fields.get(entry, "array", "str|null", where)
        if array is not None and not re.fullmatch("arr_[0-9]+", array):
            fields.fail(f"{where}.array", f"must be null or arr_<n>, not {array!r}")
        if path in paths or (array is not None and array in arrays):
            fields.fail(where, f"repeats the path {path!r} or the array {array!r} of another entry")
        paths.add(path)
        arrays.add(array)
        _check_shape(fields, fields.get(entry, "shape", "list", where), f"{where}.shape")
        _check_entry_dtype(fields, entry, where)


def _check_shape(fields: _Fields, shape: list, field: str) -> None:
    if not all(_KINDS["int"](size) and size >= 0 for size in shape):
        fields.fail(field, f"must be a list of non-negative integers, not {_short(shape)}")


def _check_entry_dtype(fields: _Fields, entry: dict, where: str) -> None:
    dtype = fields.get(entry, "dtype", "str", where)
    if dtype == "key":
        fields.get(entry, "key_impl", "str", where)
        _check_shape(fields, fields.get(entry, "data_shape", "list", where), f"{where}.data_shape")
        if _array_dtype(fields.get(entry, "data_dtype", "str", where)) is None:
            fields.fail(f"{where}.data_dtype", f"is not a numeric dtype: {entry['data_dtype']!r}")
        if entry["data_shape"][:len(entry["shape"])] != entry["shape"]:
            fields.fail(f"{where}.data_shape", "must start with the entry's shape")
    elif _array_dtype(dtype) is None:
        fields.fail(f"{where}.dtype", f"is not a numeric, bool or key dtype: {dtype!r}")
    if fields.get(entry, "storage", "str", where, optional=True) not in (None, "bytes"):
        fields.fail(f"{where}.storage", "must be 'bytes' when present")


def _check_files(fields: _Fields, files: list) -> None:
    seen = set()
    for index, item in enumerate(files):
        where = f"files[{index}]"
        if not isinstance(item, dict):
            fields.fail(where, f"must be an object, not {type(item).__name__}")
        path = fields.get(item, "path", "str", where)
        if not _is_safe_relative(path) or path == MANIFEST_NAME or path in seen:
            fields.fail(f"{where}.path", f"must be a new relative path inside the checkpoint (no '..', not "
                                         f"absolute), not {path!r}")
        seen.add(path)
        if fields.get(item, "size", "int", where) < 0:
            fields.fail(f"{where}.size", "must not be negative")
        if not _SHA256.fullmatch(fields.get(item, "sha256", "str", where)):
            fields.fail(f"{where}.sha256", "must be 64 lowercase hex digits")


def _is_safe_relative(path: str) -> bool:
    """True for a relative POSIX path without empty, '.' or '..' parts, backslashes or NULs."""
    parts = path.split("/")
    return bool(path) and not path.startswith("/") and "\\" not in path and "\x00" not in path and all(
        part not in ("", ".", "..") for part in parts)


def _read_manifest_file(root: pathlib.Path) -> dict:
    """Reads, validates and digest-checks ``root/manifest.json``."""
    path = root / MANIFEST_NAME
    if not path.is_file():
        raise FileNotFoundError(f"No checkpoint at {root} (missing {MANIFEST_NAME}).")
    try:
        manifest = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointCorruptedError(f"{path} is not valid JSON: {error}.") from error
    fields = _Fields(path)
    _check_header(fields, manifest)
    _check_body(fields, manifest)
    actual = _canonical_digest(manifest)
    if actual != manifest["manifest_sha256"]:
        raise CheckpointCorruptedError(
            f"{path}: its content has sha256 {actual}, its field 'manifest_sha256' says "
            f"{manifest['manifest_sha256']}; the manifest was edited or is damaged.")
    return manifest


def _verify_files(root: pathlib.Path, manifest: dict) -> None:
    """Checks that ``root`` holds exactly the manifest's files, each with its size and sha256."""
    listed = {item["path"]: item for item in manifest["files"]}
    present = set(_list_files(root, CheckpointCorruptedError))
    missing = sorted(set(listed) - present)
    if missing:
        raise CheckpointCorruptedError(f"Checkpoint {root}: {len(missing)} file(s) of the manifest are missing: "
                                       f"{', '.join(missing[:5])}.")
    unexpected = sorted(present - set(listed))
    if unexpected:
        raise CheckpointCorruptedError(f"Checkpoint {root}: file(s) not in the manifest: "
                                       f"{', '.join(unexpected[:5])}.")
    resolved_root = root.resolve()
    for relative, item in listed.items():
        path = root / relative
        if not path.resolve().is_relative_to(resolved_root):  # defense in depth: no links inside
            raise CheckpointCorruptedError(f"Checkpoint {root}: {relative} lies outside the checkpoint.")
        size, sha256 = _hash_file(path)
        if size != item["size"] or sha256 != item["sha256"]:
            raise CheckpointCorruptedError(
                f"Checkpoint {root}: {relative} has {size} bytes and sha256 {sha256}; the manifest expects "
                f"{item['size']} bytes and sha256 {item['sha256']}: the file was changed or is incomplete.")


# ----------------------------------------------------------------------------------------
# Writing one checkpoint directory (no link, no lock: the callers do that).


def _write_checkpoint_dir(directory: pathlib.Path, tree, *, model_config: dict | None, metadata: dict | None,
                          run: dict | None = None) -> None:
    """Writes a complete checkpoint into the new directory ``directory`` (fsynced, manifest last)."""
    entries, arrays = _entries_and_arrays(tree)
    directory.mkdir(mode=0o777)
    if arrays:
        _orbax_save(directory / ARRAYS_DIR, arrays)
    _fault_point("arrays written")
    files = []
    for relative in _list_files(directory, CheckpointError):
        size, sha256 = _hash_file(directory / relative, sync=True)
        files.append({"path": relative, "size": size, "sha256": sha256})
    _sync_tree(directory)
    _fault_point("files hashed")
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "jaxdl_version": _jaxdl_version(),
        "orbax_checkpoint_version": _orbax().__version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "model_config": model_config,
        "step": _step_of(tree),
        "metadata": metadata or {},
        "run": run,
        "entries": entries,
        "files": files,
    }
    write_text_atomic(directory / MANIFEST_NAME, _seal(manifest))
    _fault_point("manifest written")


def _step_of(tree) -> int | None:
    step = getattr(tree, "step", None)
    return None if step is None else int(np.asarray(step))


def _jaxdl_version() -> str:
    import jaxdl

    return getattr(jaxdl, "__version__", "unknown")


# ----------------------------------------------------------------------------------------
# save_checkpoint: a link swapped atomically.


def _sibling_pattern(name: str) -> re.Pattern:
    return re.compile(rf"\.{re.escape(name)}\.(data|link|replaced)-{_HEX32}")


def _link_target(link: pathlib.Path) -> str | None:
    """The name ``link`` points to, if it is a link to a sibling (else None)."""
    if not link.is_symlink():
        return None
    target = os.readlink(link)
    return target if "/" not in target and os.sep not in target else None


def _clean_siblings(link: pathlib.Path) -> None:
    """Removes what killed writers of ``link`` left; puts back a directory moved aside."""
    pattern = _sibling_pattern(link.name)
    leftovers = sorted(path for path in link.parent.iterdir() if pattern.fullmatch(path.name))
    for path in leftovers:
        if path.name.startswith(f".{link.name}.replaced-") and not os.path.lexists(link):
            os.rename(path, link)  # the swap never happened: the old checkpoint comes back
            _fsync_directory(link.parent)
    current = _link_target(link)
    for path in leftovers:
        if path.name != current and os.path.lexists(path):
            _remove(path)


def _swap_in(link: pathlib.Path, data: pathlib.Path) -> None:
    """Makes ``link`` point at ``data`` (a sibling) with one os.replace."""
    if link.is_dir() and not link.is_symlink():
        if any(link.iterdir()):
            os.rename(link, link.parent / f".{link.name}.replaced-{uuid.uuid4().hex}")
            _fault_point("directory moved aside")
        else:
            link.rmdir()
    _replace_link(link, data.name)
    _fault_point("committed")


def save_checkpoint(directory: str | os.PathLike, tree, *, model_config: dict | None = None,
                    metadata: dict | None = None) -> pathlib.Path:
    """Saves ``tree`` (e.g. a `jaxdl.TrainState`) atomically as the checkpoint ``directory``.

    Args:
        directory: the checkpoint's path; it becomes a link to a new hidden sibling directory.
            A previous checkpoint there is replaced atomically.
        tree: a pytree of arrays (any numeric or bool dtype) and `jax.random` keys.
        model_config: the JSON config that rebuilds the model (`jaxdl.models.model_config`).
        metadata: any JSON-serializable dict (epoch, metrics, training options, ...).

    Returns:
        The path of the written manifest (``directory/manifest.json``).

    Raises:
        TypeError: when ``metadata`` or ``model_config`` is not a JSON-serializable dict.
        CheckpointError: when a leaf cannot be stored (a string, an object).
        FileExistsError: when ``directory`` is a file.
    """
    _check_json("metadata", metadata)
    _check_json("model_config", model_config)
    link = pathlib.Path(directory)
    if link.exists() and not link.is_dir():
        raise FileExistsError(f"{link} is a file, not a checkpoint directory.")
    link.parent.mkdir(parents=True, exist_ok=True)
    with _locked(link.parent):
        _clean_siblings(link)
        data = link.parent / f".{link.name}.data-{uuid.uuid4().hex}"
        try:
            _write_checkpoint_dir(data, tree, model_config=model_config, metadata=metadata)
            _swap_in(link, data)
        finally:  # removes the replaced checkpoint, or on failure the new one
            _clean_siblings(link)
    return link / MANIFEST_NAME


# ----------------------------------------------------------------------------------------
# Loading.


def _resolve(directory: str | os.PathLike) -> pathlib.Path:
    """The real directory of a checkpoint path (links resolved once)."""
    path = pathlib.Path(directory)
    if not path.is_dir():
        raise FileNotFoundError(f"No checkpoint at {directory} (missing {MANIFEST_NAME}).")
    return path.resolve()


def read_manifest(directory: str | os.PathLike) -> dict:
    """The validated manifest of the checkpoint in ``directory`` (not the array files' hashes).

    The manifest's own digest, its fields and its format are checked; `verify_checkpoint`
    and `load_checkpoint` also check every file.

    Raises:
        FileNotFoundError: when ``directory`` holds no checkpoint.
        CheckpointError: for another format or another format version.
        CheckpointCorruptedError: for a malformed or edited manifest.
    """
    return _read_manifest_file(_resolve(directory))


def verify_checkpoint(directory: str | os.PathLike) -> dict:
    """Checks the manifest and every file's size and sha256; returns the manifest.

    Raises:
        FileNotFoundError: when ``directory`` holds no checkpoint.
        CheckpointCorruptedError: naming the first missing, extra or changed file.
    """
    root = _resolve(directory)
    manifest = _read_manifest_file(root)
    _verify_files(root, manifest)
    return manifest


def load_checkpoint(directory: str | os.PathLike, target, *, prefix: str = "") -> tuple[Any, dict]:
    """Restores the checkpoint in ``directory`` into the structure of ``target``.

    Args:
        directory: a checkpoint written by `save_checkpoint` (or `CheckpointSet`: its
            ``last_dir`` / ``best_dir``).
        target: a template pytree with the expected structure, shapes and dtypes (its values
            are not used); e.g. a fresh `jaxdl.TrainState`, or `jax.eval_shape` of one
            (`jax.ShapeDtypeStruct` leaves).
        prefix: restore only the entries under this path (e.g. ``"params"``); the template is
            then that subtree.

    Returns:
        ``(restored tree, manifest)``: jax arrays in ``target``'s structure (optax NamedTuple
        states intact).

    Raises:
        FileNotFoundError: when ``directory`` holds no checkpoint.
        CheckpointMismatchError: listing missing, unexpected and reshaped/retyped entries.
        CheckpointCorruptedError: when a file or the manifest was changed, is missing or is
            malformed.
    """
    root = _resolve(directory)
    manifest = _read_manifest_file(root)
    entries = _entries_under(manifest, prefix)
    template = _named_leaves(target)
    _check_compatible(directory, entries, template)
    _verify_files(root, manifest)
    stored = _read_arrays(root, manifest, [entries[name] for name in template])
    leaves = [_restore_leaf(str(root), entries[name], stored.get(entries[name]["array"])) for name in template]
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(target), leaves), manifest


def _read_arrays(root: pathlib.Path, manifest: dict, entries: list[dict]) -> dict[str, np.ndarray]:
    """The orbax arrays of ``entries`` by orbax key (files already verified)."""
    wanted = {entry["array"] for entry in entries if entry["array"] is not None}
    if not wanted:
        return {}
    stored = {entry["array"]: _stored_signature(entry) for entry in manifest["entries"] if entry["array"] is not None}
    try:
        restored = _orbax_restore(root / ARRAYS_DIR, wanted, stored)
    except Exception as error:  # orbax/TensorStore raise many types for unreadable data
        raise CheckpointCorruptedError(f"Checkpoint {root}: cannot read its arrays: {error}") from error
    lacking = sorted(name for name in wanted if not isinstance(restored.get(name), np.ndarray))
    if lacking:
        raise CheckpointCorruptedError(f"Checkpoint {root}: its arrays do not hold {', '.join(lacking[:5])} that "
                                       f"the manifest names.")
    return restored


def _entries_under(manifest: dict, prefix: str) -> dict[str, dict]:
    entries = {entry["path"]: entry for entry in manifest["entries"]}
    prefix = prefix.strip("/")
    if not prefix:
        return entries
    under = {}
    for path, entry in entries.items():
        if path == prefix:
            under["root"] = entry
        elif path.startswith(prefix + "/"):
            under[path[len(prefix) + 1:]] = entry
    return under


def _entry_signature(entry: dict) -> tuple[list, str]:
    if entry["dtype"] == "key":
        return entry["shape"], f"key<{entry['key_impl']}>"
    return entry["shape"], entry["dtype"]


def _template_signature(leaf, stored_dtype: str) -> tuple[list, str]:
    """(shape, dtype name) of a template leaf: an array, a jax.ShapeDtypeStruct or a key."""
    shape = list(leaf.shape) if hasattr(leaf, "shape") else list(np.shape(leaf))
    if _is_key_array(leaf):
        impl = _key_impl_name(leaf)
        return shape, f"key<{impl}>" if impl else stored_dtype
    return shape, str(np.dtype(leaf.dtype)) if hasattr(leaf, "dtype") else str(np.asarray(leaf).dtype)


def _check_compatible(directory, entries: dict, template: dict) -> None:
    missing = [name for name in template if name not in entries]
    unexpected = [name for name in entries if name not in template]
    changed = []
    for name, leaf in template.items():
        if name in entries:
            saved = _entry_signature(entries[name])
            wanted = _template_signature(leaf, saved[1])
            if list(saved[0]) != wanted[0] or saved[1] != wanted[1]:
                changed.append(f"{name}: checkpoint {_describe(*saved)}, model {_describe(*wanted)}")
    if missing or unexpected or changed:
        raise CheckpointMismatchError(_mismatch_message(directory, missing, unexpected, changed))


def _describe(shape, dtype) -> str:
    return f"{dtype}{list(shape)}"


def _mismatch_message(directory, missing, unexpected, changed) -> str:
    lines = [f"Checkpoint {directory} does not match the model (a different architecture or optimizer?):"]
    for title, items in (("missing from the checkpoint", missing), ("unexpected in the checkpoint", unexpected),
                         ("reshaped or retyped", changed)):
        if items:
            lines.append(f"  {title} ({len(items)}):")
            lines.extend(f"    - {item}" for item in items[:MAX_LISTED])
            if len(items) > MAX_LISTED:
                lines.append(f"    ... and {len(items) - MAX_LISTED} more")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------
# Run checkpoints: last + best, one commit per epoch.

_EPOCH_DIR = re.compile(r"epoch-([0-9]{6,})")
_HEAD_DIR = re.compile(rf"\.head-{_HEX32}")
_SET_TEMP = re.compile(rf"\.tmp-{_HEX32}|\.(head|last|best)\.link-{_HEX32}")


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
    `load_checkpoint` / `read_manifest` (see the module docstring for the layout). Each
    `save` is one commit: after a crash at any point, the set holds either the previous or
    the new last/best pair with its metadata, each complete.

    The best epoch is chosen by ``metric`` (``save(..., metric_value=...)``: the first epoch
    with the highest value for ``mode="max"``, the lowest for ``"min"``; NaN and infinite
    values never become best), or by the caller (``save(..., best=True)``). Until an epoch
    becomes best, ``best`` holds no checkpoint.

    Opening the set removes what a killed writer left behind (when no other process is
    saving into it). One process at a time should save into a set; others may read it.

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
        with _locked(self.directory, blocking=False) as writable:
            if writable:
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
        """
        _check_json("metadata", metadata)
        _check_json("model_config", model_config)
        if not _KINDS["int"](epoch) or epoch < 0:
            raise ValueError(f"epoch must be a non-negative int, not {epoch!r}.")
        value = _metric_number(metric_value)
        with _locked(self.directory):
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
        _write_checkpoint_dir(temp, tree, model_config=model_config, metadata=metadata, run=run)
        os.rename(temp, self.directory / name)
        _fsync_directory(self.directory)
        _fault_point("epoch renamed")
        self._write_head(name, best_name)

    def _write_head(self, last: str, best: str | None) -> None:
        """Writes a head directory naming ``last`` and ``best`` and swaps ``head`` to it (the commit)."""
        head_dir = self.directory / f".head-{uuid.uuid4().hex}"
        head_dir.mkdir()
        os.symlink(f"../{last}", head_dir / "last")
        if best is not None:
            os.symlink(f"../{best}", head_dir / "best")
        _fsync_directory(head_dir)
        _fault_point("head written")
        self._check_links(create=True)
        _replace_link(self.directory / "head", head_dir.name)
        _fault_point("committed")

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
                _replace_link(link, target)

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
        manifest = _read_manifest_file(self.directory / name)
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
                _remove(path)
        if head_name is not None:
            self._check_links(create=True)
        _fsync_directory(self.directory)

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


def _metric_number(value) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) and not (
            hasattr(value, "shape") and np.shape(value) == ()):
        raise TypeError(f"metric_value must be a number or None, not {type(value).__name__}.")
    return float(value)


# ----------------------------------------------------------------------------------------
# The exercise's pickle API.


def save(filename: str | os.PathLike, obj) -> None:
    """Pickles ``obj`` into ``filename`` atomically (the exercise's ``NeuralNetwork.save``).

    Objects that must not be pickled (the exercise's data layer) should be dropped by the
    object's ``__getstate__``. Prefer `save_checkpoint` for anything you share.
    """
    _write_atomic(pathlib.Path(filename), lambda file: pickle.dump(obj, file, protocol=pickle.HIGHEST_PROTOCOL))


def load(filename: str | os.PathLike):
    """Unpickles the object in ``filename`` (the exercise's ``NeuralNetwork.load``).

    Warning:
        UNSAFE for untrusted files: unpickling can execute arbitrary code. Only load files
        you wrote yourself; use `load_checkpoint` for anything else.
    """
    with open(filename, "rb") as file:
        return pickle.load(file)
