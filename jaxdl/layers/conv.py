"""Conv: 1-D and 2-D cross-correlation in the exercise layout (batch, channels, y[, x])."""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import itertools
import math

import jax
import jax.numpy as jnp
from jax import lax
from jax.custom_derivatives import SymbolicZero

from jaxdl.core import Layer, check_floating, check_rank
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


def conv_dimension_numbers(ndim: int):
    """lax dimension numbers for the exercise layout: NC[H]W input, OI[H]W kernels."""
    spatial = "HW"[-ndim:]  # "W" for 1-D, "HW" for 2-D
    return ("NC" + spatial, "OI" + spatial, "NC" + spatial)


def conv_reference(x, weights, stride, padding):
    """The plain `lax.conv_general_dilated` cross-correlation (exercise layout, explicit padding)."""
    return lax.conv_general_dilated(
        x, weights, window_strides=stride, padding=padding,
        dimension_numbers=conv_dimension_numbers(weights.ndim - 2),
    )


def _tap_slices(x, kernel_shape, stride, out_shape):
    """For each kernel tap, the strided view of x (batch, y[, x]) that the tap multiplies."""
    for tap in itertools.product(*(range(k) for k in kernel_shape)):
        index = tuple(slice(t, t + s * (n - 1) + 1, s) for t, s, n in zip(tap, stride, out_shape))
        yield tap, x[(slice(None),) + index]


#: Batch rows per block of the weight gradient on CPU (see `fast_conv`).
WEIGHT_GRAD_BLOCK = 32

#: On CPU, XLA runs a convolution with at least this many kernels, or at least
#: `LIBRARY_CHANNELS` input channels, through YNNPACK, and smaller ones through a much slower
#: Eigen kernel (jaxlib 0.10.2; see `fast_conv`).
LIBRARY_KERNELS = 32
LIBRARY_CHANNELS = 30


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3))
def fast_conv(x, weights, stride, padding):
    """`conv_reference` with CPU fast paths; equal to it in value and every derivative.

    On CPU (chosen at lowering with `lax.platform_dependent`; other platforms run
    `conv_reference` and its derivatives unchanged):

    * One input channel (the first layer of an image network): the forward pass is a sum of
      shifted, strided slices times each tap, ~9x faster than XLA's CPU convolution.
    * float32, 2-D, 2-29 input channels and 16-31 kernels (LeNet's second layer): the kernels
      are padded with zeros to `LIBRARY_KERNELS` and the extra outputs dropped. The padded convolution
      does twice the arithmetic, but XLA's CPU backend runs it with YNNPACK instead of Eigen:
      1.6x faster for LeNet's 6->16 layer on one core (a little slower on two, where Eigen
      uses both cores and YNNPACK one; benchmarks/RESULTS.md).
    * bfloat16 and float16: computed in float32 and rounded once (XLA's CPU kernels have no
      fast 16-bit path; the result is at least as accurate as a 16-bit computation).
    * Weight gradient: summed over blocks of `WEIGHT_GRAD_BLOCK` batch rows. XLA computes a
      whole-batch weight gradient as one single-threaded convolution contracting over the
      batch, 1.3-1.5x slower than in blocks of 32 for LeNet's layers. The sum's order differs:
      equal to float rounding.

    How (a `jax.custom_jvp`, so forward mode, Hessian-vector products and `jax.hessian` work):
    the primal is the fast forward pass; the tangent is the linear map
    ``conv_reference(dx, w) + conv_reference(x, dw)``, the second term written batch block by
    batch block (`_weight_tangent`). Reverse mode transposes that linear map: the input
    gradient is `lax.conv`'s own, and the transpose of the block-wise term is the block-wise
    weight gradient. The rule also keeps autodiff away from the slices of the one-channel
    path, which would scatter once per tap. Zero tangents are skipped (``symbolic_zeros``), so
    a network's first layer computes no input gradient.
    """
    return _conv_forward(x, weights, stride, padding)


def _conv_forward(x, weights, stride, padding):
    def reference(x, weights):
        return conv_reference(x, weights, stride, padding)

    def cpu(x, weights):
        if x.dtype in (jnp.bfloat16, jnp.float16):
            # XLA's CPU convolutions and elementwise ops have no fast 16-bit path (the slice
            # path runs 15x slower in bfloat16): compute in float32, round the result once.
            return cpu(x.astype(jnp.float32), weights.astype(jnp.float32)).astype(x.dtype)
        if x.shape[1] == 1:
            return _single_channel_forward(x, weights, stride, padding)
        kernels = weights.shape[0]
        if x.dtype == jnp.float32 and x.ndim == 4 and 1 < x.shape[1] < LIBRARY_CHANNELS and 16 <= kernels < LIBRARY_KERNELS:
            padded = jnp.pad(weights, ((0, LIBRARY_KERNELS - kernels),) + ((0, 0),) * (weights.ndim - 1))
            return conv_reference(x, padded, stride, padding)[:, :kernels]
        return reference(x, weights)

    return lax.platform_dependent(x, weights, cpu=cpu, default=reference)


