import copy

import numpy as np

from Layers.Base import BaseLayer


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


class RNN(BaseLayer):
    """Elman RNN: h_t = tanh([x_t, h_{t-1}, 1] @ weights), y_t = sigmoid([h_t, 1] @ output_weights)."""

    gates = 1

    def __init__(self, input_size, hidden_size, output_size):
        super().__init__()
        self.trainable = True
        self.input_size, self.hidden_size, self.output_size = input_size, hidden_size, output_size
        self.weights = np.random.uniform(0, 1, (input_size + hidden_size + 1, self.gates * hidden_size))
        self.output_weights = np.random.uniform(0, 1, (hidden_size + 1, output_size))
        self.memorize = False
        self.state = None
        self._optimizer = None
        self.gradient_weights = None

    @property
    def optimizer(self):
        return self._optimizer

    @optimizer.setter
    def optimizer(self, optimizer):
        self._optimizer = optimizer
        self._output_optimizer = copy.deepcopy(optimizer)

    def initialize(self, weights_initializer, bias_initializer):
        rows, width = self.input_size + self.hidden_size, self.gates * self.hidden_size
        self.weights = np.vstack([weights_initializer.initialize((rows, width), rows, width),
                                  bias_initializer.initialize((1, width), rows, width)])
        self.output_weights = np.vstack([
            weights_initializer.initialize((self.hidden_size, self.output_size), self.hidden_size, self.output_size),
            bias_initializer.initialize((1, self.output_size), self.hidden_size, self.output_size)])

    def _initial_state(self):
        if self.memorize and self.state is not None:
            return self.state
        return (np.zeros(self.hidden_size),)

    def _step(self, x_t, state):
        z = np.concatenate([x_t, state[0], [1.0]])
        h = np.tanh(z @ self.weights)
        return (h,), {"z": z, "h": h}

    def _step_backward(self, cache, dstate):
        dpre = dstate[0] * (1 - cache["h"] ** 2)
        dz = self.weights @ dpre
        return np.outer(cache["z"], dpre), dz, (dz[self.input_size:self.input_size + self.hidden_size],)

    def forward(self, input_tensor):
        state = self._initial_state()
        self.caches, outputs = [], []
        for x_t in input_tensor:
            state, cache = self._step(x_t, state)
            cache["h_out"] = np.append(state[0], 1.0)
            self.caches.append(cache)
            outputs.append(_sigmoid(cache["h_out"] @ self.output_weights))
        self.state = state
        self.outputs = np.array(outputs)
        return self.outputs

    def backward(self, error_tensor):
        gradient = np.zeros_like(self.weights)
        gradient_output = np.zeros_like(self.output_weights)
        dx = np.zeros((len(error_tensor), self.input_size))
        dstate = tuple(np.zeros(self.hidden_size) for _ in self._initial_state())
        for t in reversed(range(len(error_tensor))):
            cache = self.caches[t]
            dy = error_tensor[t] * self.outputs[t] * (1 - self.outputs[t])
            gradient_output += np.outer(cache["h_out"], dy)
            dh = self.output_weights[:-1] @ dy
            dstate = (dstate[0] + dh,) + dstate[1:]
            dw, dz, dstate = self._step_backward(cache, dstate)
            gradient += dw
            dx[t] = dz[:self.input_size]
        self.gradient_weights = gradient
        if self._optimizer is not None:
            self.weights = self._optimizer.calculate_update(self.weights, gradient)
            self.output_weights = self._output_optimizer.calculate_update(self.output_weights, gradient_output)
        return dx

    def calculate_regularization_loss(self):
        if self._optimizer is None or self._optimizer.regularizer is None:
            return 0.0
        return self._optimizer.regularizer.norm(self.weights) + self._optimizer.regularizer.norm(self.output_weights)
