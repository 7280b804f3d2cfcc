"""Checkpoints: safe ``.npz`` + JSON manifest (the default), and the exercise's pickle API.

Safe format (`save_checkpoint` / `load_checkpoint`). A checkpoint is a directory::

    <checkpoint>/manifest.json          # written last
    <checkpoint>/arrays-<sha256[:16]>.npz

* ``arrays-*.npz``: one array per leaf of the saved pytree, named by its path
  (``params/conv_0/weights``, ``opt_state/0/0/mu/conv_0/weights``, ``key``, ``step``).
  It is read with ``np.load(allow_pickle=False)``: loading never executes code.
* ``manifest.json``: ``format``, ``format_version``, ``jaxdl_version``, the array file's
  name and sha256, every entry's path, shape and dtype, the ``model_config`` (see
  `jaxdl.models.build_model`), the training ``step`` and free-form JSON ``metadata``.
  `jax.random` keys are stored as their raw data (`jax.random.key_data`) with their
  implementation name and rebuilt with `jax.random.wrap_key_data`.

Restoring needs a template pytree with the expected structure (for example a fresh
`jaxdl.TrainState` from `jaxdl.create_train_state`): the arrays are put into the template's
structure, so optax's NamedTuple states come back as they were. Entries missing from the
checkpoint, unexpected entries and shape or dtype changes raise `CheckpointMismatchError`
listing each difference; a changed array file raises `CheckpointCorruptedError`.

Atomicity: the array file gets a new content-addressed name; it is written to a temporary
file, fsynced and renamed; then the manifest is written the same way (temporary file,
fsync, ``os.replace``), and only then are array files the manifest no longer names
removed. A process killed at any moment leaves either the previous checkpoint or the new
one, both complete.

Pickle API (`save` / `load`), the exercise's ``NeuralNetwork.save``/``load``: any picklable
object in one file. UNSAFE for files you did not write yourself: unpickling runs arbitrary
code. Prefer the safe format for anything shared.

Example:
    >>> save_checkpoint("runs/lenet/checkpoints/last", train_state, model_config=config,
    ...                 metadata={"epoch": 3})
    >>> train_state, manifest = load_checkpoint("runs/lenet/checkpoints/last", template_state)
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import pathlib
import pickle
import tempfile
import uuid
from typing import Any

import jax
import numpy as np

from jaxdl.core import path_names

FORMAT = "jaxdl.checkpoint"
FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
#: How many differences of each kind a mismatch error lists before summarizing.
MAX_LISTED = 20


class CheckpointError(ValueError):
    """Base class of checkpoint errors."""


class CheckpointCorruptedError(CheckpointError):
    """The array file does not match the manifest (changed, truncated or unreadable)."""


class CheckpointMismatchError(CheckpointError):
    """The checkpoint's entries do not fit the template (a different architecture)."""


# ----------------------------------------------------------------------------------------
# Atomic file writing.


def _fsync_directory(directory: pathlib.Path) -> None:
    """Makes a rename inside ``directory`` durable (no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(path: pathlib.Path, write) -> None:
    """Calls ``write(binary_file)`` on a temporary file next to ``path``, then renames it.

    The temporary file is fsynced before ``os.replace`` and removed if ``write`` fails, so
    ``path`` always holds either its old content or the complete new one.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp_name, path)
    except BaseException:
        if os.path.exists(temp_name):
            os.unlink(temp_name)
        raise
    _fsync_directory(path.parent)


def write_bytes_atomic(path, data: bytes) -> None:
    """Writes ``data`` to ``path`` atomically (temporary file, fsync, rename)."""
    _write_atomic(pathlib.Path(path), lambda file: file.write(data))


def write_text_atomic(path, text: str) -> None:
    """Writes ``text`` (UTF-8) to ``path`` atomically (temporary file, fsync, rename)."""
    write_bytes_atomic(path, text.encode("utf-8"))


