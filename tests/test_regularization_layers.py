"""Dropout and BatchNormalization semantics (exercise 5.13, 5.14)."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxdl


# ---------------------------------------------------------------- dropout
def dropout(rate, x, key=jax.random.key(0), train=True):
    return jaxdl.Dropout(rate).apply({}, {}, jnp.asarray(x), key=key, train=train)[0]


@pytest.mark.parametrize("rate,scale", [(0.75, 4.0), (0.25, 4 / 3)])
def test_dropout_training_scales_survivors_and_keeps_the_mean(rate, scale):
    y = np.asarray(dropout(rate, np.ones((10000, 10))))
    assert y.min() == 0.0
    np.testing.assert_allclose(y.max(), scale, rtol=1e-12)
    assert set(np.unique(y)) == {0.0, y.max()}
    assert abs(y.mean(axis=0).sum() / 10 - 1) < 0.05
    assert abs((y == 0).mean() - rate) < 0.01


def test_dropout_is_identity_in_evaluation_without_a_key():
    x = np.random.default_rng(0).normal(size=(5, 3))
    np.testing.assert_array_equal(jaxdl.Dropout(0.5).apply({}, {}, jnp.asarray(x))[0], x)


def test_dropout_without_key_in_training_shows_the_call_to_make():
    with pytest.raises(ValueError, match=r"needs a key.*key=jax.random.key\(seed\)"):
        jaxdl.Dropout(0.5).apply({}, {}, jnp.ones(3), train=True)


def test_dropout_rate_zero_is_identity_and_rate_one_gives_zeros_without_nan():
    x = jnp.asarray(np.random.default_rng(0).normal(size=(5, 3)))
    np.testing.assert_array_equal(dropout(0.0, x), x)
    np.testing.assert_array_equal(dropout(1.0, x), 0.0)
    grad = jax.grad(lambda v: jnp.sum(dropout(1.0, v)))(x)
    assert np.all(np.isfinite(grad)) and np.all(grad == 0)


def test_dropout_new_key_gives_new_mask_and_gradient_follows_the_mask():
    x = jnp.ones((100, 10))
    a, b = dropout(0.5, x, jax.random.key(1)), dropout(0.5, x, jax.random.key(2))
    assert not np.array_equal(a, b)
    grad = jax.grad(lambda v: jnp.sum(dropout(0.5, v, jax.random.key(1))))(x)
    np.testing.assert_array_equal(grad == 0, a == 0)
    assert grad.max() == 2.0 and grad.min() == 0.0


@pytest.mark.parametrize("rate", [-0.1, 1.5])
def test_dropout_rejects_rates_outside_unit_interval(rate):
    with pytest.raises(ValueError, match="drop probability"):
        jaxdl.Dropout(rate)


def test_serial_needs_a_key_only_when_a_layer_draws_randomness():
    model = jaxdl.Serial(jaxdl.FullyConnected(3), jaxdl.Dropout(0.5))
    params, state = model.init(jax.random.key(0), (2, 4))
    model.apply(params, state, jnp.ones((2, 4)))  # evaluation: no key
    with pytest.raises(ValueError, match="needs a key"):
        model.apply(params, state, jnp.ones((2, 4)), train=True)
    plain = jaxdl.Serial(jaxdl.FullyConnected(3))
    plain.apply(*plain.init(jax.random.key(0), (2, 4)), jnp.ones((2, 4)), train=True)


# ---------------------------------------------------------------- batch normalization
def channel_moments(x):
    """The exercise's _channel_moments: channels on axis 1, everything else averaged."""
    x = np.moveaxis(np.asarray(x), 1, -1).reshape(-1, x.shape[1])
    return x.mean(axis=0), x.var(axis=0)


def bn(x, *, eps=1e-12, decay=0.8):
    layer = jaxdl.BatchNormalization(decay=decay, eps=eps)
    params, state = layer.init(jax.random.key(0), x.shape, jnp.float64)
    return layer, params, state


@pytest.fixture
def vector_input():
    return jnp.asarray(np.abs(np.random.default_rng(0).uniform(size=(200, 18))))


