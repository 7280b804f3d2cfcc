"""Device meshes and where arrays live on them: the bottom of the multi-device stack.

A one-axis mesh named ``"data"`` (`DATA_AXIS`, `data_mesh`) over which every batch is split
(`batch_sharding`, `shard_batch`) while params, state and optimizer state are replicated
(`replicated`, `replicate`). In a multi-process run each process passes its rows of every
global batch (`process_rows`). `jaxdl.training.parallel` builds the mesh steps on these;
`jaxdl.distributed` builds the mesh of a run. Conventions: see `jaxdl.training.parallel`.
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

#: The mesh axis that the batch is sharded on.
DATA_AXIS = "data"


def data_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A one-axis mesh named ``"data"`` over ``devices``.

    Args:
        devices: the devices, in the order the batch is split over them; default
            `jax.devices()` (every device of every process).

    Raises:
        ValueError: for an empty device list or a device listed twice.
    """
    devices = list(jax.devices() if devices is None else devices)
    if not devices:
        raise ValueError("data_mesh: expected at least one device, got none.")
    if len(set(devices)) != len(devices):
        raise ValueError(f"data_mesh: expected distinct devices, got {devices}.")
    return Mesh(np.array(devices, dtype=object), (DATA_AXIS,))


def check_mesh(mesh, where: str) -> Mesh:
    """Returns ``mesh`` if it is a `jax.sharding.Mesh` with a ``"data"`` axis, else raises.

    Raises:
        TypeError: for something that is not a Mesh.
        ValueError: for a mesh without a ``"data"`` axis.
    """
    if not isinstance(mesh, Mesh):
        raise TypeError(f"{where}: mesh must be a jax.sharding.Mesh (jaxdl.data_mesh() builds one), "
                        f"got {type(mesh).__name__}.")
    if DATA_AXIS not in mesh.axis_names:
        raise ValueError(f"{where}: expected a mesh with an axis named {DATA_AXIS!r} (the batch axis), got axes "
                         f"{tuple(mesh.axis_names)}; jaxdl.data_mesh() builds one.")
    return mesh


def data_size(mesh: Mesh) -> int:
    """The number of batch shards: the size of the mesh's ``"data"`` axis."""
    return int(mesh.shape[DATA_AXIS])


def replicated(mesh: Mesh) -> NamedSharding:
    """Every device holds the whole array (params, state, optimizer state)."""
    return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """The leading (batch) axis split over the ``"data"`` axis, the other axes whole."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


@functools.lru_cache(maxsize=64)
def spans_processes(mesh: Mesh) -> bool:
    """Whether some of the mesh's devices belong to other processes."""
    return any(device.process_index != jax.process_index() for device in mesh.devices.flat)


@functools.lru_cache(maxsize=64)
def _rows(mesh: Mesh, global_batch_size: int, process_index: int) -> np.ndarray:
    spans = {index[0].indices(global_batch_size)[:2]
             for device, index in batch_sharding(mesh).devices_indices_map((global_batch_size,)).items()
             if device.process_index == process_index}
    rows = np.concatenate([np.arange(start, stop) for start, stop in sorted(spans)]) if spans else np.zeros(0, int)
    rows.flags.writeable = False
    return rows


def process_rows(mesh: Mesh, global_batch_size: int, process_index: int | None = None) -> np.ndarray:
    """The rows of a global batch that a process holds, in the order it must pass them.

    A process passes these rows of every global batch (its "local batch") to a mesh step or
    `shard_batch`; in one process they are ``0 .. global_batch_size - 1``. With P processes of
    equal device counts and `data_mesh`'s device order, process p holds the contiguous block
    ``[p*B/P, (p+1)*B/P)``. A pipeline that loads examples one by one should select these
    positions of the global batch's example indices before loading, so that each process
    loads only its share.

    Args:
        mesh: the mesh the batch is sharded on.
        global_batch_size: B, a multiple of the ``"data"`` axis size.
        process_index: the process (default: this one, `jax.process_index`).

    Returns:
        A read-only int array of row positions in ``[0, B)``, ascending.

    Raises:
        ValueError: when B is not a positive multiple of the ``"data"`` axis size.
    """
    check_mesh(mesh, "process_rows")
    size = data_size(mesh)
    if isinstance(global_batch_size, bool) or not isinstance(global_batch_size, (int, np.integer)) \
            or global_batch_size < 1 or global_batch_size % size:
        raise ValueError(f"process_rows: expected a global batch size that is a positive multiple of the mesh's "
                         f"{size} {DATA_AXIS!r} devices, got {global_batch_size!r}.")
    return _rows(mesh, int(global_batch_size), jax.process_index() if process_index is None else int(process_index))


def local_shards(mesh: Mesh) -> int:
    """How many of the ``"data"`` axis' batch shards this process holds (all of them in one process)."""
    return len(process_rows(mesh, data_size(mesh)))


