"""Sgd, SgdWithMomentum and Adam as optax gradient transformations.

Each constructor returns an `Optimizer`: an optax-compatible gradient transformation
(``init(params)``, ``update(grads, opt_state, params)``; usable in `optax.chain`,
`optax.MultiSteps`, ...) that also remembers its ``regularizer`` so the training step can
report the regularization loss. The update sequences are the exercise's exactly:

* Sgd: w <- w - lr * g.
* SgdWithMomentum: v <- momentum * v - lr * g; w <- w + v. ``momentum`` is the fraction of
  the previous velocity kept (the exercise's momentum_rate, PyTorch's momentum).
* Adam: m <- b1 m + (1 - b1) g; r <- b2 r + (1 - b2) g^2; bias-corrected by the step count k;
  w <- w - lr * m_hat / (sqrt(r_hat) + eps). ``beta1`` is the exercise's mu, ``beta2`` its rho.

With ``regularizer=``, each update also shrinks the current weights:
w <- w - lr * regularizer.gradient(w) + (the step from the data gradient alone); the
regularizer never enters momentum or Adam's moments (see `jaxdl.regularizers`). Which weights
is the model's declaration (`jaxdl.Layer.regularized`): ``update(grads, opt_state, params,
regularized=model)``, as `jaxdl.make_train_step` calls it.
``learning_rate`` may be a float or an optax schedule (a function of the step count).

Errors (at construction): TypeError for a hyperparameter that is not a real number (a string,
a bool); ValueError for a learning rate that is not finite and > 0, ``eps`` that is not finite
and > 0, and momentum or betas outside [0, 1).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxdl.core import tree_float_dtype
from jaxdl.validation import in_interval, learning_rate as check_learning_rate, positive_finite


class Optimizer(NamedTuple):
    """An optax gradient transformation plus the regularizer it applies (or None).

    Attributes:
        init: ``init(params) -> opt_state``.
        update: ``update(grads, opt_state, params=None) -> (updates, opt_state)``; add the
            updates to the params with `optax.apply_updates`.
        regularizer: the `L1Regularizer`/`L2Regularizer` applied by decoupled shrinkage.
    """

    init: Callable
    update: Callable
    regularizer: Any = None


class ShrinkState(NamedTuple):
    """Step count of `shrink_by_regularizer` (for learning-rate schedules)."""

    count: jax.Array


def shrink_by_regularizer(regularizer, learning_rate) -> optax.GradientTransformationExtraArgs:
    """Adds -learning_rate * regularizer.gradient(params) to the updates (needs params).

    Which params it shrinks is the regularizer's ``mask``, else the model's declarations:
    ``update(updates, state, params, regularized=model)`` with the model (a `jaxdl.Layer`) or
    `jaxdl.regularized_mask` of it, as `jaxdl.make_train_step` passes it (an optax extra
    argument, which `optax.chain` hands to the transformations that take it).
    """

    def init(params):
        del params
        return ShrinkState(count=jnp.zeros((), jnp.int32))

    def update(updates, state, params=None, *, regularized=None, **extra_args):
        del extra_args
        if params is None:
            raise ValueError(
                f"The optimizer with regularizer {regularizer!r} needs the current params: "
                f"call update(grads, opt_state, params)."
            )
        lr = learning_rate(state.count) if callable(learning_rate) else learning_rate
        shrink = regularizer.gradient(params, regularized)
        updates = jax.tree.map(lambda u, s: u - jnp.asarray(lr, s.dtype) * s, updates, shrink)
        return updates, ShrinkState(count=optax.safe_increment(state.count))

    return optax.GradientTransformationExtraArgs(init, update)


def _optimizer(step: optax.GradientTransformation, learning_rate, regularizer) -> Optimizer:
    if regularizer is not None:
        step = optax.chain(step, shrink_by_regularizer(regularizer, learning_rate))
    step = optax.with_extra_args_support(step)
    return Optimizer(step.init, step.update, regularizer)


def Sgd(learning_rate, *, regularizer=None) -> Optimizer:
    """Plain gradient descent: w <- w - learning_rate * g."""
    check_learning_rate("Sgd", learning_rate)
    return _optimizer(optax.scale_by_learning_rate(learning_rate), learning_rate, regularizer)


def SgdWithMomentum(learning_rate, momentum=0.9, *, regularizer=None) -> Optimizer:
    """Heavy-ball momentum: v <- momentum * v - learning_rate * g; w <- w + v.

    ``momentum`` in [0, 1) is the fraction of the velocity kept each step.
    """
    check_learning_rate("SgdWithMomentum", learning_rate)
    in_interval("SgdWithMomentum", "momentum", momentum, 0.0, 1.0)
    step = optax.chain(optax.scale_by_learning_rate(learning_rate), optax.trace(decay=momentum))
    return _optimizer(step, learning_rate, regularizer)


def Adam(learning_rate, beta1=0.9, beta2=0.999, eps=1e-8, *, regularizer=None) -> Optimizer:
    """Adam with bias correction; eps is added to sqrt(r_hat) (the exercise's 1e-8).

    ``beta1``/``beta2`` are the decay rates of the first and second moments (the exercise's
    mu and rho).
    """
    check_learning_rate("Adam", learning_rate)
    for name, beta in (("beta1", beta1), ("beta2", beta2)):
        in_interval("Adam", name, beta, 0.0, 1.0)
    positive_finite("Adam", "eps", eps)
    step = optax.chain(
        optax.scale_by_adam(b1=beta1, b2=beta2, eps=eps), optax.scale_by_learning_rate(learning_rate)
    )
    return _optimizer(step, learning_rate, regularizer)


def regularization_loss(optimizer, params, regularized=None) -> jax.Array:
    """The norm of ``optimizer.regularizer`` over ``params`` (0 without a regularizer).

    Args:
        optimizer: a `jaxdl.Optimizer` (or any optax transformation: no regularizer, 0).
        params: the params.
        regularized: the model (a `jaxdl.Layer`) or `jaxdl.regularized_mask` of it: which
            params the regularizer acts on (see `jaxdl.regularizers`).

    Returns:
        A scalar in the params' floating dtype.
    """
    regularizer = getattr(optimizer, "regularizer", None)
    if regularizer is None:
        return jnp.zeros((), tree_float_dtype(params))  # a float32 model's loss stays float32
    return regularizer.norm(params, regularized)
