"""Every script in scripts/, and every command of README.md and docs/ that runs one, run as a
user runs them: ``python scripts/<name>.py ...`` in a subprocess of a plain interpreter with
JAX's default settings (`plain_python`: none of the suite's XLA flags, no x64), checking the
exit status and what they print.

`DOCUMENTED_COMMANDS` maps each documented command (``make train ARGS="X"`` is
``python scripts/train_lenet.py X``, as the Makefile says; `test_make_train_is_the_script`)
to the options the suite appends to make it small; `test_every_documented_command_is_run`
fails for a documented command that is not in the table. The multi-device commands
(``--devices``, ``--num-processes``, ..., and docs/guides/multi-device.md) are run by
tests/test_data_parallel.py and tests/test_multiprocess.py, not here.

Small data: the scripts read MNIST from tensorflow-datasets' prepared data, which
`jaxdl.datasets.mnist.prepare_mnist` files under a key of the source files' sha256s. The
`user_cache` fixture prepares a tiny MNIST-format set instead (`synthetic_digits`: 400 training
and 100 test images, learnable in a few steps) and files it under the key of the canonical
files in data/mnist, in the run's own ``JAXDL_CACHE_DIR``: the scripts check the real files
and load the tiny set, with the command lines users type. (Preparing the real MNIST is
tests/test_datasets.py's.)

Options and inputs that must fail clearly are a table too (`BAD_COMMAND_LINES`), run in this
process through each script's ``main``.
"""

from __future__ import annotations

import gzip
import importlib.util
import pathlib
import re
import shlex
import os
import struct
import subprocess

import numpy as np
import pytest
from plain_python import ROOT, described, run_plain
from synthetic_digits import tiny_split

from jaxdl.datasets import mnist

SCRIPTS = ROOT / "scripts"
SCRIPT_NAMES = sorted(path.name for path in SCRIPTS.glob("*.py"))
#: The multi-device guide, whose commands other tests run (module docstring).
MULTI_DEVICE_GUIDE = ROOT / "docs" / "guides" / "multi-device.md"
#: The pages whose commands must run: the README and every page of the documentation.
PAGES = [ROOT / "README.md", *sorted(page for page in (ROOT / "docs").rglob("*.md") if page != MULTI_DEVICE_GUIDE)]
#: Options of the multi-device commands, which other tests run (module docstring).
MULTI_DEVICE_OPTIONS = ("--devices", "--num-processes", "--process-id", "--coordinator")

#: LeNet on the tiny set: 300 training images in 6 batches of 50, 100 validation images.
SMALL_LENET = ("--batch-size", "50", "--validation-size", "100")
#: The delayed-recall demo in a few small steps.
SMALL_SEQUENCE = ("--hidden", "8", "--chunks", "2", "--batches", "2", "--test-batches", "1", "--batch", "4")
#: The character language models on the text's first 3,000 characters, a few steps.
SMALL_CHAR_LM = ("--max-chars", "3000", "--batch", "4", "--length", "16", "--eval-batch", "2", "--epochs", "1",
                 "--max-batches", "4", "--sample-length", "10", "--hidden", "16", "--width", "16", "--heads", "2",
                 "--layers", "1")
HELP = "run by test_every_script_shows_its_help"

