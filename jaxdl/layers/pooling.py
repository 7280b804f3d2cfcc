"""Pooling: 2-D max pooling with 'valid' windows in the layout (batch, channels, y, x)."""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxdl.core import Layer, check_floating, check_rank
from jaxdl.layers.conv import as_tuple
from jaxdl.validation import nonempty_training_batch


@dataclasses.dataclass(frozen=True)
class Pooling(Layer):
    """Max over pool_shape windows placed every ``stride`` elements, no padding ("valid").

    Layout: (batch, channels, y, x) -> (batch, channels, y', x') with
    y' = floor((y - pool_y) / stride_y) + 1. The gradient goes to the first arg-max of each
    window in row-major order (summed where windows overlap), as `lax.reduce_window`'s does.

    Speed: on CPU, non-overlapping windows (stride == pool_shape, the default) take
    `tiled_max_pool`, which finds each window's arg-max in the forward pass; other strides and
    other platforms (chosen at lowering with `lax.platform_dependent`) use
    `reduce_window_max_pool`.

    Args:
        pool_shape: an int or (pool_y, pool_x).
        stride: an int or (stride_y, stride_x); defaults to ``pool_shape`` (non-overlapping).

    Raises:
        TypeError: at construction for sizes that are not ints (bools included).
        ValueError: at construction for sizes < 1; at trace time for a wrong layout, a pool
            larger than the input and an empty batch in training (evaluation returns an empty
            output).
    """

    pool_shape: int | tuple[int, int]
    stride: int | tuple[int, int] | None = None

    def __post_init__(self):
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
        def reference(x):
            return reduce_window_max_pool(x, self.pool_shape, self.stride)

        if self.stride != self.pool_shape:
            return reference(x), state
        return lax.platform_dependent(x, cpu=lambda x: _cpu_tiled_max_pool(x, self.pool_shape), default=reference), state


def _cpu_tiled_max_pool(x, pool_shape):
    """`tiled_max_pool`; 16-bit inputs go through float32, where XLA's CPU kernels are faster
    (exact: a max and its gradient's select do no arithmetic)."""
    if x.dtype in (jnp.bfloat16, jnp.float16):
        return tiled_max_pool(x.astype(jnp.float32), pool_shape).astype(x.dtype)
    return tiled_max_pool(x, pool_shape)


def reduce_window_max_pool(x, pool_shape, stride):
    """Max pooling with `lax.reduce_window` and its autodiff (as Flax and stax do).

    The reference for `tiled_max_pool`, and the path for overlapping or gapped windows and for
    platforms other than CPU.
    """
    return lax.reduce_window(x, -jnp.inf, lax.max, (1, 1, *pool_shape), (1, 1, *stride), "VALID")


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def tiled_max_pool(x, pool_shape):
    """Max pooling over non-overlapping windows (stride == pool_shape), fast on CPU.

    Equal to `reduce_window_max_pool` in value and every derivative (the first arg-max in
    row-major order of each window takes the derivative; rows and columns past the last whole
    window get zero). The difference is the backward pass: XLA's CPU lowering of
    `reduce_window`'s gradient builds four int32 index arrays the size of the input and
    scatters through them (about 8 ms of LeNet's 31 ms training step at batch 128).

    How (a `jax.custom_jvp`, so forward mode and second order work): the tangent rule takes
    each window's max together with the row-major position of its first arg-max, as a small
    integer, in the same `reduce_window`; the tangent is then ``dx`` at that position, a
    linear map (select, then a sum over each window). Reverse mode transposes it into one
    elementwise select that spreads each window's cotangent to its arg-max. The position is
    recorded in the forward pass because computing it in the backward makes XLA fuse (and
    recompute) the producing layer into it; see benchmarks/RESULTS.md.
    """
    return reduce_window_max_pool(x, pool_shape, pool_shape)


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def _max_and_position(x, pool_shape):
    """Each window's max and the row-major position (0 .. py*px-1) of its first arg-max.

    One variadic `reduce_window` over (value, position). A `custom_jvp` of its own: JAX cannot
    differentiate a `reduce_window` with an integer operand, and differentiating
    `tiled_max_pool`'s rule (second order) passes through here.
    """
    py, px = pool_shape
    index_dtype = jnp.int8 if py * px < 127 else jnp.int32
    position = _position_in_window(x.shape[2:], pool_shape).astype(index_dtype)
    position = jnp.broadcast_to(position, x.shape)

    def first_max(a, b):
        (value_a, index_a), (value_b, index_b) = a, b
        take_a = (value_a > value_b) | ((value_a == value_b) & (index_a < index_b)) | jnp.isnan(value_a)
        return jnp.where(take_a, value_a, value_b), jnp.where(take_a, index_a, index_b)

    init = (jnp.array(-jnp.inf, x.dtype), jnp.array(py * px, index_dtype))
    window = (1, 1, py, px)
    return lax.reduce_window((x, position), init, first_max, window, window, "VALID")


@_max_and_position.defjvp
def _max_and_position_jvp(pool_shape, primals, tangents):
    (x,), (dx,) = primals, tangents
    pooled, position = _max_and_position(x, pool_shape)
    no_tangent = np.zeros(position.shape, dtype=jax.dtypes.float0)
    return (pooled, position), (_value_at(dx, position, pool_shape), no_tangent)


def _value_at(a, position, pool_shape):
    """``a`` (batch, channels, y, x) at each window's ``position``: (batch, channels, y', x').

    Linear in ``a``: its transpose spreads each window's cotangent to that position (one
    elementwise select) and zero elsewhere.
    """
    py, px = pool_shape
    out_y, out_x = position.shape[2:]

    def windows(v):  # (..., out_y*py, out_x*px) -> (..., out_y, py, out_x, px)
        return v.reshape(v.shape[:-2] + (out_y, py, out_x, px))

    own_position = _position_in_window((out_y * py, out_x * px), pool_shape).astype(position.dtype)
    is_at = windows(own_position) == position[:, :, :, None, :, None]
    covered = a[:, :, :out_y * py, :out_x * px]
    return jnp.sum(jnp.where(is_at, windows(covered), 0), axis=(3, 5)).astype(a.dtype)


def _position_in_window(spatial_shape, pool_shape):
    """(y, x) int32 array: each element's row-major position inside its pooling window."""
    rows = lax.broadcasted_iota(jnp.int32, spatial_shape, 0) % pool_shape[0]
    cols = lax.broadcasted_iota(jnp.int32, spatial_shape, 1) % pool_shape[1]
    return rows * pool_shape[1] + cols


def _tiled_max_pool_jvp(pool_shape, primals, tangents):
    (x,), (dx,) = primals, tangents
    pooled, position = _max_and_position(x, pool_shape)
    return pooled, _value_at(dx, position, pool_shape)


tiled_max_pool.defjvp(_tiled_max_pool_jvp)
