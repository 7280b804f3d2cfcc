import copy

import numpy as np

from Layers.Base import BaseLayer


class BatchNormalization(BaseLayer):
    def __init__(self, channels):
        super().__init__()
        self.trainable = True
        self.channels = channels
        self.initialize(None, None)
        self.eps = 1e-11
        self.decay = 0.8
        self.running_mean = self.running_var = None
        self._optimizer = None
        self.image_shape = None

    def initialize(self, weights_initializer, bias_initializer):
        self.weights = np.ones(self.channels)
        self.bias = np.zeros(self.channels)

    @property
    def optimizer(self):
        return self._optimizer

    @optimizer.setter
    def optimizer(self, optimizer):
        self._optimizer = optimizer
        self._bias_optimizer = copy.deepcopy(optimizer)

    def reformat(self, tensor):
        if tensor.ndim == 4:
            self.image_shape = tensor.shape
            b, h, m, n = tensor.shape
            return tensor.reshape(b, h, m * n).transpose(0, 2, 1).reshape(b * m * n, h)
        b, h, m, n = self.image_shape
        return tensor.reshape(b, m * n, h).transpose(0, 2, 1).reshape(b, h, m, n)

    def forward(self, input_tensor):
        image = input_tensor.ndim == 4
        x = self.reformat(input_tensor) if image else input_tensor
        if self.testing_phase:
            mean, var = self.running_mean, self.running_var
        else:
            mean, var = x.mean(axis=0), x.var(axis=0)
            if self.running_mean is None:
                self.running_mean, self.running_var = mean, var
            else:
                self.running_mean = self.decay * self.running_mean + (1 - self.decay) * mean
                self.running_var = self.decay * self.running_var + (1 - self.decay) * var
        self.x, self.mean, self.var = x, mean, var
        self.normalized = (x - mean) / np.sqrt(var + self.eps)
        y = self.weights * self.normalized + self.bias
        return self.reformat(y) if image else y

    def backward(self, error_tensor):
        image = error_tensor.ndim == 4
        e = self.reformat(error_tensor) if image else error_tensor
        self.gradient_weights = np.sum(e * self.normalized, axis=0)
        self.gradient_bias = np.sum(e, axis=0)
        n = e.shape[0]
        d_normalized = e * self.weights
        inv_std = 1 / np.sqrt(self.var + self.eps)
        dx = inv_std / n * (n * d_normalized - d_normalized.sum(axis=0)
                            - self.normalized * np.sum(d_normalized * self.normalized, axis=0))
        if self._optimizer is not None:
            self.weights = self._optimizer.calculate_update(self.weights, self.gradient_weights)
            self.bias = self._bias_optimizer.calculate_update(self.bias, self.gradient_bias)
        return self.reformat(dx) if image else dx