def _single_channel_forward(x, weights, stride, padding):
    x = jnp.pad(x[:, 0], ((0, 0),) + tuple(padding))
    kernel_shape = weights.shape[2:]
    out_shape = tuple((n - k) // s + 1 for n, k, s in zip(x.shape[1:], kernel_shape, stride))
    taps = weights[:, 0]  # (kernels, m[, n])
    out = None
    for tap, view in _tap_slices(x, kernel_shape, stride, out_shape):
        term = view[:, None] * taps[(slice(None),) + tap].reshape((1, -1) + (1,) * len(out_shape))
        out = term if out is None else out + term
    return out


def _fast_conv_jvp(stride, padding, primals, tangents):
    x, weights = primals
    dx, dweights = tangents
    out = _conv_forward(x, weights, stride, padding)
    terms = []
    if not isinstance(dx, SymbolicZero):
        terms.append(conv_reference(dx, weights, stride, padding))
    if not isinstance(dweights, SymbolicZero):
        terms.append(_weight_tangent(x, dweights, stride, padding))
    # JAX calls the rule only when some tangent is nonzero, so ``terms`` is never empty.
    return out, sum(terms[1:], terms[0])


_WHOLE_BATCH_WEIGHT_GRADIENT = contextvars.ContextVar("jaxdl_whole_batch_weight_gradient", default=False)


@contextlib.contextmanager
def whole_batch_weight_gradient():
    """Within it, `fast_conv` traces its CPU weight gradient over the whole batch (no row blocks).

    The data-parallel step (`jaxdl.training.parallel`) traces under it: its batch is sharded
    over devices, and row blocks that cut across the shards make XLA move activations between
    devices (48 collective-permutes per LeNet step on 4 CPU devices).
    """
    token = _WHOLE_BATCH_WEIGHT_GRADIENT.set(True)
    try:
        yield
    finally:
        _WHOLE_BATCH_WEIGHT_GRADIENT.reset(token)


def _weight_tangent(x, dweights, stride, padding):
    """``conv_reference(x, dweights)``, on CPU computed in batch blocks of `WEIGHT_GRAD_BLOCK`.

    Linear in ``dweights``; its transpose (the weight gradient reverse mode needs) is then a sum
    of block-wise weight gradients, which XLA's CPU backend runs faster than one whole-batch
    gradient (see `fast_conv`), except under `whole_batch_weight_gradient`.
    """
    def whole(x, dweights):
        return conv_reference(x, dweights, stride, padding)

    def blocked(x, dweights):
        starts = range(0, x.shape[0], WEIGHT_GRAD_BLOCK)
        if len(starts) == 1 or _WHOLE_BATCH_WEIGHT_GRADIENT.get():
            return whole(x, dweights)
        return jnp.concatenate(
            [conv_reference(x[s:s + WEIGHT_GRAD_BLOCK], dweights, stride, padding) for s in starts], axis=0)

    return lax.platform_dependent(x, dweights, cpu=blocked, default=whole)


fast_conv.defjvp(_fast_conv_jvp, symbolic_zeros=True)


@dataclasses.dataclass(frozen=True)
class Conv(Layer):
    """Multi-channel cross-correlation plus bias (what deep-learning libraries call conv).

    Layout: input (batch, channels, y) or (batch, channels, y, x); output
    (batch, num_kernels, y', x'). Parameters: ``weights`` (num_kernels, channels, m[, n]) and
    ``bias`` (num_kernels,). Padding "same" pads with zeros by (k-1)//2 before and k//2 after
    (the stride-1 "same" of the exercise and PyTorch), then strides, so y' = ceil(y / stride);
    "valid" uses no padding: y' = floor((y - m) / stride) + 1.

    Speed: `fast_conv`, tested equal to `lax.conv` in value and gradient, takes CPU-only fast
    paths (shifted slices for one input channel, kernels padded to 32 where that lets XLA use
    YNNPACK, the weight gradient in blocks of 32 batch rows).

    Fans for the initializers (the exercise's): fan_in = channels*m*n, fan_out = num_kernels*m*n.

    Args:
        num_kernels: the number of output channels.
        kernel_shape: (m,) for 1-D or (m, n) for 2-D.
        stride: an int or one per spatial axis.
        padding: "same" or "valid".
        weights_initializer: initializer for the kernels.
        bias_initializer: initializer for the bias.

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

    def __post_init__(self):
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
        y = fast_conv(x, weights, self.stride, padding)
        bias = params["bias"].astype(x.dtype).reshape((1, -1) + (1,) * self.spatial_dims)
        return y + bias, state
