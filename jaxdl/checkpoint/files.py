"""Small files written atomically (``metrics.csv``, ``metrics.png``): a temporary file, fsync, rename.

Files follow the process umask (nothing is forced to 0600).
"""

from __future__ import annotations

import os
import pathlib
import uuid

from jaxdl.checkpoint.errors import storage_error


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Writes ``data`` to ``path`` through ``.<name>.<random>.tmp`` beside it, fsynced and renamed:
    ``path`` always holds either its old content or the complete new one.

    Raises:
        StorageError: (an OSError) naming the directory and the cause when the disk refuses
            (full, read-only, no permission).
    """
    path = pathlib.Path(path)
    temp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    except OSError as error:
        temp.unlink(missing_ok=True)
        raise storage_error(path.parent, error, f"write {path.name}") from error
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Writes ``text`` (UTF-8) to ``path`` atomically (`write_bytes_atomic`)."""
    write_bytes_atomic(path, text.encode("utf-8"))
