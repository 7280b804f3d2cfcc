"""Shared resources and hostile files give one clear error, never a raw traceback (issue 20, items 5, 7, 8).

* The output directory of `jaxdl.fit`: one run at a time (a lock a killed run does not leave
  stuck), files that are not a run refused unless ``overwrite=True``, a file / an unwritable
  directory named with the cause, checked before an epoch is trained; resume without a
  committed checkpoint refused before anything collective.
* Writes the disk refuses (`jaxdl.checkpoint.StorageError`: "no space left on device at <dir>").
* Manifests nested 100,000 deep; pickles that name code (`jaxdl.exercise.pickle_io.load`'s
  allow-list: nothing of the file runs); damaged pickles.
* Two processes preparing MNIST at once.

Tables of (id, setup, exception, message regex) run by parametrized tests; each case fails on
the code before this file.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import os
import pathlib
import pickle
import re
import signal
import subprocess
import sys
import textwrap

import jax.numpy as jnp
import numpy as np
import pytest

import jaxdl
from jaxdl import checkpoint, distributed
from jaxdl.checkpoint import RunDirectoryError, StorageError
from jaxdl.checkpoint.run_directory import LOCK_NAME
from jaxdl.exercise import pickle_io

X = np.random.default_rng(0).normal(size=(8, 4)).astype(np.float32)
Y = (X[:, 0] > 0).astype(np.int32)
REPOSITORY = pathlib.Path(__file__).resolve().parents[1]


def tiny():
    return TINY_MODEL, TINY_OPTIMIZER, jaxdl.create_train_state(TINY_MODEL, TINY_OPTIMIZER, 0, (8, 4))


class NotTrained:
    """Training data that fails the test when an epoch starts: the check must come first."""

    steps_per_epoch = 1

    def epoch(self, epoch):
        raise AssertionError("an epoch was trained before the output directory was checked")


def fit(output_dir, train_data=None, callbacks=(), **run_options):
    """`jaxdl.fit` of a tiny model into ``jaxdl.Run(output_dir, **run_options)``, silent."""
    _, _, state = tiny()
    return jaxdl.fit(TINY_STEP, state, train_data or NotTrained(), epochs=1, run=jaxdl.Run(output_dir, **run_options),
                     callbacks=list(callbacks))


TINY_MODEL, TINY_OPTIMIZER = jaxdl.Serial(jaxdl.FullyConnected(2), jaxdl.SoftMax()), jaxdl.Sgd(0.1)
TINY_STEP = jaxdl.make_train_step(TINY_MODEL, jaxdl.cross_entropy, TINY_OPTIMIZER)  # `fit`'s runs compile it once


@contextlib.contextmanager
def tmpfs(path: pathlib.Path, options: str):
    """A tmpfs mounted at ``path`` (root only); yields False where it cannot be mounted."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = os.geteuid() == 0 and subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                                                    capture_output=True).returncode == 0
    try:
        yield mounted
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


# ----------------------------------------------------------------------------------------
# fit's output directory: refused before training, naming the directory.


def _file(tmp):
    (tmp / "out").write_text("not a directory")
    return tmp / "out", {}


def _checkpoints_file(tmp):
    (tmp / "out").mkdir()
    (tmp / "out" / "checkpoints").write_text("")
    return tmp / "out", {}


def _foreign_file(tmp):
    (tmp / "out").mkdir()
    (tmp / "out" / "notes.txt").write_text("my notes")
    return tmp / "out", {}


def _metrics_without_checkpoint(tmp):
    (tmp / "out" / "checkpoints").mkdir(parents=True)
    (tmp / "out" / "metrics.csv").write_text("epoch,train_loss\n1,0.5\n")
    return tmp / "out", {}


def _resume_without_checkpoint(tmp):
    (tmp / "out" / "checkpoints").mkdir(parents=True)
    return tmp / "out", {"resume": True}


def _empty_string(tmp):
    return "", {}


def _not_a_path(tmp):
    return 5, {}


def _overwrite_and_resume(tmp):
    return tmp / "out", {"overwrite": True, "resume": True}


