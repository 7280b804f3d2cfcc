"""Tests run with 64-bit floats enabled so finite-difference checks are meaningful.

Float32 paths are tested by passing float32 arrays and ``dtype=jnp.float32`` explicitly.
"""

import jax

jax.config.update("jax_enable_x64", True)
