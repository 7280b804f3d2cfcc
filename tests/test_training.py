"""The training step, NeuralNetwork, and the exercise's end-to-end trainings (5.17)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxdl
import jaxdl.models
from datasets_sklearn import batches, digits, iris


def iris_net(*extra_before_softmax, batch_norm=False):
    layers = [jaxdl.FullyConnected(3, jaxdl.UniformRandom(), jaxdl.Constant(0.1)), jaxdl.ReLU(),
              jaxdl.FullyConnected(3, jaxdl.UniformRandom(), jaxdl.Constant(0.1)), *extra_before_softmax,
              jaxdl.SoftMax()]
    if batch_norm:
        layers.insert(0, jaxdl.BatchNormalization(decay=0.8))
    return jaxdl.Serial(*layers)


def train_iris(model, optimizer, iterations, batch_size, seed=0):
    (x, y), (x_test, y_test) = iris(seed)
    net = jaxdl.NeuralNetwork(model, jaxdl.cross_entropy, optimizer, input_shape=(batch_size, 4), seed=seed)
    net.train(batches(x, y, batch_size, seed), iterations=iterations)
    return net, x_test, y_test


@pytest.mark.parametrize("model, input_shape", [
    (jaxdl.models.lenet(), (4, 1, 28, 28)),
    (jaxdl.Serial(jaxdl.LSTM(7), jaxdl.GRU(5), jaxdl.RNN(3)), (2, 6, 4)),
    (jaxdl.Serial(jaxdl.FullyConnected(9, jaxdl.Xavier()), jaxdl.BatchNormalization(),
                  jaxdl.FullyConnected(3, jaxdl.UniformRandom(-1.0, 2.0), jaxdl.Constant(0.5))), (5, 11)),
], ids=["lenet", "recurrent", "xavier_uniform_constant"])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_initialization_at_optimization_level_1_equals_the_default_compilation(model, input_shape, dtype,
                                                                               monkeypatch):
    """create_train_state compiles the initializers at XLA level 1 without the fusion emitters
    (faster); the values are the default compilation's up to a rounding or two (LLVM contracts
    some multiply-adds of the normal distribution's inverse error function differently)."""
    monkeypatch.setenv("XLA_FLAGS", "")  # conftest's flags would be kept (tested below)
    assert jaxdl.training.state.init_compiler_options() == {"xla_backend_optimization_level": 1,
                                                            "xla_cpu_use_fusion_emitters": False}
    key = jax.random.key(3)
    train_state = jaxdl.create_train_state(model, jaxdl.Sgd(0.1), key, input_shape, dtype)
    init_key, _ = jax.random.split(key)
    # The default level explicitly: tests/conftest.py compiles everything else at level 0.
    default_level = jax.jit(model.init, static_argnums=(1, 2), compiler_options={"xla_backend_optimization_level": 3})
    params, state = default_level(init_key, input_shape, dtype)
    expected, got = jax.tree.leaves((params, state)), jax.tree.leaves((train_state.params, train_state.state))
    assert len(expected) == len(got) > 0
    for a, b in zip(expected, got):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=4 * jnp.finfo(dtype).eps, atol=0)
    assert all(leaf.dtype == dtype for leaf in jax.tree.leaves(train_state.params))