#: Each documented command (as it reads in the docs, whitespace collapsed), in the order they
#: run in one directory: (the options appended to make it small, lines its output must
#: contain), or `HELP`. Appended options come last, so they win over the documented ones.
DOCUMENTED_COMMANDS = {
    "python scripts/train_lenet.py --help": HELP,
    "python scripts/train_lenet.py": (("--epochs", "2", *SMALL_LENET), [
        "LeNet (107,786 parameters) on 300 training and 100 validation images",
        "Done: 2 epochs",
        "Outputs: runs/lenet/metrics.csv, metrics.png; checkpoints: last runs/lenet/checkpoints/step_",
        "Test accuracy of the best-validation checkpoint (epoch ",
    ]),
    "python scripts/train_lenet.py --resume": ((), [
        "Resuming runs/lenet after epoch 2 of 2", "Test accuracy of the best-validation checkpoint"]),
    "python scripts/evaluate_lenet.py": ((), [
        "the best checkpoint of runs/lenet", "Checkpoint runs/lenet/checkpoints/step_", "on the 100 test images", "true\\pred    0    1",
        "Misclassified: ", "Accuracy: "]),
    "python scripts/train_lenet.py --epochs 4 --learning-rate 6e-3 --output-dir runs/quick": (SMALL_LENET, [
        "Done: 4 epochs", "Outputs: runs/quick/metrics.csv"]),
    "python scripts/train_lenet.py --compute-dtype bfloat16 --output-dir runs/lenet_bf16": (
        ("--epochs", "2", "--no-progress", *SMALL_LENET), ["compute dtype bfloat16", "Done: 2 epochs"]),
    "python scripts/train_lenet.py --resume --compute-dtype float32 --output-dir runs/lenet_bf16": ((), [
        "Resuming the bfloat16 run with compute dtype float32.", "Test accuracy of the best-validation"]),
    "python scripts/evaluate_lenet.py runs/lenet_bf16": ((), [
        "Checkpoint runs/lenet_bf16/checkpoints/step_", "Accuracy: "]),
    "python scripts/train_char_lm.py --help": HELP,
    "python scripts/train_char_lm.py": (SMALL_CHAR_LM, ["lstm: validation ", "sample after epoch 1:"]),
    "python scripts/train_char_lm.py --model transformer": (SMALL_CHAR_LM, [
        "transformer: validation ", "sample after epoch 1:"]),
    "python scripts/train_resnet.py --help": HELP,
    "python scripts/train_resnet.py": (("--epochs", "1", *SMALL_LENET), [
        "ResNet (78,090 parameters) on 300 training and 100 validation images", "Done: 1 epoch",
        "Outputs: runs/resnet/metrics.csv", "Test accuracy of the best-validation checkpoint (epoch 1)"]),
    "python scripts/train_sequence.py": (SMALL_SEQUENCE, [
        "Delayed recall: 4 symbols, delay 6", "memorize across chunks", "reset every chunk"]),
}

_SCRIPT_COMMAND = re.compile(r"python scripts/\w+\.py[^`\n#&|;:)'\"]*")
_MAKE_TRAIN = re.compile(r"make train(?: ARGS=\"([^\"]*)\")?")


def documented_commands() -> dict[str, list[str]]:
    """{command: the pages that show it} of every script command in `PAGES` (``make train
    ARGS="X"`` read as ``python scripts/train_lenet.py X``), but the multi-device ones."""
    found = {}
    for page in PAGES:
        text = page.read_text()
        commands = [match.group(0) for match in _SCRIPT_COMMAND.finditer(text)]
        commands += [f"python scripts/train_lenet.py {match.group(1) or ''}" for match in _MAKE_TRAIN.finditer(text)]
        for command in commands:
            command = " ".join(command.split())
            if not any(option in command.split() for option in MULTI_DEVICE_OPTIONS):
                found.setdefault(command, []).append(str(page.relative_to(ROOT)))
    return found


def test_every_documented_command_is_run():
    documented = documented_commands()
    assert "python scripts/evaluate_lenet.py" in documented and len(documented) >= 8
    missing = {command: pages for command, pages in documented.items() if command not in DOCUMENTED_COMMANDS}
    assert not missing, f"documented commands without a small-data run in DOCUMENTED_COMMANDS: {missing}"
    stale = set(DOCUMENTED_COMMANDS) - set(documented)
    assert not stale, f"DOCUMENTED_COMMANDS has commands no page shows any more: {stale}"


def test_every_documented_command_is_in_one_chain():
    """`COMMAND_CHAINS` runs every command of `DOCUMENTED_COMMANDS` but the `HELP` ones, each once,
    in the table's order within its chain."""
    runs = [command for command, run in DOCUMENTED_COMMANDS.items() if run != HELP]
    chained = [command for commands, _ in COMMAND_CHAINS.values() for command in commands]
    assert sorted(chained) == sorted(runs), f"chained {chained}, documented runs {runs}"
    for commands, _ in COMMAND_CHAINS.values():
        assert list(commands) == sorted(commands, key=runs.index), commands


def test_make_train_is_the_script():
    """``make train ARGS="X"`` runs ``python scripts/train_lenet.py X`` (dry run; the
    environment's installation is not remade)."""
    # As a user's top-level make: without the MAKELEVEL/MAKEFLAGS of a `make test` around the suite
    # (a sub-make prints "make[1]: Entering directory ...").
    environment = {name: value for name, value in os.environ.items()
                   if name not in ("MAKELEVEL", "MAKEFLAGS", "MFLAGS", "MAKEOVERRIDES")}
    result = subprocess.run(["make", "-n", "-o", ".venv/.installed", "train", "ARGS=--epochs 4 --output-dir runs/quick",
                             "PY=PYTHON"], cwd=ROOT, capture_output=True, text=True, timeout=60, env=environment)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines() == ["PYTHON scripts/train_lenet.py --epochs 4 --output-dir runs/quick"]


