"""Per-example normalization over the features: `LayerNorm` and `RMSNorm`."""

from __future__ import annotations

import dataclasses
import numbers
from typing import ClassVar

import jax.numpy as jnp
import numpy as np

from jaxdl.core import Layer, check_floating
from jaxdl.precision import at_least_float32
from jaxdl.validation import real_number


def _epsilon(owner: str, value) -> float:
    """``value`` as a float if it is a finite real number >= 0 (TypeError / ValueError otherwise)."""
    number = real_number(owner, "epsilon", value)
    if not (np.isfinite(number) and number >= 0.0):
        raise ValueError(f"{owner}: epsilon must be a finite number >= 0, got {value!r}.")
    return number


def _flag(owner: str, what: str, value) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{owner}: {what} must be a bool, got {value!r} of type {type(value).__name__}.")
    return bool(value)


def _axes(owner: str, value) -> tuple[int, ...]:
    """An int or a non-empty sequence of distinct ints (not bools), as a tuple."""
    values = tuple(value) if isinstance(value, (tuple, list)) else (value,)
    message = f"{owner}: axis must be an int or a non-empty sequence of distinct ints, got {value!r}"
    if not values or any(not isinstance(v, numbers.Integral) or isinstance(v, (bool, np.bool_)) for v in values):
        raise TypeError(f"{message}.")
    values = tuple(int(v) for v in values)
    if len(set(values)) != len(values):
        raise ValueError(f"{message}.")
    return values


@dataclasses.dataclass(frozen=True)
class LayerNorm(Layer):
    """y = (x - mean) / sqrt(var + epsilon) * scale + offset, statistics per example.

    The mean and the biased variance are taken over ``axis`` (the last axis, the features, by
    default) of each example separately: (batch, features), (batch, time, features) or any
    layout; nothing is averaged over the batch, training and evaluation are the same and there
    is no state. Params ``scale`` (ones) and ``offset`` (zeros) have the shape of the
    normalized axes (PyTorch's ``normalized_shape``: the trailing axes); neither is
    regularized (``regularized = ()``). The statistics and the normalization compute in
    float32 or wider and the output has the input's dtype (`jaxdl.precision`), so bfloat16
    inputs under `jaxdl.MixedPrecision` get float32 statistics.

    Args:
        axis: the axis or axes normalized over, counted like NumPy's (negative from the end);
            never the batch axis 0. Default -1.
        epsilon: added to the variance (PyTorch's ``eps``); default 1e-5.
        scale: learn ``scale`` (else 1).
        offset: learn ``offset`` (else 0).

    Raises:
        TypeError: at construction for an ``axis`` that is not an int or ints, an ``epsilon``
            that is not a real number, and ``scale``/``offset`` that are not bools; at trace
            time for a non-floating input.
        ValueError: at construction for repeated axes and an ``epsilon`` < 0 or not finite; at
            init and apply for an axis outside the input's rank or the batch axis, and (apply)
            a shape other than the one the params were made for.

    Example:
        >>> layer = LayerNorm()
        >>> params, _ = layer.init(jax.random.key(0), (2, 3, 8))
        >>> jax.tree.map(jnp.shape, params)
        {'offset': (8,), 'scale': (8,)}
    """

    axis: int | tuple[int, ...] = -1
    epsilon: float = 1e-5
    scale: bool = True
    offset: bool = True

    regularized: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self):
        object.__setattr__(self, "axis", _axes("LayerNorm", self.axis))
        _epsilon("LayerNorm", self.epsilon)
        _flag("LayerNorm", "scale", self.scale)
        _flag("LayerNorm", "offset", self.offset)

    def _resolved_axes(self, shape) -> tuple[int, ...]:
        """The normalized axes as positive indices of ``shape``; never the batch axis."""
        ndim = len(shape)
        resolved = tuple(a + ndim if a < 0 else a for a in self.axis)
        if any(not 1 <= a < ndim for a in resolved):
            raise ValueError(
                f"{self!r}: axis must name axes 1 .. {ndim - 1} (or -1 .. -{ndim - 1}) of an input of layout "
                f"(batch, ..., features), never the batch axis 0; got input of shape {tuple(shape)}.")
        return tuple(sorted(resolved))

    def init(self, key, input_shape, dtype=jnp.float32):
        axes = self._resolved_axes(tuple(input_shape))
        shape = tuple(input_shape[a] for a in axes)
        params = {}
        if self.scale:
            params["scale"] = jnp.ones(shape, dtype)
        if self.offset:
            params["offset"] = jnp.zeros(shape, dtype)
        return params, {}

    def apply(self, params, state, x, *, key=None, train=False):
        check_floating(self, x)
        axes = self._resolved_axes(x.shape)
        normalized = tuple(x.shape[a] for a in axes)
        for name in ("scale", "offset"):
            if name in params and params[name].shape != normalized:
                raise ValueError(
                    f"{self!r} was initialized for normalized axes of shape {params[name].shape}, got input of "
                    f"shape {tuple(x.shape)} (axes {axes}: {normalized}).")
        compute = at_least_float32(jnp.result_type(x))
        h = x.astype(compute)
        mean = jnp.mean(h, axis=axes, keepdims=True)
        centered = h - mean
        var = jnp.mean(jnp.square(centered), axis=axes, keepdims=True)
        y = centered * (1.0 / jnp.sqrt(var + jnp.asarray(self.epsilon, compute)))
        broadcast = tuple(x.shape[a] if a in axes else 1 for a in range(x.ndim))
        if self.scale:
            y = y * params["scale"].astype(compute).reshape(broadcast)
        if self.offset:
            y = y + params["offset"].astype(compute).reshape(broadcast)
        return y.astype(x.dtype), state


