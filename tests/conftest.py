"""Test-session settings.

* 64-bit floats are enabled so finite-difference checks are meaningful; float32 paths are
  tested by passing float32 arrays and ``dtype=jnp.float32`` explicitly.
* XLA compiles without its backend optimizations (``--xla_backend_optimization_level=0``):
  the tests run thousands of tiny programs once each, where compilation dominates, and this
  halves the suite's time. Results are the same up to float rounding; speed is measured by
  the scripts in benchmarks/, never here.
"""

import os

os.environ["XLA_FLAGS"] = " ".join(
    filter(None, [os.environ.get("XLA_FLAGS"), "--xla_backend_optimization_level=0"]))

import jax  # noqa: E402  (after XLA_FLAGS is set)

jax.config.update("jax_enable_x64", True)
