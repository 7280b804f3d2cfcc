"""jaxdl.checkpoint: round trips of every dtype, no pickle, architecture checks, the digest
against every flipped or truncated file, older formats refused, plain directories that
``cp -r``/``rsync -a`` copy, replacement under injected faults, and `RunCheckpoints` (orbax's
CheckpointManager: last and best by its preservation policies, across reopening). A run
SIGKILLed at every write boundary is tests/test_kill_resume.py."""

import ast
import functools
import json
import logging
import os
import pathlib
import pickle
import shutil
import subprocess

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


def test_architecture_mismatch_lists_missing_unexpected_and_reshaped_entries(tmp_path):
    checkpoint.save_checkpoint(tmp_path / "ckpt", trained_state(small_model(hidden=8)))
    other = jaxdl.Serial(jaxdl.FullyConnected(16), jaxdl.ReLU(), jaxdl.FullyConnected(3), jaxdl.ReLU(),
                         jaxdl.FullyConnected(3), jaxdl.SoftMax())
    with pytest.raises(CheckpointMismatchError) as error:
        checkpoint.load_checkpoint(tmp_path / "ckpt", template_of(other))
    message = str(error.value)
    assert "does not match the model" in message
    assert "missing from the checkpoint" in message and "params/fully_connected_2/weights" in message
    assert "unexpected in the checkpoint" not in message  # every saved entry still has a place
    assert "reshaped or retyped" in message
    assert "params/fully_connected_0/weights: checkpoint float32[5, 8], model float32[5, 16]" in message
    smaller = jaxdl.Serial(jaxdl.FullyConnected(8), jaxdl.SoftMax())
    with pytest.raises(CheckpointMismatchError, match=r"unexpected in the checkpoint \(\d+\):\n.*fully_connected_1"):
        checkpoint.load_checkpoint(tmp_path / "ckpt", template_of(smaller))
    retyped = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, jnp.bfloat16) if x.dtype == jnp.float32 else x,
                           template_of(small_model()))
    with pytest.raises(CheckpointMismatchError, match=r"checkpoint float32\[5, 8\], model bfloat16\[5, 8\]"):
        checkpoint.load_checkpoint(tmp_path / "ckpt", retyped)


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


def test_objects_and_strings_cannot_be_saved_and_metadata_must_be_json(tmp_path):
    with pytest.raises(CheckpointError, match="Cannot store a leaf of type str"):
        checkpoint.save_checkpoint(tmp_path / "a", {"name": "x"})
    with pytest.raises(TypeError, match="save_checkpoint: metadata and model_config must be JSON data"):
        checkpoint.save_checkpoint(tmp_path / "b", {"w": jnp.ones(1)}, metadata={"f": object()})
    with pytest.raises(TypeError, match="save_checkpoint: model_config must be a dict or None, got list"):
        checkpoint.save_checkpoint(tmp_path / "c", {"w": jnp.ones(1)}, model_config=["lenet"])
    assert list(tmp_path.iterdir()) == []


def test_load_a_subtree_by_prefix(tmp_path):
    saved = trained_state()
    checkpoint.save_checkpoint(tmp_path / "ckpt", saved)
    template = jax.eval_shape(lambda: saved.params)  # shapes only
    params, _ = checkpoint.load_checkpoint(tmp_path / "ckpt", template, prefix="params")
    assert_trees_equal(params, saved.params)
    key, _ = checkpoint.load_checkpoint(tmp_path / "ckpt", saved.key, prefix="key")
    assert_trees_equal(key, saved.key)


def test_missing_checkpoint_and_older_formats_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="No checkpoint"):
        checkpoint.read_manifest(tmp_path / "nothing")
    old = tmp_path / "old"  # format version 2: manifest.json beside arrays/
    (old / "arrays").mkdir(parents=True)
    (old / "manifest.json").write_text(json.dumps({"format": "jaxdl.checkpoint", "format_version": 2}))
    with pytest.raises(CheckpointError, match="format version 2 .*this jaxdl reads format version 3"):
        checkpoint.load_checkpoint(old, {"w": jnp.ones(1)})
    run = tmp_path / "run" / "checkpoints"  # version 2's run layout: last/best links into head/
    run.mkdir(parents=True)
    os.symlink("head/last", run / "last")
    for find in (lambda: checkpoint.find_step_dir(run, "last"), lambda: checkpoint.RunCheckpoints(run)):
        with pytest.raises(CheckpointError, match="format version 2 \\(last/best links"):
            find()
    checkpoint.save_checkpoint(tmp_path / "new", {"w": jnp.ones(1)})
    manifest = tmp_path / "new" / "manifest" / "metadata"
    edited = json.loads(manifest.read_text())
    edited["format_version"] = 4
    manifest.write_text(json.dumps(edited))
    with pytest.raises(CheckpointCorruptedError, match="manifest/metadata was changed"):  # the digest first
        checkpoint.read_manifest(tmp_path / "new")


