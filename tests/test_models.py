"""jaxdl.models: LeNet's layers, shapes, parameter count, initialization, configs, optimizer."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxdl
from jaxdl import models

EXPECTED_PARAM_SHAPES = {
    "conv_0": {"weights": (6, 1, 5, 5), "bias": (6,)},
    "conv_1": {"weights": (16, 6, 5, 5), "bias": (16,)},
    "fully_connected_0": {"weights": (784, 120), "bias": (120,)},
    "fully_connected_1": {"weights": (120, 84), "bias": (84,)},
    "fully_connected_2": {"weights": (84, 10), "bias": (10,)},
}


def _init(model, batch=4):
    return model.init(jax.random.key(0), (batch, *models.LENET_INPUT_SHAPE), jnp.float32)


@pytest.fixture(scope="module")
def lenet_params():
    """LeNet's initial params and state, initialized once (jitted: one compile, not one per shape)."""
    return jax.jit(lambda: _init(models.lenet()))()


def test_lenet_layers_in_the_exercise_order():
    model = models.lenet()
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds == ["Conv", "ReLU", "Pooling", "Conv", "ReLU", "Pooling", "Flatten", "FullyConnected", "ReLU",
                     "FullyConnected", "ReLU", "FullyConnected", "SoftMax"]
    convs = [layer for layer in model.layers if isinstance(layer, jaxdl.Conv)]
    assert [(c.num_kernels, c.kernel_shape, c.padding) for c in convs] == [(6, (5, 5), "same"), (16, (5, 5), "same")]


def test_lenet_shapes_and_parameter_count(lenet_params):
    model = models.lenet()
    params, state = lenet_params
    assert state == {}
    assert jax.tree.map(lambda a: a.shape, params) == EXPECTED_PARAM_SHAPES
    assert jaxdl.count_params(params) == 107_786
    assert jaxdl.output_shape(model, (4, 1, 28, 28)) == (4, 10)
    # Flattened features: 16 maps of 7x7 after two "same" convolutions and two 2x2 poolings.
    assert jaxdl.output_shape(jaxdl.Serial(*model.layers[:7]), (4, 1, 28, 28)) == (4, 784)


