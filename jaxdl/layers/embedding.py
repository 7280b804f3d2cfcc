"""Embedding tables: token ids to vectors (`Embedding`) and learned positions (`PositionalEmbedding`)."""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from jaxdl.core import Layer, check_floating, check_rank
from jaxdl.layers.dense import dense_product
from jaxdl.validation import positive_int


def _normal_rows(key, shape, dtype):
    """N(0, 1/features) entries for a (rows, features) table: each looked-up vector has
    squared norm about 1 (Flax's default embedding scale, untruncated)."""
    return jax.random.normal(key, shape, dtype) / math.sqrt(shape[-1])


def _check_initializer(owner: str, initializer) -> None:
    if initializer is not None and not callable(initializer):
        raise TypeError(f"{owner}: initializer must be None or a callable initializer, got {initializer!r}.")


@dataclasses.dataclass(frozen=True)
class Embedding(Layer):
    """Looks up integer token ids in a learned table: (batch, ...) ids -> (batch, ..., features).

    ``y[..., :] = embedding[ids[...], :]`` with the table ``params["embedding"]`` of shape
    (vocabulary_size, features), so ``ids`` of any integer dtype and any rank >= 1 (batch
    first: (batch,), (batch, time), ...) give vectors in the table's dtype (the parameter dtype;
    under `jaxdl.MixedPrecision` the compute dtype the table is cast to). The table is a kernel:
    ``regularized = ("embedding",)``, so L1/L2 penalize it. `attend` multiplies vectors by the
    transposed table (logits over the vocabulary), so a language model can tie its input and
    output weights by using one table for both.

    Ids outside [0, vocabulary_size) (negative ids included; they do NOT wrap around as NumPy
    indexing does) are an error when the ids are concrete (eager `apply`). Under `jax.jit`,
    `jax.vmap` and other traces the ids cannot be checked: an out-of-range id gives a row of
    NaN (``jnp.take(..., mode="fill")``), so the loss becomes NaN instead of silently reading a
    clamped row, and its gradient reaches no table row.

    Args:
        vocabulary_size: the number of rows (token ids 0 .. vocabulary_size - 1).
        features: the length of each vector.
        initializer: ``None`` for N(0, 1/features) entries, or an initializer of
            `jaxdl.initializers` (called with fans (vocabulary_size, features)).

    Raises:
        TypeError: at construction for sizes that are not ints (bools included) or an
            initializer that is not callable; at trace time for ids that are not integers.
        ValueError: at construction for sizes < 1; at trace time for ids of rank 0 (no batch
            axis); in an eager `apply` for ids outside [0, vocabulary_size).

    Example:
        >>> layer = Embedding(100, 8)
        >>> params, _ = layer.init(jax.random.key(0), (2, 5))
        >>> y, _ = layer.apply(params, {}, jnp.zeros((2, 5), jnp.int32))
        >>> params["embedding"].shape, y.shape
        ((100, 8), (2, 5, 8))
    """

    vocabulary_size: int
    features: int
    initializer: object = None

    regularized: ClassVar[tuple[str, ...]] = ("embedding",)

    def __post_init__(self):
        object.__setattr__(self, "vocabulary_size",
                           positive_int("Embedding", "vocabulary_size", self.vocabulary_size))
        object.__setattr__(self, "features", positive_int("Embedding", "features", self.features))
        _check_initializer("Embedding", self.initializer)

    def init(self, key, input_shape, dtype=jnp.float32):
        if len(input_shape) < 1:
            raise ValueError(f"{self!r} expects ids of layout (batch, ...), got shape {tuple(input_shape)}.")
        shape = (self.vocabulary_size, self.features)
        if self.initializer is None:
            return {"embedding": _normal_rows(key, shape, dtype)}, {}
        return {"embedding": self.initializer(key, shape, self.vocabulary_size, self.features, dtype)}, {}

    def apply(self, params, state, x, *, key=None, train=False):
        ids = jnp.asarray(x) if isinstance(x, (np.ndarray, list, tuple)) else x
        if not jnp.issubdtype(jnp.result_type(ids), jnp.integer):
            raise TypeError(
                f"{self!r} expects integer token ids, got dtype {jnp.result_type(ids)}; convert them with "
                f"ids.astype(jnp.int32).")
        if jnp.ndim(ids) < 1:
            raise ValueError(f"{self!r} expects ids of layout (batch, ...), got a scalar.")
        table = params["embedding"]
        self._check_ids(ids, table.shape[0])
        inside = (ids >= 0) & (ids < table.shape[0])
        ids = jnp.where(inside, ids, table.shape[0])  # a negative id would wrap around; send it past the end
        return jnp.take(table, ids, axis=0, mode="fill", fill_value=jnp.nan), state

    def _check_ids(self, ids, rows: int) -> None:
        """The eager check: a ValueError listing the ids outside [0, rows)."""
        if isinstance(ids, jax.core.Tracer):
            return
        values = np.asarray(ids)
        bad = values[(values < 0) | (values >= rows)]
        if bad.size:
            shown = ", ".join(map(str, np.unique(bad)[:10].tolist()))
            raise ValueError(
                f"{self!r}: ids must be in [0, {rows}) (the vocabulary_size), got {bad.size} id(s) outside it: "
                f"{shown}.")

    def attend(self, params, x):
        """Logits over the vocabulary: ``x @ embedding.T``, (..., features) -> (..., vocabulary_size).

        The output projection of a language model whose input and output weights are tied (the
        same ``params`` as `apply`'s). Computes in ``x``'s dtype (the table cast to it).

        Args:
            params: this layer's params (``{"embedding": table}``).
            x: floating vectors whose last axis has ``features`` entries.

        Returns:
            The logits, of ``x``'s shape with the last axis ``vocabulary_size`` long.

        Raises:
            TypeError: for a non-floating ``x``.
            ValueError: for a last axis that is not ``features`` long.
        """
        check_floating(self, x)
        table = params["embedding"]
        if x.ndim < 1 or x.shape[-1] != table.shape[1]:
            raise ValueError(
                f"{self!r}.attend expects vectors of layout (..., {table.shape[1]}), got shape {tuple(x.shape)}.")
        return dense_product(x, table.astype(x.dtype).T)


