"""Running a cell over a sequence: plain `lax.scan` autodiff, and the fused derivative.

Both take time-major inputs ``xs`` (T, B, F) and a carry tuple of (B, H) arrays, and return
``(hs, final_carry)`` with ``hs`` (T, B, H) aligned with ``xs`` (also when ``reverse``).

* `scan_sequence`: ``lax.scan`` over the cell's ``forward``; derivatives by JAX autodiff. The
  reference.
* `fused_sequence`: the same forward scan with a derivative rule whose reverse pass does one
  matrix product per step and the weight and input gradients after the loop; the recurrent
  fast path, in `jaxdl.kernels.recurrent` (re-exported here).
"""

from __future__ import annotations

from jax import lax

from jaxdl.kernels.recurrent import fused_sequence  # noqa: F401  (re-exported)


def scan_sequence(cell, params, xs, carry0, *, reverse: bool = False, unroll: int = 1):
    """Runs ``cell`` over ``xs`` (T, B, F) from ``carry0``; returns ``(hs, final_carry)``."""

    def step(carry, x_t):
        carry, outputs = cell.forward(params, carry, x_t)
        return carry, outputs[0]

    carry, hs = lax.scan(step, tuple(carry0), xs, reverse=reverse, unroll=unroll)
    return hs, carry