def _sha256(path: pathlib.Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ----------------------------------------------------------------------------------------
# Pytree <-> named arrays.


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


def _entry(leaf) -> tuple[dict, np.ndarray]:
    """The manifest entry and the stored NumPy array of one leaf."""
    if _is_key_array(leaf):
        data = np.asarray(jax.random.key_data(leaf))
        return {"shape": list(np.shape(leaf)), "dtype": "key", "key_impl": str(jax.random.key_impl(leaf)),
                "data_dtype": str(data.dtype)}, data
    array = np.asarray(leaf)
    if array.dtype == object:
        raise CheckpointError(f"Cannot store a leaf of type {type(leaf).__name__} in the safe format.")
    return {"shape": list(array.shape), "dtype": str(array.dtype)}, array


# ----------------------------------------------------------------------------------------
# Saving.


def save_checkpoint(directory, tree, *, model_config: dict | None = None, metadata: dict | None = None) -> pathlib.Path:
    """Saves ``tree`` (e.g. a `jaxdl.TrainState`) atomically into ``directory``.

    Args:
        directory: the checkpoint directory (created if needed); a previous checkpoint there
            is replaced atomically.
        tree: a pytree of arrays (and `jax.random` keys).
        model_config: the JSON config that rebuilds the model (`jaxdl.models.model_config`).
        metadata: any JSON-serializable dict (epoch, metrics, training options, ...).

    Returns:
        The path of the written manifest.
    """
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    entries, arrays = [], []
    for name, leaf in _named_leaves(tree).items():
        entry, array = _entry(leaf)
        entries.append({"path": name, "array": f"arr_{len(arrays)}", **entry})
        arrays.append(array)
    arrays_path = _write_arrays(directory, arrays)
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "jaxdl_version": _jaxdl_version(),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "arrays_file": arrays_path.name,
        "arrays_sha256": _sha256(arrays_path),
        "model_config": model_config,
        "step": _step_of(tree),
        "metadata": metadata or {},
        "entries": entries,
    }
    manifest_path = directory / MANIFEST_NAME
    write_text_atomic(manifest_path, json.dumps(manifest, indent=1, sort_keys=False) + "\n")
    _remove_stale_arrays(directory, keep=arrays_path.name)
    return manifest_path


def _write_arrays(directory: pathlib.Path, arrays: list) -> pathlib.Path:
    """Writes the npz (members arr_0, arr_1, ...) under a temporary name, then renames it
    to ``arrays-<hash>.npz``."""
    temp = directory / f".arrays-{uuid.uuid4().hex}.npz.tmp"
    try:
        _write_atomic(temp, lambda file: np.savez(file, *arrays))
        final = directory / f"arrays-{_sha256(temp)[:16]}.npz"
        os.replace(temp, final)
    except BaseException:
        if temp.exists():
            temp.unlink()
        raise
    _fsync_directory(directory)
    return final


def _remove_stale_arrays(directory: pathlib.Path, keep: str) -> None:
    for path in directory.glob("arrays-*.npz"):
        if path.name != keep:
            path.unlink(missing_ok=True)
    for path in directory.glob(".*.tmp"):  # left by a writer killed mid-way
        path.unlink(missing_ok=True)


def _step_of(tree) -> int | None:
    step = getattr(tree, "step", None)
    return None if step is None else int(np.asarray(step))


def _jaxdl_version() -> str:
    import jaxdl

    return getattr(jaxdl, "__version__", "unknown")


# ----------------------------------------------------------------------------------------
# Loading.


def read_manifest(directory) -> dict:
    """The manifest of the checkpoint in ``directory`` (checks format and version).

    Raises:
        FileNotFoundError: when ``directory`` holds no checkpoint.
        CheckpointError: for another format or a newer format version.
    """
    path = pathlib.Path(directory) / MANIFEST_NAME
    if not path.is_file():
        raise FileNotFoundError(f"No checkpoint at {directory} (missing {MANIFEST_NAME}).")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise CheckpointCorruptedError(f"{path} is not valid JSON: {error}.") from error
    if manifest.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a jaxdl checkpoint (format {manifest.get('format')!r}).")
    if manifest.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has format version {manifest['format_version']}; this jaxdl reads up to "
            f"{FORMAT_VERSION}. Upgrade jaxdl to load it."
        )
    return manifest


def read_arrays(directory, manifest: dict | None = None) -> dict[str, np.ndarray]:
    """The checkpoint's arrays by npz member name, after checking the file's sha256 (no pickle).

    Each manifest entry names its member (``"array"``) beside its pytree ``"path"``.

    Raises:
        CheckpointCorruptedError: when the array file is missing, changed or unreadable.
    """
    directory = pathlib.Path(directory)
    manifest = manifest or read_manifest(directory)
    path = directory / manifest["arrays_file"]
    if not path.is_file():
        raise CheckpointCorruptedError(f"Checkpoint {directory}: its array file {path.name} is missing.")
    actual = _sha256(path)
    if actual != manifest["arrays_sha256"]:
        raise CheckpointCorruptedError(
            f"Checkpoint {directory}: {path.name} has sha256 {actual}, the manifest expects "
            f"{manifest['arrays_sha256']}; the file was changed or is incomplete."
        )
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {name: npz[name] for name in npz.files}
    except (ValueError, OSError) as error:
        raise CheckpointCorruptedError(f"Checkpoint {directory}: cannot read {path.name}: {error}.") from error


