"""The CPU fast paths (`jaxdl.kernels`) against the plain `lax` paths, and the one switch.

* The switch: ``JAXDL_FAST_PATHS`` and `use_fast_paths`, read when a layer is built and kept in
  the layer; `configure` copies a built model with another choice; bad values are errors.
* Each fast path (Conv, Pooling, the recurrent layers' fused derivative) equals the plain path
  in value and gradient (float64 and float32), the same layer built with the switch on and
  off; each comparison first checks that the two programs really differ.
* `Conv`'s CPU branch is chosen from the shapes (`jaxdl.kernels.conv.cpu_path`); shapes on each
  side of the choice equal the plain path.
* The conv weight gradient in row blocks: at most `WEIGHT_GRAD_BLOCKS` of them, larger at large
  batches, so the program stops growing with the batch (issue 24) and has no loop; a mesh step
  computes it over the whole batch instead.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_layer_properties import DTYPES, FLOAT32_GRAD_TOL, FLOAT32_VALUE_TOL, assert_trees_close

import jaxdl
from jaxdl import kernels
from jaxdl.kernels import recurrent as recurrent_kernels
from jaxdl.kernels.conv import WEIGHT_GRAD_BLOCK, WEIGHT_GRAD_BLOCKS, cpu_path, weight_gradient_block_rows

#: Same math, differently ordered float operations: (rtol, atol relative to the largest entry).
TOLERANCES = {jnp.float64: ((1e-10, 1e-12), (1e-10, 1e-12)), jnp.float32: (FLOAT32_VALUE_TOL, FLOAT32_GRAD_TOL)}


def both(make):
    """``make()`` built with the fast paths on and with them off."""
    with kernels.use_fast_paths(True):
        fast = make()
    with kernels.use_fast_paths(False):
        plain = make()
    return fast, plain


def value_and_grads(layer, params, x):
    """The outputs and the gradient (params, input) of a scalar whose second derivative is not trivial."""
    y_shape = jax.eval_shape(lambda p, v: layer.apply(p, {}, v)[0], params, x).shape
    weights = jax.random.normal(jax.random.key(3), y_shape, x.dtype)

    def scalar(params, x):
        y = layer.apply(params, {}, x)[0]
        return jnp.sum(jnp.sin(y) * weights), y

    (_, y), grads = jax.jit(jax.value_and_grad(scalar, argnums=(0, 1), has_aux=True))(params, x)
    return y, grads


def jaxpr_text(layer, params, x) -> str:
    """The forward pass's jaxpr: a fast path shows as a ``custom_jvp_call`` named after it."""
    return str(jax.make_jaxpr(lambda p, v: layer.apply(p, {}, v)[0])(params, x))


def assert_fast_equals_plain(make, shape, dtype, marker):
    fast, plain = both(make)
    params, _ = fast.init(jax.random.key(0), shape, dtype)
    x = jax.random.normal(jax.random.key(1), shape, dtype)
    assert marker in jaxpr_text(fast, params, x) and marker not in jaxpr_text(plain, params, x)
    (y_fast, g_fast), (y_plain, g_plain) = value_and_grads(fast, params, x), value_and_grads(plain, params, x)
    value_tol, grad_tol = TOLERANCES[dtype]
    assert_trees_close(y_fast, y_plain, *value_tol, err_msg="outputs")
    assert_trees_close(g_fast, g_plain, *grad_tol, err_msg="gradients")


# ---------------------------------------------------------------- the switch
def test_switch_is_read_from_the_environment(monkeypatch):
    monkeypatch.setenv("JAXDL_FAST_PATHS", "0")
    assert not kernels.fast_paths_enabled()
    assert jaxdl.Conv(2, (3, 3)).fast_paths == kernels.FastPaths(enabled=False)
    assert not jaxdl.Pooling(2).fast_paths.enabled
    assert jaxdl.LSTM(3).implementation == "scan"
    monkeypatch.setenv("JAXDL_FAST_PATHS", "1")
    assert kernels.fast_paths_enabled() and jaxdl.LSTM(3).implementation == "fused"
    monkeypatch.delenv("JAXDL_FAST_PATHS")
    assert kernels.fast_paths_enabled() and jaxdl.Conv(2, (3, 3)).fast_paths.enabled


