"""`TrainState`: everything a training run carries from step to step, and its creation."""

from __future__ import annotations

import functools
import os
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxdl.core import init_layer, input_struct
from jaxdl.validation import floating_dtype


#: XLA options of the one-off initialization program (see `create_train_state`).
INIT_COMPILER_OPTIONS = {"xla_backend_optimization_level": 1}


def init_compiler_options(traced: bool = False) -> dict | None:
    """`INIT_COMPILER_OPTIONS`, unless ``XLA_FLAGS`` sets an optimization level (the user's wins)
    or the initialization is ``traced`` into a caller's program.

    Args:
        traced: True when `create_train_state` runs inside a trace (the caller's `jax.jit`,
            `jax.eval_shape`, `jax.vmap`, ...). JAX accepts compiler options only on a
            top-level `jax.jit`; inside a trace the initialization becomes part of the
            caller's program, which the caller compiles with its own options.
    """
    if traced or "--xla_backend_optimization_level" in os.environ.get("XLA_FLAGS", ""):
        return None
    return INIT_COMPILER_OPTIONS


class TrainState(NamedTuple):
    """Everything a training run carries from step to step (a pytree).

    Attributes:
        params: the trainable parameters.
        state: the layers' non-trainable state (batch-norm statistics, memorized states).
        opt_state: the optimizer's state.
        key: the `jax.random` key the next step splits for dropout.
        step: the number of steps taken (int32 scalar).
    """

    params: Any
    state: Any
    opt_state: Any
    key: jax.Array
    step: jax.Array


def create_train_state(model, optimizer, key, input_shape, dtype=jnp.float32, *, input_dtype=None) -> TrainState:
    """Initializes ``model`` for ``input_shape`` and ``optimizer`` for its params.

    The initialization runs as one compiled program (eagerly, every initializer call would
    compile on its own: seconds for LeNet on a CPU), compiled with XLA's backend optimization
    level 1 (`INIT_COMPILER_OPTIONS`; a level set in ``XLA_FLAGS`` is kept instead): it
    runs once, and level 1 compiles LeNet's
    initializers about 3x faster than the default level. The values are the default
    compilation's up to a rounding or two in some elements (LLVM contracts multiply-adds of
    the normal distribution's inverse error function differently; tests/test_training.py
    compares them). Called inside a trace (``jax.eval_shape(lambda: create_train_state(...))``
    for a checkpoint template, or under the caller's `jax.jit`), the initialization is traced
    into the caller's program without options of its own (`init_compiler_options`).

    Args:
        model: a layer (usually `jaxdl.Serial`).
        optimizer: a `jaxdl.Optimizer` or any optax gradient transformation.
        key: a `jax.random` key, or an int seed (``jax.random.key(seed)``).
        input_shape: the input shape including the batch dimension.
        dtype: the parameters' dtype, a floating-point one.
        input_dtype: the input's dtype when it is not ``dtype``, e.g. ``jnp.int32`` token ids
            for a model that starts with an `jaxdl.Embedding`: the initialization traces the
            layers with it (`jaxdl.core.init_layer`).

    Returns:
        The `TrainState` at step 0.

    Raises:
        TypeError: for a non-floating ``dtype`` (integer parameters cannot be trained), or an
            ``input_dtype`` that is not a dtype.
    """
    dtype = floating_dtype("create_train_state", dtype)
    if input_dtype is not None:
        input_dtype = input_struct("create_train_state", input_shape, dtype, input_dtype).dtype
    if isinstance(key, int) and not isinstance(key, bool):
        key = jax.random.key(key)
    init_key, train_key = jax.random.split(key)
    traced = isinstance(init_key, jax.core.Tracer)  # split is traced, so this holds in any caller's trace
    init = jax.jit(functools.partial(init_layer, model), static_argnums=(1, 2, 3),
                   compiler_options=init_compiler_options(traced))
    params, state = init(init_key, tuple(input_shape), dtype, input_dtype)
    return TrainState(params, state, optimizer.init(params), train_key, jnp.zeros((), jnp.int32))