OUTPUT_DIR_CASES = [
    ("output_dir is a file", _file, RunDirectoryError, r"Run: .*out is a file, not a directory \(the output_dir\)"),
    ("checkpoints is a file", _checkpoints_file, RunDirectoryError,
     r"out/checkpoints is a file, not a directory \(its checkpoint directory\)"),
    ("files that are not a run", _foreign_file, RunDirectoryError,
     r"out holds files that are not a jaxdl run's \(notes\.txt\).*overwrite=True"),
    ("metrics.csv without a checkpoint", _metrics_without_checkpoint, RunDirectoryError,
     r"\(metrics\.csv; metrics without a checkpoint are not a run\).*overwrite=True"),
    ("resume without a committed epoch", _resume_without_checkpoint, RunDirectoryError,
     r"resume=True but .*out/checkpoints holds no checkpoint \(no epoch was committed\); start without resume"),
    ("empty output_dir", _empty_string, ValueError, r"Run: output_dir is an empty string"),
    ("output_dir not a path", _not_a_path, TypeError, r"Run: output_dir must be a path .* got int 5"),
    ("overwrite with resume", _overwrite_and_resume, ValueError, r"Run: overwrite=True starts a new run"),
]


@pytest.mark.parametrize("setup, error, pattern", [case[1:] for case in OUTPUT_DIR_CASES],
                         ids=[case[0] for case in OUTPUT_DIR_CASES])
def test_output_dir_is_checked_before_anything_collective(tmp_path, monkeypatch, setup, error, pattern):
    def collective(name):
        raise AssertionError(f"entered the collective {name!r} before the output directory was checked")

    monkeypatch.setattr(distributed, "main_process_first", collective)
    output_dir, kwargs = setup(tmp_path)
    with pytest.raises(error, match=pattern):
        fit(output_dir, **kwargs)


def test_unwritable_output_dir_is_named_with_its_cause(tmp_path):
    target = tmp_path / "ro"
    with tmpfs(target, "ro,size=64k") as mounted:
        if not mounted:
            if os.geteuid() == 0:
                pytest.skip("root without mount: cannot make a directory it cannot write")
            target.chmod(0o555)
        cause = "read-only file system" if mounted else "permission denied"
        for output_dir in (target, target / "run"):  # the directory itself, or a new one inside
            with pytest.raises(RunDirectoryError, match=f"fit: cannot write the output directory "
                                                        f"{re.escape(str(output_dir))}: {cause}"):
                fit(output_dir)


def test_a_disk_that_fills_during_the_run_is_one_clear_error(tmp_path, monkeypatch):
    ocp = checkpoint.backend.orbax()

    def full_disk(*args, **kwargs):  # TensorStore's error text (the real one, shortened)
        raise ValueError('RESOURCE_EXHAUSTED: Error writing "arr_0/0" in OCDBT database: Failed to write 1352 '
                         "bytes to file 15: No space left on device [os_error_code='28']")

    monkeypatch.setattr(ocp.CheckpointManager, "save", full_disk)
    with pytest.raises(StorageError, match=f"no space left on device at "
                                           f"{re.escape(str(tmp_path / 'run' / 'checkpoints'))}: cannot write a "
                                           f"checkpoint there") as caught:
        fit(tmp_path / "run", train_data=[(X, Y)])
    assert caught.value.errno == errno.ENOSPC
    assert [p.name for p in (tmp_path / "run" / "checkpoints").iterdir()] == []  # nothing half-written left


def test_metrics_writes_name_the_directory_and_the_cause(tmp_path, monkeypatch):
    from jaxdl.checkpoint import files

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files.os, "fsync", full)
    with pytest.raises(StorageError, match=f"no space left on device at {re.escape(str(tmp_path))}: cannot write "
                                           f"metrics.csv there"):
        checkpoint.write_text_atomic(tmp_path / "metrics.csv", "epoch\n")
    assert list(tmp_path.iterdir()) == []


def test_overwrite_starts_anew_beside_files_that_are_not_a_run(tmp_path):
    first = fit(tmp_path / "out", train_data=[(X, Y)])
    (tmp_path / "out" / "notes.txt").write_text("my notes")
    result = fit(tmp_path / "out", train_data=[(X, Y)], overwrite=True)
    assert result.status == "completed" and [row["epoch"] for row in result.history] == [1]
    assert (tmp_path / "out" / "notes.txt").read_text() == "my notes"
    assert checkpoint.read_manifest(result.checkpoint_dir("last"))["created"] >= checkpoint.read_manifest(
        first.checkpoint_dir("last"))["created"]


# ----------------------------------------------------------------------------------------
# One run per output directory.


