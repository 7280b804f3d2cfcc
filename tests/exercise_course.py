"""Test support: a scaffolded exercise directory imported exactly as the course's test file does.

`course_modules` scaffolds ``directory`` (`jaxdl.exercise.scaffold`), copies
``exercise_helpers.py`` in as ``Layers/Helpers.py``, puts the directory on ``sys.path`` and runs
``from Layers import *``, ``from Optimization import *`` and ``import NeuralNetwork``. It yields
the imported names and, on exit, removes the directory from ``sys.path`` and the course's
modules from ``sys.modules``.
"""

import contextlib
import shutil
import sys
from pathlib import Path

import numpy as np

from jaxdl.exercise.scaffold import scaffold

HELPERS = Path(__file__).with_name("exercise_helpers.py")
COURSE_PACKAGES = ("Layers", "Optimization", "Models", "NeuralNetwork", "TrainLeNet")
IMPORTS = "from Layers import *\nfrom Optimization import *\nimport NeuralNetwork\n"


def _forget_course_modules():
    for name in list(sys.modules):
        if name.split(".")[0] in COURSE_PACKAGES:
            del sys.modules[name]


@contextlib.contextmanager
def course_modules(directory, **scaffold_args):
    directory = Path(directory)
    scaffold(directory, echo=None, **scaffold_args)
    shutil.copyfile(HELPERS, directory / "Layers" / "Helpers.py")
    _forget_course_modules()
    sys.path.insert(0, str(directory))
    try:
        namespace = {}
        exec(IMPORTS, namespace)
        yield {name: value for name, value in namespace.items() if not name.startswith("__")}
    finally:
        sys.path.remove(str(directory))
        _forget_course_modules()


class L2Loss:
    """The course test file's local loss: sum of squared differences."""

    def __init__(self):
        self.input_tensor = None

    def forward(self, input_tensor, label_tensor):
        self.input_tensor = input_tensor
        return np.sum(np.square(input_tensor - label_tensor))

    def backward(self, label_tensor):
        return 2 * np.subtract(self.input_tensor, label_tensor)


def random_one_hot(batch_size, categories):
    """(batch_size, categories) one-hot rows with uniformly random classes."""
    labels = np.zeros([batch_size, categories])
    for i in range(batch_size):
        labels[i, np.random.randint(0, categories)] = 1
    return labels


class RecordingInitializer:
    """The course's FullyConnected TestInitializer: records the fans, rows 0 and 1 set to 1 and 2."""

    def __init__(self):
        self.fan_in = self.fan_out = None

    def initialize(self, shape, fan_in, fan_out):
        self.fan_in, self.fan_out = fan_in, fan_out
        weights = np.zeros(shape)
        weights[0] = 1
        weights[1] = 2
        return weights
