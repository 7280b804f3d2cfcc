"""scripts/train_lenet.py and scripts/evaluate_lenet.py on tiny synthetic data.

Checks resume equality (interrupted + resumed == unbroken, bit for bit), the NaN stop that
keeps the last good checkpoint, the command line's outputs and errors, and evaluation.
"""

import contextlib
import csv
import io
import importlib.util
import pathlib
import sys

import jax
import numpy as np
import pytest
from PIL import Image

import jaxdl
from jaxdl import checkpoint
from jaxdl.datasets.mnist import MNISTSplits, Split

SCRIPTS = pathlib.Path(__file__).resolve().parents[1] / "scripts"


def load_script(name):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


train_lenet = load_script("train_lenet")
evaluate_lenet = load_script("evaluate_lenet")


def tiny_split(count, seed):
    rng = np.random.default_rng(seed)
    labels = (np.arange(count) % 10).astype(np.int32)
    images = rng.integers(0, 60, (count, 28, 28), dtype=np.uint8)
    for i, label in enumerate(labels):  # a learnable bright bar whose row is the label
        images[i, 2 + 2 * label:4 + 2 * label, 4:24] = 255
    return Split(images, labels)


@pytest.fixture(scope="module")
def data():
    return MNISTSplits(tiny_split(48, 0), tiny_split(20, 1), tiny_split(20, 2))


def config(tmp_path, name="run", **overrides):
    values = dict(epochs=2, batch_size=16, learning_rate=2e-3, warmup_epochs=0.5, seed=3, validation_size=20,
                  output_dir=str(tmp_path / name), progress=False, plot=False)
    values.update(overrides)
    return train_lenet.TrainConfig(**values)


def assert_same_state(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_resumed_run_equals_unbroken_run(tmp_path, data, monkeypatch):
    unbroken = train_lenet.train(config(tmp_path, "unbroken"), data, log=lambda *_: None)
    assert unbroken.status == "completed" and len(unbroken.history) == 2

    real_order = train_lenet.epoch_order

    def interrupt_in_second_epoch(n, *, seed, epoch):
        if epoch == 1:
            raise KeyboardInterrupt("simulated kill")
        return real_order(n, seed=seed, epoch=epoch)

    monkeypatch.setattr(train_lenet, "epoch_order", interrupt_in_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        train_lenet.train(config(tmp_path, "broken"), data, log=lambda *_: None)
    monkeypatch.setattr(train_lenet, "epoch_order", real_order)
    assert checkpoint.read_manifest(tmp_path / "broken" / "checkpoints" / "last")["metadata"]["epoch"] == 1

    logs = []
    resumed = train_lenet.train(config(tmp_path, "broken", resume=True), data, log=logs.append)
    assert any("Resuming" in line and "after epoch 1" in line for line in logs)
    assert_same_state(resumed.train_state, unbroken.train_state)
    for a, b in zip(resumed.history, unbroken.history):
        for key in ("step", "learning_rate", "train_loss", "validation_accuracy", "test_accuracy", "test_loss"):
            assert a[key] == b[key], key
    saved, _ = checkpoint.load_checkpoint(tmp_path / "broken" / "checkpoints" / "last", unbroken.train_state)
    assert_same_state(saved, unbroken.train_state)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, data, monkeypatch):
    real_make = jaxdl.make_train_step

    def make_failing_step(*args, **kwargs):
        step = real_make(*args, **kwargs)

        def failing(train_state, x, labels):
            train_state, metrics = step(train_state, x, labels)
            if int(train_state.step) > 4:  # epoch 2 of 3 steps per epoch
                metrics = {**metrics, "data_loss": metrics["data_loss"] * np.nan}
            return train_state, metrics

        return failing

    monkeypatch.setattr(jaxdl, "make_train_step", make_failing_step)
    result = train_lenet.train(config(tmp_path, epochs=3), data, log=lambda *_: None)
    assert result.status == "diverged"
    assert "loss became nan in epoch 2" in result.message
    assert "last good checkpoint" in result.message and "(epoch 1)" in result.message
    last = tmp_path / "run" / "checkpoints" / "last"
    restored, manifest = checkpoint.load_checkpoint(last, result.train_state)
    assert manifest["metadata"]["epoch"] == 1 and int(restored.step) == 3
    assert_same_state(restored, result.train_state)
    with open(tmp_path / "run" / "metrics.csv") as file:
        assert [row["epoch"] for row in csv.DictReader(file)] == ["1"]


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory, data):
    """One epoch through the command line (shared by the CLI and evaluation tests)."""
    out = tmp_path_factory.mktemp("cli") / "run"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(train_lenet, "load_mnist", lambda *args, **kwargs: data)
        captured = io.StringIO()
        with contextlib.redirect_stdout(captured):
            status = train_lenet.main(["--epochs", "1", "--batch-size", "16", "--validation-size", "20",
                                       "--output-dir", str(out), "--no-progress"])
    return out, status, captured.getvalue().strip().splitlines()


