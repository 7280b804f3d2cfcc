"""One checkpoint in one plain directory: `save_checkpoint`, `read_manifest`, `verify_checkpoint`, `load_checkpoint`.

A checkpoint directory (format version 3) is what orbax's `CompositeCheckpointHandler` writes
for two items, plus the digest (`jaxdl.checkpoint.digest`)::

    <directory>/
        manifest/metadata        # the JSON item: format, versions, step, model_config, metadata, entries
        state/...                # the arrays item: an orbax PyTree of {"arr_0": array, ...}
        jaxdl_digest.json        # size and sha256 of every file above
        _CHECKPOINT_METADATA, commit_success.txt   # orbax's

A run's steps (`jaxdl.checkpoint.RunCheckpoints`) are the same directories, so every function
here reads one of them too. No symbolic links: ``cp -r`` or ``rsync -a`` of the directory is a
complete, independent copy.

Loading verifies the digest before orbax reads anything, checks the manifest's fields, then
the entries against the template (`jaxdl.checkpoint.compatibility`), and every restored array
against its entry. Nothing is unpickled and no code runs: orbax's metadata and the manifest
are JSON, the arrays TensorStore chunks.
"""

from __future__ import annotations

import datetime
import json
import os
import pathlib
import shutil
import uuid
from typing import Any

import jax
import numpy as np

from jaxdl.checkpoint import digest
from jaxdl.checkpoint.backend import orbax, os_error_code
from jaxdl.checkpoint.compatibility import check_compatible, entries_under
from jaxdl.checkpoint.entries import entries_and_arrays, named_leaves, restore_leaf, stored_signature
from jaxdl.checkpoint.errors import CheckpointCorruptedError, CheckpointError, storage_error
from jaxdl.version import __version__

FORMAT = "jaxdl.checkpoint"
FORMAT_VERSION = 3


def step_args(tree, *, model_config: dict | None = None, metadata: dict | None = None):
    """The orbax ``Composite`` args that save ``tree`` as one checkpoint (module docstring)."""
    for name, value in (("model_config", model_config), ("metadata", metadata)):
        if value is not None and not isinstance(value, dict):
            raise TypeError(f"save_checkpoint: {name} must be a dict or None, got {type(value).__name__}.")
    ocp = orbax()
    entries, arrays = entries_and_arrays(tree)
    step = getattr(tree, "step", None)
    manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, "jaxdl_version": __version__,
                "created": datetime.datetime.now(datetime.timezone.utc).isoformat(),
                "step": None if step is None else int(step), "model_config": model_config,
                "metadata": dict(metadata or {}), "entries": entries}
    try:
        json.dumps(manifest, allow_nan=True)
    except (TypeError, ValueError, RecursionError) as error:
        raise TypeError(f"save_checkpoint: metadata and model_config must be JSON data, got an error: "
                        f"{type(error).__name__}: {error}") from None
    items = {"manifest": ocp.args.JsonSave(manifest)}
    if arrays:
        items["state"] = ocp.args.PyTreeSave(arrays)
    return ocp.args.Composite(**items)


def checkpointer():
    """A synchronous orbax checkpointer of the two items, committing through `digest.renaming_class`."""
    ocp = orbax()
    return ocp.Checkpointer(ocp.CompositeCheckpointHandler(), temporary_path_class=digest.renaming_class())


