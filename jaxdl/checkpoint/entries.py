"""A pytree <-> the manifest's named entries and the arrays orbax stores for them (`jaxdl.checkpoint.single`).

Each leaf of a saved pytree is one entry of the manifest: ``path`` (its key path such as
``params/conv_0/weights`` or ``opt_state/0/0/mu/conv_0/weights``), ``array`` (its orbax key
``arr_<n>``, or null), ``shape`` and ``dtype``. Every dtype jax has round-trips (bool,
int2/int4 ... int64, uint*, float8 ... float64, bfloat16, complex): dtypes TensorStore cannot
store (uint2, uint4, float8_e4m3 in TensorStore 0.1.86) are stored as their raw bytes
(``"storage": "bytes"``). Zero-size arrays (which orbax refuses) are stored in the manifest
only (``"array": null``). `jax.random` key arrays (new-style typed keys) are stored as their
raw data (`jax.random.key_data`) with their implementation name (``"dtype": "key"``, plus
``key_impl``, ``data_shape``, ``data_dtype``) and rebuilt with `jax.random.wrap_key_data`.
After orbax restores, every array's shape and dtype are checked against its entry again.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxdl.checkpoint.backend import tensorstore_has
from jaxdl.checkpoint.errors import CheckpointCorruptedError, CheckpointError
from jaxdl.core import path_names


def path_string(path) -> str:
    """A jax key path as ``a/b/0/c`` (dict keys, NamedTuple fields and indices joined by /)."""
    return "/".join(path_names(path))


def is_key_array(leaf) -> bool:
    """Whether ``leaf`` is a new-style typed `jax.random` key array (or its ShapeDtypeStruct)."""
    return hasattr(leaf, "dtype") and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key)


def named_leaves(tree) -> dict[str, Any]:
    """The leaves of ``tree`` by `path_string` (``"root"`` for a lone leaf), in flattening order."""
    leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
    named = {}
    for path, leaf in leaves:
        name = path_string(path) or "root"
        if name in named:
            raise CheckpointError(f"Two leaves share the path {name!r}; checkpoint paths must be unique.")
        named[name] = leaf
    return named


def array_dtype(name: str) -> np.dtype | None:
    """The dtype called ``name`` if it is a numeric or bool dtype jax knows, else None."""
    try:
        dtype = jnp.dtype(name)
    except (TypeError, ValueError):
        return None
    if dtype == np.bool_ or jax.dtypes.issubdtype(dtype, np.number):
        return dtype
    return None


def key_impl_name(leaf) -> str | None:
    """The implementation name of a key array or key ShapeDtypeStruct (None if unknown)."""
    if isinstance(leaf, jax.Array):
        return str(jax.random.key_impl(leaf))
    impl = getattr(leaf.dtype, "_impl", None)  # jax.ShapeDtypeStruct: no public accessor
    return getattr(impl, "name", None)


def _leaf_entry(leaf) -> tuple[dict, np.ndarray]:
    """The manifest entry (without path and array name) and the array to store of one leaf."""
    if is_key_array(leaf):
        data = np.asarray(jax.random.key_data(leaf))
        return {"shape": list(leaf.shape), "dtype": "key", "key_impl": key_impl_name(leaf),
                "data_shape": list(data.shape), "data_dtype": str(data.dtype)}, data
    array = np.asarray(leaf)
    if array_dtype(str(array.dtype)) is None:
        raise CheckpointError(f"Cannot store a leaf of type {type(leaf).__name__} (dtype {array.dtype}) in a "
                              f"checkpoint: only numeric, bool and jax.random key arrays.")
    entry = {"shape": list(array.shape), "dtype": str(array.dtype)}
    if not tensorstore_has(array.dtype):
        entry["storage"] = "bytes"
        array = np.ascontiguousarray(array).reshape(-1).view(np.uint8)
    return entry, array


def entries_and_arrays(tree) -> tuple[list[dict], dict[str, np.ndarray]]:
    """The manifest entries of every leaf and the non-empty arrays to store by orbax key."""
    entries, arrays = [], {}
    for index, (name, leaf) in enumerate(named_leaves(tree).items()):
        entry, array = _leaf_entry(leaf)
        key = f"arr_{index}" if array.size else None  # orbax refuses zero-size arrays
        if key is not None:
            arrays[key] = array
        entries.append({"path": name, "array": key, **entry})
    return entries, arrays


def stored_signature(entry: dict) -> jax.ShapeDtypeStruct:
    """Shape and dtype of the array orbax holds for ``entry``."""
    if entry["dtype"] == "key":
        return jax.ShapeDtypeStruct(tuple(entry["data_shape"]), jnp.dtype(entry["data_dtype"]))
    dtype = jnp.dtype(entry["dtype"])
    if entry.get("storage") == "bytes":
        return jax.ShapeDtypeStruct((math.prod(entry["shape"]) * dtype.itemsize,), np.dtype(np.uint8))
    return jax.ShapeDtypeStruct(tuple(entry["shape"]), dtype)


def restore_leaf(source: str, entry: dict, stored: np.ndarray | None):
    """The jax array of one entry from the array orbax restored (None: zero-size)."""
    expected = stored_signature(entry)
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
