"""jaxdl's own stand-in for the course's ``Layers/Helpers.py`` (Exercise 3 edition).

Written from the behaviour described in the course material (gradient checks with central
differences, data sets, accuracy) so jaxdl's tests can run the course's checks without the
course's file. The exercise tests copy it into a scaffolded directory as ``Layers/Helpers.py``.
Students use the course's own Helpers.py instead.
"""

import gzip
import os
import random
import struct

import numpy as np
from sklearn.datasets import load_digits, load_iris


def _reseed(seed):
    if seed is not None:
        np.random.seed(seed)
        random.seed(seed)


def _relative_error(analytical, numerical):
    normalizing = max(abs(analytical), abs(numerical))
    if normalizing < 1e-15:
        return 0.0
    return abs(analytical - numerical) / normalizing


def _loss(layers, input_tensor, label_tensor, seed):
    activation = input_tensor.copy()
    for layer in layers[:-1]:
        _reseed(seed)
        activation = layer.forward(activation)
    return layers[-1].forward(activation, label_tensor)


def gradient_check(layers, input_tensor, label_tensor, seed=None):
    """Relative error of the analytic input gradient against central differences (eps 1e-5).

    ``layers[-1]`` is the loss. With ``seed``, NumPy's and Python's generators are reseeded
    before every layer forward, so random masks repeat.
    """
    epsilon = 1e-5
    difference = np.zeros_like(input_tensor)

    _loss(layers, input_tensor, label_tensor, seed)
    error_tensor = layers[-1].backward(label_tensor)
    for layer in reversed(layers[:-1]):
        error_tensor = layer.backward(error_tensor)

    it = np.nditer(input_tensor, flags=["multi_index"])
    while not it.finished:
        index = it.multi_index
        plus, minus = input_tensor.copy(), input_tensor.copy()
        plus[index] += epsilon
        minus[index] -= epsilon
        # Layer by layer, the plus input and then the minus input (as the course's helper
        # does): a layer sees the two perturbed inputs alternately, not one whole pass each.
        for layer in layers[:-1]:
            _reseed(seed)
            plus = layer.forward(plus)
            _reseed(seed)
            minus = layer.forward(minus)
        numerical = (layers[-1].forward(plus, label_tensor) - layers[-1].forward(minus, label_tensor)) / (2 * epsilon)
        difference[index] = _relative_error(error_tensor[index], numerical)
        it.iternext()
    return difference


def gradient_check_weights(layers, input_tensor, label_tensor, bias):
    """Like `gradient_check` for ``layers[0].bias`` (bias=True) or ``layers[0].weights``."""
    epsilon = 1e-5
    weights = layers[0].bias if bias else layers[0].weights
    difference = np.zeros_like(weights)

    it = np.nditer(weights, flags=["multi_index"])
    while not it.finished:
        index = it.multi_index
        plus, minus = weights.copy(), weights.copy()
        plus[index] += epsilon
        minus[index] -= epsilon

        def assign(value):
            if bias:
                layers[0].bias = value
            else:
                layers[0].weights = value

        assign(weights)
        _loss(layers, input_tensor, label_tensor, None)
        error_tensor = layers[-1].backward(label_tensor)
        for layer in reversed(layers[:-1]):
            error_tensor = layer.backward(error_tensor)
        gradient = layers[0].gradient_bias if bias else layers[0].gradient_weights
        analytical = gradient[index]

        assign(plus)
        upper = _loss(layers, input_tensor, label_tensor, None)
        assign(minus)
        lower = _loss(layers, input_tensor, label_tensor, None)
        difference[index] = _relative_error(analytical, (upper - lower) / (2 * epsilon))
        it.iternext()
    assign(weights)
    return difference


def compute_bn_gradients(error_tensor, input_tensor, weights, mean, var, eps=np.finfo(float).eps):
    """Batch-norm input gradient for (batch, channels) tensors, from batch mean and variance."""
    if eps > 1e-10:
        raise ArithmeticError("Epsilon must be lower than 1e-10. Make sure to use np.finfo(float).eps")
    norm_mean = input_tensor - mean
    var_eps = var + eps
    gamma_err = error_tensor * weights
    inv_batch = 1.0 / error_tensor.shape[0]
    grad_var = np.sum(norm_mean * gamma_err * -0.5 * var_eps ** -1.5, axis=0, keepdims=True)
    sqrt_var = np.sqrt(var_eps)
    first = gamma_err / sqrt_var
    grad_mu_two = (grad_var * np.sum(-2.0 * norm_mean, axis=0, keepdims=True)) * inv_batch
    grad_mu_one = np.sum(gamma_err * -1.0 / sqrt_var, axis=0, keepdims=True)
    second = grad_var * (2.0 * norm_mean) * inv_batch
    grad_mu = grad_mu_two + grad_mu_one
    return first + second + inv_batch * grad_mu


def calculate_accuracy(results, labels):
    """Fraction of rows whose arg-max is the one-hot label's class."""
    results = np.asarray(results)
    index_maximum = np.argmax(results, axis=1)
    one_hot = np.zeros_like(results)
    one_hot[np.arange(results.shape[0]), index_maximum] = 1
    correct = np.sum(np.logical_and(one_hot == 1, np.asarray(labels) == 1))
    return correct / results.shape[0]


def shuffle_data(input_tensor, label_tensor):
    """The rows of both permuted alike (Python's random.shuffle)."""
    index_shuffling = list(range(input_tensor.shape[0]))
    random.shuffle(index_shuffling)
    return input_tensor[index_shuffling], label_tensor[index_shuffling]