@pytest.fixture
def image_input():
    return jnp.asarray(np.random.default_rng(0).uniform(-1, 1, size=(200, 2, 3, 3)))


@pytest.mark.parametrize("fixture", ["vector_input", "image_input"])
def test_batch_norm_training_normalizes_each_channel(fixture, request):
    x = request.getfixturevalue(fixture)
    layer, params, state = bn(x)
    y, _ = layer.apply(params, state, x, train=True)
    assert y.shape == x.shape
    mean, var = channel_moments(y)
    np.testing.assert_allclose(mean, 0, atol=1e-7)
    np.testing.assert_allclose(var, 1, atol=1e-7)


@pytest.mark.parametrize("fixture", ["vector_input", "image_input"])
def test_batch_norm_test_phase_after_one_batch_uses_its_statistics(fixture, request):
    x = request.getfixturevalue(fixture)
    layer, params, state = bn(x)
    _, state = layer.apply(params, state, x, train=True)
    mean, var = channel_moments(x)
    np.testing.assert_allclose(state["mean"], mean, rtol=1e-12)
    np.testing.assert_allclose(state["var"], var, rtol=1e-12)
    y, _ = layer.apply(params, state, jnp.zeros_like(x), train=False)
    out_mean, out_var = channel_moments(y)
    np.testing.assert_allclose(out_mean, -mean / np.sqrt(var), rtol=1e-7)
    np.testing.assert_allclose(out_var, 0, atol=1e-14)


@pytest.mark.parametrize("fixture", ["vector_input", "image_input"])
def test_batch_norm_training_uses_batch_statistics_not_running_ones(fixture, request):
    x = request.getfixturevalue(fixture)
    layer, params, state = bn(x)
    _, state = layer.apply(params, state, x, train=True)
    y, _ = layer.apply(params, state, jnp.zeros_like(x), train=True)
    np.testing.assert_array_equal(y, 0.0)  # a constant batch normalizes to beta = 0


def test_batch_norm_running_statistics_are_a_moving_average(vector_input):
    layer, params, state = bn(vector_input, decay=0.8)
    second = vector_input * 2 + 1
    _, state = layer.apply(params, state, vector_input, train=True)
    _, state = layer.apply(params, state, second, train=True)
    m1, v1 = channel_moments(vector_input)
    m2, v2 = channel_moments(second)
    np.testing.assert_allclose(state["mean"], 0.8 * m1 + 0.2 * m2, rtol=1e-12)
    np.testing.assert_allclose(state["var"], 0.8 * v1 + 0.2 * v2, rtol=1e-12)
    assert int(state["count"]) == 2


def test_batch_norm_evaluation_leaves_state_bit_identical(image_input):
    layer, params, state = bn(image_input)
    _, state = layer.apply(params, state, image_input, train=True)
    _, after = jax.jit(lambda p, s, x: layer.apply(p, s, x))(params, state, image_input * 3)
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(after)):
        np.testing.assert_array_equal(a, b)


def test_batch_norm_initializes_gamma_one_beta_zero():
    params, state = jaxdl.BatchNormalization().init(jax.random.key(0), (4, 3, 5, 5))
    np.testing.assert_array_equal(params["gamma"], 1.0)
    np.testing.assert_array_equal(params["beta"], 0.0)
    assert int(state["count"]) == 0


def test_batch_norm_statistics_are_at_least_float32():
    layer = jaxdl.BatchNormalization()
    params, state = layer.init(jax.random.key(0), (8, 3), jnp.bfloat16)
    assert state["mean"].dtype == jnp.float32
    x = jnp.asarray(np.random.default_rng(0).normal(100, 1, size=(8, 3)), jnp.bfloat16)
    y, new_state = layer.apply(params, state, x, train=True)
    assert y.dtype == jnp.bfloat16 and new_state["mean"].dtype == jnp.float32
    np.testing.assert_allclose(new_state["mean"], np.asarray(x, np.float32).mean(0), rtol=1e-6)


