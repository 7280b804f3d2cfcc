"""Does a checkpoint fit the template it is loaded into? Its entries under a prefix against the template's leaves.

A different architecture or optimizer is a `CheckpointMismatchError` that lists the missing,
unexpected and reshaped or retyped entries (at most `MAX_LISTED` of each).
"""

from __future__ import annotations

import numpy as np

from jaxdl.checkpoint.entries import is_key_array, key_impl_name
from jaxdl.checkpoint.errors import CheckpointMismatchError

#: How many differences of each kind a mismatch error lists before summarizing.
MAX_LISTED = 20


def entries_under(manifest: dict, prefix: str) -> dict[str, dict]:
    """The manifest's entries by path relative to ``prefix`` (``"root"``: the prefix itself)."""
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
    if is_key_array(leaf):
        impl = key_impl_name(leaf)
        return shape, f"key<{impl}>" if impl else stored_dtype
    return shape, str(np.dtype(leaf.dtype)) if hasattr(leaf, "dtype") else str(np.asarray(leaf).dtype)


def check_compatible(directory, entries: dict, template: dict) -> None:
    """Raises CheckpointMismatchError unless ``entries`` and the ``template`` leaves match by name, shape, dtype."""
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
