"""orbax-checkpoint, imported on first use and silenced; TensorStore's dtypes; its OS errors.

Orbax takes seconds to import, so `orbax` imports it on first use and ``import jaxdl`` stays
light. Orbax's log messages are dropped (a `logging.Filter` on the ``absl`` and root loggers
for records from orbax's sources), so training prints nothing from it.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
import re

import numpy as np


@functools.cache
def orbax():
    """The ``orbax.checkpoint`` module (imported on first use), with its logging silenced."""
    package_dir = os.path.join(list(importlib.util.find_spec("orbax").submodule_search_locations)[0], "")
    for name in ("absl", None):  # before the import: orbax logs while it imports
        logging.getLogger(name).addFilter(lambda record: not record.pathname.startswith(package_dir))
    import orbax.checkpoint as ocp

    return ocp


def tensorstore_has(dtype: np.dtype) -> bool:
    """Whether TensorStore (orbax's storage) can store arrays of ``dtype``."""
    import tensorstore

    try:
        tensorstore.dtype(dtype.name)
    except (ValueError, TypeError):
        return False
    return True


_OS_ERROR_CODE = re.compile(r"os_error_code='?(\d+)")


def os_error_code(error: BaseException) -> int | None:
    """The errno of an OS failure inside ``error`` (itself, its causes, or TensorStore's
    ``[os_error_code='28']`` text), or None."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno:
            return error.errno
        match = _OS_ERROR_CODE.search(str(error))
        if match:
            return int(match.group(1))
        error = error.__cause__ or error.__context__
    return None
