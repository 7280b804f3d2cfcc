"""One checkpoint directory (``manifest.json`` + ``arrays/``): writing it complete, reading its arrays.

No links and no locks here: `jaxdl.checkpoint.single` and `jaxdl.checkpoint.run_set` write
into a new hidden directory under their lock and then commit it.

Disk trouble is one `StorageError` naming the parent directory and the cause: the free space
is checked before anything is written (``no space left on device at <dir>: ... free, the
checkpoint needs about ...``), and a write that fails anyway (another writer filled the disk,
a read-only file system, no permission) is reported the same way.
"""

from __future__ import annotations

import errno
import os
import pathlib
import shutil

import numpy as np

from jaxdl.checkpoint.arrays import restore_arrays, write_arrays
from jaxdl.checkpoint.entries import entries_and_arrays, stored_signature
from jaxdl.checkpoint.errors import CheckpointCorruptedError, StorageError, storage_error
from jaxdl.checkpoint.faults import fault_point
from jaxdl.checkpoint.files import sync_tree, write_text_atomic
from jaxdl.checkpoint.layout import ARRAYS_DIR, MANIFEST_NAME
from jaxdl.checkpoint.manifest import build_manifest, hashed_files, seal


#: Room left for the manifest and orbax's metadata files beyond the arrays' bytes.
METADATA_MARGIN_BYTES = 1 << 20


def check_free_space(directory: pathlib.Path, needed: int) -> None:
    """Raises StorageError (ENOSPC) when ``directory``'s file system has less than ``needed``
    bytes free. File systems that report no size (some network or FUSE mounts) are not checked."""
    try:
        usage = shutil.disk_usage(directory)
    except OSError:
        return
    if usage.total > 0 and usage.free < needed:
        error = StorageError(f"no space left on device at {directory}: {_megabytes(usage.free)} free, a checkpoint "
                             f"there needs about {_megabytes(needed)}; free space or choose another directory.")
        error.errno = errno.ENOSPC
        raise error


def _megabytes(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


def checkpoint_bytes(arrays: dict) -> int:
    """About how many bytes a checkpoint of ``arrays`` takes (the arrays and `METADATA_MARGIN_BYTES`)."""
    return sum(int(getattr(array, "nbytes", 0)) for array in arrays.values()) + METADATA_MARGIN_BYTES


def write_checkpoint_dir(directory: pathlib.Path, tree, *, model_config: dict | None, metadata: dict | None,
                         run: dict | None = None) -> None:
    """Writes a complete checkpoint into the new directory ``directory`` (fsynced, manifest last).

    Raises:
        StorageError: (an OSError) naming ``directory``'s parent and the cause, when there is not
            enough free space for it or a write fails (full disk, read-only, no permission).
    """
    entries, arrays = entries_and_arrays(tree)
    check_free_space(directory.parent, checkpoint_bytes(arrays))
    try:
        _write(directory, tree, entries, arrays, model_config=model_config, metadata=metadata, run=run)
    except OSError as error:
        raise storage_error(directory.parent, error, "write a checkpoint") from error


def _write(directory: pathlib.Path, tree, entries: list, arrays: dict, *, model_config: dict | None,
           metadata: dict | None, run: dict | None) -> None:
    directory.mkdir(mode=0o777)
    if arrays:
        write_arrays(directory / ARRAYS_DIR, arrays)
    fault_point("arrays written")
    files = hashed_files(directory)
    sync_tree(directory)
    fault_point("files hashed")
    manifest = build_manifest(tree, entries=entries, files=files, model_config=model_config, metadata=metadata,
                              run=run)
    write_text_atomic(directory / MANIFEST_NAME, seal(manifest))
    fault_point("manifest written")


def read_arrays(root: pathlib.Path, manifest: dict, entries: list[dict]) -> dict[str, np.ndarray]:
    """The orbax arrays of ``entries`` by orbax key (files already verified)."""
    wanted = {entry["array"] for entry in entries if entry["array"] is not None}
    if not wanted:
        return {}
    stored = {entry["array"]: stored_signature(entry) for entry in manifest["entries"] if entry["array"] is not None}
    try:
        restored = restore_arrays(root / ARRAYS_DIR, wanted, stored)
    except Exception as error:  # orbax/TensorStore raise many types for unreadable data
        raise CheckpointCorruptedError(f"Checkpoint {root}: cannot read its arrays: {error}") from error
    lacking = sorted(name for name in wanted if not isinstance(restored.get(name), np.ndarray))
    if lacking:
        raise CheckpointCorruptedError(f"Checkpoint {root}: its arrays do not hold {', '.join(lacking[:5])} that "
                                       f"the manifest names.")
    return restored
