"""Pure training functions and the convenience `NeuralNetwork`.

Research code uses the functions::

    train_state = jaxdl.create_train_state(model, optimizer, jax.random.key(0), (128, 1, 28, 28))
    train_step = jaxdl.make_train_step(model, jaxdl.cross_entropy, optimizer)
    for x, y in batches:
        train_state, metrics = train_step(train_state, x, y)   # jitted, traced once per shape
    predict = jaxdl.make_predict(model)
    probabilities = predict(train_state.params, train_state.state, x_test)

`NeuralNetwork` wraps the same functions with the state held in one object.
"""

from __future__ import annotations

import itertools
from typing import Any, Callable, Iterable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxdl.losses import correct_predictions
from jaxdl.optimizers import regularization_loss


class TrainState(NamedTuple):
    """Everything a training run carries from step to step (a pytree).

    Attributes:
        params: the trainable parameters.
        state: the layers' non-trainable state (batch-norm statistics, memorized states).
        opt_state: the optimizer's state.
        key: the `jax.random` key the next step splits for dropout.
        step: the number of steps taken (int32 scalar).
    """

    params: Any
    state: Any
    opt_state: Any
    key: jax.Array
    step: jax.Array


def create_train_state(model, optimizer, key, input_shape, dtype=jnp.float32) -> TrainState:
    """Initializes ``model`` for ``input_shape`` and ``optimizer`` for its params.

    The initialization runs as one compiled program (eagerly, every initializer call would
    compile on its own: seconds for LeNet on a CPU).
    """
    init_key, train_key = jax.random.split(key)
    init = jax.jit(model.init, static_argnums=(1, 2))
    params, state = init(init_key, tuple(input_shape), jnp.dtype(dtype))
    return TrainState(params, state, optimizer.init(params), train_key, jnp.zeros((), jnp.int32))


def make_train_step(model, loss_fn: Callable, optimizer, *, penalty=None, jit: bool = True):
    """Builds ``step(train_state, x, labels) -> (train_state, metrics)``.

    The step differentiates ``loss_fn(model output, labels)`` (plus ``penalty.norm(params)``
    if a penalty regularizer is given) with `jax.value_and_grad`, the layers' new state as
    aux, and applies ``optimizer``. ``metrics`` holds ``loss`` (data loss + regularization
    loss of the optimizer's regularizer + penalty, all at the params before the update, as the
    exercise's network reports it), ``data_loss`` and ``regularization_loss``.

    Args:
        model: a layer (usually `Serial`).
        loss_fn: ``loss_fn(outputs, labels) -> scalar``, e.g. `jaxdl.cross_entropy`.
        optimizer: a `jaxdl.Optimizer` or any optax gradient transformation.
        penalty: a regularizer whose norm is added to the differentiated loss.
        jit: compile the step with `jax.jit` (one trace per input shape and dtype).
    """

    def step(train_state: TrainState, x, labels):
        key, step_key = jax.random.split(train_state.key)

        def objective(params):
            outputs, new_state = model.apply(params, train_state.state, x, key=step_key, train=True)
            data_loss = loss_fn(outputs, labels)
            total = data_loss if penalty is None else data_loss + penalty.norm(params)
            return total, (new_state, data_loss)

        (objective_value, (new_state, data_loss)), grads = jax.value_and_grad(objective, has_aux=True)(
            train_state.params)
        decoupled = regularization_loss(optimizer, train_state.params)
        updates, opt_state = optimizer.update(grads, train_state.opt_state, train_state.params)
        params = optax.apply_updates(train_state.params, updates)
        metrics = {
            "loss": objective_value + decoupled,
            "data_loss": data_loss,
            "regularization_loss": objective_value - data_loss + decoupled,
        }
        return TrainState(params, new_state, opt_state, key, train_state.step + 1), metrics

    return jax.jit(step) if jit else step


