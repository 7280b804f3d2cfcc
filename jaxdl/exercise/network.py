"""The exercise's ``NeuralNetwork.py``: `NeuralNetwork`, `save` and `load`.

The network strings facade layers together as the exercise does (a list of layers, a data
layer, a loss layer) and keeps their outputs as jax arrays between layers, so a training
iteration costs one compiled call per layer and direction, and one host synchronisation
(the scalar loss). Layers written by the user (with NumPy ``forward``/``backward``) can be
mixed in; they receive NumPy arrays.

`save`/`load` use pickle, as the exercise does. Unpickling runs code chosen by whoever wrote
the file: load only files you wrote yourself. For portable checkpoints use the functional
API (`jaxdl.checkpoint`).
"""

from __future__ import annotations

import copy
import pickle

import numpy as np

from jaxdl.exercise.base import FunctionalLayer
from jaxdl.exercise.loss import CrossEntropyLoss

__all__ = ["NeuralNetwork", "save", "load"]


def _forward(layer, x):
    if isinstance(layer, FunctionalLayer):
        return layer._forward_array(x)
    return layer.forward(np.asarray(x))


def _backward(layer, error):
    if isinstance(layer, FunctionalLayer):
        return layer._backward_array(error)
    return layer.backward(np.asarray(error))


class NeuralNetwork:
    """The exercise's network: layers, a data layer, a loss layer and an optimizer.

    Args:
        optimizer: deep-copied into every trainable layer by `append_layer`.
        weights_initializer, bias_initializer: passed to each trainable layer's ``initialize``.

    Attributes:
        loss: the loss of every training iteration (data loss + regularization loss).
        layers: the layers, first applied first.
        data_layer: an object with ``next() -> (input, label)`` and ``get_test_set()``.
        loss_layer: e.g. `CrossEntropyLoss`; ``forward(prediction, label)`` and ``backward(label)``.
    """

    def __init__(self, optimizer, weights_initializer=None, bias_initializer=None):
        self.optimizer = optimizer
        self.weights_initializer = weights_initializer
        self.bias_initializer = bias_initializer
        self.loss = []
        self.layers = []
        self.data_layer = None
        self.loss_layer = None
        self._label_tensor = None

    @property
    def phase(self) -> str:
        """"test" if the layers are in the testing phase, else "train".

        Setting it ("train"/"test", or a bool: True = testing) sets every layer's
        ``testing_phase``.
        """
        testing = any(getattr(layer, "testing_phase", False) for layer in self.layers)
        return "test" if testing else "train"

    @phase.setter
    def phase(self, phase):
        if isinstance(phase, str):
            if phase.lower() not in ("train", "training", "test", "testing"):
                raise ValueError(f"NeuralNetwork.phase must be 'train' or 'test', got {phase!r}.")
            testing = phase.lower().startswith("test")
        else:
            testing = bool(phase)
        for layer in self.layers:
            layer.testing_phase = testing

    def append_layer(self, layer) -> None:
        """Appends ``layer``; a trainable one gets a deep copy of the optimizer and is initialized."""
        if getattr(layer, "trainable", False):
            layer.optimizer = copy.deepcopy(self.optimizer)
            layer.initialize(self.weights_initializer, self.bias_initializer)
        self.layers.append(layer)

    def regularization_loss(self):
        """The summed regularization loss of the layers (their optimizers' regularizers)."""
        total = 0.0
        for layer in self.layers:
            if isinstance(layer, FunctionalLayer):
                total = total + layer._regularization_loss_array()
            elif getattr(layer, "trainable", False) and hasattr(layer, "calculate_regularization_loss"):
                total = total + layer.calculate_regularization_loss()
        return total

    def forward(self) -> float:
        """Loss of the next batch from the data layer: data loss + regularization loss."""
        x, self._label_tensor = self.data_layer.next()
        for layer in self.layers:
            x = _forward(layer, x)
        if isinstance(self.loss_layer, CrossEntropyLoss):
            data_loss = self.loss_layer._forward_array(x, self._label_tensor)
        else:
            data_loss = self.loss_layer.forward(np.asarray(x), self._label_tensor)
        return float(data_loss + self.regularization_loss())

    def backward(self) -> None:
        """Back-propagates the last forward's loss; layers with an optimizer update."""
        if isinstance(self.loss_layer, CrossEntropyLoss):
            error = self.loss_layer._backward_array(self._label_tensor)
        else:
            error = self.loss_layer.backward(self._label_tensor)
        for layer in reversed(self.layers):
            error = _backward(layer, error)

    def train(self, iterations) -> None:
        """``iterations`` times forward (its loss appended to `loss`) and backward, training phase."""
        self.phase = "train"
        for _ in range(int(iterations)):
            self.loss.append(self.forward())
            self.backward()

    def test(self, input_tensor) -> np.ndarray:
        """The last layer's output for ``input_tensor``, with every layer in the testing phase."""
        self.phase = "test"
        x = input_tensor
        for layer in self.layers:
            x = _forward(layer, x)
        return np.array(x)

    def __getstate__(self):
        state = self.__dict__.copy()
        state["data_layer"] = None  # holds generators and datasets; load() re-attaches one
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.data_layer = None


def save(filename, net) -> None:
    """Pickles ``net`` (without its data layer) to ``filename``."""
    with open(filename, "wb") as f:
        pickle.dump(net, f)


def load(filename, data_layer) -> NeuralNetwork:
    """Unpickles a network saved by `save` and attaches ``data_layer``.

    Unpickling can run arbitrary code: load only files you trust.
    """
    with open(filename, "rb") as f:
        net = pickle.load(f)
    net.data_layer = data_layer
    return net
