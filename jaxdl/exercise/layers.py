"""The exercise's layers (``Layers/*.py``) as thin stateful wrappers of `jaxdl.layers`.

Every class here keeps its parameters as float64 jax arrays in the core layer's layout and
shows them in the exercise's layout through properties; forward and backward are the core
``apply`` and its `jax.vjp`, compiled once per configuration and input shape (see
`jaxdl.exercise.base.FunctionalLayer`). Conventions, said out loud:

* `FullyConnected.weights` is (input_size + 1, output_size): the core's weights with the
  bias appended as the last row; setting it splits it back.
* `Dropout(probability)`: ``probability`` is the fraction KEPT (the core's rate is
  1 - probability); the mask comes from NumPy's global generator.
* `BatchNormalization(channels)`: decay 0.8, eps = np.finfo(float).eps, biased variance,
  running statistics set by the first training batch; ``weights`` is gamma, ``bias`` beta.
* Input layouts are the exercise's: (batch, features); images (batch, channels, y[, x]).
* RNN and LSTM live in `jaxdl.exercise.recurrent` and are re-exported here, with the
  initializers, so that every ``Layers/*.py`` of the scaffold imports from this module.

Example:
    >>> layer = FullyConnected(4, 3)
    >>> layer.forward(np.ones((9, 4))).shape, layer.weights.shape
    ((9, 3), (5, 3))
"""

from __future__ import annotations

import math

import jax
import numpy as np

from jaxdl import layers as core
from jaxdl.exercise import _checks, _engine
from jaxdl.exercise._engine import DTYPE, to_device
from jaxdl.exercise.base import BaseLayer, FunctionalLayer, _reshaped
from jaxdl.exercise.initializers import Constant, He, UniformRandom, Xavier
from jaxdl.exercise.recurrent import LSTM, RNN

__all__ = [
    "BaseLayer", "FullyConnected", "ReLU", "SoftMax", "Flatten", "TanH", "Sigmoid", "Conv",
    "Pooling", "Dropout", "BatchNormalization", "RNN", "LSTM",
    "Constant", "UniformRandom", "Xavier", "He",
]


class FullyConnected(FunctionalLayer):
    """y = [x, 1] @ weights, with ``weights`` of shape (input_size + 1, output_size).

    Constructed with U[0, 1) weights and bias (drawn on first use). `initialize` replaces
    them: the weight rows from ``weights_initializer.initialize((input_size, output_size),
    input_size, output_size)``, the bias row from ``bias_initializer.initialize((1,
    output_size), input_size, output_size)``.
    """

    def __init__(self, input_size, output_size):
        super().__init__(core.FullyConnected(int(output_size)))
        self.trainable = True
        self.input_size, self.output_size = int(input_size), int(output_size)

    def initialize(self, weights_initializer, bias_initializer) -> None:
        """Draws the weights and the bias (class docstring).

        Raises:
            TypeError: when an initializer has no ``initialize`` (e.g. a string or a class).
        """
        _checks.check_initializers("FullyConnected.initialize", weights_initializer, bias_initializer)
        fans = (self.input_size, self.output_size)
        weights = weights_initializer.initialize((self.input_size, self.output_size), *fans)
        bias = bias_initializer.initialize((1, self.output_size), *fans)
        self._params = {
            "weights": _reshaped("weights", weights, fans),
            "bias": _reshaped("bias", bias, (self.output_size,)),
        }

    @property
    def weights(self) -> np.ndarray:
        """(input_size + 1, output_size): the weight rows, then the bias row."""
        return np.concatenate([np.asarray(self._params["weights"]), np.asarray(self._params["bias"])[None]])

    @weights.setter
    def weights(self, value):
        value = np.asarray(value, dtype=np.float64)
        shape = (self.input_size + 1, self.output_size)
        if value.shape != shape:  # a transposed matrix must not be silently reshaped
            raise ValueError(
                f"FullyConnected.weights must have shape (input_size + 1, output_size) = {shape} "
                f"(bias as last row), got shape {value.shape}.")
        self._params = {"weights": to_device(value[:-1]), "bias": to_device(value[-1])}

    @property
    def gradient_weights(self) -> np.ndarray:
        """The gradient of the last backward w.r.t. `weights` (same shape)."""
        return np.concatenate([self._gradient("weights"), self._gradient("bias")[None]])

    _regularized = "all"  # norm(weights) with the bias row: the sum over both leaves


class ReLU(FunctionalLayer):
    """max(0, x); backward passes the error where the input was > 0."""

    def __init__(self):
        super().__init__(core.ReLU(), {})


