import numpy as np

from Layers.Base import BaseLayer


class SoftMax(BaseLayer):
    def forward(self, input_tensor):
        shifted = np.exp(input_tensor - np.max(input_tensor, axis=1, keepdims=True))
        self.output = shifted / np.sum(shifted, axis=1, keepdims=True)
        return self.output

    def backward(self, error_tensor):
        return self.output * (error_tensor - np.sum(error_tensor * self.output, axis=1, keepdims=True))
