"""jaxdl.checkpoint: round trips of every dtype, hash and manifest checks against tampering,
architecture checks, atomic replacement and run checkpoints (last + best) under injected
faults and SIGKILL at every write boundary, the pickle API."""

import functools
import hashlib
import json
import logging
import math
import os
import pathlib
import pickle
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxdl
from jaxdl import checkpoint
from jaxdl.checkpoint import CheckpointCorruptedError, CheckpointError, CheckpointMismatchError


def small_model(hidden=8, classes=3):
    return jaxdl.Serial(jaxdl.FullyConnected(hidden), jaxdl.ReLU(), jaxdl.FullyConnected(classes), jaxdl.SoftMax())


OPTIMIZER = jaxdl.Adam(1e-2, regularizer=jaxdl.L2Regularizer(1e-3))


def perturbed(leaf, amount):
    """``leaf`` changed by ``amount`` (host arithmetic: nothing to compile)."""
    if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
        return jax.random.wrap_key_data(jnp.asarray(np.asarray(jax.random.key_data(leaf)) + amount),
                                        impl=jax.random.key_impl(leaf))
    values = np.asarray(leaf)
    noise = (np.arange(values.size).reshape(values.shape) % 7 - 3) * 0.01 * amount
    return jnp.asarray((values + noise).astype(values.dtype) if values.dtype.kind == "f" else values + amount)


@functools.lru_cache(maxsize=None)
def initial_state(model, seed):
    return jaxdl.create_train_state(model, OPTIMIZER, jax.random.key(seed), (4, 5))


@functools.lru_cache(maxsize=None)
def trained_state(model=None, steps=3, seed=0):
    """A TrainState as after ``steps`` Adam steps: non-trivial params, moments, count, key and step (cached)."""
    state = initial_state(model or small_model(), seed)
    return jax.tree.map(lambda leaf: perturbed(leaf, steps), state) if steps else state


def template_of(model):
    """The TrainState of ``model`` as shapes and dtypes (jax.eval_shape: nothing is compiled)."""
    return jax.eval_shape(lambda: jaxdl.create_train_state(model, OPTIMIZER, jax.random.key(0), (4, 5)))


def assert_trees_equal(a, b):
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        assert isinstance(x, jax.Array) or isinstance(y, jax.Array)
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            assert jax.dtypes.issubdtype(y.dtype, jax.dtypes.prng_key)
            assert jax.random.key_impl(x) == jax.random.key_impl(y)
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        assert x.dtype == y.dtype and x.shape == y.shape
        as_bytes = [np.asarray(leaf).reshape(-1).view(np.uint8) for leaf in (x, y)]  # NaN-safe, any dtype
        np.testing.assert_array_equal(*as_bytes)


def data_dir(link):
    """The real directory behind a checkpoint link."""
    return pathlib.Path(link).resolve()


def leftovers(parent):
    """Hidden entries of ``parent`` (links' data directories excepted)."""
    linked = {os.readlink(p) for p in pathlib.Path(parent).iterdir() if p.is_symlink()}
    return sorted(p.name for p in pathlib.Path(parent).iterdir() if p.name.startswith(".") and p.name not in linked)


# ----------------------------------------------------------------------------------------
# Round trips.


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


def test_bfloat16_train_state_round_trips(tmp_path):
    """Format 1 saved bfloat16 as |V2 and then refused to load it."""
    model = jaxdl.Serial(jaxdl.FullyConnected(3))
    state = jaxdl.create_train_state(model, jaxdl.Adam(1e-3), jax.random.key(0), (4, 3), dtype=jnp.bfloat16)
    checkpoint.save_checkpoint(tmp_path / "ckpt", state)
    restored, manifest = checkpoint.load_checkpoint(tmp_path / "ckpt", state)
    assert_trees_equal(restored, state)
    assert restored.params["fully_connected_0"]["weights"].dtype == jnp.bfloat16
    assert {e["dtype"] for e in manifest["entries"] if e["path"].startswith("params/")} == {"bfloat16"}


ALL_DTYPES = ["bool", "int2", "int4", "int8", "int16", "int32", "int64", "uint2", "uint4", "uint8", "uint16",
              "uint32", "uint64", "float16", "bfloat16", "float32", "float64", "complex64", "complex128",
              "float8_e4m3fn", "float8_e5m2", "float8_e4m3", "float8_e3m4", "float8_e8m0fnu", "float4_e2m1fn"]


def dtype_tree():
    tree = {}
    for name in ALL_DTYPES:
        try:
            dtype = jnp.dtype(name)
        except TypeError:
            continue  # not in this jax
        values = np.arange(6).reshape(2, 3) % (2 if name in ("bool", "uint2", "int2", "float4_e2m1fn") else 4)
        tree[name] = jnp.asarray(values.astype(dtype))
    tree["scalar"] = jnp.float32(2.5)
    tree["empty"] = jnp.zeros((0, 3), jnp.int8)
    tree["keys"] = {"threefry": jax.random.key(3), "rbg": jax.random.key(4, impl="rbg"),
                    "batch": jax.random.split(jax.random.key(5), 4), "none": jax.random.split(jax.random.key(6), 0)}
    return tree


