"""`Stacked`: recurrent layers applied one after the other (PyTorch's ``num_layers``)."""

from __future__ import annotations

import dataclasses
from typing import Mapping

import jax
import jax.numpy as jnp

from jaxdl.core import Layer, apply_shape
from jaxdl.layers.recurrent.bidirectional import Bidirectional, pytorch_params
from jaxdl.layers.recurrent.layers import Recurrent
from jaxdl.layers.recurrent.lengths import SequenceBatch, check_lengths, split_input

_STACKABLE = (Recurrent, Bidirectional)


@dataclasses.dataclass(frozen=True, init=False)
class Stacked(Layer):
    """Recurrent layers stacked: each reads the whole output sequence of the one before.

    ``Stacked(LSTM(64), LSTM(64))`` is PyTorch's ``nn.LSTM(F, 64, num_layers=2)``, and
    ``Stacked(Bidirectional(LSTM(64)), Bidirectional(LSTM(64)))`` its ``bidirectional=True``
    (the second layer reads the 128 concatenated features). Layers may differ in kind and
    size. The output is the last layer's: its ``return_sequences`` decides the layout; every
    other layer must return sequences.

    Params and state are keyed ``"<layer name>_<count>"``, counted per name as in
    `jaxdl.Serial` (``"lstm_0"``, ``"lstm_1"``, ``"bidirectional_0"``); `sublayers` maps the keys to the layers.
    ``memorize`` is each inner layer's own: ``Stacked(LSTM(64, memorize=True), LSTM(64,
    memorize=True))`` carries both layers' final states (``state["lstm_0"]``,
    ``state["lstm_1"]``) to the next chunk, and `jaxdl.reset_memory` resets them. A
    `jaxdl.SequenceBatch` input passes its lengths to every layer.

    `initial_carry` and `step` run the stack one time step at a time (not with
    `Bidirectional` layers, which read the sequence from its end).

    Args:
        *layers: `RNN`, `LSTM`, `GRU` or `Bidirectional` layers, first applied first.

    Raises:
        TypeError: for a layer of another type.
        ValueError: for no layers, or a layer before the last with ``return_sequences=False``.

    Example:
        >>> stack = Stacked(LSTM(8), LSTM(8, return_sequences=False))
        >>> params, state = stack.init(jax.random.key(0), (4, 10, 3))
        >>> stack.apply(params, state, jnp.ones((4, 10, 3)))[0].shape
        (4, 8)
    """

    layers: tuple[Layer, ...]
    takes_lengths = True  # passes a SequenceBatch's lengths to every layer

    def __init__(self, *layers: Layer):
        if not layers:
            raise ValueError("Stacked: layers must hold at least one recurrent layer, got none.")
        for position, layer in enumerate(layers):
            if not isinstance(layer, _STACKABLE):
                raise TypeError(
                    f"Stacked: layers must be RNN, LSTM, GRU or Bidirectional layers, got {layer!r} (type "
                    f"{type(layer).__name__}) at position {position}.")
            if position < len(layers) - 1 and not layer.return_sequences:
                raise ValueError(
                    f"Stacked: every layer but the last must have return_sequences=True (the next layer reads "
                    f"its whole output sequence), got {layer!r} at position {position}.")
        object.__setattr__(self, "layers", tuple(layers))

    @property
    def names(self) -> tuple[str, ...]:
        """The key of each layer in the params/state dicts: its name and a count per name."""
        counts, names = {}, []
        for layer in self.layers:
            names.append(f"{layer.name}_{counts.get(layer.name, 0)}")
            counts[layer.name] = counts.get(layer.name, 0) + 1
        return tuple(names)

    @property
    def return_sequences(self) -> bool:
        """The last layer's ``return_sequences``."""
        return self.layers[-1].return_sequences

    def sublayers(self) -> dict[str, Layer]:
        """``{key: layer}`` in order, the keys of the params and state."""
        return dict(zip(self.names, self.layers))

    def init(self, key, input_shape, dtype=jnp.float32):
        params, state = {}, {}
        shape = tuple(input_shape)
        for (name, layer), layer_key in zip(self.sublayers().items(), jax.random.split(key, len(self.layers))):
            params[name], layer_state = layer.init(layer_key, shape, dtype)
            if layer_state:
                state[name] = layer_state
            shape = apply_shape(layer, params[name], layer_state, shape, dtype)
        return params, state

    def apply(self, params, state, x, *, key=None, train=False):
        """Applies the layers in order; returns ``(outputs, new_state)``.

        ``x`` is (batch, time, features), (time, features), or a `jaxdl.SequenceBatch` whose
        lengths every layer gets.
        """
        x, lengths = split_input(self, x)
        self._check_params(params)
        new_state = {}
        for name, layer in self.sublayers().items():
            inputs = x if lengths is None else SequenceBatch(x, lengths)
            x, layer_state = layer.apply(params[name], state.get(name, {}), inputs, train=train)
            if layer_state:
                new_state[name] = layer_state
        return x, new_state

    def run(self, params, x, initial_state=None, *, lengths=None):
        """Runs the stack from ``initial_state``; returns ``(outputs, final_state)``.

        Args:
            params: from `init`.
            x: (batch, time, features) or (time, features).
            initial_state: None for zeros, or ``{key: state}`` with each layer's initial state
                as its own ``run`` takes it (keys left out start from zeros); differentiable.
            lengths: None, or (batch,) integers (`jaxdl.layers.recurrent.lengths`).

        Returns:
            ``(outputs, {key: final state of that layer})``, whatever ``memorize`` says.
        """
        self._check_params(params)
        if lengths is not None:
            check_lengths(self, lengths, jnp.shape(x))
        initial_state = initial_state or {}
        unknown = sorted(set(initial_state) - set(self.names))
        if unknown:
            raise ValueError(f"{self!r}: initial_state has keys {unknown} that are no layer's; the layers are "
                             f"{list(self.names)}.")
        finals = {}
        for name, layer in self.sublayers().items():
            x, finals[name] = layer.run(params[name], x, initial_state.get(name), lengths=lengths)
        return x, finals

    def initial_carry(self, params, batch: int) -> dict:
        """The zero carry of `step`: ``{key: that layer's initial_carry(params[key], batch)}``.

        Raises:
            ValueError: if the stack holds a `Bidirectional` layer (it cannot step).
        """
        self._check_steppable("initial_carry")
        self._check_params(params)
        return {name: layer.initial_carry(params[name], batch) for name, layer in self.sublayers().items()}

    def step(self, params, carry, x_t):
        """One time step through every layer: ``(y_t, new_carry)``, y_t the last layer's.

        Stepping through a sequence from a carry equals `run` over it from the same state.

        Args:
            params: from `init`.
            carry: from `initial_carry`, a previous step, or a memorized state of every layer.
            x_t: (batch, features), one step of the input.

        Returns:
            ``(y_t, new_carry)``.

        Raises:
            ValueError: if the stack holds a `Bidirectional` layer, or ``carry`` lacks a layer.
        """
        self._check_steppable("step")
        self._check_params(params)
        missing = [name for name in self.names if name not in carry]
        if missing:
            raise ValueError(f"{self!r}: carry must hold every layer's carry {list(self.names)}, missing {missing} "
                             f"(use initial_carry(params, batch)).")
        new_carry = {}
        for name, layer in self.sublayers().items():
            x_t, new_carry[name] = layer.step(params[name], carry[name], x_t)
        return x_t, new_carry

    def from_pytorch(self, tensors: Mapping[str, object]) -> dict:
        """Params equal to a PyTorch ``nn.RNN``/``nn.LSTM``/``nn.GRU`` with ``num_layers`` layers.

        Args:
            tensors: the module's ``state_dict()`` (tensors or arrays): ``weight_ih_l{k}``,
                ``weight_hh_l{k}``, ``bias_ih_l{k}``, ``bias_hh_l{k}`` for layer k (and
                ``..._l{k}_reverse`` for a `Bidirectional` layer).

        Returns:
            The params of this stack.
        """
        params = {}
        for k, (name, layer) in enumerate(self.sublayers().items()):
            if isinstance(layer, Bidirectional):
                params[name] = layer.from_pytorch(tensors, layer_index=k)
            else:
                params[name] = pytorch_params(layer, tensors, f"_l{k}")
        return params

    def _check_params(self, params) -> None:
        missing = [name for name in self.names if name not in params]
        if missing:
            raise ValueError(f"{self!r}: params must hold every layer's params {list(self.names)} (from init), "
                             f"missing {missing}; got keys {sorted(params)}.")

    def _check_steppable(self, method: str) -> None:
        for name, layer in self.sublayers().items():
            if isinstance(layer, Bidirectional):
                raise ValueError(
                    f"Stacked.{method}: the layer at {name!r} is Bidirectional, which reads the whole sequence "
                    f"(its backward direction starts at the end) and cannot run one step at a time.")

    def __repr__(self):
        return f"Stacked({', '.join(repr(layer) for layer in self.layers)})"