def test_lenet_outputs_probabilities_or_logits(lenet_params):
    x = jax.random.uniform(jax.random.key(1), (5, 1, 28, 28), jnp.float32)
    probabilities_model, logits_model = models.lenet(), models.lenet(logits=True)
    params, state = lenet_params
    probabilities, _ = probabilities_model.apply(params, state, x)
    logits, _ = logits_model.apply(params, state, x)  # same params: the SoftMax has none
    assert probabilities.shape == logits.shape == (5, 10)
    np.testing.assert_allclose(np.sum(probabilities, axis=-1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(probabilities, jax.nn.softmax(logits, axis=-1), rtol=1e-5, atol=1e-7)
    assert len(logits_model.layers) == len(probabilities_model.layers) - 1


def test_lenet_he_initialization_and_zero_bias(lenet_params):
    params, _ = lenet_params
    fan_ins = {"conv_0": 25, "conv_1": 150, "fully_connected_0": 784, "fully_connected_1": 120}
    for name, fan_in in fan_ins.items():
        weights = np.asarray(params[name]["weights"])
        assert abs(weights.std() / math.sqrt(2.0 / fan_in) - 1) < 0.25, name
        assert np.all(np.asarray(params[name]["bias"]) == 0)


def test_num_classes_and_validation():
    params, _ = jax.eval_shape(lambda: _init(models.lenet(num_classes=3)))
    assert params["fully_connected_2"]["weights"].shape == (84, 3)
    with pytest.raises(ValueError, match="num_classes"):
        models.lenet(num_classes=1)


def test_model_config_round_trip():
    config = models.model_config("lenet", logits=True)
    assert config == {"name": "lenet", "logits": True}
    assert models.build_model(config) == models.lenet(logits=True)
    assert models.build_model(models.model_config()) == models.lenet()


def test_build_model_errors_are_readable():
    with pytest.raises(ValueError, match="unknown model 'resnet'"):
        models.build_model({"name": "resnet"})
    with pytest.raises(ValueError, match="invalid arguments for 'lenet'"):
        models.build_model({"name": "lenet", "depth": 3})
    with pytest.raises(ValueError, match="'name'"):
        models.build_model({"logits": True})


def test_lenet_optimizer_is_adam_with_decoupled_l2():
    optimizer = models.lenet_optimizer()
    assert optimizer.regularizer == jaxdl.L2Regularizer(4e-4)
    reference = jaxdl.Adam(5e-4, regularizer=jaxdl.L2Regularizer(4e-4))
    params = {"dense": {"weights": jnp.linspace(-1, 1, 6, dtype=jnp.float32).reshape(2, 3),
                        "bias": jnp.ones(3, jnp.float32)}}
    grads = jax.tree.map(lambda p: jnp.full_like(p, 0.1), params)
    regularized = {"dense": {"weights": True, "bias": False}}
    updates, _ = jax.jit(optimizer.update)(grads, optimizer.init(params), params, regularized=regularized)
    expected, _ = jax.jit(reference.update)(grads, reference.init(params), params, regularized=regularized)
    jax.tree.map(np.testing.assert_array_equal, updates, expected)
    plain = jaxdl.Adam(5e-4)
    unregularized, _ = jax.jit(plain.update)(grads, plain.init(params), params)
    np.testing.assert_array_equal(updates["dense"]["bias"], unregularized["dense"]["bias"])  # biases not shrunk
    np.testing.assert_allclose(updates["dense"]["weights"] - unregularized["dense"]["weights"],
                               -5e-4 * 4e-4 * params["dense"]["weights"], rtol=0, atol=1e-10)
    assert models.lenet_optimizer(l2=0).regularizer is None


def _mlp(hidden=4, classes=3):
    return jaxdl.Serial(jaxdl.Flatten(), jaxdl.FullyConnected(hidden), jaxdl.ReLU(), jaxdl.FullyConnected(classes))


def test_register_model_extends_build_model():
    models.register_model("test_mlp", _mlp)
    try:
        assert "test_mlp" in models.registered_models() and "lenet" in models.registered_models()
        config = models.model_config("test_mlp", hidden=5)
        assert config == {"name": "test_mlp", "hidden": 5}
        assert models.build_model(config) == _mlp(hidden=5)
        models.register_model("test_mlp", _mlp)  # the same builder again: harmless
        with pytest.raises(ValueError, match=r"register_model: a model named 'test_mlp' is registered already.*"
                                             r"replace=True"):
            models.register_model("test_mlp", lambda: _mlp(2))
        models.register_model("test_mlp", lambda: _mlp(2), replace=True)
        assert models.build_model({"name": "test_mlp"}) == _mlp(2)
        with pytest.raises(ValueError, match=r"unknown model 'resnet'; registered models: \[.*'lenet'.*'test_mlp'"):
            models.build_model({"name": "resnet"})
    finally:
        models.MODELS.pop("test_mlp", None)
    assert "test_mlp" not in models.registered_models()


def test_register_model_rejects_bad_arguments():
    with pytest.raises(TypeError, match=r"register_model: name must be a str, got 3"):
        models.register_model(3, _mlp)
    with pytest.raises(ValueError, match=r"register_model: name must be a non-empty str"):
        models.register_model("", _mlp)
    with pytest.raises(TypeError, match=r"register_model: builder must be callable"):
        models.register_model("x", "not callable")
    models.register_model("test_not_a_layer", lambda: "a string", replace=True)
    try:
        with pytest.raises(ValueError, match=r"build_model: the builder of 'test_not_a_layer' must return a jaxdl "
                                             r"Layer, got str"):
            models.build_model({"name": "test_not_a_layer"})
    finally:
        models.MODELS.pop("test_not_a_layer", None)


def test_old_positional_lenet_params_get_a_clear_error_and_convert():
    """LeNet params saved before the per-type keys (conv_3, fully_connected_7, ...)."""
    model = models.lenet()
    params, state = jax.eval_shape(lambda: _init(model))
    params = jax.tree.map(lambda leaf: jnp.zeros(leaf.shape, leaf.dtype), params)
    renamed = {"conv_0": "conv_0", "conv_1": "conv_3", "fully_connected_0": "fully_connected_7",
               "fully_connected_1": "fully_connected_9", "fully_connected_2": "fully_connected_11"}
    old = {renamed[name]: value for name, value in params.items()}
    x = jnp.zeros((2, 1, 28, 28), jnp.float32)
    with pytest.raises(ValueError, match=r"positional keys of jaxdl before 0.2 .*'conv_3'.*from_positional_keys"):
        model.apply(old, state, x)
    converted = jaxdl.core.from_positional_keys(model, old)
    assert jax.tree.structure(converted) == jax.tree.structure(params)
    np.testing.assert_array_equal(model.apply(converted, state, x)[0], model.apply(params, state, x)[0])
    with pytest.raises(ValueError, match=r"from_positional_keys: the keys \['dense_1'\] are not positional keys"):
        jaxdl.core.from_positional_keys(model, {"dense_1": {}})


def test_lenet_trains_on_a_batch():
    model, optimizer = models.lenet(), models.lenet_optimizer(1e-3)
    train_state = jax.jit(lambda key: jaxdl.create_train_state(model, optimizer, key, (8, 1, 28, 28)))(
        jax.random.key(0))
    step = jaxdl.make_train_step(model, jaxdl.cross_entropy, optimizer)
    x = jax.random.uniform(jax.random.key(2), (8, 1, 28, 28), jnp.float32)
    labels = jnp.arange(8) % 10
    losses = []
    for _ in range(15):
        train_state, metrics = step(train_state, x, labels)
        losses.append(float(metrics["data_loss"]))
    assert losses[-1] < 0.5 * losses[0]
    assert int(train_state.step) == 15
