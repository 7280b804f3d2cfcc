"""Iris and digits from scikit-learn's bundled copies, split as the exercise's Helpers do."""

import numpy as np
from sklearn.datasets import load_digits, load_iris


def _split(x, labels, train_fraction, seed):
    x = x / np.abs(x).max()
    one_hot = np.eye(labels.max() + 1)[labels]
    order = np.random.default_rng(seed).permutation(len(x))
    cut = int(len(x) * train_fraction)
    return (x[order[:cut]], one_hot[order[:cut]]), (x[order[cut:]], one_hot[order[cut:]])


def iris(seed=0):
    """((100, 4) train, (100, 3) one-hot), ((50, 4), (50, 3)) test, features / max |x|."""
    data = load_iris()
    return _split(data.data, data.target, 2 / 3, seed)


def digits(seed=0):
    """((1198, 1, 8, 8), one-hot) train and (599, ...) test, pixels / max."""
    data = load_digits()
    return _split(data.data.reshape(-1, 1, 8, 8), data.target, 2 / 3, seed)


def batches(x, labels, batch_size, seed=0):
    """An endless stream of batches from a fresh permutation each pass (topped up to full size)."""
    rng = np.random.default_rng(seed)
    while True:
        order = rng.permutation(len(x))
        if len(order) % batch_size:
            order = np.concatenate([order, order[: batch_size - len(order) % batch_size]])
        for start in range(0, len(order), batch_size):
            index = order[start:start + batch_size]
            yield x[index], labels[index]
