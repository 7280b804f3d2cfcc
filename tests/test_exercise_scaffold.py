"""`python -m jaxdl.exercise scaffold DIR`: the files it writes, what it never overwrites, and
that the result imports and runs as the course's layout (including TrainLeNet.py)."""

import gzip
import runpy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import jaxdl.exercise
from exercise_course import HELPERS, course_modules
from jaxdl.exercise import scaffold as scaffold_module
from jaxdl.exercise.scaffold import MNIST_FILES, scaffold

COURSE_LAYERS = [
    "Helpers", "FullyConnected", "SoftMax", "ReLU", "Flatten", "TanH", "Sigmoid", "RNN", "Conv",
    "Pooling", "Initializers", "Dropout", "BatchNormalization", "Base", "LSTM",
]
EXPECTED_FILES = {
    "Layers/__init__.py", "Optimization/__init__.py", "Models/__init__.py", "NeuralNetwork.py", "TrainLeNet.py",
    "Optimization/Optimizers.py", "Optimization/Constraints.py", "Optimization/Loss.py", "Models/LeNet.py",
    *(f"Layers/{name}.py" for name in COURSE_LAYERS if name != "Helpers"),
}


def test_writes_the_course_layout_and_lists_it(tmp_path, capsys):
    report = scaffold(tmp_path / "src")
    lines = capsys.readouterr().out.splitlines()
    written = {str(Path(path).relative_to(tmp_path / "src")) for action, path in report if action == "wrote"}
    assert written == EXPECTED_FILES
    assert len(lines) == len(report) + 1  # one line per entry, then the next steps
    for (action, path), line in zip(report, lines):
        assert line == f"{action:9s} {path}"
    assert "Helpers.py" in lines[-1] and "NeuralNetworkTests.py" in lines[-1]
    assert (tmp_path / "src" / "trained").is_dir()
    assert not (tmp_path / "src" / "Layers" / "Helpers.py").exists()  # the course's file
    namespace = {}
    exec((tmp_path / "src" / "Layers" / "__init__.py").read_text(), namespace)
    assert namespace["__all__"] == COURSE_LAYERS
    lenet = (tmp_path / "src" / "Models" / "LeNet.py").read_text()
    assert "from jaxdl.exercise.models import build" in lenet
    fc = (tmp_path / "src" / "Layers" / "FullyConnected.py").read_text()
    assert "from jaxdl.exercise.layers import FullyConnected" in fc


def test_never_overwrites(tmp_path, capsys):
    root = tmp_path / "src"
    (root / "Layers").mkdir(parents=True)
    own = root / "Layers" / "FullyConnected.py"
    own.write_text("# my own FullyConnected\n")
    helpers = root / "Layers" / "Helpers.py"
    helpers.write_text("# the course's helpers\n")
    (root / "Data").mkdir()
    (root / "Data" / MNIST_FILES[0]).write_bytes(b"mine")
    report = scaffold(root)
    out = capsys.readouterr().out
    assert own.read_text() == "# my own FullyConnected\n"
    assert helpers.read_text() == "# the course's helpers\n"
    assert (root / "Data" / MNIST_FILES[0]).read_bytes() == b"mine"
    assert ("kept", str(own)) in report and f"kept      {own}" in out
    assert ("kept", str(root / "Data" / MNIST_FILES[0])) in report
    assert "Helpers.py" not in out.splitlines()[-1]  # already there: no step to copy it
    # A second run keeps everything and writes nothing.
    again = scaffold(root, echo=None)
    assert {action for action, _ in again} == {"kept"}


def test_data_links_to_the_bundled_mnist(tmp_path):
    source = scaffold_module.default_mnist_dir()
    if not all((source / name).is_file() for name in MNIST_FILES):
        pytest.skip(f"MNIST files not bundled at {source}")
    report = scaffold(tmp_path / "linked", echo=None)
    for name in MNIST_FILES:
        target = tmp_path / "linked" / "Data" / name
        assert (("linked", str(target)) in report) or (("copied", str(target)) in report)
        with gzip.open(target, "rb") as f:
            assert len(f.read(8)) == 8
    copied = scaffold(tmp_path / "copied", link=False, echo=None)
    assert sum(action == "copied" for action, _ in copied) == len(MNIST_FILES)
    assert not any((tmp_path / "copied" / "Data" / name).is_symlink() for name in MNIST_FILES)


