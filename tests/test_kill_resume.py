"""Whole training runs SIGKILLed at every checkpoint-write boundary of an epoch, then resumed.

A helper process imports jaxdl (and orbax, matplotlib) once, runs no JAX computation, and
forks one child per kill point. Each child trains a tiny model with ``jaxdl.fit(...,
output_dir=..., epochs=3)`` and SIGKILLs itself at the k-th fault point hit while epoch 2 is
saved (`jaxdl.checkpoint.faults`: the points of orbax's save of the step, through
`jaxdl.checkpoint.digest.DigestedRename` and `RunCheckpoints.save`, then ``"metrics written"``
after ``metrics.csv``/``metrics.png``); the child for k = one past the
last point is not killed and finishes the run. This process then checks what each kill
left (``last``, the newest step, is the newest committed epoch and equals the unbroken run's
state after that epoch; ``best`` is the best of the committed history), resumes the run with ``resume=True``
and checks that the result, ``metrics.csv`` and the checkpoints equal an unbroken run's, bit
for bit, with nothing stale left behind.
"""

import functools
import json
import os
import pathlib
import re
import signal
import subprocess
import sys

import numpy as np
import pytest

import jaxdl
from jaxdl import checkpoint
from jaxdl.training import Callback
from jaxdl.training.history import read_metrics_csv

EPOCHS = 3
KILLED_EPOCH = 2
POINTS = ["items written", "digest written", "committed", "old steps removed",
          "metrics written"]  # the fault points of epoch 2's save, in order
BEST = ("validation_loss", "min")

_RNG = np.random.default_rng(0)
X = _RNG.normal(size=(48, 4)).astype(np.float32)
Y = (X[:, 0] - X[:, 2] > 0).astype(np.int32)
VALIDATION_X = _RNG.normal(size=(16, 4)).astype(np.float32)
VALIDATION_Y = (VALIDATION_X[:, 0] - VALIDATION_X[:, 2] > 0).astype(np.int32)


class Shuffled:
    """An epoch-indexed source: 4 batches of 12 in an order that is a function of the epoch."""

    steps_per_epoch = 4

    def epoch(self, epoch):
        order = np.random.default_rng([11, epoch]).permutation(len(X))
        for i in range(0, len(X), 12):
            yield X[order[i:i + 12]], Y[order[i:i + 12]]


class Validation:
    """Epoch-indexed validation data whose labels are flipped in epoch 2, so that epoch 2 is not
    the best one: while epoch 2 is saved, ``best`` (epoch 1) and ``last`` differ; epoch 3
    becomes best after the resume, which removes epoch 1."""

    def epoch(self, epoch):
        return [(VALIDATION_X, 1 - VALIDATION_Y if epoch + 1 == KILLED_EPOCH else VALIDATION_Y)]


MODEL = jaxdl.Serial(jaxdl.FullyConnected(6), jaxdl.BatchNormalization(), jaxdl.ReLU(), jaxdl.Dropout(0.3),
                     jaxdl.FullyConnected(2), jaxdl.SoftMax())
OPTIMIZER = jaxdl.Adam(3e-2)


@functools.cache
def steps():
    """The train and eval steps, built once per process, so that the resumed runs of one process
    reuse the programs the first run compiled (building them computes nothing)."""
    return jaxdl.make_train_step(MODEL, jaxdl.cross_entropy, OPTIMIZER), jaxdl.make_eval_step(MODEL)


def run_fit(output_dir, *, resume=False, callbacks=()):
    """The run under test (no JAX computation before this is called)."""
    state = jaxdl.create_train_state(MODEL, OPTIMIZER, 0, (12, 4))
    run = jaxdl.Run(output_dir, resume=resume)
    train_step, eval_step = steps()
    return jaxdl.fit(train_step, state, Shuffled(), epochs=EPOCHS, eval_step=eval_step, validation_data=Validation(),
                     run=run, best_metric=BEST[0], best_mode=BEST[1],
                     callbacks=[*callbacks, *jaxdl.default_callbacks(run, log=None)])


