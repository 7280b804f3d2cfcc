"""The jitted functions every facade layer runs: forward with a stored VJP, backward.

A facade layer describes its computation as a hashable ``fn(params, x, extra) -> (y, aux)``
(a core layer's ``apply`` in a fixed mode, or the dropout mask). `forward_with_vjp` runs it
under `jax.vjp` inside one `jax.jit` and returns the VJP (a pytree: the residuals are its
leaves), so `backward` needs no second forward pass; `backward_and_update` is a layer's
backward followed by its optimizer's step (the exercise's layer-by-layer API). All are
compiled once per ``fn`` and input shapes: layers are frozen dataclasses compared by value,
so two facade layers of the same configuration share their compiled code. The network's
training iterations do not run here: they go through the core training step with these
``fn`` composed (`jaxdl.exercise._network_step`).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxdl.core import Layer
from jaxdl.layers.dropout import apply_dropout_mask

#: The facade's floating dtype (the exercise computes in NumPy float64).
DTYPE = jnp.float64


def as_array(x):
    """``x`` as a float64 array to pass to a jitted function.

    A float64 jax array is returned as it is; anything else becomes a NumPy float64 array
    (no copy if it already is one): `jax.jit` takes NumPy arguments faster than
    `jnp.asarray` converts them.
    """
    if isinstance(x, jax.Array):
        return x if x.dtype == DTYPE else x.astype(DTYPE)
    return np.asarray(x, dtype=np.float64)


def to_device(x) -> jax.Array:
    """``x`` as a float64 jax array (for parameters, which are passed to every call)."""
    return jnp.asarray(as_array(x))


def select_regularized(selector, params):
    """The part of a layer's ``params`` its regularization loss covers.

    ``selector`` is the layer's ``_regularized``: None (nothing), "all" (every param) or the
    key of one param (Conv: "weights", not the bias).
    """
    if selector is None:
        return None
    return params if selector == "all" else params[selector]


@dataclasses.dataclass(frozen=True)
class LayerFn:
    """``layer.apply`` in training or evaluation mode, as ``fn(params, x, state)``."""

    layer: Layer
    train: bool

    def __call__(self, params, x, state):
        return self.layer.apply(params, state, x, train=self.train)


@dataclasses.dataclass(frozen=True)
class DropoutFn:
    """`apply_dropout_mask` with a given keep mask, as ``fn(params, x, keep)``."""

    rate: float

    def __call__(self, params, x, keep):
        del params
        return apply_dropout_mask(x, keep, self.rate), {}


@functools.partial(jax.jit, static_argnums=0)
def forward(fn, params, x, extra):
    """``fn(params, x, extra)`` -> (y, aux), compiled."""
    return fn(params, x, extra)


@functools.partial(jax.jit, static_argnums=0)
def forward_with_vjp(fn, params, x, extra):
    """(y, aux, vjp) where ``vjp(error) -> (params gradient, input gradient)``."""
    y, vjp, aux = jax.vjp(lambda p, x: fn(p, x, extra), params, x, has_aux=True)
    return y, aux, vjp


@jax.jit
def backward(vjp, error):
    """(params gradient, input gradient) for the output gradient ``error``."""
    return vjp(error.astype(DTYPE))


@functools.partial(jax.jit, static_argnums=2)
def backward_and_update(vjp, error, optimizer, opt_state, params):
    """`backward` followed by one step of the core ``optimizer`` on ``params``, fused.

    Returns (params gradient, input gradient, new params, new optimizer state).
    """
    grads, dx = vjp(error.astype(DTYPE))
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return grads, dx, optax.apply_updates(params, updates), opt_state
