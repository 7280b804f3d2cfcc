"""`Bidirectional`: a recurrent layer run forward and backward, outputs concatenated."""

from __future__ import annotations

import dataclasses
from typing import Mapping

import jax
import jax.numpy as jnp
from jax import lax

from jaxdl.core import Layer
from jaxdl.layers.recurrent.layers import Recurrent
from jaxdl.layers.recurrent.lengths import check_lengths, split_input
from jaxdl.validation import nonempty_training_batch

_DIRECTIONS = ("forward", "backward")
_PYTORCH_NAMES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


@dataclasses.dataclass(frozen=True)
class Bidirectional(Layer):
    """Runs ``layer`` forward and a copy of it backward; concatenates the two on the features.

    y = [y_forward, y_backward] on the last axis (PyTorch's ``bidirectional=True``
    convention): (batch, time, 2H), or (batch, 2H) with the inner layer's
    ``return_sequences=False``, where the forward half is the state after the last step and
    the backward half the state after step 0 (PyTorch's ``h_n`` of both directions). The
    backward copy is ``dataclasses.replace(layer, reverse=True)``: same configuration, its own
    parameters; its output at t is the state after reading x_t, ..., x_{T-1} (aligned with the
    input). With a `jaxdl.SequenceBatch` input, the backward direction starts at each
    example's last valid step and both are masked (`jaxdl.layers.recurrent.lengths`).

    Params ``{"forward": ..., "backward": ...}``, each the inner layer's; `sublayers` maps
    those keys to the two layers. No memorized state: carrying a state to the next chunk is
    ill-defined for the backward direction, which reads each chunk from its end.

    Args:
        layer: an `RNN`, `LSTM` or `GRU` with ``reverse=False`` and ``memorize=False``.

    Raises:
        TypeError: if ``layer`` is not an RNN, LSTM or GRU.
        ValueError: if ``layer`` has ``memorize=True`` or ``reverse=True``.

    Example:
        >>> layer = Bidirectional(LSTM(8))
        >>> params, state = layer.init(jax.random.key(0), (4, 10, 3))
        >>> layer.apply(params, state, jnp.ones((4, 10, 3)))[0].shape
        (4, 10, 16)
    """

    layer: Recurrent
    takes_lengths = True  # a SequenceBatch input: each direction over each example's valid steps

    def __post_init__(self):
        if not isinstance(self.layer, Recurrent):
            raise TypeError(
                f"Bidirectional: layer must be an RNN, LSTM or GRU, got {self.layer!r} of type "
                f"{type(self.layer).__name__}.")
        if self.layer.memorize:
            raise ValueError(
                f"Bidirectional: layer must have memorize=False, got {self.layer!r}: a state carried to the "
                f"next chunk is ill-defined for the backward direction, which reads each chunk from its end. "
                f"Run whole sequences (with SequenceBatch lengths for unequal ones) instead.")
        if self.layer.reverse:
            raise ValueError(
                f"Bidirectional: layer must have reverse=False (Bidirectional adds the reverse copy itself), "
                f"got {self.layer!r}.")

    @property
    def backward(self) -> Recurrent:
        """The backward direction: the inner layer with ``reverse=True``."""
        return dataclasses.replace(self.layer, reverse=True)

    @property
    def return_sequences(self) -> bool:
        """The inner layer's ``return_sequences``."""
        return self.layer.return_sequences

    def sublayers(self) -> dict[str, Layer]:
        """``{"forward": layer, "backward": reversed copy}``, the keys of the params."""
        return dict(zip(_DIRECTIONS, (self.layer, self.backward)))

    def init(self, key, input_shape, dtype=jnp.float32):
        keys = jax.random.split(key, 2)
        params = {name: layer.init(k, input_shape, dtype)[0]
                  for (name, layer), k in zip(self.sublayers().items(), keys)}
        return params, {}

    def apply(self, params, state, x, *, key=None, train=False):
        """Runs both directions; returns ``(outputs, state)``, ``state`` unchanged.

        ``x`` is (batch, time, features), (time, features), or a `jaxdl.SequenceBatch`. A
        non-empty ``state`` (``{"forward": {"h": ...}, "backward": {"h": ...}}``) is the
        initial state of every call, through `lax.stop_gradient`.
        """
        x, lengths = split_input(self, x)
        nonempty_training_batch(self, x, train, axes=jnp.ndim(x) - 1, what="batch and sequence")
        initial = jax.tree.map(lax.stop_gradient, state) if state else None
        y, _ = self.run(params, x, initial, lengths=lengths)
        return y, state

    def run(self, params, x, initial_state=None, *, lengths=None):
        """Runs both directions from ``initial_state``; returns ``(outputs, final_state)``.

        Args:
            params: from `init`.
            x: (batch, time, features) or (time, features).
            initial_state: None for zeros, or ``{"forward": state, "backward": state}`` with
                each direction's state as the inner layer's `Recurrent.run` takes it
                (differentiable).
            lengths: None, or (batch,) integers (`jaxdl.layers.recurrent.lengths`).

        Returns:
            ``(outputs, {"forward": final, "backward": final})``; the backward final state is
            the one after step 0.
        """
        self._check_tree("params", params)
        if initial_state is not None:
            self._check_tree("initial_state", initial_state)
        if lengths is not None:
            check_lengths(self, lengths, jnp.shape(x))
        outputs, finals = [], {}
        for name, layer in self.sublayers().items():
            start = None if initial_state is None else initial_state[name]
            y, finals[name] = layer.run(params[name], x, start, lengths=lengths)
            outputs.append(y)
        return jnp.concatenate(outputs, axis=-1), finals

    def from_pytorch(self, tensors: Mapping[str, object], layer_index: int = 0) -> dict:
        """Params equal to layer ``layer_index`` of a PyTorch module with ``bidirectional=True``.

        Args:
            tensors: the module's ``state_dict()`` (tensors or arrays), holding
                ``weight_ih_l{k}``, ``weight_hh_l{k}``, ``bias_ih_l{k}``, ``bias_hh_l{k}`` and
                the same with ``_reverse`` for the backward direction.
            layer_index: k, the layer of a multi-layer module.

        Returns:
            ``{"forward": params, "backward": params}``.
        """
        return {"forward": pytorch_params(self.layer, tensors, f"_l{layer_index}"),
                "backward": pytorch_params(self.backward, tensors, f"_l{layer_index}_reverse")}

    def _check_tree(self, what: str, tree) -> None:
        if not isinstance(tree, Mapping) or set(tree) != set(_DIRECTIONS):
            keys = sorted(tree) if isinstance(tree, Mapping) else type(tree).__name__
            raise ValueError(f"{self!r}: {what} must have the keys {list(_DIRECTIONS)}, got {keys}.")


def pytorch_params(layer: Recurrent, tensors: Mapping[str, object], suffix: str) -> dict:
    """``layer.from_pytorch`` of the four tensors named ``weight_ih{suffix}``, ... in ``tensors``.

    Raises:
        ValueError: naming the missing tensors.
    """
    names = [name + suffix for name in _PYTORCH_NAMES]
    missing = [name for name in names if name not in tensors]
    if missing:
        raise ValueError(
            f"{type(layer).__name__}.from_pytorch: tensors must hold {names}, missing {missing} "
            f"(got keys {sorted(tensors)}).")
    return layer.from_pytorch(*(tensors[name] for name in names))