def test_use_fast_paths_overrides_the_environment_and_restores_it(monkeypatch):
    monkeypatch.setenv("JAXDL_FAST_PATHS", "0")
    with kernels.use_fast_paths(True):
        assert kernels.fast_paths_enabled()
        with kernels.use_fast_paths(False):
            assert not kernels.fast_paths_enabled()
        assert jaxdl.GRU(2).implementation == "fused"
    assert not kernels.fast_paths_enabled()


def test_a_layer_keeps_its_choice_when_the_switch_flips_later():
    with kernels.use_fast_paths(False):
        plain = jaxdl.Conv(4, (3, 3))
    params, _ = plain.init(jax.random.key(0), (2, 1, 6, 6))
    x = jnp.ones((2, 1, 6, 6))
    with kernels.use_fast_paths(True):
        assert "fast_conv" not in jaxpr_text(plain, params, x)
    assert "fast_conv" in jaxpr_text(jaxdl.Conv(4, (3, 3)), params, x)
    # an explicit choice wins over the switch, and the repr stays the layer's configuration
    with kernels.use_fast_paths(False):
        assert jaxdl.Conv(4, (3, 3), fast_paths=True).fast_paths.enabled
        assert jaxdl.LSTM(3, implementation="fused").implementation == "fused"
    assert "fast_paths" not in repr(jaxdl.Conv(4, (3, 3)))


def test_configure_copies_the_layers_inside_wrappers_and_leaves_the_model():
    model = jaxdl.MixedPrecision(jaxdl.Serial(jaxdl.Conv(4, (3, 3)), jaxdl.ReLU(), jaxdl.Pooling(2)), "float32")
    configured = kernels.configure(model, blocked_weight_gradient=False)
    conv, relu, pool = configured.layer.layers
    assert conv.fast_paths == kernels.FastPaths(enabled=True, blocked_weight_gradient=False)
    assert pool.fast_paths == kernels.FastPaths(enabled=True, blocked_weight_gradient=False)
    assert relu is model.layer.layers[1] and configured.compute_dtype == "float32"
    assert model.layer.layers[0].fast_paths == kernels.FastPaths()
    assert kernels.configure(configured, blocked_weight_gradient=False) is configured
    assert kernels.configure(jaxdl.ReLU(), enabled=False) == jaxdl.ReLU()
    plain = kernels.configure(model, enabled=False)
    with kernels.use_fast_paths(False):
        assert plain.layer.layers[0] == jaxdl.Conv(4, (3, 3))


def test_bad_switch_values_are_clear_errors(monkeypatch):
    monkeypatch.setenv("JAXDL_FAST_PATHS", "yes")
    with pytest.raises(ValueError, match="JAXDL_FAST_PATHS must be '0' or '1', got 'yes'"):
        kernels.fast_paths_enabled()
    with pytest.raises(ValueError, match="JAXDL_FAST_PATHS"):
        jaxdl.Conv(2, (3, 3))
    monkeypatch.delenv("JAXDL_FAST_PATHS")
    with pytest.raises(TypeError, match="use_fast_paths: enabled must be a bool, got '0'"):
        with kernels.use_fast_paths("0"):
            pass
    with pytest.raises(TypeError, match="Conv: fast_paths must be None, a bool or a jaxdl.kernels.FastPaths, got 'no'"):
        jaxdl.Conv(2, (3, 3), fast_paths="no")
    with pytest.raises(TypeError, match="Pooling: fast_paths must be"):
        jaxdl.Pooling(2, fast_paths=1)
    with pytest.raises(TypeError, match="FastPaths: enabled must be a bool, got 1"):
        kernels.FastPaths(enabled=1)
    with pytest.raises(TypeError, match=r"configure: changes must be fields of FastPaths .*got \['speed'\]"):
        kernels.configure(jaxdl.Conv(2, (3, 3)), speed=True)


