"""Pooling: 2-D max pooling with 'valid' windows in the layout (batch, channels, y, x)."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
from jax import lax

from jaxdl.core import Layer, check_floating, check_rank
from jaxdl.layers.conv import as_tuple


@dataclasses.dataclass(frozen=True)
class Pooling(Layer):
    """Max over pool_shape windows placed every ``stride`` elements, no padding ("valid").

    Layout: (batch, channels, y, x) -> (batch, channels, y', x') with
    y' = floor((y - pool_y) / stride_y) + 1. The gradient goes to the arg-max of each window
    (summed where windows overlap; one of exact ties).

    Args:
        pool_shape: an int or (pool_y, pool_x).
        stride: an int or (stride_y, stride_x); defaults to ``pool_shape`` (non-overlapping).
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
        if any(s < p for s, p in zip(x.shape[2:], self.pool_shape)):
            raise ValueError(
                f"{self!r}: pool {self.pool_shape} is larger than the input's spatial size {tuple(x.shape[2:])}."
            )
        return max_pool(x, self.pool_shape, self.stride), state


def max_pool(x, pool_shape, stride):
    """Max pooling with `lax.reduce_window` (as Flax and stax do).

    Rewritten as strided slices (with autodiff or a custom VJP) it was faster alone on CPU,
    but slower inside LeNet's training step, where XLA fuses it with the preceding
    convolution; see benchmarks/RESULTS.md.
    """
    return lax.reduce_window(x, -jnp.inf, lax.max, (1, 1, *pool_shape), (1, 1, *stride), "VALID")