# ------------------------------------------------------------------ --help, and the options the docs use


def documented_options(script: str) -> set[str]:
    """The ``--options`` that the pages' commands pass to ``script`` (multi-device ones aside)."""
    return {word.split("=")[0] for command in documented_commands() if command.split()[1] == f"scripts/{script}"
            for word in command.split() if word.startswith("--")}


@pytest.mark.parametrize("script", SCRIPT_NAMES)
def test_every_script_shows_its_help(script, tmp_path):
    result = run_plain([SCRIPTS / script, "--help"], cwd=tmp_path, cache_dir=tmp_path / "cache", timeout=120)
    assert result.returncode == 0, described(result)
    assert result.stdout.startswith(f"usage: {script} "), described(result)
    assert "Traceback" not in result.stderr, described(result)
    offered = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", result.stdout))
    unknown = documented_options(script) - offered
    assert not unknown, f"the docs pass {sorted(unknown)} to {script}, whose --help offers {sorted(offered)}"


def test_the_scripts():
    assert SCRIPT_NAMES == ["evaluate_lenet.py", "train_char_lm.py", "train_lenet.py", "train_resnet.py",
                            "train_sequence.py"]


# ------------------------------------------------------------------ the documented commands on small data


def write_idx(path: pathlib.Path, array: np.ndarray, magic: int) -> None:
    """``array`` (uint8) as an IDX file, gzipped (MNIST's format)."""
    array = np.asarray(array, np.uint8)
    with gzip.GzipFile(path, "wb", mtime=0) as file:
        file.write(struct.pack(">I" + "I" * array.ndim, magic, *array.shape))
        file.write(array.tobytes())


def seed_tiny_mnist(cache_dir: pathlib.Path, files_dir: pathlib.Path) -> None:
    """Prepares 400 training and 100 test images of `tiny_split` into ``cache_dir`` under the
    key of the canonical MNIST files (module docstring)."""
    files_dir.mkdir(parents=True)
    for prefix, split in (("train", tiny_split(400, 0)), ("t10k", tiny_split(100, 2))):
        write_idx(files_dir / f"{prefix}-images-idx3-ubyte.gz", split.images, mnist.IDX_IMAGES_MAGIC)
        write_idx(files_dir / f"{prefix}-labels-idx1-ubyte.gz", split.labels, mnist.IDX_LABELS_MAGIC)
    mnist.prepare_mnist(files_dir, cache_dir=cache_dir, verify_checksums=False, log=lambda line: None)
    prepared = mnist.prepared_dir(cache_dir, mnist.source_key(mnist.source_sha256s(files_dir)))
    prepared.rename(mnist.prepared_dir(cache_dir, mnist.source_key(mnist.registered_sha256s())))


@pytest.fixture(scope="module")
def user_cache(tmp_path_factory):
    """A user's JAXDL_CACHE_DIR holding the tiny MNIST (one per xdist worker)."""
    root = tmp_path_factory.mktemp("user")
    cache = root / "jaxdl_cache"
    seed_tiny_mnist(cache / "tensorflow_datasets", root / "tiny_mnist_files")
    return cache


#: The non-`HELP` commands of `DOCUMENTED_COMMANDS` in independent chains: {chain: (its commands, in
#: the table's order; the runs/ directories they must leave, with the files each must hold)}.
#: A chain's later commands read what its first wrote (``--resume``, evaluate_lenet.py), so a
#: chain runs in order in one working directory; chains share nothing but the worker's
#: ``JAXDL_CACHE_DIR`` (`user_cache`), so xdist can run them side by side.
COMMAND_CHAINS = {
    "lenet": (("python scripts/train_lenet.py", "python scripts/train_lenet.py --resume",
               "python scripts/evaluate_lenet.py"),
              {"lenet": {"metrics.csv", "metrics.png", "checkpoints", "misclassified.png"}}),
    "quick": (("python scripts/train_lenet.py --epochs 4 --learning-rate 6e-3 --output-dir runs/quick",),
              {"quick": {"metrics.csv", "metrics.png", "checkpoints"}}),
    "lenet_bf16": (("python scripts/train_lenet.py --compute-dtype bfloat16 --output-dir runs/lenet_bf16",
                    "python scripts/train_lenet.py --resume --compute-dtype float32 --output-dir runs/lenet_bf16",
                    "python scripts/evaluate_lenet.py runs/lenet_bf16"),
                   {"lenet_bf16": {"metrics.csv", "metrics.png", "checkpoints", "misclassified.png"}}),
    "char_lm": (("python scripts/train_char_lm.py",), {}),
    "char_lm_transformer": (("python scripts/train_char_lm.py --model transformer",), {}),
    "resnet": (("python scripts/train_resnet.py",), {}),
    "sequence": (("python scripts/train_sequence.py",), {}),
}