@dataclasses.dataclass(frozen=True)
class PositionalEmbedding(Layer):
    """Adds a learned vector per position: (batch, time, features) -> the same shape.

    ``y[b, t] = x[b, t] + embedding[t]`` with ``params["embedding"]`` of shape (max_length,
    features), N(0, 1/features) at init (`Embedding`'s scale). Sequences of any length up to
    ``max_length`` use its first rows. Computes in ``x``'s dtype (the table cast to it). The
    table is an additive offset, like a bias, so it is not regularized (``regularized = ()``).

    Args:
        max_length: the longest sequence (time steps) the layer accepts.

    Raises:
        TypeError: at construction for a ``max_length`` that is not an int (bools included); at
            trace time for a non-floating input.
        ValueError: at construction for ``max_length`` < 1; at init and apply for a layout that
            is not (batch, time, features), a sequence longer than ``max_length`` and (apply) a
            feature count other than the table's.

    Example:
        >>> layer = PositionalEmbedding(16)
        >>> params, _ = layer.init(jax.random.key(0), (2, 5, 8))
        >>> params["embedding"].shape, layer.apply(params, {}, jnp.zeros((2, 5, 8)))[0].shape
        ((16, 8), (2, 5, 8))
    """

    max_length: int

    regularized: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self):
        object.__setattr__(self, "max_length", positive_int("PositionalEmbedding", "max_length", self.max_length))

    def init(self, key, input_shape, dtype=jnp.float32):
        self._check_shape(tuple(input_shape))
        return {"embedding": _normal_rows(key, (self.max_length, input_shape[-1]), dtype)}, {}

    def _check_shape(self, shape) -> None:
        if len(shape) != 3:
            raise ValueError(f"{self!r} expects input of layout (batch, time, features), got shape {shape}.")
        if shape[1] > self.max_length:
            raise ValueError(
                f"{self!r}: the sequence length (axis 1) must be <= max_length {self.max_length}, got input "
                f"of shape {shape}.")

    def apply(self, params, state, x, *, key=None, train=False):
        check_floating(self, x)
        check_rank(self, x, [3], "(batch, time, features)")
        self._check_shape(tuple(x.shape))
        table = params["embedding"]
        if x.shape[-1] != table.shape[1]:
            raise ValueError(
                f"{self!r} was initialized for {table.shape[1]} features, got input of shape {tuple(x.shape)}.")
        return x + table[: x.shape[1]].astype(x.dtype), state