class TanH(FunctionalLayer):
    """tanh(x); backward multiplies by 1 - tanh(x)^2."""

    def __init__(self):
        super().__init__(core.TanH(), {})


class Sigmoid(FunctionalLayer):
    """1 / (1 + exp(-x)); backward multiplies by f (1 - f)."""

    def __init__(self):
        super().__init__(core.Sigmoid(), {})


class SoftMax(FunctionalLayer):
    """Row-wise softmax over (batch, classes), max-shifted; backward y * (E - sum(E * y))."""

    def __init__(self):
        super().__init__(core.SoftMax(), {})


class Flatten(FunctionalLayer):
    """(batch, ...) -> (batch, prod(...)) in C order; backward reshapes back."""

    def __init__(self):
        super().__init__(core.Flatten(), {})


class Pooling(FunctionalLayer):
    """2-D max pooling, "valid": out = floor((in - pool) / stride) + 1 per spatial axis."""

    def __init__(self, stride_shape, pooling_shape):
        super().__init__(core.Pooling(_int_tuple(pooling_shape), _int_tuple(stride_shape)), {})
        self.stride_shape, self.pooling_shape = stride_shape, pooling_shape


def _int_tuple(value) -> tuple[int, ...]:
    return tuple(int(v) for v in np.atleast_1d(value))


class Conv(FunctionalLayer):
    """Cross-correlation with "same" zero padding and stride, plus bias.

    Args:
        stride_shape: an int, (s,) or (sy, sx) (for a 1-D kernel only the first entry counts).
        convolution_shape: (c, m) for 1-D input (batch, c, y) or (c, m, n) for 2-D input
            (batch, c, y, x).
        num_kernels: the number of output channels k.

    ``weights`` (k, c, m[, n]) and ``bias`` (k,), both U[0, 1) after construction (drawn on
    first use).
    `initialize` uses fan_in = c*m*n and fan_out = k*m*n.
    """

    def __init__(self, stride_shape, convolution_shape, num_kernels):
        shape = _int_tuple(convolution_shape)
        self.stride_shape, self.convolution_shape, self.num_kernels = stride_shape, shape, int(num_kernels)
        stride = _int_tuple(stride_shape)
        if len(stride) > len(shape) - 1:  # e.g. (1, 1) for a 1-D kernel: the first entries count
            stride = stride[:len(shape) - 1]
        super().__init__(core.Conv(self.num_kernels, shape[1:], stride=stride))
        self.trainable = True

    @property
    def _weights_shape(self):
        return (self.num_kernels, *self.convolution_shape)

    def initialize(self, weights_initializer, bias_initializer) -> None:
        """Draws the kernels and the bias with fan_in = channels * receptive field, fan_out = kernels * it.

        Raises:
            TypeError: when an initializer has no ``initialize`` (e.g. a string or a class).
        """
        _checks.check_initializers("Conv.initialize", weights_initializer, bias_initializer)
        receptive = math.prod(self.convolution_shape[1:])
        fan_in, fan_out = self.convolution_shape[0] * receptive, self.num_kernels * receptive
        weights = weights_initializer.initialize(self._weights_shape, fan_in, fan_out)
        bias = bias_initializer.initialize((self.num_kernels,), fan_in, fan_out)
        self._params = {
            "weights": _reshaped("Conv weights", weights, self._weights_shape, strict=False),
            "bias": _reshaped("Conv bias", bias, (self.num_kernels,), strict=False),
        }

    @property
    def weights(self) -> np.ndarray:
        """(num_kernels, channels, m[, n])."""
        return np.array(self._params["weights"])

    @weights.setter
    def weights(self, value):
        self._params = {**self._params, "weights": _reshaped("Conv.weights", value, self._weights_shape)}

    @property
    def bias(self) -> np.ndarray:
        """(num_kernels,)."""
        return np.array(self._params["bias"])

    @bias.setter
    def bias(self, value):
        self._params = {**self._params, "bias": _reshaped("Conv.bias", value, (self.num_kernels,))}

    @property
    def gradient_weights(self) -> np.ndarray:
        return self._gradient("weights")

    @property
    def gradient_bias(self) -> np.ndarray:
        return self._gradient("bias")

    _regularized = "weights"  # the exercise's norm(weights): not the bias