def test_the_options_xla_flags_sets_are_kept_for_the_initialization(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false --xla_backend_optimization_level=0")
    assert jaxdl.training.state.init_compiler_options() == {"xla_cpu_use_fusion_emitters": False}
    monkeypatch.setenv("XLA_FLAGS", "--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=true")
    assert jaxdl.training.state.init_compiler_options() is None
    assert jaxdl.training.state.init_compiler_options(traced=True) is None


def test_an_option_the_jaxlib_does_not_know_is_left_out(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "")
    monkeypatch.setattr(jaxdl.training.state, "INIT_COMPILER_OPTIONS",
                        {"xla_backend_optimization_level": 1, "xla_cpu_no_such_option": True})
    assert jaxdl.training.state.init_compiler_options() == {"xla_backend_optimization_level": 1}
    train_state = jaxdl.create_train_state(jaxdl.FullyConnected(3), jaxdl.Sgd(0.1), 0, (2, 4))
    assert train_state.params["weights"].shape == (4, 3)


def test_train_step_traces_once_per_input_shape():
    traces = []

    def counting_loss(outputs, labels):
        traces.append(outputs.shape)
        return jaxdl.cross_entropy(outputs, labels)

    model = iris_net()
    optimizer = jaxdl.Adam(1e-3)
    train_state = jaxdl.create_train_state(model, optimizer, jax.random.key(0), (8, 4))
    step = jaxdl.make_train_step(model, counting_loss, optimizer)
    for _ in range(5):
        train_state, _ = step(train_state, jnp.ones((8, 4), jnp.float32), jnp.zeros(8, jnp.int32))
    # One trace of the step: the loss on the batch, and on one example (the example_loss metric).
    assert traces == [(8, 3), (1, 3)]
    for _ in range(3):
        train_state, _ = step(train_state, jnp.ones((16, 4), jnp.float32), jnp.zeros(16, jnp.int32))
    assert traces == [(8, 3), (1, 3), (16, 3), (1, 3)]
    assert int(train_state.step) == 8


@pytest.mark.parametrize("optimizer,iterations", [
    (jaxdl.Sgd(1e-3), 4000), (jaxdl.SgdWithMomentum(1e-3, 0.8), 2000), (jaxdl.Adam(1e-3, 0.9, 0.999), 3000),
])
def test_iris_reaches_exercise_accuracy(optimizer, iterations):
    net, x_test, y_test = train_iris(iris_net(), optimizer, iterations, 100)
    assert float(jaxdl.accuracy(net.test(x_test), y_test)) > 0.9
    assert len(net.loss) == iterations and net.loss[-1] < net.loss[0]


def test_iris_with_batch_norm_and_dropout_evaluates_deterministically():
    net, x_test, y_test = train_iris(iris_net(batch_norm=True), jaxdl.Adam(1e-2), 2000, 50)
    first, second = net.test(x_test), net.test(x_test)
    np.testing.assert_array_equal(first, second)
    assert float(jaxdl.accuracy(first, y_test)) > 0.8
    net, x_test, _ = train_iris(iris_net(jaxdl.Dropout(0.7)), jaxdl.Adam(1e-2), 300, 50)
    np.testing.assert_array_equal(net.test(x_test), net.test(x_test))


def digit_net(dropout=False, batch_norm=False):
    he, bias = jaxdl.He(), jaxdl.Constant(0.1)
    bn = [jaxdl.BatchNormalization(decay=0.8)] if batch_norm else []
    return jaxdl.Serial(
        *bn, jaxdl.Conv(4, (3, 3), weights_initializer=he, bias_initializer=bias), *bn, jaxdl.ReLU(),
        jaxdl.Flatten(), jaxdl.FullyConnected(128, he, bias), *bn,
        *([jaxdl.Dropout(0.7)] if dropout else []), jaxdl.ReLU(),
        jaxdl.FullyConnected(85, he, bias), jaxdl.ReLU(), jaxdl.FullyConnected(10, he, bias), jaxdl.SoftMax())


@pytest.mark.parametrize("name,learning_rate,regularizer,dropout,batch_norm", [
    ("plain", 5e-3, None, False, False),
    ("l2", 5e-3, jaxdl.L2Regularizer(8e-2), False, False),
    ("l1", 5e-3, jaxdl.L1Regularizer(8e-2), False, False),
    ("dropout", 5e-3, jaxdl.L2Regularizer(4e-4), True, False),
    ("batch_norm", 1e-2, None, False, True),
    ("all", 1e-2, jaxdl.L2Regularizer(8e-2), False, True),
])
def test_digits_variants_learn_in_100_iterations(name, learning_rate, regularizer, dropout, batch_norm):
    (x, y), (x_test, y_test) = digits()
    optimizer = jaxdl.Adam(learning_rate, 0.98, 0.999, regularizer=regularizer)
    net = jaxdl.NeuralNetwork(digit_net(dropout, batch_norm), jaxdl.cross_entropy, optimizer,
                              input_shape=(150, 1, 8, 8), seed=1)
    net.train(batches(x, y, 150), iterations=100)
    assert float(jaxdl.accuracy(net.test(x_test), y_test)) > 0.3


@pytest.mark.parametrize("regularizer", [jaxdl.L1Regularizer(8e-2), jaxdl.L2Regularizer(8e-2)])
def test_reported_loss_adds_the_regularization_loss(regularizer):
    model = iris_net()
    (x, y), _ = iris()
    plain = jaxdl.NeuralNetwork(model, jaxdl.cross_entropy, jaxdl.Sgd(1e-3), input_shape=(100, 4))
    regularized = jaxdl.NeuralNetwork(model, jaxdl.cross_entropy, jaxdl.Sgd(1e-3, regularizer=regularizer),
                                      input_shape=(100, 4))
    expected = float(regularizer.norm(regularized.params, model))
    assert expected > 0
    np.testing.assert_allclose(regularized.train_step(x, y) - plain.train_step(x, y), expected, rtol=1e-5)


def test_penalty_in_the_loss_is_differentiated():
    model = jaxdl.Serial(jaxdl.FullyConnected(2))
    penalty = jaxdl.L2Regularizer(0.5)
    train_state = jaxdl.create_train_state(model, jaxdl.Sgd(1.0), jax.random.key(0), (3, 2), jnp.float64)
    step = jaxdl.make_train_step(model, lambda out, y: jnp.zeros(()), jaxdl.Sgd(1.0), penalty=penalty)
    new_state, metrics = step(train_state, jnp.ones((3, 2)), None)
    w = train_state.params["fully_connected_0"]["weights"]
    np.testing.assert_allclose(new_state.params["fully_connected_0"]["weights"], w - 1.0 * 0.5 * 2 * w, rtol=1e-12)
    np.testing.assert_allclose(metrics["loss"], penalty.norm(train_state.params, model), rtol=1e-12)


def test_train_step_updates_batch_norm_state_and_dropout_key():
    model = jaxdl.Serial(jaxdl.BatchNormalization(), jaxdl.Dropout(0.5), jaxdl.FullyConnected(2))
    train_state = jaxdl.create_train_state(model, jaxdl.Sgd(0.1), jax.random.key(0), (4, 3))
    step = jaxdl.make_train_step(model, lambda out, y: jnp.sum(out ** 2), jaxdl.Sgd(0.1))
    x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 3)), jnp.float32)
    after, _ = step(train_state, x, None)
    assert int(after.state["batch_normalization_0"]["count"]) == 1
    assert not np.array_equal(jax.random.key_data(after.key), jax.random.key_data(train_state.key))


