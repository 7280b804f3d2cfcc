"""The exercise's ``Optimization/Constraints.py``: L1 and L2 weight regularizers.

Thin wrappers of `jaxdl.regularizers` with the exercise's method names (no factor 1/2):

* ``L2_Regularizer(alpha)``: norm = alpha * sum(w^2), calculate_gradient = alpha * w.
* ``L1_Regularizer(alpha)``: norm = alpha * sum(|w|), calculate_gradient = alpha * sign(w).

Give one to an optimizer with ``optimizer.add_regularizer(regularizer)``: each update then
shrinks the weights by learning_rate * calculate_gradient(w) beside the optimizer's step.
As in the exercise every tensor the optimizer updates is regularized (a FullyConnected's
bias row, a Conv's bias, batch-norm's gamma and beta), unlike the core's default mask.

Example:
    >>> L1_Regularizer(2.0).calculate_gradient(np.array([-3.0, 0.5]))
    array([-2.,  2.])
"""

from __future__ import annotations

import functools

import jax
import numpy as np

from jaxdl import regularizers
from jaxdl.exercise._engine import as_array

__all__ = ["L1_Regularizer", "L2_Regularizer"]


def regularize_everything(path) -> bool:
    """The facade's regularizer mask: every leaf (the exercise shrinks every updated tensor)."""
    del path
    return True


@functools.partial(jax.jit, static_argnums=0)
def _norm(regularizer, tree):
    return regularizer.norm(tree)


@functools.partial(jax.jit, static_argnums=0)
def _gradient(regularizer, tree):
    return regularizer.gradient(tree)


class _Regularizer:
    _core_class: type

    def __init__(self, alpha):
        self.alpha = alpha

    @property
    def core(self) -> regularizers._Regularizer:
        """The `jaxdl.regularizers` regularizer this wraps (every leaf regularized)."""
        return self._core_class(float(self.alpha), mask=regularize_everything)

    def calculate_gradient(self, weights) -> np.ndarray:
        """The gradient of `norm` at ``weights`` (an array of their shape)."""
        return np.array(_gradient(self.core, as_array(weights)))

    def norm(self, weights) -> float:
        """The regularization loss of ``weights`` (an array or a tree of arrays)."""
        return float(_norm(self.core, jax.tree.map(as_array, weights)))

    def _norm_array(self, tree) -> jax.Array:
        return _norm(self.core, tree)

    def __repr__(self):
        return f"{type(self).__name__}({self.alpha!r})"


class L2_Regularizer(_Regularizer):  # noqa: N801 (the exercise's name)
    """L2 (weight decay): norm = alpha * sum(w^2), gradient = alpha * w."""

    _core_class = regularizers.L2Regularizer


class L1_Regularizer(_Regularizer):  # noqa: N801 (the exercise's name)
    """L1 (sparsity): norm = alpha * sum(|w|), gradient = alpha * sign(w)."""

    _core_class = regularizers.L1Regularizer