def save_checkpoint(directory: str | os.PathLike, tree, *, model_config: dict | None = None,
                    metadata: dict | None = None) -> None:
    """Saves ``tree`` (any pytree of arrays: every dtype jax has, `jax.random` keys included) to
    ``directory``, replacing a checkpoint there.

    Orbax writes the new checkpoint into a temporary directory and renames it (one commit); a
    checkpoint already at ``directory`` is renamed aside just before and removed just after.
    A kill between those two renames leaves it as ``.<name>.old-<hex>`` beside: the next save
    (or a load that finds ``directory`` missing) puts it back; the next save also removes what
    a killed save left (``.<name>.new-<hex>*``). In a
    multi-process run every process calls this with the same (replicated) tree; orbax writes
    once.

    Args:
        directory: the checkpoint directory (its parent is created).
        tree: the pytree (e.g. a `jaxdl.TrainState`).
        model_config: the JSON config that rebuilds the model (`jaxdl.models.build_model`).
        metadata: free-form JSON data.

    Raises:
        TypeError: when ``metadata`` or ``model_config`` is not JSON data.
        CheckpointError: for a leaf that is not an array.
        StorageError: (an OSError) naming the directory and the cause when the disk refuses.
    """
    directory = pathlib.Path(directory).absolute()
    args = step_args(tree, model_config=model_config, metadata=metadata)
    new = directory.parent / f".{directory.name}.new-{uuid.uuid4().hex}"
    old = directory.parent / f".{directory.name}.old-{uuid.uuid4().hex}"
    primary = jax.process_index() == 0
    if primary:
        _recover(directory)
    try:
        directory.parent.mkdir(parents=True, exist_ok=True)
        with checkpointer() as writer:
            writer.save(new, args=args)
        if primary:
            if os.path.lexists(directory):
                os.rename(directory, old)
            os.rename(new, directory)
            shutil.rmtree(old, ignore_errors=True)
        if jax.process_count() > 1:  # the others return once the checkpoint is in place
            orbax().multihost.sync_global_processes(f"jaxdl save_checkpoint {directory}")
    except Exception as error:
        code = os_error_code(error)
        if code is None:
            raise
        raise storage_error(directory.parent, OSError(code, os.strerror(code), str(new))) from error
    finally:
        if primary:
            for path in directory.parent.glob(f"{new.name}*"):
                shutil.rmtree(path, ignore_errors=True)


def _recover(directory: pathlib.Path) -> None:
    """Puts back a checkpoint a killed `save_checkpoint` left renamed aside; removes its unfinished one."""
    if not directory.parent.is_dir():
        return
    for path in sorted(directory.parent.glob(f".{directory.name}.old-*")):
        if not os.path.lexists(directory):
            os.rename(path, directory)
        else:
            shutil.rmtree(path, ignore_errors=True)
    for path in directory.parent.glob(f".{directory.name}.new-*"):
        shutil.rmtree(path, ignore_errors=True)


def _resolved(directory: str | os.PathLike) -> pathlib.Path:
    """``directory``, or the checkpoint a killed `save_checkpoint` left renamed aside when it is missing."""
    directory = pathlib.Path(directory)
    aside = sorted(directory.parent.glob(f".{directory.name}.old-*")) if not os.path.lexists(directory) else []
    return aside[0] if aside else directory


def _check_format(directory: pathlib.Path) -> None:
    """FileNotFoundError for no directory; CheckpointError naming the version of an older format."""
    if not directory.is_dir():
        raise FileNotFoundError(f"No checkpoint at {directory}.")
    old = directory / "manifest.json"
    if old.exists() or (directory / "arrays").is_dir() or directory.suffix == ".npz":
        try:
            version = json.loads(old.read_text(encoding="utf-8")).get("format_version", 2)
        except (OSError, ValueError, AttributeError):
            version = 2 if (directory / "arrays").is_dir() else 1
        raise CheckpointError(f"Checkpoint {directory} is in jaxdl's checkpoint format version {version} "
                              f"(manifest.json and arrays/); this jaxdl reads format version {FORMAT_VERSION} "
                              f"(orbax steps). Load it with the jaxdl that wrote it and save it again.")