def test_every_dtype_and_key_kind_round_trips(tmp_path):
    tree = dtype_tree()
    checkpoint.save_checkpoint(tmp_path / "ckpt", tree)
    restored, manifest = checkpoint.load_checkpoint(tmp_path / "ckpt", tree)
    assert_trees_equal(restored, tree)
    shapes_only, _ = checkpoint.load_checkpoint(tmp_path / "ckpt", jax.eval_shape(lambda: tree))
    assert_trees_equal(shapes_only, tree)
    entries = {e["path"]: e for e in manifest["entries"]}
    assert entries["empty"]["array"] is None  # orbax refuses zero-size arrays: manifest only
    assert entries["keys/rbg"]["key_impl"] == "rbg" and entries["keys/batch"]["data_shape"] == [4, 2]
    assert entries["uint4"].get("storage") == "bytes" and "storage" not in entries["bfloat16"]


def test_key_arrays_of_another_implementation_do_not_fit(tmp_path):
    checkpoint.save_checkpoint(tmp_path / "ckpt", {"key": jax.random.key(0)})
    with pytest.raises(CheckpointMismatchError, match=r"key: checkpoint key<threefry2x32>\[\], model key<rbg>\[\]"):
        checkpoint.load_checkpoint(tmp_path / "ckpt", {"key": jax.random.key(0, impl="rbg")})


def test_manifest_describes_every_entry_and_hashes_every_file(tmp_path):
    saved = trained_state()
    path = checkpoint.save_checkpoint(tmp_path / "ckpt", saved)
    assert path == tmp_path / "ckpt" / checkpoint.MANIFEST_NAME
    manifest = json.loads(path.read_text())
    assert manifest["format"] == "jaxdl.checkpoint" and manifest["format_version"] == checkpoint.FORMAT_VERSION == 2
    assert manifest["jaxdl_version"] == jaxdl.__version__
    entries = {entry["path"]: entry for entry in manifest["entries"]}
    assert entries["params/fully_connected_0/weights"]["shape"] == [5, 8]
    assert entries["params/fully_connected_0/weights"]["dtype"] == "float32"
    assert entries["step"] == {"path": "step", "array": entries["step"]["array"], "shape": [], "dtype": "int32"}
    assert entries["key"]["dtype"] == "key" and entries["key"]["key_impl"] == "threefry2x32"
    assert "opt_state/0/0/mu/fully_connected_2/bias" in entries
    assert len(entries) == len(jax.tree.leaves(saved))
    # Every file but the manifest is listed with its sha256, and the manifest's own digest covers the rest.
    root = data_dir(tmp_path / "ckpt")
    on_disk = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    on_disk.remove("manifest.json")
    assert [f["path"] for f in manifest["files"]] == on_disk
    assert any(name.startswith("arrays/ocdbt.process_0/d/") for name in on_disk)
    for item in manifest["files"]:
        assert hashlib.sha256((root / item["path"]).read_bytes()).hexdigest() == item["sha256"]
    body = {key: value for key, value in manifest.items() if key != "manifest_sha256"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    assert hashlib.sha256(canonical).hexdigest() == manifest["manifest_sha256"]


def test_arrays_are_loaded_without_pickle(tmp_path, monkeypatch):
    checkpoint.save_checkpoint(tmp_path / "ckpt", trained_state())

    def forbidden(*args, **kwargs):
        raise AssertionError("pickle used while loading a checkpoint")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, forbidden)
    real_load = np.load
    monkeypatch.setattr(np, "load", lambda *a, **k: real_load(*a, **{**k, "allow_pickle": False}))
    restored, _ = checkpoint.load_checkpoint(tmp_path / "ckpt", trained_state(steps=0))
    assert_trees_equal(restored, trained_state())


def test_objects_and_strings_cannot_be_saved_and_metadata_must_be_json(tmp_path):
    with pytest.raises(CheckpointError, match="Cannot store a leaf of type str"):
        checkpoint.save_checkpoint(tmp_path / "a", {"name": "x"})
    with pytest.raises(TypeError, match="metadata must be JSON-serializable"):
        checkpoint.save_checkpoint(tmp_path / "b", {"w": jnp.ones(1)}, metadata={"f": object()})
    with pytest.raises(TypeError, match="model_config must be a dict"):
        checkpoint.save_checkpoint(tmp_path / "c", {"w": jnp.ones(1)}, model_config=["lenet"])
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("partial", [True, False], ids=["partial-restore", "orbax-0.11-full-restore"])
def test_load_a_subtree_by_prefix(tmp_path, monkeypatch, partial):
    monkeypatch.setattr(checkpoint.arrays, "has_partial_restore", lambda ocp: partial and ocp is not None)
    saved = trained_state()
    checkpoint.save_checkpoint(tmp_path / "ckpt", saved)
    template = jax.eval_shape(lambda: saved.params)  # shapes only
    params, _ = checkpoint.load_checkpoint(tmp_path / "ckpt", template, prefix="params")
    assert_trees_equal(params, saved.params)
    key, _ = checkpoint.load_checkpoint(tmp_path / "ckpt", saved.key, prefix="key")
    assert_trees_equal(key, saved.key)