def test_missing_mnist_is_reported_not_fatal(tmp_path, capsys):
    report = scaffold(tmp_path / "src", mnist_dir=tmp_path / "nowhere")
    assert sum(action == "missing" for action, _ in report) == len(MNIST_FILES)
    assert "missing" in capsys.readouterr().out


def test_command_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "jaxdl.exercise", "scaffold", str(tmp_path / "cli"), "--mnist", str(tmp_path)],
        capture_output=True, text=True, check=True)
    assert f"wrote     {tmp_path / 'cli' / 'NeuralNetwork.py'}" in result.stdout
    assert (tmp_path / "cli" / "Layers" / "LSTM.py").is_file()


def test_reexports_are_the_facade_classes(tmp_path):
    with course_modules(tmp_path / "src") as names:
        assert names["FullyConnected"].FullyConnected is jaxdl.exercise.FullyConnected
        assert names["Base"].BaseLayer is jaxdl.exercise.BaseLayer
        assert names["Optimizers"].Adam is jaxdl.exercise.Adam
        assert names["Constraints"].L2_Regularizer is jaxdl.exercise.L2_Regularizer
        assert names["NeuralNetwork"].save is jaxdl.exercise.save
        import Models.LeNet
        assert Models.LeNet.build is jaxdl.exercise.models.build
    assert "Layers" not in sys.modules and "NeuralNetwork" not in sys.modules


def test_lenet_build():
    net = jaxdl.exercise.models.build()
    names = [type(layer).__name__ for layer in net.layers]
    assert names == ["Conv", "ReLU", "Pooling", "Conv", "ReLU", "Pooling", "Flatten",
                     "FullyConnected", "ReLU", "FullyConnected", "ReLU", "FullyConnected", "SoftMax"]
    assert isinstance(net.optimizer, jaxdl.exercise.Adam) and net.optimizer.learning_rate == 5e-4
    assert isinstance(net.optimizer.regularizer, jaxdl.exercise.L2_Regularizer)
    assert net.optimizer.regularizer.alpha == 4e-4
    assert isinstance(net.loss_layer, jaxdl.exercise.CrossEntropyLoss)
    assert net.layers[7].weights.shape == (16 * 7 * 7 + 1, 120)
    assert net.layers[3].weights.shape == (16, 6, 5, 5)
    assert np.all(net.layers[3].bias == 0.1)
    assert net.layers[0].optimizer is not net.layers[3].optimizer


def test_train_lenet_script(tmp_path, monkeypatch):
    """TrainLeNet.py's wiring (MNIST from Data/, build, save to trained/LeNet, load on the
    second run, accuracy), with training and the 10,000 test images cut short for time."""
    source = scaffold_module.default_mnist_dir()
    if not all((source / name).is_file() for name in MNIST_FILES):
        pytest.skip(f"MNIST files not bundled at {source}")
    import matplotlib
    matplotlib.use("Agg")
    root = tmp_path / "src"
    with course_modules(root):
        import NeuralNetwork
        from Layers import Helpers
        calls = []
        monkeypatch.setattr(NeuralNetwork.NeuralNetwork, "train", lambda self, n: calls.append((self, n)))
        test_set = Helpers.MNISTData.get_test_set
        monkeypatch.setattr(Helpers.MNISTData, "get_test_set", lambda self: tuple(a[:8] for a in test_set(self)))
        monkeypatch.chdir(root)
        runpy.run_path(str(root / "TrainLeNet.py"), run_name="__main__")
        assert (root / "trained" / "LeNet").is_file()
        first = calls[-1][0]
        assert calls[-1][1] == 300 and first.data_layer is not None
        assert first.data_layer.train.shape == (60000, 1, 28, 28)
        runpy.run_path(str(root / "TrainLeNet.py"), run_name="__main__")
        second = calls[-1][0]
        assert second is not first  # loaded from trained/LeNet
        np.testing.assert_array_equal(second.layers[0].weights, first.layers[0].weights)
    assert HELPERS.is_file()
