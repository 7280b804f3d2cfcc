"""L1 and L2 weight regularizers over the weights of a parameter tree.

Conventions (the exercise's, no factor 1/2):

* ``L2Regularizer(alpha)``: norm = alpha * sum(w^2), gradient = alpha * w.
* ``L1Regularizer(alpha)``: norm = alpha * sum(|w|), gradient = alpha * sign(w).

Which leaves are regularized: by default the leaves named ``weights`` (FullyConnected and
Conv kernels) and the recurrent matrices ``w_ih``, ``w_hh``; never biases or normalization
parameters (``gamma``, ``beta``). This differs from the exercise, whose FullyConnected keeps
the bias as the last row of its weight matrix and so regularizes it too (`jaxdl.exercise`
reproduces that). Pass ``mask``, a predicate on the leaf's path (a tuple of strings such as
``("fully_connected_0", "bias")``), to choose other leaves. A bare array (empty path) is
always regularized.

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

from jaxdl.core import path_names, tree_float_dtype
from jaxdl.validation import real_number

#: Leaf names regularized by default.
REGULARIZED_NAMES = frozenset({"weights", "w_ih", "w_hh"})


def default_mask(path: tuple[str, ...]) -> bool:
    """True for weights (FC, Conv, recurrent), False for biases and normalization params."""
    return len(path) == 0 or path[-1] in REGULARIZED_NAMES


def _masked_map(fn, mask, tree):
    mask = mask or default_mask
    return jax.tree_util.tree_map_with_path(
        lambda path, w: fn(w) if mask(path_names(path)) else jnp.zeros_like(w), tree
    )


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

    def norm(self, tree) -> jax.Array:
        """alpha times the summed penalty over the regularized leaves (a scalar)."""
        sums = [jnp.sum(leaf) for leaf in jax.tree.leaves(_masked_map(self._penalty, self.mask, tree))]
        total = sum(sums[1:], sums[0]) if sums else jnp.zeros((), tree_float_dtype(tree))
        return self.alpha * total

    def gradient(self, tree):
        """The gradient of `norm`: a tree like ``tree``, zeros on unregularized leaves."""
        return _masked_map(lambda w: self.alpha * self._gradient(w), self.mask, tree)


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