def load_checkpoint(directory, target, *, prefix: str = "") -> tuple[Any, dict]:
    """Restores the checkpoint in ``directory`` into the structure of ``target``.

    Args:
        directory: a checkpoint directory written by `save_checkpoint`.
        target: a template pytree with the expected structure, shapes and dtypes (its values
            are not used); e.g. a fresh `jaxdl.TrainState`, or `jax.eval_shape` of one.
        prefix: restore only the entries under this path (e.g. ``"params"``); the template is
            then that subtree.

    Returns:
        ``(restored tree, manifest)``.

    Raises:
        CheckpointMismatchError: listing missing, unexpected and reshaped entries.
        CheckpointCorruptedError: when the arrays do not match the manifest's hash.
    """
    manifest = read_manifest(directory)
    entries = _entries_under(manifest, prefix)
    template = _named_leaves(target)
    _check_compatible(directory, entries, template)
    arrays = read_arrays(directory, manifest)
    leaves = [_restore_leaf(entries[name], arrays[entries[name]["array"]]) for name in template]
    treedef = jax.tree_util.tree_structure(target)
    return jax.tree_util.tree_unflatten(treedef, leaves), manifest


def _entries_under(manifest: dict, prefix: str) -> dict[str, dict]:
    entries = {entry["path"]: entry for entry in manifest["entries"]}
    if not prefix:
        return entries
    prefix = prefix.strip("/")
    under = {}
    for path, entry in entries.items():
        if path == prefix:
            under["root"] = entry
        elif path.startswith(prefix + "/"):
            under[path[len(prefix) + 1:]] = entry
    return under


def _restore_leaf(entry: dict, array: np.ndarray):
    if entry["dtype"] == "key":
        return jax.random.wrap_key_data(array, impl=entry["key_impl"])
    if list(array.shape) != entry["shape"] or str(array.dtype) != entry["dtype"]:
        raise CheckpointCorruptedError(
            f"Entry {entry['path']}: the array file holds {_describe(array.shape, array.dtype)}, the manifest "
            f"says {_describe(entry['shape'], entry['dtype'])}."
        )
    return jax.numpy.asarray(array)


def _template_signature(leaf) -> tuple[list, str]:
    """(shape, dtype name) of a template leaf: an array, a jax.ShapeDtypeStruct or a key."""
    shape = list(leaf.shape) if hasattr(leaf, "shape") else list(np.shape(leaf))
    if _is_key_array(leaf):
        return shape, "key"
    return shape, str(np.dtype(leaf.dtype)) if hasattr(leaf, "dtype") else str(np.asarray(leaf).dtype)


def _check_compatible(directory, entries: dict, template: dict) -> None:
    missing = [name for name in template if name not in entries]
    unexpected = [name for name in entries if name not in template]
    changed = []
    for name, leaf in template.items():
        if name in entries:
            shape, dtype = _template_signature(leaf)
            entry = entries[name]
            if entry["shape"] != shape or entry["dtype"] != dtype:
                changed.append(f"{name}: checkpoint {_describe(entry['shape'], entry['dtype'])}, "
                               f"model {_describe(shape, dtype)}")
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
# The exercise's pickle API.


def save(filename, obj) -> None:
    """Pickles ``obj`` into ``filename`` atomically (the exercise's ``NeuralNetwork.save``).

    Objects that must not be pickled (the exercise's data layer) should be dropped by the
    object's ``__getstate__``. Prefer `save_checkpoint` for anything you share.
    """
    _write_atomic(pathlib.Path(filename), lambda file: pickle.dump(obj, file, protocol=pickle.HIGHEST_PROTOCOL))


def load(filename):
    """Unpickles the object in ``filename`` (the exercise's ``NeuralNetwork.load``).

    Warning:
        UNSAFE for untrusted files: unpickling can execute arbitrary code. Only load files
        you wrote yourself; use `load_checkpoint` for anything else.
    """
    with open(filename, "rb") as file:
        return pickle.load(file)
