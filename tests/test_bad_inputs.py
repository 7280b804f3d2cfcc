"""Bad inputs to the functional API give clear errors, not silent wrong results (issue 11, 1-3).

One table of (id, callable, exception, message regex) run by one parametrized test, and
separate tests where a behaviour rather than an error is expected.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import checkify

import jaxdl
import jaxdl.losses

KEY = jax.random.key(0)
PROBABILITIES = jax.nn.softmax(jnp.arange(12.0).reshape(4, 3))


def apply(layer, shape, *, train, init_shape=None, dtype=jnp.float32):
    """Initializes ``layer`` for ``init_shape`` (default ``shape``) and applies it to zeros."""
    params, state = layer.init(KEY, init_shape or shape)
    return layer.apply(params, state, jnp.zeros(shape, dtype), key=KEY, train=train)


def small_conv_model():
    return jaxdl.Serial(jaxdl.Conv(2, (3, 3)), jaxdl.Pooling(2), jaxdl.Flatten(),
                        jaxdl.FullyConnected(10), jaxdl.SoftMax())


def train_step_on_empty_batch():
    model, optimizer = small_conv_model(), jaxdl.Sgd(0.1)
    train_state = jaxdl.create_train_state(model, optimizer, 0, (2, 1, 8, 8))
    step = jaxdl.make_train_step(model, jaxdl.cross_entropy, optimizer)
    step(train_state, jnp.zeros((0, 1, 8, 8)), jnp.zeros((0,), jnp.int32))


def train_step_with_opt_state_of(other_model):
    optimizer = jaxdl.Adam(1e-3)
    model = jaxdl.Serial(jaxdl.FullyConnected(10), jaxdl.SoftMax())
    train_state = jaxdl.create_train_state(model, optimizer, 0, (4, 3))
    other = jaxdl.create_train_state(other_model, optimizer, 0, (4, 3))
    step = jaxdl.make_train_step(model, jaxdl.cross_entropy, optimizer)
    step(train_state._replace(opt_state=other.opt_state), jnp.ones((4, 3)), jnp.arange(4))


LABELS_TOO_LARGE = jnp.array([0, 1, 2, 10])
LABELS_NEGATIVE = jnp.array([0, -1, 1, 2])
OUT_OF_RANGE = r"labels must be class indices in \[0, 3\) for 3 classes, got 1 label\(s\) outside it: "
EMPTY = r"expected a non-empty batch in training, got input of shape "
PER_CHANNEL = r"BatchNormalization\(.*\): expected more than 1 value per channel when training.*got input of shape "

CASES = [
    # regularizer strengths: a wrong type is a TypeError, a wrong value a ValueError (issue 21)
    ("l2_alpha_bool", lambda: jaxdl.L2Regularizer(True), TypeError, r"L2Regularizer: alpha must be a real number, got True"),
    ("l1_alpha_string", lambda: jaxdl.L1Regularizer("0.1"), TypeError, r"L1Regularizer: alpha must be a real number, got '0.1'"),
    ("l2_alpha_nan", lambda: jaxdl.L2Regularizer(float("nan")), ValueError,
     r"L2Regularizer: alpha must be a finite number >= 0, got nan"),
    ("l2_alpha_negative", lambda: jaxdl.L2Regularizer(-0.1), ValueError,
     r"L2Regularizer: alpha must be a finite number >= 0, got -0.1"),
    # 1. integer labels out of range (concrete values: checked on the host)
    ("cross_entropy_label_10", lambda: jaxdl.cross_entropy(PROBABILITIES, LABELS_TOO_LARGE),
     ValueError, "cross_entropy: " + OUT_OF_RANGE + "10"),
    ("cross_entropy_label_-1", lambda: jaxdl.cross_entropy(PROBABILITIES, LABELS_NEGATIVE),
     ValueError, "cross_entropy: " + OUT_OF_RANGE + "-1"),
    ("softmax_cross_entropy_label_10", lambda: jaxdl.softmax_cross_entropy(PROBABILITIES, LABELS_TOO_LARGE),
     ValueError, "softmax_cross_entropy: " + OUT_OF_RANGE + "10"),
    ("accuracy_label_-1", lambda: jaxdl.accuracy(PROBABILITIES, LABELS_NEGATIVE),
     ValueError, "accuracy: " + OUT_OF_RANGE + "-1"),
    ("correct_predictions_label_3", lambda: jaxdl.correct_predictions(PROBABILITIES, np.array([3, 0, 1, 2])),
     ValueError, "accuracy: " + OUT_OF_RANGE + "3"),
    ("labels_closed_over_in_jit", lambda: jax.jit(lambda p: jaxdl.cross_entropy(p, LABELS_TOO_LARGE))(PROBABILITIES),
     ValueError, "cross_entropy: " + OUT_OF_RANGE + "10"),
    # 2. empty and tiny batches in training (refused at trace time)
    ("train_step_empty_batch", train_step_on_empty_batch, ValueError, r"Conv\(.*\): " + EMPTY + r"\(0, 1, 8, 8\)"),
    ("conv_empty_batch", lambda: apply(jaxdl.Conv(2, (3, 3)), (0, 1, 6, 6), train=True),
     ValueError, r"Conv\(.*\): " + EMPTY + r"\(0, 1, 6, 6\)"),
    ("pooling_empty_batch", lambda: apply(jaxdl.Pooling(2), (0, 1, 6, 6), train=True),
     ValueError, r"Pooling\(.*\): " + EMPTY),
    ("fully_connected_empty_batch", lambda: apply(jaxdl.FullyConnected(3), (0, 4), train=True),
     ValueError, r"FullyConnected\(.*\): " + EMPTY + r"\(0, 4\)"),
    ("rnn_empty_batch", lambda: apply(jaxdl.RNN(3), (0, 5, 4), train=True),
     ValueError, r"RNN\(.*\): expected a non-empty batch and sequence in training, got input of shape \(0, 5, 4\)"),
    ("lstm_no_time_steps", lambda: apply(jaxdl.LSTM(3), (2, 0, 4), train=True),
     ValueError, r"LSTM\(.*\): expected a non-empty batch and sequence.*\(2, 0, 4\)"),
    ("gru_rank2_no_time_steps", lambda: apply(jaxdl.GRU(3, memorize=True), (0, 4), train=True),
     ValueError, r"GRU\(.*\): expected a non-empty batch and sequence.*\(0, 4\)"),
    ("batch_norm_empty_batch", lambda: apply(jaxdl.BatchNormalization(), (0, 4), train=True),
     ValueError, PER_CHANNEL + r"\(0, 4\) with 0"),
    ("batch_norm_one_vector", lambda: apply(jaxdl.BatchNormalization(), (1, 4), train=True),
     ValueError, PER_CHANNEL + r"\(1, 4\) with 1"),
    ("batch_norm_one_pixel_image", lambda: apply(jaxdl.BatchNormalization(), (1, 2, 1, 1), train=True),
     ValueError, PER_CHANNEL + r"\(1, 2, 1, 1\) with 1"),
    # 3. loose arguments, refused at construction
    ("dropout_rate_string", lambda: jaxdl.Dropout("0.5"),
     TypeError, r"Dropout: rate \(the drop probability\) must be a real number, got '0.5' of type str"),
    ("dropout_rate_bool", lambda: jaxdl.Dropout(True), TypeError, r"Dropout: rate.*got True of type bool"),
    ("dropout_int_input", lambda: apply(jaxdl.Dropout(0.3), (4, 5), train=True, dtype=jnp.int32),
     TypeError, r"Dropout\(rate=0.3\) expects a floating-point input, got dtype int32"),
    ("sgd_learning_rate_string", lambda: jaxdl.Sgd("0.1"),
     TypeError, r"Sgd: learning_rate must be a real number, got '0.1' of type str"),
    ("sgd_learning_rate_bool", lambda: jaxdl.Sgd(True), TypeError, r"Sgd: learning_rate.*type bool"),
    ("sgd_learning_rate_inf", lambda: jaxdl.Sgd(float("inf")),
     ValueError, r"Sgd: learning_rate must be a finite number > 0 or a schedule, got inf"),
    # (NaN was refused before too, with the message "must be > 0")
    ("momentum_learning_rate_nan", lambda: jaxdl.SgdWithMomentum(float("nan")),
     ValueError, r"SgdWithMomentum: learning_rate must be a finite number > 0.*got nan"),
    ("adam_learning_rate_inf", lambda: jaxdl.Adam(np.float32("inf")), ValueError, r"Adam: learning_rate.*got .*inf"),
    ("momentum_string", lambda: jaxdl.SgdWithMomentum(0.1, "0.9"),
     TypeError, r"SgdWithMomentum: momentum must be a real number, got '0.9' of type str"),
    ("adam_eps_0", lambda: jaxdl.Adam(1e-3, eps=0), ValueError, r"Adam: eps must be a finite number > 0, got 0"),
    ("adam_eps_negative", lambda: jaxdl.Adam(1e-3, eps=-1), ValueError, r"Adam: eps must be.*> 0, got -1"),
    ("adam_eps_inf", lambda: jaxdl.Adam(1e-3, eps=float("inf")), ValueError, r"Adam: eps.*got inf"),
    # sizes: a wrong type is a TypeError, a wrong value a ValueError (issue 21)
    ("fully_connected_string", lambda: jaxdl.FullyConnected("3"),
     TypeError, r"FullyConnected: output_size must be a positive int, got '3' of type str"),
    ("fully_connected_zero", lambda: jaxdl.FullyConnected(0),
     ValueError, r"FullyConnected: output_size must be a positive int, got 0"),
    ("conv_kernel_zero", lambda: jaxdl.Conv(2, (3, 0)), ValueError, r"Conv: kernel_shape.*got \(3, 0\)"),
    ("fully_connected_bool", lambda: jaxdl.FullyConnected(True),
     TypeError, r"FullyConnected: output_size must be a positive int, got True"),
    ("conv_num_kernels_bool", lambda: jaxdl.Conv(True, (3, 3)), TypeError, r"Conv: num_kernels must be a positive int, got True"),
    ("conv_kernel_bool", lambda: jaxdl.Conv(2, True), TypeError, r"Conv: kernel_shape must be a positive int.*got True"),
    ("conv_kernel_entry_bool", lambda: jaxdl.Conv(2, (3, True)), TypeError, r"Conv: kernel_shape.*got \(3, True\)"),
    ("conv_stride_bool", lambda: jaxdl.Conv(2, (3, 3), stride=True), TypeError, r"Conv: stride.*got True"),
    ("pooling_bool", lambda: jaxdl.Pooling(True), TypeError, r"Pooling: pool_shape must be a positive int.*got True"),
    ("pooling_stride_bool", lambda: jaxdl.Pooling(2, stride=(1, True)), TypeError, r"Pooling: stride.*\(1, True\)"),
    ("batch_norm_decay_string", lambda: jaxdl.BatchNormalization(decay="0.9"),
     TypeError, r"BatchNormalization: decay must be a real number, got '0.9'"),
    ("create_train_state_int_dtype", lambda: jaxdl.create_train_state(
        small_conv_model(), jaxdl.Sgd(0.1), KEY, (2, 1, 8, 8), dtype=jnp.int32),
     TypeError, r"create_train_state: dtype must be a floating-point dtype \(e.g. jnp.float32\), got <class '.*int32'>"),
    # (a Flatten before the same FullyConnected would not differ: Serial keys count per layer type)
    ("opt_state_of_other_model", lambda: train_step_with_opt_state_of(
        jaxdl.Serial(jaxdl.FullyConnected(10), jaxdl.FullyConnected(10), jaxdl.SoftMax())),
     ValueError, r"make_train_step: expected an opt_state matching optimizer.init\(params\).*tree structure"),
    ("opt_state_of_other_sizes", lambda: train_step_with_opt_state_of(
        jaxdl.Serial(jaxdl.FullyConnected(5), jaxdl.SoftMax())),
     ValueError, r"make_train_step: expected an opt_state matching.*expected leaf shape \(10,\), got \(5,\)"),
]


@pytest.mark.parametrize("make,error,message", [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_bad_input_is_a_clear_error(make, error, message):
    with pytest.raises(error, match=message):
        make()


# ---------------------------------------------------------------- 1. labels under jit: checkify
@pytest.mark.parametrize("loss", [jaxdl.cross_entropy, jaxdl.softmax_cross_entropy, jaxdl.accuracy])
@pytest.mark.parametrize("labels,bad", [(LABELS_TOO_LARGE, 10), (LABELS_NEGATIVE, -1)])
def test_checkified_jitted_loss_reports_the_bad_label(loss, labels, bad):
    error, _ = checkify.checkify(jax.jit(loss))(PROBABILITIES, labels)
    assert re.search(rf"{loss.__name__}: labels must be class indices in \[0, 3\).*got label {bad}\.", error.get())
    error, _ = checkify.checkify(jax.jit(loss))(PROBABILITIES, jnp.array([0, 1, 2, 1]))
    assert error.get() is None


def test_checkified_train_step_reports_the_bad_label():
    model, optimizer = jaxdl.Serial(jaxdl.FullyConnected(3), jaxdl.SoftMax()), jaxdl.Sgd(0.1)
    train_state = jaxdl.create_train_state(model, optimizer, 0, (4, 2))
    step = jaxdl.make_train_step(model, jaxdl.cross_entropy, optimizer, jit=False)
    error, _ = checkify.checkify(jax.jit(step))(train_state, jnp.ones((4, 2)), LABELS_TOO_LARGE)
    assert "got label 10" in error.get()


def test_the_jitted_train_step_carries_no_effects_and_keeps_the_checks_for_a_callers_checkify():
    """The losses' checkify checks are JAX effects, which send every call of a jitted function
    through JAX's slow Python dispatch (519 against 89 microseconds for a small MLP's step). The
    jitted step drops them (its labels are checked on the host); called inside the caller's own
    jit, it keeps them, so a checkified caller still learns of a bad traced label."""
    model, optimizer = jaxdl.Serial(jaxdl.FullyConnected(3), jaxdl.SoftMax()), jaxdl.Sgd(0.1)
    train_state = jaxdl.create_train_state(model, optimizer, 0, (4, 2))
    step = jaxdl.make_train_step(model, jaxdl.cross_entropy, optimizer)
    plain = jaxdl.make_train_step(model, jaxdl.cross_entropy, optimizer, jit=False)
    x, labels = jnp.ones((4, 2)), jnp.array([0, 1, 2, 1])
    assert jax.make_jaxpr(step.__wrapped__)(train_state, x, labels).effects == set()
    assert jax.make_jaxpr(plain)(train_state, x, labels).effects != set()  # what the wrapper drops
    fast, slow = step(train_state, x, labels), plain(train_state, x, labels)
    for a, b in zip(jax.tree.leaves(fast), jax.tree.leaves(slow)):
        if jnp.issubdtype(a.dtype, jnp.floating):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-12)
    error, _ = checkify.checkify(jax.jit(lambda s, x, y: step(s, x, y)))(train_state, x, LABELS_TOO_LARGE)
    assert "got label 10" in error.get()
    error, _ = checkify.checkify(jax.jit(lambda s, x, y: step(s, x, y)))(train_state, x, labels)
    assert error.get() is None
    with pytest.raises(ValueError, match="make_train_step: labels must be class indices"):
        step(train_state, x, LABELS_TOO_LARGE)  # concrete: the host check


def test_a_checkified_step_reports_its_custom_losss_own_check():
    """`checkify.checkify(step)` closes over concrete arguments: the step must still see that it
    is traced and run the version that keeps the checks (a custom loss's own check included)."""
    def positive_outputs_loss(outputs, labels):
        checkify.check(jnp.all(outputs > 100), "positive_outputs_loss: outputs must exceed 100")
        return jaxdl.softmax_cross_entropy(outputs, labels)

    model, optimizer = jaxdl.FullyConnected(3), jaxdl.Sgd(0.1)
    train_state = jaxdl.create_train_state(model, optimizer, 0, (4, 2))
    step = jaxdl.make_train_step(model, positive_outputs_loss, optimizer)
    x, labels = jnp.ones((4, 2)), jnp.array([0, 1, 2, 1])
    step(train_state, x, labels)  # outside any transformation: the fast version, without the check
    error, (checked_state, _) = checkify.checkify(step)(train_state, x, labels)
    assert error.get() == "positive_outputs_loss: outputs must exceed 100 (`check` failed)"
    np.testing.assert_array_equal(np.asarray(checked_state.params["weights"]),
                                  np.asarray(step(train_state, x, labels)[0].params["weights"]))
    with pytest.raises(ValueError, match="make_train_step: labels must be class indices"):
        checkify.checkify(step)(train_state, x, LABELS_TOO_LARGE)  # concrete labels: the host check, traced or not


def test_evaluate_runs_its_jitted_helpers_without_effects():
    from jaxdl.training import evaluation

    outputs, labels = jnp.full((4, 3), 1 / 3), jnp.array([0, 1, 2, 1])
    for jaxpr in (jax.make_jaxpr(evaluation._summed_example_losses, static_argnums=0)(jaxdl.cross_entropy, outputs,
                                                                                        labels),
                  jax.make_jaxpr(evaluation._correct_count, static_argnums=2)(outputs, labels, 0.5)):
        assert jaxpr.effects == set()


def test_evaluate_enforces_a_metrics_own_checks_without_effects():
    """A metric's checkify checks are functionalized in its jitted helper (no effects: JAX's
    fast dispatch) and a failed one is raised by evaluate, naming the metric and the batch."""
    from jaxdl.training import evaluation

    def margin(outputs, labels):
        checkify.check(jnp.all(outputs >= 0), "margin: outputs must be non-negative")
        return jnp.max(outputs, axis=-1)

    outputs, labels = jnp.full((4, 3), 1 / 3), jnp.array([0, 1, 2, 1])
    assert jax.make_jaxpr(evaluation._summed_metric, static_argnums=(0, 1))("margin", margin, outputs,
                                                                            labels).effects == set()
    model = jaxdl.FullyConnected(3)
    params, state = model.init(jax.random.key(0), (4, 2))
    eval_step = jaxdl.make_eval_step(model)
    good = [(jnp.zeros((4, 2)), labels)]  # outputs = bias = 0: the check holds
    result = jaxdl.evaluate(eval_step, params, state, good, metrics={"margin": margin})
    assert result["margin"] == 0.0
    bad = good + [(-jnp.ones((4, 2)), labels)]
    bad_params = jax.tree.map(lambda p: p + 1.0, params)  # weights 1 more: row sums of -x negative
    with pytest.raises(ValueError, match=r"evaluate: metric 'margin' failed its check in batch 1: "
                                         r"margin: outputs must be non-negative"):
        jaxdl.evaluate(eval_step, bad_params, state, bad, metrics={"margin": margin})


def _compiled_program(text: str) -> list[str]:
    """The compiled HLO's instructions without metadata and with names numbered away, sorted."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(("%", "ENTRY")))
    body = re.sub(r", metadata=\{[^}]*\}", "", "\n".join(lines[start:]))
    return sorted(re.sub(r"[\w-]+\.\d+", "v", body).splitlines())


def test_label_check_adds_nothing_to_the_compiled_train_step(monkeypatch):
    """Unless checkified, the check is dropped at lowering and its predicate removed by XLA.

    The jaxprs differ (the debug check primitive and its predicate are in the traced program);
    the compiled programs are the same instruction for instruction.
    """
    model, optimizer = jaxdl.Serial(jaxdl.FullyConnected(10), jaxdl.SoftMax()), jaxdl.Adam(1e-3)
    train_state = jaxdl.create_train_state(model, optimizer, 0, (8, 4))
    x, labels = jnp.ones((8, 4)), jnp.arange(8)

    def compiled():
        step = jaxdl.make_train_step(model, jaxdl.cross_entropy, optimizer)
        return _compiled_program(step.lower(train_state, x, labels).compile().as_text())

    with_check = compiled()
    monkeypatch.setattr(jaxdl.losses, "check_labels", lambda *args: None)
    assert compiled() == with_check


def test_one_hot_labels_are_not_range_checked():
    one_hot = jax.nn.one_hot(jnp.array([0, 1, 2, 1]), 3)
    assert jnp.isfinite(jaxdl.cross_entropy(PROBABILITIES, one_hot))
    with pytest.raises(ValueError, match="outside it: 10"):  # the integer path is
        jaxdl.cross_entropy(PROBABILITIES, LABELS_TOO_LARGE)


# ---------------------------------------------------------------- 2. empty and tiny batches
@pytest.mark.parametrize("layer,shape,out_shape", [
    (jaxdl.Conv(2, (3, 3)), (0, 1, 6, 6), (0, 2, 6, 6)),
    (jaxdl.Pooling(2), (0, 1, 6, 6), (0, 1, 3, 3)),
    (jaxdl.FullyConnected(3), (0, 4), (0, 3)),
    (jaxdl.BatchNormalization(), (0, 2, 3, 3), (0, 2, 3, 3)),
    (jaxdl.RNN(3), (0, 5, 4), (0, 5, 3)),
    (jaxdl.LSTM(3), (2, 0, 4), (2, 0, 3)),
    (jaxdl.GRU(3), (0, 5, 4), (0, 5, 3)),
], ids=["conv", "pooling", "fully_connected", "batch_norm", "rnn", "lstm", "gru"])
def test_empty_batch_evaluates_to_an_empty_output_but_does_not_train(layer, shape, out_shape):
    y, _ = apply(layer, shape, train=False)
    assert y.shape == out_shape
    with pytest.raises(ValueError, match="non-empty|more than 1 value per channel"):
        apply(layer, shape, train=True)


def test_batch_norm_trains_on_one_image_but_not_on_one_vector():
    layer = jaxdl.BatchNormalization()
    params, state = layer.init(KEY, (1, 2, 3, 3))
    x = jnp.arange(18.0).reshape(1, 2, 3, 3)
    y, new_state = layer.apply(params, state, x, train=True)
    assert jnp.all(jnp.isfinite(y)) and jnp.all(new_state["var"] > 0)
    np.testing.assert_allclose(jnp.mean(y, axis=(0, 2, 3)), 0.0, atol=1e-5)
    with pytest.raises(ValueError, match=r"more than 1 value per channel.*\(1, 2\)"):
        apply(layer, (1, 2), train=True)
    y, _ = apply(layer, (1, 2), train=False)  # evaluation uses the running statistics
    assert y.shape == (1, 2)


# ---------------------------------------------------------------- 3. arguments that still work
def test_numpy_sizes_and_rates_work_and_int_seeds_still_create_train_states():
    layer = jaxdl.FullyConnected(np.int64(3))
    assert layer.output_size == 3 and type(layer.output_size) is int
    assert jaxdl.Conv(np.int32(2), (np.int64(3), 3)).kernel_shape == (3, 3)
    jaxdl.Sgd(np.float32(0.1)), jaxdl.Adam(jnp.asarray(1e-3)), jaxdl.Dropout(np.float64(0.5))
    train_state = jaxdl.create_train_state(small_conv_model(), jaxdl.Sgd(0.1), 0, (2, 1, 8, 8))
    assert train_state.params["conv_0"]["weights"].dtype == jnp.float32
    with pytest.raises(TypeError, match="create_train_state: dtype"):
        jaxdl.create_train_state(small_conv_model(), jaxdl.Sgd(0.1), 0, (2, 1, 8, 8), dtype=jnp.int32)
