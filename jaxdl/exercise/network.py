"""The exercise's ``NeuralNetwork.py``: `NeuralNetwork`, `save` and `load`.

The network strings facade layers together as the exercise does (a list of layers, a data
layer, a loss layer) and keeps their outputs as jax arrays between layers. `NeuralNetwork.train`
runs each iteration through the core training step, `jaxdl.training.make_train_step`, when it
can (see there; `jaxdl.exercise._network_step` maps the layers onto it). Layers written by the
user (with NumPy ``forward``/``backward``) can be mixed in; they receive NumPy arrays.

`save`/`load` use pickle (`jaxdl.exercise.pickle_io.save`/`load`), as the exercise does; `load`
unpickles with an allow-list (NumPy/JAX arrays, plain data, the facade's classes and what they
hold), so a file that names anything else (``os.system``, ...) is refused before it runs. For
portable checkpoints use the functional API (`jaxdl.checkpoint.save_checkpoint`).
"""

from __future__ import annotations

import copy

import jax
import numpy as np

from jaxdl.exercise import pickle_io
from jaxdl.core import apply_shape
from jaxdl.exercise import _checks, _network_step
from jaxdl.exercise._engine import DTYPE, as_array
from jaxdl.exercise.base import FunctionalLayer, Phase
from jaxdl.exercise.initializers import UniformRandom
from jaxdl.exercise.loss import CrossEntropyLoss
from jaxdl.exercise.optimizers import Optimizer

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
        weights_initializer, bias_initializer: passed to each trainable layer's ``initialize``
            by `append_layer`. With neither (Exercise 1's ``NeuralNetwork(optimizer)``) the
            layers keep the initialization their constructors made.

    Attributes:
        loss: the loss of every training iteration (data loss + regularization loss).
        layers: the layers, first applied first.
        data_layer: an object with ``next() -> (input, label)`` and ``get_test_set()``.
        loss_layer: e.g. `CrossEntropyLoss`; ``forward(prediction, label)`` and ``backward(label)``.

    Raises:
        TypeError: for an optimizer without ``calculate_update`` or an initializer without
            ``initialize`` (e.g. a string, or a class instead of an instance); likewise when
            ``data_layer`` or ``loss_layer`` is set to an object without their methods.
    """

    def __init__(self, optimizer, weights_initializer=None, bias_initializer=None):
        _checks.require_methods("NeuralNetwork (optimizer)", optimizer, _checks.OPTIMIZER, _checks.OPTIMIZER_WORDS,
                                allow_none=True)
        _checks.check_initializers("NeuralNetwork", weights_initializer, bias_initializer, allow_none=True)
        self.optimizer = optimizer
        self.weights_initializer = weights_initializer
        self.bias_initializer = bias_initializer
        self.loss = []
        self.layers = []
        self.data_layer = None
        self.loss_layer = None
        self._label_tensor = None

    @property
    def data_layer(self):
        """The data layer: ``next() -> (input, label)`` (and ``get_test_set()``), or None.

        An older edition's data layer whose batch method is ``forward()`` is taken too.
        """
        return self.__dict__.get("_data_layer")

    @data_layer.setter
    def data_layer(self, data_layer):
        _checks.check_data_layer("NeuralNetwork.data_layer", data_layer)
        self.__dict__["_data_layer"] = data_layer

    @property
    def loss_layer(self):
        """The loss layer: ``forward(prediction, label)`` and ``backward(label)``, or None."""
        return self.__dict__.get("_loss_layer")

    @loss_layer.setter
    def loss_layer(self, loss_layer):
        _checks.require_methods("NeuralNetwork.loss_layer", loss_layer, _checks.LOSS, _checks.LOSS_WORDS,
                                allow_none=True)
        self.__dict__["_loss_layer"] = loss_layer

    @property
    def phase(self) -> str:
        """"test" if the layers are in the testing phase, else "train".

        Setting it ("train"/"test", a bool: True = testing, or an older edition's
        `jaxdl.exercise.base.Phase`: test and validation = testing) sets every layer's
        ``testing_phase``.
        """
        testing = any(getattr(layer, "testing_phase", False) for layer in self.layers)
        return "test" if testing else "train"

    @phase.setter
    def phase(self, phase):
        if isinstance(phase, Phase):
            testing = phase is not Phase.train
        elif isinstance(phase, str):
            if phase.lower() not in ("train", "training", "test", "testing"):
                raise ValueError(f"NeuralNetwork.phase must be 'train' or 'test', got {phase!r}.")
            testing = phase.lower().startswith("test")
        else:
            testing = bool(phase)
        for layer in self.layers:
            layer.testing_phase = testing

    def append_layer(self, layer) -> None:
        """Appends ``layer``; a trainable one gets a deep copy of the optimizer and is initialized.

        ``layer.initialize(weights_initializer, bias_initializer)`` is called when the network
        has an initializer; a missing one of the two is `UniformRandom` (what the constructors
        draw). Without either, the layer keeps its constructor's initialization.

        Raises:
            TypeError: when ``layer`` is not a layer object (with ``forward`` and ``backward``),
                e.g. the string ``"relu"`` or the class ``ReLU`` instead of ``ReLU()``.
        """
        _checks.require_methods("NeuralNetwork.append_layer", layer, _checks.LAYER, _checks.LAYER_WORDS)
        if getattr(layer, "trainable", False):
            layer.optimizer = copy.deepcopy(self.optimizer)
            if self.weights_initializer is not None or self.bias_initializer is not None:
                layer.initialize(self.weights_initializer or UniformRandom(),
                                 self.bias_initializer or UniformRandom())
        self.layers.append(layer)

    def append_trainable_layer(self, layer) -> None:
        """Older editions' name of `append_layer` (same code).

        Raises:
            TypeError: as `append_layer`.
        """
        self.append_layer(layer)

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
        x, self._label_tensor = _checks.next_batch(self.data_layer)
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
        """``iterations`` times forward (its loss appended to `loss`) and backward, training phase.

        When every layer is a `jaxdl.exercise` layer (with a `jaxdl.exercise` optimizer or
        none) and the loss is `CrossEntropyLoss`, each iteration is one call of the core
        training step (`jaxdl.training.make_train_step`, compiled once per configuration, see
        `jaxdl.exercise._network_step`) on the layers as one model: the same layer functions
        and loss as forward + backward, with the same results (dropout masks still drawn from
        NumPy's global generator in layer order). Afterwards every layer holds its new params,
        gradients (``gradient_weights``), optimizer state and layer state. Otherwise it calls
        `forward` and `backward`.
        """
        self.phase = "train"
        if not self._runs_on_core_step():
            for _ in range(int(iterations)):
                self.loss.append(self.forward())
                self.backward()
            return
        losses = []
        for _ in range(int(iterations)):
            x, self._label_tensor = _checks.next_batch(self.data_layer)
            losses.append(self._core_step_iteration(as_array(x), as_array(self._label_tensor)))
        # One transfer at the end: the iterations are dispatched without waiting for each loss.
        self.loss.extend(float(loss) for loss in jax.device_get(losses))

    def _runs_on_core_step(self) -> bool:
        if type(self.loss_layer) is not CrossEntropyLoss:
            return False
        for layer in self.layers:
            if not isinstance(layer, FunctionalLayer):
                return False
            optimizer = layer._optimizer if layer.trainable else None
            if optimizer is not None and not isinstance(optimizer, Optimizer):
                return False
        return True

    def _input_shapes(self, shape) -> list:
        """The input shape of every layer for a network input of ``shape`` (cached)."""
        signature = (tuple(shape), tuple((id(layer), layer._core) for layer in self.layers))
        cached = self.__dict__.get("_shapes")
        if cached is None or cached[0] != signature:
            shapes, h = [], tuple(shape)
            for layer in self.layers:
                shapes.append(jax.ShapeDtypeStruct(h, DTYPE))
                h = apply_shape(layer._core, layer._params, layer._state, h, DTYPE)
            self._shapes = cached = (signature, shapes)
        return cached[1]

    def _core_step_iteration(self, x, labels):
        """One core training step of all layers on (x, labels); returns the reported loss."""
        fns, extras, params, optimizers, opt_states, regularizers = [], [], [], [], [], []
        for layer, shape in zip(self.layers, self._input_shapes(x.shape)):
            fn, extra = layer._call(shape)  # draws dropout masks in layer order
            fns.append(fn)
            extras.append(extra)
            params.append(layer._params)
            optimizer = layer._optimizer if layer.trainable else None
            if optimizer is None:
                optimizers.append(None)
                opt_states.append(None)
            else:
                core, opt_state = optimizer._prepared_state(layer._params)
                optimizers.append(core)
                opt_states.append(opt_state)
            regularizer = getattr(layer._optimizer, "regularizer", None)
            if regularizer is None or layer._regularized is None:
                regularizers.append(None)
            else:
                regularizers.append((regularizer.core, layer._regularized))
        step = _network_step.compiled_step(tuple(fns), tuple(optimizers), tuple(regularizers))
        new_params, new_states, opt_state, loss = step(tuple(params), tuple(extras), tuple(opt_states), x, labels)
        for i, layer in enumerate(self.layers):
            layer._after_forward(new_states[i])
            layer._gradients = opt_state.gradients[i]
            layer._vjp = layer._saved = None
            if optimizers[i] is not None:
                layer._params = new_params[i]
                layer._optimizer._opt_state = opt_state.inner[i]
        return loss

    def test(self, input_tensor) -> np.ndarray:
        """The last layer's output for ``input_tensor``, with every layer in the testing phase."""
        self.phase = "test"
        x = input_tensor
        for layer in self.layers:
            x = _forward(layer, x)
        for layer in self.layers:
            if isinstance(layer, FunctionalLayer):
                layer._saved = None  # do not keep every layer's input of a large test set alive
        return np.array(x)

    def __getstate__(self):
        state = self.__dict__.copy()
        state.pop("_shapes", None)
        state.pop("_data_layer", None)  # holds generators and datasets; load() re-attaches one
        state["data_layer"] = None  # the state keeps the public names (as before they were properties)
        state["loss_layer"] = state.pop("_loss_layer", None)
        return state

    def __setstate__(self, state):
        state = dict(state)
        state.pop("data_layer", None)
        self.__dict__.update(state)
        self.__dict__["_loss_layer"] = self.__dict__.pop("loss_layer", None)
        self.__dict__["_data_layer"] = None


def save(filename, net) -> None:
    """Pickles ``net`` (without its data layer) to ``filename`` (`jaxdl.exercise.pickle_io.save`)."""
    pickle_io.save(filename, net)


def load(filename, data_layer, *, allowed_classes=()) -> NeuralNetwork:
    """Unpickles a network saved by `save` and attaches ``data_layer``.

    Args:
        filename: the file `save` wrote.
        data_layer: the data layer to attach (see `NeuralNetwork.data_layer`), or None.
        allowed_classes: classes of your own the network holds (e.g. a layer you wrote); the
            facade's classes, NumPy and JAX arrays are always allowed (`jaxdl.exercise.pickle_io.load`).

    Raises:
        jaxdl.exercise.pickle_io.UnsafePickleError: when the file names anything outside the allow-list
            (refused before any of it runs) or is damaged.
        TypeError: when the file does not hold a `NeuralNetwork`, or ``data_layer`` has no ``next()``.
    """
    net = pickle_io.load(filename, allowed_classes=allowed_classes)
    if not isinstance(net, NeuralNetwork):
        raise TypeError(f"NeuralNetwork.load: {filename} holds a {type(net).__name__}, not a NeuralNetwork.")
    net.data_layer = data_layer
    return net
