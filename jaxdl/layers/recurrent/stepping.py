"""One time step of a whole model: sampling from a recurrent model step by step.

`initial_carry(model, params, batch)` and `step(model, params, state, carry, x_t)` extend the
recurrent layers' own `initial_carry`/`step` (`RNN`, `LSTM`, `GRU`, `Stacked`) to a `Serial`
model: the carry holds one entry per recurrent layer (keyed as its params), and every other
layer is applied in evaluation mode to the step's input (``x_t`` of shape (batch, ...) without
the time axis: a `FullyConnected` or `Embedding` works on it as on a whole sequence). Each
other layer's state (batch-norm statistics) is read, never updated. The carry's batch is the
caller's, independent of the batch the model was trained with, so a model trained at batch 64
samples at batch 1 from ``initial_carry(model, params, 1)``.
"""

from __future__ import annotations

from jaxdl.core import Layer, Serial
from jaxdl.validation import positive_int


def _steps(layer: Layer) -> bool:
    return callable(getattr(layer, "step", None)) and callable(getattr(layer, "initial_carry", None))


def _holds_recurrence(layer: Layer) -> bool:
    return _steps(layer) or any(_holds_recurrence(child) for child in layer.sublayers().values())


def _check_model(where: str, model) -> None:
    if not isinstance(model, Layer):
        raise TypeError(f"{where}: model must be a jaxdl Layer, got {model!r} of type {type(model).__name__}.")


def initial_carry(model: Layer, params, batch: int) -> dict:
    """The zero carry of `step` for ``batch`` sequences.

    Args:
        model: a recurrent layer (`RNN`, `LSTM`, `GRU`, `Stacked`) or a `Serial` holding such
            layers directly.
        params: the model's params (only read for their dtype and keys).
        batch: the number of sequences stepped together.

    Returns:
        The layer's own carry, or for a `Serial` ``{key: carry}`` for each recurrent layer.

    Raises:
        TypeError, ValueError: for a ``batch`` that is not an int >= 1, or a model that cannot
            step (see `step`).
    """
    _check_model("initial_carry", model)
    batch = positive_int("initial_carry", "batch", batch)
    if _steps(model):
        return model.initial_carry(params, batch)
    _check_steppable_serial("initial_carry", model)
    return {name: layer.initial_carry(params.get(name, {}), batch)
            for name, layer in model.sublayers().items() if _steps(layer)}


def step(model: Layer, params, state, carry, x_t):
    """Runs ``model`` for one time step: ``(y_t, new_carry)``.

    Stepping through x_0, ..., x_{T-1} equals applying the model to the whole sequence
    (evaluation mode) from the same recurrent state.

    Args:
        model: as for `initial_carry`.
        params: the model's params.
        state: the model's state (read by non-recurrent layers, e.g. batch-norm statistics;
            ``{}`` for none). A memorized recurrent state in it is ignored: the carry is the
            recurrent state.
        carry: from `initial_carry` or a previous step.
        x_t: one step of the input, (batch, ...) without the time axis.

    Returns:
        ``(y_t, new_carry)``.

    Raises:
        ValueError: for a model whose recurrent layers sit inside another composite than a
            `Serial` (a `Residual`, a `Bidirectional`), which cannot run step by step.
    """
    _check_model("step", model)
    if _steps(model):
        return model.step(params, carry, x_t)
    _check_steppable_serial("step", model)
    new_carry = {}
    for name, layer in model.sublayers().items():
        if _steps(layer):
            x_t, new_carry[name] = layer.step(params.get(name, {}), carry[name], x_t)
        else:
            x_t, _ = layer.apply(params.get(name, {}), state.get(name, {}), x_t, train=False)
    return x_t, new_carry


def _check_steppable_serial(where: str, model: Layer) -> None:
    if not isinstance(model, Serial):
        raise ValueError(
            f"{where}: model must be a recurrent layer (RNN, LSTM, GRU, Stacked) or a Serial of layers, got "
            f"{model!r}.")
    for name, layer in model.sublayers().items():
        if not _steps(layer) and _holds_recurrence(layer):
            raise ValueError(
                f"{where}: the layer at {name!r} ({type(layer).__name__}) holds a recurrent layer but cannot run one "
                f"step at a time; only RNN, LSTM, GRU and Stacked layers placed directly in the Serial can.")
