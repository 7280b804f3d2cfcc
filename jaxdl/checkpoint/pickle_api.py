"""The exercise's pickle API: `save` / `load` (``NeuralNetwork.save``/``load``), any picklable object in one file.

UNSAFE for files you did not write yourself: unpickling runs arbitrary code. Prefer the safe
format (`jaxdl.checkpoint.save_checkpoint`) for anything shared.
"""

from __future__ import annotations

import os
import pathlib
import pickle

from jaxdl.checkpoint.files import write_atomic


def save(filename: str | os.PathLike, obj) -> None:
    """Pickles ``obj`` into ``filename`` atomically (the exercise's ``NeuralNetwork.save``).

    Objects that must not be pickled (the exercise's data layer) should be dropped by the
    object's ``__getstate__``. Prefer `save_checkpoint` for anything you share.
    """
    write_atomic(pathlib.Path(filename), lambda file: pickle.dump(obj, file, protocol=pickle.HIGHEST_PROTOCOL))


def load(filename: str | os.PathLike):
    """Unpickles the object in ``filename`` (the exercise's ``NeuralNetwork.load``).

    Warning:
        UNSAFE for untrusted files: unpickling can execute arbitrary code. Only load files
        you wrote yourself; use `load_checkpoint` for anything else.
    """
    with open(filename, "rb") as file:
        return pickle.load(file)