class Dropout(FunctionalLayer):
    """Inverted dropout keeping each entry with ``probability`` (the KEEP fraction).

    Training: mask = np.random.rand(*shape) < probability (NumPy's global generator, so a
    seeded gradient check reproduces it), survivors scaled by 1 / probability
    (`jaxdl.layers.dropout.apply_dropout_mask` with rate = 1 - probability). Testing
    phase: the identity.
    """

    def __init__(self, probability):
        if not 0.0 <= probability <= 1.0:
            raise ValueError(f"Dropout: probability (the fraction kept) must be in [0, 1], got {probability!r}.")
        self.probability = probability
        super().__init__(core.Dropout(1.0 - float(probability)), {})

    def _call(self, x):
        if self.testing_phase:
            return _engine.LayerFn(self._core, False), {}
        keep = np.random.rand(*x.shape) < self.probability
        return _engine.DropoutFn(self._core.rate), keep


class BatchNormalization(FunctionalLayer):
    """Batch normalization of (batch, channels) or (batch, channels, y, x) input.

    ``weights`` = gamma (ones), ``bias`` = beta (zeros), one per channel; decay 0.8 for the
    running statistics (the first training batch sets them), eps = np.finfo(float).eps.
    """

    decay = 0.8
    eps = float(np.finfo(float).eps)

    def __init__(self, channels):
        self.channels = int(channels)
        layer = core.BatchNormalization(decay=self.decay, eps=self.eps)
        params, state = layer.init(jax.random.key(0), (1, self.channels), DTYPE)
        super().__init__(layer, params, state)
        self.trainable = True
        self._image_shape = None

    def initialize(self, weights_initializer=None, bias_initializer=None) -> None:
        """Resets gamma to ones and beta to zeros (the given initializers are ignored).

        Raises:
            TypeError: when an initializer is given that has no ``initialize``.
        """
        _checks.check_initializers("BatchNormalization.initialize", weights_initializer, bias_initializer,
                                   allow_none=True)
        self._params = self._core.init(jax.random.key(0), (1, self.channels), DTYPE)[0]

    def _call(self, x):
        if x.ndim == 4:
            self._image_shape = tuple(x.shape)
        return super()._call(x)

    def reformat(self, tensor) -> np.ndarray:
        """(B, H, M, N) -> (B*M*N, H), or back to the last image shape seen for 2-D input."""
        tensor = np.asarray(tensor)
        if tensor.ndim == 4:
            self._image_shape = tensor.shape
            b, h, m, n = tensor.shape
            return tensor.reshape(b, h, m * n).transpose(0, 2, 1).reshape(b * m * n, h)
        if self._image_shape is None:
            raise ValueError("BatchNormalization.reformat: no image shape known; reformat or forward a 4-D tensor "
                             "first (or, as older editions, set input_shape).")
        b, h, m, n = self._image_shape
        if b is None:  # an older edition's input_shape (channels, y, x): the batch follows from the size
            b = tensor.size // (h * m * n)
        return np.asarray(tensor).reshape(b, m * n, h).transpose(0, 2, 1).reshape(b, h, m, n)

    @property
    def input_shape(self):
        """The image shape (batch, channels, y, x) `reformat` restores 2-D tensors to, or None.

        Older editions set it by hand before calling ``reformat`` without a ``forward``; a
        shape (channels, y, x) is taken too (the batch then follows from the tensor's size).

        Raises:
            ValueError: when set to a shape that is neither 4-D nor 3-D.
        """
        return self._image_shape

    @input_shape.setter
    def input_shape(self, shape):
        shape = tuple(int(s) for s in shape)
        if len(shape) not in (3, 4):
            raise ValueError(f"BatchNormalization.input_shape: expected (batch, channels, y, x) or (channels, y, x), "
                             f"got {shape}.")
        self._image_shape = shape if len(shape) == 4 else (None, *shape)

    @property
    def weights(self) -> np.ndarray:
        """gamma, shape (channels,)."""
        return np.array(self._params["gamma"])

    @weights.setter
    def weights(self, value):
        self._params = {**self._params, "gamma": _reshaped("BatchNormalization.weights", value, (self.channels,))}

    @property
    def bias(self) -> np.ndarray:
        """beta, shape (channels,)."""
        return np.array(self._params["beta"])

    @bias.setter
    def bias(self, value):
        self._params = {**self._params, "beta": _reshaped("BatchNormalization.bias", value, (self.channels,))}

    @property
    def gradient_weights(self) -> np.ndarray:
        return self._gradient("gamma")

    @property
    def gradient_bias(self) -> np.ndarray:
        return self._gradient("beta")

    @property
    def running_mean(self) -> np.ndarray:
        return np.array(self._state["mean"])

    @property
    def running_var(self) -> np.ndarray:
        return np.array(self._state["var"])
