"""Checkpoint writes in a multi-process run: collective calls, one writer (process 0).

`jaxdl.checkpoint.save_checkpoint` and `jaxdl.checkpoint.CheckpointSet.save` are collective
in a multi-process run (`jaxdl.distributed`), like orbax's own save: every process calls them
with the same tree; process 0 writes the whole checkpoint (arrays, manifest, commit) while
the others wait at a barrier, so when the call returns on any process the checkpoint is
committed. The tree's arrays must be replicated (every process holds all of each, as
data-parallel training keeps params and optimizer state): orbax, too, writes a replicated
array from one process only. The directory must be on a file system every process sees
(for resuming and for the restore after a restart); each process reads it for itself. In a
one-process run nothing here changes anything.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import jax

from jaxdl import distributed
from jaxdl.checkpoint.entries import named_leaves
from jaxdl.checkpoint.errors import CheckpointError


def check_writable(tree) -> None:
    """Raises CheckpointError naming the first leaf that this process does not hold whole
    (an array sharded over several processes)."""
    for name, leaf in named_leaves(tree).items():
        if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable and not leaf.is_fully_replicated:
            raise CheckpointError(
                f"Cannot checkpoint {name}: it is sharded over several processes ({leaf.sharding}); jaxdl "
                f"checkpoints hold replicated arrays (data parallelism: params and optimizer state on every device).")


@contextlib.contextmanager
def collective_write(name: str) -> Iterator[bool]:
    """Yields whether this process writes (process 0, or the only one); then every process of
    a multi-process run waits at a barrier named ``name`` until the write is complete."""
    with distributed.main_process_writes(f"jaxdl.checkpoint: {name}") as writes:
        yield writes
