"""L1 and L2 weight regularizers over the weights of a parameter tree.

Conventions (the exercise's, no factor 1/2):

* ``L2Regularizer(alpha)``: norm = alpha * sum(w^2), gradient = alpha * w.
* ``L1Regularizer(alpha)``: norm = alpha * sum(|w|), gradient = alpha * sign(w).

Which leaves are regularized: the ones the model's layers declare (`jaxdl.Layer.regularized`:
FullyConnected and Conv ``weights``, the recurrent ``w_ih`` and ``w_hh``, an Embedding's table,
a custom layer's own kernels); never biases or normalization parameters, whatever their names.
`norm` and `gradient` take the model as ``regularized=`` (or its `jaxdl.regularized_mask`, a
pytree of bools); the training step passes it for you. This differs from the exercise, whose
FullyConnected keeps the bias as the last row of its weight matrix and so regularizes it too
(`jaxdl.exercise` reproduces that). Pass ``mask``, a predicate on the leaf's path (a tuple of
strings such as ``("fully_connected_0", "bias")``), to choose other leaves; it wins over the
declarations. A bare array (not a tree) is always regularized.

Two ways to use a regularizer:

* Decoupled (the exercise's, the default of `jaxdl.Sgd`/`Adam`/...): give it to the optimizer
  as ``regularizer=``. Each step shrinks the current weights by learning_rate * gradient(w)
  beside the optimizer's own step from the data gradient; the penalty never enters momentum
  or Adam's moments (the AdamW idea). The training step reports loss = data loss + norm.
* In the loss: ``make_train_step(..., penalty=reg)`` adds ``reg.norm(params)`` to the
  differentiated objective, so its gradient flows through momentum/Adam like the data
  gradient. That gradient is the derivative of the norm: alpha * sign(w) for L1 (so with
  plain SGD both ways give the same step), but 2 * alpha * w for L2, twice the decoupled
  shrinkage alpha * w (the exercise's gradient has no factor 2): with plain SGD,
  ``penalty=L2Regularizer(alpha)`` steps as ``regularizer=L2Regularizer(2 * alpha)``. With
  Adam the decoupled form is usually the better regularizer (Loshchilov & Hutter, "Decoupled
  Weight Decay Regularization").
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxdl.core import Layer, path_names, regularized_mask, tree_float_dtype
from jaxdl.validation import real_number

def leaf_mask(owner: str, tree, mask: Callable | None, regularized=None):
    """Which leaves of ``tree`` a regularizer acts on: a pytree of bools like ``tree``.

    ``mask`` (a predicate on the leaf's path) wins; else ``regularized``: a `jaxdl.Layer` (the
    model, whose declarations `jaxdl.regularized_mask` reads) or such a pytree of bools; a bare
    array needs neither.

    Raises:
        ValueError: for a tree (a dict of params) with neither ``mask`` nor ``regularized``,
            or a ``regularized`` mask whose structure differs from the tree's.
    """
    if mask is not None:
        return jax.tree_util.tree_map_with_path(lambda path, _: bool(mask(path_names(path))), tree)
    if isinstance(regularized, Layer):
        return regularized_mask(regularized, tree)
    if regularized is None:
        if jax.tree_util.treedef_is_leaf(jax.tree.structure(tree)) or not jax.tree.leaves(tree):
            return jax.tree.map(lambda _: True, tree)  # a bare array (or nothing to regularize)
        raise ValueError(
            f"{owner}: which leaves of a params tree are regularized comes from the model's layers "
            f"(Layer.regularized): pass regularized=model (or jaxdl.regularized_mask(model, params)), or build "
            f"the regularizer with mask=lambda path: ...; got a tree with keys {sorted(tree) if isinstance(tree, dict) else type(tree).__name__}.")
    if jax.tree.structure(regularized) != jax.tree.structure(tree):
        raise ValueError(f"{owner}: regularized must be the model (a jaxdl Layer) or a pytree of bools with the "
                         f"params' structure (jaxdl.regularized_mask(model, params)), got {regularized!r}.")
    return regularized


def _masked_map(fn, flags, tree):
    """``fn`` of the flagged leaves, zeros elsewhere (flags Python bools, or arrays under a trace)."""
    def leaf(w, flag):
        if isinstance(flag, (bool, np.bool_)):
            return fn(w) if flag else jnp.zeros_like(w)
        return jnp.where(flag, fn(w), jnp.zeros_like(w))

    return jax.tree.map(leaf, tree, flags)


@dataclasses.dataclass(frozen=True)
class _Regularizer:
    alpha: float
    mask: Callable[[tuple[str, ...]], bool] | None = None

    def __post_init__(self):
        alpha = real_number(type(self).__name__, "alpha", self.alpha)  # TypeError for True, "0.1"...
        if not (math.isfinite(alpha) and alpha >= 0):
            raise ValueError(f"{type(self).__name__}: alpha must be a finite number >= 0, got {self.alpha!r}.")

    def _penalty(self, w):
        raise NotImplementedError

    def _gradient(self, w):
        raise NotImplementedError

    def norm(self, tree, regularized=None) -> jax.Array:
        """alpha times the summed penalty over the regularized leaves (a scalar).

        Args:
            tree: a params tree, or a bare array.
            regularized: the model (a `jaxdl.Layer`: its layers' declarations choose the leaves)
                or `jaxdl.regularized_mask` of it; not needed with ``mask`` or for a bare array.

        Returns:
            The penalty, in the params' floating dtype.

        Raises:
            ValueError: for a params tree without ``regularized`` or ``mask`` (see `leaf_mask`).
        """
        flags = leaf_mask(f"{type(self).__name__}.norm", tree, self.mask, regularized)
        sums = [jnp.sum(leaf) for leaf in jax.tree.leaves(_masked_map(self._penalty, flags, tree))]
        total = sum(sums[1:], sums[0]) if sums else jnp.zeros((), tree_float_dtype(tree))
        return self.alpha * total

    def gradient(self, tree, regularized=None):
        """The gradient of `norm`: a tree like ``tree``, zeros on unregularized leaves.

        Args:
            tree: a params tree, or a bare array.
            regularized: as for `norm`.

        Returns:
            A tree like ``tree``.

        Raises:
            ValueError: as for `norm`.
        """
        flags = leaf_mask(f"{type(self).__name__}.gradient", tree, self.mask, regularized)
        return _masked_map(lambda w: self.alpha * self._gradient(w), flags, tree)


@dataclasses.dataclass(frozen=True)
class L2Regularizer(_Regularizer):
    """norm = alpha * sum(w^2), gradient = alpha * w (no 1/2, the exercise's definition)."""

    def _penalty(self, w):
        return jnp.square(w)

    def _gradient(self, w):
        return w


@dataclasses.dataclass(frozen=True)
class L1Regularizer(_Regularizer):
    """norm = alpha * sum(|w|), gradient = alpha * sign(w) (0 at w = 0)."""

    def _penalty(self, w):
        return jnp.abs(w)

    def _gradient(self, w):
        return jnp.sign(w)
