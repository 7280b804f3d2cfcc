"""The classes `python -m jaxdl.exercise check` knows: name, file in the course layout, check.

Light on purpose (no JAX): the parent process reads it to find which files a student's
directory has; the worker process imports the named check functions.
"""

from __future__ import annotations

import importlib
from pathlib import Path

#: (class, file in the course's ``src_to_implement`` layout, check function as "module:function").
CLASSES = (
    ("FullyConnected", "Layers/FullyConnected.py", "_layers:fully_connected"),
    ("ReLU", "Layers/ReLU.py", "_layers:relu"),
    ("TanH", "Layers/TanH.py", "_layers:tanh"),
    ("Sigmoid", "Layers/Sigmoid.py", "_layers:sigmoid"),
    ("SoftMax", "Layers/SoftMax.py", "_layers:softmax"),
    ("Flatten", "Layers/Flatten.py", "_layers:flatten"),
    ("Conv", "Layers/Conv.py", "_layers:conv"),
    ("Pooling", "Layers/Pooling.py", "_layers:pooling"),
    ("Dropout", "Layers/Dropout.py", "_layers:dropout"),
    ("BatchNormalization", "Layers/BatchNormalization.py", "_layers:batch_normalization"),
    ("RNN", "Layers/RNN.py", "_recurrent:rnn"),
    ("LSTM", "Layers/LSTM.py", "_recurrent:lstm"),
    ("CrossEntropyLoss", "Optimization/Loss.py", "_optimization:cross_entropy_loss"),
    ("Sgd", "Optimization/Optimizers.py", "_optimization:sgd"),
    ("SgdWithMomentum", "Optimization/Optimizers.py", "_optimization:sgd_with_momentum"),
    ("Adam", "Optimization/Optimizers.py", "_optimization:adam"),
    ("L1_Regularizer", "Optimization/Constraints.py", "_optimization:l1_regularizer"),
    ("L2_Regularizer", "Optimization/Constraints.py", "_optimization:l2_regularizer"),
    ("Constant", "Layers/Initializers.py", "_optimization:constant"),
    ("UniformRandom", "Layers/Initializers.py", "_optimization:uniform_random"),
    ("Xavier", "Layers/Initializers.py", "_optimization:xavier"),
    ("He", "Layers/Initializers.py", "_optimization:he"),
)

FILES = {name: file for name, file, _ in CLASSES}


def select(only=None) -> list[str]:
    """The class names ``only`` names (class names or file stems such as "Optimizers"; any case).

    Raises:
        ValueError: for a name that is neither a known class nor a file of one.
    """
    if not only:
        return [name for name, _, _ in CLASSES]
    wanted = {w.strip().lower() for w in only if w.strip()}
    chosen = [name for name, file, _ in CLASSES if {name.lower(), Path(file).stem.lower()} & wanted]
    known = {name.lower() for name, _, _ in CLASSES} | {Path(file).stem.lower() for _, file, _ in CLASSES}
    unknown = sorted(wanted - known)
    if unknown:
        raise ValueError(f"--only: unknown {', '.join(unknown)}; known classes: "
                         f"{', '.join(name for name, _, _ in CLASSES)} (or a file: Optimizers, Constraints, "
                         "Initializers, Loss)")
    return chosen


def present(directory, names) -> tuple[list[str], list[str]]:
    """(names whose file exists in ``directory``, names whose file does not)."""
    root = Path(directory)
    found = [name for name in names if (root / FILES[name]).is_file()]
    return found, [name for name in names if name not in found]


def module_name(name: str) -> str:
    """The module a class is imported from, e.g. ``Layers.FullyConnected``."""
    return FILES[name][:-len(".py")].replace("/", ".")


def check_function(name: str):
    """The check of class ``name`` (imports JAX: worker side only)."""
    module, function = next(check for n, _, check in CLASSES if n == name).split(":")
    return getattr(importlib.import_module(f"jaxdl.exercise.check.{module}"), function)