def _checked_manifest(directory: pathlib.Path, manifest) -> dict:
    """``manifest`` if its fields have the types this module writes, else CheckpointCorruptedError."""
    def bad(field, expected):
        return CheckpointCorruptedError(f"Checkpoint {directory}: manifest field {field!r} must be {expected}.")

    if not isinstance(manifest, dict):
        raise bad("(the manifest)", "a JSON object")
    if manifest.get("format") != FORMAT or manifest.get("format_version") != FORMAT_VERSION:
        raise bad("format", f"{FORMAT!r} version {FORMAT_VERSION}, got {manifest.get('format')!r} version "
                            f"{manifest.get('format_version')!r}")
    if not isinstance(manifest.get("metadata"), dict):
        raise bad("metadata", "an object")
    entries = manifest.get("entries")
    try:
        for entry in entries:
            if not (isinstance(entry["path"], str) and isinstance(entry["shape"], list)):
                raise TypeError(f"entry {entry!r}")
            stored_signature(entry)
    except (TypeError, ValueError, KeyError) as error:
        raise bad("entries", f"a list of valid {{path, shape, dtype}} objects ({type(error).__name__}: "
                             f"{error})") from None
    return manifest


def verify_checkpoint(directory: str | os.PathLike) -> dict:
    """Checks every file of the checkpoint against its digest and the manifest's fields; returns the manifest.

    Raises:
        FileNotFoundError: when there is no directory.
        CheckpointError: for a checkpoint of an older format (naming its version).
        CheckpointCorruptedError: naming the file or field that is wrong.
    """
    directory = _resolved(directory)
    _check_format(directory)
    digest.verify(directory)
    try:
        manifest = json.loads((directory / "manifest" / "metadata").read_text(encoding="utf-8"))
    except (ValueError, RecursionError, UnicodeDecodeError) as error:
        raise CheckpointCorruptedError(f"Checkpoint {directory}: the manifest is not JSON ({error}).") from None
    return _checked_manifest(directory, manifest)


#: `read_manifest` is `verify_checkpoint`: the manifest is only trusted after the files are checked.
read_manifest = verify_checkpoint


def load_checkpoint(directory: str | os.PathLike, target, *, prefix: str = "") -> tuple[Any, dict]:
    """Loads the checkpoint in ``directory`` into the structure of ``target``.

    Args:
        directory: a checkpoint directory (`save_checkpoint`'s, or one step of a run).
        target: a pytree of arrays or `jax.ShapeDtypeStruct` whose structure, shapes and dtypes
            the checkpoint must match (e.g. a freshly initialized `jaxdl.TrainState`).
        prefix: load only the entries under this path (e.g. ``"params"`` of a saved `TrainState`).

    Returns:
        (the restored tree, the manifest).

    Raises:
        FileNotFoundError: when there is no directory.
        CheckpointError: for an older format (naming its version).
        CheckpointCorruptedError: for a damaged file (naming it).
        CheckpointMismatchError: for a checkpoint of another model, listing the missing,
            unexpected and reshaped entries.
    """
    directory = _resolved(directory)
    manifest = verify_checkpoint(directory)
    entries = entries_under(manifest, prefix)
    template = named_leaves(target)
    check_compatible(directory, entries, template)
    wanted = {entries[name]["array"] for name in template if entries[name].get("array")}
    stored = _restore_arrays(directory, wanted) if wanted else {}
    leaves = [restore_leaf(str(directory), entries[name], stored.get(entries[name].get("array")))
              for name in template]
    return jax.tree.unflatten(jax.tree.structure(target), leaves), manifest


def _restore_arrays(directory: pathlib.Path, wanted: set[str]) -> dict[str, np.ndarray]:
    ocp = orbax()
    restore_args = {name: ocp.RestoreArgs(restore_type=np.ndarray) for name in sorted(wanted)}
    item = {name: 0 for name in sorted(wanted)}
    args = ocp.args.Composite(state=ocp.args.PyTreeRestore(item=item, restore_args=restore_args,
                                                           partial_restore=True))
    try:
        with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as reader:
            return reader.restore(directory.absolute(), args=args)["state"]
    except (ValueError, KeyError, OSError) as error:  # the digest matched: a file orbax itself rejects
        raise CheckpointCorruptedError(f"Checkpoint {directory}: orbax could not read the arrays: {error}") from error
