"""Files: atomic writes, fsync, hashing, listing, links swapped atomically, directory locks.

Files follow the process umask (nothing is forced to 0600).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pathlib
import shutil
import uuid
from typing import Any, Callable, Iterator

from jaxdl.checkpoint.errors import CheckpointError, storage_error
from jaxdl.checkpoint.faults import fault_point


def fsync_directory(directory: pathlib.Path) -> None:
    """Makes the entries of ``directory`` durable (no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomic(path: pathlib.Path, write: Callable[[Any], Any]) -> None:
    """Calls ``write(binary_file)`` on a temporary file next to ``path``, then renames it.

    The temporary file is created with mode 0666 minus the umask, fsynced before
    ``os.replace`` and removed if ``write`` fails, so ``path`` always holds either its old
    content or the complete new one.

    Raises:
        StorageError: (an OSError) naming the directory and the cause when the disk refuses
            (full, read-only, no permission).
    """
    try:
        _write_atomic(path, write)
    except OSError as error:
        raise storage_error(path.parent, error, f"write {path.name}") from error


def _write_atomic(path: pathlib.Path, write: Callable[[Any], Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Writes ``data`` to ``path`` atomically (temporary file, fsync, rename)."""
    write_atomic(pathlib.Path(path), lambda file: file.write(data))


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Writes ``text`` (UTF-8) to ``path`` atomically (temporary file, fsync, rename)."""
    write_bytes_atomic(path, text.encode("utf-8"))


def hash_file(path: pathlib.Path, *, sync: bool = False) -> tuple[int, str]:
    """(size, sha256) of a file; with ``sync`` the file is fsynced too."""
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
            size += len(block)
        if sync:
            os.fsync(file.fileno())
    return size, digest.hexdigest()


def list_files(root: pathlib.Path, error: type[CheckpointError]) -> list[str]:
    """The sorted relative POSIX paths of all files under ``root``.

    Raises ``error`` for a symbolic link or anything that is not a file or a directory.
    """
    found = []

    def walk(directory: pathlib.Path, prefix: str) -> None:
        with os.scandir(directory) as entries:
            for entry in entries:
                relative = prefix + entry.name
                if entry.is_symlink():
                    raise error(f"Checkpoint {root}: {relative} is a symbolic link; checkpoints hold plain "
                                f"files only.")
                if entry.is_dir(follow_symlinks=False):
                    walk(pathlib.Path(entry.path), relative + "/")
                elif entry.is_file(follow_symlinks=False):
                    found.append(relative)
                else:
                    raise error(f"Checkpoint {root}: {relative} is not a regular file.")

    walk(root, "")
    return sorted(found)


def sync_tree(root: pathlib.Path) -> None:
    """fsyncs every directory under ``root`` (the files are fsynced while hashed)."""
    for directory, _, _ in os.walk(root):
        fsync_directory(pathlib.Path(directory))


def remove(path: pathlib.Path) -> None:
    """Removes a link, file or directory tree; missing is fine."""
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    elif path.is_dir():
        shutil.rmtree(path, ignore_errors=True)


def replace_link(link: pathlib.Path, target: str) -> None:
    """Points ``link`` at the relative ``target`` atomically (temporary link + os.replace)."""
    temp = link.parent / f".{link.name}.link-{uuid.uuid4().hex}"
    os.symlink(target, temp)
    try:
        fault_point("link created")
        os.replace(temp, link)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    fsync_directory(link.parent)


@contextlib.contextmanager
def locked(directory: pathlib.Path, *, blocking: bool = True) -> Iterator[bool]:
    """Holds an exclusive advisory lock (flock) on ``directory``; yields whether it got it.

    The lock serializes writers in one parent directory (threads and processes alike) so
    that one writer never removes another's temporary files. Where ``fcntl`` or directory
    locks are unavailable it yields True without locking.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover (Windows)
        yield True
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        except OSError:  # a file system without flock
            yield True
            return
        yield True
    finally:
        os.close(fd)  # releases the lock
