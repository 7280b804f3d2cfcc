"""One checkpoint directory (``manifest.json`` + ``arrays/``): writing it complete, reading its arrays.

No links and no locks here: `jaxdl.checkpoint.single` and `jaxdl.checkpoint.run_set` write
into a new hidden directory under their lock and then commit it.
"""

from __future__ import annotations

import pathlib

import numpy as np

from jaxdl.checkpoint.arrays import restore_arrays, write_arrays
from jaxdl.checkpoint.entries import entries_and_arrays, stored_signature
from jaxdl.checkpoint.errors import CheckpointCorruptedError
from jaxdl.checkpoint.faults import fault_point
from jaxdl.checkpoint.files import sync_tree, write_text_atomic
from jaxdl.checkpoint.layout import ARRAYS_DIR, MANIFEST_NAME
from jaxdl.checkpoint.manifest import build_manifest, hashed_files, seal


def write_checkpoint_dir(directory: pathlib.Path, tree, *, model_config: dict | None, metadata: dict | None,
                         run: dict | None = None) -> None:
    """Writes a complete checkpoint into the new directory ``directory`` (fsynced, manifest last)."""
    entries, arrays = entries_and_arrays(tree)
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
