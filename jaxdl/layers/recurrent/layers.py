"""RNN (Elman), LSTM and GRU layers, and the exercise's whole-network constructors.

All three share one contract (`Recurrent`); they differ only in their cell
(`jaxdl.layers.recurrent.cells`) and in parameter initialization details.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxdl import kernels
from jaxdl.core import Layer, Serial, check_floating, check_rank
from jaxdl.initializers import Constant, Xavier
from jaxdl.layers.activations import Sigmoid
from jaxdl.layers.dense import FullyConnected
from jaxdl.layers.recurrent.cells import ElmanCell, GRUCell, LSTMCell
from jaxdl.layers.recurrent.lengths import check_lengths, masked_sequence, split_input, time_major_mask
from jaxdl.layers.recurrent.sequence import fused_sequence, scan_sequence
from jaxdl.validation import nonempty_training_batch, positive_int

_LAYOUT = "(batch, time, features) or (time, features)"
_IMPLEMENTATIONS = {"fused": fused_sequence, "scan": scan_sequence}


@dataclasses.dataclass(frozen=True)
class Recurrent(Layer):
    """The shared contract of `RNN`, `LSTM` and `GRU` (not used directly).

    Layouts: input (batch, time, features), output (batch, time, hidden_size), or
    (batch, hidden_size) with ``return_sequences=False``. A rank-2 input (time, features) is
    the exercise's convention (its batch axis is time): it runs as one sequence of batch 1
    and gives (time, hidden_size), or (1, hidden_size) with ``return_sequences=False``.

    Initial and memorized state. The recurrence starts from zeros, or from the arrays in
    ``state`` when it holds them (``{"h": (batch, hidden_size)}``, plus ``"c"`` for the
    LSTM), always through `lax.stop_gradient` (state is not trained). With
    ``memorize=False`` (the default) `init` returns ``state = {}`` and `apply` returns the
    state it got unchanged: every call starts from zeros, or from the same given state. With
    ``memorize=True`` (truncated backpropagation through time) `init` creates zeros for the
    batch size in ``input_shape`` and `apply` returns the final hidden (and cell) state, so the
    next call continues the sequence where this one stopped, while gradients stop at the
    chunk boundary. The state is carried in training and evaluation mode alike (the exercise
    carries it whenever ``memorize`` is set): call `jaxdl.reset_memory` between unrelated
    sequences, or pass a mask to reset only the sequences that ended. A batch size that differs
    from the memorized state's is an error, never a broadcast. `run` takes an explicit,
    differentiable ``initial_state`` and returns the final state, for code outside `Serial`.

    Initialization: ``weights_initializer`` draws ``w_ih`` and ``w_hh`` and
    ``bias_initializer`` draws ``b``, with the exercise's fans of its single fully connected
    map over [x_t, h_{t-1}]: fan_in = features + hidden_size, fan_out = gates * hidden_size.
    Defaults: `Xavier` (Glorot normal) weights and zero biases, as `FullyConnected`; PyTorch
    draws everything from U(-k, k), k = 1/sqrt(hidden_size), i.e.
    ``UniformRandom(-k, k)`` for both.

    Args:
        hidden_size: H, the size of the hidden state.
        return_sequences: return h_t for every step (default) or only the final state.
        reverse: run from the last time step to the first. Outputs stay aligned with the
            inputs (output t is the state after reading x_t, ..., x_{T-1}), as in PyTorch's
            backward direction; the final state is then the one at t = 0.
        memorize: carry the final state to the next call (see above).
        unroll: time steps per loop iteration of `lax.scan` (a compile-time/speed trade-off;
            1 is usually fastest on CPU).
        implementation: ``"fused"``: a derivative rule whose reverse pass does one matrix
            product per step and computes the weight and input gradients after the loop as
            single matrix products over all steps (`jaxdl.kernels.recurrent`); ``"scan"``:
            JAX autodiff through `lax.scan`, the reference. Both support every transformation
            (`jax.grad`, `jax.jvp`, `jax.hessian`, `jax.vmap`); same values and derivatives up
            to rounding. None (default): ``"fused"``, or ``"scan"`` when the fast paths are
            switched off when the layer is built (`jaxdl.kernels.use_fast_paths`,
            ``JAXDL_FAST_PATHS``).
        weights_initializer: initializer of ``w_ih`` and ``w_hh``.
        bias_initializer: initializer of the biases.

    Dtypes: the recurrence computes in the input's dtype, the params and the initial state
    cast to it; a memorized state is returned in its stored dtype (`jaxdl.precision`).

    Raises:
        TypeError: at construction for a ``hidden_size`` or ``unroll`` that is not an int
            (``True`` included).
        ValueError: at construction for one < 1; in training, for an empty batch or a sequence
            of no time steps (their gradient is undefined); evaluation returns an empty output
            for them.
    """

    hidden_size: int
    return_sequences: bool = True
    reverse: bool = False
    memorize: bool = False
    unroll: int = 1
    implementation: str | None = None
    weights_initializer: object = Xavier()
    bias_initializer: object = Constant(0.0)

    cell: ClassVar[type] = None
    regularized = ("w_ih", "w_hh")
    takes_lengths = True  # a SequenceBatch input masks the padded steps (jaxdl.layers.recurrent.lengths)

    def __post_init__(self):
        name = type(self).__name__
        object.__setattr__(self, "hidden_size", positive_int(name, "hidden_size", self.hidden_size))
        object.__setattr__(self, "unroll", positive_int(name, "unroll", self.unroll))
        if self.implementation is None:
            object.__setattr__(self, "implementation", "fused" if kernels.fast_paths_enabled() else "scan")
        if self.implementation not in _IMPLEMENTATIONS:
            raise ValueError(
                f"{name}: implementation must be one of {sorted(_IMPLEMENTATIONS)}, "
                f"got {self.implementation!r}.")

    @property
    def param_names(self) -> tuple[str, ...]:
        """The keys of this layer's params."""
        return ("w_ih", "w_hh", "b")

    # ------------------------------------------------------------------ init

    def init(self, key, input_shape, dtype=jnp.float32):
        batch, features = self._batch_and_features(tuple(input_shape))
        params = self.init_params(key, features, dtype)
        state = self.initial_state(batch, dtype) if self.memorize else {}
        return params, state

    def init_params(self, key, features: int, dtype=jnp.float32) -> dict:
        """Draws ``w_ih`` (features, G*H), ``w_hh`` (H, G*H) and ``b`` (G*H,)."""
        width = self.cell.gates * self.hidden_size
        fans = (features + self.hidden_size, width)
        k_ih, k_hh, k_b = jax.random.split(key, 3)
        return {
            "w_ih": self.weights_initializer(k_ih, (features, width), *fans, dtype),
            "w_hh": self.weights_initializer(k_hh, (self.hidden_size, width), *fans, dtype),
            "b": self.bias_initializer(k_b, (width,), *fans, dtype),
        }

    def initial_state(self, batch: int, dtype=jnp.float32) -> dict:
        """The zero state for ``batch`` sequences: ``{"h": zeros (batch, H)}`` (+ ``"c"``)."""
        return {name: jnp.zeros((batch, self.hidden_size), dtype) for name in self.cell.carry_names}

    # ------------------------------------------------------------------ one step at a time

    def initial_carry(self, params, batch: int) -> dict:
        """The zero carry of `step` for ``batch`` sequences, in the params' dtype.

        Independent of the batch size the params were trained with: a model trained at batch
        64 samples at batch 1 from ``initial_carry(params, 1)``.

        Args:
            params: from `init` (only their dtype is read).
            batch: the number of sequences stepped together.

        Returns:
            ``{"h": zeros (batch, H)}`` (+ ``"c"`` for the LSTM).

        Raises:
            TypeError, ValueError: for a ``batch`` that is not an int >= 1.
        """
        batch = positive_int(f"{type(self).__name__}.initial_carry", "batch", batch)
        return self.initial_state(batch, jnp.result_type(params["w_hh"]))

    def step(self, params, carry, x_t):
        """One time step of the recurrence: ``(y_t, new_carry)``, for sampling step by step.

        Stepping through x_0, ..., x_{T-1} from a carry equals `run` over the whole sequence
        from the same state (outputs and final state). The step is the cell's alone: a
        ``reverse`` layer steps the same way (the caller feeds the steps in its order).

        Args:
            params: from `init`.
            carry: ``{"h": (batch, H)}`` (+ ``"c"``), from `initial_carry`, a previous step, or
                a memorized state.
            x_t: (batch, features), one step of the input.

        Returns:
            ``(y_t, new_carry)``: y_t (batch, H) and the carry after the step, both in the
            input's dtype.

        Raises:
            TypeError: for a non-floating ``x_t``.
            ValueError: for an ``x_t`` that is not (batch, features), or a carry that does not
                fit it.
        """
        check_floating(self, x_t)
        check_rank(self, x_t, (2,), "(batch, features)")
        self._check_params(params, x_t)
        dtype = jnp.result_type(x_t)
        params = {name: jnp.asarray(v).astype(dtype) for name, v in params.items()}
        carry = self._initial_carry(carry, x_t.shape[0], x_t.shape, dtype)
        carry, outputs = self.cell.forward(params, carry, x_t)
        return outputs[0], dict(zip(self.cell.carry_names, carry))

    def _batch_and_features(self, shape) -> tuple[int, int]:
        if len(shape) not in (2, 3):
            raise ValueError(f"{self!r} expects input of layout {_LAYOUT}, got shape {shape}.")
        return (1 if len(shape) == 2 else shape[0]), shape[-1]

    # ------------------------------------------------------------------ apply

    def apply(self, params, state, x, *, key=None, train=False):
        """Runs the recurrence; returns ``(outputs, new_state)`` (see the class docstring).

        ``x`` may be a `jaxdl.SequenceBatch` ``(x, lengths)`` of padded sequences
        (`jaxdl.layers.recurrent.lengths`).
        """
        x, lengths = split_input(self, x)
        nonempty_training_batch(self, x, train, axes=jnp.ndim(x) - 1, what="batch and sequence")
        initial = {name: lax.stop_gradient(v) for name, v in state.items()} if state else None
        y, final = self.run(params, x, initial, lengths=lengths)
        if not self.memorize:
            return y, state
        if state:
            final = {name: final[name].astype(state[name].dtype) for name in final}
        return y, final

    def run(self, params, x, initial_state=None, *, lengths=None):
        """Runs the recurrence from ``initial_state``; returns ``(outputs, final_state)``.

        Unlike `apply`, gradients flow into ``initial_state`` and the final state is always
        returned, whatever ``memorize`` says.

        Args:
            params: from `init`.
            x: (batch, time, features) or (time, features).
            initial_state: None for zeros, or ``{"h": (batch, H)}`` (+ ``"c"`` for the LSTM).
            lengths: None (every step valid), or (batch,) integers: padded steps give zero
                outputs and leave the state unchanged (`jaxdl.layers.recurrent.lengths`). Both
                implementations take them: ``"fused"`` masks its forward and tangent steps,
                ``"scan"`` runs the masked `lax.scan` (plain autodiff).

        Returns:
            ``(outputs, final_state)``: outputs as described in the class docstring, and
            ``final_state`` like ``initial_state``, in the computation's dtype (the input's).
        """
        check_floating(self, x)
        check_rank(self, x, (2, 3), _LAYOUT)
        self._check_params(params, x)
        squeeze = x.ndim == 2
        xs = x[None] if squeeze else x
        dtype = jnp.result_type(xs)  # computes in the input's dtype, params cast to it (jaxdl.precision)
        params = {name: jnp.asarray(v).astype(dtype) for name, v in params.items()}
        carry0 = self._initial_carry(initial_state, xs.shape[0], x.shape, dtype)
        xs_time_major = jnp.swapaxes(xs.astype(dtype), 0, 1)
        if lengths is not None:
            check_lengths(self, lengths, x.shape)
            if self.implementation == "fused":
                hs, carry = fused_sequence(self.cell, params, xs_time_major, carry0, reverse=self.reverse,
                                           unroll=self.unroll, valid=time_major_mask(lengths, xs.shape[1]))
            else:
                hs, carry = masked_sequence(self.cell, params, xs_time_major, lengths, carry0,
                                            reverse=self.reverse, unroll=self.unroll)
        else:
            run_sequence = _IMPLEMENTATIONS[self.implementation]
            hs, carry = run_sequence(self.cell, params, xs_time_major, carry0,
                                     reverse=self.reverse, unroll=self.unroll)
        final = dict(zip(self.cell.carry_names, carry))
        if not self.return_sequences:
            return final["h"], final  # (batch, H); (1, H) for a rank-2 input
        y = jnp.swapaxes(hs, 0, 1)
        return (y[0] if squeeze else y), final

    def _check_params(self, params, x):
        if set(params) != set(self.param_names):
            raise ValueError(
                f"{self!r} expects params with keys {sorted(self.param_names)} (from init), "
                f"got {sorted(params)}.")
        features = params["w_ih"].shape[0]
        if x.shape[-1] != features:
            raise ValueError(
                f"{self!r} was initialized for {features} input features, got input of shape "
                f"{tuple(x.shape)} with {x.shape[-1]} on the last axis.")

    def _initial_carry(self, initial_state, batch, input_shape, dtype):
        if initial_state is None:
            return tuple(jnp.zeros((batch, self.hidden_size), dtype) for _ in self.cell.carry_names)
        names = self.cell.carry_names
        if set(initial_state) != set(names):
            raise ValueError(
                f"{self!r} expects a state with keys {list(names)} (from init with memorize=True, "
                f"or {{}} for zeros), got keys {sorted(initial_state)}.")
        for name in names:
            shape = tuple(jnp.shape(initial_state[name]))
            if shape != (batch, self.hidden_size):
                raise ValueError(
                    f"{self!r} holds a state {name!r} of shape {shape}, expected ({batch}, "
                    f"{self.hidden_size}) for the input of shape {tuple(input_shape)} (a rank-2 input "
                    f"is batch 1). Re-create the state for this batch size with "
                    f"init(key, input_shape) or initial_state({batch}).")
        return tuple(jnp.asarray(initial_state[name]).astype(dtype) for name in names)


