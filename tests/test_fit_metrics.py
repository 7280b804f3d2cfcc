"""`fit` beyond classification (issue 21): a regression reports no accuracy and keeps `best` by
its validation loss, the caller's metrics reach the history, metrics.csv and the plot, and
`EarlyStopping` stops at the patience it was given. The loss `evaluate` and `fit` report is
one convention for summing and averaging losses, per step for sequence outputs (issue 22).
"""

from __future__ import annotations

import csv

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxdl
from jaxdl.training.evaluation import classification_labels


def squared_error(outputs, targets):
    return jnp.sum((outputs - targets) ** 2)


def absolute_error(outputs, targets):
    return jnp.abs(outputs - targets)[:, 0]


def regression_problem(seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(64, 3)).astype(np.float32)
    y = (x @ np.array([[1.5], [-2.0], [0.5]], np.float32) + 3.0).astype(np.float32)  # targets around 3, not 0/1
    return x, y


def regression_fit(tmp_path=None, **options):
    x, y = regression_problem()
    model, optimizer = jaxdl.Serial(jaxdl.FullyConnected(1)), jaxdl.Sgd(0.002)
    state = jaxdl.create_train_state(model, optimizer, 0, (16, 3))
    batches = [(x[i:i + 16], y[i:i + 16]) for i in range(0, 48, 16)]
    validation = [(x[48:], y[48:])]
    run = None if tmp_path is None else jaxdl.Run(tmp_path)
    callbacks = [*options.pop("callbacks", []), *jaxdl.default_callbacks(run, log=None)]
    return jaxdl.fit(jaxdl.make_train_step(model, squared_error, optimizer), state, batches,
                     validation_data=validation, run=run, callbacks=callbacks, **{"epochs": 4, **options})


def test_a_regression_reports_no_accuracy_and_keeps_best_by_validation_loss(tmp_path):
    result = regression_fit(tmp_path / "run")
    losses = [row["validation_loss"] for row in result.history]
    assert all(row["validation_accuracy"] is None for row in result.history)  # not "100.00%"
    assert losses[-1] < losses[0]
    assert result.best == {"epoch": int(np.argmin(losses)) + 1, "validation_loss": min(losses)}
    assert "best validation_loss" in result.message and "accuracy" not in result.message


def test_a_custom_metric_reaches_the_history_metrics_csv_and_the_plot(tmp_path):
    result = regression_fit(tmp_path / "run", metrics={"mae": absolute_error}, epochs=2)
    x, y = regression_problem()
    params, state = result.train_state.params, result.train_state.state
    outputs, _ = jaxdl.make_eval_step(jaxdl.Serial(jaxdl.FullyConnected(1)))(params, state, x[48:])
    assert result.history[-1]["validation_mae"] == pytest.approx(float(np.mean(np.abs(outputs - y[48:]))), rel=1e-5)
    with open(tmp_path / "run" / "metrics.csv") as rows:
        table = list(csv.DictReader(rows))
    assert float(table[-1]["validation_mae"]) == pytest.approx(result.history[-1]["validation_mae"])
    from PIL import Image

    assert Image.open(tmp_path / "run" / "metrics.png").size == (1500, 400)  # loss, accuracy and metrics panels


class Scores(jaxdl.Callback):
    """Adds a made-up column ``score`` to each row: 1, 2, then 2 forever."""

    def on_epoch_end(self, row, train_state):
        row["score"] = float(min(row["epoch"], 2))


def test_early_stopping_stops_at_the_patience_it_was_given():
    stopper = jaxdl.EarlyStopping("score", patience=2)  # mode max: no "loss" in the name
    result = regression_fit(epochs=10, callbacks=[Scores(), stopper], best_metric="score")
    assert result.status == "stopped" and len(result.history) == 4  # improved at 1, 2; waited at 3, 4
    assert "score did not improve for 2 epochs (best 2 at epoch 2; patience 2)" in result.message
    assert result.best["epoch"] == 2


def test_early_stopping_on_the_validation_loss_lets_an_improving_run_complete():
    result = regression_fit(epochs=3, callbacks=[jaxdl.EarlyStopping("validation_loss", patience=1)])
    assert result.status == "completed" and len(result.history) == 3


@pytest.mark.parametrize("options, error, message", [
    (dict(best_metric="validation_f1"), ValueError, r"best_metric 'validation_f1' is not a column of the history"),
    (dict(metrics=[absolute_error]), TypeError, "metrics must be a dict of name -> function"),
    (dict(metrics={"loss": absolute_error}), ValueError, "a metric name must be an identifier other than"),
    (dict(metrics={"mae": 3}), TypeError, "metric 'mae' must be a function"),
    (dict(metrics={"total": squared_error}), ValueError, r"metric 'total' must return one value per example"),
    (dict(best_mode="up"), ValueError, "best_mode must be one of"),
    (dict(best_metric="validation_accuracy"), ValueError, "accuracy needs a classifier's labels"),
])
def test_bad_metric_settings_are_clear_errors(options, error, message):
    with pytest.raises(error, match=message):
        regression_fit(epochs=1, **options)


