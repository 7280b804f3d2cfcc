"""CPU fast paths of the layers, in one place, behind one switch.

Each fast path is a function equal to a plain `lax` computation in value and every derivative
(a `jax.custom_jvp`, so `jax.grad`, `jax.jvp`, `jax.jacfwd`, Hessian-vector products and
`jax.hessian` all go through it), and takes its CPU-only branch through `lax.platform_dependent`
(GPU and TPU run the plain computation):

* `jaxdl.kernels.conv`: `Conv`'s convolution (`fast_conv`).
* `jaxdl.kernels.pooling`: `Pooling`'s non-overlapping max pooling (`tiled_max_pool`).
* `jaxdl.kernels.recurrent`: the recurrent layers' fused derivative (`fused_sequence`).

The layers keep their plain `lax` code next to the call, and take the fast path only when
their ``fast_paths`` field says so.

The switch. ``JAXDL_FAST_PATHS=0`` in the environment, or `use_fast_paths` in code, turns the
fast paths off for the layers built while it holds::

    with jaxdl.kernels.use_fast_paths(False):
        model = jaxdl.models.lenet()       # plain lax.conv, reduce_window, scan autodiff

The switch is read once, when a layer is built: the layer keeps the choice in its
``fast_paths`` field (a `FastPaths`), like any other part of its configuration, so a model,
and every step and jitted function built from it, keeps one choice whatever the switch says
later; nothing reads it while a function is traced. `configure` returns a copy of a built
model with another choice (the data-parallel step uses it to compute `Conv`'s weight gradient
over the whole sharded batch).

Tuning. The constants of the fast paths were measured on one jaxlib and one CPU; each says
which, and benchmarks/RESULTS*.md holds the measurements.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import os
from typing import Iterator

#: The environment variable of the switch: "0" turns the fast paths off, "1" (or unset) on.
ENVIRONMENT_VARIABLE = "JAXDL_FAST_PATHS"

_override: bool | None = None


@dataclasses.dataclass(frozen=True)
class FastPaths:
    """A layer's choice of kernels, fixed when the layer is built.

    Args:
        enabled: take the CPU fast paths (False: the plain `lax` computation).
        blocked_weight_gradient: `Conv` on CPU computes its weight gradient in blocks of batch
            rows (`jaxdl.kernels.conv.WEIGHT_GRAD_BLOCK`); False computes it over the whole
            batch, which a batch sharded over a device mesh needs (blocks that cut across
            the shards make XLA move activations between devices).
    """

    enabled: bool = True
    blocked_weight_gradient: bool = True

    def __post_init__(self):
        for name in ("enabled", "blocked_weight_gradient"):
            value = getattr(self, name)
            if not isinstance(value, bool):
                raise TypeError(f"FastPaths: {name} must be a bool, got {value!r} (type {type(value).__name__}).")


def fast_paths_enabled() -> bool:
    """The switch's value now: `use_fast_paths` if one is active, else ``JAXDL_FAST_PATHS``.

    Raises:
        ValueError: for a ``JAXDL_FAST_PATHS`` other than "0" or "1".
    """
    if _override is not None:
        return _override
    value = os.environ.get(ENVIRONMENT_VARIABLE, "1").strip()
    if value not in ("0", "1"):
        raise ValueError(f"jaxdl.kernels: the environment variable {ENVIRONMENT_VARIABLE} must be '0' or '1', "
                         f"got {value!r}.")
    return value == "1"


@contextlib.contextmanager
def use_fast_paths(enabled: bool) -> Iterator[None]:
    """Within it, layers are built with (True) or without (False) the CPU fast paths.

    Layers built before or after keep their own choice (see the module docstring). Not
    thread-safe: build models for both settings from one thread.

    Args:
        enabled: the choice for the layers built inside.

    Raises:
        TypeError: for an ``enabled`` that is not a bool.
    """
    global _override
    if not isinstance(enabled, bool):
        raise TypeError(f"use_fast_paths: enabled must be a bool, got {enabled!r} (type {type(enabled).__name__}).")
    saved, _override = _override, enabled
    try:
        yield
    finally:
        _override = saved


def resolve(layer_name: str, value) -> FastPaths:
    """A layer's ``fast_paths`` field as a `FastPaths`: None reads the switch, a bool sets ``enabled``.

    Raises:
        TypeError: naming the layer, for anything else.
    """
    if value is None:
        return FastPaths(enabled=fast_paths_enabled())
    if isinstance(value, bool):
        return FastPaths(enabled=value)
    if isinstance(value, FastPaths):
        return value
    raise TypeError(f"{layer_name}: fast_paths must be None, a bool or a jaxdl.kernels.FastPaths, got {value!r} "
                    f"(type {type(value).__name__}).")


def configure(model, **changes):
    """A copy of ``model`` in which every layer's `FastPaths` has ``changes`` applied.

    Walks the model's layers (any frozen dataclass whose fields hold layers, or tuples of
    them, as `jaxdl.Serial` and `jaxdl.MixedPrecision` do); layers without a ``fast_paths``
    field are kept as they are. The model itself is not changed.

    Args:
        model: a layer.
        **changes: fields of `FastPaths`, e.g. ``enabled=False``.

    Returns:
        The configured copy (``model`` itself when nothing changes).

    Raises:
        TypeError: for a change that is not a field of `FastPaths` or not a bool.
    """
    fields = {field.name for field in dataclasses.fields(FastPaths)}
    unknown = sorted(set(changes) - fields)
    if unknown:
        raise TypeError(f"configure: changes must be fields of FastPaths ({sorted(fields)}), got {unknown}.")
    return _configured(model, changes)


def _configured(value, changes):
    if isinstance(value, tuple):
        items = tuple(_configured(item, changes) for item in value)
        return value if all(a is b for a, b in zip(items, value)) else type(value)(items)
    if not dataclasses.is_dataclass(value) or isinstance(value, type):
        return value
    updated = {}
    for field in dataclasses.fields(value):
        current = getattr(value, field.name)
        new = dataclasses.replace(current, **changes) if isinstance(current, FastPaths) else _configured(current, changes)
        if new is not current and new != current:
            updated[field.name] = new
    if not updated:
        return value
    result = copy.copy(value)  # frozen dataclasses, some with their own __init__ (Serial): no replace()
    for name, new in updated.items():
        object.__setattr__(result, name, new)
    return result
