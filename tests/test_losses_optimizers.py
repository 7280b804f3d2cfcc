"""Losses, optimizers and regularizers against the exercise's numbers."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxdl


# ---------------------------------------------------------------- losses
def one_hot(indices, classes=4):
    return np.eye(classes)[indices]


def test_cross_entropy_high_loss_matches_exercise():
    labels = one_hot(np.full(9, 2))
    prediction = one_hot(np.full(9, 1))
    np.testing.assert_allclose(jaxdl.cross_entropy(prediction, labels), 324.3928805, atol=1e-4)


def test_cross_entropy_zero_loss_and_integer_labels():
    labels = one_hot(np.arange(9) % 4)
    np.testing.assert_allclose(jaxdl.cross_entropy(labels, labels), 0.0, atol=1e-7)
    p = np.random.default_rng(0).dirichlet(np.ones(4), size=9)
    np.testing.assert_allclose(jaxdl.cross_entropy(p, labels), jaxdl.cross_entropy(p, np.arange(9) % 4))
    np.testing.assert_allclose(
        jaxdl.cross_entropy(p, labels, reduction="mean"), jaxdl.cross_entropy(p, labels) / 9)


def test_cross_entropy_gradient_matches_exercise_backward():
    labels = one_hot(np.arange(9) % 4)
    p = jnp.asarray(np.random.default_rng(1).uniform(size=(9, 4)))
    grad = jax.grad(jaxdl.cross_entropy)(p, labels)
    np.testing.assert_allclose(grad, -labels / (p + np.finfo(float).eps), rtol=1e-12)


def test_softmax_cross_entropy_equals_softmax_then_cross_entropy():
    logits = jnp.asarray(np.random.default_rng(2).normal(size=(9, 4)))
    labels = np.arange(9) % 4
    reference = jaxdl.cross_entropy(jax.nn.softmax(logits), labels, eps=0.0)
    np.testing.assert_allclose(jaxdl.softmax_cross_entropy(logits, labels), reference, rtol=1e-12)
    assert np.isfinite(jaxdl.softmax_cross_entropy(jnp.asarray([[1e4, -1e4]]), np.array([1])))


def test_softmax_cross_entropy_backward_high_loss_matches_exercise():
    labels = one_hot(np.arange(9) % 4)
    logits = -10.0 * (labels - 1)
    grad = jax.grad(jaxdl.softmax_cross_entropy)(jnp.asarray(logits), labels)
    np.testing.assert_allclose(grad[labels == 0], 1 / 3, atol=1e-3)
    np.testing.assert_allclose(grad[labels == 1], -1, atol=1e-3)


@pytest.mark.parametrize("labels", [np.zeros((9, 3)), np.zeros((8,), int), np.zeros((9, 4, 1))])
def test_labels_of_wrong_shape_are_a_clear_error(labels):
    with pytest.raises(ValueError, match=r"cross_entropy: labels must be one-hot.*\(9, 4\)"):
        jaxdl.cross_entropy(np.full((9, 4), 0.25), labels)


def test_float_class_indices_are_a_type_error():
    with pytest.raises(TypeError, match="integer class indices"):
        jaxdl.softmax_cross_entropy(np.zeros((9, 4)), np.zeros(9))


# ---------------------------------------------------------------- optimizers
def updates_sequence(optimizer, weights, gradients):
    """Applies optimizer.update like the exercise's calculate_update, returns each result."""
    w = jnp.asarray(weights, jnp.float64)
    opt_state = optimizer.init(w)
    results = []
    for g in gradients:
        updates, opt_state = optimizer.update(jnp.asarray(g, jnp.float64), opt_state, w)
        w = optax.apply_updates(w, updates)
        results.append(w)
    return results


def test_sgd_matches_exercise():
    opt = jaxdl.Sgd(1.0)
    assert float(updates_sequence(opt, 1.0, [1.0])[0]) == 0.0
    assert float(updates_sequence(opt, 0.0, [1.0])[0]) == -1.0


def test_momentum_matches_exercise():
    results = updates_sequence(jaxdl.SgdWithMomentum(1.0, 0.9), 1.0, [1.0, 1.0])
    np.testing.assert_allclose(results, [0.0, -1.9], atol=1e-12)


def test_adam_matches_exercise():
    results = updates_sequence(jaxdl.Adam(1.0, 0.01, 0.02), 1.0, [1.0, 0.5])
    np.testing.assert_almost_equal(float(results[0]), 0.0, decimal=7)
    np.testing.assert_almost_equal(float(results[1]), -0.9814473195614205, decimal=7)


def test_adam_matches_a_numpy_reference_over_many_steps():
    rng = np.random.default_rng(0)
    grads = rng.normal(size=(20, 3))
    lr, b1, b2, eps = 0.1, 0.9, 0.999, 1e-8
    w, m, v = np.ones(3), np.zeros(3), np.zeros(3)
    for k, g in enumerate(grads, start=1):
        m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
        w = w - lr * (m / (1 - b1 ** k)) / (np.sqrt(v / (1 - b2 ** k)) + eps)
    np.testing.assert_allclose(updates_sequence(jaxdl.Adam(lr), np.ones(3), grads)[-1], w, rtol=1e-10)


def test_optimizers_work_inside_optax_chain():
    chained = optax.chain(optax.clip_by_global_norm(1.0), jaxdl.Sgd(1.0))
    state = chained.init(jnp.zeros(2))
    updates, _ = chained.update(jnp.asarray([3.0, 4.0]), state, jnp.zeros(2))
    np.testing.assert_allclose(updates, [-0.6, -0.8], rtol=1e-6)


@pytest.mark.parametrize("make", [lambda: jaxdl.Sgd(0), lambda: jaxdl.SgdWithMomentum(1.0, 1.0),
                                  lambda: jaxdl.Adam(1.0, beta1=1.5)])
