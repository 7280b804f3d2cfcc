"""The LeNet recipe (`jaxdl.recipes.lenet`) and its scripts on tiny synthetic data.

The loop itself (resume, NaN guard, checkpoints) is tested in test_fit.py; here: the
recipe's wiring (augmented epoch source, schedule column, one test evaluation on the best
checkpoint), bit-identical resume through the recipe, the command line's outputs and
errors, and scripts/evaluate_lenet.py.
"""

import contextlib
import csv
import dataclasses
import importlib.util
import io
import pathlib
import shlex
import sys

import jax
import numpy as np
import pytest
from PIL import Image
from synthetic_digits import tiny_mnist, tiny_split

import jaxdl
from jaxdl import checkpoint
from jaxdl.datasets import mnist
from jaxdl.datasets.mnist import MNISTSplits
from jaxdl.recipes import lenet
from jaxdl.training import Callback

SCRIPTS = pathlib.Path(__file__).resolve().parents[1] / "scripts"


def load_script(name):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


train_script = load_script("train_lenet")
evaluate_lenet = load_script("evaluate_lenet")


@pytest.fixture(scope="module")
def data():
    return tiny_mnist()


def config(tmp_path, name="run", **overrides):
    values = dict(epochs=2, batch_size=16, learning_rate=2e-3, warmup_epochs=0.5, seed=3, validation_size=20,
                  output_dir=str(tmp_path / name), progress=False, plot=False)
    values.update(overrides)
    return lenet.LeNetConfig(**values)


def assert_same_state(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


REAL_FIT = jaxdl.fit


class InterruptAtEpoch(Callback):
    """Raises KeyboardInterrupt (as Ctrl-C would) when the given epoch starts."""

    def __init__(self, epoch):
        self.epoch = epoch

    def on_epoch_start(self, epoch, steps):
        if epoch == self.epoch:
            raise KeyboardInterrupt("simulated Ctrl-C")


def fit_interrupted_at(epoch):
    """`jaxdl.fit` with an `InterruptAtEpoch` callback added (to monkeypatch into the recipe)."""
    return lambda *a, **k: REAL_FIT(*a, **{**k, "callbacks": [*k["callbacks"], InterruptAtEpoch(epoch)]})


def test_resumed_run_equals_unbroken_run_and_test_is_evaluated_once(tmp_path, data, monkeypatch):
    logs = []
    unbroken = lenet.train_lenet(config(tmp_path, "unbroken"), data, log=logs.append)
    assert unbroken.fit.status == "completed" and len(unbroken.fit.history) == 2
    assert all("test" not in key for row in unbroken.fit.history for key in row)  # hygiene: no test per epoch
    assert not any("test" in line for line in logs)
    best_epoch = unbroken.fit.best["epoch"]
    assert unbroken.test["epoch"] == best_epoch and unbroken.test["count"] == 20

    monkeypatch.setattr(jaxdl, "fit", fit_interrupted_at(1))
    with pytest.raises(KeyboardInterrupt):
        lenet.train_lenet(config(tmp_path, "broken"), data, log=logs.append,
                          resume_command="python scripts/train_lenet.py --resume")
    assert logs[-1].endswith("Continue with: python scripts/train_lenet.py --resume")
    monkeypatch.setattr(jaxdl, "fit", REAL_FIT)
    last = checkpoint.find_step_dir(tmp_path / "broken" / "checkpoints", "last")
    assert checkpoint.read_manifest(last)["metadata"]["epoch"] == 1

    resumed = lenet.train_lenet(config(tmp_path, "broken", resume=True), data, log=logs.append)
    assert any("Resuming" in line and "after epoch 1" in line for line in logs)
    assert_same_state(resumed.fit.train_state, unbroken.fit.train_state)
    for a, b in zip(resumed.fit.history, unbroken.fit.history):
        for key in ("step", "learning_rate", "train_loss", "validation_accuracy", "validation_loss"):
            assert a[key] == b[key], key
    assert resumed.test == unbroken.test


def test_test_accuracy_is_that_of_the_best_checkpoint(tmp_path, data):
    result = lenet.train_lenet(config(tmp_path, epochs=3), data, log=None)
    model = jaxdl.models.lenet()
    best, _ = checkpoint.load_checkpoint(result.fit.checkpoint_dir("best"), result.fit.train_state)
    predictions = jaxdl.make_predict(model)(best.params, best.state, data.test.images[:, None] / np.float32(255))
    accuracy = float(np.mean(np.argmax(predictions, axis=1) == data.test.labels))
    assert result.test["accuracy"] == pytest.approx(accuracy)


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory, data):
    """One epoch through the command line (shared by the CLI and evaluation tests)."""
    out = tmp_path_factory.mktemp("cli") / "run"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(mnist, "load_mnist", lambda *args, **kwargs: data)
        captured = io.StringIO()
        with contextlib.redirect_stdout(captured):
            status = train_script.main(["--epochs", "1", "--batch-size", "16", "--validation-size", "20",
                                        "--output-dir", str(out), "--no-progress"])
    return out, status, captured.getvalue().strip().splitlines()