@pytest.mark.parametrize("chain", COMMAND_CHAINS)
def test_every_documented_command_runs_on_small_data(chain, user_cache, tmp_path):
    """The documented commands of one chain, in order, in a new working directory (runs/ is
    relative to it). The chains of one xdist worker share its ``JAXDL_CACHE_DIR`` (the tiny
    MNIST and JAX's compiled programs), as a user's commands share the default one: a command
    may find a program compiled by another chain's command, as a user's second command finds
    the first one's."""
    commands, outputs = COMMAND_CHAINS[chain]
    for command in commands:
        appended, expected = DOCUMENTED_COMMANDS[command]
        words = shlex.split(command)
        assert words[:2] == ["python", words[1]] and words[1].startswith("scripts/"), command
        result = run_plain([ROOT / words[1], *words[2:], *appended], cwd=tmp_path, cache_dir=user_cache, timeout=300)
        assert result.returncode == 0, f"{command} (small: {' '.join(appended)}):\n{described(result)}"
        for line in expected:
            assert line in result.stdout, f"{command}: {line!r} not printed:\n{described(result)}"
    for run, files in outputs.items():
        assert files <= {path.name for path in (tmp_path / "runs" / run).iterdir()}, run


# ------------------------------------------------------------------ options and inputs that must fail clearly