def test_architecture_mismatch_lists_missing_unexpected_and_reshaped_entries(tmp_path):
    checkpoint.save_checkpoint(tmp_path / "ckpt", trained_state(small_model(hidden=8)))
    other = jaxdl.Serial(jaxdl.FullyConnected(16), jaxdl.ReLU(), jaxdl.FullyConnected(3), jaxdl.ReLU(),
                         jaxdl.FullyConnected(3), jaxdl.SoftMax())
    with pytest.raises(CheckpointMismatchError) as error:
        checkpoint.load_checkpoint(tmp_path / "ckpt", template_of(other))
    message = str(error.value)
    assert "does not match the model" in message
    assert "missing from the checkpoint" in message and "params/fully_connected_4/weights" in message
    assert "unexpected in the checkpoint" not in message  # every saved entry still has a place
    assert "reshaped or retyped" in message
    assert "params/fully_connected_0/weights: checkpoint float32[5, 8], model float32[5, 16]" in message
    smaller = jaxdl.Serial(jaxdl.FullyConnected(8), jaxdl.SoftMax())
    with pytest.raises(CheckpointMismatchError, match=r"unexpected in the checkpoint \(\d+\):\n.*fully_connected_2"):
        checkpoint.load_checkpoint(tmp_path / "ckpt", template_of(smaller))
    retyped = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, jnp.bfloat16) if x.dtype == jnp.float32 else x,
                           template_of(small_model()))
    with pytest.raises(CheckpointMismatchError, match=r"checkpoint float32\[5, 8\], model bfloat16\[5, 8\]"):
        checkpoint.load_checkpoint(tmp_path / "ckpt", retyped)


def test_missing_checkpoint_and_other_format_versions_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="No checkpoint"):
        checkpoint.read_manifest(tmp_path / "nothing")
    checkpoint.save_checkpoint(tmp_path / "ckpt", {"w": jnp.ones(1)})
    manifest_path = data_dir(tmp_path / "ckpt") / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["format_version"] = checkpoint.FORMAT_VERSION + 1
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="Upgrade jaxdl"):
        checkpoint.read_manifest(tmp_path / "ckpt")
    old = tmp_path / "old"  # a format-1 checkpoint: a real directory with an npz
    old.mkdir()
    (old / "manifest.json").write_text(json.dumps({"format": "jaxdl.checkpoint", "format_version": 1}))
    with pytest.raises(CheckpointError, match="format version 1 .*npz"):
        checkpoint.load_checkpoint(old, {"w": jnp.ones(1)})
    (old / "manifest.json").write_text(json.dumps({"format": "something.else", "format_version": 1}))
    with pytest.raises(CheckpointError, match="not a jaxdl checkpoint"):
        checkpoint.read_manifest(old)


