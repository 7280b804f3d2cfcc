"""Element-wise and row-wise activations: ReLU, TanH, Sigmoid, SoftMax."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from jaxdl.core import Layer, check_floating


@dataclasses.dataclass(frozen=True)
class ReLU(Layer):
    """max(0, x), element-wise. The gradient at exactly 0 is 0 (as in the exercise)."""

    def apply(self, params, state, x, *, key=None, train=False):
        check_floating(self, x)
        return jax.nn.relu(x), state


@dataclasses.dataclass(frozen=True)
class TanH(Layer):
    """tanh(x), element-wise; derivative 1 - tanh(x)^2."""

    def apply(self, params, state, x, *, key=None, train=False):
        check_floating(self, x)
        return jnp.tanh(x), state


@dataclasses.dataclass(frozen=True)
class Sigmoid(Layer):
    """1 / (1 + exp(-x)), element-wise; derivative f(x) (1 - f(x))."""

    def apply(self, params, state, x, *, key=None, train=False):
        check_floating(self, x)
        return jax.nn.sigmoid(x), state


@dataclasses.dataclass(frozen=True)
class SoftMax(Layer):
    """exp(x_i - max x) / sum_j exp(x_j - max x) over the last axis (the classes).

    Input (batch, classes); the max subtraction keeps large inputs finite. For training,
    `jaxdl.softmax_cross_entropy` on the logits is more stable than SoftMax followed by
    `jaxdl.cross_entropy`.
    """

    def apply(self, params, state, x, *, key=None, train=False):
        check_floating(self, x)
        if x.ndim < 1:
            raise ValueError(f"{self!r} expects input of layout (batch, classes), got a scalar.")
        return jax.nn.softmax(x, axis=-1), state