def test_neural_network_train_by_epochs_and_argument_errors():
    (x, y), _ = iris()
    data = [(x[:50], y[:50]), (x[50:], y[50:])]
    net = jaxdl.NeuralNetwork(iris_net(), jaxdl.cross_entropy, jaxdl.Adam(1e-2), input_shape=(50, 4))
    assert len(net.train(data, epochs=3)) == 6
    assert len(net.train(data, iterations=5)) == 5
    with pytest.raises(ValueError, match="exactly one"):
        net.train(data)
    with pytest.raises(ValueError, match="yielded nothing"):
        net.train([], iterations=1)


def test_optax_transformations_plug_into_the_train_step():
    model = iris_net()
    (x, y), (x_test, y_test) = iris()
    net = jaxdl.NeuralNetwork(model, jaxdl.cross_entropy, optax.adamw(1e-2), input_shape=(100, 4))
    net.train([(x, y)], iterations=300)
    assert float(jaxdl.accuracy(net.test(x_test), y_test)) > 0.9


def test_evaluate_counts_correct_predictions_exactly():
    model = jaxdl.Serial(jaxdl.Flatten())
    predict = jaxdl.make_predict(model)
    outputs = np.eye(3)[[0, 1, 2, 0, 1]]
    labels = np.array([0, 1, 0, 0, 2])
    result = jaxdl.evaluate(predict, {}, {}, [(outputs[:2], labels[:2]), (outputs[2:], labels[2:])],
                            jaxdl.cross_entropy)
    assert result["accuracy"] == 3 / 5 and result["count"] == 5
    np.testing.assert_allclose(result["loss"], float(jaxdl.cross_entropy(outputs, labels)) / 5)
    with pytest.raises(ValueError, match="empty"):
        jaxdl.evaluate(predict, {}, {}, [])