def test_bad_hyperparameters_are_rejected(make):
    with pytest.raises(ValueError):
        make()


def test_learning_rate_schedule_is_used_by_step_and_shrinkage():
    schedule = optax.piecewise_constant_schedule(1.0, {1: 0.5})
    opt = jaxdl.Sgd(schedule, regularizer=jaxdl.L2Regularizer(1.0))
    results = updates_sequence(opt, 2.0, [0.0, 0.0])
    np.testing.assert_allclose(results, [0.0, 0.0])  # w - lr*w with lr=1
    results = updates_sequence(opt, 2.0, [1.0, 1.0])
    np.testing.assert_allclose(results, [-1.0, -1.0])  # 2 - 2 - 1; then -1 + 0.5 - 0.5


# ---------------------------------------------------------------- regularizers (exercise 5.12)
STRENGTH = 1337


def test_l1_gradient_and_norm_match_exercise():
    w = np.ones((4, 5))
    w[1:3, 2:4] *= -2
    expected = np.full((4, 5), STRENGTH)
    expected[1:3, 2:4] = -STRENGTH
    reg = jaxdl.L1Regularizer(STRENGTH)
    np.testing.assert_allclose(reg.gradient(jnp.asarray(w)), expected, atol=1e-10)
    np.testing.assert_allclose(reg.norm(jnp.asarray(w)), 24 * STRENGTH)


def test_l2_gradient_and_norm_match_exercise():
    reg = jaxdl.L2Regularizer(STRENGTH)
    np.testing.assert_allclose(reg.gradient(jnp.ones((4, 5))), np.full((4, 5), STRENGTH), atol=1e-10)
    w = np.ones((4, 5))
    w[1:3, 2:4] += 1
    np.testing.assert_allclose(reg.norm(jnp.asarray(w)), 32 * STRENGTH)


@pytest.mark.parametrize("make_optimizer,regularizer,expected,decimal", [
    (lambda r: jaxdl.Sgd(2, regularizer=r), jaxdl.L1Regularizer(2), -116, 2),
    (lambda r: jaxdl.Sgd(2, regularizer=r), jaxdl.L2Regularizer(2), 268, 2),
    (lambda r: jaxdl.SgdWithMomentum(2, 0.9, regularizer=r), jaxdl.L1Regularizer(2), -188, 1),
    (lambda r: jaxdl.SgdWithMomentum(2, 0.9, regularizer=r), jaxdl.L2Regularizer(2), 196, 1),
    (lambda r: jaxdl.Adam(2, 0.9, 0.999, regularizer=r), jaxdl.L1Regularizer(2), -68, 2),
    (lambda r: jaxdl.Adam(2, 0.9, 0.999, regularizer=r), jaxdl.L2Regularizer(2), 188, 2),
])
def test_regularized_optimizers_match_exercise(make_optimizer, regularizer, expected, decimal):
    w = np.ones((4, 5))
    w[1:3, 2:4] = -1
    results = updates_sequence(make_optimizer(regularizer), w, [2 * np.ones((4, 5))] * 2)
    np.testing.assert_almost_equal(float(jnp.sum(results[1])), expected, decimal=decimal)


def test_regularizer_never_enters_adam_moments():
    params = {"fully_connected_0": {"weights": jnp.ones(3), "bias": jnp.ones(3)}}
    opt = jaxdl.Adam(0.1, regularizer=jaxdl.L2Regularizer(0.5))
    state = opt.init(params)
    zero = jax.tree.map(jnp.zeros_like, params)
    updates, state = opt.update(zero, state, params, regularized={"fully_connected_0": {"weights": True, "bias": False}})
    adam_state = state[0][0]
    assert all(float(jnp.abs(leaf).sum()) == 0 for leaf in jax.tree.leaves(adam_state.mu))
    np.testing.assert_allclose(updates["fully_connected_0"]["weights"], -0.1 * 0.5 * np.ones(3))
    np.testing.assert_allclose(updates["fully_connected_0"]["bias"], 0.0)


def test_regularizer_masks_biases_and_normalization_by_default():
    model = jaxdl.Serial(jaxdl.Conv(2, (3, 3)), jaxdl.BatchNormalization(), jaxdl.Flatten(), jaxdl.FullyConnected(3))
    params, _ = model.init(jax.random.key(0), (1, 1, 4, 4))
    params = jax.tree.map(jnp.ones_like, params)
    weights = params["conv_0"]["weights"].size + params["fully_connected_0"]["weights"].size
    np.testing.assert_allclose(jaxdl.L1Regularizer(1.0).norm(params, model), weights)
    grads = jaxdl.L2Regularizer(1.0).gradient(params, model)
    assert float(jnp.sum(grads["batch_normalization_0"]["gamma"])) == 0.0
    assert float(jnp.sum(grads["conv_0"]["bias"])) == 0.0
    everything = jaxdl.L1Regularizer(1.0, mask=lambda path: True)
    np.testing.assert_allclose(everything.norm(params), jaxdl.count_params(params))
    with pytest.raises(ValueError, match=r"L1Regularizer.norm: which leaves of a params tree are regularized comes "
                                         r"from the model's layers .*regularized=model"):
        jaxdl.L1Regularizer(1.0).norm(params)  # no name matching: the model declares its kernels


def test_regularized_optimizer_needs_params():
    opt = jaxdl.Sgd(1.0, regularizer=jaxdl.L2Regularizer(1.0))
    with pytest.raises(ValueError, match="needs the current params"):
        opt.update(jnp.ones(2), opt.init(jnp.ones(2)))


def test_negative_alpha_is_rejected():
    with pytest.raises(ValueError, match="alpha"):
        jaxdl.L2Regularizer(-1.0)
