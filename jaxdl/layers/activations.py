"""Element-wise and row-wise activations: ReLU, TanH, Sigmoid, SoftMax, GELU, SiLU.

All compute in the input's dtype, except SoftMax, which computes in float32 or wider
(`jaxdl.precision`); every output has the input's dtype.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jaxdl.core import Layer, check_floating
from jaxdl.precision import upcast


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
    `jaxdl.cross_entropy`. A bfloat16 or float16 input is computed in float32 (the exponentials
    and their sum) and the probabilities returned in the input's dtype (`jaxdl.precision`).
    """

    def apply(self, params, state, x, *, key=None, train=False):
        check_floating(self, x)
        if x.ndim < 1:
            raise ValueError(f"{self!r} expects input of layout (batch, classes), got a scalar.")
        return jax.nn.softmax(upcast(x), axis=-1).astype(jnp.result_type(x)), state


@dataclasses.dataclass(frozen=True)
class GELU(Layer):
    """x * Phi(x), element-wise, with Phi the standard normal CDF (Hendrycks & Gimpel 2016).

    ``approximate=False`` (default) is the exact form x/2 (1 + erf(x / sqrt 2)), PyTorch's
    ``nn.GELU()``; ``approximate=True`` the tanh form x/2 (1 + tanh(sqrt(2/pi) (x + 0.044715
    x^3))), PyTorch's ``nn.GELU(approximate="tanh")`` (and GPT-2's). Note that
    `jax.nn.gelu`'s own default is the tanh form; this layer's is the exact one.

    Args:
        approximate: use the tanh approximation.

    Raises:
        TypeError: at construction for an ``approximate`` that is not a bool; at trace time
            for a non-floating input.
    """

    approximate: bool = False

    def __post_init__(self):
        if not isinstance(self.approximate, (bool, np.bool_)):
            raise TypeError(f"GELU: approximate must be a bool, got {self.approximate!r} of type "
                            f"{type(self.approximate).__name__}.")
        object.__setattr__(self, "approximate", bool(self.approximate))

    def apply(self, params, state, x, *, key=None, train=False):
        check_floating(self, x)
        return jax.nn.gelu(x, approximate=self.approximate), state


@dataclasses.dataclass(frozen=True)
class SiLU(Layer):
    """x * sigmoid(x), element-wise (SiLU, also called swish); PyTorch's ``nn.SiLU()``."""

    def apply(self, params, state, x, *, key=None, train=False):
        check_floating(self, x)
        return jax.nn.silu(x), state
