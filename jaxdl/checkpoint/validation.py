"""Validation of a manifest read from disk: format, version, the type of every field, safe paths.

A malformed manifest (not an object, a missing field, a wrong type) is a
`CheckpointCorruptedError` naming the file and the field, never a KeyError or TypeError.
Every path in the manifest's ``files`` must be relative, without ``..``, so that it resolves
inside the checkpoint directory (orbax trusts its paths). Format and version are checked
first: another format, a newer version, or format 1 (``.npz``, jaxdl before orbax) is a
`CheckpointError` that says so.
"""

from __future__ import annotations

import json
import pathlib
import re

from jaxdl.checkpoint.entries import array_dtype
from jaxdl.checkpoint.errors import CheckpointCorruptedError, CheckpointError
from jaxdl.checkpoint.layout import FORMAT, FORMAT_VERSION, MANIFEST_NAME

_SHA256 = re.compile("[0-9a-f]{64}")

KINDS = {
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
        if not any(KINDS[kind](value) for kind in kinds.split("|")):
            self.fail(field, f"must be {kinds.replace('|', ' or ')}, not {type(value).__name__} ({_short(value)})")
        return value


def _short(value) -> str:
    text = json.dumps(value) if not isinstance(value, float) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_manifest(source: pathlib.Path, manifest) -> None:
    """Raises CheckpointError for another format or version, CheckpointCorruptedError for a malformed field."""
    fields = _Fields(source)
    _check_header(fields, manifest)
    _check_body(fields, manifest)


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
    if not all(KINDS["int"](size) and size >= 0 for size in shape):
        fields.fail(field, f"must be a list of non-negative integers, not {_short(shape)}")


def _check_entry_dtype(fields: _Fields, entry: dict, where: str) -> None:
    dtype = fields.get(entry, "dtype", "str", where)
    if dtype == "key":
        fields.get(entry, "key_impl", "str", where)
        _check_shape(fields, fields.get(entry, "data_shape", "list", where), f"{where}.data_shape")
        if array_dtype(fields.get(entry, "data_dtype", "str", where)) is None:
            fields.fail(f"{where}.data_dtype", f"is not a numeric dtype: {entry['data_dtype']!r}")
        if entry["data_shape"][:len(entry["shape"])] != entry["shape"]:
            fields.fail(f"{where}.data_shape", "must start with the entry's shape")
    elif array_dtype(dtype) is None:
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
