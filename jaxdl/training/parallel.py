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
  threads per device, or its all-reduces deadlock (`jaxdl.mesh.cpu`); the step
  builders refuse a mesh whose pools are too small, and `jaxdl.distributed` sizes them.
* A step whose collective stalls ends the process with a message naming the step after
  ``JAXDL_STALL_TIMEOUT`` seconds (`jaxdl.mesh.watchdog`), never a silent hang.
* Without a mesh nothing here runs: the one-device step is ``jax.jit(step)`` as before.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Iterator

import jax
import numpy as np
from jax.sharding import Mesh

from jaxdl.mesh import watchdog
from jaxdl.mesh.cpu import check_cpu_mesh
from jaxdl.mesh.sharding import (  # noqa: F401  (the mesh helpers, re-exported where they were)
    DATA_AXIS, batch_sharding, check_mesh, data_mesh, data_size, global_rows, keep, local_shards, process_rows,
    replicate, replicated, shard_batch, spans_processes,
)
from jaxdl.training.data import Batch, EpochSource

def parallel_train_step(step: Callable, mesh: Mesh) -> Callable:
    """``step(train_state, x, labels) -> (train_state, metrics)`` jitted for data parallelism on ``mesh``.

    In shardings: the train state replicated, ``x`` and ``labels`` batch-sharded; out: the new
    state and the metrics replicated; the train state is donated. The returned function puts
    its arguments on the mesh first (`replicate`, `shard_batch`) and has the attributes
    ``mesh`` and ``jitted`` (the `jax.jit` object, e.g. for ``.lower``).

    The model in ``step`` should compute `jaxdl.Conv`'s CPU weight gradient over the whole
    batch (`jaxdl.kernels.configure` with ``blocked_weight_gradient=False``, as
    `jaxdl.make_train_step` does for a mesh): row blocks that cut across the batch's shards
    make XLA move activations between devices.
    """
    check_mesh(mesh, "make_train_step")
    check_cpu_mesh(mesh, "make_train_step")
    state_sharding, batch = replicated(mesh), batch_sharding(mesh)
    jitted = jax.jit(step, in_shardings=(state_sharding, batch, batch), out_shardings=(state_sharding, state_sharding),
                     donate_argnums=0)

    seen_shapes: set = set()

    @functools.wraps(step)
    def train_step(train_state, x, labels):
        x = shard_batch(mesh, x, "make_train_step", "x")
        labels = shard_batch(mesh, labels, "make_train_step", "labels")
        compiles = watchdog.first_for_shapes(seen_shapes, (x, labels))
        with watchdog.watching("train step", mesh, inputs=(x, labels), compiles=compiles) as done:
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

    seen_shapes: set = set()

    @functools.wraps(function)
    def eval_step(params, state, x):
        compiles = watchdog.first_for_shapes(seen_shapes, x)
        with watchdog.watching(where.removeprefix("make_"), mesh, inputs=x, compiles=compiles) as done:
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