def test_orbax_prints_and_logs_nothing(tmp_path, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    logging.getLogger("absl").setLevel(logging.DEBUG)
    try:
        checkpoint.save_checkpoint(tmp_path / "ckpt", {"w": jnp.ones(3)})
        checkpoint.load_checkpoint(tmp_path / "ckpt", {"w": jnp.ones(3)})
    finally:
        logging.getLogger("absl").setLevel(logging.NOTSET)
    assert [r.getMessage() for r in caplog.records if "orbax" in r.pathname] == []
    assert "orbax" not in capfd.readouterr().err.lower()


def test_files_follow_the_umask(tmp_path):
    previous = os.umask(0o027)
    try:
        checkpoint.save_checkpoint(tmp_path / "ckpt", {"w": jnp.ones(3)})
        checkpoint.write_text_atomic(tmp_path / "metrics.csv", "a,b\n")
        checkpoint.save(tmp_path / "net.pkl", [1])
    finally:
        os.umask(previous)
    root = data_dir(tmp_path / "ckpt")
    for path in [root, *root.rglob("*")]:
        assert path.stat().st_mode & 0o777 == (0o750 if path.is_dir() else 0o640), path
    assert (tmp_path / "metrics.csv").stat().st_mode & 0o777 == 0o640
    assert (tmp_path / "net.pkl").stat().st_mode & 0o777 == 0o640


# ----------------------------------------------------------------------------------------
# Tampering: every change is a CheckpointCorruptedError naming the file (and the field).


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """A saved checkpoint's real directory (tests copy it before changing anything)."""
    directory = tmp_path_factory.mktemp("pristine") / "ckpt"
    checkpoint.save_checkpoint(directory, trained_state(), metadata={"epoch": 3, "history": [0.5, 0.7]})
    return data_dir(directory)


@pytest.fixture
def copy(pristine, tmp_path):
    target = tmp_path / "copy"
    shutil.copytree(pristine, target)
    return target


def template():
    return trained_state(steps=0)


def test_a_copied_checkpoint_directory_loads(copy):
    restored, _ = checkpoint.load_checkpoint(copy, template())
    assert_trees_equal(restored, trained_state())
    assert checkpoint.verify_checkpoint(copy)["metadata"]["epoch"] == 3


def test_each_changed_file_fails_its_hash_check(pristine, tmp_path):
    files = [item["path"] for item in checkpoint.read_manifest(pristine)["files"]]
    kinds = {"_METADATA", "_CHECKPOINT_METADATA", "manifest.ocdbt", "commit_success.txt"}
    assert kinds <= {pathlib.PurePath(name).name for name in files}
    for index, name in enumerate(files):
        copy = tmp_path / f"copy{index}"
        shutil.copytree(pristine, copy)
        data = bytearray((copy / name).read_bytes())
        data[len(data) // 2] ^= 0x01
        (copy / name).write_bytes(bytes(data))
        with pytest.raises(CheckpointCorruptedError, match=f"{name} has .* sha256 .* changed or is incomplete"):
            checkpoint.load_checkpoint(copy, template())
        checkpoint.read_manifest(copy)  # the manifest itself is intact


def biggest_file(directory):
    return max((p for p in directory.rglob("*") if p.is_file() and p.name != "manifest.json"),
               key=lambda p: p.stat().st_size)


@pytest.mark.parametrize("damage, message", [
    (lambda d: biggest_file(d).write_bytes(biggest_file(d).read_bytes()[:-7]), "bytes and sha256"),
    (lambda d: biggest_file(d).unlink(), r"missing: arrays/"),
    (lambda d: (d / "arrays" / "d" / "extra").write_bytes(b"x"), "not in the manifest: arrays/d/extra"),
    (lambda d: (d / "arrays" / "README").symlink_to("/etc/hostname"), "arrays/README is a symbolic link"),
    (lambda d: shutil.rmtree(d / "arrays"), "missing"),
])
def test_truncated_missing_extra_or_linked_files_are_refused(copy, damage, message):
    damage(copy)
    with pytest.raises(CheckpointCorruptedError, match=message):
        checkpoint.load_checkpoint(copy, template())
    with pytest.raises(CheckpointCorruptedError, match=message):
        checkpoint.verify_checkpoint(copy)


def edit_manifest(directory, edit, *, reseal=False):
    """Applies ``edit`` to the manifest's JSON; ``reseal`` recomputes its digest (a deliberate
    edit that only field validation can catch)."""
    path = directory / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest = edit(manifest) or manifest
    text = checkpoint.manifest.seal(manifest) if reseal and isinstance(manifest, dict) else json.dumps(manifest)
    path.write_text(text)


def swap_entry_names(manifest):
    entries = manifest["entries"]
    entries[0]["path"], entries[1]["path"] = entries[1]["path"], entries[0]["path"]


def without(key):
    return lambda manifest: {k: v for k, v in manifest.items() if k != key}


@pytest.mark.parametrize("edit, reseal, message", [
    (lambda m: m["metadata"].update(epoch=4), False, "'manifest_sha256' says .* edited"),
    (swap_entry_names, False, "edited or is damaged"),
    (lambda m: m["files"][0].update(sha256="0" * 64), False, "edited or is damaged"),
    (lambda m: m.update(model_config={"name": "other"}), False, "edited or is damaged"),
    (without("manifest_sha256"), False, "field 'manifest_sha256' is missing"),
    (lambda m: m["files"][0].update(path="/etc/passwd"), True, r"field 'files\[0\]\.path' .*'/etc/passwd'"),
    (lambda m: m["files"][0].update(path="../../outside"), True, r"field 'files\[0\]\.path' .*'\.\./\.\./outside'"),
    (lambda m: m["files"][0].update(path="arrays/./x"), True, r"field 'files\[0\]\.path'"),
    (lambda m: m["files"].append(dict(m["files"][0])), True, r"field 'files\[\d+\]\.path' must be a new"),
    (lambda m: [m], False, "must be a JSON object, not a list"),
    (without("entries"), True, "field 'entries' is missing"),
    (without("files"), True, "field 'files' is missing"),
    (without("metadata"), True, "field 'metadata' is missing"),
    (without("format_version"), True, "field 'format_version' is missing"),
    (without("format"), True, "field 'format' is missing"),
    (lambda m: m.update(metadata=[1, 2]), True, "field 'metadata' must be dict, not list"),
    (lambda m: m.update(step="3"), True, "field 'step' must be int or null, not str"),
    (lambda m: m.update(format_version="2"), True, "field 'format_version' must be int"),
    (lambda m: m.update(entries={"a": 1}), True, "field 'entries' must be list"),
    (lambda m: m["entries"].__setitem__(0, "params"), True, r"field 'entries\[0\]' must be an object"),
    (lambda m: m["entries"][0].update(shape="3"), True, r"field 'entries\[0\]\.shape' must be list"),
    (lambda m: m["entries"][0].update(shape=[-1]), True, r"'entries\[0\]\.shape' must be a list of non-negative"),
    (lambda m: m["entries"][0].update(dtype="object"), True, r"'entries\[0\]\.dtype' is not a numeric"),
    (lambda m: m["entries"][0].pop("path") and None, True, r"field 'entries\[0\]\.path' is missing"),
    (lambda m: m["entries"][0].update(array="../x"), True, r"field 'entries\[0\]\.array'"),
    (lambda m: m["files"][0].update(size=-1), True, r"field 'files\[0\]\.size'"),
    (lambda m: m.update(run={"epoch": 1}), True, "field 'run.metric' is missing"),
])
def test_edited_or_malformed_manifests_are_refused(copy, edit, reseal, message):
    edit_manifest(copy, edit, reseal=reseal)
    with pytest.raises(CheckpointCorruptedError, match=message) as error:
        checkpoint.read_manifest(copy)
    assert "manifest.json" in str(error.value)
    with pytest.raises(CheckpointCorruptedError, match=message):
        checkpoint.load_checkpoint(copy, template())


def test_a_manifest_that_is_not_json_is_refused(copy):
    (copy / "manifest.json").write_bytes((copy / "manifest.json").read_bytes()[:100])
    with pytest.raises(CheckpointCorruptedError, match="manifest.json is not valid JSON"):
        checkpoint.load_checkpoint(copy, template())


def rewrite_arrays(directory, arrays):
    """Replaces the orbax arrays and reseals the manifest over the new files (a consistent
    checkpoint whose arrays disagree with its entries)."""
    shutil.rmtree(directory / "arrays")
    checkpoint.arrays.write_arrays(directory / "arrays", arrays)
    manifest = json.loads((directory / "manifest.json").read_text())
    manifest["files"] = [{"path": name, "size": (directory / name).stat().st_size,
                          "sha256": hashlib.sha256((directory / name).read_bytes()).hexdigest()}
                         for name in checkpoint.manifest.data_files(directory, CheckpointError)]
    (directory / "manifest.json").write_text(checkpoint.manifest.seal(manifest))


def test_arrays_that_disagree_with_the_manifest_are_refused_even_with_matching_hashes(tmp_path):
    directory = tmp_path / "ckpt"
    checkpoint.save_checkpoint(directory, {"w": jnp.ones(2, jnp.float32), "v": jnp.ones(3, jnp.float32)})
    root = data_dir(directory)
    template = {"w": jnp.zeros(2, jnp.float32), "v": jnp.zeros(3, jnp.float32)}
    rewrite_arrays(root, {"arr_0": np.ones(2, np.int8), "arr_1": np.ones(3, np.float32)})
    with pytest.raises(CheckpointCorruptedError, match=r"entry v: the arrays hold int8\[2\], the manifest says float"):
        checkpoint.load_checkpoint(directory, template)
    rewrite_arrays(root, {"arr_7": np.ones(2, np.float32)})
    with pytest.raises(CheckpointCorruptedError, match="arrays do not hold arr_0, arr_1 that the manifest names"):
        checkpoint.load_checkpoint(directory, template)


# ----------------------------------------------------------------------------------------
# Atomic replacement (in process: exceptions; below: SIGKILL in a subprocess).


class Interrupted(BaseException):
    """Stands for a KeyboardInterrupt or a kill at a fault point."""


def interrupt_at(monkeypatch, point):
    """Raises `Interrupted` at the first fault point called ``point``; returns the points passed."""
    seen = []

    def hook(name):
        seen.append(name)
        if name == point and seen.count(point) == 1:
            raise Interrupted(point)

    monkeypatch.setattr(checkpoint.faults, "hook", hook)
    return seen


def test_crash_while_writing_arrays_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    directory = tmp_path / "ckpt"
    first = trained_state(steps=1)
    checkpoint.save_checkpoint(directory, first)

    def crash(path, arrays):
        path.mkdir()
        (path / "_METADATA").write_bytes(b"{partial")
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(checkpoint.directory, "write_arrays", crash)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save_checkpoint(directory, trained_state(steps=2))
    restored, _ = checkpoint.load_checkpoint(directory, trained_state(steps=0))
    assert_trees_equal(restored, first)
    assert leftovers(tmp_path) == []  # the new data directory was removed


@pytest.mark.parametrize("point", ["arrays written", "files hashed", "manifest written", "link created"])
def test_crash_before_the_link_is_replaced_keeps_the_previous_checkpoint(tmp_path, monkeypatch, point):
    directory = tmp_path / "ckpt"
    first, second = trained_state(steps=1), trained_state(steps=2)
    checkpoint.save_checkpoint(directory, first)
    interrupt_at(monkeypatch, point)
    with pytest.raises(Interrupted):
        checkpoint.save_checkpoint(directory, second)
    monkeypatch.setattr(checkpoint.faults, "hook", None)
    assert_trees_equal(checkpoint.load_checkpoint(directory, trained_state(steps=0))[0], first)
    assert leftovers(tmp_path) == []
    checkpoint.save_checkpoint(directory, second)
    assert_trees_equal(checkpoint.load_checkpoint(directory, trained_state(steps=0))[0], second)
    assert len([p for p in tmp_path.iterdir() if p.name.startswith(".ckpt.data-")]) == 1


def test_a_real_directory_is_replaced_and_put_back_if_the_swap_fails(tmp_path, monkeypatch):
    directory = tmp_path / "ckpt"
    directory.mkdir()  # e.g. a format-1 checkpoint
    (directory / "manifest.json").write_text(json.dumps({"format": "jaxdl.checkpoint", "format_version": 1}))
    interrupt_at(monkeypatch, "link created")
    with pytest.raises(Interrupted):
        checkpoint.save_checkpoint(directory, {"w": jnp.ones(2)})
    assert directory.is_dir() and not directory.is_symlink() and (directory / "manifest.json").is_file()
    assert leftovers(tmp_path) == []
    monkeypatch.setattr(checkpoint.faults, "hook", None)
    checkpoint.save_checkpoint(directory, {"w": jnp.ones(2)})
    assert directory.is_symlink()
    assert_trees_equal(checkpoint.load_checkpoint(directory, {"w": jnp.zeros(2)})[0], {"w": jnp.ones(2)})
    assert leftovers(tmp_path) == []
    with pytest.raises(FileExistsError, match="is a file"):
        (tmp_path / "file").write_text("x")
        checkpoint.save_checkpoint(tmp_path / "file", {"w": jnp.ones(2)})


def test_a_save_killed_after_moving_a_real_directory_aside_is_recovered_by_the_next(tmp_path, monkeypatch):
    directory = tmp_path / "ckpt"
    directory.mkdir()
    (directory / "notes.txt").write_text("old")
    # What a kill between the two renames leaves: the old directory aside, a complete new one unlinked.
    os.rename(directory, tmp_path / f".ckpt.replaced-{'a' * 32}")
    (tmp_path / f".ckpt.data-{'b' * 32}").mkdir()
    with pytest.raises(FileNotFoundError, match="No checkpoint"):
        checkpoint.read_manifest(directory)
    real_swap = checkpoint.single._swap_in

    def swap_after_checking_the_recovery(link, data):
        assert (link / "notes.txt").read_text() == "old"  # put back before the new swap
        real_swap(link, data)

    monkeypatch.setattr(checkpoint.single, "_swap_in", swap_after_checking_the_recovery)
    checkpoint.save_checkpoint(directory, {"w": jnp.ones(2)})
    assert directory.is_symlink() and leftovers(tmp_path) == []


# ----------------------------------------------------------------------------------------
# CheckpointSet: last + best of a training run.


def epoch_tree(epoch):
    return {"w": np.full((2, 3), epoch, np.float32), "step": np.asarray(epoch, np.int32)}


EPOCH_TEMPLATE = {"w": jax.ShapeDtypeStruct((2, 3), jnp.float32), "step": jax.ShapeDtypeStruct((), jnp.int32)}


def save_epochs(run, values, start=1):
    return [run.save(epoch, epoch_tree(epoch), metadata={"history": values[:epoch]}, metric_value=values[epoch - 1])
            for epoch in range(start, len(values) + 1)]


def first_best(values, mode="max"):
    """The 1-based epoch of the best finite value (the first among equals), or None."""
    finite = [(v if mode == "max" else -v, -epoch) for epoch, v in enumerate(values, 1) if math.isfinite(v)]
    return -max(finite)[1] if finite else None


def same(a, b):
    """Equality of JSON values, NaN included."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def assert_consistent(directory, values, epochs, mode="max"):
    """Opens the set; last is epoch ``epochs``, best the best of epochs 1..epochs; both load;
    nothing else is left in the directory."""
    run = checkpoint.CheckpointSet(directory, metric="acc", mode=mode)
    if epochs == 0:
        assert run.latest_epoch() is None and run.best_epoch() is None
        assert not (directory / "last" / "manifest.json").exists()
        assert {p.name for p in directory.iterdir()} <= {"last", "best"}
        return run
    best = first_best(values[:epochs], mode)
    assert (run.latest_epoch(), run.best_epoch()) == (epochs, best)
    expected = {"last", "best", "head", os.readlink(directory / "head"), f"epoch-{epochs:06d}"}
    for which, epoch in (("last", epochs), ("best", best)):
        if epoch is None:
            assert not (directory / which / "manifest.json").exists()
            continue
        expected.add(f"epoch-{epoch:06d}")
        tree, manifest = checkpoint.load_checkpoint(directory / which, EPOCH_TEMPLATE)
        assert float(tree["w"][0, 0]) == epoch and int(tree["step"]) == epoch
        assert same(manifest["metadata"], {"history": values[:epoch]})
        best_then = first_best(values[:epoch], mode)
        assert same(manifest["run"], {"epoch": epoch, "metric": "acc", "mode": mode, "value": values[epoch - 1],
                                      "best_epoch": best_then})
    assert {p.name for p in directory.iterdir()} == expected  # nothing stale left
    return run


def test_checkpoint_set_keep_the_last_and_the_best_epoch(tmp_path):
    values = [0.5, 0.7, 0.6, 0.7, float("nan")]
    run = checkpoint.CheckpointSet(tmp_path / "checkpoints", metric="acc", mode="max")
    assert run.latest_epoch() is None and run.best_value() is None
    assert save_epochs(run, values) == [True, True, False, False, False]  # ties keep the earlier epoch
    assert_consistent(tmp_path / "checkpoints", values, 5)
    assert run.best_value() == 0.7 and run.last_dir == tmp_path / "checkpoints" / "last"
    restored, manifest = run.restore(EPOCH_TEMPLATE, "best")
    assert float(restored["w"][0, 0]) == 2 and manifest["run"]["epoch"] == 2
    weights, _ = run.restore(EPOCH_TEMPLATE["w"], "last", prefix="w")
    assert float(weights[0, 0]) == 5
    assert checkpoint.read_manifest(run.best_dir)["metadata"]["history"] == values[:2]


def test_checkpoint_set_minimize_and_non_finite_values_never_best(tmp_path):
    values = [float("nan"), 0.4, -float("inf"), 0.3, 0.35]
    run = checkpoint.CheckpointSet(tmp_path, metric="acc", mode="min")
    assert save_epochs(run, values[:1]) == [False]
    assert_consistent(tmp_path, values, 1, mode="min")  # no best yet: best holds no checkpoint
    with pytest.raises(FileNotFoundError, match="No checkpoint in .*best"):
        run.restore(EPOCH_TEMPLATE, "best")
    assert save_epochs(run, values, start=2) == [True, False, True, False]
    assert_consistent(tmp_path, values, 5, mode="min")
    with pytest.raises(TypeError, match="metric_value must be a number"):
        run.save(6, epoch_tree(6), metric_value="0.3")


def test_the_caller_can_decide_the_best_epoch(tmp_path):
    """fit() decides itself (best=...); metric=None records no metric."""
    run = checkpoint.CheckpointSet(tmp_path)
    decisions = [run.save(epoch, epoch_tree(epoch), best=best) for epoch, best in [(1, False), (2, True), (3, False)]]
    assert decisions == [False, True, False]
    assert (run.latest_epoch(), run.best_epoch(), run.best_value()) == (3, 2, None)
    assert checkpoint.read_manifest(run.best_dir)["run"] == {"epoch": 2, "metric": None, "mode": "max",
                                                            "value": None, "best_epoch": 2}
    (tmp_path / "head").unlink()  # rebuilt from the newest epoch's record of the best one
    reopened = checkpoint.CheckpointSet(tmp_path)
    assert (reopened.latest_epoch(), reopened.best_epoch()) == (3, 2)


def test_checkpoint_set_refuse_misuse(tmp_path):
    run = checkpoint.CheckpointSet(tmp_path / "c", metric="acc")
    with pytest.raises(FileNotFoundError, match="No checkpoint"):
        run.restore(EPOCH_TEMPLATE)
    save_epochs(run, [0.5, 0.6])
    with pytest.raises(ValueError, match="epoch 2 is not after the latest committed epoch 2"):
        run.save(2, epoch_tree(2), metric_value=0.9)
    with pytest.raises(ValueError, match="keeps the best epoch by 'acc' \\(max\\), not 'loss' \\(min\\)"):
        checkpoint.CheckpointSet(tmp_path / "c", metric="loss", mode="min")
    with pytest.raises(ValueError, match="mode must be"):
        checkpoint.CheckpointSet(tmp_path / "c", metric="acc", mode="best")
    checkpoint.save_checkpoint(tmp_path / "old" / "last", {"w": jnp.ones(1)})  # the format of train_lenet.py
    with pytest.raises(CheckpointError, match="old/last exists but is not the link last -> head/last"):
        checkpoint.CheckpointSet(tmp_path / "old", metric="acc")
    assert_consistent(tmp_path / "c", [0.5, 0.6], 2)


def test_a_deleted_head_is_rebuilt_from_the_epochs(tmp_path):
    values = [0.5, 0.9, 0.6]
    save_epochs(checkpoint.CheckpointSet(tmp_path, metric="acc"), values)
    (tmp_path / "head").unlink()
    assert_consistent(tmp_path, values, 3)


@pytest.mark.parametrize("point", ["arrays written", "files hashed", "manifest written", "epoch renamed",
                                   "head written", "link created", "committed"])
def test_checkpoint_set_interrupted_at_each_point_stays_consistent(tmp_path, monkeypatch, point):
    values = [0.5, 0.7, 0.6]
    save_epochs(checkpoint.CheckpointSet(tmp_path, metric="acc"), values[:2])
    seen = interrupt_at(monkeypatch, point)
    with pytest.raises(Interrupted):
        save_epochs(checkpoint.CheckpointSet(tmp_path, metric="acc"), values, start=3)
    monkeypatch.setattr(checkpoint.faults, "hook", None)
    committed = "committed" in seen
    run = assert_consistent(tmp_path, values, 3 if committed else 2)
    save_epochs(run, values + [0.8], start=4 if committed else 3)
    assert_consistent(tmp_path, values + [0.8], 4)


# SIGKILL at every fault point. One Python process imports jaxdl and orbax once and then
# forks a child per fault point (before jax or orbax has started any thread); each child
# installs a hook that SIGKILLs itself at the k-th fault point of one save. The test then
# checks, in this process, what each killed save left behind.
KILL_SERVER = r"""
import json, os, shutil, signal, sys
import numpy as np
from jaxdl import checkpoint
checkpoint.arrays.orbax()

def epoch_tree(epoch):
    return {"w": np.full((2, 3), epoch, np.float32), "step": np.asarray(epoch, np.int32)}

def operation(kind, directory, values):
    if kind == "single":
        checkpoint.save_checkpoint(os.path.join(directory, "ckpt"), epoch_tree(2))
        return
    epoch = len(values)
    run = checkpoint.CheckpointSet(directory, metric="acc", mode="max")
    run.save(epoch, epoch_tree(epoch), metadata={"history": values}, metric_value=values[-1])

def child(kind, directory, values, kill_at, log):
    count = 0
    def hook(name):
        nonlocal count
        count += 1
        if count == kill_at:
            with open(log, "w") as file:
                file.write(name)
            os.kill(os.getpid(), signal.SIGKILL)
    checkpoint.faults.hook = hook
    operation(kind, directory, values)

results = []
for kind, base, values, out in json.loads(sys.argv[1]):
    for kill_at in range(1, 50):
        directory = f"{out}-{kill_at}"
        shutil.copytree(base, directory, symlinks=True)
        log = directory + ".point"
        pid = os.fork()
        if pid == 0:
            try:
                child(kind, directory, values, kill_at, log)
            finally:
                os._exit(0)
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        point = open(log).read() if os.path.exists(log) else None
        results.append({"kind": kind, "directory": directory, "values": values, "code": code, "point": point})
        if code == 0:
            break
print(json.dumps(results))
"""


def run_kill_server(scenarios):
    result = subprocess.run([sys.executable, "-c", KILL_SERVER, json.dumps(scenarios)], capture_output=True,
                            text=True, timeout=300, cwd=pathlib.Path(__file__).parent.parent)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not hasattr(os, "fork") or sys.platform == "darwin", reason="needs os.fork (Linux)")
def test_sigkill_at_every_write_boundary_leaves_a_consistent_checkpoint(tmp_path):
    empty, two, single = tmp_path / "empty", tmp_path / "two", tmp_path / "single"
    empty.mkdir()
    save_epochs(checkpoint.CheckpointSet(two, metric="acc"), [0.5, 0.7])
    checkpoint.save_checkpoint(single / "ckpt", epoch_tree(1))
    results = run_kill_server([
        ["set", str(empty), [0.5], str(tmp_path / "first")],
        ["set", str(two), [0.5, 0.7, 0.9], str(tmp_path / "third")],
        ["single", str(single), [], str(tmp_path / "replace")],
    ])
    points = {kind: [r["point"] for r in results if r["kind"] == kind] for kind in ("set", "single")}
    assert {"arrays written", "manifest written", "epoch renamed", "head written", "committed"} <= set(points["set"])
    assert {"arrays written", "manifest written", "link created", "committed"} <= set(points["single"])
    for result in results:
        directory, values, point = pathlib.Path(result["directory"]), result["values"], result["point"]
        assert result["code"] == (0 if point is None else -9), result
        done = point is None or point == "committed"
        if result["kind"] == "single":
            tree, _ = checkpoint.load_checkpoint(directory / "ckpt", EPOCH_TEMPLATE)
            assert float(tree["w"][0, 0]) == (2 if done else 1), result
            checkpoint.save_checkpoint(directory / "ckpt", epoch_tree(3))
            assert leftovers(directory) == [], result
            continue
        epochs = len(values) if done else len(values) - 1
        if len(values) == 1 and point in ("epoch renamed", "head written", "link created"):
            epochs = 1  # no head yet: opening adopts the complete epoch instead of deleting it
        run = assert_consistent(directory, values, epochs)
        assert run.save(epochs + 1, epoch_tree(epochs + 1), metadata={"history": values[:epochs] + [1.0]},
                        metric_value=1.0)


# ----------------------------------------------------------------------------------------
# The exercise's pickle API.


def test_pickle_api_round_trip(tmp_path):
    obj = {"weights": np.arange(4.0), "name": "net", "layers": [1, 2]}
    checkpoint.save(tmp_path / "net.pkl", obj)
    loaded = checkpoint.load(tmp_path / "net.pkl")
    assert loaded["name"] == "net" and loaded["layers"] == [1, 2]
    np.testing.assert_array_equal(loaded["weights"], obj["weights"])
    assert [p.name for p in tmp_path.iterdir()] == ["net.pkl"]
