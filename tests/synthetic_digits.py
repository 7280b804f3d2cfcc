"""Tiny MNIST-like data for recipe tests: a bright bar whose row is the label, on noise.

Learnable in a few steps, so the LeNet recipe's tests (tests/test_train_lenet.py,
test_precision.py, the multi-process worker) run in seconds without the real MNIST.
"""

import numpy as np

from jaxdl.datasets.mnist import MNISTSplits, Split


def tiny_split(count: int, seed: int) -> Split:
    """``count`` 28x28 uint8 images, labels 0..9 in turn; image i has a bar at rows 2+2y..3+2y."""
    rng = np.random.default_rng(seed)
    labels = (np.arange(count) % 10).astype(np.int32)
    images = rng.integers(0, 60, (count, 28, 28), dtype=np.uint8)
    for i, label in enumerate(labels):
        images[i, 2 + 2 * label:4 + 2 * label, 4:24] = 255
    return Split(images, labels)


def tiny_mnist(train: int = 48, validation: int = 20, test: int = 20) -> MNISTSplits:
    """Train, validation and test splits of `tiny_split` with seeds 0, 1, 2."""
    return MNISTSplits(tiny_split(train, 0), tiny_split(validation, 1), tiny_split(test, 2))