def make_predict(model, *, jit: bool = True):
    """Builds ``predict(params, state, x) -> outputs`` in evaluation mode (no key, no state change)."""

    def predict(params, state, x):
        return model.apply(params, state, x, train=False)[0]

    return jax.jit(predict) if jit else predict


def evaluate(predict, params, state, batches: Iterable, loss_fn: Callable | None = None) -> dict:
    """Mean loss per example and accuracy of ``predict`` over ``batches`` of (x, labels).

    Args:
        predict: from `make_predict`.
        params, state: the model's params and state.
        batches: an iterable of (x, labels) with one-hot or integer labels.
        loss_fn: optional; a summed loss (the default reduction), averaged per example here.

    Returns:
        ``{"accuracy": float, "loss": float or None, "count": int}``.
    """
    correct, total_loss, count = 0, 0.0, 0
    for x, labels in batches:
        outputs = predict(params, state, x)
        n = int(outputs.shape[0])
        correct += int(jnp.sum(correct_predictions(outputs, labels)))
        if loss_fn is not None:
            total_loss += float(loss_fn(outputs, labels))
        count += n
    if count == 0:
        raise ValueError("evaluate: batches was empty.")
    return {"accuracy": correct / count, "loss": total_loss / count if loss_fn else None, "count": count}


class NeuralNetwork:
    """A model, its loss and optimizer, and the training state, in one object.

    Args:
        model: a layer, usually `Serial`.
        loss_fn: ``loss_fn(outputs, labels) -> scalar``.
        optimizer: a `jaxdl.Optimizer` (its regularizer's loss is added to the reported loss).
        input_shape: the input shape including the batch dimension (any batch size works later).
        seed: an int or a `jax.random` key for initialization and dropout.
        dtype: the parameters' dtype.

    Attributes:
        train_state: the current `TrainState` (params, state, opt_state, key, step).
        loss: one reported loss per training iteration (the exercise's ``loss`` list).

    Example:
        >>> net = NeuralNetwork(model, jaxdl.cross_entropy, jaxdl.Adam(1e-3), input_shape=(50, 4))
        >>> history = net.train(batches, epochs=10)
        >>> probabilities = net.test(x_test)
    """

    def __init__(self, model, loss_fn, optimizer, *, input_shape, seed=0, dtype=jnp.float32):
        key = jax.random.key(seed) if isinstance(seed, int) else seed
        self.model, self.loss_fn, self.optimizer = model, loss_fn, optimizer
        self.train_state = create_train_state(model, optimizer, key, input_shape, dtype)
        self.loss: list[float] = []
        self._train_step = make_train_step(model, loss_fn, optimizer)
        self._predict = make_predict(model)

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

        ``batches`` must be re-iterable (a list, or an object whose ``__iter__`` starts a new
        pass) for epochs, or for iterations beyond one pass. Returns the losses of this call.
        """
        if (iterations is None) == (epochs is None):
            raise ValueError("NeuralNetwork.train: give exactly one of iterations= or epochs=.")
        if epochs is not None:
            stream = itertools.chain.from_iterable(iter(batches) for _ in range(epochs))
            total = None
        else:
            stream = itertools.islice(_cycle(batches), iterations)
            total = iterations
        if progress:
            from tqdm.auto import tqdm
            stream = tqdm(stream, total=total, unit="batch")
        losses = []
        for x, labels in stream:
            losses.append(self.train_step(x, labels))
            if progress:
                stream.set_postfix(loss=f"{losses[-1]:.4f}")
        return losses

    def test(self, x) -> jax.Array:
        """The model's outputs on ``x`` in evaluation mode (running statistics, no dropout)."""
        return self._predict(self.train_state.params, self.train_state.state, x)


def _cycle(batches):
    while True:
        empty = True
        for item in batches:
            empty = False
            yield item
        if empty:
            raise ValueError(
                "NeuralNetwork.train: the batch iterable yielded nothing (an exhausted iterator? "
                "pass a list or an object whose __iter__ starts a new pass).")