@dataclasses.dataclass(frozen=True)
class RNN(Recurrent):
    """Elman recurrent layer: h_t = tanh(x_t w_ih + h_{t-1} w_hh + b).

    Params ``w_ih`` (features, H), ``w_hh`` (H, H), ``b`` (H,). State ``{"h": (batch, H)}``
    when ``memorize``. The exercise's whole Elman layer (with its output map and sigmoid) is
    `elman_rnn`. PyTorch ``torch.nn.RNN(features, H, batch_first=True)`` (tanh) holds the same
    map as ``weight_ih_l0 = w_ih.T``, ``weight_hh_l0 = w_hh.T`` and
    ``bias_ih_l0 + bias_hh_l0 = b``; `from_pytorch` converts. Arguments: see `Recurrent`.

    Example:
        >>> layer = RNN(7)
        >>> params, state = layer.init(jax.random.key(0), (4, 9, 13))
        >>> layer.apply(params, state, jnp.ones((4, 9, 13)))[0].shape
        (4, 9, 7)
    """

    cell: ClassVar[type] = ElmanCell
    memory = ("h",)

    def from_pytorch(self, weight_ih_l0, weight_hh_l0, bias_ih_l0, bias_hh_l0) -> dict:
        """Params equal to a PyTorch ``nn.RNN``'s (arrays or tensors as numpy arrays)."""
        return _pytorch_common(weight_ih_l0, weight_hh_l0, np.asarray(bias_ih_l0) + np.asarray(bias_hh_l0))


