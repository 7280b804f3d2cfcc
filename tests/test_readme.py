"""The README's functional-API example runs as written."""

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


def test_recurrent_truncated_bptt_example_runs():
    namespace = {}
    exec(compile(python_blocks()[2], "README.md", "exec"), namespace)
    assert int(namespace["train_state"].step) == 20
    assert namespace["train_state"].state["lstm_0"]["h"].shape == (32, 64)
    assert np.isfinite(float(namespace["metrics"]["loss"]))