def test_a_saved_checkpoint_is_plain_files_and_replacing_it_leaves_nothing_behind(tmp_path):
    checkpoint.save_checkpoint(tmp_path / "ckpt", {"w": jnp.ones(3)}, metadata={"n": 1})
    checkpoint.save_checkpoint(tmp_path / "ckpt", {"w": jnp.zeros(3)}, metadata={"n": 2})
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]
    assert not [p for p in (tmp_path / "ckpt").rglob("*") if p.is_symlink()]
    restored, manifest = checkpoint.load_checkpoint(tmp_path / "ckpt", {"w": jnp.ones(3)})
    assert manifest["metadata"] == {"n": 2} and float(restored["w"].sum()) == 0.0


def test_files_follow_the_umask(tmp_path):
    previous = os.umask(0o027)
    try:
        checkpoint.save_checkpoint(tmp_path / "ckpt", {"w": jnp.ones(3)})
        checkpoint.write_text_atomic(tmp_path / "metrics.csv", "a,b\n")
    finally:
        os.umask(previous)
    for path in (tmp_path / "ckpt").rglob("*"):
        assert path.stat().st_mode & 0o007 == 0, path  # nothing for others
    assert (tmp_path / "metrics.csv").stat().st_mode & 0o777 == 0o640


def test_the_checkpoint_package_imports_neither_pickle_nor_jaxdl_distributed():
    root = pathlib.Path(checkpoint.__file__).parent
    for path in root.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
                     if isinstance(node, ast.ImportFrom) else [])
            assert not [n for n in names if n == "pickle" or n.startswith("jaxdl.distributed")
                        or n == "jaxdl.distributed"], (path.name, names)
            if isinstance(node, ast.ImportFrom) and node.module == "jaxdl":
                assert "distributed" not in [a.name for a in node.names], path.name


# ----------------------------------------------------------------------------------------
# Tampering: every file of a step flipped or truncated is a CheckpointCorruptedError naming it.


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    directory = tmp_path_factory.mktemp("pristine") / "ckpt"
    checkpoint.save_checkpoint(directory, trained_state(), metadata={"epoch": 3})
    return directory


@pytest.fixture
def copy(pristine, tmp_path):
    target = tmp_path / "ckpt"
    shutil.copytree(pristine, target)
    return target


def digested_files(directory):
    return sorted(json.loads((directory / "jaxdl_digest.json").read_text())["files"])


def test_the_digest_covers_every_file_but_orbax_commit_records(pristine):
    files = digested_files(pristine)
    every = sorted(p.relative_to(pristine).as_posix() for p in pristine.rglob("*") if p.is_file())
    assert sorted(set(every) - set(files)) == ["_CHECKPOINT_METADATA", "commit_success.txt", "jaxdl_digest.json"]
    assert "manifest/metadata" in files and any(name.startswith("state/") for name in files)


def flip(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2] if len(data) > 1 else b"")


@pytest.mark.parametrize("damage, words", [(flip, "was changed"), (truncate, "has \\d+ bytes, the digest says")],
                         ids=["flipped", "truncated"])
def test_every_data_file_flipped_or_truncated_is_refused_naming_it(pristine, tmp_path, damage, words):
    template = trained_state(steps=0)
    for index, name in enumerate(digested_files(pristine)):
        target = tmp_path / f"c{index}"
        shutil.copytree(pristine, target)
        damage(target / name)
        with pytest.raises(CheckpointCorruptedError, match=f"{target}: {name} {words}"):
            checkpoint.load_checkpoint(target, template)


@pytest.mark.parametrize("damage", [flip, truncate], ids=["flipped", "truncated"])
def test_orbax_commit_records_are_not_digested_and_cannot_change_the_arrays(pristine, tmp_path, damage):
    for name in ("_CHECKPOINT_METADATA", "commit_success.txt"):
        target = tmp_path / name
        shutil.copytree(pristine, target)
        damage(target / name)
        restored, manifest = checkpoint.load_checkpoint(target, trained_state(steps=0))
        assert_trees_equal(restored, trained_state())


@pytest.mark.parametrize("change, message", [
    (lambda d: (d / "state" / "extra").write_bytes(b"x"), "state/extra is not part of the checkpoint"),
    (lambda d: (d / "manifest" / "metadata").unlink(), "manifest/metadata is missing"),
    (lambda d: os.symlink("/etc/passwd", d / "state" / "linked"), "state/linked is a symbolic link"),
    (lambda d: (d / "jaxdl_digest.json").write_text("{"), "jaxdl_digest.json is damaged"),
    (lambda d: (d / "jaxdl_digest.json").unlink(), "jaxdl_digest.json is missing"),
], ids=["extra", "missing", "link", "damaged-digest", "no-digest"])
def test_extra_missing_linked_files_and_a_damaged_digest_are_refused(copy, change, message):
    change(copy)
    with pytest.raises(CheckpointCorruptedError, match=message):
        checkpoint.load_checkpoint(copy, trained_state(steps=0))