@dataclasses.dataclass(frozen=True)
class LSTM(Recurrent):
    """Long short-term memory, gates in PyTorch/cuDNN order i, f, g, o.

    z = x_t w_ih + h_{t-1} w_hh + b = [z_i, z_f, z_g, z_o] (each of width H);
    c_t = sigmoid(z_f) * c_{t-1} + sigmoid(z_i) * tanh(z_g);  h_t = sigmoid(z_o) * tanh(c_t).

    Params ``w_ih`` (features, 4H), ``w_hh`` (H, 4H), ``b`` (4H,); state
    ``{"h": (batch, H), "c": (batch, H)}`` when ``memorize``. The output is h_t. PyTorch's
    ``torch.nn.LSTM(features, H, batch_first=True)`` holds the same map as
    ``weight_ih_l0`` (4H, features) = ``w_ih.T``, ``weight_hh_l0`` (4H, H) = ``w_hh.T`` and
    ``bias_ih_l0 + bias_hh_l0 = b``; `from_pytorch` converts. The exercise's single matrix over
    [x_t, h_{t-1}, 1] of shape (features + H + 1, 4H) is ``w_ih``, ``w_hh`` and ``b`` stacked.

    Args:
        forget_bias: added to the forget-gate slice b[H:2H] at initialization only (on top of
            ``bias_initializer``'s draw), so a new cell keeps its memory (Jozefowicz et al.,
            2015). Default 1.0; 0.0 gives the plain initializer. The forward pass adds
            nothing, so ported weights behave exactly as in PyTorch.
        Others: see `Recurrent`.
    """

    forget_bias: float = 1.0
    cell: ClassVar[type] = LSTMCell
    memory = ("h", "c")

    def init_params(self, key, features, dtype=jnp.float32):
        params = super().init_params(key, features, dtype)
        hidden = self.hidden_size
        params["b"] = params["b"].at[hidden:2 * hidden].add(jnp.asarray(self.forget_bias, dtype))
        return params

    def from_pytorch(self, weight_ih_l0, weight_hh_l0, bias_ih_l0, bias_hh_l0) -> dict:
        """Params equal to a PyTorch ``nn.LSTM``'s (arrays or tensors as numpy arrays)."""
        return _pytorch_common(weight_ih_l0, weight_hh_l0, np.asarray(bias_ih_l0) + np.asarray(bias_hh_l0))