def test_batch_norm_channel_mismatch_is_a_clear_error():
    layer = jaxdl.BatchNormalization()
    params, state = layer.init(jax.random.key(0), (4, 3))
    with pytest.raises(ValueError, match=r"BatchNormalization.*3 channels.*\(4, 5\)"):
        layer.apply(params, state, jnp.ones((4, 5)))


@pytest.mark.parametrize("kwargs", [{"decay": 1.0}, {"decay": -0.1}, {"eps": -1.0}])
def test_batch_norm_rejects_bad_hyperparameters(kwargs):
    with pytest.raises(ValueError, match="BatchNormalization"):
        jaxdl.BatchNormalization(**kwargs)


def test_batch_norm_gradient_matches_exercise_closed_form(vector_input):
    """The input gradient equals the exercise's compute_bn_gradients formula."""
    x = np.asarray(vector_input)
    error = np.random.default_rng(1).normal(size=x.shape)
    gamma = np.random.default_rng(2).uniform(0.5, 1.5, size=18)
    layer = jaxdl.BatchNormalization(eps=1e-12)
    state = layer.init(jax.random.key(0), x.shape, jnp.float64)[1]
    params = {"gamma": jnp.asarray(gamma), "beta": jnp.zeros(18)}
    _, vjp = jax.vjp(lambda v: layer.apply(params, state, v, train=True)[0], jnp.asarray(x))
    mean, var, n, eps = x.mean(0), x.var(0), x.shape[0], 1e-12
    norm_grad = error * gamma
    var_grad = np.sum(norm_grad * (x - mean) * -0.5 * (var + eps) ** -1.5, axis=0)
    mean_grad = np.sum(-norm_grad / np.sqrt(var + eps), axis=0) + var_grad * np.sum(-2 * (x - mean), axis=0) / n
    expected = norm_grad / np.sqrt(var + eps) + var_grad * 2 * (x - mean) / n + mean_grad / n
    np.testing.assert_allclose(vjp(jnp.asarray(error))[0], expected, rtol=1e-6, atol=1e-8)


# ------------------------------------------- batch normalization: the channels-last formulation
def channels_first_batch_norm(params, state, x, *, decay, eps, train):
    """The layer's earlier formulation: statistics over axes (0, 2, ...), per-channel broadcasts on axis 1."""
    axes = (0,) + tuple(range(2, x.ndim))
    per_channel = (1, -1) + (1,) * (x.ndim - 2)
    if train:
        mean = jnp.mean(x, axis=axes)
        var = jnp.mean(jnp.square(x - mean.reshape(per_channel)), axis=axes)
        first = state["count"] == 0
        new_mean = jnp.where(first, mean, decay * state["mean"] + (1 - decay) * mean)
        new_var = jnp.where(first, var, decay * state["var"] + (1 - decay) * var)
    else:
        mean, var, new_mean, new_var = state["mean"], state["var"], state["mean"], state["var"]
    inv = params["gamma"] / jnp.sqrt(var + eps)
    y = x * inv.reshape(per_channel) + (params["beta"] - mean * inv).reshape(per_channel)
    return y, (new_mean, new_var)


@pytest.fixture(scope="module")
def bn_formulations():
    """(layer output and new statistics, the same from the channels-first reference, VJP of each),
    jitted once per input shape and dtype."""
    layer = jaxdl.BatchNormalization(decay=0.8, eps=1e-5)

    def ours(params, state, x, train):
        y, new_state = layer.apply(params, state, x, train=train)
        return y, (new_state["mean"], new_state["var"])

    def reference(params, state, x, train):
        return channels_first_batch_norm(params, state, x, decay=0.8, eps=1e-5, train=train)

    def with_vjp(function):
        def run(params, state, x, cotangent, train):
            out, vjp = jax.vjp(lambda p, v: function(p, state, v, train)[0], params, x)
            return function(params, state, x, train), vjp(cotangent)
        return jax.jit(run, static_argnums=4)

    return layer, with_vjp(ours), with_vjp(reference)


