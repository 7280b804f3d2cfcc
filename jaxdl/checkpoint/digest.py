"""A step's digest: ``jaxdl_digest.json``, the size and sha256 of every file orbax wrote.

Orbax checks no checksums: a flipped byte in a raw TensorStore chunk would load as a silently
different array. So every save goes through `DigestedRename`, orbax's own atomic-rename commit
(`AtomicRenameTemporaryPath`) with one step added: before the temporary directory is renamed
to the step's, the size and sha256 of every file in it are written to ``jaxdl_digest.json``
(fsynced). The digest is inside the same rename, so a step directory either has a complete
digest or does not exist. Orbax writes two more files during the rename itself
(``_CHECKPOINT_METADATA``: its timestamps and the metrics its preservation policy ranks,
``commit_success.txt``); they hold no arrays and are not digested.

`verify` re-hashes a step before anything is read: a missing, extra, truncated or edited
file, a symbolic link, or a damaged digest is a `CheckpointCorruptedError` naming the file.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import pathlib

from jaxdl.checkpoint.backend import orbax
from jaxdl.checkpoint.errors import CheckpointCorruptedError
from jaxdl.checkpoint.faults import fault_point

DIGEST_NAME = "jaxdl_digest.json"
#: Orbax's files written during the commit itself (see the module docstring).
UNDIGESTED = ("_CHECKPOINT_METADATA", "commit_success.txt")


def _files(root: pathlib.Path) -> dict[str, pathlib.Path]:
    """Every file under ``root`` by relative path, but the digest and `UNDIGESTED` at the top."""
    found = {}
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            path = pathlib.Path(directory) / name
            relative = path.relative_to(root).as_posix()
            if path.is_symlink():
                raise CheckpointCorruptedError(f"Checkpoint {root}: {relative} is a symbolic link; a checkpoint "
                                               f"holds plain files only.")
            if name in files and relative not in (DIGEST_NAME, *UNDIGESTED):
                found[relative] = path
    return found


def _hash(path: pathlib.Path) -> tuple[int, str]:
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
            size += len(block)
    return size, digest.hexdigest()


def write(root: pathlib.Path) -> None:
    """Writes ``root/jaxdl_digest.json`` for the files in ``root`` (fsynced)."""
    files = {relative: list(_hash(path)) for relative, path in sorted(_files(root).items())}
    with open(root / DIGEST_NAME, "w", encoding="utf-8") as file:
        json.dump({"format": "jaxdl.checkpoint.digest", "files": files}, file, indent=1)
        file.flush()
        os.fsync(file.fileno())


def verify(root: pathlib.Path) -> None:
    """Raises CheckpointCorruptedError unless every file in ``root`` matches its digest."""
    try:
        recorded = json.loads((root / DIGEST_NAME).read_text(encoding="utf-8"))["files"]
        recorded = {str(name): (int(size), str(sha)) for name, (size, sha) in recorded.items()}
    except FileNotFoundError:
        raise CheckpointCorruptedError(f"Checkpoint {root}: {DIGEST_NAME} is missing (not a complete jaxdl "
                                       f"checkpoint).") from None
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as error:
        raise CheckpointCorruptedError(f"Checkpoint {root}: {DIGEST_NAME} is damaged ({error}).") from None
    present = _files(root)
    for name in sorted(set(recorded) | set(present)):
        if name not in present:
            raise CheckpointCorruptedError(f"Checkpoint {root}: {name} is missing.")
        if name not in recorded:
            raise CheckpointCorruptedError(f"Checkpoint {root}: {name} is not part of the checkpoint (an extra "
                                           f"file).")
        size, sha = _hash(present[name])
        if size != recorded[name][0]:
            raise CheckpointCorruptedError(f"Checkpoint {root}: {name} has {size} bytes, the digest says "
                                           f"{recorded[name][0]} (truncated or extended).")
        if sha != recorded[name][1]:
            raise CheckpointCorruptedError(f"Checkpoint {root}: {name} was changed (its sha256 differs from the "
                                           f"digest's).")


@functools.cache
def renaming_class():
    """`DigestedRename`: built on first use, as orbax is imported on first use."""
    orbax()
    from orbax.checkpoint._src.path import atomicity

    class DigestedRename(atomicity.AtomicRenameTemporaryPath):
        """Orbax's atomic rename, with the digest written into the step just before it."""

        async def finalize(self):
            top = (pathlib.Path(self.get()) / "_CHECKPOINT_METADATA").exists()  # not an item's directory
            if top:
                fault_point("items written")
                write(pathlib.Path(self.get()))
                fault_point("digest written")
            await super().finalize()
            if top:
                fault_point("committed")

    return DigestedRename
