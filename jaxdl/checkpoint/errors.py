"""The checkpoint errors: one base class, and what went wrong (damage, a different model, the disk)."""

from __future__ import annotations

import errno
import os


class CheckpointError(ValueError):
    """Base class of checkpoint errors."""


class CheckpointCorruptedError(CheckpointError):
    """The checkpoint's files do not match its manifest, or the manifest is malformed."""


class CheckpointMismatchError(CheckpointError):
    """The checkpoint's entries do not fit the template (a different architecture)."""


class RunDirectoryError(ValueError):
    """A training run's output directory does not fit the request: it holds a run (without
    ``resume``), no checkpoint to resume, files that are not a jaxdl run's (without
    ``overwrite``), is a file, cannot be written, or another run is writing into it.

    Attributes:
        remedy: what would fit, when the request can change to fit: "resume_or_overwrite" (the
            directory holds a run), "overwrite" (files that are not a run's), "start_anew"
            (``resume`` but nothing to resume); None otherwise. A command line phrases it in
            its own options (`jaxdl.recipes.cli.report_error`).
    """

    def __init__(self, message: str, *, remedy: str | None = None):
        super().__init__(message)
        self.remedy = remedy


class StorageError(OSError):
    """Writing to the disk failed: no space left, a read-only file system, no permission.

    An `OSError` whose message names the path and the cause (``errno`` is the cause's).
    """


#: What each cause is called in `StorageError` and `RunDirectoryError` messages.
CAUSES = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENOTDIR: "a path component is a file, not a directory",
    errno.EEXIST: "a file is in the way",
}


def cause_words(error: OSError) -> str:
    """How ``error``'s cause is said: `CAUSES`, else its strerror (or text)."""
    return CAUSES.get(error.errno) or error.strerror or str(error)


def storage_error(directory: str | os.PathLike, error: OSError, doing: str = "write") -> StorageError:
    """A `StorageError` naming ``directory`` and ``error``'s cause: ``no space left on device at
    <directory>: cannot <doing> there (<file>); ...`` or ``cannot <doing> in <directory>: <cause>
    (<file>).``; a `StorageError` is returned unchanged."""
    if isinstance(error, StorageError):
        return error
    where = f" ({error.filename})" if getattr(error, "filename", None) else ""
    message = (f"{cause_words(error)} at {os.fspath(directory)}: cannot {doing} there{where}; free space or "
               f"choose another directory." if error.errno in (errno.ENOSPC, errno.EDQUOT) else
               f"cannot {doing} in {os.fspath(directory)}: {cause_words(error)}{where}.")
    result = StorageError(message)  # one argument: str() is the message alone
    result.errno = error.errno
    return result
