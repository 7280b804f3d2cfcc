"""`NeuralNetwork`: a model, its loss and optimizer, and the training state in one object.

A convenience over the functional API: `train` runs `jaxdl.fit` (the one loop), `test` the
evaluation step. Research code that wants checkpoints, validation or resume calls `fit`.
"""

from __future__ import annotations

import itertools
from typing import Iterable

import jax
import jax.numpy as jnp

from jaxdl.training.callbacks import Callback, ProgressBar
from jaxdl.training.loop import TrainingDiverged, fit
from jaxdl.training.state import create_train_state
from jaxdl.training.step import make_predict, make_train_step


class _LossRecorder(Callback):
    """Appends every step's reported loss to a list."""

    columns = ()

    def __init__(self, losses: list):
        self.losses = losses

    def on_steps(self, epoch: int, metrics: list[dict]) -> None:
        self.losses.extend(entry["loss"] for entry in metrics)


class NeuralNetwork:
    """A model, its loss and optimizer, and the training state, in one object.

    Args:
        model: a layer, usually `Serial`.
        loss_fn: ``loss_fn(outputs, labels) -> scalar``.
        optimizer: a `jaxdl.Optimizer` (its regularizer's loss is added to the reported loss).
        input_shape: the input shape including the batch dimension (any batch size works later).
        seed: an int or a `jax.random` key for initialization and dropout.
        dtype: the parameters' dtype.
        mesh: train and test data-parallel on this mesh (`jaxdl.data_mesh`; see
            `jaxdl.make_train_step`): batch sizes must be multiples of its device count.

    Attributes:
        train_state: the current `TrainState` (params, state, opt_state, key, step).
        loss: one reported loss per training iteration (the exercise's ``loss`` list).

    Example:
        >>> net = NeuralNetwork(model, jaxdl.cross_entropy, jaxdl.Adam(1e-3), input_shape=(50, 4))
        >>> losses = net.train(batches, epochs=10)
        >>> probabilities = net.test(x_test)
    """

    def __init__(self, model, loss_fn, optimizer, *, input_shape, seed=0, dtype=jnp.float32,
                 mesh: jax.sharding.Mesh | None = None):
        self.model, self.loss_fn, self.optimizer, self.mesh = model, loss_fn, optimizer, mesh
        self.train_state = create_train_state(model, optimizer, seed, input_shape, dtype)
        self.loss: list[float] = []
        self._train_step = make_train_step(model, loss_fn, optimizer, mesh=mesh)  # the step `train` runs too
        self._predict = make_predict(model, mesh=mesh)

    @property
    def params(self):
        return self.train_state.params

    @property
    def state(self):
        return self.train_state.state

    def train_step(self, x, labels) -> float:
        """One optimizer step on one batch; returns the reported loss."""
        self.train_state, metrics = self._train_step(self.train_state, x, labels)
        loss = float(metrics["loss"])
        self.loss.append(loss)
        return loss

    def train(self, batches: Iterable, *, iterations: int | None = None, epochs: int | None = None,
              progress: bool = False) -> list[float]:
        """Trains on ``batches`` of (x, labels) for ``iterations`` steps or ``epochs`` passes.

        Runs `jaxdl.fit` (no validation, no checkpoints). For epochs, ``batches`` must be
        re-iterable (a list, an object whose ``__iter__`` starts a new pass, or one with
        ``epoch(epoch)``): a one-shot iterator is refused for more than one epoch. For
        iterations, ``batches`` is cycled (it must then be re-iterable too, unless it has at
        least ``iterations`` batches). Returns the reported losses of this call.

        Raises:
            ValueError: for bad arguments or data that cannot give the epochs asked for.
            TrainingDiverged: when the loss became NaN or infinite (the state is the last
                good one: before this call for ``iterations``, after the last finished epoch).
        """
        if (iterations is None) == (epochs is None):
            raise ValueError("NeuralNetwork.train: give exactly one of iterations= or epochs=.")
        if iterations is not None:
            _check_count("iterations", iterations)
            data, epochs = itertools.islice(_cycle(batches), iterations), 1
        else:
            _check_count("epochs", epochs)
            data = batches
        losses: list[float] = []
        callbacks = [_LossRecorder(losses), *([ProgressBar()] if progress else [])]
        result = fit(self._train_step, self.train_state, data, epochs=epochs, best_metric=None, callbacks=callbacks)
        self.train_state = result.train_state
        self.loss.extend(losses)
        if result.status != "completed":
            raise TrainingDiverged(f"NeuralNetwork.train: {result.message}")
        return losses

    def test(self, x) -> jax.Array:
        """The model's outputs on ``x`` in evaluation mode (running statistics, no dropout)."""
        return self._predict(self.train_state.params, self.train_state.state, x)


def _check_count(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"NeuralNetwork.train: {name} must be a positive int, got {value!r}.")


def _cycle(batches):
    """Cycles a re-iterable; a one-shot iterator is used once."""
    while True:
        empty = True
        for item in batches:
            empty = False
            yield item
        if empty:
            raise ValueError(
                "NeuralNetwork.train: the batch iterable yielded nothing (an exhausted iterator? "
                "pass a list or an object whose __iter__ starts a new pass).")
