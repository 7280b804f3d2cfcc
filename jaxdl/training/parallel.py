"""Data parallelism on a `jax.sharding.Mesh`: one global batch split over the devices.

`jaxdl.make_train_step`, `jaxdl.make_eval_step`, `jaxdl.make_predict`, `jaxdl.fit` and
`jaxdl.NeuralNetwork` take ``mesh=``; this module is what they do with it::

    mesh = jaxdl.data_mesh()                  # one "data" axis over jax.devices()
    step = jaxdl.make_train_step(model, jaxdl.cross_entropy, optimizer, mesh=mesh)
    train_state, metrics = step(train_state, x, labels)   # x: the global batch

Conventions:

* The mesh has an axis named ``"data"`` (`DATA_AXIS`); `data_mesh` builds a one-axis mesh.
  Every leaf of a batch (inputs and labels) is batch-first and sharded on that axis
  (`batch_sharding`): with n devices, device i holds rows ``[i*B/n, (i+1)*B/n)`` of the
  global batch of B rows, so B must be a multiple of n (else a ValueError names the function,
  the batch size and the device count). Params, layer state, optimizer state, the dropout key
  and the step counter are replicated (`replicated`): every device holds all of them.
* Multi-process runs (`jaxdl.distributed`): each process passes ITS rows of every global
  batch, `process_rows` of them (B/P rows for P processes with the same number of devices),
  and `shard_batch` assembles the global array with `jax.make_array_from_process_local_data`.
  `process_batches` cuts those rows out of a data source that yields global batches. In one
  process the rows are the whole batch.
* The step is one program jitted with explicit in/out shardings. The loss is a reduction over
  the sharded batch axis, so XLA's partitioner inserts one all-reduce of the gradient over
  ``"data"``; every other reduction over the batch is global in the same way, BatchNormalization's
  batch mean and variance included: the result equals the one-device result on the same
  global batch (up to float summation order). Dropout draws its mask with
  ``jax.random.uniform(key, x.shape)`` from the replicated key; with the partitionable
  threefry generator (jax's default, ``jax_threefry_partitionable=True``) each example gets
  the bits it gets on one device, so masks differ per example, never one mask per device copy.
* The train step donates its train state: when the state passed in is already on the mesh
  (every state a mesh step returned is), its buffers are reused for the new state and the
  old arrays are deleted; use the returned state. A state that is not on the mesh yet (from
  `jaxdl.create_train_state` or a checkpoint) is first copied onto it (`replicate`), so the
  caller's arrays survive. `keep` copies a state that must outlive the next step.
* CPU devices: a mesh of several CPU devices of one process needs XLA:CPU thread pools of two
  threads per device, or its all-reduces deadlock (`jaxdl.training.cpu_mesh`); the step
  builders refuse a mesh whose pools are too small, and `jaxdl.distributed` sizes them.
* A step whose collective stalls ends the process with a message naming the step after
  ``JAXDL_STALL_TIMEOUT`` seconds (`jaxdl.training.watchdog`), never a silent hang.
* Without a mesh nothing here runs: the one-device step is ``jax.jit(step)`` as before.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Iterator, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxdl.layers.conv import whole_batch_weight_gradient
from jaxdl.training import watchdog
from jaxdl.training.cpu_mesh import check_cpu_mesh
from jaxdl.training.data import Batch, EpochSource

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


def parallel_train_step(step: Callable, mesh: Mesh) -> Callable:
    """``step(train_state, x, labels) -> (train_state, metrics)`` jitted for data parallelism on ``mesh``.

    In shardings: the train state replicated, ``x`` and ``labels`` batch-sharded; out: the new
    state and the metrics replicated; the train state is donated. The returned function puts
    its arguments on the mesh first (`replicate`, `shard_batch`) and has the attributes
    ``mesh`` and ``jitted`` (the `jax.jit` object, e.g. for ``.lower``).
    """
    check_mesh(mesh, "make_train_step")
    check_cpu_mesh(mesh, "make_train_step")
    state_sharding, batch = replicated(mesh), batch_sharding(mesh)

    def sharded_step(train_state, x, labels):
        with whole_batch_weight_gradient():  # no CPU row blocks across the batch's shards
            return step(train_state, x, labels)

    jitted = jax.jit(sharded_step, in_shardings=(state_sharding, batch, batch), out_shardings=(state_sharding, state_sharding),
                     donate_argnums=0)

    @functools.wraps(step)
    def train_step(train_state, x, labels):
        x = shard_batch(mesh, x, "make_train_step", "x")
        labels = shard_batch(mesh, labels, "make_train_step", "labels")
        with watchdog.watching("train step", mesh, inputs=(x, labels)) as done:
            train_state, metrics = jitted(replicate(mesh, train_state), x, labels)
            return train_state, done(metrics)

    train_step.mesh, train_step.jitted = mesh, jitted
    return train_step


def parallel_eval_step(function: Callable, mesh: Mesh, *, returns_state: bool, where: str) -> Callable:
    """``function(params, state, x)`` jitted on ``mesh``: params and state replicated, ``x`` and the
    outputs batch-sharded (the returned state, with ``returns_state``, replicated).

    The returned function puts its arguments on the mesh first and has the attributes ``mesh``
    and ``jitted``; `jaxdl.evaluate` reads ``mesh`` to shard the labels the same way.
    """
    check_mesh(mesh, where)
    check_cpu_mesh(mesh, where)
    state_sharding, batch = replicated(mesh), batch_sharding(mesh)
    jitted = jax.jit(function, in_shardings=(state_sharding, state_sharding, batch),
                     out_shardings=(batch, state_sharding) if returns_state else batch)

    @functools.wraps(function)
    def eval_step(params, state, x):
        with watchdog.watching(where.removeprefix("make_"), mesh, inputs=x) as done:
            outputs = jitted(replicate(mesh, params), replicate(mesh, state), shard_batch(mesh, x, where, "x"))
            done(outputs[0] if returns_state else outputs)
            return outputs

    eval_step.mesh, eval_step.jitted = mesh, jitted
    return eval_step


class ProcessBatches:
    """This process's rows (`process_rows`) of every global batch of ``data``, for `jaxdl.fit`.

    Every process builds the same global batch (same seed, same order) and keeps its rows, so
    a multi-process run trains on exactly the global batches of a one-process run. (A
    pipeline that can load single examples does better by loading only those rows: see
    `process_rows`.) Epoch-indexed, so `jaxdl.fit` can resume it at any epoch.

    Args:
        data: what `jaxdl.fit` accepts as ``train_data`` (an object with ``epoch(epoch)``, a
            function of the epoch, a re-iterable), yielding global batches.
        mesh: the mesh the batches are sharded on.
    """

    def __init__(self, data, mesh: Mesh):
        self.mesh = check_mesh(mesh, "process_batches")
        self.data = data
        self._source = EpochSource(data, "data")

    @property
    def steps_per_epoch(self):
        """The batches per epoch as the wrapped data tells it (None when it does not)."""
        steps = getattr(self.data, "steps_per_epoch", None)
        if steps is not None:
            return steps
        try:
            return len(self.data)
        except TypeError:
            return None

    def epoch(self, epoch: int) -> Iterator[Batch]:
        """This process's rows of every batch of ``epoch``."""
        for batch in self._source.epoch(epoch):
            yield Batch(self._local(batch.x, "x"), self._local(batch.labels, "labels"), batch.reset)

    def _local(self, tree, what: str):
        def rows(leaf):
            size = int(np.shape(leaf)[0]) if np.ndim(leaf) else 0
            if size % data_size(self.mesh) or size == 0:
                raise ValueError(f"process_batches: {what} has a global batch of {size} examples; expected a "
                                 f"positive multiple of the mesh's {data_size(self.mesh)} {DATA_AXIS!r} devices.")
            return np.asarray(leaf)[process_rows(self.mesh, size)]

        return jax.tree.map(rows, tree)


def process_batches(data, mesh: Mesh) -> Any:
    """``data`` itself in a one-process run; else a `ProcessBatches` of it (this process's rows)."""
    if not spans_processes(check_mesh(mesh, "process_batches")):
        return data
    return ProcessBatches(data, mesh)


def global_rows(mesh: Mesh | None, local_rows: int) -> int:
    """The global batch size of which this process passed ``local_rows`` rows."""
    if mesh is None or not spans_processes(mesh):
        return local_rows
    return local_rows * data_size(mesh) // local_shards(mesh)
