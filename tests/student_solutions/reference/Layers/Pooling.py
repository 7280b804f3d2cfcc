import numpy as np

from Layers.Base import BaseLayer


class Pooling(BaseLayer):
    def __init__(self, stride_shape, pooling_shape):
        super().__init__()
        self.stride_shape, self.pooling_shape = tuple(stride_shape), tuple(pooling_shape)

    def forward(self, input_tensor):
        self.input_shape = input_tensor.shape
        (sy, sx), (py, px) = self.stride_shape, self.pooling_shape
        b, c, h, w = input_tensor.shape
        oh, ow = (h - py) // sy + 1, (w - px) // sx + 1
        out = np.zeros((b, c, oh, ow))
        self.argmax = np.zeros((b, c, oh, ow, 2), dtype=int)
        for y in range(oh):
            for x in range(ow):
                window = input_tensor[:, :, y * sy:y * sy + py, x * sx:x * sx + px].reshape(b, c, -1)
                flat = window.argmax(axis=2)
                out[:, :, y, x] = window.max(axis=2)
                self.argmax[:, :, y, x, 0] = y * sy + flat // px
                self.argmax[:, :, y, x, 1] = x * sx + flat % px
        return out

    def backward(self, error_tensor):
        dx = np.zeros(self.input_shape)
        b, c, oh, ow = error_tensor.shape
        for i in range(b):
            for k in range(c):
                for y in range(oh):
                    for x in range(ow):
                        r, s = self.argmax[i, k, y, x]
                        dx[i, k, r, s] += error_tensor[i, k, y, x]
        return dx