def test_a_consistently_resealed_manifest_that_lies_about_the_arrays_is_refused(copy):
    """A digest recomputed after editing the manifest (deliberate tampering) still cannot make
    orbax's arrays load as other shapes: every restored array is checked against its entry."""
    from jaxdl.checkpoint import digest

    path = copy / "manifest" / "metadata"
    manifest = json.loads(path.read_text())
    entry = next(e for e in manifest["entries"] if e["path"] == "params/fully_connected_0/weights")
    entry["shape"] = [8, 5]
    path.write_text(json.dumps(manifest))
    digest.write(copy)
    reshaped = jax.tree.map(lambda x: x, trained_state(steps=0))
    reshaped = reshaped._replace(params={**reshaped.params, "fully_connected_0": {
        **reshaped.params["fully_connected_0"], "weights": jnp.zeros((8, 5), jnp.float32)}})
    with pytest.raises(CheckpointCorruptedError, match="params/fully_connected_0/weights: the arrays hold float32"):
        checkpoint.load_checkpoint(copy, reshaped)
    manifest["entries"] = "none"
    path.write_text(json.dumps(manifest))
    digest.write(copy)
    with pytest.raises(CheckpointCorruptedError, match="manifest field 'entries' must be a list"):
        checkpoint.read_manifest(copy)


#: rsync is not part of every base system; .ci/run installs it, so CI always runs these copies.
needs_rsync = pytest.mark.skipif(shutil.which("rsync") is None, reason="rsync is not installed (.ci/run installs it)")


@pytest.mark.parametrize("command", [["cp", "-r"], pytest.param(["rsync", "-a"], marks=needs_rsync)],
                         ids=["cp -r", "rsync -a"])
def test_a_checkpoint_copied_with_cp_or_rsync_loads_and_is_independent(pristine, tmp_path, command):
    target = tmp_path / "kept"
    subprocess.run([*command, str(pristine) + ("/" if command[0] == "rsync" else ""), str(target)], check=True)
    restored, manifest = checkpoint.load_checkpoint(target, trained_state(steps=0))
    assert_trees_equal(restored, trained_state())
    assert manifest["metadata"] == {"epoch": 3}
    flip(target / "manifest" / "metadata")  # the copy is not a link to the original
    checkpoint.verify_checkpoint(pristine)


# ----------------------------------------------------------------------------------------
# Interrupted saves.


class Interrupted(BaseException):
    """Stands for a kill at a fault point (a BaseException: nothing catches it)."""


def interrupt_at(monkeypatch, point):
    def hook(name):
        if name == point:
            raise Interrupted(name)

    monkeypatch.setattr(checkpoint.faults, "hook", hook)


@pytest.mark.parametrize("point", ["items written", "digest written"])
def test_a_save_interrupted_before_its_commit_keeps_the_previous_checkpoint(tmp_path, monkeypatch, point):
    checkpoint.save_checkpoint(tmp_path / "ckpt", {"w": jnp.ones(3)}, metadata={"n": 1})
    interrupt_at(monkeypatch, point)
    with pytest.raises(Interrupted):
        checkpoint.save_checkpoint(tmp_path / "ckpt", {"w": jnp.zeros(3)}, metadata={"n": 2})
    monkeypatch.setattr(checkpoint.faults, "hook", None)
    assert checkpoint.read_manifest(tmp_path / "ckpt")["metadata"] == {"n": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]  # the unfinished one is removed


def test_a_save_killed_between_its_two_renames_is_recovered(tmp_path):
    checkpoint.save_checkpoint(tmp_path / "ckpt", {"w": jnp.ones(3)}, metadata={"n": 1})
    os.rename(tmp_path / "ckpt", tmp_path / ".ckpt.old-0123")  # as a kill after the first rename leaves it
    (tmp_path / ".ckpt.new-4567.orbax-checkpoint-tmp").mkdir()
    restored, manifest = checkpoint.load_checkpoint(tmp_path / "ckpt", {"w": jnp.zeros(3)})
    assert manifest["metadata"] == {"n": 1} and float(restored["w"].sum()) == 3.0
    checkpoint.save_checkpoint(tmp_path / "ckpt", {"w": jnp.zeros(3)}, metadata={"n": 2})
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]
    assert checkpoint.read_manifest(tmp_path / "ckpt")["metadata"] == {"n": 2}


# ----------------------------------------------------------------------------------------
# RunCheckpoints: orbax's CheckpointManager, last and best by its preservation policies.


