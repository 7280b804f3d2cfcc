"""Weight initializers with the exercise's names and fan conventions.

An initializer is a callable ``init(key, shape, fan_in, fan_out, dtype=jnp.float32)`` that
returns an array of ``shape``. The layer computes the fans (the exercise's definitions):

* FullyConnected: ``fan_in = input_size``, ``fan_out = output_size``.
* Conv with kernel (k, c, m[, n]): ``fan_in = c*m*n``, ``fan_out = k*m*n``.

Initializers are frozen dataclasses, so layers that hold them stay hashable.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class Constant:
    """Every entry is ``value`` (the exercise's default 0.1)."""

    value: float = 0.1

    def __call__(self, key, shape, fan_in=None, fan_out=None, dtype=jnp.float32):
        del key, fan_in, fan_out
        return jnp.full(shape, self.value, dtype)


@dataclasses.dataclass(frozen=True)
class UniformRandom:
    """Uniform on [minval, maxval); the exercise's U[0, 1) by default."""

    minval: float = 0.0
    maxval: float = 1.0

    def __call__(self, key, shape, fan_in=None, fan_out=None, dtype=jnp.float32):
        del fan_in, fan_out
        return jax.random.uniform(key, shape, dtype, self.minval, self.maxval)


@dataclasses.dataclass(frozen=True)
class Xavier:
    """Glorot normal: N(0, sigma^2) with sigma = sqrt(2 / (fan_in + fan_out))."""

    def stddev(self, fan_in, fan_out) -> float:
        """sigma = sqrt(2 / (fan_in + fan_out)), for drawing the same distribution elsewhere."""
        return math.sqrt(2.0 / (fan_in + fan_out))

    def __call__(self, key, shape, fan_in, fan_out, dtype=jnp.float32):
        return self.stddev(fan_in, fan_out) * jax.random.normal(key, shape, dtype)


@dataclasses.dataclass(frozen=True)
class He:
    """He (Kaiming) normal: N(0, sigma^2) with sigma = sqrt(2 / fan_in), for ReLU networks."""

    def stddev(self, fan_in, fan_out=None) -> float:
        """sigma = sqrt(2 / fan_in), for drawing the same distribution elsewhere."""
        del fan_out
        return math.sqrt(2.0 / fan_in)

    def __call__(self, key, shape, fan_in, fan_out=None, dtype=jnp.float32):
        return self.stddev(fan_in, fan_out) * jax.random.normal(key, shape, dtype)