# The helper process: imported once, then one fork per kill point (before any JAX computation,
# whose thread pools would not survive the fork). A child SIGKILLs itself at the k-th fault point
# after epoch 2's on_epoch_end (i.e. during epoch 2's checkpoint and metrics writes), having
# first recorded the point's name.
KILL_SERVER = r"""
import json, os, signal, sys, time
config = json.loads(sys.argv[1])
sys.path.insert(0, config["tests"])
import jax
jax.config.update("jax_enable_x64", config["x64"])
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot
from jaxdl import checkpoint, enable_compilation_cache
checkpoint.backend.orbax()
# The children share one persistent compilation cache (the first one compiles the steps, the
# others load them): what is tested here is the checkpoint writes, not the compiler.
enable_compilation_cache(os.path.join(config["out"], "xla-cache"))
import test_kill_resume as spec

def child(directory, kill_at, log):
    armed, count = False, 0

    class Arm(spec.Callback):
        def on_epoch_end(self, row, train_state):
            nonlocal armed
            armed = row["epoch"] == spec.KILLED_EPOCH

    def hook(name):
        nonlocal armed, count
        if not armed:
            return
        count += 1
        if count == kill_at:
            with open(log, "w") as file:
                file.write(name)
            os.kill(os.getpid(), signal.SIGKILL)
        if name == "metrics written":
            armed = False

    checkpoint.faults.hook = hook
    spec.run_fit(directory, callbacks=[Arm()])

results = []
for kill_at in range(1, 30):
    directory = os.path.join(config["out"], f"kill-{kill_at}")
    log = directory + ".point"
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            child(directory, kill_at, log)
            code = 0
        finally:
            os._exit(code)
    deadline = time.monotonic() + config["child_timeout"]
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            sys.exit(f"child {kill_at} ran past {config['child_timeout']} s")
        time.sleep(0.02)
    code = os.waitstatus_to_exitcode(status)
    point = open(log).read() if os.path.exists(log) else None
    results.append({"kill_at": kill_at, "directory": directory, "code": code, "point": point})
    if code != -signal.SIGKILL:
        break
print(json.dumps(results))
"""