def step_tree(step):
    return {"w": jnp.full((2,), float(step)), "step": jnp.int32(step)}


def save_steps(directory, values, mode="max", start=10):
    """Saves one step per value (None: a mid-epoch step, unranked), each in a fresh manager
    (as a resumed run reopens it); returns the steps."""
    steps = []
    for index, value in enumerate(values):
        step = start + 10 * index
        run = checkpoint.RunCheckpoints(directory, best_mode=mode)
        run.save(step, step_tree(step), metadata={"value": value}, metric=value)
        run.close()
        steps.append(step)
    return steps


def kept(directory):
    run = checkpoint.RunCheckpoints(directory, read_only=True)
    try:
        return run.steps(), run.latest_step(), run.best_step()
    finally:
        run.close()


@pytest.mark.parametrize("mode, values, best", [
    ("max", [0.5, None, 0.7, 0.6, None, 0.7], 30),  # a tie keeps the earlier step; unranked steps go
    ("min", [0.5, 0.3, float("nan"), 0.4, None], 20),  # NaN is never best
])
def test_run_checkpoints_keep_the_newest_and_the_best_step_across_reopening(tmp_path, mode, values, best):
    steps = save_steps(tmp_path / "checkpoints", values, mode)
    assert kept(tmp_path / "checkpoints") == (sorted({best, steps[-1]}), steps[-1], best)
    for which, step in (("last", steps[-1]), ("best", best)):
        directory = checkpoint.find_step_dir(tmp_path / "checkpoints", which)
        assert directory == tmp_path / "checkpoints" / f"step_{step:08d}"
        restored, manifest = checkpoint.load_checkpoint(directory, step_tree(0))
        assert int(restored["step"]) == step
    assert not [p for p in tmp_path.rglob("*") if p.is_symlink()]


def test_run_checkpoints_without_a_ranked_step_have_no_best(tmp_path):
    assert checkpoint.find_step_dir(tmp_path / "nothing", "best") is None
    save_steps(tmp_path / "checkpoints", [None, None])
    assert kept(tmp_path / "checkpoints") == ([20], 20, None)
    with pytest.raises(ValueError, match="find_step_dir: which must be 'last' or 'best', got 'first'"):
        checkpoint.find_step_dir(tmp_path / "checkpoints", "first")
    with pytest.raises(ValueError, match="RunCheckpoints: best_mode must be 'max' or 'min', got 'up'"):
        checkpoint.RunCheckpoints(tmp_path / "checkpoints", best_mode="up")


@pytest.mark.parametrize("point", ["items written", "digest written", "committed", "old steps removed"])
def test_a_run_save_interrupted_at_each_point_keeps_last_and_best(tmp_path, monkeypatch, point):
    directory = tmp_path / "checkpoints"
    save_steps(directory, [0.9, 0.5])  # best 10, last 20
    interrupt_at(monkeypatch, point)
    run = checkpoint.RunCheckpoints(directory)
    with pytest.raises(Interrupted):
        run.save(30, step_tree(30), metric=0.95)
    monkeypatch.setattr(checkpoint.faults, "hook", None)
    committed = point in ("committed", "old steps removed")
    steps, last, best = kept(directory)
    assert (last, best) == ((30, 30) if committed else (20, 10))
    for step in {last, best}:
        checkpoint.verify_checkpoint(directory / f"step_{step:08d}")
    save_steps(directory, [0.1], start=40)  # the next save cleans up what the interruption left
    assert kept(directory) == ([30, 40] if committed else [10, 40], 40, 30 if committed else 10)
    assert sorted(p.name for p in directory.iterdir()) == [f"step_{s:08d}" for s in kept(directory)[0]]


@needs_rsync
def test_a_run_directory_copied_with_cp_or_rsync_keeps_last_and_best(tmp_path):
    save_steps(tmp_path / "run" / "checkpoints", [0.9, 0.5])
    for command, target in ((["cp", "-r"], "cp"), (["rsync", "-a"], "rsync")):
        source = str(tmp_path / "run") + ("/" if command[0] == "rsync" else "")
        subprocess.run([*command, source, str(tmp_path / target)], check=True)
        assert kept(tmp_path / target / "checkpoints") == ([10, 20], 20, 10)
        best = checkpoint.find_step_dir(tmp_path / target / "checkpoints", "best")
        restored, _ = checkpoint.load_checkpoint(best, step_tree(0))
        assert int(restored["step"]) == 10
    one = tmp_path / "one"  # one step on its own is a complete checkpoint
    subprocess.run(["cp", "-r", str(tmp_path / "run" / "checkpoints" / "step_00000020"), str(one)], check=True)
    assert int(checkpoint.load_checkpoint(one, step_tree(0))[0]["step"]) == 20
