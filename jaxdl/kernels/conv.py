"""`fast_conv`: `Conv`'s cross-correlation with CPU fast paths, equal to `lax.conv` in every derivative.

Layout: the exercise's, input (batch, channels, y[, x]) and kernels (kernels, channels, m[, n]),
explicit padding per spatial axis. On CPU (chosen at lowering by `lax.platform_dependent`):

* one input channel at stride 1: a sum of shifted slices times each tap;
* float32, 2-D, stride 1, 2 to ``PADDED_KERNELS_CHANNELS - 1`` input channels and 16 to
  ``LIBRARY_KERNELS - 1`` kernels: the kernels zero-padded to ``LIBRARY_KERNELS`` and the extra
  outputs dropped;
* any other shape: `lax.conv` itself (`cpu_path` says which, from the shapes alone);
* bfloat16 and float16: computed in float32, rounded once;
* the weight gradient summed over blocks of ``WEIGHT_GRAD_BLOCK`` batch rows, at most
  ``WEIGHT_GRAD_BLOCKS`` of them (larger blocks at large batches, so the program and its
  compile time stop growing with the batch), unless the caller asks for the whole batch (a
  batch sharded over a device mesh).

Why these help, and by how much, is in benchmarks/RESULTS.md ("Where the time goes", "Speed,
second round") and benchmarks/RESULTS_compile.md.
"""

from __future__ import annotations

import functools
import itertools

import jax
import jax.numpy as jnp
from jax import lax
from jax.custom_derivatives import SymbolicZero

#: Batch rows per block of the CPU weight gradient. Measured with jaxlib 0.10.2 on AMD EPYC
#: Zen 4 (family 25, model 17) and Zen 5 (family 26, model 2), LeNet's two layers:
#: benchmarks/RESULTS.md, "Speed, second round". Not yet measured on Intel Xeon.
WEIGHT_GRAD_BLOCK = 32

#: At most this many blocks: above ``WEIGHT_GRAD_BLOCKS * WEIGHT_GRAD_BLOCK`` rows the blocks
#: grow with the batch instead of their number, so the program (and its compile time) stops
#: growing. A `lax.scan` over blocks of 32 rows, the alternative, runs on one thread: LeNet's
#: step at batch 256 took 34.4 ms with it and 24.0 ms with 4 blocks of 64 (AMD EPYC Zen 4,
#: jaxlib 0.10.2, 2 threads; benchmarks/RESULTS_compile.md).
WEIGHT_GRAD_BLOCKS = 4

#: XLA:CPU (jaxlib 0.10.2) runs a convolution with at least this many kernels through
#: YNNPACK, smaller ones through Eigen; measured on AMD EPYC Zen 4/5 (family 25 model 17,
#: family 26 model 2): benchmarks/RESULTS.md, "Where the time goes". Re-measure on a new
#: jaxlib or CPU.
LIBRARY_KERNELS = 32
#: ... or at least this many input channels (same jaxlib, CPUs and measurements).
LIBRARY_CHANNELS = 30

#: The kernels are padded to `LIBRARY_KERNELS` only below this many input channels (and at
#: stride 1). Measured in whole training steps with jaxlib 0.10.2 on AMD EPYC Zen 4 (family 25,
#: model 17), 16 kernels at 14x14, batch 128: 6 channels gained (5x5 and 3x3 kernels: 0.85x and
#: 0.89x of the step's time), 16 lost (1.16x and 1.07x; the MNIST ResNet's 16 -> 16
#: convolutions), stride 2 did not gain (1.02-1.06x): benchmarks/RESULTS_models.md.
PADDED_KERNELS_CHANNELS = 16


def cpu_path(x_shape, x_dtype, weights_shape, stride) -> str:
    """Which CPU branch `fast_conv` takes for these shapes: decided from the shapes alone.

    Args:
        x_shape: the input's shape (batch, channels, y[, x]).
        x_dtype: the input's dtype (bfloat16 and float16 are decided as float32, their compute dtype).
        weights_shape: (kernels, channels, m[, n]).
        stride: one int per spatial axis.

    Returns:
        ``"one-channel"`` (shifted slices: one input channel at stride 1), ``"padded-kernels"``
        (float32, 2-D, stride 1, 2 to ``PADDED_KERNELS_CHANNELS - 1`` input channels, 16 to
        ``LIBRARY_KERNELS - 1`` kernels) or ``"library"`` (`lax.conv` as it is). At stride 2 the
        shifted slices and the padded kernels were no faster than the library in a whole step
        (1.05-1.10x and 1.02-1.06x of its time; the MNIST ResNet's stride-2 stem), with 16
        input channels the padding cost more than it saved (`PADDED_KERNELS_CHANNELS`).
    """
    channels, kernels = x_shape[1], weights_shape[0]
    unit_stride = all(s == 1 for s in stride)
    if channels == 1 and unit_stride:
        return "one-channel"
    float32 = jnp.dtype(x_dtype) in (jnp.dtype(jnp.float32), jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
    if float32 and len(x_shape) == 4 and unit_stride and 1 < channels < min(PADDED_KERNELS_CHANNELS, LIBRARY_CHANNELS) \
            and 16 <= kernels < LIBRARY_KERNELS:
        return "padded-kernels"
    return "library"


def conv_dimension_numbers(ndim: int) -> tuple[str, str, str]:
    """lax dimension numbers for the exercise layout: NC[H]W input, OI[H]W kernels."""
    spatial = "HW"[-ndim:]  # "W" for 1-D, "HW" for 2-D
    return ("NC" + spatial, "OI" + spatial, "NC" + spatial)


def conv_reference(x, weights, stride, padding):
    """The plain `lax.conv_general_dilated` cross-correlation (exercise layout, explicit padding)."""
    return lax.conv_general_dilated(
        x, weights, window_strides=stride, padding=padding,
        dimension_numbers=conv_dimension_numbers(weights.ndim - 2),
    )


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3, 4))
def fast_conv(x, weights, stride, padding, blocked_weight_gradient: bool = True):
    """`conv_reference` with the CPU fast paths; equal to it in value and every derivative.

    A `jax.custom_jvp`: the primal is the fast forward pass; the tangent is the linear map
    ``conv_reference(dx, w) + conv_reference(x, dw)``, its second term written block by block
    of batch rows (`_weight_tangent`). Reverse mode transposes that map: the input gradient is
    `lax.conv`'s own, the weight gradient a sum of block-wise weight gradients. Zero tangents
    are skipped (``symbolic_zeros``), so a network's first layer computes no input gradient.

    Args:
        x: (batch, channels, y[, x]).
        weights: (kernels, channels, m[, n]).
        stride: one int per spatial axis.
        padding: one (before, after) pair per spatial axis.
        blocked_weight_gradient: False computes the CPU weight gradient over the whole batch.

    Returns:
        (batch, kernels, y'[, x']), as `conv_reference`.
    """
    return _conv_forward(x, weights, stride, padding)


