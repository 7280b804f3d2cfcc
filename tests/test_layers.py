"""Layer semantics against the exercise's numbers, independent references and error paths."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage

import jaxdl


def apply(layer, x, *, train=False, key=None, seed=0, dtype=jnp.float64):
    x = jnp.asarray(x, dtype)
    params, state = layer.init(jax.random.key(seed), x.shape, dtype)
    return layer.apply(params, state, x, key=key, train=train)[0]


# ---------------------------------------------------------------- activations
def test_relu_forward_matches_exercise():
    x = np.ones((10, 5))
    x[:5] = -1
    y = apply(jaxdl.ReLU(), x)
    np.testing.assert_array_equal(y[:5], 0)
    np.testing.assert_array_equal(y[5:], 1)


def test_relu_gradient_is_zero_at_zero():
    assert jax.grad(lambda x: jaxdl.ReLU().apply({}, {}, x)[0])(0.0) == 0.0


def test_tanh_and_sigmoid_match_closed_forms():
    x = np.random.default_rng(0).uniform(-1, 1, (10, 5))
    np.testing.assert_allclose(apply(jaxdl.TanH(), x), 1 - 2 / (np.exp(2 * x) + 1), atol=1e-12)
    np.testing.assert_allclose(apply(jaxdl.Sigmoid(), x), 0.5 * (1 + np.tanh(x / 2)), atol=1e-12)
    assert np.all(np.abs(apply(jaxdl.TanH(), 2 * x)) <= 1)
    s = apply(jaxdl.Sigmoid(), 2 * x)
    assert np.all((s >= 0) & (s <= 1))


def test_activation_derivatives_match_exercise_formulas():
    x = jnp.linspace(-3, 3, 13)
    tanh_grad = jax.vmap(jax.grad(lambda v: jaxdl.TanH().apply({}, {}, v)[0]))(x)
    np.testing.assert_allclose(tanh_grad, 1 - np.tanh(x) ** 2, atol=1e-12)
    sig = 1 / (1 + np.exp(-x))
    sig_grad = jax.vmap(jax.grad(lambda v: jaxdl.Sigmoid().apply({}, {}, v)[0]))(x)
    np.testing.assert_allclose(sig_grad, sig * (1 - sig), atol=1e-12)


def test_softmax_prediction_row_matches_exercise():
    x = (np.arange(36) / 100).reshape(4, 9).T
    y = apply(jaxdl.SoftMax(), x)
    expected = [0.21732724, 0.23779387, 0.26018794, 0.28469095]
    for row in np.asarray(y):
        np.testing.assert_array_almost_equal(row, expected, decimal=7)


def test_softmax_large_inputs_do_not_overflow():
    y = apply(jaxdl.SoftMax(), np.full((9, 4), 10000.0))
    assert np.all(np.isfinite(y))
    np.testing.assert_allclose(y, 0.25)


def test_softmax_backward_matches_exercise_formula():
    rng = np.random.default_rng(1)
    x, error = rng.uniform(size=(9, 4)), rng.normal(size=(9, 4))
    y, vjp = jax.vjp(lambda v: jaxdl.SoftMax().apply({}, {}, v)[0], jnp.asarray(x))
    expected = y * (error - np.sum(error * y, axis=1, keepdims=True))
    np.testing.assert_allclose(vjp(jnp.asarray(error))[0], expected, atol=1e-12)


# ---------------------------------------------------------------- fully connected, flatten
def test_fully_connected_matches_numpy():
    layer = jaxdl.FullyConnected(3)
    x = np.random.default_rng(2).uniform(size=(9, 4))
    params, _ = layer.init(jax.random.key(0), x.shape, jnp.float64)
    y, _ = layer.apply(params, {}, jnp.asarray(x))
    np.testing.assert_allclose(y, x @ np.asarray(params["weights"]) + np.asarray(params["bias"]), atol=1e-12)
    assert params["weights"].shape == (4, 3) and params["bias"].shape == (3,)


@pytest.mark.parametrize("shape", [(9, 4), (2, 5, 4), (2, 3, 5, 4), (0, 5, 4), (2, 5, 0)])
@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32])
def test_dense_product_equals_the_nd_product_in_value_and_gradients(shape, dtype):
    # the rows are flattened into one 2-D product (its weight gradient a 2-D product, XLA:CPU's
    # fast kernel); the same map as x @ w on every rank, also for empty inputs
    from jaxdl.layers.dense import dense_product

    x = jax.random.normal(jax.random.key(0), shape, dtype)
    w = jax.random.normal(jax.random.key(1), (shape[-1], 3), dtype)
    cotangent = jax.random.normal(jax.random.key(2), shape[:-1] + (3,), dtype)
    y, vjp = jax.vjp(dense_product, x, w)
    expected, expected_vjp = jax.vjp(lambda x, w: x @ w, x, w)
    tolerance = {"rtol": 1e-12, "atol": 1e-12} if dtype == jnp.float64 else {"rtol": 1e-5, "atol": 1e-5}
    assert y.shape == expected.shape and y.dtype == expected.dtype
    np.testing.assert_allclose(y, expected, **tolerance)
    for got, want in zip(vjp(cotangent), expected_vjp(cotangent)):
        np.testing.assert_allclose(got, want, **tolerance)
    if len(shape) > 2 and 0 not in shape:  # the program has no product contracting two axes
        text = jax.jit(jax.grad(lambda w: jnp.sum(dense_product(x, w) ** 2))).lower(w).as_text()
        assert "dot_general" in text and not re.search(r"contracting_dims = \[\d+, \d+", text), text


def test_fully_connected_uses_the_initializers_with_exercise_fans():
    seen = {}

    def recording(key, shape, fan_in, fan_out, dtype=jnp.float32):
        seen.update(shape=shape, fan_in=fan_in, fan_out=fan_out)
        return jnp.ones(shape, dtype)

    params, _ = jaxdl.FullyConnected(10, recording, jaxdl.Constant(0.5)).init(jax.random.key(0), (2, 4))
    assert seen == {"shape": (4, 10), "fan_in": 4, "fan_out": 10}
    assert float(jnp.sum(params["weights"]) + jnp.sum(params["bias"])) == 45.0


def test_flatten_matches_c_order_reshape():
    x = np.arange(9 * 132).reshape(9, 3, 4, 11).astype(float)
    np.testing.assert_array_equal(apply(jaxdl.Flatten(), x), x.reshape(9, 132))


# ---------------------------------------------------------------- conv
def _conv_shape(layer, shape):
    return jaxdl.output_shape(layer, shape)


@pytest.mark.parametrize("stride,in_shape,kernels,out_shape", [
    ((1, 1), (2, 3, 10, 14), 4, (2, 4, 10, 14)),
    ((3, 2), (2, 3, 10, 14), 4, (2, 4, 4, 7)),
    ((3, 2), (3, 3, 11, 15), 5, (3, 5, 4, 8)),
])
def test_conv_output_shapes_match_exercise(stride, in_shape, kernels, out_shape):
    assert _conv_shape(jaxdl.Conv(kernels, (5, 8), stride=stride), in_shape) == out_shape


def test_conv_1d_and_1x1_shapes_match_exercise():
    assert _conv_shape(jaxdl.Conv(4, (3,), stride=[2]), (2, 3, 15)) == (2, 4, 8)
    assert _conv_shape(jaxdl.Conv(4, (1, 1)), (2, 3, 10, 14)) == (2, 4, 10, 14)


def test_conv_input_gradient_has_input_shape_with_stride():
    layer = jaxdl.Conv(4, (5, 8), stride=(3, 2))
    x = jnp.ones((2, 3, 10, 14))
    params, _ = layer.init(jax.random.key(0), x.shape, jnp.float64)
    grad = jax.grad(lambda v: jnp.sum(layer.apply(params, {}, v)[0]))(x)
    assert grad.shape == x.shape


SMOOTHING = np.array([[1, 2, 1], [2, 3, 2], [1, 2, 1]]) / 15


def _smoothing_conv(channels, kernels, bias):
    layer = jaxdl.Conv(kernels, (3, 3))
    params = {"weights": jnp.asarray(np.broadcast_to(SMOOTHING, (kernels, channels, 3, 3))),
              "bias": jnp.full((kernels,), float(bias))}
    return layer, params


def _gaussian(image):
    return scipy.ndimage.gaussian_filter(image, 0.85, mode="constant", cval=0.0, truncate=1.0)


def test_conv_is_gaussian_smoothing_like_the_exercise():
    x = np.random.default_rng(1337).uniform(size=(1, 1, 10, 14))
    layer, params = _smoothing_conv(1, 1, 0.0)
    y = layer.apply(params, {}, jnp.asarray(x))[0]
    assert np.max(np.abs(np.asarray(y)[0, 0] - _gaussian(x[0, 0]))) < 0.05


def test_conv_sums_over_channels_and_adds_bias():
    x = np.random.default_rng(3).uniform(size=(1, 2, 10, 14))
    layer, params = _smoothing_conv(2, 1, 1.0)
    y = np.asarray(layer.apply(params, {}, jnp.asarray(x))[0])[0, 0]
    expected = 1 + _gaussian(x[0, 0]) + _gaussian(x[0, 1])
    assert np.max(np.abs(y - expected)) / 2 < 0.05


def conv2d_numpy(x, w, b, stride, padding):
    """A direct loop reference for the exercise's cross-correlation."""
    (sy, sx), (k, c, m, n) = stride, w.shape
    if padding == "same":
        x = np.pad(x, ((0, 0), (0, 0), ((m - 1) // 2, m // 2), ((n - 1) // 2, n // 2)))
    out_y, out_x = (x.shape[2] - m) // sy + 1, (x.shape[3] - n) // sx + 1
    y = np.zeros((x.shape[0], k, out_y, out_x))
    for i in range(out_y):
        for j in range(out_x):
            patch = x[:, :, i * sy:i * sy + m, j * sx:j * sx + n]
            y[:, :, i, j] = np.einsum("bcmn,kcmn->bk", patch, w) + b
    return y


@pytest.mark.parametrize("kernel,stride,padding", [
    ((3, 3), (1, 1), "same"), ((4, 5), (2, 3), "same"), ((3, 2), (2, 1), "valid"), ((1, 1), (1, 1), "same"),
])
def test_conv_matches_numpy_loop(kernel, stride, padding):
    rng = np.random.default_rng(4)
    x = rng.normal(size=(2, 3, 9, 11))
    layer = jaxdl.Conv(4, kernel, stride=stride, padding=padding)
    params, _ = layer.init(jax.random.key(0), x.shape, jnp.float64)
    params = {"weights": params["weights"], "bias": jnp.asarray(rng.normal(size=4))}
    y = layer.apply(params, {}, jnp.asarray(x))[0]
    expected = conv2d_numpy(x, np.asarray(params["weights"]), np.asarray(params["bias"]), stride, padding)
    np.testing.assert_allclose(y, expected, atol=1e-10)


def test_conv_center_tap_preserves_layout():
    layer = jaxdl.Conv(1, (3, 3))
    w = np.zeros((1, 3, 3, 3))
    w[0, 1, 1, 1] = 1
    x = np.random.default_rng(5).normal(size=(2, 3, 10, 14))
    y = layer.apply({"weights": jnp.asarray(w), "bias": jnp.zeros(1)}, {}, jnp.asarray(x))[0]
    np.testing.assert_allclose(y[:, 0], x[:, 1], atol=1e-12)


def test_conv_fans_follow_the_exercise():
    seen = {}

    def recording(key, shape, fan_in, fan_out, dtype=jnp.float32):
        seen[shape] = (fan_in, fan_out)
        return jnp.zeros(shape, dtype)

    jaxdl.Conv(4, (5, 8), weights_initializer=recording, bias_initializer=recording).init(
        jax.random.key(0), (2, 3, 10, 14))
    assert seen == {(4, 3, 5, 8): (120, 160), (4,): (120, 160)}


# ---------------------------------------------------------------- pooling
def test_pooling_expected_output_matches_exercise():
    x = np.arange(32, dtype=float).reshape(2, 1, 4, 4)
    expected = [[[[5, 7], [13, 15]]], [[[21, 23], [29, 31]]]]
    np.testing.assert_array_equal(apply(jaxdl.Pooling(2), x), expected)


def test_pooling_valid_edge_case_matches_exercise():
    x = np.arange(18, dtype=float).reshape(2, 1, 3, 3)
    np.testing.assert_array_equal(apply(jaxdl.Pooling(2), x), [[[[4]]], [[[13]]]])


@pytest.mark.parametrize("stride,out_shape", [((2, 2), (2, 2, 2, 3)), ((2, 1), (2, 2, 2, 6)), ((3, 2), (2, 2, 1, 3))])
def test_pooling_shapes_match_exercise(stride, out_shape):
    assert jaxdl.output_shape(jaxdl.Pooling((2, 2), stride=stride), (2, 2, 4, 7)) == out_shape


def test_pooling_1x1_is_identity():
    x = np.random.default_rng(0).normal(size=(2, 2, 4, 7))
    np.testing.assert_array_equal(apply(jaxdl.Pooling(1), x), x)


def test_pooling_routes_gradient_to_argmax_and_sums_overlaps():
    x = jnp.asarray([[[[1.0, 5.0, 2.0], [0.0, 3.0, 4.0]]]])
    grad = jax.grad(lambda v: jnp.sum(jaxdl.Pooling((2, 2), stride=(1, 1)).apply({}, {}, v)[0]))(x)
    np.testing.assert_array_equal(grad, [[[[0, 2, 0], [0, 0, 0]]]])


from jaxdl.layers.pooling import reduce_window_max_pool, tiled_max_pool  # noqa: E402


@pytest.mark.parametrize("shape,pool", [
    ((2, 3, 8, 8), (2, 2)), ((2, 2, 7, 9), (2, 2)), ((1, 2, 9, 8), (3, 2)), ((2, 1, 5, 5), (1, 1)),
    ((1, 1, 4, 12), (4, 3)), ((1, 1, 300, 260), (3, 2)), ((1, 1, 12, 24), (12, 12)),
])
@pytest.mark.parametrize("values", ["normal", "ties", "constant"])
def test_tiled_max_pool_equals_reduce_window_in_value_and_gradient(shape, pool, values):
    rng = np.random.default_rng(0)
    x = {"normal": rng.normal(size=shape), "ties": rng.integers(0, 3, size=shape).astype(float),
         "constant": np.full(shape, -np.inf)}[values]
    cotangent = jnp.asarray(rng.normal(size=(*shape[:2], shape[2] // pool[0], shape[3] // pool[1])))
    results = []
    for fn in (lambda v: tiled_max_pool(v, pool), lambda v: reduce_window_max_pool(v, pool, pool)):
        y, vjp = jax.vjp(jax.jit(fn), jnp.asarray(x))
        results.append((y, vjp(cotangent)[0]))
    (y_fast, grad_fast), (y_ref, grad_ref) = results
    np.testing.assert_array_equal(y_fast, y_ref)
    np.testing.assert_array_equal(grad_fast, grad_ref)


def test_tiled_max_pool_gives_each_windows_gradient_to_its_first_max_only():
    x = jnp.asarray([[[[1.0, 3.0, 0.0, 0.0], [3.0, 2.0, 0.0, 0.0], [9.0, 9.0, 5.0, 4.0]]]])
    grad = jax.grad(lambda v: jnp.sum(tiled_max_pool(v, (2, 2)) * jnp.asarray([[[[1.0, 10.0]]]])))(x)
    np.testing.assert_array_equal(grad, [[[[0, 1, 10, 0], [0, 0, 0, 0], [0, 0, 0, 0]]]])


def test_tiled_max_pool_propagates_nan():
    x = jnp.asarray([[[[1.0, jnp.nan], [3.0, 2.0]]]])
    assert jnp.isnan(tiled_max_pool(x, (2, 2))).all()
    assert jnp.isnan(jax.value_and_grad(lambda v: tiled_max_pool(v, (2, 2)).sum())(x)[0])


def test_pooling_layer_takes_the_tiled_path_only_without_overlap():
    x = jnp.ones((1, 1, 6, 6))
    for layer, tiled in ((jaxdl.Pooling(2), True), (jaxdl.Pooling((2, 3)), True),
                         (jaxdl.Pooling(2, stride=1), False), (jaxdl.Pooling(2, stride=3), False)):
        jaxpr = str(jax.make_jaxpr(lambda v, layer=layer: layer.apply({}, {}, v)[0])(x))
        assert ("name=tiled_max_pool" in jaxpr) == tiled, layer


# ---------------------------------------------------------------- initializers (KS tests)
def _ks_pvalue(samples, cdf):
    import scipy.stats
    return scipy.stats.kstest(np.asarray(samples).ravel(), cdf).pvalue


def test_initializer_distributions_by_ks_test():
    import scipy.stats
    key = jax.random.key(1337)
    shape = (400, 400)
    uniform = jaxdl.UniformRandom()(key, shape, 400, 400)
    xavier = jaxdl.Xavier()(key, shape, 400, 400)
    he = jaxdl.He()(key, shape, 400, 400)
    assert uniform.shape == xavier.shape == he.shape == shape
    assert _ks_pvalue(uniform, "uniform") > 0.01
    assert _ks_pvalue(xavier, scipy.stats.norm(0, np.sqrt(2 / 800)).cdf) > 0.01
    assert _ks_pvalue(he, scipy.stats.norm(0, np.sqrt(2 / 400)).cdf) > 0.01
    # and not the other way round: the KS test distinguishes the two normals
    assert _ks_pvalue(he, scipy.stats.norm(0, np.sqrt(2 / 800)).cdf) < 0.01


def test_constant_initializer():
    np.testing.assert_array_equal(jaxdl.Constant()(None, (2, 3)), np.full((2, 3), 0.1, np.float32))


# ---------------------------------------------------------------- error paths
@pytest.mark.parametrize("layer,shape,message", [
    (jaxdl.Conv(2, (3, 3)), (2, 3, 5), "Conv"),
    (jaxdl.Conv(2, (3,)), (2, 3, 5, 5), "Conv"),
    (jaxdl.Pooling(2), (2, 3, 5), "Pooling"),
    (jaxdl.FullyConnected(2), (5,), "FullyConnected"),
    (jaxdl.BatchNormalization(), (5,), "BatchNormalization"),
])
def test_wrong_rank_is_a_clear_error(layer, shape, message):
    with pytest.raises(ValueError, match=message):
        layer.init(jax.random.key(0), shape)


def test_channel_mismatch_names_layer_and_shapes():
    layer = jaxdl.Conv(2, (3, 3))
    params, _ = layer.init(jax.random.key(0), (1, 3, 5, 5))
    with pytest.raises(ValueError, match=r"Conv.*3 input channels.*\(1, 4, 5, 5\)"):
        layer.apply(params, {}, jnp.ones((1, 4, 5, 5)))


def test_fully_connected_feature_mismatch():
    layer = jaxdl.FullyConnected(2)
    params, _ = layer.init(jax.random.key(0), (1, 3))
    with pytest.raises(ValueError, match=r"FullyConnected.*\(batch, \.\.\., 3\).*\(1, 4\)"):
        layer.apply(params, {}, jnp.ones((1, 4)))


def test_valid_kernel_larger_than_input():
    with pytest.raises(ValueError, match="larger than the input"):
        jaxdl.Conv(2, (5, 5), padding="valid").init(jax.random.key(0), (1, 1, 4, 9))
    with pytest.raises(ValueError, match="larger than the input"):
        jaxdl.Pooling(3).apply({}, {}, jnp.ones((1, 1, 2, 9)))


@pytest.mark.parametrize("kwargs, error", [({"stride": 0}, ValueError), ({"stride": (1, 2, 3)}, ValueError),
                                           ({"stride": 1.5}, TypeError), ({"padding": "full"}, ValueError)])
def test_bad_conv_configuration(kwargs, error):
    with pytest.raises(error, match="Conv"):
        jaxdl.Conv(2, (3, 3), **kwargs)


def test_integer_input_is_a_type_error():
    with pytest.raises(TypeError, match="ReLU.*floating"):
        jaxdl.ReLU().apply({}, {}, jnp.ones((2, 2), jnp.int32))


def test_serial_rejects_non_layers():
    with pytest.raises(TypeError, match="position 1"):
        jaxdl.Serial(jaxdl.ReLU(), lambda x: x)


def test_serial_names_params_readably():
    model = jaxdl.Serial(jaxdl.Conv(2, (3, 3)), jaxdl.ReLU(), jaxdl.Flatten(), jaxdl.FullyConnected(3))
    params, state = model.init(jax.random.key(0), (1, 1, 4, 4))
    assert set(params) == {"conv_0", "fully_connected_0"}
    assert set(params["conv_0"]) == {"weights", "bias"}
    assert state == {}
    assert params["fully_connected_0"]["weights"].shape == (32, 3)


def test_layers_are_hashable_and_compare_by_configuration():
    assert jaxdl.Conv(2, (3, 3)) == jaxdl.Conv(2, [3, 3], stride=(1, 1))
    assert hash(jaxdl.Serial(jaxdl.ReLU())) == hash(jaxdl.Serial(jaxdl.ReLU()))


# ---------------------------------------------------------------- fast paths equal the simple versions
from jaxdl.layers.conv import conv_reference, fast_conv, same_padding  # noqa: E402


@pytest.mark.parametrize("channels,kernels,batch", [(1, 4, 3), (3, 4, 70), (3, 16, 5), (6, 20, 33)])
@pytest.mark.parametrize("kernel,stride,padding", [
    ((5, 5), (1, 1), "same"), ((3, 4), (2, 3), "same"), ((3, 3), (2, 1), "valid"), ((3,), (2,), "same"),
    ((1, 1), (1, 1), "same"),
])
def test_fast_conv_equals_lax_conv_in_value_and_gradient(kernel, stride, padding, channels, kernels, batch):
    # one channel: the slice path; 16-31 kernels: padded to 32; batch 70: two whole blocks of
    # the weight gradient and a partial one
    rng = np.random.default_rng(0)
    dtype = np.float32 if kernels == 16 else np.float64  # the padded path is float32 only
    x = jnp.asarray(rng.normal(size=(batch, channels, 9, 10)[: 2 + len(kernel)]).astype(dtype))
    w = jnp.asarray(rng.normal(size=(kernels, channels, *kernel)).astype(dtype))
    pad = same_padding(kernel) if padding == "same" else ((0, 0),) * len(kernel)
    cotangent = None
    tolerance = 1e-5 if dtype == np.float32 else 1e-10
    for fn in (fast_conv, conv_reference):
        y, vjp = jax.vjp(lambda x, w: fn(x, w, stride, pad), x, w)
        cotangent = jnp.asarray(rng.normal(size=y.shape).astype(dtype)) if cotangent is None else cotangent
        if fn is fast_conv:
            fast = (y, *vjp(cotangent))
    reference = (y, *vjp(cotangent))
    for a, b in zip(fast, reference):
        np.testing.assert_allclose(a, b, rtol=tolerance, atol=tolerance * np.abs(b).max())


@pytest.mark.parametrize("channels,kernels,dtype,expected_kernels", [
    (1, 2, jnp.float32, None), (2, 2, jnp.float32, 2), (6, 16, jnp.float32, 32), (6, 32, jnp.float32, 32),
    (6, 16, jnp.float64, 16),
])
def test_conv_layer_takes_the_cpu_fast_paths(channels, kernels, dtype, expected_kernels):
    layer = jaxdl.Conv(kernels, (3, 3))
    params, _ = layer.init(jax.random.key(0), (1, channels, 5, 5), dtype)
    hlo = jax.jit(lambda x: layer.apply(params, {}, x)[0]).lower(jnp.ones((1, channels, 5, 5), dtype)).compile().as_text()
    convolutions = [line for line in hlo.splitlines() if " convolution(" in line]
    if expected_kernels is None:  # one channel: shifted slices, no convolution
        assert not convolutions
    else:
        assert convolutions and all(f",{expected_kernels}]" in line.split("=")[1] for line in convolutions), convolutions