def load_script(name: str):
    """scripts/<name>.py as a module (its ``main`` takes argv)."""
    spec = importlib.util.spec_from_file_location(f"{name}_script_under_test", SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def scripts():
    return {name: load_script(name) for name in ("train_lenet", "evaluate_lenet", "train_sequence")}


#: (script, argv, words its error must contain): refused with exit status 2, no traceback.
BAD_COMMAND_LINES = [
    ("train_lenet", ["--batch-size", "100000"],
     "batch_size 100,000 is larger than the 55,000 training images (MNIST's 60,000 minus validation_size 5,000)"),
    ("train_lenet", ["--seed", "99999999999999999999999"],
     "argument --seed: expected a seed in [0, 4294967295], got '99999999999999999999999'"),
    ("train_lenet", ["--seed", "-1"], "argument --seed: expected a seed in [0, 4294967295], got '-1'"),
    ("train_lenet", ["--learning-rate", "nan"], "argument --learning-rate: expected a finite number > 0, got 'nan'"),
    ("train_lenet", ["--learning-rate", "0"], "argument --learning-rate: expected a finite number > 0, got '0'"),
    ("train_lenet", ["--learning-rate", "fast"], "argument --learning-rate: expected a number, got 'fast'"),
    ("train_lenet", ["--l2", "inf"], "argument --l2: expected a finite number >= 0, got 'inf'"),
    ("train_lenet", ["--warmup-epochs", "nan"], "argument --warmup-epochs: expected a finite number >= 0, got 'nan'"),
    ("train_lenet", ["--epochs", "0"], "argument --epochs: expected an integer >= 1, got '0'"),
    ("train_lenet", ["--output-dir", ""], "argument --output-dir: expected a path, got ''"),
    ("train_lenet", ["--data-dir", ""], "argument --data-dir: expected a path, got ''"),
    ("train_lenet", ["--compute-dtype", "float16"],
     "argument --compute-dtype: invalid choice: 'float16' (choose from 'float32', 'bfloat16')"),
    ("train_sequence", ["--learning-rate", "nan"], "argument --learning-rate: expected a finite number > 0, got 'nan'"),
    ("train_sequence", ["--learning-rate", "-0.01"],
     "argument --learning-rate: expected a finite number > 0, got '-0.01'"),
    ("train_sequence", ["--seed", "4294967296"], "argument --seed: expected a seed in [0, 4294967295], got '4294967296'"),
    ("train_sequence", ["--batch", "0"], "argument --batch: expected an integer >= 1, got '0'"),
    ("evaluate_lenet", [""], "argument checkpoint: expected a path, got ''"),
    ("evaluate_lenet", ["--max-images", "-1"], "argument --max-images: expected an integer >= 0, got '-1'"),
    ("evaluate_lenet", ["runs/nothing"],
     "evaluate_lenet.py: error: no checkpoint at 'runs/nothing': pass a checkpoint directory such as "
     "runs/lenet (its best checkpoint"),
]


@pytest.mark.parametrize("script, argv, message", BAD_COMMAND_LINES,
                         ids=[f"{script}:{' '.join(argv) or repr('')}" for script, argv, _ in BAD_COMMAND_LINES])
def test_bad_command_lines_are_refused_clearly(script, argv, message, scripts, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    try:
        status = scripts[script].main(argv)
    except SystemExit as exit:  # argparse, and train_sequence's own exit
        status = exit.code
    captured = capsys.readouterr()
    assert status == 2, captured
    assert message in captured.err, captured.err
    assert "Traceback" not in captured.err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("overrides, message", [
    ({"learning_rate": float("nan")}, "RecallConfig: learning_rate must be a finite number > 0, got nan"),
    ({"learning_rate": 0.0}, "RecallConfig: learning_rate must be a finite number > 0, got 0.0"),
    ({"seed": 2**32}, r"RecallConfig: seed must be an int in \[0, 4294967295\], got 4294967296"),
    ({"seed": -1}, r"RecallConfig: seed must be an int in \[0, 4294967295\], got -1"),
])
def test_the_sequence_recipe_refuses_what_its_command_line_refuses(overrides, message):
    from jaxdl.recipes.delayed_recall import RecallConfig

    with pytest.raises(ValueError, match=message):
        RecallConfig(**overrides)


def damaged_copy_of_mnist(directory: pathlib.Path) -> pathlib.Path:
    """data/mnist with its test labels' last byte changed (the others linked); returns the file."""
    directory.mkdir()
    for name in mnist.MNIST_FILES.values():
        (directory / name).symlink_to(mnist.BUNDLED_DATA_DIR / name)
    damaged = directory / "t10k-labels-idx1-ubyte.gz"
    data = bytearray(damaged.read_bytes())
    data[-1] ^= 0xFF
    damaged.unlink()
    damaged.write_bytes(bytes(data))
    return damaged


def test_a_damaged_data_dir_file_is_named_not_blamed_on_a_download(scripts, tmp_path, capsys):
    damaged = damaged_copy_of_mnist(tmp_path / "mnist")
    assert scripts["train_lenet"].main(["--data-dir", str(damaged.parent), "--output-dir", str(tmp_path / "run")]) == 2
    error = capsys.readouterr().err
    assert f"the MNIST file {damaged} is damaged or not the canonical one: its SHA256 is " in error
    assert mnist.registered_sha256s()[damaged.name] in error and "--download" in error
    assert "Artifact" not in error and "downloaded" not in error and "http" not in error
    assert not (tmp_path / "run").exists()
    # evaluate_lenet.py checks the files first too.
    assert scripts["evaluate_lenet"].main([str(tmp_path / "none"), "--data-dir", str(damaged.parent)]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"evaluate_lenet.py: error: the MNIST file {damaged} is damaged") and "Artifact" not in error


# ------------------------------------------------------------------ create_train_state in a plain process


CREATE_TRAIN_STATE_UNDER_TRACES = """
import jax, jaxdl
model, optimizer = jaxdl.Serial(jaxdl.FullyConnected(3), jaxdl.BatchNormalization()), jaxdl.Adam(1e-3)
template = jax.eval_shape(lambda: jaxdl.create_train_state(model, optimizer, jax.random.key(0), (2, 4)))
print(template.params["fully_connected_0"]["weights"].shape, template.params["fully_connected_0"]["weights"].dtype)
jitted = jax.jit(jaxdl.create_train_state, static_argnums=(0, 1, 3))(model, optimizer, jax.random.key(0), (2, 4))
eager = jaxdl.create_train_state(model, optimizer, jax.random.key(0), (2, 4))
print(all(jax.tree.leaves(jax.tree.map(lambda a, b: bool(jax.numpy.allclose(a, b, rtol=1e-6)), jitted.params,
                                       eager.params))))  # equal up to a rounding (compiled at another level)
print(jax.vmap(lambda key: jaxdl.create_train_state(model, optimizer, key, (2, 4)).step)(
    jax.random.split(jax.random.key(1), 3)).shape)
"""


def test_create_train_state_works_under_jit_and_eval_shape_with_default_flags(tmp_path):
    """The checkpoint template of docs/guides/checkpoints.md: with JAX's default flags,
    create_train_state compiles its initialization with options of its own, which JAX
    refuses inside another trace (the suite's XLA_FLAGS turn those options off)."""
    result = run_plain(["-c", CREATE_TRAIN_STATE_UNDER_TRACES], cwd=tmp_path, cache_dir=tmp_path / "cache",
                       timeout=180)
    assert result.returncode == 0, described(result)
    assert result.stdout.splitlines() == ["(4, 3) float32", "True", "(3,)"], described(result)
