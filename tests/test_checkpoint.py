"""jaxdl.checkpoint: round trips, hash and architecture checks, atomic writes, pickle API."""

import functools
import hashlib
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxdl
from jaxdl import checkpoint
from jaxdl.checkpoint import CheckpointCorruptedError, CheckpointMismatchError


def small_model(hidden=8, classes=3):
    return jaxdl.Serial(jaxdl.FullyConnected(hidden), jaxdl.ReLU(), jaxdl.FullyConnected(classes), jaxdl.SoftMax())


OPTIMIZER = jaxdl.Adam(1e-2, regularizer=jaxdl.L2Regularizer(1e-3))


@functools.lru_cache(maxsize=None)
def train_step(model):
    return jaxdl.make_train_step(model, jaxdl.cross_entropy, OPTIMIZER)


def trained_state(model=None, steps=3, seed=0):
    """A TrainState after a few Adam steps: non-trivial moments, count, key and step."""
    model = model or small_model()
    state = jaxdl.create_train_state(model, OPTIMIZER, jax.random.key(seed), (4, 5))
    x = jax.random.normal(jax.random.key(1), (4, 5), jnp.float32)
    for _ in range(steps):
        state, _ = train_step(model)(state, x, jnp.array([0, 1, 2, 0]))
    return state


def assert_trees_equal(a, b):
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            assert jax.dtypes.issubdtype(y.dtype, jax.dtypes.prng_key)
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        assert x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_round_trip_restores_params_optimizer_state_key_and_step(tmp_path):
    saved = trained_state()
    checkpoint.save_checkpoint(tmp_path / "ckpt", saved, model_config={"name": "tiny"}, metadata={"epoch": 2})
    template = trained_state(steps=0, seed=5)
    restored, manifest = checkpoint.load_checkpoint(tmp_path / "ckpt", template)
    assert_trees_equal(restored, saved)
    assert isinstance(restored, jaxdl.TrainState)
    assert isinstance(restored.opt_state[0][0], optax.ScaleByAdamState)  # NamedTuples come back
    assert int(restored.step) == 3 and manifest["step"] == 3
    assert manifest["metadata"] == {"epoch": 2} and manifest["model_config"] == {"name": "tiny"}
    # The restored key continues the same random stream.
    np.testing.assert_array_equal(jax.random.normal(restored.key, (3,)), jax.random.normal(saved.key, (3,)))


def test_manifest_describes_every_entry(tmp_path):
    saved = trained_state()
    path = checkpoint.save_checkpoint(tmp_path / "ckpt", saved)
    manifest = json.loads(path.read_text())
    assert manifest["format"] == "jaxdl.checkpoint" and manifest["format_version"] == checkpoint.FORMAT_VERSION
    assert manifest["jaxdl_version"] == jaxdl.__version__
    arrays = tmp_path / "ckpt" / manifest["arrays_file"]
    assert hashlib.sha256(arrays.read_bytes()).hexdigest() == manifest["arrays_sha256"]
    entries = {entry["path"]: entry for entry in manifest["entries"]}
    assert entries["params/fully_connected_0/weights"]["shape"] == [5, 8]
    assert entries["params/fully_connected_0/weights"]["dtype"] == "float32"
    assert entries["step"] == {"path": "step", "array": entries["step"]["array"], "shape": [], "dtype": "int32"}
    assert entries["key"]["dtype"] == "key" and entries["key"]["key_impl"] == "threefry2x32"
    assert "opt_state/0/0/mu/fully_connected_2/bias" in entries
    assert len(entries) == len(jax.tree.leaves(saved))