def _one_hot(classes, categories):
    one_hot = np.zeros((len(classes), categories))
    one_hot[np.arange(len(classes)), classes] = 1
    return one_hot


class RandomData:
    """Uniform random inputs with random one-hot labels."""

    def __init__(self, input_size, batch_size, categories):
        self.input_size, self.batch_size, self.categories = input_size, batch_size, categories
        self.label_tensor = np.zeros([self.batch_size, self.categories])

    def next(self):
        input_tensor = np.random.random([self.batch_size, self.input_size])
        self.label_tensor = _one_hot(np.random.randint(0, self.categories, self.batch_size), self.categories)
        return input_tensor, self.label_tensor


def _batches(count, batch_size, shuffle, fill_last):
    while True:
        order = np.random.permutation(count) if shuffle else np.arange(count)
        for start in range(0, count, batch_size):
            index = order[start:start + batch_size]
            if fill_last and len(index) < batch_size:
                index = np.concatenate([index, order[:batch_size - len(index)]])
            yield index


class IrisData:
    """Iris (150 x 4) scaled by the global max, one-hot labels; 100 train / 50 test rows."""

    def __init__(self, batch_size, random=True):
        self.batch_size, self.random = batch_size, random
        data = load_iris()
        self._label_tensor = _one_hot(data.target, 3)
        self._input_tensor = data.data / np.abs(data.data).max()
        self.split = int(self._input_tensor.shape[0] * (2 / 3))
        self._input_tensor, self._label_tensor = shuffle_data(self._input_tensor, self._label_tensor)
        self._input_tensor_train = self._input_tensor[:self.split, :]
        self._label_tensor_train = self._label_tensor[:self.split, :]
        self._input_tensor_test = self._input_tensor[self.split:, :]
        self._label_tensor_test = self._label_tensor[self.split:, :]
        self._current_forward_idx_iterator = _batches(self.split, batch_size, random, False)

    def next(self):
        index = next(self._current_forward_idx_iterator)
        return self._input_tensor_train[index], self._label_tensor_train[index]

    def get_test_set(self):
        return self._input_tensor_test, self._label_tensor_test


class DigitData:
    """sklearn digits as (N, 1, 8, 8) scaled by the global max; 1198 train / 599 test rows."""

    def __init__(self, batch_size):
        self.batch_size = batch_size
        data = load_digits(n_class=10)
        self._input_tensor = data.data.reshape(-1, 1, 8, 8)
        self._input_tensor = self._input_tensor / np.abs(self._input_tensor).max()
        self._label_tensor = _one_hot(data.target, 10)
        self._input_tensor, self._label_tensor = shuffle_data(self._input_tensor, self._label_tensor)
        self.split = int(self._input_tensor.shape[0] * (2 / 3))
        self._input_tensor_train = self._input_tensor[:self.split]
        self._label_tensor_train = self._label_tensor[:self.split]
        self._input_tensor_test = self._input_tensor[self.split:]
        self._label_tensor_test = self._label_tensor[self.split:]
        self._current_forward_idx_iterator = _batches(self.split, batch_size, True, True)

    def next(self):
        index = next(self._current_forward_idx_iterator)
        return self._input_tensor_train[index], self._label_tensor_train[index]

    def get_test_set(self):
        return self._input_tensor_test, self._label_tensor_test


class MNISTData:
    """MNIST from ``<this file's dir>/../Data/*.gz``: images (N, 1, 28, 28) in [0, 1], one-hot labels."""

    def __init__(self, batch_size):
        self.batch_size = batch_size
        self.train, self.labels = self._read()
        self.test, self.testLabels = self._read(dataset="testing")
        self._batches = self._epochs()

    def _epochs(self):
        count = self.train.shape[0] // self.batch_size
        while True:
            order = np.random.permutation(self.train.shape[0])
            for i in range(count):
                index = order[i * self.batch_size:(i + 1) * self.batch_size]
                yield self.train[index], self.labels[index]

    def next(self):
        return next(self._batches)

    def get_test_set(self):
        return self.test, self.testLabels

    def show_random_training_image(self):
        self.show_image(np.random.randint(self.train.shape[0]), test=False)

    def show_image(self, index, test=True):
        import matplotlib.pyplot as plt
        image = (self.test if test else self.train)[index, 0]
        plt.imshow(image, cmap="gray")
        plt.show()

    @staticmethod
    def _read(dataset="training"):
        root = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "Data")
        prefix = "train" if dataset == "training" else "t10k"
        with gzip.open(os.path.join(root, f"{prefix}-labels-idx1-ubyte.gz"), "rb") as f:
            _, count = struct.unpack(">II", f.read(8))
            classes = np.frombuffer(f.read(count), dtype=np.uint8).astype(np.int64)
        with gzip.open(os.path.join(root, f"{prefix}-images-idx3-ubyte.gz"), "rb") as f:
            _, count, rows, cols = struct.unpack(">IIII", f.read(16))
            images = np.frombuffer(f.read(count * rows * cols), dtype=np.uint8)
        images = images.reshape(count, 1, rows, cols).astype(np.float64) / 255.0
        return images, _one_hot(classes, 10)


__all__ = [
    "gradient_check", "gradient_check_weights", "compute_bn_gradients", "calculate_accuracy",
    "shuffle_data", "RandomData", "IrisData", "DigitData", "MNISTData",
]
