"""The exercise's ``Optimization/Optimizers.py``: stateful wrappers of `jaxdl.optimizers`.

Each object holds its own optimizer state (momentum velocity, Adam moments and step count),
created on the first `Optimizer.calculate_update` from the core optax optimizer of the same
name, so one instance must serve one tensor (the network deep-copies its optimizer for every
trainable layer). The update rules are the core's, i.e. the exercise's:

* ``Sgd(learning_rate)``: w <- w - lr * g.
* ``SgdWithMomentum(learning_rate, momentum_rate)``: v <- momentum_rate * v - lr * g; w <- w + v.
* ``Adam(learning_rate, mu, rho)``: mu and rho are the decay rates of the first and second
  moments (beta1, beta2), bias-corrected by the step count, epsilon 1e-8.
* With `Optimizer.add_regularizer`: w <- w - lr * regularizer.calculate_gradient(w) + the step
  above, computed from the data gradient alone (decoupled shrinkage).

Example:
    >>> Sgd(1.0).calculate_update(1.0, 1.0)
    0.0
"""

from __future__ import annotations

import functools

import jax
import numpy as np
import optax

from jaxdl import optimizers as core
from jaxdl.exercise._engine import as_array
from jaxdl.exercise.constraints import _Regularizer

__all__ = ["Optimizer", "Sgd", "SgdWithMomentum", "Adam"]


@functools.lru_cache(maxsize=None)
def core_optimizer(kind: str, hyperparameters: tuple, regularizer) -> core.Optimizer:
    """The core optimizer for a configuration, built once so its jitted steps are shared."""
    return getattr(core, kind)(*hyperparameters, regularizer=regularizer)


@functools.partial(jax.jit, static_argnums=0)
def _step(optimizer, opt_state, params, grads):
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state


def _signature(tree) -> tuple:
    leaves, treedef = jax.tree.flatten(tree)
    return str(treedef), tuple(np.shape(leaf) for leaf in leaves)


class Optimizer:
    """Base class: the ``regularizer`` member and `add_regularizer`.

    Attributes:
        regularizer: an `L1_Regularizer`/`L2_Regularizer` or None (the default).
    """

    def __init__(self):
        self.regularizer = None
        self._opt_state = None
        self._state_signature = None

    def add_regularizer(self, regularizer) -> None:
        """Shrinks the weights by learning_rate * regularizer.calculate_gradient(w) each update.

        Raises:
            TypeError: when ``regularizer`` is not an `L1_Regularizer` or `L2_Regularizer`.
        """
        if not isinstance(regularizer, _Regularizer):
            raise TypeError(f"{type(self).__name__}.add_regularizer: expected a regularizer such as "
                            f"L2_Regularizer(4e-4) or L1_Regularizer(4e-4), got {type(regularizer).__name__} "
                            f"{regularizer!r:.60}.")
        self.regularizer = regularizer
        self._opt_state = self._state_signature = None

    def _hyperparameters(self) -> tuple:
        raise NotImplementedError

    @property
    def core(self) -> core.Optimizer:
        """The `jaxdl.optimizers` optimizer (optax transformation) this object steps."""
        regularizer = None if self.regularizer is None else self.regularizer.core
        return core_optimizer(type(self).__name__, self._hyperparameters(), regularizer)

    def _prepared_state(self, params):
        """(core optimizer, its state for ``params``), creating the state on first use."""
        optimizer = self.core
        # The state's structure depends on the params and on whether a regularizer is chained.
        signature = (self.regularizer is None, _signature(params))
        if signature != self._state_signature:
            self._opt_state = optimizer.init(params)
            self._state_signature = signature
        return optimizer, self._opt_state

    def _update(self, params, grads):
        optimizer, opt_state = self._prepared_state(params)
        params, self._opt_state = _step(optimizer, opt_state, params, grads)
        return params

    def calculate_update(self, weight_tensor, gradient_tensor):
        """The updated weights; a float for float inputs, else a NumPy array of their shape."""
        updated = self._update(as_array(weight_tensor), as_array(gradient_tensor))
        return float(updated) if np.ndim(weight_tensor) == 0 else np.array(updated)

    def __repr__(self):
        args = ", ".join(repr(v) for v in self._hyperparameters())
        return f"{type(self).__name__}({args})"


class Sgd(Optimizer):
    """w <- w - learning_rate * g."""

    def __init__(self, learning_rate):
        super().__init__()
        self.learning_rate = learning_rate
        _ = self.core  # builds (and so validates) the core optimizer now

    def _hyperparameters(self):
        return (float(self.learning_rate),)


class SgdWithMomentum(Optimizer):
    """v <- momentum_rate * v - learning_rate * g; w <- w + v (v starts at 0)."""

    def __init__(self, learning_rate, momentum_rate):
        super().__init__()
        self.learning_rate = learning_rate
        self.momentum_rate = momentum_rate
        _ = self.core  # builds (and so validates) the core optimizer now

    def _hyperparameters(self):
        return (float(self.learning_rate), float(self.momentum_rate))


class Adam(Optimizer):
    """Adam; ``mu`` and ``rho`` are the first and second moment decay rates (beta1, beta2)."""

    def __init__(self, learning_rate, mu, rho):
        super().__init__()
        self.learning_rate = learning_rate
        self.mu = mu
        self.rho = rho
        _ = self.core  # builds (and so validates) the core optimizer now

    def _hyperparameters(self):
        return (float(self.learning_rate), float(self.mu), float(self.rho))
