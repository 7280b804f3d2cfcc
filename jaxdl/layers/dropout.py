"""Dropout: inverted dropout, identity when not training."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from jaxdl.core import Layer, require_key


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
    """

    rate: float

    needs_key_in_training = True

    def __post_init__(self):
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"Dropout: rate (the drop probability) must be in [0, 1], got {self.rate!r}.")

    def apply(self, params, state, x, *, key=None, train=False):
        if not train or self.rate == 0.0:
            return x, state
        if self.rate == 1.0:
            return jnp.zeros_like(x), state
        keep = jax.random.bernoulli(require_key(self, key), 1.0 - self.rate, x.shape)
        return apply_dropout_mask(x, keep, self.rate), state
