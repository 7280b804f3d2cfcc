"""The recurrent cells' math: one time step forward, and the same step's linear tangent map.

Shared conventions (batch B, features F, hidden size H, G gates):

* ``x_t`` is (B, F), ``h_{t-1}`` is (B, H). Parameters ``w_ih`` (F, G*H), ``w_hh`` (H, G*H)
  and ``b`` (G*H,), the gates stacked along the last axis in PyTorch/cuDNN order.
* ``forward(params, carry, x_t) -> (carry, outputs)``: ``carry`` is a tuple, ``(h,)`` or
  ``(h, c)``; ``outputs = (h_t, *coefficients)``, the layer output at step t followed by the
  step's partial derivatives that make the tangent step a linear map with them as constants.
  The plain path differentiates ``forward`` with JAX autodiff (and never computes the
  coefficients: unused scan outputs are removed); the fused path
  (`jaxdl.kernels.recurrent`) stacks them and uses the tangent map below.
* ``tangent_step(w_hh, dcarry, inputs) -> (dcarry, dh_t)``: given the tangent of the previous
  carry and ``inputs = (dz_x_t, [dz_h_t], *coefficients_t)``, where ``dz_x_t`` is the tangent
  of the input projection ``a_t = x_t w_ih + b`` (for Elman and LSTM also of the hidden
  projection's parameter part, see ``separate_hidden_projection``) and ``dz_h_t`` (GRU only)
  that of the hidden projection ``s_t = h_{t-1} w_hh`` with its parameters' tangents, returns
  the new carry tangent and the output tangent. Linear in (dcarry, dz): reverse mode
  transposes it into the hand-derived backward step (one product with w_hh^T per step).
* ``separate_hidden_projection``: False when ``a_t`` and ``s_t`` are added before any
  nonlinearity (Elman, LSTM: one stacked pre-activation tangent), True for the GRU, whose r
  gate multiplies part of ``s_t``.
* ``hidden_bias_tangents(params, dparams)``: extra terms of ``dz_h`` (GRU's ``b_hn``).
* ``tangent_reads_outputs``: True when the tangent step reads the step's output h_t (placed
  before the coefficients in ``inputs``) instead of coefficients stacked by ``forward``: the
  Elman cell's slope 1 - h_t^2, applied as ``u - h (h u)`` so that every product involves the
  tangent and JAX keeps it inside the loop rather than stacking it in the forward pass (that
  extra (T, B, H) array cost 7% of the step).

The weight terms are not in ``tangent_step``: they do not depend on the previous step, so the
fused path computes them as single matrix products over all steps before the loop, or over
each block of steps when the stacked gradients would be large
(`jaxdl.kernels.recurrent`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.custom_derivatives import SymbolicZero


def _sigmoid_derivative(s):
    return s * (1 - s)


def _tanh_derivative(t):
    return 1 - t * t


class ElmanCell:
    """h_t = tanh(x_t w_ih + h_{t-1} w_hh + b)  (one gate, carry ``(h,)``)."""

    gates = 1
    carry_names = ("h",)
    separate_hidden_projection = False
    tangent_reads_outputs = True

    @staticmethod
    def forward(params, carry, x_t):
        (h,) = carry
        h = jnp.tanh(x_t @ params["w_ih"] + h @ params["w_hh"] + params["b"])
        return (h,), (h,)

    @staticmethod
    def hidden_bias_tangents(params, dparams):
        del params, dparams
        return []

    @staticmethod
    def tangent_step(w_hh, dcarry, inputs):
        (dh,) = dcarry
        dz, h = inputs
        u = dz + dh @ w_hh
        dh = u - h * (h * u)  # (1 - h^2) u, written so that every product involves the tangent:
        # JAX then keeps it in the tangent loop instead of stacking 1 - h^2 in the forward pass
        return (dh,), dh


class LSTMCell:
    """The LSTM step in PyTorch/cuDNN gate order i, f, g, o (carry ``(h, c)``).

    z = x_t w_ih + h_{t-1} w_hh + b = [z_i, z_f, z_g, z_o];
    i, f, o = sigmoid(z_i), sigmoid(z_f), sigmoid(z_o); g = tanh(z_g);
    c_t = f * c_{t-1} + i * g;  h_t = o * tanh(c_t).
    """

    gates = 4
    carry_names = ("h", "c")
    separate_hidden_projection = False
    tangent_reads_outputs = False

    @staticmethod
    def forward(params, carry, x_t):
        h, c = carry
        z = x_t @ params["w_ih"] + h @ params["w_hh"] + params["b"]
        z_i, z_f, z_g, z_o = jnp.split(z, 4, axis=-1)
        i, f, g, o = jax.nn.sigmoid(z_i), jax.nn.sigmoid(z_f), jnp.tanh(z_g), jax.nn.sigmoid(z_o)
        c_prev, c = c, f * c + i * g
        tanh_c = jnp.tanh(c)
        h = o * tanh_c
        # dc_t = f dc_{t-1} + the first three parts of slopes * dz; dh_t = (last part) + cell_slope dc_t
        slopes = jnp.concatenate([
            g * _sigmoid_derivative(i),
            c_prev * _sigmoid_derivative(f),
            i * _tanh_derivative(g),
            tanh_c * _sigmoid_derivative(o),
        ], axis=-1)
        return (h, c), (h, slopes, f, o * _tanh_derivative(tanh_c))

    @staticmethod
    def hidden_bias_tangents(params, dparams):
        del params, dparams
        return []

    @staticmethod
    def tangent_step(w_hh, dcarry, inputs):
        dh, dc = dcarry
        dz, slopes, f, cell_slope = inputs
        d_i, d_f, d_g, d_o = jnp.split(slopes * (dz + dh @ w_hh), 4, axis=-1)
        dc = f * dc + d_i + d_f + d_g
        dh = d_o + cell_slope * dc
        return (dh, dc), dh


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
    separate_hidden_projection = True
    tangent_reads_outputs = False

    @staticmethod
    def forward(params, carry, x_t):
        (h,) = carry
        a_r, a_z, a_n = jnp.split(x_t @ params["w_ih"] + params["b"], 3, axis=-1)
        s_r, s_z, s_n = jnp.split(h @ params["w_hh"], 3, axis=-1)
        r = jax.nn.sigmoid(a_r + s_r)
        z = jax.nn.sigmoid(a_z + s_z)
        s_n = s_n + params["b_hn"]
        n = jnp.tanh(a_n + r * s_n)
        h_prev, h = h, (1 - z) * n + z * h
        # dh_t = new_slope (da_n + reset_slope du_r + r ds_n) + update_slope du_z + z dh_{t-1},
        # with u = a + s (the r and z pre-activations)
        new_slope = (1 - z) * _tanh_derivative(n)
        reset_slope = s_n * _sigmoid_derivative(r)
        update_slope = (h_prev - n) * _sigmoid_derivative(z)
        return (h,), (h, new_slope, reset_slope, r, update_slope, z)

    @staticmethod
    def hidden_bias_tangents(params, dparams):
        """``b_hn`` enters the n-part of the hidden projection."""
        if isinstance(dparams["b_hn"], SymbolicZero):
            return []
        return [jnp.concatenate([jnp.zeros(2 * params["b_hn"].shape[0], params["b_hn"].dtype), dparams["b_hn"]])]

    @staticmethod
    def tangent_step(w_hh, dcarry, inputs):
        (dh,) = dcarry
        da, ds_params, new_slope, reset_slope, r, update_slope, z = inputs
        ds = dh @ w_hh + ds_params
        du_r, du_z, _ = jnp.split(da + ds, 3, axis=-1)
        da_n, ds_n = da[..., 2 * dh.shape[-1]:], ds[..., 2 * dh.shape[-1]:]
        dh = new_slope * (da_n + reset_slope * du_r + r * ds_n) + update_slope * du_z + z * dh
        return (dh,), dh
