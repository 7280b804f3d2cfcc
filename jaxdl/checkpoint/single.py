"""One checkpoint: `save_checkpoint` behind an atomically swapped link; `read_manifest`, `verify_checkpoint`,
`load_checkpoint` read it back.

Atomic replacement (orbax commits ``arrays/`` by renaming a temporary directory, but cannot
replace an existing checkpoint): the new checkpoint is written, fsynced and sealed in a new
hidden directory ``.<name>.data-<uuid>``; the link ``<name>`` is then swapped with one
``os.replace`` of a temporary link. A process killed at any moment leaves either the old or
the new complete checkpoint. Leftovers of a killed writer (``.<name>.data-*`` not linked,
``.<name>.link-*``) are removed by the next save. A real (non-link) directory at ``<name>``
(written by jaxdl 0.1's format 1, or made by hand) is first renamed to
``.<name>.replaced-<uuid>``; if the process dies before the link is in place, the next save
renames it back (until then ``<name>`` is missing). Saves into one parent directory are
serialized by an advisory lock (``flock``) on that directory.

Reading resolves the checkpoint's directory once, so a checkpoint replaced while it is being
read is never mixed with its successor. `read_manifest` checks the manifest (fields, digest)
only; `verify_checkpoint` and `load_checkpoint` check every file too.
"""

from __future__ import annotations

import os
import pathlib
import re
import uuid
from typing import Any

import jax

from jaxdl.checkpoint.collective import check_writable, collective_write
from jaxdl.checkpoint.compatibility import check_compatible, entries_under
from jaxdl.checkpoint.directory import read_arrays, write_checkpoint_dir
from jaxdl.checkpoint.entries import named_leaves, restore_leaf
from jaxdl.checkpoint.faults import fault_point
from jaxdl.checkpoint.files import fsync_directory, locked, remove, replace_link
from jaxdl.checkpoint.layout import MANIFEST_NAME, UUID_HEX
from jaxdl.checkpoint.manifest import check_json, read_manifest_file, verify_files


def _sibling_pattern(name: str) -> re.Pattern:
    return re.compile(rf"\.{re.escape(name)}\.(data|link|replaced)-{UUID_HEX}")


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
            fsync_directory(link.parent)
    current = _link_target(link)
    for path in leftovers:
        if path.name != current and os.path.lexists(path):
            remove(path)


def _swap_in(link: pathlib.Path, data: pathlib.Path) -> None:
    """Makes ``link`` point at ``data`` (a sibling) with one os.replace."""
    if link.is_dir() and not link.is_symlink():
        if any(link.iterdir()):
            os.rename(link, link.parent / f".{link.name}.replaced-{uuid.uuid4().hex}")
            fault_point("directory moved aside")
        else:
            link.rmdir()
    replace_link(link, data.name)
    fault_point("committed")


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
        CheckpointError: when a leaf cannot be stored (a string, an object, an array sharded
            over several processes).
        FileExistsError: when ``directory`` is a file.

    In a multi-process run this is a collective call: every process calls it, process 0
    writes, all return once the checkpoint is committed (`jaxdl.checkpoint.collective`).
    """
    check_json("metadata", metadata)
    check_json("model_config", model_config)
    check_writable(tree)
    link = pathlib.Path(directory)
    if link.exists() and not link.is_dir():
        raise FileExistsError(f"{link} is a file, not a checkpoint directory.")
    with collective_write(f"save_checkpoint {link.name}") as writes:
        if writes:
            _write_and_swap(link, tree, model_config=model_config, metadata=metadata)
    return link / MANIFEST_NAME


def _write_and_swap(link: pathlib.Path, tree, *, model_config: dict | None, metadata: dict | None) -> None:
    """Writes the checkpoint into a new hidden sibling of ``link`` and swaps ``link`` to it, under the lock."""
    link.parent.mkdir(parents=True, exist_ok=True)
    with locked(link.parent):
        _clean_siblings(link)
        data = link.parent / f".{link.name}.data-{uuid.uuid4().hex}"
        try:
            write_checkpoint_dir(data, tree, model_config=model_config, metadata=metadata)
            _swap_in(link, data)
        finally:  # removes the replaced checkpoint, or on failure the new one
            _clean_siblings(link)


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
    return read_manifest_file(_resolve(directory))


def verify_checkpoint(directory: str | os.PathLike) -> dict:
    """Checks the manifest and every file's size and sha256; returns the manifest.

    Raises:
        FileNotFoundError: when ``directory`` holds no checkpoint.
        CheckpointCorruptedError: naming the first missing, extra or changed file.
    """
    root = _resolve(directory)
    manifest = read_manifest_file(root)
    verify_files(root, manifest)
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
    manifest = read_manifest_file(root)
    entries = entries_under(manifest, prefix)
    template = named_leaves(target)
    check_compatible(directory, entries, template)
    verify_files(root, manifest)
    stored = read_arrays(root, manifest, [entries[name] for name in template])
    leaves = [restore_leaf(str(root), entries[name], stored.get(entries[name]["array"])) for name in template]
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(target), leaves), manifest
