"""Average pooling over windows, and global average and max pooling over all spatial axes.

Layouts are `jaxdl.Pooling`'s and `jaxdl.Conv`'s: (batch, channels, length) or (batch,
channels, y, x), channels first.
"""

from __future__ import annotations

import dataclasses
import math

import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxdl.core import Layer, check_floating, check_rank
from jaxdl.validation import positive_int

_LAYOUTS = "(batch, channels, length) or (batch, channels, y, x)"


def _window_sizes(owner: str, what: str, value) -> int | tuple[int, ...]:
    """An int, or a tuple of one or two ints, each >= 1 (TypeError / ValueError otherwise)."""
    if isinstance(value, (tuple, list)):
        if len(value) not in (1, 2):
            raise ValueError(f"{owner}: {what} must be a positive int or 1 or 2 positive ints, got {value!r}.")
        return tuple(positive_int(owner, what, v) for v in value)
    return positive_int(owner, what, value)


def _per_axis(value, spatial: int) -> tuple[int, ...]:
    return (value,) * spatial if isinstance(value, int) else value


@dataclasses.dataclass(frozen=True)
class AveragePooling(Layer):
    """Mean over windows placed every ``stride`` elements, no padding ("valid").

    Layout (batch, channels, length) -> (batch, channels, length') or (batch, channels, y, x)
    -> (batch, channels, y', x'), with y' = floor((y - window_y) / stride_y) + 1, as
    ``torch.nn.functional.avg_pool1d``/``avg_pool2d`` with their defaults (no padding, floor
    mode). Each window's sum is taken in the input's dtype and divided by the window's size;
    the gradient spreads each output's cotangent evenly over its window (summed where windows
    overlap).

    Args:
        window: an int (the same size on every spatial axis, so one layer serves 1-D and 2-D
            inputs) or one size per spatial axis: (length,) or (window_y, window_x).
        stride: like ``window``; defaults to ``window`` (non-overlapping windows).

    Raises:
        TypeError: at construction for sizes that are not ints (bools included); at trace
            time for a non-floating input.
        ValueError: at construction for sizes < 1 and more than two sizes; at trace time for a
            layout other than the two above, sizes given per axis for another number of
            spatial axes, and a window larger than the input.

    Example:
        >>> layer = AveragePooling(2)
        >>> y, _ = layer.apply({}, {}, jnp.arange(16.0).reshape(1, 1, 4, 4))
        >>> y[0, 0]
        Array([[ 2.5,  4.5],
               [10.5, 12.5]], dtype=float32)
    """

    window: int | tuple[int, ...]
    stride: int | tuple[int, ...] | None = None

    def __post_init__(self):
        object.__setattr__(self, "window", _window_sizes("AveragePooling", "window", self.window))
        stride = self.window if self.stride is None else self.stride
        object.__setattr__(self, "stride", _window_sizes("AveragePooling", "stride", stride))

    def apply(self, params, state, x, *, key=None, train=False):
        check_floating(self, x)
        check_rank(self, x, [3, 4], _LAYOUTS)
        spatial = x.ndim - 2
        window, stride = _per_axis(self.window, spatial), _per_axis(self.stride, spatial)
        if len(window) != spatial or len(stride) != spatial:
            raise ValueError(
                f"{self!r}: window and stride give sizes for {len(window)} and {len(stride)} spatial axes, got "
                f"input of shape {tuple(x.shape)} with {spatial}.")
        if any(n < w for n, w in zip(x.shape[2:], window)):
            raise ValueError(
                f"{self!r}: window {window} is larger than the input's spatial size {tuple(x.shape[2:])}.")
        sums = lax.reduce_window(x, np.zeros((), x.dtype), lax.add, (1, 1, *window), (1, 1, *stride), "VALID")
        return sums / jnp.asarray(math.prod(window), x.dtype), state


@dataclasses.dataclass(frozen=True)
class GlobalAveragePooling(Layer):
    """Mean over every spatial axis: (batch, channels, ...) -> (batch, channels).

    Layout (batch, channels, length) or (batch, channels, y, x) (any rank >= 3 works the same
    way); ``torch.nn.functional.adaptive_avg_pool2d(x, 1)`` flattened. The sum is accumulated
    in float32 or wider for 16-bit inputs (`jax.numpy.mean`'s rule) and the output has the
    input's dtype.

    Raises:
        TypeError: for a non-floating input.
        ValueError: for an input without a spatial axis (rank < 3) or with an empty one.

    Example:
        >>> GlobalAveragePooling().apply({}, {}, jnp.ones((2, 3, 4, 4)))[0].shape
        (2, 3)
    """

    def apply(self, params, state, x, *, key=None, train=False):
        _check_spatial(self, x)
        return jnp.mean(x, axis=tuple(range(2, x.ndim))).astype(x.dtype), state


@dataclasses.dataclass(frozen=True)
class GlobalMaxPooling(Layer):
    """Max over every spatial axis: (batch, channels, ...) -> (batch, channels).

    Layout as `GlobalAveragePooling`'s. The gradient goes to the first maximal element of each
    channel in row-major order (as `jaxdl.Pooling`'s; PyTorch's ``adaptive_max_pool2d`` also
    picks one): the max is read at `jax.numpy.argmax`, whose gather has a plain scatter for a
    transpose.

    Raises:
        TypeError: for a non-floating input.
        ValueError: for an input without a spatial axis (rank < 3) or with an empty one.

    Example:
        >>> GlobalMaxPooling().apply({}, {}, jnp.arange(8.0).reshape(1, 2, 4))[0]
        Array([[3., 7.]], dtype=float32)
    """

    def apply(self, params, state, x, *, key=None, train=False):
        _check_spatial(self, x)
        flat = x.reshape(*x.shape[:2], -1)
        first = jnp.argmax(flat, axis=-1, keepdims=True)
        return jnp.take_along_axis(flat, first, axis=-1)[..., 0], state


def _check_spatial(layer: Layer, x) -> None:
    check_floating(layer, x)
    if x.ndim < 3 or any(n == 0 for n in x.shape[2:]):
        raise ValueError(
            f"{layer!r} expects input of layout {_LAYOUTS} with non-empty spatial axes, got shape {tuple(x.shape)}.")