@dataclasses.dataclass(frozen=True)
class GRU(Recurrent):
    """Gated recurrent unit exactly as PyTorch's ``torch.nn.GRU``, gate order r, z, n.

    a = x_t w_ih + b = [a_r, a_z, a_n];  s = h_{t-1} w_hh = [s_r, s_z, s_n];
    r = sigmoid(a_r + s_r);  z = sigmoid(a_z + s_z);  n = tanh(a_n + r * (s_n + b_hn));
    h_t = (1 - z) * n + z * h_{t-1}.

    Params ``w_ih`` (features, 3H), ``w_hh`` (H, 3H), ``b`` (3H,) and ``b_hn`` (H,): r
    multiplies the hidden-side bias of n, so it stays a separate parameter, while the other
    hidden-side biases fold into ``b``. From PyTorch: ``w_ih = weight_ih_l0.T``,
    ``w_hh = weight_hh_l0.T``, ``b = bias_ih_l0 + [bias_hh_l0[:2H], 0]``,
    ``b_hn = bias_hh_l0[2H:]`` (`from_pytorch`). ``b_hn`` is drawn by ``bias_initializer``
    with the same fans as ``b``. State ``{"h": (batch, H)}`` when ``memorize``. Arguments:
    see `Recurrent`.
    """

    cell: ClassVar[type] = GRUCell
    memory = ("h",)

    @property
    def param_names(self):
        return ("w_ih", "w_hh", "b", "b_hn")

    def init_params(self, key, features, dtype=jnp.float32):
        key, k_hn = jax.random.split(key)
        params = super().init_params(key, features, dtype)
        fans = (features + self.hidden_size, 3 * self.hidden_size)
        params["b_hn"] = self.bias_initializer(k_hn, (self.hidden_size,), *fans, dtype)
        return params

    def from_pytorch(self, weight_ih_l0, weight_hh_l0, bias_ih_l0, bias_hh_l0) -> dict:
        """Params equal to a PyTorch ``nn.GRU``'s (arrays or tensors as numpy arrays)."""
        bias_hh = np.asarray(bias_hh_l0)
        hidden = bias_hh.shape[0] // 3
        folded = np.concatenate([bias_hh[:2 * hidden], np.zeros_like(bias_hh[2 * hidden:])])
        params = _pytorch_common(weight_ih_l0, weight_hh_l0, np.asarray(bias_ih_l0) + folded)
        params["b_hn"] = jnp.asarray(bias_hh[2 * hidden:])
        return params


