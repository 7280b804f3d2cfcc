"""The one training loop (`jaxdl.fit`), the evaluation step and `evaluate`.

Defects this file pins (each test fails on the code before the training engine):
epochs over an exhausted iterator ran silently short; evaluation dropped a memorized
model's carried state (and started from the last training chunk's); `evaluate` divided a
mean-reduced loss by the example count again.
"""

import csv
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

import jaxdl
from jaxdl import checkpoint
from jaxdl.training import Batch, Callback

RNG = np.random.default_rng(0)
X = RNG.normal(size=(24, 4)).astype(np.float32)
Y = (X[:, 0] + X[:, 1] > 0).astype(np.int32)
BATCHES = [(X[i:i + 8], Y[i:i + 8]) for i in range(0, 24, 8)]
VALIDATION = [(X[:12], Y[:12])]


def small_model():
    return jaxdl.Serial(jaxdl.FullyConnected(6), jaxdl.BatchNormalization(), jaxdl.ReLU(), jaxdl.Dropout(0.2),
                        jaxdl.FullyConnected(2), jaxdl.SoftMax())


class Shuffled:
    """An epoch-indexed source: the order is a function of the epoch."""

    steps_per_epoch = 3

    def epoch(self, epoch):
        order = np.random.default_rng([7, epoch]).permutation(24)
        for i in range(0, 24, 8):
            yield X[order[i:i + 8]], Y[order[i:i + 8]]


def run_fit(tmp_path=None, name="run", epochs=3, *, log=None, plot=False, resume=False, resume_command=None,
            callbacks=(), train_data=None, **kwargs):
    """`fit` of the small model, with a `Run` in ``tmp_path / name`` when given and the default callbacks."""
    model, optimizer, train_step, eval_step = small_setup()
    state = jaxdl.create_train_state(model, optimizer, 0, (8, 4))
    kwargs.setdefault("validation_data", VALIDATION)
    run = None if tmp_path is None else jaxdl.Run(tmp_path / name, resume=resume)
    callbacks = [*callbacks, *jaxdl.default_callbacks(run, log=log, plot=plot, resume_command=resume_command)]
    return jaxdl.fit(train_step, state, Shuffled() if train_data is None else train_data, epochs=epochs,
                     eval_step=eval_step, run=run, callbacks=callbacks, **kwargs)


@functools.cache
def small_setup():
    """(model, optimizer, train step, eval step) of `run_fit`, built once: its runs reuse the
    compiled steps, as a user's repeated `fit` calls with the same steps do."""
    model, optimizer = small_model(), jaxdl.Adam(1e-2)
    return model, optimizer, jaxdl.make_train_step(model, jaxdl.cross_entropy, optimizer), jaxdl.make_eval_step(model)


