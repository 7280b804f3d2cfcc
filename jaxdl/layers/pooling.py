"""Pooling: 2-D max pooling with 'valid' windows in the layout (batch, channels, y, x)."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
from jax import lax

from jaxdl import kernels
from jaxdl.core import Layer, check_floating, check_rank
from jaxdl.kernels.pooling import cpu_tiled_max_pool, reduce_window_max_pool, tiled_max_pool  # noqa: F401
from jaxdl.layers.conv import as_tuple
from jaxdl.validation import nonempty_training_batch


@dataclasses.dataclass(frozen=True)
class Pooling(Layer):
    """Max over pool_shape windows placed every ``stride`` elements, no padding ("valid").

    Layout: (batch, channels, y, x) -> (batch, channels, y', x') with
    y' = floor((y - pool_y) / stride_y) + 1. The gradient goes to the first arg-max of each
    window in row-major order (summed where windows overlap), as `lax.reduce_window`'s does.

    Speed: with ``fast_paths`` on, non-overlapping windows (stride == pool_shape, the default)
    take `jaxdl.kernels.pooling.tiled_max_pool` on CPU, which finds each window's arg-max in
    the forward pass (equal in value and every derivative); other strides and other platforms
    (chosen at lowering with `lax.platform_dependent`) run the plain `lax.reduce_window`.

    Args:
        pool_shape: an int or (pool_y, pool_x).
        stride: an int or (stride_y, stride_x); defaults to ``pool_shape`` (non-overlapping).
        fast_paths: the CPU fast path on or off (a bool or a `jaxdl.kernels.FastPaths`); None
            (default) takes the switch's value when the layer is built
            (`jaxdl.kernels.use_fast_paths`, ``JAXDL_FAST_PATHS``).

    Raises:
        TypeError: at construction for sizes that are not ints (bools included).
        ValueError: at construction for sizes < 1; at trace time for a wrong layout, a pool
            larger than the input and an empty batch in training (evaluation returns an empty
            output).
    """

    pool_shape: int | tuple[int, int]
    stride: int | tuple[int, int] | None = None
    fast_paths: kernels.FastPaths | bool | None = dataclasses.field(default=None, repr=False)

    def __post_init__(self):
        object.__setattr__(self, "fast_paths", kernels.resolve("Pooling", self.fast_paths))
        object.__setattr__(self, "pool_shape", as_tuple("Pooling", "pool_shape", self.pool_shape, 2))
        stride = self.pool_shape if self.stride is None else self.stride
        object.__setattr__(self, "stride", as_tuple("Pooling", "stride", stride, 2))

    def apply(self, params, state, x, *, key=None, train=False):
        check_floating(self, x)
        check_rank(self, x, [4], "(batch, channels, y, x)")
        nonempty_training_batch(self, x, train)
        if any(s < p for s, p in zip(x.shape[2:], self.pool_shape)):
            raise ValueError(
                f"{self!r}: pool {self.pool_shape} is larger than the input's spatial size {tuple(x.shape[2:])}."
            )
        if self.fast_paths.enabled and self.stride == self.pool_shape:
            return cpu_tiled_max_pool(x, self.pool_shape), state  # equal to the line below
        window, stride = (1, 1, *self.pool_shape), (1, 1, *self.stride)
        return lax.reduce_window(x, -jnp.inf, lax.max, window, stride, "VALID"), state