def test_command_line_outputs_and_final_line(cli_run, capsys):
    out, status, printed = cli_run
    assert status == 0
    assert printed[-1].startswith("Test accuracy of the best-validation checkpoint (epoch 1), evaluated once: ")
    with open(out / "metrics.csv") as file:
        rows = list(csv.DictReader(file))
    assert [row["epoch"] for row in rows] == ["1"]
    assert {"epoch", "step", "learning_rate", "train_loss", "validation_loss", "validation_accuracy"} <= set(rows[0])
    assert not any("test" in column for column in rows[0])
    with Image.open(out / "metrics.png") as image:
        assert image.format == "PNG"
    assert printed[-2].startswith(f"Outputs: {out}/metrics.csv, metrics.png; checkpoints: last {out}/checkpoints/step_")
    for name in ("last", "best"):
        manifest = checkpoint.read_manifest(checkpoint.find_step_dir(out / "checkpoints", name))
        assert manifest["model_config"] == {"name": "lenet"}
        assert manifest["metadata"]["config"]["batch_size"] == 16

    # A second run in the same directory must not overwrite it by accident.
    assert train_script.main(["--epochs", "1", "--output-dir", str(out), "--no-progress"]) == 2
    assert "Continue that run with --resume, start it anew with --overwrite" in capsys.readouterr().err
    # --resume takes the stored hyperparameters and refuses changed ones.
    assert train_script.main(["--resume", "--shift", "0", "--output-dir", str(out), "--no-progress"]) == 2
    assert "shift: run has 2, now 0" in capsys.readouterr().err
    assert train_script.config_from_args(train_script.parse_args(["--resume", "--output-dir", str(out)])).batch_size == 16


