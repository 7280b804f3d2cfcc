"""The exercise's ``Layers/RNN.py`` and ``Layers/LSTM.py`` over `jaxdl.layers.recurrent`.

``RNN(input_size, hidden_size, output_size)`` is `jaxdl.layers.recurrent.elman_rnn`
(RNN -> FullyConnected -> Sigmoid) and ``LSTM(...)`` is `lstm_network` (LSTM ->
FullyConnected -> Sigmoid), run on the exercise's rank-2 input (time, input_size): the
exercise's batch axis is time, one sequence per call. Their params are held in the core
layout; the exercise's view:

* ``weights``: the hidden map's single matrix over [x_t, h_{t-1}, 1], shape
  (input_size + hidden_size + 1, hidden_size), (..., 4 * hidden_size) for the LSTM: the
  core's ``w_ih``, ``w_hh`` and ``b`` stacked in that row order. LSTM columns are in the
  core's gate order i, f, g, o. Setting it splits it back.
* ``gradient_weights``: its gradient from the last backward, summed over the time steps.
* ``memorize`` (default False): carry the final hidden (and cell) state into the next
  forward (truncated backpropagation through time); False starts every forward from zeros.
* `initialize` draws the hidden map as one (input_size + hidden_size, G * hidden_size)
  matrix (fans input_size + hidden_size and G * hidden_size) plus a bias row, and the output
  map as (hidden_size, output_size) plus a bias row, as the exercise's embedded
  FullyConnected layers do.
* The regularization loss is the norm of every parameter (both maps, bias rows included):
  the tensors the optimizer shrinks.
"""

from __future__ import annotations

import numpy as np

from jaxdl.exercise import _checks
from jaxdl.exercise._engine import DTYPE, to_device
from jaxdl.exercise.base import FunctionalLayer, _reshaped
from jaxdl.layers.recurrent import elman_rnn, lstm_network

__all__ = ["RNN", "LSTM"]


class _Recurrent(FunctionalLayer):
    _network = None  # elman_rnn or lstm_network
    _gates = 1

    def __init__(self, input_size, hidden_size, output_size):
        self.input_size, self.hidden_size, self.output_size = int(input_size), int(hidden_size), int(output_size)
        super().__init__(self._build(memorize=False))  # U[0, 1) params, drawn on first use
        self.trainable = True

    def _build(self, memorize):
        return type(self)._network(self.hidden_size, self.output_size, memorize=memorize)

    @property
    def _names(self):
        hidden, output, _ = self._core.names
        return hidden, output

    @property
    def memorize(self) -> bool:
        """Carry the final state of one forward into the next (default False)."""
        return self._core.layers[0].memorize

    @memorize.setter
    def memorize(self, value):
        value = bool(value)
        if value == self.memorize:
            return
        self._core = self._build(memorize=value)
        hidden, _ = self._names
        self._state = {hidden: self._core.layers[0].initial_state(1, DTYPE)} if value else {}

    def initialize(self, weights_initializer, bias_initializer) -> None:
        """Draws the hidden map over [x, h, 1] and the output map (see the module docstring).

        Raises:
            TypeError: when an initializer has no ``initialize`` (e.g. a string or a class).
        """
        _checks.check_initializers(f"{type(self).__name__}.initialize", weights_initializer, bias_initializer)
        rows, width = self.input_size + self.hidden_size, self._gates * self.hidden_size
        hidden_weights = weights_initializer.initialize((rows, width), rows, width)
        hidden_bias = bias_initializer.initialize((1, width), rows, width)
        output_weights = weights_initializer.initialize((self.hidden_size, self.output_size),
                                                        self.hidden_size, self.output_size)
        output_bias = bias_initializer.initialize((1, self.output_size), self.hidden_size, self.output_size)
        hidden, output = self._names
        hidden_weights = np.asarray(hidden_weights, dtype=np.float64).reshape(rows, width)
        self._params = {
            hidden: {
                "w_ih": to_device(hidden_weights[:self.input_size]),
                "w_hh": to_device(hidden_weights[self.input_size:]),
                "b": _reshaped("hidden bias", hidden_bias, (width,)),
            },
            output: {
                "weights": _reshaped("output weights", output_weights, (self.hidden_size, self.output_size)),
                "bias": _reshaped("output bias", output_bias, (self.output_size,)),
            },
        }

    def _split(self, stacked) -> dict:
        shape = (self.input_size + self.hidden_size + 1, self._gates * self.hidden_size)
        stacked = np.asarray(stacked, dtype=np.float64)
        if stacked.shape != shape:  # a transposed matrix must not be silently reshaped
            raise ValueError(
                f"{type(self).__name__}.weights must have shape (input_size + hidden_size + 1, "
                f"{'4 * ' if self._gates == 4 else ''}hidden_size) = {shape}, got shape {stacked.shape}.")
        return {
            "w_ih": to_device(stacked[:self.input_size]),
            "w_hh": to_device(stacked[self.input_size:-1]),
            "b": to_device(stacked[-1]),
        }

    @staticmethod
    def _stack(leaves) -> np.ndarray:
        return np.vstack([np.asarray(leaves["w_ih"]), np.asarray(leaves["w_hh"]), np.asarray(leaves["b"])[None]])

    @property
    def weights(self) -> np.ndarray:
        """The hidden map over [x_t, h_{t-1}, 1]: (input + hidden + 1, G * hidden)."""
        return self._stack(self._params[self._names[0]])

    @weights.setter
    def weights(self, value):
        hidden, _ = self._names
        self._params = {**self._params, hidden: self._split(value)}

    @property
    def gradient_weights(self) -> np.ndarray:
        """The gradient of `weights` from the last backward (summed over time)."""
        if self._gradients is None:
            raise RuntimeError(f"{type(self).__name__}: no gradient yet, call forward and backward first.")
        return self._stack(self._gradients[self._names[0]])

    _regularized = "all"  # both maps, bias rows included


class RNN(_Recurrent):
    """Elman RNN: h_t = tanh([x_t, h_{t-1}, 1] @ weights), y_t = sigmoid([h_t, 1] @ W_y).

    Input (time, input_size), output (time, output_size).
    """

    _network = staticmethod(elman_rnn)
    _gates = 1


class LSTM(_Recurrent):
    """LSTM over [x_t, h_{t-1}, 1] (gates i, f, g, o), y_t = sigmoid([h_t, 1] @ W_y).

    Input (time, input_size), output (time, output_size).
    """

    _network = staticmethod(lstm_network)
    _gates = 4