def assert_same_tree(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_fit_equals_the_plain_step_loop():
    result = run_fit(epochs=2)
    model, optimizer = small_model(), jaxdl.Adam(1e-2)
    state = jaxdl.create_train_state(model, optimizer, 0, (8, 4))
    step = jaxdl.make_train_step(model, jaxdl.cross_entropy, optimizer)
    for epoch in range(2):
        for x, y in Shuffled().epoch(epoch):
            state, _ = step(state, x, y)
    assert_same_tree(result.train_state, state)
    assert result.status == "completed" and [row["epoch"] for row in result.history] == [1, 2]
    assert set(result.history[0]) >= {"epoch", "step", "train_loss", "validation_loss", "validation_accuracy",
                                      "epoch_seconds", "elapsed_seconds"}
    assert result.history[-1]["step"] == 6


def test_train_loss_is_the_mean_loss_per_example():
    seen = []

    class Record(Callback):
        def on_steps(self, epoch, metrics):
            seen.extend(metrics)

    result = run_fit(epochs=1, callbacks=[Record()])
    assert len(seen) == 3 and all(entry["examples"] == 8 for entry in seen)
    for entry in seen:  # cross_entropy sums over the batch: per example = data_loss / 8
        assert entry["example_loss"] == pytest.approx(entry["data_loss"] / 8, rel=1e-5)
    assert result.history[0]["train_loss"] == pytest.approx(np.mean([e["example_loss"] for e in seen]), rel=1e-6)


def test_epochs_over_a_one_shot_iterator_is_an_error_not_a_short_run():
    with pytest.raises(ValueError, match="one-shot iterator"):
        run_fit(epochs=4, train_data=iter(BATCHES))
    assert run_fit(epochs=1, train_data=iter(BATCHES)).history[0]["step"] == 3  # one epoch is fine
    net = jaxdl.NeuralNetwork(small_model(), jaxdl.cross_entropy, jaxdl.Adam(1e-2), input_shape=(8, 4))
    with pytest.raises(ValueError, match="one-shot iterator"):
        net.train((batch for batch in BATCHES), epochs=4)
    assert len(net.train(BATCHES, epochs=4)) == 12  # a list is re-iterated every epoch
    assert len(net.train(BATCHES, iterations=7)) == 7
    assert len(net.loss) == 19 and int(net.train_state.step) == 19
    with pytest.raises(ValueError, match="positive int"):
        net.train(BATCHES, epochs=-1)


def test_evaluate_reports_the_mean_loss_per_example_for_any_reduction():
    model = jaxdl.Serial(jaxdl.SoftMax())
    eval_step = jaxdl.make_eval_step(model)
    logits = RNG.normal(size=(10, 3))
    labels = RNG.integers(0, 3, 10)
    batches = [(logits[:4], labels[:4]), (logits[4:], labels[4:])]
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    reference = np.mean(-np.log(probabilities[np.arange(10), labels] + np.finfo(np.float64).eps))
    for loss_fn in (jaxdl.cross_entropy, lambda p, y: jaxdl.cross_entropy(p, y, reduction="mean")):
        result = jaxdl.evaluate(eval_step, {}, {}, batches, loss_fn)
        assert result["loss"] == pytest.approx(reference, rel=1e-10)
        assert result["count"] == 10
    predict = jaxdl.make_predict(model)  # the stateless convenience works too
    assert jaxdl.evaluate(predict, {}, {}, batches, jaxdl.cross_entropy)["loss"] == pytest.approx(reference)
    with pytest.raises(ValueError, match="empty"):
        jaxdl.evaluate(eval_step, {}, {}, [])


def memorized_model():
    return jaxdl.Serial(jaxdl.LSTM(5, memorize=True), jaxdl.FullyConnected(3))


def test_eval_step_carries_a_memorized_state_from_chunk_to_chunk():
    model = memorized_model()
    params, state = model.init(jax.random.key(0), (2, 4, 3), jnp.float64)
    x = jnp.asarray(RNG.normal(size=(2, 12, 3)))
    whole, _ = jaxdl.make_eval_step(model)(params, state, x)
    eval_step = jaxdl.make_eval_step(model)
    chunked, carried = [], state
    for start in range(0, 12, 4):
        out, carried = eval_step(params, carried, x[:, start:start + 4])
        chunked.append(out)
    np.testing.assert_allclose(jnp.concatenate(chunked, axis=1), whole, rtol=1e-12)
    assert not np.allclose(carried["lstm_0"]["h"], 0)


def test_evaluate_starts_from_reset_memory_and_carries_the_state():
    model = memorized_model()
    params, state = model.init(jax.random.key(0), (2, 4, 3), jnp.float64)
    x = jnp.asarray(RNG.normal(size=(2, 12, 3)))
    labels = jnp.asarray(RNG.integers(0, 3, (2, 12)))
    def loss(logits, labels):  # mean over batch and time: chunks and whole sequences agree
        return jaxdl.softmax_cross_entropy(logits, labels, reduction="mean")

    whole = jaxdl.evaluate(jaxdl.make_eval_step(model), params, state, [(x, labels)], loss)
    # A training state whose memory holds the last training chunk's hidden state:
    dirty = jax.tree.map(lambda leaf: leaf + 3.0, state)
    chunks = [(x[:, s:s + 4], labels[:, s:s + 4]) for s in range(0, 12, 4)]
    chunked = jaxdl.evaluate(jaxdl.make_eval_step(model), params, dirty, chunks, loss)
    assert chunked["loss"] == pytest.approx(whole["loss"], rel=1e-10)
    assert chunked["accuracy"] == whole["accuracy"]
    # Two independent groups of sequences: reset=True restarts the memory.
    groups = [Batch(x[:, :4], labels[:, :4], reset=True), Batch(x[:, 4:8], labels[:, 4:8]),
              Batch(x[:, :4], labels[:, :4], reset=True)]
    outs = []

    def recording(params, state, x):
        out, new = jaxdl.make_eval_step(model)(params, state, x)
        outs.append(out)
        return out, new

    jaxdl.evaluate(recording, params, dirty, groups, model=model)  # a step of its own: the model told
    np.testing.assert_allclose(outs[0], outs[2], rtol=1e-12)


def test_fit_resets_memory_on_batches_that_start_new_sequences():
    model, optimizer = memorized_model(), jaxdl.Adam(1e-2)
    state = jaxdl.create_train_state(model, optimizer, 0, (2, 4, 3))
    x = jnp.asarray(RNG.normal(size=(2, 8, 3)), jnp.float32)
    labels = jnp.asarray(RNG.integers(0, 3, (2, 8)))
    data = [Batch(x[:, :4], labels[:, :4], reset=True), Batch(x[:, 4:], labels[:, 4:])]
    step = jaxdl.make_train_step(model, jaxdl.softmax_cross_entropy, optimizer)
    result = jaxdl.fit(step, state, data, epochs=2, callbacks=[])
    manual = state
    for _ in range(2):
        manual = manual._replace(state=jaxdl.reset_memory(model, manual.state))
        manual, _ = step(manual, x[:, :4], labels[:, :4])
        manual, _ = step(manual, x[:, 4:], labels[:, 4:])
    assert_same_tree(result.train_state, manual)


def test_checkpoints_metrics_and_best_by_validation(tmp_path):
    logs = []
    result = run_fit(tmp_path, epochs=3, log=logs.append, best_metric="validation_loss", best_mode="min")
    losses = [row["validation_loss"] for row in result.history]
    assert result.best == {"epoch": int(np.argmin(losses)) + 1, "validation_loss": min(losses)}
    last, best = result.checkpoint_dir("last"), result.checkpoint_dir("best")
    restored, manifest = checkpoint.load_checkpoint(last, result.train_state)
    assert_same_tree(restored, result.train_state)
    assert manifest["metadata"]["epoch"] == 3 and len(manifest["metadata"]["history"]) == 3
    assert checkpoint.read_manifest(best)["metadata"]["epoch"] == result.best["epoch"]
    with open(tmp_path / "run" / "metrics.csv") as file:
        rows = list(csv.DictReader(file))
    assert [int(row["epoch"]) for row in rows] == [1, 2, 3]
    assert float(rows[-1]["validation_loss"]) == pytest.approx(losses[-1])
    assert len(logs) == 3 and logs[0].startswith("epoch 1/3: train loss")
    with pytest.raises(ValueError, match="already holds a run"):
        run_fit(tmp_path, epochs=3, best_metric="validation_loss", best_mode="min")
    with pytest.raises(ValueError, match="keeps the best epoch by 'validation_loss'"):
        run_fit(tmp_path, epochs=3, resume=True)
    with pytest.raises(ValueError, match="holds no checkpoint"):
        run_fit(tmp_path, name="empty", resume=True)


def test_metrics_plot_is_a_png(tmp_path):
    model, optimizer = small_model(), jaxdl.Adam(1e-2)
    state = jaxdl.create_train_state(model, optimizer, 0, (8, 4))
    jaxdl.fit(jaxdl.make_train_step(model, jaxdl.cross_entropy, optimizer), state, BATCHES, epochs=2,
              validation_data=VALIDATION, run=jaxdl.Run(tmp_path / "plotted"), callbacks=None)  # the defaults
    with Image.open(tmp_path / "plotted" / "metrics.png") as image:
        assert image.format == "PNG" and image.size[0] > 400


@pytest.mark.parametrize("interval, drawn_after_epochs", [(0.0, [1, 2, 3]), (1e9, [3])], ids=["due", "throttled"])
def test_metrics_plot_is_redrawn_when_due_and_always_at_the_end(tmp_path, monkeypatch, interval, drawn_after_epochs):
    drawn = []
    monkeypatch.setattr(jaxdl.training.callbacks, "PLOT_INTERVAL_SECONDS", interval)
    monkeypatch.setattr(jaxdl.training.callbacks, "plot_history", lambda path, history: drawn.append(len(history)))
    run_fit(tmp_path, epochs=3, plot=True)
    assert drawn == drawn_after_epochs


@pytest.mark.parametrize("stop", ["diverged", "interrupted"])
def test_a_run_that_stops_early_still_plots_its_whole_history(tmp_path, monkeypatch, stop):
    drawn = []
    monkeypatch.setattr(jaxdl.training.callbacks, "PLOT_INTERVAL_SECONDS", 1e9)
    monkeypatch.setattr(jaxdl.training.callbacks, "plot_history", lambda path, history: drawn.append(len(history)))
    model, optimizer = small_model(), jaxdl.Adam(1e-2)
    state = jaxdl.create_train_state(model, optimizer, 0, (8, 4))
    good = [(x, y) for x, y in BATCHES]
    poisoned = [(x * np.nan, y) for x, y in BATCHES]
    data = (lambda epoch: poisoned if epoch == 2 else good) if stop == "diverged" else good
    callbacks = [InterruptAt(2)] if stop == "interrupted" else []
    run = jaxdl.Run(tmp_path / "run")
    fit = lambda: jaxdl.fit(jaxdl.make_train_step(model, jaxdl.cross_entropy, optimizer), state, data,  # noqa: E731
                            epochs=4, validation_data=VALIDATION, run=run,
                            callbacks=[*callbacks, jaxdl.MetricsFiles(run.output_dir)])
    if stop == "interrupted":
        with pytest.raises(KeyboardInterrupt):
            fit()
    else:
        assert fit().status == "diverged"
    assert drawn == [2]  # nothing was due after epochs 1 and 2; the stop drew both rows


class InterruptAt(Callback):
    """Raises KeyboardInterrupt (as Ctrl-C would) in the given epoch."""

    def __init__(self, epoch):
        self.epoch = epoch

    def on_steps(self, epoch, metrics):
        if epoch == self.epoch:
            raise KeyboardInterrupt


def test_interrupted_run_resumes_bit_identical(tmp_path):
    unbroken = run_fit(tmp_path, "unbroken", epochs=3)
    logs = []
    with pytest.raises(KeyboardInterrupt):
        run_fit(tmp_path, "broken", epochs=3, log=logs.append, callbacks=[InterruptAt(1)], log_every=1,
                resume_command="python train.py --resume")
    assert "Interrupted in epoch 2" in logs[-1] and "(epoch 1)" in logs[-1]
    assert logs[-1].endswith("Continue with: python train.py --resume")
    with open(tmp_path / "broken" / "metrics.csv") as file:
        assert len(list(csv.DictReader(file))) == 1
    logs.clear()
    resumed = run_fit(tmp_path, "broken", epochs=3, resume=True, log=logs.append)
    assert logs[0].startswith("Resuming") and "after epoch 1 of 3" in logs[0]
    assert_same_tree(resumed.train_state, unbroken.train_state)
    for a, b in zip(resumed.history, unbroken.history):
        for key in ("step", "train_loss", "validation_loss", "validation_accuracy"):
            assert a[key] == b[key], key
    assert resumed.best == unbroken.best


@pytest.mark.parametrize("bad_epoch", [1, 2])
def test_nan_loss_stops_with_the_last_good_state(tmp_path, bad_epoch):
    model, optimizer = small_model(), jaxdl.Adam(1e-2)
    state = jaxdl.create_train_state(model, optimizer, 0, (8, 4))
    good = [(x, y) for x, y in BATCHES]
    poisoned = [(x * np.nan, y) if i == 1 else (x, y) for i, (x, y) in enumerate(BATCHES)]

    def epochs(epoch):
        return poisoned if epoch + 1 == bad_epoch else good

    result = jaxdl.fit(jaxdl.make_train_step(model, jaxdl.cross_entropy, optimizer), state, epochs, epochs=3,
                       validation_data=VALIDATION, run=jaxdl.Run(tmp_path / "run"), callbacks=[])
    assert result.status == "diverged"
    assert f"loss became nan in epoch {bad_epoch}" in result.message
    assert len(result.history) == bad_epoch - 1
    if bad_epoch == 1:
        assert "No checkpoint was written yet" in result.message
        assert_same_tree(result.train_state, state)
    else:
        last = result.checkpoint_dir("last")
        assert f"{last} (epoch {bad_epoch - 1})" in result.message
        restored, _ = checkpoint.load_checkpoint(last, state)
        assert_same_tree(result.train_state, restored)
    net = jaxdl.NeuralNetwork(small_model(), jaxdl.cross_entropy, jaxdl.Adam(1e-2), input_shape=(8, 4))
    with pytest.raises(jaxdl.TrainingDiverged, match="loss became nan"):
        net.train(poisoned, epochs=1)


def test_fit_argument_errors():
    with pytest.raises(ValueError, match="epochs must be a positive int"):
        run_fit(epochs=0)
    with pytest.raises(ValueError, match="best_mode"):
        run_fit(best_mode="largest")
    with pytest.raises(ValueError, match="best_metric 'validation_f1'"):
        run_fit(epochs=1, best_metric="validation_f1")
    with pytest.raises(TypeError, match="A batch must be"):
        run_fit(epochs=1, train_data=[X[:8]])


def test_fit_and_run_argument_errors_name_the_argument_and_show_the_call(tmp_path):
    model, optimizer = small_model(), jaxdl.Adam(1e-2)
    state = jaxdl.create_train_state(model, optimizer, 0, (8, 4))
    step = jaxdl.make_train_step(model, jaxdl.cross_entropy, optimizer)
    # A model where the step goes (as in the old fit(model, loss_fn, optimizer, ...)): the error shows the call.
    with pytest.raises(TypeError, match=r"got a model \(a Layer\).*fit\(jaxdl.make_train_step\(model, loss_fn"):
        jaxdl.fit(model, state, BATCHES, epochs=1)
    with pytest.raises(TypeError, match="takes 3 positional arguments but 5"):  # the old call itself
        jaxdl.fit(model, jaxdl.cross_entropy, optimizer, state, BATCHES, epochs=1)
    with pytest.raises(TypeError, match="fit: train_step must be callable"):
        jaxdl.fit("step", state, BATCHES, epochs=1)
    with pytest.raises(TypeError, match="fit: run must be a jaxdl.Run.*got str"):
        jaxdl.fit(step, state, BATCHES, epochs=1, run=str(tmp_path))
    with pytest.raises(TypeError, match="fit: callbacks must be a list.*got LogLines"):
        jaxdl.fit(step, state, BATCHES, epochs=1, callbacks=jaxdl.LogLines())
    with pytest.raises(TypeError, match="fit: callbacks must be Callback objects.*got builtin_function_or_method"):
        jaxdl.fit(step, state, BATCHES, epochs=1, callbacks=[print])
    with pytest.raises(TypeError, match="LogLines: log must be callable"):
        jaxdl.LogLines("stdout")
    with pytest.raises(ValueError, match="Run: overwrite=True starts a new run and resume=True continues one"):
        jaxdl.Run(tmp_path, resume=True, overwrite=True)
    with pytest.raises(TypeError, match="Run: output_dir must be a path.*got int 3"):
        jaxdl.Run(3)
    with pytest.raises(ValueError, match="Run: output_dir is an empty string"):
        jaxdl.Run("")
    with pytest.raises(TypeError, match="Run: resume must be a bool, got 'yes'"):
        jaxdl.Run(tmp_path, resume="yes")
    with pytest.raises(ValueError, match="Run: checkpoint_every_steps must be >= 1, got 0"):
        jaxdl.Run(tmp_path, checkpoint_every_steps=0)
    with pytest.raises(TypeError, match="Run: checkpoint_every_steps must be an int or None, got 2.5"):
        jaxdl.Run(tmp_path, checkpoint_every_steps=2.5)
    with pytest.raises(TypeError, match="Run: metadata must be a mapping"):
        jaxdl.Run(tmp_path, metadata=["lr", 0.1])
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(jaxdl.checkpoint.RunDirectoryError, match="is a file, not a directory"):
        jaxdl.Run(tmp_path / "a_file")


def test_a_step_of_ones_own_needs_its_model_and_loss_only_for_what_uses_them():
    model, optimizer = small_model(), jaxdl.Adam(1e-2)
    state = jaxdl.create_train_state(model, optimizer, 0, (8, 4))
    made = jaxdl.make_train_step(model, jaxdl.cross_entropy, optimizer)
    assert (made.model, made.loss_fn, made.mesh) == (model, jaxdl.cross_entropy, None)
    unjitted = jaxdl.make_train_step(model, jaxdl.cross_entropy, optimizer, jit=False)
    assert (unjitted.model, unjitted.loss_fn, unjitted.mesh) == (model, jaxdl.cross_entropy, None)

    def own_step(train_state, x, labels):  # a user's step: no attributes
        return made(train_state, x, labels)

    trained = jaxdl.fit(own_step, state, BATCHES, epochs=1, callbacks=[])  # no validation: no loss_fn needed
    assert_same_tree(trained.train_state, jaxdl.fit(made, state, BATCHES, epochs=1, callbacks=[]).train_state)
    with pytest.raises(TypeError, match="fit: train_step has no 'loss_fn' attribute, which validation needs"):
        jaxdl.fit(own_step, state, BATCHES, epochs=1, validation_data=VALIDATION, callbacks=[])
    own_step.loss_fn = jaxdl.cross_entropy
    with pytest.raises(TypeError, match="fit: train_step has no 'model' attribute"):
        jaxdl.fit(own_step, state, BATCHES, epochs=1, validation_data=VALIDATION, callbacks=[])
    result = jaxdl.fit(own_step, state, BATCHES, epochs=1, validation_data=VALIDATION, callbacks=[],
                       eval_step=jaxdl.make_eval_step(model))
    assert result.history[0]["validation_loss"] == pytest.approx(
        jaxdl.fit(made, state, BATCHES, epochs=1, validation_data=VALIDATION, callbacks=[]).history[0]["validation_loss"])


def test_default_callbacks_log_and_write_metrics_and_a_list_replaces_them(tmp_path, capsys):
    model, optimizer = small_model(), jaxdl.Adam(1e-2)
    state = jaxdl.create_train_state(model, optimizer, 0, (8, 4))
    step = jaxdl.make_train_step(model, jaxdl.cross_entropy, optimizer)
    jaxdl.fit(step, state, BATCHES, epochs=1, validation_data=VALIDATION, run=jaxdl.Run(tmp_path / "default"))
    assert capsys.readouterr().out.startswith("epoch 1/1: train loss")
    assert (tmp_path / "default" / "metrics.csv").exists()
    jaxdl.fit(step, state, BATCHES, epochs=1, validation_data=VALIDATION, run=jaxdl.Run(tmp_path / "silent"),
              callbacks=[])
    assert capsys.readouterr().out == "" and not (tmp_path / "silent" / "metrics.csv").exists()
    kinds = [type(c).__name__ for c in jaxdl.default_callbacks(jaxdl.Run(tmp_path / "x"), progress=True)]
    assert kinds == ["LogLines", "MetricsFiles", "ProgressBar"]
    assert [type(c).__name__ for c in jaxdl.default_callbacks(log=None)] == []


def test_best_metric_is_checked_against_the_columns_callbacks_declare():
    class Column(Callback):
        columns = ("weight_norm",)

        def on_epoch_end(self, row, train_state):
            row["weight_norm"] = float(sum(jnp.sum(p ** 2) for p in jax.tree.leaves(train_state.params)))

    result = run_fit(epochs=2, callbacks=[Column()], best_metric="weight_norm", best_mode="min")
    assert result.best["epoch"] in (1, 2) and "weight_norm" in result.best
    with pytest.raises(ValueError, match="best_metric 'weight_nrm' is not a column.*'weight_norm'"):
        run_fit(epochs=1, callbacks=[Column()], best_metric="weight_nrm")

    class Undeclared(Callback):  # columns unknown: the check waits for the first row
        def on_epoch_end(self, row, train_state):
            row["other"] = 1.0

    with pytest.raises(ValueError, match="best_metric 'weight_nrm' is not in the history's columns"):
        run_fit(epochs=1, callbacks=[Undeclared()], best_metric="weight_nrm")


def test_scripts_and_recipes_define_no_training_step_or_loop_of_their_own():
    root = __import__("pathlib").Path(__file__).resolve().parents[1]
    for path in [*root.glob("scripts/*.py"), *root.glob("jaxdl/recipes/*.py")]:
        text = path.read_text()
        for forbidden in ("value_and_grad", "jax.grad(", "apply_updates", ".update(grads"):
            assert forbidden not in text, (path, forbidden)
    # Thin: options, and the advice the command line phrases in its own options (issue 21).
    assert len((root / "scripts" / "train_lenet.py").read_text().splitlines()) < 215


def test_labels_out_of_range_are_refused_where_they_enter():
    bad = [(X[:8], np.array([0, 1, 0, 1, 2, 0, 1, 0], np.int32))]
    with pytest.raises(ValueError, match=r"fit: labels must be class indices in \[0, 2\).*2"):
        run_fit(epochs=1, train_data=bad)
    with pytest.raises(ValueError, match=r"evaluate: labels must be class indices in \[0, 2\).*-1"):
        run_fit(epochs=1, validation_data=[(X[:4], np.array([0, -1, 1, 0], np.int32))])
    net = jaxdl.NeuralNetwork(small_model(), jaxdl.cross_entropy, jaxdl.Adam(1e-2), input_shape=(8, 4))
    with pytest.raises(ValueError, match="fit: labels must be class indices"):
        net.train(bad, iterations=1)
    assert int(net.train_state.step) == 0  # nothing was trained on the bad batch


def test_stale_metric_temporaries_are_removed_and_the_best_value_recorded(tmp_path):
    run_fit(tmp_path, epochs=1)
    stale = tmp_path / "run" / ".metrics.png.abc123.tmp"
    stale.write_bytes(b"half a png")
    result = run_fit(tmp_path, epochs=2, resume=True)
    assert not stale.exists()
    run = checkpoint.RunCheckpoints(tmp_path / "run" / "checkpoints", read_only=True)
    assert run.manager.metrics(run.best_step())["value"] == result.best["validation_accuracy"]
    assert result.checkpoint_dir("best") == run.step_dir(run.best_step())


def test_repeated_fit_calls_compile_the_step_once():
    traces = []

    def counting_loss(outputs, labels):
        traces.append(outputs.shape)
        return jaxdl.cross_entropy(outputs, labels)

    net = jaxdl.NeuralNetwork(small_model(), counting_loss, jaxdl.Adam(1e-2), input_shape=(8, 4))
    for _ in range(3):
        net.train(BATCHES, iterations=2)
    net.train_step(*BATCHES[0])
    assert traces == [(8, 2), (1, 2)]  # one trace of the step: the batch and the per-example loss


def test_a_best_metric_without_values_is_an_error_not_a_missing_best_checkpoint(tmp_path):
    model, optimizer = memorized_model(), jaxdl.Adam(1e-2)
    state = jaxdl.create_train_state(model, optimizer, 0, (2, 4, 3))
    x = jnp.asarray(RNG.normal(size=(2, 4, 3)), jnp.float32)
    labels = (jnp.zeros((2, 4), jnp.int32), jnp.ones((2, 4)))  # a pytree: no accuracy is defined

    def weighted(logits, labels):
        return jaxdl.softmax_cross_entropy(logits, labels[0])

    with pytest.raises(ValueError, match="best_metric 'validation_accuracy' has no value in epoch 1"):
        jaxdl.fit(jaxdl.make_train_step(model, weighted, optimizer), state, [(x, labels)], epochs=1,
                  validation_data=[(x, labels)], run=jaxdl.Run(tmp_path / "run"), callbacks=[],
                  best_metric="validation_accuracy")
    # By default, a loss that is not a classifier's keeps the best epoch by its validation loss.
    result = jaxdl.fit(jaxdl.make_train_step(model, weighted, optimizer), state, [(x, labels)], epochs=1,
                       validation_data=[(x, labels)], run=jaxdl.Run(tmp_path / "default"), callbacks=[])
    assert result.best["epoch"] == 1 and "validation_loss" in result.best