@pytest.mark.parametrize("arguments, message", [
    (dict(patience=0), "patience must be an int >= 1"),
    (dict(mode="lower"), "mode must be 'min', 'max' or None"),
    (dict(min_delta=-1.0), "min_delta must be a number >= 0"),
])
def test_bad_early_stopping_settings_are_clear_errors(arguments, message):
    with pytest.raises(ValueError, match=message):
        jaxdl.EarlyStopping(**arguments)


def test_a_classifier_still_keeps_best_by_validation_accuracy():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(32, 4)).astype(np.float32)
    labels = (x[:, 0] > 0).astype(np.int32)
    model, optimizer = jaxdl.Serial(jaxdl.FullyConnected(2), jaxdl.SoftMax()), jaxdl.Sgd(0.1)
    result = jaxdl.fit(jaxdl.make_train_step(model, jaxdl.cross_entropy, optimizer),
                       jaxdl.create_train_state(model, optimizer, 0, (16, 4)), [(x[:16], labels[:16])],
                       validation_data=[(x[16:], labels[16:])], epochs=2, callbacks=[])
    assert result.best is not None and "validation_accuracy" in result.best
    assert all(row["validation_accuracy"] is not None for row in result.history)


@pytest.mark.parametrize("labels, shape, loss, expected", [
    (np.array([0, 2]), (2, 3), None, True),                        # class indices
    (np.eye(3)[[0, 2]], (2, 3), None, True),                       # one-hot
    (np.array([[0.1, 0.9], [0.5, 0.5]]), (2, 2), None, True),      # probability targets
    (np.array([[0.0], [1.0]]), (2, 1), jaxdl.cross_entropy, True),  # binary labels of a classifier's loss
    (np.array([[0.0], [1.0]]), (2, 1), squared_error, False),      # 0/1 regression targets
    (np.array([[6.43], [1.0]]), (2, 1), None, False),              # regression targets
    (np.array([[0.2, 0.5]]), (1, 2), None, False),                 # rows that do not sum to 1
    ((np.zeros(2), np.ones(2)), (2, 1), None, False),              # a pytree of labels
])
def test_which_labels_get_an_accuracy(labels, shape, loss, expected):
    assert classification_labels(labels, shape, loss) is expected


# ----------------------------------------------------------------------------------------
# What "loss" means per example: one convention for summing and averaging losses.


def sequence_problem():
    rng = np.random.default_rng(3)
    return rng.normal(size=(4, 7, 5)).astype(np.float32), rng.integers(0, 5, size=(4, 7)).astype(np.int32)


def reference_loss_per_step(logits, labels):
    """NumPy: -log softmax of the true class, averaged over every (example, step)."""
    shifted = logits.astype(np.float64) - logits.max(axis=-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    return float(-np.take_along_axis(log_probs, labels[..., None], axis=-1).mean())


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_evaluate_reports_the_loss_per_step_of_sequence_outputs_for_any_reduction(reduction):
    logits, labels = sequence_problem()
    loss = lambda outputs, targets: jaxdl.softmax_cross_entropy(outputs, targets, reduction=reduction)  # noqa: E731
    report = jaxdl.evaluate(lambda params, state, x: x, {}, {}, [(logits[:3], labels[:3]), (logits[3:], labels[3:])],
                            loss)
    assert report["loss"] == pytest.approx(reference_loss_per_step(logits, labels), rel=1e-5)
    assert report["count"] == 4


def test_the_per_example_loss_of_non_sequence_outputs_is_the_loss_of_the_example_alone():
    logits, labels = sequence_problem()
    flat, flat_labels = logits[:, 0], labels[:, 0]
    for reduction in ("sum", "mean"):
        values = jaxdl.losses.per_example_losses(
            lambda o, t: jaxdl.softmax_cross_entropy(o, t, reduction=reduction), flat, flat_labels)
        expected = [reference_loss_per_step(flat[i:i + 1, None], flat_labels[i:i + 1, None]) for i in range(4)]
        np.testing.assert_allclose(np.asarray(values), expected, rtol=1e-5)


def test_fit_train_loss_of_a_sequence_model_is_per_step_for_any_reduction():
    logits, labels = sequence_problem()
    model = jaxdl.Serial(jaxdl.FullyConnected(5))
    losses = {}
    for reduction in ("sum", "mean"):
        optimizer = jaxdl.Sgd(1e-3)  # one step: its loss is the starting params'
        state = jaxdl.create_train_state(model, optimizer, 0, (4, 7, 5))
        loss = lambda o, t, r=reduction: jaxdl.softmax_cross_entropy(o, t, reduction=r)  # noqa: E731
        result = jaxdl.fit(jaxdl.make_train_step(model, loss, optimizer), state, [(logits, labels)], epochs=1,
                           callbacks=[], best_metric=None)
        outputs = np.asarray(model.apply(state.params, state.state, logits)[0])
        losses[reduction] = result.history[0]["train_loss"]
        assert losses[reduction] == pytest.approx(reference_loss_per_step(outputs, labels), rel=1e-5)
    assert losses["sum"] == pytest.approx(losses["mean"], rel=1e-6)
