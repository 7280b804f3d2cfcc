"""MultiHeadAttention: scaled dot-product self-attention over (batch, time, features)."""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from jaxdl.core import Layer, check_floating, check_rank
from jaxdl.initializers import Constant, Xavier
from jaxdl.layers.dense import dense_product
from jaxdl.layers.recurrent.lengths import split_input, step_mask
from jaxdl.validation import nonempty_training_batch, positive_int

#: The four projections, in the order of PyTorch's ``in_proj_weight`` rows (then ``out_proj``).
PROJECTIONS = ("query", "key", "value", "output")


def attention_reference(query, key, value, *, causal: bool, lengths=None):
    """softmax(q k^T / sqrt(head_features) + mask) v in ``query``'s dtype.

    Layout (batch, time, heads, head_features), as `jax.nn.dot_product_attention`'s. The mask
    removes the keys after the query's position (``causal``) and the keys at positions
    >= ``lengths[b]`` (padding), with a large finite negative number as that function does
    (a query with no key left averages all keys uniformly; `MultiHeadAttention` zeroes it).
    The plain path for float64 (`jax.nn.dot_product_attention` computes its softmax in float32,
    too coarse for float64 finite differences) and the reference it is tested against.
    """
    logits = jnp.einsum("btnh,bsnh->bnts", query, key) / jnp.asarray(math.sqrt(query.shape[-1]), query.dtype)
    t, s = logits.shape[-2:]
    keep = jnp.ones((1, 1, t, s), bool)
    if causal:
        keep = keep & jnp.tril(jnp.ones((t, s), bool))
    if lengths is not None:
        keep = keep & step_mask(lengths, s)[:, None, None, :]
    if causal or lengths is not None:
        logits = jnp.where(keep, logits, jnp.asarray(-0.7 * jnp.finfo(logits.dtype).max, logits.dtype))
    weights = jax.nn.softmax(logits, axis=-1)
    return jnp.einsum("bnts,bsnh->btnh", weights, value)


