"""Labels, binary outputs and model/state mismatches (issue 20, items 3, 4 and part of 8).

One table of (id, callable, exception, message regex) run by one parametrized test, as in
tests/test_bad_inputs.py, then the behaviours: binary classification done right (values,
gradients, `fit`), labels checked before the jitted step, Python-list labels, 0-row batches
and a memorized model's partial last batch in `evaluate`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import jaxdl

KEY = jax.random.key(0)
PROBABILITIES = jax.nn.softmax(jnp.arange(12.0).reshape(4, 3))
COLUMN = jnp.array([[0.9], [0.2], [0.6], [0.4]])  # a Sigmoid output: P(class 1)
BINARY = np.array([1, 0, 1, 0])  # every row right at threshold 0.5
OUT_OF_RANGE = r"labels must be class indices in \[0, 3\) for 3 classes, got 1 label\(s\) outside it: "
NOT_BINARY = r"labels of a one-column \(binary\) output must be 0 or 1, got 1 label\(s\) that are not: "
NO_CLASS_AXIS = r"expected predictions with a class axis, \(batch, classes\).*got shape \(4,\)"
NOT_PROBABILITIES = r"cross_entropy: expected probabilities in \[0, 1\].*for logits use softmax_cross_entropy"
NO_X64 = r"'float64' needs JAX's 64-bit mode, which is off.*jax.config.update\('jax_enable_x64', True\)"


def classifier(classes: int = 3, features: int = 2):
    return jaxdl.Serial(jaxdl.FullyConnected(classes), jaxdl.SoftMax() if classes > 1 else jaxdl.Sigmoid())


def train_step_call(labels, *, classes: int = 3, mesh=None, loss=jaxdl.cross_entropy):
    """One jitted make_train_step call on 4 rows of 2 features."""
    model, optimizer = classifier(classes), jaxdl.Sgd(0.1)
    train_state = jaxdl.create_train_state(model, optimizer, 0, (4, 2))
    step = jaxdl.make_train_step(model, loss, optimizer, mesh=mesh)
    return step(train_state, np.ones((4, 2), np.float32), labels)


def evaluate_call(batches, *, classes: int = 3, loss=jaxdl.cross_entropy):
    model = classifier(classes)
    params, state = model.init(KEY, (4, 2))
    return jaxdl.evaluate(jaxdl.make_eval_step(model), params, state, batches, loss)


def apply_with(model, input_shape, params=None, state=None):
    own_params, own_state = model.init(KEY, input_shape)
    return model.apply(own_params if params is None else params, own_state if state is None else state,
                       jnp.ones(input_shape))


def without_x64(make):
    def run():
        with jax.enable_x64(False):
            return make()
    return run


X = np.ones((4, 2), np.float32)

CASES = [
    # item 3: 1-D predictions (no class axis) are refused, not read as one-hot labels
    ("cross_entropy_1d", lambda: jaxdl.cross_entropy(COLUMN[:, 0], BINARY),
     ValueError, "cross_entropy: " + NO_CLASS_AXIS),
    ("softmax_cross_entropy_1d", lambda: jaxdl.softmax_cross_entropy(COLUMN[:, 0], BINARY),
     ValueError, "softmax_cross_entropy: " + NO_CLASS_AXIS),
    ("accuracy_1d", lambda: jaxdl.accuracy(COLUMN[:, 0], BINARY), ValueError, "accuracy: " + NO_CLASS_AXIS),
    # item 3: probabilities outside [0, 1] (logits passed by mistake) would give a negative loss
    ("cross_entropy_probabilities_above_1", lambda: jaxdl.cross_entropy(PROBABILITIES * 3, np.array([2, 2, 2, 2])),
     ValueError, NOT_PROBABILITIES + r"\), got values from 0\.27\d* to 1\.99\d*\."),
    ("binary_cross_entropy_probability_above_1", lambda: jaxdl.cross_entropy(COLUMN * 2, BINARY),
     ValueError, NOT_PROBABILITIES),
    # item 3: a one-column output's labels are 0 or 1, whatever their dtype
    ("binary_label_2", lambda: jaxdl.cross_entropy(COLUMN, np.array([1, 0, 2, 0])),
     ValueError, "cross_entropy: " + NOT_BINARY + "2"),
    ("binary_label_-1", lambda: jaxdl.accuracy(COLUMN, np.array([1, 0, -1, 0])),
     ValueError, "accuracy: " + NOT_BINARY + "-1"),
    ("binary_float_label_half", lambda: jaxdl.softmax_cross_entropy(COLUMN, np.array([[1.0], [0.5], [0.0], [1.0]])),
     ValueError, "softmax_cross_entropy: " + NOT_BINARY + "0.5"),
    ("binary_label_string", lambda: jaxdl.cross_entropy(COLUMN, np.array(["1", "0", "1", "0"])),
     TypeError, "cross_entropy: labels must be numbers, got dtype <U1"),
    # item 4: the jitted step checks concrete labels before it runs
    ("train_step_label_-1", lambda: train_step_call(np.array([0, 1, 2, -1])),
     ValueError, "make_train_step: " + OUT_OF_RANGE + "-1"),
    ("train_step_label_3_jax_array", lambda: train_step_call(jnp.array([0, 3, 1, 2])),
     ValueError, "make_train_step: " + OUT_OF_RANGE + "3"),
    ("train_step_list_label_7", lambda: train_step_call([0, 1, 7, 2]),
     ValueError, "make_train_step: " + OUT_OF_RANGE + "7"),
    ("train_step_mesh_label_-1", lambda: train_step_call(np.array([0, -1, 1, 2]),
                                                         mesh=jaxdl.data_mesh(jax.devices()[:1])),
     ValueError, "make_train_step: " + OUT_OF_RANGE + "-1"),
    ("train_step_logits_label_10", lambda: train_step_call(np.array([0, 1, 10, 2]), loss=jaxdl.softmax_cross_entropy),
     ValueError, "make_train_step: " + OUT_OF_RANGE + "10"),
    ("train_step_binary_label_2", lambda: train_step_call(np.array([0, 1, 2, 1]), classes=1),
     ValueError, "make_train_step: " + NOT_BINARY + "2"),
    ("train_step_binary_float_label_half", lambda: train_step_call(np.array([0.0, 0.5, 1.0, 1.0]), classes=1),
     ValueError, "make_train_step: " + NOT_BINARY + "0.5"),
    ("evaluate_binary_float_label_2", lambda: evaluate_call([(X, np.array([0.0, 1.0, 2.0, 1.0]))], classes=1),
     ValueError, "evaluate: " + NOT_BINARY + "2.0"),
    # item 8: a 0-row batch, missing params or state, float64 without 64-bit mode
    ("evaluate_only_empty_batches", lambda: evaluate_call([(X[:0], np.zeros(0, int))] * 2),
     ValueError, r"evaluate: batches gave 2 batch\(es\), all of 0 rows: expected at least one example"),
    ("batch_norm_without_state", lambda: apply_with(jaxdl.BatchNormalization(), (4, 3), state={}),
     ValueError, r"BatchNormalization\(.*\): missing state entries 'count', 'mean', 'var' \(KeyError 'mean'\); "
                 r"expected params \{'beta': \(3,\), 'gamma': \(3,\)\} and state \{'count': \(\), 'mean': \(3,\), "
                 r"'var': \(3,\)\}.*got params .* and state \{\}"),
    ("fully_connected_without_params", lambda: apply_with(jaxdl.FullyConnected(2), (4, 3), params={}),
     ValueError, r"FullyConnected\(.*\): missing params entries 'bias', 'weights'"),
    ("serial_with_params_of_another_model", lambda: apply_with(
        jaxdl.Serial(jaxdl.BatchNormalization(), jaxdl.FullyConnected(2)), (4, 3),
        *jaxdl.Serial(jaxdl.FullyConnected(2)).init(KEY, (4, 3))),
     ValueError, r"Serial: the layer at 'batch_normalization_0' was given params or state without entries it needs: "
                 r"BatchNormalization\(.*\): missing params entries 'beta', 'gamma' and state entries 'count', "
                 r"'mean', 'var'.*The Serial's params have the keys \['fully_connected_0'\]"),
    ("mixed_precision_float64_without_x64", without_x64(lambda: apply_with(
        jaxdl.MixedPrecision(jaxdl.FullyConnected(2), "float64"), (4, 3))),
     ValueError, r"MixedPrecision: compute_dtype " + NO_X64),
    ("layer_init_float64_without_x64", without_x64(lambda: jaxdl.FullyConnected(2).init(KEY, (4, 3), jnp.float64)),
     ValueError, r"FullyConnected.init: dtype " + NO_X64),
    ("create_train_state_float64_without_x64", without_x64(lambda: jaxdl.create_train_state(
        classifier(), jaxdl.Sgd(0.1), 0, (4, 2), dtype="float64")),
     ValueError, r"create_train_state: dtype " + NO_X64),
]


@pytest.mark.parametrize("make,error,message", [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_bad_input_is_a_clear_error(make, error, message):
    with pytest.raises(error, match=message):
        make()


# ---------------------------------------------------------------- binary classification
def binary_reference(p, y, eps):
    """-[y ln(p + eps) + (1 - y) ln(1 - p + eps)] summed, and its gradient w.r.t. p (NumPy)."""
    p, y = np.asarray(p, np.float64)[:, 0], np.asarray(y, np.float64).reshape(-1)
    loss = -(y * np.log(p + eps) + (1 - y) * np.log(1 - p + eps))
    gradient = -y / (p + eps) + (1 - y) / (1 - p + eps)
    return loss.sum(), gradient[:, None]


@jax.jit
def binary_metrics(p, labels, inverted):
    """cross_entropy (sum, mean), its gradient, and the accuracy of the labels and the inverted labels."""
    return (jaxdl.cross_entropy(p, labels), jaxdl.cross_entropy(p, labels, reduction="mean"),
            jax.grad(jaxdl.cross_entropy)(p, labels), jaxdl.accuracy(p, labels), jaxdl.accuracy(p, inverted))


@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32])
def test_one_column_output_gets_binary_cross_entropy_and_accuracy(dtype):
    p = COLUMN.astype(dtype)
    loss, gradient = binary_reference(p, BINARY, float(jnp.finfo(dtype).eps))
    tolerance = 1e-12 if dtype == jnp.float64 else 1e-6
    layouts = {"int": BINARY, "column": BINARY[:, None], "float": BINARY.astype(np.float32), "bool": BINARY == 1}
    for name, labels in layouts.items():
        total, mean, grad, right, wrong = binary_metrics(p, labels, labels == 0)
        assert total.dtype == dtype, name
        np.testing.assert_allclose([total, mean], [loss, loss / 4], rtol=tolerance, err_msg=name)
        np.testing.assert_allclose(grad, gradient, rtol=tolerance, err_msg=name)
        assert (float(right), float(wrong)) == (1.0, 0.0), name  # argmax of one column: always "right"
    # eager, with the host checks: a Python list, and the same values
    np.testing.assert_allclose(jaxdl.cross_entropy(p, [1, 0, 1, 0]), loss, rtol=tolerance)
    np.testing.assert_array_equal(jaxdl.correct_predictions(p, [0, 1, 0, 1]), [False] * 4)


@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32])
def test_one_logit_column_gets_a_stable_sigmoid_cross_entropy(dtype):
    z = jnp.array([[3.0], [-2.0], [0.4], [-0.1], [200.0], [-200.0]], dtype)
    y = np.array([1, 0, 0, 1, 0, 1])
    p = 1 / (1 + np.exp(-np.asarray(z, np.float64)[:, 0]))
    tiny = np.log1p(np.exp(-np.abs(np.asarray(z, np.float64)[:, 0])))  # log(1 + e^-|z|): stable
    reference = np.where(y == 1, np.maximum(-z[:, 0], 0), np.maximum(z[:, 0], 0)) + tiny
    loss = jaxdl.softmax_cross_entropy(z, y, reduction="mean")
    np.testing.assert_allclose(loss, reference.mean(), rtol=1e-12 if dtype == jnp.float64 else 1e-6)
    assert np.isclose(reference[4], 200.0)  # finite for |z| = 200, where sigmoid(z) rounds to 1
    np.testing.assert_allclose(jax.grad(jaxdl.softmax_cross_entropy)(z, y)[:, 0], p - y,
                               rtol=1e-10 if dtype == jnp.float64 else 1e-5, atol=1e-30)
    assert float(jaxdl.accuracy(z, y, threshold=0.0)) == pytest.approx(2 / 6)
    assert float(jaxdl.softmax_cross_entropy(z[:, :1] * 0 + 5.0, np.zeros(6, int))) > 0  # not the softmax of 1 column


def test_binary_losses_pass_a_float64_finite_difference_check():
    y = BINARY.astype(np.float64)
    check_grads(lambda p: jaxdl.cross_entropy(p, y), (COLUMN.astype(jnp.float64),), order=1, modes=["rev"])
    check_grads(lambda z: jaxdl.softmax_cross_entropy(z, y), (jnp.array([[2.0], [-1.0], [0.3], [-4.0]]),),
                order=1, modes=["rev"])


@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32])
def test_cross_entropy_is_never_negative(dtype):
    perfect = jnp.eye(3, dtype=dtype)
    assert float(jaxdl.cross_entropy(perfect, [0, 1, 2])) == 0.0  # -ln(1 + eps) < 0 before
    assert float(jaxdl.cross_entropy(jnp.array([[1.0], [0.0]], dtype), [1, 0])) == 0.0
    assert float(jaxdl.softmax_cross_entropy(jnp.array([[50.0, -50.0]], dtype), [0])) >= 0.0
    # traced (no host check): probabilities above 1 and non-binary labels give NaN, never a negative loss
    assert np.isnan(jax.jit(jaxdl.cross_entropy)(PROBABILITIES.astype(dtype) * 3, jnp.array([2, 2, 2, 2])))
    assert np.isnan(jax.jit(jaxdl.cross_entropy)(COLUMN.astype(dtype), jnp.array([1.0, 0.0, 2.0, 0.0])))
    assert np.isnan(jax.jit(jaxdl.softmax_cross_entropy)(COLUMN.astype(dtype), jnp.array([1, 0, -1, 0])))


def two_blobs(count: int, seed: int):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, count)
    points = rng.normal(size=(count, 2)).astype(np.float32) + np.where(labels[:, None] == 1, 2.0, -2.0)
    return points.astype(np.float32), labels


def test_fit_trains_a_one_column_sigmoid_classifier_and_reports_binary_accuracy():
    x, y = two_blobs(128, 0)
    vx, vy = two_blobs(64, 1)
    model, optimizer = classifier(1), jaxdl.Adam(0.3)
    train_state = jaxdl.create_train_state(model, optimizer, 0, (32, 2))
    train = [(x[i:i + 32], y[i:i + 32]) for i in range(0, 128, 32)]
    inverted = [(vx[i:i + 32], (1 - vy[i:i + 32]).astype(np.float32)) for i in range(0, 64, 32)]  # float labels
    result = jaxdl.fit(jaxdl.make_train_step(model, jaxdl.cross_entropy, optimizer), train_state, train, epochs=3,
                       validation_data=inverted, callbacks=[])
    assert result.status == "completed"
    assert all(row["validation_accuracy"] < 0.1 for row in result.history)  # was 100% for every epoch
    assert result.best["epoch"] == 1 and result.best["validation_accuracy"] < 0.1
    right = jaxdl.evaluate(jaxdl.make_eval_step(model), result.train_state.params, result.train_state.state,
                           [(vx, vy)], jaxdl.cross_entropy)
    assert right["accuracy"] > 0.95 and 0 < right["loss"] < 0.3


def test_evaluate_thresholds_a_logit_column_at_0_for_softmax_cross_entropy():
    model = jaxdl.Serial(jaxdl.FullyConnected(1))  # logits
    params = {"fully_connected_0": {"weights": jnp.zeros((2, 1)), "bias": jnp.full((1,), 0.3)}}
    batches = [(X, np.ones(4, np.int32))]  # logit 0.3 > 0: class 1, though 0.3 < 0.5
    step = jaxdl.make_eval_step(model)
    assert jaxdl.evaluate(step, params, {}, batches, jaxdl.softmax_cross_entropy)["accuracy"] == 1.0
    assert jaxdl.evaluate(step, params, {}, batches, lambda o, y: jaxdl.softmax_cross_entropy(o, y))["accuracy"] == 0.0
    assert jaxdl.evaluate(step, params, {}, batches, threshold=0.0)["accuracy"] == 1.0


# ---------------------------------------------------------------- labels before the jitted step
def test_the_label_check_shares_the_steps_trace_and_can_be_turned_off():
    traces = []

    def loss(outputs, labels):
        traces.append(outputs.shape)
        return jaxdl.cross_entropy(outputs, labels)

    model, optimizer = classifier(), jaxdl.Sgd(0.1)
    train_state = jaxdl.create_train_state(model, optimizer, 0, (4, 2))
    step = jaxdl.make_train_step(model, loss, optimizer)
    for labels in (np.array([0, 1, 2, 0]), [2, 1, 0, 0], jnp.array([1, 1, 1, 1])):
        train_state, _ = step(train_state, X, labels)
    assert len(traces) == 2  # one trace (the loss and the per-example losses), not one more for the check
    assert step.mesh is None and hasattr(step, "lower")
    unchecked = jaxdl.make_train_step(model, jaxdl.cross_entropy, optimizer, check_labels=False)
    _, metrics = unchecked(train_state, X, np.array([0, 1, 2, -1]))  # the caller asked: -1 trains as class 2
    assert np.isfinite(metrics["loss"])


# ---------------------------------------------------------------- evaluate: lists, empty batches, memory
def test_evaluate_takes_list_labels_and_skips_empty_batches():
    labels = np.array([0, 1, 2, 1])
    reference = evaluate_call([(X, labels)])
    assert evaluate_call([(X, labels.tolist())]) == reference
    with_empty = evaluate_call([(X[:0], np.zeros(0, int)), (X, labels), (X[:0], [])])
    assert with_empty == reference and reference["count"] == 4
    assert float(jaxdl.cross_entropy(PROBABILITIES, [0, 1, 2, 1])) == float(jaxdl.cross_entropy(PROBABILITIES, labels))


def test_a_memorized_model_evaluates_a_partial_last_batch():
    model = jaxdl.Serial(jaxdl.LSTM(4, memorize=True), jaxdl.FullyConnected(1), jaxdl.Sigmoid())
    params, state = model.init(KEY, (4, 5, 3))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(7, 5, 3)).astype(np.float32)
    y = (rng.uniform(size=(7, 5)) > 0.5).astype(np.int32)
    step = jaxdl.make_eval_step(model)
    result = jaxdl.evaluate(step, params, state, [(x[:4], y[:4]), (x[4:], y[4:])], jaxdl.cross_entropy)
    # reference: the last batch padded to the memorized batch size, the padding rows dropped
    padded = np.concatenate([x[4:], np.zeros((1, 5, 3), np.float32)])
    first, carried = step(params, jaxdl.reset_memory(model, state), x[:4])
    last, _ = step(params, carried, padded)
    outputs, labels = np.concatenate([first, last[:3]]), y[:, :, None]
    assert result["count"] == 7
    assert result["accuracy"] == pytest.approx(np.mean((outputs > 0.5) == (labels == 1)))
    # evaluate's loss per example of a sequence output is the mean over its 5 steps
    expected_loss = float(jaxdl.cross_entropy(jnp.asarray(outputs, jnp.float64), labels)) / (7 * 5)
    assert result["loss"] == pytest.approx(expected_loss, rel=1e-5)
    with pytest.raises(ValueError, match=r"holds a state 'h' of shape \(4, 4\), expected \(3, 4\)"):
        step(params, carried, x[4:])  # outside evaluate, another batch size is still an error