def test_arrays_are_loaded_without_pickle(tmp_path, monkeypatch):
    checkpoint.save_checkpoint(tmp_path / "ckpt", trained_state())
    calls = []
    real_load = np.load

    def spy(*args, **kwargs):
        calls.append(kwargs.get("allow_pickle"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(np, "load", spy)
    checkpoint.load_checkpoint(tmp_path / "ckpt", trained_state(steps=0))
    assert calls == [False]


def test_a_pickled_object_array_is_refused_even_with_a_matching_hash(tmp_path):
    directory = tmp_path / "ckpt"
    checkpoint.save_checkpoint(directory, {"w": jnp.ones(2)})
    manifest = checkpoint.read_manifest(directory)
    arrays = directory / manifest["arrays_file"]
    np.savez(arrays, arr_0=np.array([{"evil": "payload"}], dtype=object))  # needs pickle to read
    manifest["arrays_sha256"] = hashlib.sha256(arrays.read_bytes()).hexdigest()
    (directory / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointCorruptedError, match="cannot read"):
        checkpoint.load_checkpoint(directory, {"w": jnp.zeros(2)})


def test_changed_array_file_fails_the_hash_check(tmp_path):
    directory = tmp_path / "ckpt"
    checkpoint.save_checkpoint(directory, trained_state())
    arrays = directory / checkpoint.read_manifest(directory)["arrays_file"]
    data = bytearray(arrays.read_bytes())
    data[len(data) // 2] ^= 0xFF
    arrays.write_bytes(bytes(data))
    with pytest.raises(CheckpointCorruptedError, match="sha256"):
        checkpoint.load_checkpoint(directory, trained_state(steps=0))


def test_architecture_mismatch_lists_missing_unexpected_and_reshaped_entries(tmp_path):
    checkpoint.save_checkpoint(tmp_path / "ckpt", trained_state(small_model(hidden=8)))
    other = jaxdl.Serial(jaxdl.FullyConnected(16), jaxdl.ReLU(), jaxdl.FullyConnected(3), jaxdl.ReLU(),
                         jaxdl.FullyConnected(3), jaxdl.SoftMax())
    with pytest.raises(CheckpointMismatchError) as error:
        checkpoint.load_checkpoint(tmp_path / "ckpt", trained_state(other, steps=0))
    message = str(error.value)
    assert "does not match the model" in message
    assert "missing from the checkpoint" in message and "params/fully_connected_4/weights" in message
    assert "unexpected in the checkpoint" not in message  # every saved entry still has a place
    assert "reshaped or retyped" in message
    assert "params/fully_connected_0/weights: checkpoint float32[5, 8], model float32[5, 16]" in message
    smaller = jaxdl.Serial(jaxdl.FullyConnected(8), jaxdl.SoftMax())
    with pytest.raises(CheckpointMismatchError, match=r"unexpected in the checkpoint \(\d+\):\n.*fully_connected_2"):
        checkpoint.load_checkpoint(tmp_path / "ckpt", trained_state(smaller, steps=0))


def test_load_a_subtree_by_prefix(tmp_path):
    saved = trained_state()
    checkpoint.save_checkpoint(tmp_path / "ckpt", saved)
    template = jax.eval_shape(lambda: saved.params)  # shapes only
    params, _ = checkpoint.load_checkpoint(tmp_path / "ckpt", template, prefix="params")
    assert_trees_equal(params, saved.params)


def test_crash_while_writing_arrays_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    directory = tmp_path / "ckpt"
    first = trained_state(steps=1)
    checkpoint.save_checkpoint(directory, first)

    def crash(file, *arrays):
        file.write(b"PK\x03\x04 partial")
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(np, "savez", crash)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save_checkpoint(directory, trained_state(steps=2))
    restored, _ = checkpoint.load_checkpoint(directory, trained_state(steps=0))
    assert_trees_equal(restored, first)
    assert sorted(p.name for p in directory.iterdir() if p.name.startswith(".")) == []  # temp files removed


def test_crash_before_the_manifest_is_replaced_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    directory = tmp_path / "ckpt"
    first = trained_state(steps=1)
    checkpoint.save_checkpoint(directory, first)
    real_replace = os.replace

    def crash_on_manifest(source, destination):
        if str(destination).endswith("manifest.json"):
            raise OSError("killed before the manifest was renamed")
        return real_replace(source, destination)

    monkeypatch.setattr(os, "replace", crash_on_manifest)
    with pytest.raises(OSError, match="killed"):
        checkpoint.save_checkpoint(directory, trained_state(steps=2))
    monkeypatch.setattr(os, "replace", real_replace)
    # The new arrays file exists, but the manifest still names (and hashes) the old one.
    assert len(list(directory.glob("arrays-*.npz"))) == 2
    restored, _ = checkpoint.load_checkpoint(directory, trained_state(steps=0))
    assert_trees_equal(restored, first)
    # The next good save removes what the interrupted one left.
    second = trained_state(steps=2)
    checkpoint.save_checkpoint(directory, second)
    assert len(list(directory.glob("arrays-*.npz"))) == 1
    assert_trees_equal(checkpoint.load_checkpoint(directory, trained_state(steps=0))[0], second)


def test_missing_checkpoint_and_newer_format_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="No checkpoint"):
        checkpoint.read_manifest(tmp_path / "nothing")
    checkpoint.save_checkpoint(tmp_path / "ckpt", {"w": jnp.ones(1)})
    manifest = checkpoint.read_manifest(tmp_path / "ckpt")
    manifest["format_version"] = checkpoint.FORMAT_VERSION + 1
    (tmp_path / "ckpt" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(checkpoint.CheckpointError, match="Upgrade jaxdl"):
        checkpoint.read_manifest(tmp_path / "ckpt")


def test_pickle_api_round_trip(tmp_path):
    obj = {"weights": np.arange(4.0), "name": "net", "layers": [1, 2]}
    checkpoint.save(tmp_path / "net.pkl", obj)
    loaded = checkpoint.load(tmp_path / "net.pkl")
    assert loaded["name"] == "net" and loaded["layers"] == [1, 2]
    np.testing.assert_array_equal(loaded["weights"], obj["weights"])
    assert [p.name for p in tmp_path.iterdir()] == ["net.pkl"]
