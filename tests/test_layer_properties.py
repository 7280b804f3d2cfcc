"""Generic properties checked for every layer of the registry."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import jaxdl
from layer_registry import LAYER_CASES

IDS = [case[0] for case in LAYER_CASES]


def _init(layer, shape, dtype=jnp.float64, seed=0):
    params, state = layer.init(jax.random.key(seed), shape, dtype)
    x = jax.random.normal(jax.random.key(seed + 100), shape, dtype)
    return params, state, x


@pytest.mark.parametrize("name,layer,shape", LAYER_CASES, ids=IDS)
def test_output_shape_matches_apply(name, layer, shape):
    params, state, x = _init(layer, shape)
    for train in (False, True):
        y, _ = layer.apply(params, state, x, key=jax.random.key(1), train=train)
        assert y.shape == jaxdl.output_shape(layer, shape, jnp.float64)


@pytest.mark.parametrize("name,layer,shape", LAYER_CASES, ids=IDS)
def test_state_structure_is_preserved(name, layer, shape):
    params, state, x = _init(layer, shape)
    for train in (False, True):
        _, new_state = layer.apply(params, state, x, key=jax.random.key(1), train=train)
        assert jax.tree.structure(new_state) == jax.tree.structure(state)
        for old, new in zip(jax.tree.leaves(state), jax.tree.leaves(new_state)):
            assert old.shape == new.shape and old.dtype == new.dtype


@pytest.mark.parametrize("name,layer,shape", LAYER_CASES, ids=IDS)
def test_jit_equals_eager(name, layer, shape):
    params, state, x = _init(layer, shape)
    for train in (False, True):
        key = jax.random.key(3)
        eager = layer.apply(params, state, x, key=key, train=train)
        jitted = jax.jit(lambda p, s, x, k: layer.apply(p, s, x, key=k, train=train))(params, state, x, key)
        for a, b in zip(jax.tree.leaves(eager), jax.tree.leaves(jitted)):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name,layer,shape", LAYER_CASES, ids=IDS)
def test_deterministic_for_fixed_key(name, layer, shape):
    params_a, state_a, x = _init(layer, shape, seed=5)
    params_b, state_b, _ = _init(layer, shape, seed=5)
    for a, b in zip(jax.tree.leaves((params_a, state_a)), jax.tree.leaves((params_b, state_b))):
        np.testing.assert_array_equal(a, b)
    y1, _ = layer.apply(params_a, state_a, x, key=jax.random.key(9), train=True)
    y2, _ = layer.apply(params_a, state_a, x, key=jax.random.key(9), train=True)
    np.testing.assert_array_equal(y1, y2)


@pytest.mark.parametrize("name,layer,shape", LAYER_CASES, ids=IDS)
@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_gradients_match_finite_differences(name, layer, shape, train):
    params, state, x = _init(layer, shape)
    key = jax.random.key(7)

    def f(params, x):
        return layer.apply(params, state, x, key=key, train=train)[0]

    check_grads(f, (params, x), order=1, modes=["rev"], eps=1e-6, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name,layer,shape", LAYER_CASES, ids=IDS)
def test_vmap_over_an_extra_axis_equals_a_loop(name, layer, shape):
    params, state, _ = _init(layer, shape)
    xs = jax.random.normal(jax.random.key(11), (3, *shape), jnp.float64)
    batched = jax.vmap(lambda x: layer.apply(params, state, x)[0])(xs)
    looped = jnp.stack([layer.apply(params, state, x)[0] for x in xs])
    np.testing.assert_allclose(batched, looped, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name,layer,shape", LAYER_CASES, ids=IDS)
def test_float32_stays_float32(name, layer, shape):
    params, state, x = _init(layer, shape, dtype=jnp.float32)
    y, new_state = layer.apply(params, state, x, key=jax.random.key(1), train=True)
    assert y.dtype == jnp.float32
    for leaf in jax.tree.leaves(params):
        assert leaf.dtype == jnp.float32
