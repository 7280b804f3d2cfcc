"""The exercise's network as one core model, optimizer and regularizer for the core step.

`NeuralNetwork.train` (`jaxdl.exercise.network`) runs every iteration through
`jaxdl.training.make_train_step`, the library's one training-step definition. This module
maps the facade's list of layers onto what that step takes:

* the model: `LayerChain`, a core `Layer` whose ``apply(params, state, x)`` runs each facade
  layer's ``fn`` (`jaxdl.exercise._engine`, in its training or evaluation mode) in order.
  ``params`` is the tuple of the layers' params; ``state`` the tuple of their extra
  arguments (batch-norm statistics, a memorized recurrent state, a dropout keep mask drawn
  from NumPy's global generator in layer order); the new state the tuple of their new states.
* the optimizer: `per_layer`, one optax transformation over that tuple. It steps layer i
  with layer i's own core optimizer and state (the network deep-copies the exercise's
  optimizer into every trainable layer; a layer without one keeps its params) and records
  the gradients it was given, which the facade shows as ``gradient_weights``.
* the regularizer: `LayerRegularizers`, whose ``norm(params)`` sums each layer's optimizer's
  regularizer over the params that layer regularizes (its ``_regularized``). It is the
  combined optimizer's ``regularizer``, so the core step reports data loss + regularization
  loss, as the exercise's network does. (The shrinkage itself is in each layer's optimizer.)
* the loss: the exercise's cross-entropy with its own gradient
  (`jaxdl.exercise.loss.course_cross_entropy`), the same function `CrossEntropyLoss` runs.

`compiled_step` builds the step once per configuration (fns, optimizers and regularizers are
hashable values), so repeated ``train`` calls and networks of the same configuration share one
compilation per input shape.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxdl import optimizers as core_optimizers
from jaxdl.core import Layer
from jaxdl.exercise._engine import DTYPE, select_regularized
from jaxdl.exercise.loss import course_cross_entropy
from jaxdl.training import TrainState, make_train_step
from jaxdl.validation import without_value_checks

__all__ = ["LayerChain", "LayerRegularizers", "PerLayerState", "compiled_step", "per_layer"]


@dataclasses.dataclass(frozen=True)
class LayerChain(Layer):
    """The facade layers' functions applied in order, as one core layer.

    Attributes:
        fns: each layer's ``fn(params, x, extra) -> (y, new_state)``.
    """

    fns: tuple

    def init(self, key, input_shape, dtype=None):
        """Not available: the params and state come from the facade layers."""
        raise TypeError("LayerChain has no init: its params and state are the facade layers' own.")

    def apply(self, params, state, x, *, key=None, train=False):
        """(output, per-layer new states); ``params`` and ``state`` are per-layer tuples."""
        del key, train  # each fn has its mode built in; dropout masks come in the state
        new_states = []
        for fn, layer_params, extra in zip(self.fns, params, state):
            x, new_state = fn(layer_params, x, extra)
            new_states.append(new_state)
        return x, tuple(new_states)


class PerLayerState(NamedTuple):
    """The state of `per_layer`.

    Attributes:
        inner: each layer's optimizer state (None for a layer without an optimizer).
        gradients: the per-layer gradients of the last update (written, never read).
    """

    inner: tuple
    gradients: Any


def per_layer(optimizers: tuple) -> optax.GradientTransformationExtraArgs:
    """One optax transformation over a tuple of per-layer params.

    Layer i's params are stepped by ``optimizers[i]`` (any optax transformation) with its own
    state; where ``optimizers[i]`` is None the update is zero. The new state also holds the
    gradients of the update (`PerLayerState.gradients`).
    """

    def init(params):
        inner = tuple(None if opt is None else opt.init(p) for opt, p in zip(optimizers, params))
        return PerLayerState(inner, jax.tree.map(jnp.zeros_like, params))

    def update(grads, state, params=None, **extra_args):
        del extra_args
        params = (None,) * len(optimizers) if params is None else params
        updates, inner = [], []
        for opt, layer_grads, layer_state, layer_params in zip(optimizers, grads, state.inner, params):
            if opt is None:
                layer_updates = jax.tree.map(jnp.zeros_like, layer_grads)
            else:
                layer_updates, layer_state = opt.update(layer_grads, layer_state, layer_params)
            updates.append(layer_updates)
            inner.append(layer_state)
        return tuple(updates), PerLayerState(tuple(inner), grads)

    return optax.GradientTransformationExtraArgs(init, update)


@dataclasses.dataclass(frozen=True)
class LayerRegularizers:
    """The exercise network's regularization loss over per-layer params.

    Attributes:
        entries: per layer, (core regularizer, selector) or None; the selector is the
            layer's ``_regularized`` (see `jaxdl.exercise._engine.select_regularized`).
    """

    entries: tuple

    def norm(self, params, regularized=None) -> jax.Array:
        """The sum over the layers of their regularizer's norm of their selected params.

        ``regularized`` (the core step's `jaxdl.regularized_mask`) is ignored: each layer's
        selector chooses, as the exercise does.
        """
        del regularized
        total = jnp.zeros((), DTYPE)
        for entry, layer_params in zip(self.entries, params):
            if entry is not None:
                regularizer, selector = entry
                total = total + regularizer.norm(select_regularized(selector, layer_params))
        return total


@functools.lru_cache(maxsize=64)
def compiled_step(fns: tuple, optimizers: tuple, regularizers: tuple) -> Callable:
    """The core training step (`jaxdl.training.make_train_step`) for one network configuration.

    Args:
        fns: each layer's ``fn`` (from its ``_call``).
        optimizers: each layer's core optimizer, or None (no update).
        regularizers: each layer's (core regularizer, selector), or None.

    Returns:
        ``step(params, extras, opt_states, x, labels) -> (params, states, opt_state, loss)``,
        jitted, all per layer but the reported loss; ``opt_state`` is a `PerLayerState` (the
        optimizer states and the gradients). It runs the core step on a `TrainState` whose
        key and step count are constants: the chain draws no randomness (dropout masks come
        from NumPy) and nothing reads the count, so the compiled program drops the key's
        split, and the metrics other than the loss.
    """
    transformation = per_layer(optimizers)
    regularizer = None if all(entry is None for entry in regularizers) else LayerRegularizers(regularizers)
    optimizer = core_optimizers.Optimizer(transformation.init, transformation.update, regularizer)
    # Without the loss's checkify checks: nobody checkifies this step, and as JAX effects they
    # would send every call through JAX's slow dispatch (`jaxdl.validation.without_value_checks`).
    core_step = without_value_checks(make_train_step(LayerChain(fns), course_cross_entropy, optimizer, jit=False))

    @jax.jit
    def step(params, extras, opt_states, x, labels):
        train_state = TrainState(params, extras, PerLayerState(opt_states, None), jax.random.key(0),
                                 jnp.zeros((), jnp.int32))
        train_state, metrics = core_step(train_state, x, labels)
        return train_state.params, train_state.state, train_state.opt_state, metrics["loss"]

    return step
