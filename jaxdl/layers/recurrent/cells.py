"""The recurrent cells' math: one time step forward, and the same step in reverse by hand.

Shared conventions (batch B, features F, hidden size H, G gates):

* ``x_t`` is (B, F), ``h_{t-1}`` is (B, H). Parameters ``w_ih`` (F, G*H), ``w_hh`` (H, G*H)
  and ``b`` (G*H,), the gates stacked along the last axis in PyTorch/cuDNN order.
* ``forward(params, carry, x_t) -> (carry, outputs)``: ``carry`` is a tuple, ``(h,)`` or
  ``(h, c)``; ``outputs = (h_t, *residuals)``, the layer output at step t followed by what
  the reverse step needs. The plain path differentiates ``forward`` with `jax.grad`; the fused
  path (`jaxdl.layers.recurrent.sequence`) uses the hand-written ``backward`` instead.
* ``backward(w_hh_t, dcarry, inputs) -> (dcarry_prev, (dz_x, [dz_h]))``: given the gradient
  reaching step t (through the carry and from the output h_t), returns the gradient reaching
  step t-1 and the gradient of the loss with respect to the input projection
  ``a_t = x_t w_ih + b`` (``dz_x``, (B, G*H)) and, when it differs (GRU), with respect to the
  hidden projection ``s_t = h_{t-1} w_hh`` (``dz_h``). ``w_hh_t`` is ``w_hh.T``.
* ``backward_inputs(hs, residuals, carry0, reverse)``: the per-step sequences ``backward``
  reads, built once from the forward pass's stacked outputs.

The weight gradients are not in ``backward``: they are sums over time of outer products, which
the fused path computes after the loop as single matrix products.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def previous(seq, first, reverse: bool):
    """The value before each step: ``seq`` (T, ...) shifted one step along the scan direction.

    For a forward scan, entry t is ``seq[t-1]`` and entry 0 is ``first``; for a reverse scan
    (steps run T-1, ..., 0) entry t is ``seq[t+1]`` and entry T-1 is ``first``.
    """
    if reverse:
        return jnp.concatenate([seq[1:], first[None]], axis=0)
    return jnp.concatenate([first[None], seq[:-1]], axis=0)


def _sigmoid_derivative(s):
    return s * (1 - s)


def _tanh_derivative(t):
    return 1 - t * t


class ElmanCell:
    """h_t = tanh(x_t w_ih + h_{t-1} w_hh + b)  (one gate, carry ``(h,)``)."""

    gates = 1
    carry_names = ("h",)

    @staticmethod
    def forward(params, carry, x_t):
        (h,) = carry
        h = jnp.tanh(x_t @ params["w_ih"] + h @ params["w_hh"] + params["b"])
        return (h,), (h,)

    @staticmethod
    def backward_inputs(hs, residuals, carry0, reverse):
        del residuals, carry0, reverse
        return (hs,)

    @staticmethod
    def backward(w_hh_t, dcarry, inputs):
        (dh,) = dcarry
        dh_t, h = inputs
        dz = (dh + dh_t) * _tanh_derivative(h)
        return (dz @ w_hh_t,), (dz,)

    @staticmethod
    def extra_grads(dz_h, hidden_size):
        del dz_h, hidden_size
        return {}


class LSTMCell:
    """The LSTM step in PyTorch/cuDNN gate order i, f, g, o (carry ``(h, c)``).

    z = x_t w_ih + h_{t-1} w_hh + b = [z_i, z_f, z_g, z_o];
    i, f, o = sigmoid(z_i), sigmoid(z_f), sigmoid(z_o); g = tanh(z_g);
    c_t = f * c_{t-1} + i * g;  h_t = o * tanh(c_t).
    """

    gates = 4
    carry_names = ("h", "c")

    @staticmethod
    def forward(params, carry, x_t):
        h, c = carry
        z = x_t @ params["w_ih"] + h @ params["w_hh"] + params["b"]
        z_i, z_f, z_g, z_o = jnp.split(z, 4, axis=-1)
        i, f, g, o = jax.nn.sigmoid(z_i), jax.nn.sigmoid(z_f), jnp.tanh(z_g), jax.nn.sigmoid(z_o)
        c = f * c + i * g
        h = o * jnp.tanh(c)
        return (h, c), (h, jnp.concatenate([i, f, g, o], axis=-1), c)

    @staticmethod
    def backward_inputs(hs, residuals, carry0, reverse):
        gates, cs = residuals
        return gates, cs, previous(cs, carry0[1], reverse)

    @staticmethod
    def backward(w_hh_t, dcarry, inputs):
        dh, dc = dcarry
        dh_t, gates, c, c_prev = inputs
        i, f, g, o = jnp.split(gates, 4, axis=-1)
        dh = dh + dh_t
        tanh_c = jnp.tanh(c)
        dc = dc + dh * o * _tanh_derivative(tanh_c)
        dz = jnp.concatenate([
            dc * g * _sigmoid_derivative(i),
            dc * c_prev * _sigmoid_derivative(f),
            dc * i * _tanh_derivative(g),
            dh * tanh_c * _sigmoid_derivative(o),
        ], axis=-1)
        return (dz @ w_hh_t, dc * f), (dz,)

    @staticmethod
    def extra_grads(dz_h, hidden_size):
        del dz_h, hidden_size
        return {}


class GRUCell:
    """The PyTorch GRU step, gate order r, z, n (carry ``(h,)``).

    a = x_t w_ih + b = [a_r, a_z, a_n];  s = h_{t-1} w_hh = [s_r, s_z, s_n];
    r = sigmoid(a_r + s_r);  z = sigmoid(a_z + s_z);  n = tanh(a_n + r * (s_n + b_hn));
    h_t = (1 - z) * n + z * h_{t-1}.

    ``b_hn`` (H,) is the hidden-side bias of n, which r multiplies, so it cannot be folded
    into ``b``; the r and z hidden-side biases can and are.
    """

    gates = 3
    carry_names = ("h",)

    @staticmethod
    def forward(params, carry, x_t):
        (h,) = carry
        a_r, a_z, a_n = jnp.split(x_t @ params["w_ih"] + params["b"], 3, axis=-1)
        s_r, s_z, s_n = jnp.split(h @ params["w_hh"], 3, axis=-1)
        r = jax.nn.sigmoid(a_r + s_r)
        z = jax.nn.sigmoid(a_z + s_z)
        s_n = s_n + params["b_hn"]
        n = jnp.tanh(a_n + r * s_n)
        h = (1 - z) * n + z * h
        return (h,), (h, jnp.concatenate([r, z, n], axis=-1), s_n)

    @staticmethod
    def backward_inputs(hs, residuals, carry0, reverse):
        gates, s_n = residuals
        return gates, s_n, previous(hs, carry0[0], reverse)

    @staticmethod
    def backward(w_hh_t, dcarry, inputs):
        (dh,) = dcarry
        dh_t, gates, s_n, h_prev = inputs
        r, z, n = jnp.split(gates, 3, axis=-1)
        dh = dh + dh_t
        da_n = dh * (1 - z) * _tanh_derivative(n)
        da_r = da_n * s_n * _sigmoid_derivative(r)
        da_z = dh * (h_prev - n) * _sigmoid_derivative(z)
        dz_x = jnp.concatenate([da_r, da_z, da_n], axis=-1)
        dz_h = jnp.concatenate([da_r, da_z, da_n * r], axis=-1)
        return (dh * z + dz_h @ w_hh_t,), (dz_x, dz_h)

    @staticmethod
    def extra_grads(dz_h, hidden_size):
        return {"b_hn": jnp.sum(dz_h[:, 2 * hidden_size:], axis=0)}
