"""A layer's state keeps the dtypes it was initialized with, whatever the input's dtype.

The bug this closes: `BatchNormalization` initialized in float32 (the default) and fed float64
inputs (NumPy's default dtype, kept as float64 with ``jax_enable_x64``) returned float64
running statistics. The train state then changed dtype after the first step: the jitted step
compiled twice (about 4 s for a small conv net), a donated state no longer matched its
buffers, and checkpoints silently changed dtype. Every layer of the registry is checked, in
both directions (float32 state with float64 inputs, float64 state with float32 inputs), in
training and evaluation mode, abstractly (`jax.eval_shape`: nothing compiles).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxdl
from layer_registry import LAYER_CASES

IDS = [case[0] for case in LAYER_CASES]


@pytest.mark.parametrize("state_dtype, input_dtype", [(jnp.float32, jnp.float64), (jnp.float64, jnp.float32)],
                         ids=["float32_state_float64_input", "float64_state_float32_input"])
@pytest.mark.parametrize("name, layer, shape", LAYER_CASES, ids=IDS)
def test_apply_keeps_the_state_dtypes_whatever_the_input_dtype(name, layer, shape, state_dtype, input_dtype):
    params, state = jax.eval_shape(lambda key: layer.init(key, shape, state_dtype), jax.random.key(0))
    x = jax.ShapeDtypeStruct(shape, input_dtype)
    for train in (False, True):
        _, new_state = jax.eval_shape(
            lambda p, s, x: layer.apply(p, s, x, key=jax.random.key(1), train=train), params, state, x)
        assert jax.tree.structure(new_state) == jax.tree.structure(state), f"train={train}"
        changed = [(jax.tree_util.keystr(path), old.dtype, new.dtype) for (path, old), new in
                   zip(jax.tree_util.tree_leaves_with_path(state), jax.tree.leaves(new_state)) if old.dtype != new.dtype]
        assert not changed, f"{name} (train={train}) changed its state's dtypes: {changed}"


def test_a_float32_batch_norm_model_fed_float64_compiles_its_step_once():
    model = jaxdl.Serial(jaxdl.Conv(2, (3, 3)), jaxdl.BatchNormalization(), jaxdl.Flatten(), jaxdl.FullyConnected(3),
                         jaxdl.SoftMax())
    optimizer = jaxdl.Sgd(0.1)
    train_state = jaxdl.create_train_state(model, optimizer, 0, (4, 1, 5, 5))  # float32
    step = jaxdl.make_train_step(model, jaxdl.cross_entropy, optimizer)
    x = np.random.default_rng(0).normal(size=(4, 1, 5, 5))  # float64
    for _ in range(3):
        train_state, _ = step(train_state, x, np.array([0, 1, 2, 0]))
    assert step._cache_size() == 1
    assert {leaf.dtype for leaf in jax.tree.leaves(train_state.state) if jnp.issubdtype(leaf.dtype, jnp.floating)} \
        == {jnp.dtype(jnp.float32)}
