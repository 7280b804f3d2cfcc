"""Ready-made models: the exercise's LeNet variant for MNIST, and rebuilding models from configs.

A model config is a small JSON-compatible dict ``{"name": "lenet", **keyword arguments}`` that
`build_model` turns back into the layer through the registry of model builders. Checkpoints
store it (see `jaxdl.checkpoint`), so a saved run can be rebuilt without pickling code. Your
own models join the registry with `register_model` (`registered_models` lists them).

Example:
    >>> import jax, jaxdl
    >>> config = jaxdl.models.model_config("lenet")
    >>> model = jaxdl.models.build_model(config)
    >>> params, state = model.init(jax.random.key(0), (8, *jaxdl.models.LENET_INPUT_SHAPE))
    >>> jaxdl.count_params(params)
    107786
"""

from __future__ import annotations

from typing import Any, Callable

from jaxdl.core import Layer, Serial
from jaxdl.initializers import Constant, He
from jaxdl.layers import Conv, Flatten, FullyConnected, Pooling, ReLU, SoftMax
from jaxdl.optimizers import Adam, Optimizer
from jaxdl.regularizers import L2Regularizer

#: The per-example input shape of `lenet`: (channels, y, x), the exercise's layout.
LENET_INPUT_SHAPE = (1, 28, 28)


def lenet(num_classes: int = 10, *, logits: bool = False) -> Serial:
    """The exercise's modified LeNet for 28x28 grey images, as one `Serial` layer.

    Conv(6, 5x5, "same") -> ReLU -> Pooling(2) -> Conv(16, 5x5, "same") -> ReLU -> Pooling(2)
    -> Flatten -> FullyConnected(120) -> ReLU -> FullyConnected(84) -> ReLU
    -> FullyConnected(num_classes) -> SoftMax.

    Layout: input (batch, 1, 28, 28) floats (the exercise scales pixels to [0, 1]); output
    (batch, num_classes) probabilities, or logits when ``logits=True``. Compared to LeCun's
    LeNet-5 (the exercise's "modified LeNet"): "same" padding keeps 28x28 and 14x14 maps, so
    the flattened features are 16*7*7 = 784; ReLU replaces tanh; SoftMax replaces the RBF
    output. 107,786 parameters for 10 classes.

    Initialization: He (Kaiming) normal weights, sigma = sqrt(2 / fan_in) with the
    exercise's fans, which keeps the activation variance constant through ReLU layers; zero
    biases.

    Args:
        num_classes: the number of output classes.
        logits: drop the final SoftMax, for training with `jaxdl.softmax_cross_entropy` (more
            stable than SoftMax + `jaxdl.cross_entropy`). Accuracy is the same either way
            (arg-max is unchanged by SoftMax).

    Returns:
        The model; initialize it with ``model.init(key, (batch, 1, 28, 28))``.
    """
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"lenet: num_classes must be an int >= 2, got {num_classes!r}.")
    he, zero = He(), Constant(0.0)

    def conv(kernels):
        return Conv(kernels, (5, 5), padding="same", weights_initializer=he, bias_initializer=zero)

    def dense(size):
        return FullyConnected(size, weights_initializer=he, bias_initializer=zero)

    layers = [
        conv(6), ReLU(), Pooling(2),
        conv(16), ReLU(), Pooling(2),
        Flatten(),
        dense(120), ReLU(),
        dense(84), ReLU(),
        dense(num_classes),
    ]
    if not logits:
        layers.append(SoftMax())
    return Serial(*layers)


def lenet_optimizer(learning_rate=5e-4, l2: float = 4e-4) -> Optimizer:
    """The exercise's LeNet optimizer: Adam with decoupled L2 weight shrinkage.

    Same as ``jaxdl.Adam(learning_rate, regularizer=jaxdl.L2Regularizer(l2))``: each step
    applies Adam to the data gradient and shrinks the weights (not the biases) by
    ``learning_rate * l2 * w`` (see `jaxdl.regularizers`).

    Args:
        learning_rate: a float (the exercise's 5e-4) or an optax schedule of the step count.
        l2: the L2 strength alpha (the exercise's 4e-4); 0 disables the regularizer.
    """
    regularizer = L2Regularizer(l2) if l2 else None
    return Adam(learning_rate, regularizer=regularizer)


#: The model builders `build_model` knows, by config name (extend it with `register_model`).
MODELS: dict[str, Callable[..., Layer]] = {"lenet": lenet}


def register_model(name: str, builder: Callable[..., Layer], *, replace: bool = False) -> None:
    """Makes ``builder`` the model that `build_model` builds for configs named ``name``.

    Args:
        name: the config name (``{"name": name, **kwargs}``).
        builder: a function of the config's other entries (JSON values, as keyword arguments)
            that returns the model, a `jaxdl.Layer`.
        replace: allow replacing a builder registered under ``name`` before.

    Raises:
        TypeError: for a ``name`` that is not a str or a ``builder`` that is not callable.
        ValueError: for an empty name, or a name registered already (without ``replace``).

    Example:
        >>> def mlp(hidden=32, classes=10):
        ...     return jaxdl.Serial(jaxdl.Flatten(), jaxdl.FullyConnected(hidden), jaxdl.ReLU(),
        ...                         jaxdl.FullyConnected(classes))
        >>> jaxdl.models.register_model("mlp", mlp)
        >>> model = jaxdl.models.build_model({"name": "mlp", "hidden": 16})
    """
    if not isinstance(name, str):
        raise TypeError(f"register_model: name must be a str, got {name!r} (type {type(name).__name__}).")
    if not name:
        raise ValueError("register_model: name must be a non-empty str, got ''.")
    if not callable(builder):
        raise TypeError(f"register_model: builder must be callable (kwargs -> jaxdl Layer), got {builder!r}.")
    if name in MODELS and not replace and MODELS[name] is not builder:
        raise ValueError(f"register_model: a model named {name!r} is registered already ({MODELS[name]!r}); pass "
                         f"replace=True to replace it.")
    MODELS[name] = builder


def registered_models() -> tuple[str, ...]:
    """The names `build_model` knows, sorted."""
    return tuple(sorted(MODELS))


def model_config(name: str = "lenet", **kwargs: Any) -> dict:
    """A JSON-compatible config ``{"name": name, **kwargs}``; checks that it builds."""
    config = {"name": name, **kwargs}
    build_model(config)
    return config


def build_model(config: dict) -> Layer:
    """Rebuilds the model described by ``config`` (from `model_config` or a checkpoint).

    Args:
        config: ``{"name": name, **keyword arguments}``, ``name`` one of `registered_models`.

    Returns:
        The builder's model.

    Raises:
        ValueError: for an unknown model name (listing the registered ones), arguments the
            builder rejects, or a builder that does not return a jaxdl layer.
    """
    if not isinstance(config, dict) or "name" not in config:
        raise ValueError(f"build_model: expected a dict with a 'name' entry, got {config!r}.")
    kwargs = dict(config)
    name = kwargs.pop("name")
    if name not in MODELS:
        raise ValueError(f"build_model: unknown model {name!r}; registered models: {list(registered_models())} "
                         f"(add yours with jaxdl.models.register_model(name, builder)).")
    try:
        model = MODELS[name](**kwargs)
    except TypeError as error:
        raise ValueError(f"build_model: invalid arguments for {name!r}: {kwargs!r} ({error}).") from error
    if not isinstance(model, Layer):
        raise ValueError(f"build_model: the builder of {name!r} must return a jaxdl Layer, got "
                         f"{type(model).__name__}.")
    return model
