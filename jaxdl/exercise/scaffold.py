"""``python -m jaxdl.exercise scaffold DIR``: the exercise's directory layout over jaxdl.

Writes the files of the exercise's ``src_to_implement/`` as thin modules that re-export
`jaxdl.exercise` (for example ``Layers/FullyConnected.py`` is
``from jaxdl.exercise.layers import FullyConnected``), the ``TrainLeNet.py`` script, a
``trained/`` directory and ``Data/`` with links to (or copies of) the bundled MNIST files.
Existing files are never overwritten, and the course's own files are not written: copy the
provided ``Helpers.py`` into ``DIR/Layers/`` and ``NeuralNetworkTests.py`` into ``DIR``, then
run ``python NeuralNetworkTests.py`` there.

Example:
    $ python -m jaxdl.exercise scaffold src_to_implement
    wrote     src_to_implement/Layers/__init__.py
    ...
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import jaxdl

__all__ = ["MNIST_FILES", "default_mnist_dir", "files", "scaffold"]

MNIST_FILES = (
    "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz",
)

_HEADER = '"""{doc} (written by `python -m jaxdl.exercise scaffold`; re-exports jaxdl.exercise)."""\n\n'

# (file, module of jaxdl.exercise, names)
_REEXPORTS = [
    ("Layers/Base.py", "base", ["BaseLayer", "Phase"]),
    ("Layers/FullyConnected.py", "layers", ["FullyConnected"]),
    ("Layers/ReLU.py", "layers", ["ReLU"]),
    ("Layers/SoftMax.py", "layers", ["SoftMax"]),
    ("Layers/Flatten.py", "layers", ["Flatten"]),
    ("Layers/TanH.py", "layers", ["TanH"]),
    ("Layers/Sigmoid.py", "layers", ["Sigmoid"]),
    ("Layers/Conv.py", "layers", ["Conv"]),
    ("Layers/Pooling.py", "layers", ["Pooling"]),
    ("Layers/Dropout.py", "layers", ["Dropout"]),
    ("Layers/BatchNormalization.py", "layers", ["BatchNormalization"]),
    ("Layers/RNN.py", "layers", ["RNN"]),
    ("Layers/LSTM.py", "layers", ["LSTM"]),
    ("Layers/Initializers.py", "initializers", ["Constant", "UniformRandom", "Xavier", "He"]),
    ("Optimization/Optimizers.py", "optimizers", ["Optimizer", "Sgd", "SgdWithMomentum", "Adam"]),
    ("Optimization/Constraints.py", "constraints", ["L1_Regularizer", "L2_Regularizer"]),
    ("Optimization/Loss.py", "loss", ["CrossEntropyLoss"]),
    ("Models/LeNet.py", "models", ["build"]),
    ("NeuralNetwork.py", "network", ["NeuralNetwork", "save", "load"]),
]

_PACKAGES = {
    "Layers/__init__.py": [
        "Helpers", "FullyConnected", "SoftMax", "ReLU", "Flatten", "TanH", "Sigmoid", "RNN", "Conv",
        "Pooling", "Initializers", "Dropout", "BatchNormalization", "Base", "LSTM",
    ],
    "Optimization/__init__.py": ["Constraints", "Optimizers", "Loss"],
    "Models/__init__.py": ["LeNet"],
}

_TRAIN_LENET = '''\
"""Trains the exercise's LeNet on MNIST (written by `python -m jaxdl.exercise scaffold`).

Continues from trained/LeNet if present, trains 300 iterations of batch 50, saves the network
and prints the accuracy on the 10,000 test images.
"""

import os

import matplotlib.pyplot as plt

import NeuralNetwork
from Layers import Helpers
from Models.LeNet import build

batch_size = 50
mnist = Helpers.MNISTData(batch_size)
mnist.show_random_training_image()

path = os.path.join("trained", "LeNet")
if os.path.isfile(path):
    net = NeuralNetwork.load(path, mnist)
else:
    net = build()
    net.data_layer = mnist

net.train(300)

os.makedirs("trained", exist_ok=True)
NeuralNetwork.save(path, net)

plt.figure("Loss function for training LeNet on the MNIST dataset")
plt.plot(net.loss, "-x")
plt.show()

data, labels = net.data_layer.get_test_set()
results = net.test(data)
accuracy = Helpers.calculate_accuracy(results, labels)
print("\\nOn the MNIST dataset, we achieve an accuracy of: " + str(accuracy * 100) + "%")
'''


def files() -> dict[str, str]:
    """The scaffold's text files: relative path -> content."""
    out = {}
    for path, doc_names in _PACKAGES.items():
        package = path.split("/")[0]
        out[path] = _HEADER.format(doc=f"The exercise's {package} package") + f"__all__ = {doc_names!r}\n"
    for path, module, names in _REEXPORTS:
        doc = f"The exercise's {path}"
        out[path] = (
            _HEADER.format(doc=doc)
            + f"from jaxdl.exercise.{module} import {', '.join(names)}\n\n"
            + f"__all__ = {names!r}\n"
        )
    out["TrainLeNet.py"] = _TRAIN_LENET
    return out


def default_mnist_dir() -> Path:
    """``data/mnist`` of the jaxdl source tree (where the MNIST files are bundled)."""
    return Path(jaxdl.__file__).resolve().parent.parent / "data" / "mnist"


def scaffold(directory, *, mnist_dir=None, link: bool = True, echo=print) -> list[tuple[str, str]]:
    """Writes the exercise's layout into ``directory`` (created if missing).

    Args:
        directory: the target, usually the exercise's ``src_to_implement``.
        mnist_dir: where the four MNIST ``.gz`` files are (default `default_mnist_dir`).
        link: symlink the MNIST files into ``Data/`` (falls back to copying); False copies.
        echo: called with one line per file (``print`` by default; None for silence).

    Returns:
        ``(action, path)`` pairs; action is "wrote", "linked", "copied", "kept" (the file
        existed and was left alone), "created" (a directory) or "missing" (an MNIST file not found).
    """
    root = Path(directory)
    report: list[tuple[str, str]] = []

    def note(action, path):
        report.append((action, str(path)))
        if echo is not None:
            echo(f"{action:9s} {path}")

    root.mkdir(parents=True, exist_ok=True)
    for relative, text in files().items():
        target = root / relative
        if target.exists() or target.is_symlink():
            note("kept", target)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "x", encoding="utf-8") as f:  # "x": never overwrite
            f.write(text)
        note("wrote", target)

    trained = root / "trained"
    if not trained.exists():
        trained.mkdir()
        note("created", str(trained) + os.sep)

    source = Path(mnist_dir) if mnist_dir is not None else default_mnist_dir()
    data = root / "Data"
    data.mkdir(exist_ok=True)
    for name in MNIST_FILES:
        target, origin = data / name, source / name
        if target.exists() or target.is_symlink():
            note("kept", target)
        elif not origin.is_file():
            note("missing", f"{target} (not found: {origin})")
        else:
            action = "copied"
            if link:
                try:
                    target.symlink_to(origin.resolve())
                    action = "linked"
                except OSError:
                    pass
            if action == "copied":
                shutil.copyfile(origin, target)
            note(action, target)

    if echo is not None:
        helpers = root / "Layers" / "Helpers.py"
        tests = root / "NeuralNetworkTests.py"
        steps = []
        if not helpers.exists():
            steps.append(f"copy the course's Helpers.py to {helpers}")
        if not tests.exists():
            steps.append(f"copy the course's NeuralNetworkTests.py to {tests}")
        steps.append(f"cd {root} && python NeuralNetworkTests.py")
        echo("next: " + "; ".join(steps))
    return report
