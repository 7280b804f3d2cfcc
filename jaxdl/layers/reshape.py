"""Per-example reshapes, the batch axis kept: Flatten ((batch, ...) -> (batch, prod(...))) and Reshape."""

from __future__ import annotations

import dataclasses
import math
import numbers

import numpy as np

from jaxdl.core import Layer


@dataclasses.dataclass(frozen=True)
class Flatten(Layer):
    """Reshapes (batch, d1, d2, ...) to (batch, d1*d2*...) in C (row-major) order."""

    def apply(self, params, state, x, *, key=None, train=False):
        if x.ndim < 1:
            raise ValueError(f"{self!r} expects input with a batch axis, got a scalar.")
        return x.reshape(x.shape[0], math.prod(x.shape[1:])), state


@dataclasses.dataclass(frozen=True)
class Reshape(Layer):
    """Reshapes each example: (batch, *in_shape) -> (batch, *shape), in C (row-major) order.

    ``shape`` is the per-example shape (the batch axis is kept, never named); one entry may be
    -1, inferred from the example's size as in `jax.numpy.reshape`. ``Reshape((-1,))`` is
    `Flatten`; ``Reshape((time, features))`` turns flat vectors into a sequence.

    Args:
        shape: a tuple (or list) of ints >= 1 and at most one -1; an int for a 1-D shape.

    Raises:
        TypeError: at construction for entries that are not ints (bools included).
        ValueError: at construction for entries that are 0 or < -1 and more than one -1; at
            trace time for an input without a batch axis and an example whose size does not
            fit ``shape``.

    Example:
        >>> Reshape((3, -1)).apply({}, {}, jnp.zeros((2, 12)))[0].shape
        (2, 3, 4)
    """

    shape: tuple[int, ...]

    def __post_init__(self):
        values = tuple(self.shape) if isinstance(self.shape, (tuple, list)) else (self.shape,)
        for value in values:
            if not isinstance(value, numbers.Integral) or isinstance(value, (bool, np.bool_)):
                raise TypeError(
                    f"Reshape: shape must be a tuple of ints (>= 1, or one -1), got {self.shape!r} with "
                    f"{value!r} of type {type(value).__name__}.")
        values = tuple(int(v) for v in values)
        if any(v == 0 or v < -1 for v in values) or values.count(-1) > 1:
            raise ValueError(f"Reshape: shape must be a tuple of ints >= 1 with at most one -1, got {self.shape!r}.")
        object.__setattr__(self, "shape", values)

    def _target(self, example_shape) -> tuple[int, ...]:
        """The per-example shape for examples of ``example_shape``, -1 resolved."""
        size = math.prod(example_shape)
        known = math.prod(v for v in self.shape if v != -1)
        fits = size % known == 0 if -1 in self.shape else size == known
        if not fits:
            needs = f"a multiple of {known}" if -1 in self.shape else str(known)
            raise ValueError(
                f"{self!r}: each example has shape {tuple(example_shape)} ({size} values), which does not fit "
                f"shape {self.shape} ({needs} values).")
        return tuple(size // known if v == -1 else v for v in self.shape)

    def apply(self, params, state, x, *, key=None, train=False):
        if x.ndim < 1:
            raise ValueError(f"{self!r} expects input with a batch axis, got a scalar.")
        return x.reshape(x.shape[0], *self._target(x.shape[1:])), state
