"""BatchNormalization for vectors (batch, features) and images (batch, channels, ...)."""

from __future__ import annotations

import dataclasses
import math

import jax.numpy as jnp

from jaxdl.core import Layer, check_floating
from jaxdl.precision import at_least_float32
from jaxdl.validation import in_interval, real_number


def channels_last(x):
    """(batch, channels, ...) -> (batch, ..., channels): where `BatchNormalization` computes.

    XLA:CPU runs convolutions channels-last (it transposes a (batch, channels, y, x)
    convolution's input and output around an NHWC one). Normalizing a convolution's output in
    this order lets XLA cancel those transposes, where statistics over axes (0, 2, 3) and a
    per-channel broadcast on axis 1 made it write the map out in (batch, channels, y, x) and
    transpose it back for the next convolution (benchmarks/RESULTS_models.md, the ResNet step).
    The same values: only the order of the terms of each sum can change.
    """
    return jnp.moveaxis(x, 1, -1)


def channels_first(x):
    """The inverse of `channels_last`: (batch, ..., channels) -> (batch, channels, ...)."""
    return jnp.moveaxis(x, -1, 1)


def _moments_last(x) -> tuple:
    """Per-channel mean and biased variance of channels-last x (channels on the last axis)."""
    axes = tuple(range(x.ndim - 1))
    mean = jnp.mean(x, axis=axes)
    var = jnp.mean(jnp.square(x - mean), axis=axes)
    return mean, var


@dataclasses.dataclass(frozen=True)
class BatchNormalization(Layer):
    """y = gamma * (x - mean) / sqrt(var + eps) + beta, per feature or channel.

    Layouts: (batch, features), (batch, channels, length) or (batch, channels, y, x); the
    statistics are taken over every axis but the channel axis 1 (the exercise's reformat
    semantics). Params ``gamma`` (ones) and ``beta`` (zeros); state ``mean``, ``var`` (the
    running statistics) and ``count`` (training batches seen).

    Training uses the batch mean and biased variance and updates the running statistics:
    the first training batch sets them (the exercise), later ones update by exponential
    moving average, running <- decay * running + (1 - decay) * batch. Evaluation uses the
    running statistics and returns the state unchanged. Statistics are computed in float32
    or wider, whatever the input dtype, and the running statistics stored in float32 or wider,
    in the dtype ``init`` gave them (a float64 input does not turn float32 statistics into
    float64 ones, which would recompile a jitted step);
    a bfloat16 or float16 input is normalized in float32 too and the output returned in the
    input's dtype (`jaxdl.precision`).

    Args:
        decay: weight of the old running statistics. Default 0.9 (PyTorch's momentum 0.1):
            an average over about ten batches; the exercise slides use 0.8.
        eps: added to the variance; 1e-5 is safe in float32 (the exercise uses < 1e-10 in
            float64).

    Images (batch, channels, y, x) of batch 1 with y * x > 1 train. Evaluation takes any batch,
    an empty one included (empty output).

    Raises:
        TypeError: for a ``decay`` or ``eps`` that is not a real number.
        ValueError: for values out of range, for a wrong layout or channel count, and, in
            training, for fewer than 2 values per channel (an empty batch, or a batch of one
            vector: the batch variance would be 0 and the output beta everywhere; PyTorch's
            "Expected more than 1 value per channel when training").
    """

    decay: float = 0.9
    eps: float = 1e-5

    def __post_init__(self):
        in_interval("BatchNormalization", "decay", self.decay, 0.0, 1.0)
        if not real_number("BatchNormalization", "eps", self.eps) >= 0.0:
            raise ValueError(f"BatchNormalization: eps must be >= 0, got {self.eps!r}.")

    def init(self, key, input_shape, dtype=jnp.float32):
        self._check_shape(input_shape)
        channels = input_shape[1]
        stats = at_least_float32(dtype)
        params = {"gamma": jnp.ones((channels,), dtype), "beta": jnp.zeros((channels,), dtype)}
        state = {
            "mean": jnp.zeros((channels,), stats),
            "var": jnp.ones((channels,), stats),
            "count": jnp.zeros((), jnp.int32),
        }
        return params, state

    def _check_shape(self, shape):
        if len(shape) not in (2, 3, 4):
            raise ValueError(
                f"{self!r} expects input of layout (batch, features), (batch, channels, length) "
                f"or (batch, channels, y, x), got shape {tuple(shape)}."
            )

    def _check_training_shape(self, shape):
        values = math.prod(shape[:1] + shape[2:])
        if values < 2:
            raise ValueError(
                f"{self!r}: expected more than 1 value per channel when training (batch statistics), "
                f"got input of shape {tuple(shape)} with {values}."
            )

    def apply(self, params, state, x, *, key=None, train=False):
        check_floating(self, x)
        self._check_shape(x.shape)
        if x.shape[1] != params["gamma"].shape[0]:
            raise ValueError(
                f"{self!r} was initialized for {params['gamma'].shape[0]} channels, got input of "
                f"shape {tuple(x.shape)} with {x.shape[1]} on axis 1."
            )
        dtype = jnp.result_type(x)
        compute = at_least_float32(dtype)
        # Channels-last (`channels_last`: XLA then keeps a convolution's output in its own layout),
        # normalized in float32 or wider (x * inv + shift cancels: in bfloat16 a channel whose
        # mean is large next to its spread would lose its few significant bits), output in x's dtype.
        x_last = channels_last(x.astype(compute))
        if train:
            self._check_training_shape(x.shape)
            mean, var = _moments_last(x_last)
            first = state["count"] == 0
            kept = state["mean"].dtype  # the running statistics keep their dtype, whatever the input's
            new_state = {
                "mean": jnp.where(first, mean, self.decay * state["mean"] + (1 - self.decay) * mean).astype(kept),
                "var": jnp.where(first, var, self.decay * state["var"] + (1 - self.decay) * var).astype(kept),
                "count": state["count"] + 1,
            }
        else:
            mean, var, new_state = state["mean"], state["var"], state
        inv = params["gamma"].astype(mean.dtype) / jnp.sqrt(var + self.eps)
        shift = params["beta"].astype(mean.dtype) - mean * inv
        y = x_last * inv.astype(compute) + shift.astype(compute)
        return channels_first(y).astype(dtype), new_state