# ---------------------------------------------------------------- each fast path equals the plain path
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("channels,num_kernels,batch,kernel,stride,padding", [
    (1, 4, 3, (5, 5), 1, "same"),            # one channel: shifted slices
    (6, 16, 70, (5, 5), 1, "same"),           # kernels padded (float32); 2 whole blocks + 6 rows
    (3, 4, (WEIGHT_GRAD_BLOCKS + 2) * WEIGHT_GRAD_BLOCK + 3, (3, 4), (2, 3), "same"),  # 3 blocks of 49 + 48 rows
    (2, 5, 40, (3,), 2, "valid"),             # 1-D; 1 whole block + 8 rows
    (1, 16, 3, (3, 3), 2, "same"),            # one channel at stride 2: the library (cpu_path)
    (16, 16, 3, (3, 3), 1, "same"),           # 16 channels: kernels not padded (cpu_path)
], ids=["one-channel", "padded-kernels", "large-blocks", "1d", "one-channel-stride-2", "16-channels"])
def test_conv_fast_path_equals_lax_conv(channels, num_kernels, batch, kernel, stride, padding, dtype):
    shape = (batch, channels) + (9, 10)[:len(kernel)]
    assert_fast_equals_plain(lambda: jaxdl.Conv(num_kernels, kernel, stride=stride, padding=padding),
                             shape, dtype, "fast_conv")


@pytest.mark.parametrize("x_shape,dtype,weights_shape,stride,expected", [
    ((128, 1, 28, 28), jnp.float32, (6, 1, 5, 5), (1, 1), "one-channel"),       # LeNet's first layer
    ((128, 1, 28, 28), jnp.float64, (6, 1, 5, 5), (1, 1), "one-channel"),
    ((128, 1, 28, 28), jnp.float32, (16, 1, 3, 3), (2, 2), "library"),         # the ResNet's stride-2 stem
    ((128, 6, 14, 14), jnp.float32, (16, 6, 5, 5), (1, 1), "padded-kernels"),  # LeNet's second layer
    ((128, 6, 14, 14), jnp.bfloat16, (16, 6, 5, 5), (1, 1), "padded-kernels"),  # computed in float32
    ((128, 6, 14, 14), jnp.float64, (16, 6, 5, 5), (1, 1), "library"),
    ((128, 6, 14, 14), jnp.float32, (16, 6, 5, 5), (2, 2), "library"),
    ((128, 15, 14, 14), jnp.float32, (16, 15, 3, 3), (1, 1), "padded-kernels"),
    ((128, 16, 14, 14), jnp.float32, (16, 16, 3, 3), (1, 1), "library"),       # the ResNet's 16 -> 16
    ((128, 6, 14, 14), jnp.float32, (32, 6, 3, 3), (1, 1), "library"),         # already the library's
    ((128, 6, 14), jnp.float32, (16, 6, 3), (1,), "library"),                  # 1-D
])
def test_cpu_path_decides_from_the_shapes(x_shape, dtype, weights_shape, stride, expected):
    assert cpu_path(x_shape, dtype, weights_shape, stride) == expected


@pytest.mark.parametrize("dtype", DTYPES)
def test_pooling_fast_path_equals_reduce_window(dtype):
    # ties and rows/columns past the last whole window are tests/test_layers.py's
    assert_fast_equals_plain(lambda: jaxdl.Pooling((2, 3)), (2, 3, 7, 9), dtype, "tiled_max_pool")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layer_type,blocks", [(jaxdl.RNN, False), (jaxdl.GRU, False), (jaxdl.LSTM, False), (jaxdl.LSTM, True)],
                         ids=["rnn", "gru", "lstm", "lstm-blocks"])
def test_recurrent_fused_derivative_equals_scan_autodiff(layer_type, blocks, dtype, monkeypatch):
    if blocks:  # the tangent loop in blocks of 2 of the 6 time steps
        monkeypatch.setattr(recurrent_kernels, "STACKED_GRADIENT_BYTES", 0)
        monkeypatch.setattr(recurrent_kernels, "BLOCK_STEPS", 2)
    assert_fast_equals_plain(lambda: layer_type(5), (3, 6, 4), dtype, "_fused")