def test_command_line_outputs_and_final_line(cli_run, capsys):
    out, status, printed = cli_run
    assert status == 0
    assert printed[-1].startswith("Final test accuracy: ") and printed[-1].endswith("%")
    with open(out / "metrics.csv") as file:
        rows = list(csv.DictReader(file))
    assert [row["epoch"] for row in rows] == ["1"]
    assert set(rows[0]) == set(train_lenet.METRIC_COLUMNS)
    assert 0 <= float(rows[0]["test_accuracy"]) <= 1
    assert printed[-1] == f"Final test accuracy: {100 * float(rows[0]['test_accuracy']):.2f}%"
    with Image.open(out / "metrics.png") as image:
        assert image.format == "PNG"
    for name in ("last", "best"):
        manifest = checkpoint.read_manifest(out / "checkpoints" / name)
        assert manifest["model_config"] == {"name": "lenet"}
        assert manifest["metadata"]["config"]["batch_size"] == 16

    # A second run in the same directory must not overwrite it by accident.
    assert train_lenet.main(["--epochs", "1", "--output-dir", str(out), "--no-progress"]) == 2
    assert "--resume" in capsys.readouterr().err
    # --resume takes the stored hyperparameters and refuses changed ones.
    assert train_lenet.main(["--resume", "--learning-rate", "0.1", "--output-dir", str(out), "--no-progress"]) == 2
    assert "learning_rate: run has 0.002, now 0.1" in capsys.readouterr().err
    assert train_lenet.config_from_args(train_lenet.parse_args(["--resume", "--output-dir", str(out)])).batch_size == 16


def test_invalid_options_are_clear(tmp_path):
    with pytest.raises(train_lenet.ConfigError, match="batch_size must be a positive int"):
        train_lenet.validate_config(config(tmp_path, batch_size=0))
    with pytest.raises(train_lenet.ConfigError, match="schedule must be one of"):
        train_lenet.validate_config(config(tmp_path, schedule="step"))
    with pytest.raises(train_lenet.ConfigError, match="no checkpoint"):
        train_lenet.train(config(tmp_path, resume=True), MNISTSplits(tiny_split(16, 0), tiny_split(4, 1),
                                                                     tiny_split(4, 2)))


def test_learning_rate_schedules(tmp_path):
    cosine = train_lenet.learning_rate_schedule(config(tmp_path, epochs=4, warmup_epochs=1), steps_per_epoch=10)
    assert float(cosine(0)) == 0.0
    assert float(cosine(10)) == pytest.approx(2e-3)
    assert float(cosine(40)) == pytest.approx(0.0, abs=1e-12)
    assert train_lenet.learning_rate_schedule(config(tmp_path, schedule="constant"), 10) == 2e-3


def test_evaluate_script_reports_accuracy_confusion_and_writes_grid(cli_run, data, tmp_path):
    out, _, _ = cli_run
    report = evaluate_lenet.evaluate_checkpoint(out / "checkpoints" / "last", data.test,
                                                grid_path=tmp_path / "errors.png")
    with open(out / "metrics.csv") as file:
        assert report["accuracy"] == pytest.approx(float(next(csv.DictReader(file))["test_accuracy"]))
    confusion = report["confusion"]
    assert confusion.shape == (10, 10) and confusion.sum() == len(data.test)
    assert np.trace(confusion) == round(report["accuracy"] * len(data.test))
    text = evaluate_lenet.format_confusion(confusion)
    assert text.splitlines()[0].split()[:3] == ["true\\pred", "0", "1"]
    if report["misclassified"]:
        with Image.open(tmp_path / "errors.png") as image:
            assert image.format == "PNG"