def _is_abstract(leaf) -> bool:
    return isinstance(leaf, (jax.core.Tracer, jax.ShapeDtypeStruct))


def _on(leaf, sharding: NamedSharding) -> bool:
    """Whether ``leaf`` is a jax.Array laid out as ``sharding``."""
    if not isinstance(leaf, jax.Array):
        return False
    current = leaf.sharding
    return current == sharding or (isinstance(current, NamedSharding) and current.mesh == sharding.mesh
                                   and current.is_equivalent_to(sharding, leaf.ndim))


def _is_key(leaf) -> bool:
    return hasattr(leaf, "dtype") and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key)


def _replicated_leaf(leaf, sharding: NamedSharding):
    if _is_abstract(leaf) or _on(leaf, sharding):
        return leaf
    if _is_key(leaf):  # device_put cannot place typed keys on devices of other processes
        data = _replicated_leaf(jax.random.key_data(leaf), sharding)
        return jax.random.wrap_key_data(data, impl=jax.random.key_impl(leaf))
    if isinstance(leaf, jax.Array):  # device_put would share the caller's buffer with one device's copy
        leaf = leaf.copy()           # (even with may_alias=False, jax 0.10), and a donating step deletes it
    return jax.device_put(leaf, sharding)


def replicate(mesh: Mesh, tree):
    """``tree`` with every array replicated on ``mesh`` (leaves already there are returned as they are).

    Other leaves are copied (`jax.device_put`; `jax.random` keys through their key data), so
    the caller's arrays stay valid even after a donating step. In a multi-process run every
    process must pass the same values (e.g. the same seed or the same checkpoint).
    """
    sharding = replicated(mesh)
    return jax.tree.map(lambda leaf: _replicated_leaf(leaf, sharding), tree)


def keep(tree):
    """A copy of the arrays of ``tree`` (same placement), which a donating step cannot delete."""
    return jax.tree.map(lambda leaf: leaf.copy() if isinstance(leaf, jax.Array) else leaf, tree)


def _suggest(count: int, size: int) -> str:
    lower, upper = count // size * size, (count // size + 1) * size
    return f"e.g. {lower} or {upper}" if lower else f"e.g. {upper}"


def _check_rows(mesh: Mesh, leaf, what: str, where: str, is_global: bool) -> None:
    shape = np.shape(leaf) if not hasattr(leaf, "shape") else tuple(leaf.shape)
    if not shape:
        raise ValueError(f"{where}: every leaf of {what} must have a leading batch axis to split over the mesh, "
                         f"got a scalar.")
    rows, size = int(shape[0]), data_size(mesh)
    if is_global or not spans_processes(mesh):
        if rows % size:
            raise ValueError(f"{where}: {what} has a batch of {rows} examples, which the mesh's {size} devices on "
                             f"axis {DATA_AXIS!r} cannot split evenly; expected a multiple of {size} "
                             f"({_suggest(rows, size)}).")
        return
    local = local_shards(mesh)
    if rows % local:
        raise ValueError(
            f"{where}: {what} of process {jax.process_index()} of {jax.process_count()} has {rows} examples of the "
            f"global batch, but this process holds {local} of the mesh's {size} {DATA_AXIS!r} devices; expected a "
            f"multiple of {local} per process ({_suggest(rows, local)}; the global batch must be a multiple of "
            f"{size}).")


def shard_batch(mesh: Mesh, tree, where: str = "shard_batch", what: str = "the batch"):
    """Every leaf of ``tree`` as a global array sharded on the mesh's ``"data"`` axis.

    A leaf is this process's rows of the global batch (`process_rows`; in one process, the
    whole batch): a NumPy array or a jax.Array. Leaves already sharded this way on ``mesh``
    are returned as they are.

    Args:
        mesh: the mesh.
        tree: a batch-first array or a pytree of them (inputs, labels).
        where: the function named in error messages.
        what: how error messages call ``tree`` (e.g. "x", "labels").

    Raises:
        ValueError: when a leaf's batch size is not a multiple of the device count (its
            process's share of it in a multi-process run), or a leaf is a scalar.
    """
    sharding = batch_sharding(mesh)
    multi_process = spans_processes(mesh)

    def place(leaf):
        if _is_abstract(leaf):
            return leaf
        if _on(leaf, sharding):
            _check_rows(mesh, leaf, what, where, is_global=True)
            return leaf
        _check_rows(mesh, leaf, what, where, is_global=False)
        if multi_process:
            return jax.make_array_from_process_local_data(sharding, np.asarray(leaf))
        return jax.device_put(leaf, sharding)

    return jax.tree.map(place, tree)


def global_rows(mesh: Mesh | None, local_rows: int) -> int:
    """The global batch size of which this process passed ``local_rows`` rows."""
    if mesh is None or not spans_processes(mesh):
        return local_rows
    return local_rows * data_size(mesh) // local_shards(mesh)