def test_conv_forward_mode_and_hessian_vector_product_equal_the_plain_path():
    fast, plain = both(lambda: jaxdl.Conv(3, (3, 3)))
    shape = ((WEIGHT_GRAD_BLOCKS + 2) * WEIGHT_GRAD_BLOCK + 5, 2, 5, 5)  # large blocks and a shorter last one
    params, _ = fast.init(jax.random.key(0), shape, jnp.float64)
    x = jax.random.normal(jax.random.key(1), shape, jnp.float64)
    direction = jax.tree.map(lambda a: jax.random.normal(jax.random.key(2), a.shape, a.dtype), params)

    def results(layer):
        def scalar(p):
            return jnp.sum(jnp.sin(layer.apply(p, {}, x)[0]))
        tangent = jax.jvp(lambda p: layer.apply(p, {}, x)[0], (params,), (direction,))[1]
        hvp = jax.jvp(jax.grad(scalar), (params,), (direction,))[1]
        return tangent, hvp

    assert_trees_close(results(fast), results(plain), 1e-10, 1e-12)


# ---------------------------------------------------------------- the program does not grow with the batch
def _convolutions_in_gradient(model, batch: int) -> int:
    params, _ = model.init(jax.random.key(0), (batch, 2, 6, 6))

    def loss(params, x):
        return jnp.sum(model.apply(params, {}, x)[0] ** 2)

    text = jax.jit(jax.grad(loss)).lower(params, jnp.ones((batch, 2, 6, 6))).as_text()
    return text.count("stablehlo.convolution")


@pytest.mark.parametrize("batch,rows", [(1, 32), (32, 32), (33, 32), (128, 32), (129, 33), (256, 64), (1000, 250)])
def test_weight_gradient_blocks_grow_with_the_batch_instead_of_their_number(batch, rows):
    assert weight_gradient_block_rows(batch) == rows
    assert -(-batch // rows) <= WEIGHT_GRAD_BLOCKS


def test_conv_gradient_program_does_not_grow_with_the_batch():
    model = jaxdl.Conv(4, (3, 3))
    counts = {batch: _convolutions_in_gradient(model, batch) for batch in (WEIGHT_GRAD_BLOCK, 2 * WEIGHT_GRAD_BLOCK, 97, 128, 160, 1000)}
    # the forward convolution and one weight-gradient convolution per block (no input gradient)
    assert counts == {32: 2, 64: 3, 97: 5, 128: 5, 160: 5, 1000: 5}, counts
    assert counts[1000] == 1 + WEIGHT_GRAD_BLOCKS


def test_conv_gradient_has_no_loop_at_large_batches():
    # a loop's body runs on one thread on XLA:CPU (a lax.scan over blocks made the step 1.4x slower)
    model = jaxdl.Conv(4, (3, 3))
    params, _ = model.init(jax.random.key(0), (1000, 2, 6, 6))
    text = jax.jit(jax.grad(lambda p, x: jnp.sum(model.apply(p, {}, x)[0] ** 2))).lower(
        params, jnp.ones((1000, 2, 6, 6))).as_text()
    assert "stablehlo.while" not in text


def test_mesh_step_computes_the_weight_gradient_over_the_whole_batch():
    model = jaxdl.Serial(jaxdl.Conv(4, (3, 3)), jaxdl.Flatten(), jaxdl.FullyConnected(3))
    optimizer = jaxdl.Sgd(0.1)
    batch = 2 * WEIGHT_GRAD_BLOCK
    state = jaxdl.create_train_state(model, optimizer, 0, (batch, 2, 6, 6))
    args = (state, jnp.ones((batch, 2, 6, 6)), jnp.zeros((batch,), jnp.int32))

    def convolutions(step) -> int:
        return getattr(step, "jitted", step).lower(*args).as_text().count("stablehlo.convolution")

    one_device = jaxdl.make_train_step(model, jaxdl.softmax_cross_entropy, optimizer)
    on_mesh = jaxdl.make_train_step(model, jaxdl.softmax_cross_entropy, optimizer, mesh=jaxdl.data_mesh(jax.devices()[:1]))
    assert convolutions(one_device) == convolutions(on_mesh) + 1  # two blocks, one whole batch
    assert model.layers[0].fast_paths.blocked_weight_gradient  # the caller's model is unchanged
