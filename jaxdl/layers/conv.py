"""Conv: 1-D and 2-D cross-correlation in the exercise layout (batch, channels, y[, x])."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from jax import lax

from jaxdl import kernels
from jaxdl.core import Layer, check_floating, check_rank
from jaxdl.kernels.conv import conv_dimension_numbers, conv_reference, fast_conv  # noqa: F401  (conv_reference: re-exported)
from jaxdl.initializers import Constant, Xavier
from jaxdl.validation import nonempty_training_batch, positive_int


def as_tuple(layer_name: str, what: str, value, ndim: int) -> tuple[int, ...]:
    """Normalizes an int or sequence of ints to an ``ndim``-tuple of positive ints.

    Raises:
        TypeError: naming the layer, for entries that are not ints (bools, floats, strings).
        ValueError: naming the layer, for zero or negative entries or a wrong count.
    """
    values = tuple(value) if isinstance(value, (tuple, list)) else (value,)
    if len(values) == 1:
        values = values * ndim
    message = f"{layer_name}: {what} must be a positive int or {ndim} positive ints, got {value!r}."
    if len(values) != ndim:
        raise ValueError(message)
    try:
        return tuple(positive_int(layer_name, what, v) for v in values)
    except (TypeError, ValueError) as error:
        raise type(error)(message) from None


def same_padding(kernel_shape) -> tuple[tuple[int, int], ...]:
    """Zero padding that keeps the size at stride 1: (k-1)//2 before, k//2 after (as PyTorch)."""
    return tuple(((k - 1) // 2, k // 2) for k in kernel_shape)


@dataclasses.dataclass(frozen=True)
class Conv(Layer):
    """Multi-channel cross-correlation plus bias (what deep-learning libraries call conv).

    Layout: input (batch, channels, y) or (batch, channels, y, x); output
    (batch, num_kernels, y', x'). Parameters: ``weights`` (num_kernels, channels, m[, n]) and
    ``bias`` (num_kernels,). Padding "same" pads with zeros by (k-1)//2 before and k//2 after
    (the stride-1 "same" of the exercise and PyTorch), then strides, so y' = ceil(y / stride);
    "valid" uses no padding: y' = floor((y - m) / stride) + 1.

    Speed: with ``fast_paths`` on, `jaxdl.kernels.conv.fast_conv`, equal to `lax.conv` in value
    and every derivative, takes CPU-only fast paths (shifted slices for one input channel,
    kernels padded where that lets XLA use a faster library kernel, the weight gradient in
    blocks of batch rows), each only for the shapes where it measured faster in a whole
    training step (`jaxdl.kernels.conv.cpu_path`: at stride 1, padding below 16 input channels;
    other shapes run `lax.conv` itself).

    Fans for the initializers (the exercise's): fan_in = channels*m*n, fan_out = num_kernels*m*n.

    Args:
        num_kernels: the number of output channels.
        kernel_shape: (m,) for 1-D or (m, n) for 2-D.
        stride: an int or one per spatial axis.
        padding: "same" or "valid".
        weights_initializer: initializer for the kernels.
        bias_initializer: initializer for the bias.
        fast_paths: the CPU fast paths on or off (a bool or a `jaxdl.kernels.FastPaths`); None
            (default) takes the switch's value when the layer is built
            (`jaxdl.kernels.use_fast_paths`, ``JAXDL_FAST_PATHS``).

    Raises:
        TypeError: at construction for sizes that are not ints (bools included).
        ValueError: at construction for sizes < 1; at trace time for a wrong layout or channel
            count and for an empty batch in training (evaluation returns an empty output).

    Example:
        >>> jaxdl.output_shape(Conv(4, (5, 8), stride=(3, 2)), (2, 3, 10, 14))
        (2, 4, 4, 7)
    """

    regularized = ("weights",)

    num_kernels: int
    kernel_shape: tuple[int, ...]
    stride: int | tuple[int, ...] = 1
    padding: str = "same"
    weights_initializer: object = Xavier()
    bias_initializer: object = Constant(0.0)
    fast_paths: kernels.FastPaths | bool | None = dataclasses.field(default=None, repr=False)

    def __post_init__(self):
        object.__setattr__(self, "fast_paths", kernels.resolve("Conv", self.fast_paths))
        kernel = tuple(self.kernel_shape) if isinstance(self.kernel_shape, (tuple, list)) else (self.kernel_shape,)
        if len(kernel) not in (1, 2):
            raise ValueError(f"Conv: kernel_shape must have 1 or 2 entries, got {self.kernel_shape!r}.")
        object.__setattr__(self, "kernel_shape", as_tuple("Conv", "kernel_shape", self.kernel_shape, len(kernel)))
        object.__setattr__(self, "stride", as_tuple("Conv", "stride", self.stride, len(kernel)))
        object.__setattr__(self, "num_kernels", positive_int("Conv", "num_kernels", self.num_kernels))
        if self.padding not in ("same", "valid"):
            raise ValueError(f"Conv: padding must be 'same' or 'valid', got {self.padding!r}.")

    @property
    def spatial_dims(self) -> int:
        return len(self.kernel_shape)

    @property
    def layout(self) -> str:
        return "(batch, channels, y)" if self.spatial_dims == 1 else "(batch, channels, y, x)"

    def init(self, key, input_shape, dtype=jnp.float32):
        if len(input_shape) != self.spatial_dims + 2:
            raise ValueError(f"{self!r} expects input of layout {self.layout}, got shape {tuple(input_shape)}.")
        self._check_spatial(input_shape)
        channels = input_shape[1]
        receptive = math.prod(self.kernel_shape)
        fan_in, fan_out = channels * receptive, self.num_kernels * receptive
        weights_key, bias_key = jax.random.split(key)
        weights = self.weights_initializer(
            weights_key, (self.num_kernels, channels, *self.kernel_shape), fan_in, fan_out, dtype)
        bias = self.bias_initializer(bias_key, (self.num_kernels,), fan_in, fan_out, dtype)
        return {"weights": weights, "bias": bias}, {}

    def _check_spatial(self, shape):
        if self.padding == "valid" and any(s < k for s, k in zip(shape[2:], self.kernel_shape)):
            raise ValueError(
                f"{self!r}: kernel {self.kernel_shape} is larger than the input's spatial size "
                f"{tuple(shape[2:])} with padding='valid'."
            )

    def apply(self, params, state, x, *, key=None, train=False):
        check_floating(self, x)
        check_rank(self, x, [self.spatial_dims + 2], self.layout)
        nonempty_training_batch(self, x, train)
        weights = params["weights"]
        if x.shape[1] != weights.shape[1]:
            raise ValueError(
                f"{self!r} was initialized for {weights.shape[1]} input channels, got input of "
                f"shape {tuple(x.shape)} with {x.shape[1]} channels (layout {self.layout})."
            )
        self._check_spatial(x.shape)
        padding = same_padding(self.kernel_shape) if self.padding == "same" else ((0, 0),) * self.spatial_dims
        weights = weights.astype(x.dtype)
        if self.fast_paths.enabled:  # equal to the plain convolution below
            y = fast_conv(x, weights, self.stride, padding, self.fast_paths.blocked_weight_gradient)
        else:
            y = lax.conv_general_dilated(x, weights, window_strides=self.stride, padding=padding,
                                         dimension_numbers=conv_dimension_numbers(self.spatial_dims))
        bias = params["bias"].astype(x.dtype).reshape((1, -1) + (1,) * self.spatial_dims)
        return y + bias, state
