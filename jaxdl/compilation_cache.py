"""JAX's persistent compilation cache, switched on for jaxdl's command lines.

Every run of ``scripts/train_lenet.py`` compiles the same programs: the initializers, the
training step, the evaluation step (about 3 s of XLA compilation on a 2-core CPU, before the
first step runs). JAX can keep compiled programs on disk and load them on the next run instead
(`the persistent compilation cache
<https://docs.jax.dev/en/latest/persistent_compilation_cache.html>`_); the LeNet step's first
call then takes ~0.3 s instead of ~1.5 s. JAX keys each entry by the program, the jax/jaxlib
versions, the backend, the device and the XLA flags, so a cached program is only ever used
where it was compiled for.

`enable_compilation_cache` is what the scripts call first thing; research code can call it
too. Nothing is cached unless it is called (or JAX's own ``JAX_COMPILATION_CACHE_DIR`` is
set): jaxdl does not change JAX's configuration on import.
"""

from __future__ import annotations

import os
import pathlib

import jax

from jaxdl.cache_dir import jaxdl_cache_root

#: Where the compiled programs go: ``$JAXDL_CACHE_DIR/xla`` (``~/.cache/jaxdl/xla`` by default).
CACHE_SUBDIRECTORY = "xla"


def enable_compilation_cache(directory: str | os.PathLike | None = None) -> pathlib.Path | None:
    """Switches on JAX's persistent compilation cache for this process; returns its directory.

    Call it before the first compilation (JAX reads the setting once, at its first compile).
    Every program is cached, however quickly it compiled (JAX's default threshold of 1 s
    would skip most of LeNet's). A directory the user already gave JAX
    (``JAX_COMPILATION_CACHE_DIR`` or ``jax.config``) is kept, and with
    ``JAX_ENABLE_COMPILATION_CACHE=false`` nothing is switched on (returns None).

    Args:
        directory: where to keep the programs; default ``$JAXDL_CACHE_DIR/xla``.

    Returns:
        The cache directory in use, or None when the user switched JAX's cache off.
    """
    if not jax.config.jax_enable_compilation_cache:
        return None
    configured = jax.config.jax_compilation_cache_dir
    if configured:
        return pathlib.Path(configured)
    path = pathlib.Path(directory).expanduser() if directory is not None else jaxdl_cache_root() / CACHE_SUBDIRECTORY
    jax.config.update("jax_compilation_cache_dir", os.fspath(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    return path
