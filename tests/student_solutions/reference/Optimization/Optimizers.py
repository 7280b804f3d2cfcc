import numpy as np


class Optimizer:
    def __init__(self):
        self.regularizer = None

    def add_regularizer(self, regularizer):
        self.regularizer = regularizer

    def _shrunk(self, weight_tensor):
        if self.regularizer is None:
            return weight_tensor
        return weight_tensor - self.learning_rate * self.regularizer.calculate_gradient(weight_tensor)


class Sgd(Optimizer):
    def __init__(self, learning_rate):
        super().__init__()
        self.learning_rate = learning_rate

    def calculate_update(self, weight_tensor, gradient_tensor):
        return self._shrunk(weight_tensor) - self.learning_rate * gradient_tensor


class SgdWithMomentum(Optimizer):
    def __init__(self, learning_rate, momentum_rate):
        super().__init__()
        self.learning_rate, self.momentum_rate = learning_rate, momentum_rate
        self.velocity = 0.0

    def calculate_update(self, weight_tensor, gradient_tensor):
        self.velocity = self.momentum_rate * self.velocity - self.learning_rate * gradient_tensor
        return self._shrunk(weight_tensor) + self.velocity


class Adam(Optimizer):
    def __init__(self, learning_rate, mu, rho):
        super().__init__()
        self.learning_rate, self.mu, self.rho = learning_rate, mu, rho
        self.v = self.r = 0.0
        self.k = 0

    def calculate_update(self, weight_tensor, gradient_tensor):
        self.k += 1
        self.v = self.mu * self.v + (1 - self.mu) * gradient_tensor
        self.r = self.rho * self.r + (1 - self.rho) * gradient_tensor ** 2
        v_hat = self.v / (1 - self.mu ** self.k)
        r_hat = self.r / (1 - self.rho ** self.k)
        return self._shrunk(weight_tensor) - self.learning_rate * v_hat / (np.sqrt(r_hat) + 1e-8)
