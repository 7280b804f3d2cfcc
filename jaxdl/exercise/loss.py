"""The exercise's ``Optimization/Loss.py``: `CrossEntropyLoss` over probabilities.

forward = sum over the batch of -ln(y_hat[true class] + eps) with eps the float64 machine
epsilon (`jaxdl.cross_entropy`); backward = its gradient -label / (y_hat + eps), from
`jax.grad`.

Example:
    >>> loss = CrossEntropyLoss()
    >>> loss.forward(np.array([[0.5, 0.5]]), np.array([[1.0, 0.0]]))   # ln 2
    0.6931471805599...
"""

from __future__ import annotations

import jax
import numpy as np

from jaxdl.exercise._engine import as_array
from jaxdl.losses import cross_entropy

__all__ = ["CrossEntropyLoss"]

#: The exercise's epsilon, np.finfo(float).eps.
EPS = float(np.finfo(float).eps)


def _loss(prediction, label):
    return cross_entropy(prediction, label, eps=EPS)


_loss_jit = jax.jit(_loss)
_loss_gradient = jax.jit(jax.grad(_loss))


class CrossEntropyLoss:
    """Cross-entropy of probabilities and one-hot labels (a loss, not a layer)."""

    def __init__(self):
        self._prediction = None

    def _forward_array(self, prediction_tensor, label_tensor) -> jax.Array:
        self._prediction = as_array(prediction_tensor)
        return _loss_jit(self._prediction, as_array(label_tensor))

    def forward(self, prediction_tensor, label_tensor) -> float:
        """The summed loss of the batch; remembers the prediction for `backward`."""
        return float(self._forward_array(prediction_tensor, label_tensor))

    def _backward_array(self, label_tensor) -> jax.Array:
        if self._prediction is None:
            raise RuntimeError("CrossEntropyLoss.backward: call forward(prediction, label) first.")
        return _loss_gradient(self._prediction, as_array(label_tensor))

    def backward(self, label_tensor) -> np.ndarray:
        """-label / (prediction + eps), the gradient w.r.t. the last forward's prediction."""
        return np.array(self._backward_array(label_tensor))