def _conv_forward(x, weights, stride, padding):
    def reference(x, weights):
        return conv_reference(x, weights, stride, padding)

    def cpu(x, weights):
        if x.dtype in (jnp.bfloat16, jnp.float16):
            return cpu(x.astype(jnp.float32), weights.astype(jnp.float32)).astype(x.dtype)
        path = cpu_path(x.shape, x.dtype, weights.shape, stride)
        if path == "one-channel":
            return _single_channel_forward(x, weights, stride, padding)
        if path == "padded-kernels":
            kernels = weights.shape[0]
            padded = jnp.pad(weights, ((0, LIBRARY_KERNELS - kernels),) + ((0, 0),) * (weights.ndim - 1))
            return conv_reference(x, padded, stride, padding)[:, :kernels]
        return reference(x, weights)

    return lax.platform_dependent(x, weights, cpu=cpu, default=reference)


def _tap_slices(x, kernel_shape, stride, out_shape):
    """For each kernel tap, the strided view of x (batch, y[, x]) that the tap multiplies."""
    for tap in itertools.product(*(range(k) for k in kernel_shape)):
        index = tuple(slice(t, t + s * (n - 1) + 1, s) for t, s, n in zip(tap, stride, out_shape))
        yield tap, x[(slice(None),) + index]


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


def _fast_conv_jvp(stride, padding, blocked_weight_gradient, primals, tangents):
    x, weights = primals
    dx, dweights = tangents
    out = _conv_forward(x, weights, stride, padding)
    terms = []
    if not isinstance(dx, SymbolicZero):
        terms.append(conv_reference(dx, weights, stride, padding))
    if not isinstance(dweights, SymbolicZero):
        terms.append(_weight_tangent(x, dweights, stride, padding, blocked_weight_gradient))
    # JAX calls the rule only when some tangent is nonzero, so ``terms`` is never empty.
    return out, sum(terms[1:], terms[0])


def weight_gradient_block_rows(batch: int) -> int:
    """Batch rows per block of the CPU weight gradient: `WEIGHT_GRAD_BLOCK`, or more at large batches.

    At most `WEIGHT_GRAD_BLOCKS` blocks: up to ``WEIGHT_GRAD_BLOCKS * WEIGHT_GRAD_BLOCK`` rows the
    blocks have `WEIGHT_GRAD_BLOCK` rows, above it ``ceil(batch / WEIGHT_GRAD_BLOCKS)``; the last
    block may be shorter. So the program has at most `WEIGHT_GRAD_BLOCKS` weight-gradient
    convolutions per layer at any batch (its compile time does not grow with the batch) and no
    loop, which XLA:CPU would run on one thread.

    Args:
        batch: the batch size (rows of the layer's input).

    Returns:
        The rows per block; ``>= batch`` means one block (the whole batch).
    """
    return max(WEIGHT_GRAD_BLOCK, -(-batch // WEIGHT_GRAD_BLOCKS))


def _weight_tangent(x, dweights, stride, padding, blocked: bool):
    """``conv_reference(x, dweights)``; on CPU with ``blocked``, in blocks of batch rows.

    Linear in ``dweights``; its transpose, the weight gradient, is then a sum of block-wise
    weight gradients, one convolution per block (`weight_gradient_block_rows`).
    """
    def whole(x, dweights):
        return conv_reference(x, dweights, stride, padding)

    def in_blocks(x, dweights):
        batch = x.shape[0]
        rows = weight_gradient_block_rows(batch)
        if rows >= batch:
            return whole(x, dweights)
        parts = [whole(x[start:start + rows], dweights) for start in range(0, batch, rows)]
        return jnp.concatenate(parts, axis=0)

    if not blocked:
        return whole(x, dweights)
    return lax.platform_dependent(x, dweights, cpu=in_blocks, default=whole)


fast_conv.defjvp(_fast_conv_jvp, symbolic_zeros=True)