@dataclasses.dataclass(frozen=True)
class RMSNorm(Layer):
    """y = x / sqrt(mean(x^2) + epsilon) * scale over the last axis (the features), per example.

    Root-mean-square normalization (Zhang & Sennrich 2019): no centering, no offset. Layout
    (batch, ..., features); the mean of squares is taken over the last axis of each example.
    Param ``scale`` (ones, shape (features,)), not regularized (``regularized = ()``). Computes
    in float32 or wider and returns the input's dtype (`jaxdl.precision`). Equal to
    ``torch.nn.RMSNorm(features, eps=epsilon)``.

    Args:
        epsilon: added to the mean of squares; default 1e-6.

    Raises:
        TypeError: at construction for an ``epsilon`` that is not a real number; at trace time
            for a non-floating input.
        ValueError: at construction for an ``epsilon`` < 0 or not finite; at init and apply for
            an input without a feature axis (rank < 2) and (apply) a feature count other than
            the params'.

    Example:
        >>> layer = RMSNorm()
        >>> params, _ = layer.init(jax.random.key(0), (2, 8))
        >>> params["scale"].shape
        (8,)
    """

    epsilon: float = 1e-6

    regularized: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self):
        _epsilon("RMSNorm", self.epsilon)

    def _check_shape(self, shape) -> None:
        if len(shape) < 2:
            raise ValueError(f"{self!r} expects input of layout (batch, ..., features), got shape {tuple(shape)}.")

    def init(self, key, input_shape, dtype=jnp.float32):
        self._check_shape(tuple(input_shape))
        return {"scale": jnp.ones((input_shape[-1],), dtype)}, {}

    def apply(self, params, state, x, *, key=None, train=False):
        check_floating(self, x)
        self._check_shape(x.shape)
        if x.shape[-1] != params["scale"].shape[0]:
            raise ValueError(
                f"{self!r} was initialized for {params['scale'].shape[0]} features, got input of shape "
                f"{tuple(x.shape)}.")
        compute = at_least_float32(jnp.result_type(x))
        h = x.astype(compute)
        mean_square = jnp.mean(jnp.square(h), axis=-1, keepdims=True)
        y = h * (1.0 / jnp.sqrt(mean_square + jnp.asarray(self.epsilon, compute))) * params["scale"].astype(compute)
        return y.astype(x.dtype), state
