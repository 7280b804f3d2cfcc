"""Where jaxdl keeps what it can rebuild: prepared datasets and compiled programs.

``$JAXDL_CACHE_DIR``, by default ``~/.cache/jaxdl``; `jaxdl.datasets.mnist` keeps prepared
MNIST under ``tensorflow_datasets/`` there and `jaxdl.compilation_cache` JAX's compiled
programs under ``xla/``. Deleting it costs only the time to rebuild.
"""

from __future__ import annotations

import os
import pathlib


def jaxdl_cache_root() -> pathlib.Path:
    """``$JAXDL_CACHE_DIR``, by default ``~/.cache/jaxdl``: prepared datasets and compiled programs."""
    return pathlib.Path(os.environ.get("JAXDL_CACHE_DIR") or os.path.join("~", ".cache", "jaxdl")).expanduser()
