import copy

import numpy as np

from Layers.Base import BaseLayer


class Conv(BaseLayer):
    def __init__(self, stride_shape, convolution_shape, num_kernels):
        super().__init__()
        self.trainable = True
        self.one_d = len(convolution_shape) == 2
        self.convolution_shape = tuple(convolution_shape)
        self.num_kernels = num_kernels
        stride = tuple(np.atleast_1d(stride_shape))
        self.stride = (stride[0], 1) if self.one_d else (stride[0], stride[-1])
        self.weights = np.random.uniform(0, 1, (num_kernels, *convolution_shape))
        self.bias = np.random.uniform(0, 1, num_kernels)
        self._optimizer = None
        self.gradient_weights = self.gradient_bias = None

    @property
    def optimizer(self):
        return self._optimizer

    @optimizer.setter
    def optimizer(self, optimizer):
        self._optimizer = optimizer
        self._bias_optimizer = copy.deepcopy(optimizer)

    def initialize(self, weights_initializer, bias_initializer):
        receptive = int(np.prod(self.convolution_shape[1:]))
        fan_in, fan_out = self.convolution_shape[0] * receptive, self.num_kernels * receptive
        self.weights = weights_initializer.initialize((self.num_kernels, *self.convolution_shape), fan_in, fan_out)
        self.bias = bias_initializer.initialize((self.num_kernels,), fan_in, fan_out)

    def _kernel(self):
        return self.weights[..., None] if self.one_d else self.weights

    def forward(self, input_tensor):
        x = input_tensor[..., None] if self.one_d else input_tensor
        kernel = self._kernel()
        m, n = kernel.shape[2:]
        self.spatial = x.shape[2:]
        self.padded = np.pad(x, ((0, 0), (0, 0), ((m - 1) // 2, m // 2), ((n - 1) // 2, n // 2)))
        h, w = self.spatial
        full = np.zeros((x.shape[0], self.num_kernels, h, w))
        for i in range(m):
            for j in range(n):
                full += np.einsum("bchw,kc->bkhw", self.padded[:, :, i:i + h, j:j + w], kernel[:, :, i, j])
        full += self.bias[None, :, None, None]
        out = full[:, :, ::self.stride[0], ::self.stride[1]]
        return out[..., 0] if self.one_d else out

    def backward(self, error_tensor):
        error = error_tensor[..., None] if self.one_d else error_tensor
        kernel = self._kernel()
        m, n = kernel.shape[2:]
        h, w = self.spatial
        full = np.zeros((error.shape[0], self.num_kernels, h, w))
        full[:, :, ::self.stride[0], ::self.stride[1]] = error
        d_padded = np.zeros_like(self.padded)
        gradient = np.zeros_like(kernel)
        for i in range(m):
            for j in range(n):
                d_padded[:, :, i:i + h, j:j + w] += np.einsum("bkhw,kc->bchw", full, kernel[:, :, i, j])
                gradient[:, :, i, j] = np.einsum("bkhw,bchw->kc", full, self.padded[:, :, i:i + h, j:j + w])
        self.gradient_weights = gradient[..., 0] if self.one_d else gradient
        self.gradient_bias = full.sum(axis=(0, 2, 3))
        dx = d_padded[:, :, (m - 1) // 2:(m - 1) // 2 + h, (n - 1) // 2:(n - 1) // 2 + w]
        if self._optimizer is not None:
            self.weights = self._optimizer.calculate_update(self.weights, self.gradient_weights)
            self.bias = self._bias_optimizer.calculate_update(self.bias, self.gradient_bias)
        return dx[..., 0] if self.one_d else dx
