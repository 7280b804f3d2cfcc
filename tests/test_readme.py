"""The README's code examples run as written."""

import pathlib
import re

import numpy as np

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def python_blocks():
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_first_functional_example_runs_and_prints_what_it_says(capsys):
    block = python_blocks()[0]
    namespace = {}
    exec(compile(block, "README.md", "exec"), namespace)
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == "{'bias': (6,), 'weights': (6, 1, 5, 5)}"
    assert printed[1] == "(128, 10)"
    assert namespace["y"].shape == (128, 10)
    np.testing.assert_allclose(np.asarray(namespace["y"]).sum(axis=1), 1.0, rtol=1e-5)


def test_training_example_runs_on_a_small_batch_stream():
    import jax
    import jax.numpy as jnp

    block = python_blocks()[1]
    namespace = {"jax": jax, "jnp": jnp}
    exec(compile(python_blocks()[0], "README.md", "exec"), namespace)
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(128, 1, 28, 28)).astype(np.float32)
    namespace["batches"] = [(x, rng.integers(0, 10, 128))] * 2
    namespace["x_test"] = x[:4]
    exec(compile(block, "README.md", "exec"), namespace)
    assert int(namespace["train_state"].step) == 2
    assert namespace["probabilities"].shape == (4, 10)
    assert namespace["state"]["batch_normalization_5"]["count"] == 2  # evaluation left the statistics alone


def test_fit_example_runs_and_prints_what_it_says(tmp_path, monkeypatch, capsys):
    import jaxdl

    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    namespace = {"jaxdl": jaxdl, "images": rng.integers(0, 255, (128, 28, 28), dtype=np.uint8),
                 "labels": rng.integers(0, 10, 128).astype(np.int32),
                 "validation_images": rng.integers(0, 255, (32, 28, 28), dtype=np.uint8),
                 "validation_labels": rng.integers(0, 10, 32).astype(np.int32)}
    exec(compile(python_blocks()[2], "README.md", "exec"), namespace)
    printed = capsys.readouterr().out.splitlines()
    result = namespace["result"]
    assert printed[-1] == f"completed {result.best['epoch']} 2"
    assert (tmp_path / "runs" / "mine" / "checkpoints" / "best").is_dir()
    assert (tmp_path / "runs" / "mine" / "metrics.csv").is_file()


def test_recurrent_truncated_bptt_example_runs():
    namespace = {}
    exec(compile(python_blocks()[3], "README.md", "exec"), namespace)
    assert int(namespace["train_state"].step) == 20
    assert namespace["train_state"].state["lstm_0"]["h"].shape == (32, 64)
    assert np.isfinite(float(namespace["metrics"]["loss"]))