def test_a_directory_with_other_files_is_refused_unless_overwrite_is_asked_for(data, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.csv").write_text("epoch,train_loss\n1,0.5\n")  # left without checkpoints
    monkeypatch.setattr(mnist, "load_mnist", lambda *args, **kwargs: data)
    options = ["--epochs", "1", "--batch-size", "16", "--validation-size", "20", "--output-dir", str(out),
               "--no-progress"]
    assert train_script.main(options) == 2
    err = capsys.readouterr().err
    assert "metrics.csv" in err and "Pass --overwrite to write the run there" in err
    assert (out / "metrics.csv").read_text().startswith("epoch,train")
    assert train_script.main([*options, "--overwrite", "--resume"]) == 2
    assert "choose one of them" in capsys.readouterr().err
    assert train_script.main([*options, "--overwrite"]) == 0
    assert "learning_rate" in (out / "metrics.csv").read_text()  # a new run's metrics


@pytest.mark.parametrize("overrides,message", [
    ({"batch_size": 0}, "batch_size must be a positive int"),
    ({"schedule": "step"}, "schedule must be one of"),
    ({"learning_rate": float("inf")}, "learning_rate must be a finite number"),
    ({"l2": float("nan")}, "l2 must be a finite number"),
    ({"seed": -1}, r"seed must be an int in \[0, 4294967295\], got -1"),
    ({"seed": 2**32}, r"seed must be an int in \[0, 4294967295\], got 4294967296"),
    ({"validation_size": 0}, "validation_size must be a positive int"),
    ({"validation_size": 60000}, "validation_size 60,000 leaves none of MNIST's 60,000 training images"),
    ({"batch_size": 100000, "validation_size": 5000}, r"batch_size 100,000 is larger than the 55,000 training images \(MNIST's 60,000 minus "
                                                      r"validation_size 5,000\)"),
    ({"batch_size": 60, "validation_size": 59950}, "batch_size 60 is larger than the 50 training images"),
    ({"output_dir": ""}, "output_dir must name a directory, got ''"),
    ({"data_dir": ""}, "data_dir must name a directory, got ''"),
    ({"data_dir": "/nonexistent"}, "MNIST files missing from /nonexistent"),
])
def test_invalid_options_are_clear(tmp_path, overrides, message):
    with pytest.raises(lenet.ConfigError, match=message):
        lenet.validate_config(config(tmp_path, **overrides))


def test_output_dir_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(lenet.ConfigError, match="is not a directory"):
        lenet.validate_config(config(tmp_path, name="file"))


def test_resume_without_a_run_is_clear(tmp_path):
    with pytest.raises(ValueError, match="holds no checkpoint"):
        lenet.train_lenet(config(tmp_path, resume=True), MNISTSplits(tiny_split(16, 0), tiny_split(4, 1),
                                                                     tiny_split(4, 2)), log=None)


def test_learning_rate_schedules(tmp_path):
    cosine = lenet.learning_rate_schedule(config(tmp_path, epochs=4, warmup_epochs=1), steps_per_epoch=10)
    assert float(cosine(0)) == 0.0
    assert float(cosine(10)) == pytest.approx(2e-3)
    assert float(cosine(40)) == pytest.approx(0.0, abs=1e-12)
    assert lenet.learning_rate_schedule(config(tmp_path, schedule="constant"), 10) == 2e-3


def test_evaluate_script_reports_accuracy_confusion_and_writes_grid(cli_run, data, tmp_path):
    out, _, printed = cli_run
    report = evaluate_lenet.evaluate_checkpoint(checkpoint.find_step_dir(out / "checkpoints", "best"), data.test,
                                                grid_path=tmp_path / "errors.png")
    assert printed[-1].endswith(f"{100 * report['accuracy']:.2f}%")
    confusion = report["confusion"]
    assert confusion.shape == (10, 10) and confusion.sum() == len(data.test)
    assert np.trace(confusion) == round(report["accuracy"] * len(data.test))
    text = evaluate_lenet.format_confusion(confusion)
    assert text.splitlines()[0].split()[:3] == ["true\\pred", "0", "1"]
    if report["misclassified"]:
        with Image.open(tmp_path / "errors.png") as image:
            assert image.format == "PNG"


def test_evaluate_script_takes_a_run_directory_for_its_best_checkpoint(cli_run, data, tmp_path, monkeypatch, capsys):
    out, _, _ = cli_run
    monkeypatch.setattr(evaluate_lenet, "load_mnist", lambda *args, **kwargs: data)
    grid = ["--grid", str(tmp_path / "grid.png")]
    assert evaluate_lenet.main([str(out), *grid]) == 0
    printed = capsys.readouterr().out.splitlines()
    best = checkpoint.find_step_dir(out / "checkpoints", "best")
    assert printed[0] == f"Evaluating {best}, the best checkpoint of {out}"
    assert printed[1].startswith(f"Checkpoint {best} (epoch 1, ")
    assert evaluate_lenet.main([str(out / "checkpoints"), *grid]) == 0
    assert lenet.checkpoint_to_evaluate(out / "checkpoints") == best
    assert lenet.checkpoint_to_evaluate(best) == best


def test_evaluating_a_run_without_a_best_checkpoint_says_what_to_do(tmp_path, capsys):
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    with pytest.raises(lenet.ConfigError, match=r"run is a run directory, but .*run/checkpoints holds no best "
                                                r"checkpoint .*resume that run") as caught:
        lenet.checkpoint_to_evaluate(tmp_path / "run")
    assert caught.value.run_dir == tmp_path / "run"  # the fact; the command line phrases the advice
    assert evaluate_lenet.main([str(tmp_path / "run")]) == 2
    assert (f"Finish that run with: python scripts/train_lenet.py --resume --output-dir {tmp_path / 'run'}"
            in capsys.readouterr().err)
    with pytest.raises(lenet.ConfigError, match="no checkpoint at .*: pass a checkpoint directory such as "
                                                r"runs/lenet \(its best checkpoint"):
        lenet.checkpoint_to_evaluate(tmp_path / "nothing")
    assert lenet.checkpoint_to_evaluate(tmp_path) == tmp_path  # not a run: loading it will say what is missing


def test_a_hyperparameter_search_never_evaluates_test(tmp_path, data, monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("the test split was evaluated")

    monkeypatch.setattr(lenet, "evaluate_checkpoint", forbidden)
    result = lenet.train_lenet(config(tmp_path, epochs=1), data, log=None, evaluate_test=False)
    assert result.test is None and result.fit.status == "completed"


def test_resume_may_lower_the_learning_rate_and_records_it(tmp_path, data, monkeypatch):
    monkeypatch.setattr(jaxdl, "fit", fit_interrupted_at(1))
    with pytest.raises(KeyboardInterrupt):
        lenet.train_lenet(config(tmp_path, epochs=3), data, log=None)
    monkeypatch.setattr(jaxdl, "fit", fit_interrupted_at(2))
    logs = []
    with pytest.raises(KeyboardInterrupt):
        lenet.train_lenet(config(tmp_path, epochs=3, resume=True, learning_rate=1e-3), data, log=logs.append)
    assert any("from 0.002 to 0.001 from epoch 2 on" in line for line in logs)
    monkeypatch.setattr(jaxdl, "fit", REAL_FIT)
    # A later --resume without --learning-rate keeps the lowered one (the stored hyperparameters).
    args = train_script.parse_args(["--resume", "--output-dir", str(tmp_path / "run"), "--no-progress"])
    assert train_script.config_from_args(args).learning_rate == 1e-3
    result = lenet.train_lenet(config(tmp_path, epochs=3, resume=True, learning_rate=1e-3), data, log=None)
    assert result.fit.status == "completed"
    metadata = checkpoint.read_manifest(result.fit.checkpoint_dir("last"))["metadata"]
    assert metadata["learning_rate_changes"] == [{"from_epoch": 2, "learning_rate": 1e-3, "was": 2e-3}]
    assert metadata["config"]["learning_rate"] == 1e-3
    steps = len(data.train) // 16
    lowered = lenet.learning_rate_schedule(config(tmp_path, epochs=3, learning_rate=1e-3), steps)
    assert result.fit.history[-1]["learning_rate"] == pytest.approx(float(lowered(3 * steps)), abs=1e-12)
    with pytest.raises(lenet.ConfigError, match="batch_size: run has 16, now 8"):
        lenet.train_lenet(config(tmp_path, epochs=3, resume=True, batch_size=8), data, log=None)


def test_divergence_advice_is_a_command_that_works(tmp_path):
    cfg = config(tmp_path, learning_rate=4e-3)
    after_epochs = jaxdl.FitResult(None, [{"epoch": 1}], "diverged", "", None, tmp_path / "run")
    assert divergence_words(train_script.divergence_advice(after_epochs, cfg)) == [
        "--resume", "--output-dir", str(tmp_path / "run"), "--learning-rate", "0.002", "--no-progress"]
    first_epoch = jaxdl.FitResult(None, [], "diverged", "", None, tmp_path / "run")
    assert "no checkpoint was written" in train_script.divergence_advice(first_epoch, cfg)
    assert "--resume" not in train_script.divergence_advice(first_epoch, cfg)
    args = train_script.parse_args(divergence_words(train_script.divergence_advice(after_epochs, cfg)))
    assert args.resume and args.learning_rate == 0.002


def test_advice_repeats_the_users_options(tmp_path):
    """Printed commands (divergence, Ctrl-C) keep the user's directories and options, quoted."""
    data_dir = tmp_path / "my data"
    cfg = config(tmp_path, name="out dir", epochs=3, batch_size=32, compute_dtype="bfloat16", data_dir=str(data_dir),
                 cache_dir=str(tmp_path / "cache"), checkpoint_every_steps=7)
    first_epoch = jaxdl.FitResult(None, [], "diverged", "", None, tmp_path / "out dir")
    again = train_script.config_from_args(train_script.parse_args(
        divergence_words(train_script.divergence_advice(first_epoch, cfg, extra=["--devices", "2"]))))
    assert again == dataclasses.replace(cfg, learning_rate=1e-3, plot=True)
    resume = divergence_words(train_script.command_line(cfg, resume=True))
    args = train_script.parse_args(resume)
    assert args.resume and args.output_dir == str(tmp_path / "out dir") and args.data_dir == str(data_dir)
    assert args.cache_dir == str(tmp_path / "cache") and args.checkpoint_every_steps == 7 and args.no_progress
    assert args.epochs is None and args.compute_dtype is None  # a resume takes them from the checkpoint


def divergence_words(advice):
    return shlex.split(advice.split("python scripts/train_lenet.py ")[1])