def test_a_second_run_into_the_same_directory_is_refused_at_once(tmp_path):
    refused = []

    class SecondRun(jaxdl.Callback):
        def on_epoch_start(self, epoch, steps):
            with pytest.raises(RunDirectoryError) as caught:
                fit(tmp_path / "out", train_data=[(X, Y)])
            refused.append(str(caught.value))

    result = fit(tmp_path / "out", train_data=[(X, Y)], callbacks=[SecondRun()])
    assert result.status == "completed"
    assert len(refused) == 1 and re.search(f"fit: {re.escape(str(tmp_path / 'out'))} is in use by another training "
                                           f"run \\(pid {os.getpid()} on host ", refused[0])


def test_a_killed_run_does_not_leave_the_directory_locked(tmp_path):
    (tmp_path / "out").mkdir()
    code = textwrap.dedent(f"""
        import fcntl, os, signal
        fd = os.open({str(tmp_path / "out" / LOCK_NAME)!r}, os.O_RDWR | os.O_CREAT)  # as run_lock takes it
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(fd, f"{{os.getpid()}} host\\n".encode())
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    killed = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, timeout=120)
    assert killed.returncode == -signal.SIGKILL
    assert (tmp_path / "out" / LOCK_NAME).exists()
    assert fit(tmp_path / "out", train_data=[(X, Y)]).status == "completed"


# ----------------------------------------------------------------------------------------
# Checkpoint manifests nested too deep.


def test_a_manifest_of_100000_nested_brackets_is_a_clear_error(tmp_path):
    from jaxdl.checkpoint import digest

    checkpoint.save_checkpoint(tmp_path / "ckpt", {"w": jnp.ones(3)})
    manifest = tmp_path / "ckpt" / "manifest" / "metadata"
    manifest.write_text('{"format": "jaxdl.checkpoint", "metadata": ' + "[" * 100_000 + "]" * 100_000 + "}")
    digest.write(tmp_path / "ckpt")  # resealed: the parser itself must refuse it
    for read in (checkpoint.read_manifest, checkpoint.verify_checkpoint,
                 lambda path: checkpoint.load_checkpoint(path, {"w": jnp.ones(3)})):
        with pytest.raises(checkpoint.CheckpointCorruptedError, match="ckpt: the manifest is not JSON"):
            read(tmp_path / "ckpt")


# ----------------------------------------------------------------------------------------
# Pickles: the allow-list refuses code before any of it runs.


def _reducing(function, *args):
    class Hostile:
        def __reduce__(self):
            return function, args

    return Hostile()


def _marker_writer(marker):
    return f"open({str(marker)!r}, 'w').write('ran')"


HOSTILE_PICKLES = [
    ("os.system", lambda marker: _reducing(os.system, f"touch {marker}"), r"posix\.system|nt\.system"),
    ("builtins.eval", lambda marker: _reducing(builtins.eval, _marker_writer(marker)), r"builtins\.eval"),
    ("builtins.exec", lambda marker: _reducing(builtins.exec, _marker_writer(marker)), r"builtins\.exec"),
    ("subprocess.Popen", lambda marker: _reducing(subprocess.Popen, ["touch", str(marker)]), r"subprocess\.Popen"),
    ("a jaxdl function that writes files",
     lambda marker: _reducing(checkpoint.write_text_atomic, str(marker), "ran"), r"files\.write_text_atomic"),
    ("a jaxdl class outside the facade",
     lambda marker: _reducing(checkpoint.RunCheckpoints, str(marker)), r"run\.RunCheckpoints"),
    ("a facade function (not a class)",
     lambda marker: _reducing(__import__("jaxdl.exercise.scaffold", fromlist=["scaffold"]).scaffold, str(marker)),
     r"jaxdl\.exercise\.scaffold\.scaffold"),
    ("getattr inside a safe-looking list",
     lambda marker: [1, _reducing(builtins.getattr, 0, "real")], r"builtins\.getattr"),
]


@pytest.mark.parametrize("make", [case[1] for case in HOSTILE_PICKLES], ids=[case[0] for case in HOSTILE_PICKLES])
def test_a_hostile_pickle_is_refused_without_running_anything(tmp_path, make):
    marker = tmp_path / "marker"
    path = tmp_path / "net.pkl"
    path.write_bytes(pickle.dumps(make(marker)))
    pattern = next(case[2] for case in HOSTILE_PICKLES if case[1] is make)
    with pytest.raises(pickle_io.UnsafePickleError, match=rf"load: {re.escape(str(path))} asks to load "
                                                           rf"[\w.]*({pattern}), which is not on the allow-list"):
        pickle_io.load(path)
    assert not marker.exists()


def test_a_damaged_pickle_is_a_clear_error(tmp_path):
    path = tmp_path / "net.pkl"
    pickle_io.save(path, {"weights": np.arange(4.0), "name": "net"})
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(pickle_io.UnsafePickleError, match=f"load: {re.escape(str(path))} cannot be read back"):
        pickle_io.load(path)


def test_plain_data_and_arrays_still_load(tmp_path):
    obj = {"weights": np.arange(4.0), "array": jnp.ones((2, 3)), "scalar": np.float32(2.5), "items": (1, 2.0, "a"),
           "set": {1, 2}, "bytes": b"xy"}
    pickle_io.save(tmp_path / "data.pkl", obj)
    loaded = pickle_io.load(tmp_path / "data.pkl")
    np.testing.assert_array_equal(loaded["array"], np.ones((2, 3)))
    assert loaded["scalar"] == np.float32(2.5) and loaded["items"] == (1, 2.0, "a") and loaded["set"] == {1, 2}


# ----------------------------------------------------------------------------------------
# Two processes preparing MNIST at once.

_PREPARE = textwrap.dedent("""
    import os, sys, time
    from jaxdl.datasets import mnist
    source, cache, go = sys.argv[1], sys.argv[2], sys.argv[3]
    if go != "-":  # the first preparation goes on only when the file `go` exists (the second waits then)
        generate = mnist.MNIST._generate_examples
        def when_told(self, *args, **kwargs):
            deadline = time.monotonic() + 120
            while not os.path.exists(go) and time.monotonic() < deadline:
                time.sleep(0.05)
            yield from generate(self, *args, **kwargs)
        mnist.MNIST._generate_examples = when_told
    splits = mnist.load_mnist(source, cache_dir=cache, validation_size=1, verify_checksums=False,
                              log=lambda line: print(line, flush=True))
    print("loaded", len(splits.train), len(splits.test), int(splits.train.images.sum()), flush=True)
""")


def test_two_processes_preparing_mnist_at_once_share_one_preparation(tmp_path):
    sys.path.insert(0, str(REPOSITORY / "tests"))
    try:
        from test_datasets import write_fake_mnist
    finally:
        sys.path.remove(str(REPOSITORY / "tests"))
    source, cache = write_fake_mnist(tmp_path / "fake", 0), tmp_path / "cache"

    go = tmp_path / "go"

    def start(go_file):
        return subprocess.Popen([sys.executable, "-c", _PREPARE, str(source), str(cache), go_file], cwd=REPOSITORY,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    first = start(str(go))
    second = None
    try:
        assert first.stdout.readline().startswith("preparing MNIST from ")  # it holds the lock now
        second = start("-")
        waiting = second.stdout.readline()
        go.touch()  # the first may finish now
        second_output, _ = second.communicate(timeout=240)
        first_output, _ = first.communicate(timeout=240)
    finally:
        for process in (first, second):
            if process is not None:
                process.kill()
    assert first.returncode == 0 and second.returncode == 0, (first_output, waiting, second_output)
    assert re.fullmatch(rf"waiting for another process \(pid {first.pid} on host .+\) preparing MNIST \(lock "
                        rf".*\.mnist-[0-9a-f]{{16}}\.lock; at most 900 s\)\n", waiting), waiting
    loaded = first_output.splitlines()[-1]
    assert loaded.startswith("loaded 3 2 ") and second_output.splitlines() == [loaded]  # used, not prepared again


def test_waiting_for_another_mnist_preparation_is_bounded(tmp_path):
    from jaxdl.datasets import mnist

    lock, said = tmp_path / ".mnist-0123456789abcdef.lock", []
    with mnist.preparation_lock(lock, said.append):
        with pytest.raises(TimeoutError, match=rf"prepare_mnist: another process \(pid {os.getpid()} on host .+\) "
                                               rf"has held .*\.mnist-0123456789abcdef\.lock for more than 0 s"):
            with mnist.preparation_lock(lock, said.append, timeout=0.3):
                pass
    assert len(said) == 1 and said[0].startswith(f"waiting for another process (pid {os.getpid()} on host ")
