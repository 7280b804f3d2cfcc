"""The exercise's ``Layers/Initializers.py``: ``initialize(weights_shape, fan_in, fan_out)``.

Each class draws the distribution of the `jaxdl.initializers` class of the same name (its
bounds and its ``stddev``) with NumPy's global generator and returns a NumPy float64 array,
so ``np.random.seed(...)`` makes it reproducible, as in the exercise, and a new shape costs
no compilation.

* ``Constant(value=0.1)``: every entry ``value``.
* ``UniformRandom()``: U[0, 1).
* ``Xavier()``: N(0, sigma^2), sigma = sqrt(2 / (fan_in + fan_out)).
* ``He()``: N(0, sigma^2), sigma = sqrt(2 / fan_in).

Example:
    >>> He().initialize((400, 400), 400, 400).std()   # about sqrt(2 / 400) = 0.0707
"""

from __future__ import annotations

import numpy as np

from jaxdl import initializers as core

__all__ = ["Constant", "UniformRandom", "Xavier", "He"]


def _shape(weights_shape) -> tuple[int, ...]:
    return tuple(int(s) for s in np.atleast_1d(weights_shape))


class Constant:
    """Every entry is ``value`` (default 0.1)."""

    def __init__(self, value=0.1):
        self.value = value

    def initialize(self, weights_shape, fan_in=None, fan_out=None) -> np.ndarray:
        return np.full(_shape(weights_shape), float(self.value))

    def __repr__(self):
        return f"Constant({self.value!r})"


class UniformRandom:
    """Uniform on [0, 1) (`jaxdl.initializers.UniformRandom`'s default bounds)."""

    def initialize(self, weights_shape, fan_in=None, fan_out=None) -> np.ndarray:
        bounds = core.UniformRandom()
        return np.random.uniform(bounds.minval, bounds.maxval, _shape(weights_shape))

    def __repr__(self):
        return "UniformRandom()"


class _Normal:
    _core: type

    def initialize(self, weights_shape, fan_in, fan_out) -> np.ndarray:
        sigma = self._core().stddev(fan_in, fan_out)
        return np.random.normal(0.0, sigma, _shape(weights_shape))

    def __repr__(self):
        return f"{type(self).__name__}()"


class Xavier(_Normal):
    """Glorot normal: sigma = sqrt(2 / (fan_in + fan_out))."""

    _core = core.Xavier


class He(_Normal):
    """He normal: sigma = sqrt(2 / fan_in)."""

    _core = core.He
