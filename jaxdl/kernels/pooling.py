"""`tiled_max_pool`: `Pooling`'s max pooling over non-overlapping windows, fast on CPU.

Equal to `reduce_window_max_pool` (``lax.reduce_window`` with ``lax.max`` and its autodiff) in
value and every derivative: the first arg-max in row-major order of each window takes the
derivative, rows and columns past the last whole window get zero. What differs is the backward
pass: XLA:CPU lowers `reduce_window`'s gradient as index arrays the size of the input and a
scatter, where `tiled_max_pool` records each window's arg-max in the forward pass and
transposes into one elementwise select. Measured with jaxlib 0.10.2 on AMD EPYC Zen 4/5
(family 25 model 17, family 26 model 2): benchmarks/RESULTS.md, "Where the time goes".
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax


def cpu_tiled_max_pool(x, pool_shape):
    """`tiled_max_pool` on CPU and `reduce_window_max_pool` elsewhere (`lax.platform_dependent`).

    Args:
        x: (batch, channels, y, x).
        pool_shape: (pool_y, pool_x), also the stride.

    Returns:
        (batch, channels, y // pool_y, x // pool_x).
    """
    return lax.platform_dependent(
        x, cpu=lambda x: _cpu_tiled_max_pool(x, pool_shape),
        default=lambda x: reduce_window_max_pool(x, pool_shape, pool_shape))


def _cpu_tiled_max_pool(x, pool_shape):
    """`tiled_max_pool`; 16-bit inputs go through float32, where XLA's CPU kernels are faster
    (exact: a max and its gradient's select do no arithmetic)."""
    if x.dtype in (jnp.bfloat16, jnp.float16):
        return tiled_max_pool(x.astype(jnp.float32), pool_shape).astype(x.dtype)
    return tiled_max_pool(x, pool_shape)


def reduce_window_max_pool(x, pool_shape, stride):
    """Max pooling with `lax.reduce_window` and its autodiff (as Flax and stax do): the
    reference `tiled_max_pool` equals."""
    return lax.reduce_window(x, -jnp.inf, lax.max, (1, 1, *pool_shape), (1, 1, *stride), "VALID")


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def tiled_max_pool(x, pool_shape):
    """Max pooling over non-overlapping windows (stride == pool_shape), fast on CPU.

    How (a `jax.custom_jvp`, so forward mode and second order work): the tangent rule takes
    each window's max together with the row-major position of its first arg-max, as a small
    integer, in the same `reduce_window`; the tangent is then ``dx`` at that position, a
    linear map (select, then a sum over each window). Reverse mode transposes it into one
    elementwise select that spreads each window's cotangent to its arg-max. The position is
    recorded in the forward pass, not the backward (benchmarks/RESULTS.md, "Where the time
    goes", says why).

    Args:
        x: (batch, channels, y, x).
        pool_shape: (pool_y, pool_x), also the stride.

    Returns:
        (batch, channels, y // pool_y, x // pool_x).
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