@dataclasses.dataclass(frozen=True)
class MultiHeadAttention(Layer):
    """Multi-head scaled dot-product self-attention (Vaswani et al. 2017) on (batch, time, features).

    For an input x of layout (batch, time, features) (D = features, N = ``num_heads``,
    H = ``head_features``)::

        q, k, v = x @ query_weights + query_bias, ...      # (batch, time, N * H), split into N heads
        a_n = softmax(q_n k_n^T / sqrt(H) + mask) v_n      # per head n, over the key positions
        y = concat(a_1 .. a_N) @ output_weights + output_bias   # (batch, time, D)

    Params: ``query_weights``, ``key_weights``, ``value_weights`` of shape (D, N*H) and
    ``output_weights`` of shape (N*H, D) (Xavier normal, as `jaxdl.FullyConnected`), and the
    biases ``query_bias``, ``key_bias``, ``value_bias`` (N*H,) and ``output_bias`` (D,) (zeros).
    The four kernels are regularized (``regularized``), the biases not. PyTorch's
    ``nn.MultiheadAttention(D, N, batch_first=True)`` is the same map with ``in_proj_weight =
    concat(query_weights, key_weights, value_weights, axis=1).T`` and ``out_proj.weight =
    output_weights.T``.

    Masks: ``causal=True`` lets position t attend to positions 0..t only (a language model).
    Padding: the input may be a `jaxdl.layers.SequenceBatch` ``(x, lengths)`` of sequences padded at
    the end (``lengths`` (batch,) integers in [0, time], as the recurrent layers take): the
    keys at positions >= ``lengths[b]`` are masked out, and the outputs there are zeros, so
    each example's outputs equal those of the example alone, unpadded (PyTorch's
    ``key_padding_mask``). The output is a plain array. With ``causal=True`` and a plain
    array, padding at the END of a sequence already never changes the outputs at the real
    positions before it.

    Computes in the input's dtype (`jaxdl.precision`) on `jax.nn.dot_product_attention`
    (``is_causal``; its softmax in float32, also for bfloat16 inputs); a float64 input takes
    `attention_reference`, the same math in float64 throughout. No dropout.

    Args:
        num_heads: the number of heads N.
        head_features: the size H of each head's query, key and value; ``None`` (default) for
            features // num_heads (the features must then be a multiple of num_heads).
        causal: mask the future (position t sees 0..t).
        weights_initializer: initializer of the four kernels; fans (D, N*H), (N*H, D).
        bias_initializer: initializer of the four biases.

    Raises:
        TypeError: at construction for sizes that are not ints (bools included) and a
            ``causal`` that is not a bool; at trace time for a non-floating input.
        ValueError: at construction for sizes < 1; at init and apply for a layout other than
            (batch, time, features), features that ``num_heads`` does not divide (when
            ``head_features`` is None), a feature count other than the params' and an empty
            batch in training; for ``lengths`` not of shape (batch,) or (concrete) outside
            [0, time] (a TypeError for non-integer lengths).

    Example:
        >>> layer = MultiHeadAttention(num_heads=2, causal=True)
        >>> params, _ = layer.init(jax.random.key(0), (4, 6, 8))
        >>> params["query_weights"].shape, layer.apply(params, {}, jnp.ones((4, 6, 8)))[0].shape
        ((8, 8), (4, 6, 8))
    """

    num_heads: int
    head_features: int | None = None
    causal: bool = False
    weights_initializer: object = Xavier()
    bias_initializer: object = Constant(0.0)

    regularized: ClassVar[tuple[str, ...]] = tuple(f"{p}_weights" for p in PROJECTIONS)
    takes_lengths: ClassVar[bool] = True  # a SequenceBatch input masks the padded keys

    def __post_init__(self):
        object.__setattr__(self, "num_heads", positive_int("MultiHeadAttention", "num_heads", self.num_heads))
        if self.head_features is not None:
            object.__setattr__(self, "head_features",
                               positive_int("MultiHeadAttention", "head_features", self.head_features))
        if not isinstance(self.causal, (bool, np.bool_)):
            raise TypeError(
                f"MultiHeadAttention: causal must be a bool, got {self.causal!r} of type {type(self.causal).__name__}.")
        object.__setattr__(self, "causal", bool(self.causal))

    def _head_features(self, shape) -> int:
        """H for an input of ``shape`` (batch, time, features)."""
        if len(shape) != 3:
            raise ValueError(f"{self!r} expects input of layout (batch, time, features), got shape {tuple(shape)}.")
        if self.head_features is not None:
            return self.head_features
        if shape[-1] % self.num_heads:
            raise ValueError(
                f"{self!r}: the features ({shape[-1]}) must be a multiple of num_heads ({self.num_heads}) when "
                f"head_features is None, got input of shape {tuple(shape)}.")
        return shape[-1] // self.num_heads

    def init(self, key, input_shape, dtype=jnp.float32):
        features = input_shape[-1] if input_shape else 0
        inner = self.num_heads * self._head_features(tuple(input_shape))
        keys = jax.random.split(key, 2 * len(PROJECTIONS))
        params = {}
        for i, projection in enumerate(PROJECTIONS):
            fans = (inner, features) if projection == "output" else (features, inner)
            params[f"{projection}_weights"] = self.weights_initializer(keys[2 * i], fans, *fans, dtype)
            params[f"{projection}_bias"] = self.bias_initializer(keys[2 * i + 1], fans[1:], *fans, dtype)
        return params, {}

    def apply(self, params, state, x, *, key=None, train=False):
        x, lengths = split_input(self, x)
        check_floating(self, x)
        check_rank(self, x, [3], "(batch, time, features)")
        features = params["query_weights"].shape[0]
        if x.shape[-1] != features:
            raise ValueError(
                f"{self!r} was initialized for {features} features, got input of shape {tuple(x.shape)}.")
        nonempty_training_batch(self, x, train)
        dtype = jnp.result_type(x)
        head_size = params["query_weights"].shape[1] // self.num_heads
        batch, time = x.shape[:2]

        def project(name, h):
            return dense_product(h, params[f"{name}_weights"].astype(dtype)) + params[f"{name}_bias"].astype(dtype)

        q, k, v = (project(name, x).reshape(batch, time, self.num_heads, head_size) for name in PROJECTIONS[:3])
        if dtype == jnp.float64:
            attended = attention_reference(q, k, v, causal=self.causal, lengths=lengths)
        else:
            lengths32 = None if lengths is None else lengths.astype(jnp.int32)
            attended = jax.nn.dot_product_attention(
                q, k, v, is_causal=self.causal, query_seq_lengths=lengths32, key_value_seq_lengths=lengths32)
        y = project("output", attended.reshape(batch, time, self.num_heads * head_size))
        if lengths is not None:
            y = jnp.where(step_mask(lengths, time)[..., None], y, jnp.zeros((), dtype))
        return y, state
