"""`TrainState`: everything a training run carries from step to step, and its creation."""

from __future__ import annotations

import functools
import os
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxdl.core import init_layer, input_struct
from jaxdl.validation import floating_dtype


#: XLA options of the one-off initialization program (see `create_train_state`): backend
#: optimization level 1, and XLA:CPU's elemental emitter instead of its MLIR fusion emitters.
#: LeNet's initializers (batch 128, float32) compiled in 3.9 s at the default level, 1.27 s at
#: level 1 and 0.70 s at level 1 without the fusion emitters, one core of an AMD EPYC Zen 4
#: (family 25, model 17), jaxlib 0.10.2, values bit-identical to the default compilation's
#: (benchmarks/RESULTS.md, "Issue 24 on AMD EPYC Zen 4"). Options the jaxlib does not know are
#: left out (`init_compiler_options`).
INIT_COMPILER_OPTIONS = {"xla_backend_optimization_level": 1, "xla_cpu_use_fusion_emitters": False}


def init_compiler_options(traced: bool = False) -> dict | None:
    """`INIT_COMPILER_OPTIONS` that ``XLA_FLAGS`` does not set (the user's flags win) and this
    jaxlib knows; None when none is left or the initialization is ``traced``.

    Args:
        traced: True when `create_train_state` runs inside a trace (the caller's `jax.jit`,
            `jax.eval_shape`, `jax.vmap`, ...). JAX accepts compiler options only on a
            top-level `jax.jit`; inside a trace the initialization becomes part of the
            caller's program, which the caller compiles with its own options.
    """
    if traced:
        return None
    flags = os.environ.get("XLA_FLAGS", "")
    options = {name: value for name, value in INIT_COMPILER_OPTIONS.items()
               if f"--{name}" not in flags and _compiler_option_known(name, value)}
    return options or None


@functools.lru_cache(maxsize=None)
def _compiler_option_known(name: str, value) -> bool:
    """Whether XLA accepts the compile option ``name=value`` (a jaxlib rejects names it does
    not know): compiles a one-addition program with it, once per process (~30 ms)."""
    try:
        jax.jit(lambda x: x + 1, compiler_options={name: value}).lower(1.0).compile()
    except jax.errors.JaxRuntimeError:
        return False
    return True


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
    level 1 and without XLA:CPU's fusion emitters (`INIT_COMPILER_OPTIONS`; what ``XLA_FLAGS``
    sets is kept instead): it runs once, and these options compile LeNet's initializers about
    5x faster than the default ones. The optimizer's state is built in the same program. The
    values are the default compilation's up to a rounding or two in some elements (LLVM
    contracts multiply-adds of the normal distribution's inverse error function differently;
    tests/test_training.py compares them). Called inside a trace
    (``jax.eval_shape(lambda: create_train_state(...))`` for a checkpoint template, or under
    the caller's `jax.jit`), the initialization is traced into the caller's program without
    options of its own (`init_compiler_options`).

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
    init = jax.jit(functools.partial(_initialize, model, optimizer), static_argnums=(1, 2, 3),
                   compiler_options=init_compiler_options(traced))
    params, state, opt_state = init(init_key, tuple(input_shape), dtype, input_dtype)
    return TrainState(params, state, opt_state, train_key, jnp.zeros((), jnp.int32))


def _initialize(model, optimizer, key, input_shape, dtype, input_dtype):
    """The model's params and state and the optimizer's state for them, in one program (the
    optimizer's zeros would otherwise compile one small program per parameter shape)."""
    params, state = init_layer(model, key, input_shape, dtype, input_dtype)
    return params, state, optimizer.init(params)
