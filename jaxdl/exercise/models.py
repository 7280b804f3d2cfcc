"""The exercise's ``Models/LeNet.py``: `build` returns the modified LeNet network.

Adam(5e-4, 0.9, 0.999) with an L2 regularizer of 4e-4, He weights and Constant(0.1) biases,
CrossEntropyLoss; for (batch, 1, 28, 28) MNIST input:
Conv 6@5x5 "same" -> ReLU -> max-pool 2 -> Conv 16@5x5 "same" -> ReLU -> max-pool 2 -> Flatten
-> FC 784->120 -> ReLU -> FC 120->84 -> ReLU -> FC 84->10 -> SoftMax (the layers of
`jaxdl.models.lenet`).
"""

from __future__ import annotations

from jaxdl.exercise.constraints import L2_Regularizer
from jaxdl.exercise.initializers import Constant, He
from jaxdl.exercise.layers import Conv, Flatten, FullyConnected, Pooling, ReLU, SoftMax
from jaxdl.exercise.loss import CrossEntropyLoss
from jaxdl.exercise.network import NeuralNetwork
from jaxdl.exercise.optimizers import Adam

__all__ = ["build"]


def build() -> NeuralNetwork:
    """The exercise's LeNet as a `NeuralNetwork` (set its ``data_layer`` before training)."""
    optimizer = Adam(5e-4, 0.9, 0.999)
    optimizer.add_regularizer(L2_Regularizer(4e-4))
    net = NeuralNetwork(optimizer, He(), Constant(0.1))
    net.loss_layer = CrossEntropyLoss()
    for layer in (
        Conv((1, 1), (1, 5, 5), 6), ReLU(), Pooling((2, 2), (2, 2)),
        Conv((1, 1), (6, 5, 5), 16), ReLU(), Pooling((2, 2), (2, 2)),
        Flatten(),
        FullyConnected(16 * 7 * 7, 120), ReLU(),
        FullyConnected(120, 84), ReLU(),
        FullyConnected(84, 10), SoftMax(),
    ):
        net.append_layer(layer)
    return net
