"""A training run's output directory: one run at a time (a lock), and what belongs to a run.

`jaxdl.fit` writes ``<output_dir>/checkpoints/`` (a `CheckpointSet`, and ``mid_epoch``),
``metrics.csv`` and ``metrics.png``. This module says which entries those are
(`foreign_entries` lists the others), checks the directory before training (`check_not_file`,
`check_writable`), holds the run's lock (`run_lock`) and removes an old run when the caller
asks to overwrite it (`remove_run`).

The lock: ``<output_dir>/.jaxdl-run.lock``, an exclusive ``flock`` held for the whole run by
the process that writes (process 0 of a multi-process run), holding ``<pid> <host>``. A second
run into the same directory is refused at once (`RunDirectoryError` naming the directory and
the holder's pid). The operating system releases a ``flock`` when its process ends, however it
ends (a crash, SIGKILL), so a dead run never leaves the directory locked (only the file, which
the next run takes over). A run that ends removes the file while it still holds the lock; a
process that locked a file which is no longer the one at that path (removed meanwhile) lets it
go and opens the path again, so two runs never hold the lock at once.
"""

from __future__ import annotations

import contextlib
import errno
import os
import pathlib
import re
import socket
import uuid
from typing import Iterator

from jaxdl.checkpoint.errors import RunDirectoryError, cause_words
from jaxdl.checkpoint.files import remove
from jaxdl.checkpoint.layout import UUID_HEX

#: The lock file in the output directory (see the module docstring).
LOCK_NAME = ".jaxdl-run.lock"
#: The checkpoint directory of a run.
CHECKPOINTS = "checkpoints"
#: The metrics files of a run.
METRICS_FILES = ("metrics.csv", "metrics.png")

_RUN_ENTRY = re.compile(rf"{CHECKPOINTS}|metrics\.(csv|png)|{re.escape(LOCK_NAME)}|\.metrics\.(csv|png)\..*\.tmp")
#: What `jaxdl.checkpoint.CheckpointSet` and fit's ``mid_epoch`` checkpoint write in ``checkpoints/``.
_CHECKPOINT_ENTRY = re.compile(
    rf"last|best|head|mid_epoch|epoch-[0-9]{{6,}}|\.head-{UUID_HEX}|\.tmp-{UUID_HEX}"
    rf"|\.(head|last|best)\.link-{UUID_HEX}|\.mid_epoch\.(data|link|replaced)-{UUID_HEX}")


def check_not_file(output_dir: pathlib.Path, caller: str = "fit") -> None:
    """Raises RunDirectoryError when ``output_dir`` or its ``checkpoints`` is a file (or another non-directory)."""
    for path in (output_dir, output_dir / CHECKPOINTS):
        if os.path.lexists(path) and not path.is_dir():
            what = "the output_dir" if path == output_dir else "its checkpoint directory"
            raise RunDirectoryError(f"{caller}: {path} is a file, not a directory ({what}); move it away or choose "
                                    f"another output directory.")
        if not path.exists():
            return


def foreign_entries(output_dir: pathlib.Path) -> list[str]:
    """The entries of ``output_dir`` (and its ``checkpoints/``) that a jaxdl run does not write, sorted."""
    found = []
    for directory, pattern, prefix in ((output_dir, _RUN_ENTRY, ""),
                                       (output_dir / CHECKPOINTS, _CHECKPOINT_ENTRY, f"{CHECKPOINTS}/")):
        if directory.is_dir():
            found += [prefix + name for name in os.listdir(directory) if not pattern.fullmatch(name)]
    return sorted(found)


def has_epochs(output_dir: pathlib.Path) -> bool:
    """Whether ``checkpoints/`` holds an ``epoch-*`` directory (committed or not)."""
    directory = output_dir / CHECKPOINTS
    return directory.is_dir() and any(re.fullmatch("epoch-[0-9]{6,}", name) for name in os.listdir(directory))


def directory_error(caller: str, path: pathlib.Path, error: OSError) -> RunDirectoryError:
    """A RunDirectoryError saying that ``path`` cannot be written, and why."""
    advice = ("free space or choose another output directory" if error.errno in (errno.ENOSPC, errno.EDQUOT) else
              "choose a directory you can write to")
    return RunDirectoryError(f"{caller}: cannot write the output directory {path}: {cause_words(error)}; {advice}.")


def check_writable(directory: pathlib.Path, caller: str = "fit") -> None:
    """Raises RunDirectoryError unless a file can be created (and removed) in the existing ``directory``."""
    probe = directory / f".jaxdl-write-test-{uuid.uuid4().hex}"
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        probe.unlink()
    except OSError as error:
        raise directory_error(caller, directory, error) from error


@contextlib.contextmanager
def run_lock(output_dir: pathlib.Path, caller: str = "fit") -> Iterator[None]:
    """Creates ``output_dir`` if needed and holds its run lock for the block.

    Raises:
        RunDirectoryError: when another process holds the lock (naming its pid and host), or
            the directory cannot be created or written (naming the cause).
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover (Windows: no flock)
        yield
        return
    path = output_dir / LOCK_NAME
    fd = _locked_file(path, output_dir, caller, fcntl)
    try:
        _write_holder(fd)
        yield
    finally:
        with contextlib.suppress(OSError):
            if _is_current(fd, path):
                path.unlink()  # while still locked: see the module docstring
        os.close(fd)  # releases the lock


def _locked_file(path: pathlib.Path, output_dir: pathlib.Path, caller: str, fcntl) -> int:
    """An open descriptor of the lock file at ``path``, locked by this process."""
    for _ in range(100):
        try:
            output_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as error:
            raise directory_error(caller, output_dir, error) from error
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise RunDirectoryError(f"{caller}: {output_dir} is in use by another training run ({holder}); wait "
                                    f"until it ends, stop it, or choose another output directory.") from None
        except OSError:  # a file system without flock: no lock
            return fd
        if _is_current(fd, path):
            return fd
        os.close(fd)  # the previous holder removed that file after we opened it: open the path again
    raise RunDirectoryError(f"{caller}: could not lock {path}: it was replaced 100 times while being locked.")


def _is_current(fd: int, path: pathlib.Path) -> bool:
    """Whether ``fd`` is the file now at ``path``."""
    try:
        opened, current = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (opened.st_dev, opened.st_ino) == (current.st_dev, current.st_ino)


def _write_holder(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)


def _holder(fd: int) -> str:
    """``pid N on host H`` from the lock file, or what is known."""
    try:
        words = os.pread(fd, 200, 0).decode("utf-8", "replace").split()
    except OSError:
        words = []
    if len(words) >= 2 and words[0].isdigit():
        return f"pid {words[0]} on host {words[1]}"
    return "its pid is not recorded yet"


def remove_run(output_dir: pathlib.Path) -> list[str]:
    """Removes what a jaxdl run wrote in ``output_dir`` (its checkpoints, metrics files and their
    temporaries; nothing else, and not the lock); returns the removed names."""
    removed = []
    checkpoints = output_dir / CHECKPOINTS
    if checkpoints.is_dir():
        for name in sorted(os.listdir(checkpoints)):
            if _CHECKPOINT_ENTRY.fullmatch(name):
                remove(checkpoints / name)
                removed.append(f"{CHECKPOINTS}/{name}")
    for name in sorted(os.listdir(output_dir)) if output_dir.is_dir() else []:
        if name != LOCK_NAME and name != CHECKPOINTS and _RUN_ENTRY.fullmatch(name):
            remove(output_dir / name)
            removed.append(name)
    return removed
