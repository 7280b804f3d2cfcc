"""jaxdl.exercise: the FAU exercise's object API as a thin facade over the functional core.

Importing this package turns on 64-bit floats in JAX
(``jax.config.update("jax_enable_x64", True)``), because the exercise computes in NumPy
float64 and its gradient checks need that precision. This is process-wide: the rest of
jaxdl keeps its explicit dtypes (float32 by default), but new jax arrays from Python floats
become float64. That is why ``import jaxdl`` does not import this package.

The classes have the exercise's names, constructors, members and conventions
(``forward``/``backward`` on NumPy arrays, ``weights``/``gradient_weights`` properties,
``calculate_update``, ``testing_phase``), and delegate every computation to the core:
a layer's forward is the core layer's jitted ``apply`` under `jax.vjp`, backward applies the
stored VJP, optimizers are the core optax optimizers with their state held per object, and
`NeuralNetwork.train` runs each iteration through the core training step
(`jaxdl.training.make_train_step`) with the layers' functions composed into one model.

Modules (each mirrors one file of the exercise):

* `jaxdl.exercise.layers`: BaseLayer, FullyConnected, ReLU, SoftMax, Flatten, TanH,
  Sigmoid, Conv, Pooling, Dropout, BatchNormalization, RNN, LSTM.
* `jaxdl.exercise.initializers`: Constant, UniformRandom, Xavier, He.
* `jaxdl.exercise.optimizers`: Optimizer, Sgd, SgdWithMomentum, Adam.
* `jaxdl.exercise.constraints`: L1_Regularizer, L2_Regularizer.
* `jaxdl.exercise.loss`: CrossEntropyLoss.
* `jaxdl.exercise.network`: NeuralNetwork, save, load. `jaxdl.exercise.models`: build (LeNet).
* ``python -m jaxdl.exercise scaffold DIR`` writes the exercise's directory layout as
  re-export modules, so the course's ``NeuralNetworkTests.py`` runs unchanged
  (`jaxdl.exercise.scaffold`).

Conventions said out loud: Dropout's ``probability`` is the fraction KEPT;
FullyConnected's ``weights`` is (input_size + 1, output_size) with the bias as last row;
the regularizer shrinks every tensor an optimizer updates (biases included, as in the
exercise).

Example:
    >>> import numpy as np
    >>> from jaxdl.exercise import FullyConnected, Sgd
    >>> layer = FullyConnected(4, 3)
    >>> layer.optimizer = Sgd(1e-2)
    >>> y = layer.forward(np.random.rand(9, 4))
    >>> error = layer.backward(np.ones_like(y))   # (9, 4); the weights took one step
"""

import jax

jax.config.update("jax_enable_x64", True)

from jaxdl.exercise.base import Phase  # noqa: E402
from jaxdl.exercise.constraints import L1_Regularizer, L2_Regularizer  # noqa: E402
from jaxdl.exercise.initializers import Constant, He, UniformRandom, Xavier  # noqa: E402
from jaxdl.exercise.layers import (  # noqa: E402
    LSTM, RNN, BaseLayer, BatchNormalization, Conv, Dropout, Flatten, FullyConnected, Pooling,
    ReLU, Sigmoid, SoftMax, TanH,
)
from jaxdl.exercise.loss import CrossEntropyLoss  # noqa: E402
from jaxdl.exercise.network import NeuralNetwork, load, save  # noqa: E402
from jaxdl.exercise.optimizers import Adam, Optimizer, Sgd, SgdWithMomentum  # noqa: E402

__all__ = [
    "BaseLayer", "FullyConnected", "ReLU", "SoftMax", "Flatten", "TanH", "Sigmoid", "Conv",
    "Pooling", "Dropout", "BatchNormalization", "RNN", "LSTM",
    "Constant", "UniformRandom", "Xavier", "He",
    "Optimizer", "Sgd", "SgdWithMomentum", "Adam",
    "L1_Regularizer", "L2_Regularizer", "CrossEntropyLoss",
    "NeuralNetwork", "save", "load", "Phase",
]
