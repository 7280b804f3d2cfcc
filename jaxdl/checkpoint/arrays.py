"""The arrays of a checkpoint through orbax-checkpoint: imported on first use, silent, synchronous.

``arrays/`` is an orbax-checkpoint PyTree checkpoint (`orbax.checkpoint.PyTreeCheckpointHandler`,
TensorStore zarr arrays in OCDBT files) of a flat dict ``{"arr_0": array, "arr_1": ...}``, one
array per leaf of the saved pytree (`jaxdl.checkpoint.entries` says how a leaf becomes one).
Orbax stores arrays as raw TensorStore chunks and its metadata as JSON: there is no pickle on
this path and loading never executes code.

Orbax runs synchronously (`orbax.checkpoint.Checkpointer`, not the async one): when
`write_arrays` returns, every file is written and fsynced. Orbax's log messages are dropped (a
`logging.Filter` on the ``absl`` and root loggers for records from orbax's sources,
``_ORBAX_LOG_FILTER``), so training prints nothing from it. Orbax takes seconds to import, so
`orbax` imports it on first use and ``import jaxdl`` stays light.

A failed write (e.g. a full disk: TensorStore's ``ValueError: RESOURCE_EXHAUSTED ...
[os_error_code='28']``) is an `OSError` with the cause's errno (`write_arrays`); TensorStore's
callbacks still pending then end in dozens of "RuntimeError: Event loop is closed" reports
through `sys.unraisablehook` that say nothing more, and are dropped (`_drop_closed_loop_reports`).

Multi-process runs: orbax's own multi-process save has every process call it, each writing
the shards it owns (replica 0 of each; for fully replicated arrays that is one process), with
barriers between the steps. jaxdl's checkpoints hold replicated arrays only (data
parallelism), which orbax writes from one process anyway, and its commit (manifest, hashes,
link swap) is one process's file operations: so one process (process 0) writes, the others
wait for it (`jaxdl.checkpoint.collective`), and every orbax call here is process-local
(``MultiprocessingOptions(primary_host=this process, active_processes={this process})``: no
barrier with processes that do not take part). Every process may read.
"""

from __future__ import annotations

import logging
import os
import pathlib
import re
import sys

import jax
import numpy as np


class _OrbaxLogFilter(logging.Filter):
    """Drops log records that come from orbax's source files."""

    def __init__(self, package_dir: str):
        super().__init__()
        self.package_dir = package_dir

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.pathname.startswith(self.package_dir)


_ORBAX_LOG_FILTER: _OrbaxLogFilter | None = None


def orbax():
    """The ``orbax.checkpoint`` module (imported on first use), with its logging silenced."""
    global _ORBAX_LOG_FILTER
    if _ORBAX_LOG_FILTER is None:  # before the import: orbax logs while it imports
        import importlib.util

        package_dir = list(importlib.util.find_spec("orbax").submodule_search_locations)[0]
        _ORBAX_LOG_FILTER = _OrbaxLogFilter(os.path.join(package_dir, ""))
        for name in ("absl", None):
            logging.getLogger(name).addFilter(_ORBAX_LOG_FILTER)
        _drop_closed_loop_reports()
    import orbax.checkpoint as ocp

    return ocp


def _is_closed_loop_report(unraisable) -> bool:
    """Whether an unraisable exception is asyncio's "Event loop is closed" from ``call_soon_threadsafe``
    (a TensorStore callback arriving after orbax's event loop stopped on a failed write)."""
    error = unraisable.exc_value
    if not (isinstance(error, RuntimeError) and str(error) == "Event loop is closed"):
        return False
    traceback = unraisable.exc_traceback
    names = set()
    while traceback is not None:
        names.add(traceback.tb_frame.f_code.co_name)
        traceback = traceback.tb_next
    return "call_soon_threadsafe" in names


def _drop_closed_loop_reports() -> None:
    """Wraps `sys.unraisablehook` to drop `_is_closed_loop_report` reports (module docstring)."""
    previous = sys.unraisablehook
    if getattr(previous, "jaxdl_drops_closed_loop", False):
        return

    def hook(unraisable):
        if not _is_closed_loop_report(unraisable):
            previous(unraisable)

    hook.jaxdl_drops_closed_loop = True
    sys.unraisablehook = hook


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


def _checkpointer(ocp):
    """A synchronous PyTree checkpointer; process-local in a multi-process run (module docstring)."""
    if jax.process_count() == 1:
        return ocp.Checkpointer(ocp.PyTreeCheckpointHandler())
    local = ocp.options.MultiprocessingOptions(primary_host=jax.process_index(),
                                               active_processes={jax.process_index()})
    return ocp.Checkpointer(ocp.PyTreeCheckpointHandler(multiprocessing_options=local),
                            multiprocessing_options=local)


def write_arrays(directory: pathlib.Path, arrays: dict[str, np.ndarray]) -> None:
    """Writes ``arrays`` as an orbax PyTree checkpoint; returns when it is committed.

    Raises:
        OSError: when the files cannot be written (e.g. ENOSPC on a full disk), with the cause's errno.
    """
    ocp = orbax()
    checkpointer = _checkpointer(ocp)
    try:
        checkpointer.save(os.path.abspath(directory), args=ocp.args.PyTreeSave(arrays))
    except Exception as error:  # TensorStore reports OS failures as ValueError text
        code = os_error_code(error)
        if code is None:
            raise
        raise OSError(code, os.strerror(code), os.fspath(directory)) from error
    finally:
        checkpointer.close()


def restore_arrays(directory: pathlib.Path, wanted: set[str], stored: dict[str, jax.ShapeDtypeStruct]
                   ) -> dict[str, np.ndarray]:
    """Reads the arrays ``wanted`` (NumPy arrays) of an orbax checkpoint holding ``stored``.

    Only those are read where orbax can restore part of a tree (``partial_restore``, orbax
    0.12); older versions read all of ``stored``.
    """
    ocp = orbax()
    partial = has_partial_restore(ocp)
    names = sorted(wanted) if partial else sorted(stored)
    restore_args = {name: ocp.RestoreArgs(restore_type=np.ndarray) for name in names}
    options = {"item": {name: stored[name] for name in names}, "partial_restore": True} if partial else {}
    checkpointer = _checkpointer(ocp)
    try:
        return checkpointer.restore(os.path.abspath(directory), args=ocp.args.PyTreeRestore(
            restore_args=restore_args, **options))
    finally:
        checkpointer.close()


def has_partial_restore(ocp) -> bool:
    """Whether this orbax restores part of a tree (``PyTreeRestore(partial_restore=True)``)."""
    return "partial_restore" in getattr(ocp.args.PyTreeRestore, "__dataclass_fields__", {})


def tensorstore_has(dtype: np.dtype) -> bool:
    """Whether TensorStore (orbax's storage) can store arrays of ``dtype``."""
    import tensorstore

    try:
        tensorstore.dtype(dtype.name)
    except (ValueError, TypeError):
        return False
    return True