def run_kill_server(out, timeout=240):
    import jax

    config = {"tests": str(pathlib.Path(__file__).parent), "out": str(out), "x64": bool(jax.config.jax_enable_x64),
              "child_timeout": 60}
    process = subprocess.Popen([sys.executable, "-c", KILL_SERVER, json.dumps(config)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, cwd=pathlib.Path(__file__).parent.parent,
                               start_new_session=True)  # its own process group: the children die with it
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        pytest.fail(f"the kill server ran past {timeout} s")
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
    assert process.returncode == 0, stderr[-3000:]
    return json.loads(stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------------------
# Checks.


def leaves(tree):
    import jax

    out = []
    for leaf in jax.tree.leaves(tree):
        if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            leaf = jax.random.key_data(leaf)
        out.append(np.asarray(leaf))
    return out


def assert_bitwise_equal(a, b, what):
    import jax

    assert jax.tree.structure(a) == jax.tree.structure(b), what
    for x, y in zip(leaves(a), leaves(b)):
        assert x.dtype == y.dtype and x.shape == y.shape, what
        assert x.tobytes() == y.tobytes(), what


def first_best(history):
    metric, mode = BEST
    values = [row[metric] for row in history]
    best = min(values) if mode == "min" else max(values)
    return values.index(best) + 1


class Record(Callback):
    """Copies the train state after each epoch (the reference for the committed epochs)."""

    def __init__(self):
        self.states = {}

    def on_epoch_end(self, row, train_state):
        import jax

        self.states[row["epoch"]] = jax.tree.map(lambda leaf: leaf.copy(), train_state)


STALE = re.compile(r"\..*\.tmp|.*orbax-checkpoint-tmp.*")


def stale_entries(root):
    found = []
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            if STALE.fullmatch(name) or os.path.islink(os.path.join(directory, name)):
                found.append(os.path.join(directory, name))
    return found


def step_name(epoch):
    return f"step_{epoch * Shuffled.steps_per_epoch:08d}"


def last_and_best(run_dir):
    return (checkpoint.find_step_dir(run_dir / "checkpoints", "last"),
            checkpoint.find_step_dir(run_dir / "checkpoints", "best"))


def assert_killed_run_is_consistent(run_dir, point, template, reference_states):
    """What the kill left: the newest committed step is last, the best of its history is best."""
    committed = KILLED_EPOCH if point in ("committed", "old steps removed", "metrics written") else KILLED_EPOCH - 1
    checkpoints = run_dir / "checkpoints"
    names = sorted(p.name for p in checkpoints.iterdir())
    uncommitted = [name for name in names if "orbax-checkpoint-tmp" in name]
    assert len(uncommitted) == (point in ("items written", "digest written")), (point, names)
    assert [name for name in names if name not in uncommitted] == [step_name(e) for e in range(1, committed + 1)]
    last_dir, best_dir = last_and_best(run_dir)
    assert last_dir.name == step_name(committed), point
    last, manifest = checkpoint.load_checkpoint(last_dir, template)
    history = manifest["metadata"]["history"]
    assert manifest["metadata"]["epoch"] == committed, point
    assert [row["epoch"] for row in history] == list(range(1, committed + 1)), point
    assert int(last.step) == committed * Shuffled.steps_per_epoch, point
    assert_bitwise_equal(last, reference_states[committed], f"{point}: last")
    best_epoch = first_best(history)
    assert best_dir.name == step_name(best_epoch), point
    best, best_manifest = checkpoint.load_checkpoint(best_dir, template)
    recorded = {"epoch": best_epoch, BEST[0]: history[best_epoch - 1][BEST[0]]}
    assert manifest["metadata"]["best"] == recorded == best_manifest["metadata"]["best"], point
    assert best_manifest["metadata"]["history"] == history[:best_epoch], point
    assert_bitwise_equal(best, reference_states[best_epoch], f"{point}: best")
    rows = read_metrics_csv(run_dir / "metrics.csv")
    written = KILLED_EPOCH if point == "metrics written" else KILLED_EPOCH - 1
    assert [int(row["epoch"]) for row in rows] == list(range(1, written + 1)), point
    return committed, history


def assert_metrics_csv_matches(path, history, what):
    rows = read_metrics_csv(path)
    assert [int(row["epoch"]) for row in rows] == list(range(1, EPOCHS + 1)), what
    for row, expected in zip(rows, history):
        assert set(row) == set(expected), what
        for key, value in expected.items():
            assert type(value)(row[key]) == value, (what, key)


def assert_clean(run_dir, best_epoch, what):
    assert stale_entries(run_dir) == [], what
    assert {p.name for p in run_dir.iterdir()} == {"checkpoints", "metrics.csv", "metrics.png"}, what
    expected = {step_name(EPOCHS), step_name(best_epoch)}
    assert {p.name for p in (run_dir / "checkpoints").iterdir()} == expected, what


@pytest.mark.skipif(not hasattr(os, "fork") or sys.platform == "darwin", reason="needs os.fork (Linux)")
def test_sigkill_at_every_write_boundary_of_an_epoch_then_resume_is_bit_identical(tmp_path):
    results = run_kill_server(tmp_path)
    killed = [result for result in results if result["code"] == -signal.SIGKILL]
    assert [result["point"] for result in killed] == POINTS, results
    finished = results[-1]
    assert finished["code"] == 0 and finished["point"] is None, results

    recorder = Record()
    reference = run_fit(tmp_path / "unbroken", callbacks=[recorder])
    assert reference.status == "completed" and [row["epoch"] for row in reference.history] == [1, 2, 3]
    assert first_best(reference.history[:KILLED_EPOCH]) == 1 and reference.best["epoch"] == 3  # as designed
    template = reference.train_state
    compared = ("epoch", "step", "train_loss", "validation_loss", "validation_accuracy")

    def same_as_reference(history, what):
        assert [{k: row[k] for k in compared} for row in history] == \
            [{k: row[k] for k in compared} for row in reference.history], what

    # The child that was not killed ran the whole run in another process: the same result.
    run_dir = pathlib.Path(finished["directory"])
    final, manifest = checkpoint.load_checkpoint(last_and_best(run_dir)[0], template)
    assert_bitwise_equal(final, reference.train_state, "the child's unbroken run")
    same_as_reference(manifest["metadata"]["history"], "the child's unbroken run")
    assert_metrics_csv_matches(run_dir / "metrics.csv", manifest["metadata"]["history"], "the child's unbroken run")
    assert_clean(run_dir, reference.best["epoch"], "the child's unbroken run")

    for result in killed:
        run_dir, point = pathlib.Path(result["directory"]), result["point"]
        committed, history = assert_killed_run_is_consistent(run_dir, point, template, recorder.states)
        resumed = run_fit(run_dir, resume=True)
        assert resumed.status == "completed", point
        assert resumed.history[:committed] == history, point  # the committed rows, seconds included
        same_as_reference(resumed.history, point)
        assert resumed.best == reference.best, point
        assert_bitwise_equal(resumed.train_state, reference.train_state, point)
        for which, directory in zip(("last", "best"), last_and_best(run_dir)):
            state, manifest = checkpoint.load_checkpoint(directory, template)
            epoch = EPOCHS if which == "last" else reference.best["epoch"]
            assert manifest["metadata"]["epoch"] == epoch, (point, which)
            assert_bitwise_equal(state, recorder.states[epoch], f"{point}: {which} after resuming")
        last_manifest = checkpoint.read_manifest(last_and_best(run_dir)[0])
        assert last_manifest["metadata"]["history"] == resumed.history, point
        assert_metrics_csv_matches(run_dir / "metrics.csv", resumed.history, point)
        assert_clean(run_dir, reference.best["epoch"], point)