@pytest.mark.parametrize("dtype,rtol", [(jnp.float64, 1e-12), (jnp.float32, 2e-5)])
@pytest.mark.parametrize("shape", [(6, 4, 5, 3), (7, 3, 8), (9, 5)])
@pytest.mark.parametrize("train,count", [(True, 0), (True, 3), (False, 3)])
def test_batch_norm_equals_the_channels_first_formulation(bn_formulations, shape, dtype, rtol, train, count):
    """Normalizing channels-last (what lets XLA keep a convolution's layout) changes nothing
    but float rounding: outputs, running statistics and the gradients for x, gamma and beta."""
    layer, ours, reference = bn_formulations
    rng = np.random.default_rng(sum(shape))
    x = jnp.asarray(rng.normal(2.0, 3.0, size=shape), dtype)
    cotangent = jnp.asarray(rng.normal(size=shape), dtype)
    params, state = layer.init(jax.random.key(0), shape, dtype)
    channels = shape[1]
    params = {"gamma": jnp.asarray(rng.uniform(0.5, 1.5, channels), dtype),
              "beta": jnp.asarray(rng.normal(size=channels), dtype)}
    state = {"mean": jnp.asarray(rng.normal(size=channels), dtype),
             "var": jnp.asarray(rng.uniform(0.5, 2.0, channels), dtype), "count": jnp.asarray(count, jnp.int32)}
    (got, got_grads), (want, want_grads) = (f(params, state, x, cotangent, train) for f in (ours, reference))
    assert got[0].dtype == dtype
    for a, b in zip(jax.tree.leaves((got, got_grads)), jax.tree.leaves((want, want_grads))):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol)


def test_batch_norm_image_gradient_matches_finite_differences():
    """float64, (batch, channels, y, x) in training mode: every input's directional derivative."""
    layer = jaxdl.BatchNormalization()
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.normal(size=(4, 3, 2, 3)))
    params = {"gamma": jnp.asarray(rng.uniform(0.5, 1.5, 3)), "beta": jnp.asarray(rng.normal(size=3))}
    state = layer.init(jax.random.key(0), x.shape, jnp.float64)[1]
    weights = jnp.asarray(rng.normal(size=x.shape))

    def loss(p, v):
        return jnp.sum(jnp.sin(layer.apply(p, state, v, train=True)[0]) * weights)

    grads = jax.jit(jax.grad(loss, argnums=(0, 1)))(params, x)
    direction = jnp.asarray(rng.normal(size=x.shape))
    h = 1e-6
    numeric = (loss(params, x + h * direction) - loss(params, x - h * direction)) / (2 * h)
    np.testing.assert_allclose(jnp.vdot(grads[1], direction), numeric, rtol=1e-7)
    for name in ("gamma", "beta"):
        step = {**params, name: params[name] + h}
        back = {**params, name: params[name] - h}
        np.testing.assert_allclose(jnp.sum(grads[0][name]), (loss(step, x) - loss(back, x)) / (2 * h), rtol=1e-7)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the layouts XLA:CPU chooses")
def test_conv_batch_norm_chain_keeps_the_convolution_layout_on_cpu():
    """Conv -> BatchNormalization -> ReLU -> Conv, trained: XLA:CPU computes the convolutions
    channels-last; the normalization between them must not make it write a map out in
    (batch, channels, y, x) order (the earlier channels-first statistics did: 9 such copies of
    (batch, channels, y, x) maps in the MNIST ResNet's step, benchmarks/RESULTS_models.md)."""
    model = jaxdl.Serial(jaxdl.Conv(8, (3, 3), fast_paths=False), jaxdl.BatchNormalization(), jaxdl.ReLU(),
                         jaxdl.Conv(8, (3, 3), fast_paths=False), jaxdl.BatchNormalization())
    params, state = model.init(jax.random.key(0), (16, 8, 6, 6), jnp.float32)
    x = jnp.ones((16, 8, 6, 6), jnp.float32)

    def loss(p):
        return jnp.sum(model.apply(p, state, x, train=True)[0] ** 2)

    hlo = jax.jit(jax.grad(loss)).lower(params).compile().as_text()
    channels_first_maps = re.findall(r"%\S+ = f32\[16,8,6,6\]\{3,2,1,0\} fusion\(", hlo)
    assert channels_first_maps == [], channels_first_maps
