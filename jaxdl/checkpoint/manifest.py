"""The manifest: building it, sealing it with its own digest, reading it back, checking the files against it.

``manifest.json`` is a JSON object with ``format`` (``"jaxdl.checkpoint"``), ``format_version``
(2), ``jaxdl_version``, ``orbax_checkpoint_version``, ``created``, ``model_config`` (the JSON
config `jaxdl.models.build_model` rebuilds the model from, or null), ``step`` (the tree's
``step`` attribute, or null), ``metadata`` (free-form JSON object), ``run`` (null, or
``{"epoch", "metric", "mode", "value", "best_epoch"}`` in a `CheckpointSet` epoch), ``entries``
(one per leaf, see `jaxdl.checkpoint.entries`), ``files`` (EVERY other file of the
checkpoint: relative ``path``, ``size``, ``sha256``) and ``manifest_sha256``: the sha256 of
the manifest's own canonical JSON (sorted keys, no spaces) without that field, so the
metadata, the entry names and the file list are covered too.

Integrity (orbax has no checksums): loading re-hashes every file (`verify_files`) and
re-checks the manifest's digest (`read_manifest_file`) before orbax reads anything; a
truncated, edited, missing or extra file, a symbolic link inside the checkpoint, or an edited
manifest is a `CheckpointCorruptedError` naming the file (and the field), never silently
wrong arrays. The fields themselves are checked by `jaxdl.checkpoint.validation`.

Nesting is bounded: JSON nested deeper than `MAX_NESTING` arrays/objects (a hostile manifest
of 100,000 brackets would exhaust Python's recursion) is a `CheckpointCorruptedError` when
read, and a TypeError when passed as ``metadata`` or ``model_config`` to be written.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import pathlib

import numpy as np

from jaxdl.checkpoint.arrays import orbax
from jaxdl.checkpoint.errors import CheckpointCorruptedError, CheckpointError
from jaxdl.checkpoint.files import hash_file, list_files
from jaxdl.checkpoint.layout import FORMAT, FORMAT_VERSION, MANIFEST_NAME
from jaxdl.checkpoint.validation import check_manifest
from jaxdl.version import __version__


#: The deepest nesting of JSON arrays and objects a manifest may hold (its own fields need 4).
MAX_NESTING = 100


def nesting_depth(value, limit: int = MAX_NESTING) -> int:
    """How deeply lists/tuples and dicts nest in ``value`` (0 for a scalar), counted without
    recursion; stops counting at ``limit + 1``."""
    deepest, pending = 0, [(value, 1)]
    while pending:
        item, depth = pending.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, (list, tuple)) else None
        if children is None:
            continue
        deepest = max(deepest, depth)
        if deepest > limit:
            return deepest
        pending.extend((child, depth + 1) for child in children)
    return deepest


def check_json(name: str, value, *, allow_none: bool = True) -> None:
    """Raises TypeError unless ``value`` is a JSON-serializable dict (or None) nested at most
    `MAX_NESTING` deep."""
    if value is None and allow_none:
        return
    if not isinstance(value, dict):
        raise TypeError(f"{name} must be a dict, not {type(value).__name__}.")
    if nesting_depth(value) > MAX_NESTING - 2:  # it sits two levels deep in the manifest
        raise TypeError(f"{name} nests lists and dicts more than {MAX_NESTING - 2} deep; checkpoints refuse "
                        f"deeper JSON. Flatten it.")
    try:
        json.dumps(value)
    except (TypeError, ValueError) as error:
        raise TypeError(f"{name} must be JSON-serializable: {error}") from error


def build_manifest(tree, *, entries: list[dict], files: list[dict], model_config: dict | None,
                   metadata: dict | None, run: dict | None) -> dict:
    """The manifest of a checkpoint of ``tree`` (not sealed yet)."""
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "jaxdl_version": _jaxdl_version(),
        "orbax_checkpoint_version": orbax().__version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "model_config": model_config,
        "step": _step_of(tree),
        "metadata": metadata or {},
        "run": run,
        "entries": entries,
        "files": files,
    }


def _step_of(tree) -> int | None:
    step = getattr(tree, "step", None)
    return None if step is None else int(np.asarray(step))


def _jaxdl_version() -> str:
    return __version__


def _canonical_digest(manifest: dict) -> str:
    """sha256 of the manifest's canonical JSON without its ``manifest_sha256`` field."""
    content = {key: value for key, value in manifest.items() if key != "manifest_sha256"}
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def seal(manifest: dict) -> str:
    """The manifest's JSON text with its ``manifest_sha256``.

    The digest is computed on the manifest as JSON reads it back (tuples become lists,
    keys strings), so that reading and re-hashing gives the same digest.
    """
    manifest = json.loads(json.dumps(manifest))
    manifest["manifest_sha256"] = _canonical_digest(manifest)
    return json.dumps(manifest, indent=1) + "\n"


def read_manifest_file(root: pathlib.Path) -> dict:
    """Reads, validates and digest-checks ``root/manifest.json``."""
    path = root / MANIFEST_NAME
    if not path.is_file():
        raise FileNotFoundError(f"No checkpoint at {root} (missing {MANIFEST_NAME}).")
    try:
        manifest = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointCorruptedError(f"{path} is not valid JSON: {error}.") from error
    except RecursionError:
        manifest = None  # deeper than Python's recursion limit: refused below without the traceback
        depth = MAX_NESTING + 1
    else:
        depth = nesting_depth(manifest)
    if depth > MAX_NESTING:
        raise CheckpointCorruptedError(f"{path} nests JSON arrays/objects more than {MAX_NESTING} deep; a jaxdl "
                                       f"manifest never does (the file is damaged or was not written by jaxdl).")
    check_manifest(path, manifest)
    actual = _canonical_digest(manifest)
    if actual != manifest["manifest_sha256"]:
        raise CheckpointCorruptedError(
            f"{path}: its content has sha256 {actual}, its field 'manifest_sha256' says "
            f"{manifest['manifest_sha256']}; the manifest was edited or is damaged.")
    return manifest


def data_files(root: pathlib.Path, error: type[CheckpointError]) -> list[str]:
    """The relative paths of the checkpoint's files that its manifest lists: all but the manifest."""
    return [relative for relative in list_files(root, error) if relative != MANIFEST_NAME]


def hashed_files(root: pathlib.Path) -> list[dict]:
    """The manifest's ``files`` of a checkpoint being written (each file fsynced while hashed)."""
    files = []
    for relative in data_files(root, CheckpointError):
        size, sha256 = hash_file(root / relative, sync=True)
        files.append({"path": relative, "size": size, "sha256": sha256})
    return files


def verify_files(root: pathlib.Path, manifest: dict) -> None:
    """Checks that ``root`` holds exactly the manifest's files, each with its size and sha256."""
    listed = {item["path"]: item for item in manifest["files"]}
    present = set(data_files(root, CheckpointCorruptedError))
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
        size, sha256 = hash_file(path)
        if size != item["size"] or sha256 != item["sha256"]:
            raise CheckpointCorruptedError(
                f"Checkpoint {root}: {relative} has {size} bytes and sha256 {sha256}; the manifest expects "
                f"{item['size']} bytes and sha256 {item['sha256']}: the file was changed or is incomplete.")