def _pytorch_common(weight_ih, weight_hh, b) -> dict:
    return {"w_ih": jnp.asarray(np.asarray(weight_ih).T), "w_hh": jnp.asarray(np.asarray(weight_hh).T),
            "b": jnp.asarray(b)}


def elman_rnn(hidden_size: int, output_size: int, *, memorize: bool = False,
              weights_initializer=Xavier(), bias_initializer=Constant(0.0), **options) -> Serial:
    """The exercise's Elman RNN: ``Serial(RNN, FullyConnected(output_size), Sigmoid())``.

    y_t = sigmoid(tanh(x_t w_ih + h_{t-1} w_hh + b) W_y + b_y) at every step. The exercise's
    ``RNN(input_size, hidden_size, output_size)`` with its (time, input_size) input is
    ``elman_rnn(hidden_size, output_size)`` on a rank-2 input. Params are keyed ``rnn_0`` and
    ``fully_connected_0``; the memorized state (if any) ``rnn_0``.

    Args:
        hidden_size: the RNN's hidden size.
        output_size: the features of y_t.
        memorize: carry the hidden state across calls (truncated BPTT), see `RNN`.
        weights_initializer, bias_initializer: used by both the RNN and the output map (the
            exercise's ``initialize(weights_initializer, bias_initializer)``).
        **options: further `RNN` options (``reverse``, ``unroll``, ``implementation``).

    Example:
        >>> model = elman_rnn(7, 5)
        >>> params, state = model.init(jax.random.key(0), (9, 13))
        >>> model.apply(params, state, jnp.ones((9, 13)))[0].shape
        (9, 5)
    """
    return _network(RNN, hidden_size, output_size, memorize, weights_initializer, bias_initializer, options)


def lstm_network(hidden_size: int, output_size: int, *, memorize: bool = False,
                 weights_initializer=Xavier(), bias_initializer=Constant(0.0), **options) -> Serial:
    """The exercise's LSTM layer: ``Serial(LSTM, FullyConnected(output_size), Sigmoid())``.

    Like `elman_rnn` with an `LSTM` (``**options`` may include ``forget_bias``); params are
    keyed ``lstm_0`` and ``fully_connected_0``.
    """
    return _network(LSTM, hidden_size, output_size, memorize, weights_initializer, bias_initializer, options)


def _network(layer_type, hidden_size, output_size, memorize, weights_initializer, bias_initializer, options):
    recurrent = layer_type(hidden_size, memorize=memorize, weights_initializer=weights_initializer,
                           bias_initializer=bias_initializer, **options)
    output = FullyConnected(output_size, weights_initializer=weights_initializer,
                            bias_initializer=bias_initializer)
    return Serial(recurrent, output, Sigmoid())
