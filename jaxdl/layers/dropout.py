"""Dropout: inverted dropout, identity when not training."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jaxdl.core import Layer, check_floating, require_key
from jaxdl.validation import in_interval


def apply_dropout_mask(x: jax.Array, keep: jax.Array, rate: float) -> jax.Array:
    """Zeros the entries where ``keep`` is False and scales the others by 1 / (1 - rate).

    With rate 1 every entry is dropped and the result is zeros (no division by zero).
    """
    if rate >= 1.0:
        return jnp.zeros_like(x)
    scale = jnp.asarray(1.0 / (1.0 - rate), x.dtype)
    return jnp.where(keep, x * scale, jnp.zeros((), x.dtype))


@dataclasses.dataclass(frozen=True)
class Dropout(Layer):
    """Inverted dropout: in training each entry is zeroed with probability ``rate`` and the
    survivors are scaled by 1 / (1 - rate), so evaluation is the identity.

    ``rate`` is the probability to DROP (the Flax, Keras and PyTorch convention). The
    exercise's ``Dropout(probability)`` takes the fraction to KEEP: probability = 1 - rate.
    Training needs a key (a new key gives a new mask); evaluation needs none.

    Args:
        rate: drop probability in [0, 1]. 0 is the identity, 1 gives zeros (and zero gradients).

    Raises:
        TypeError: for a ``rate`` that is not a real number (a string, a bool) and for a
            non-floating input (in training and evaluation alike: integer survivors cannot be
            scaled by 1 / (1 - rate), so an integer input is refused rather than silently left
            unscaled).
        ValueError: for a rate outside [0, 1].
    """

    rate: float

    needs_key_in_training = True

    def __post_init__(self):
        in_interval("Dropout", "rate (the drop probability)", self.rate, 0.0, 1.0, include_high=True)

    def apply(self, params, state, x, *, key=None, train=False):
        check_floating(self, x)
        if not train or self.rate == 0.0:
            return x, state
        if self.rate == 1.0:
            return jnp.zeros_like(x), state
        # What jax.random.bernoulli computes, with every constant float32: the mask depends on
        # the key and shape only, never on jax_enable_x64 or the input's dtype (Python floats
        # would be float64 constants under x64).
        uniform = jax.random.uniform(require_key(self, key), x.shape, jnp.float32, np.float32(0), np.float32(1))
        keep = uniform < np.float32(1.0 - self.rate)
        return apply_dropout_mask(x, keep, self.rate), state
