"""The exercise's ``Layers/Initializers.py``: ``initialize(weights_shape, fan_in, fan_out)``.

Each class wraps the `jaxdl.initializers` callable of the same name and returns a NumPy
float64 array. The random ones draw their `jax.random` key from NumPy's global generator,
so ``np.random.seed(...)`` makes them reproducible, as in the exercise.

* ``Constant(value=0.1)``: every entry ``value``.
* ``UniformRandom()``: U[0, 1).
* ``Xavier()``: N(0, sigma^2), sigma = sqrt(2 / (fan_in + fan_out)).
* ``He()``: N(0, sigma^2), sigma = sqrt(2 / fan_in).

Example:
    >>> He().initialize((400, 400), 400, 400).std()   # about sqrt(2 / 400) = 0.0707
"""

from __future__ import annotations

import jax
import numpy as np

from jaxdl import initializers as core
from jaxdl.exercise._engine import DTYPE

__all__ = ["Constant", "UniformRandom", "Xavier", "He"]


def numpy_seeded_key() -> jax.Array:
    """A `jax.random` key drawn from NumPy's global generator (reproducible by np.random.seed)."""
    return jax.random.key(np.random.randint(0, 2**31 - 1))


class _Initializer:
    def _core(self):
        raise NotImplementedError

    def initialize(self, weights_shape, fan_in, fan_out) -> np.ndarray:
        """An array of ``weights_shape``; fans as the calling layer defines them."""
        shape = tuple(int(s) for s in weights_shape)
        return np.array(self._core()(numpy_seeded_key(), shape, fan_in, fan_out, DTYPE))

    def __repr__(self):
        return f"{type(self).__name__}()"


class Constant(_Initializer):
    """Every entry is ``value`` (default 0.1)."""

    def __init__(self, value=0.1):
        self.value = value

    def _core(self):
        return core.Constant(float(self.value))

    def __repr__(self):
        return f"Constant({self.value!r})"


class UniformRandom(_Initializer):
    """Uniform on [0, 1)."""

    def _core(self):
        return core.UniformRandom()


class Xavier(_Initializer):
    """Glorot normal: sigma = sqrt(2 / (fan_in + fan_out))."""

    def _core(self):
        return core.Xavier()


class He(_Initializer):
    """He normal: sigma = sqrt(2 / fan_in)."""

    def _core(self):
        return core.He()
