"""A training run's output directory: what belongs to a run, checked before training.

`jaxdl.fit` writes ``<output_dir>/checkpoints/`` (`jaxdl.checkpoint.RunCheckpoints`: one
``step_<n>`` directory per step, and orbax's temporary ``step_<n>.orbax-checkpoint-tmp*``
while one is written), ``metrics.csv`` and ``metrics.png``. `foreign_entries` lists the
others; `check_not_file` checks the directory; `run_lock` keeps a second run out (and finds
a directory it cannot write); `remove_run` removes an old run when asked to overwrite it.

The lock: an exclusive ``flock`` of ``<output_dir>/.jaxdl-run.lock`` (holding ``<pid>
<host>``), held for the whole run by the process that writes, and removed at its end. The
operating system releases a ``flock`` when its process ends, however it ends, so a killed run
never leaves the directory locked (only the file, which the next run takes over).
"""

from __future__ import annotations

import contextlib
import errno
import os
import pathlib
import re
import shutil
import socket
from typing import Iterator

from jaxdl.checkpoint.errors import RunDirectoryError, cause_words

#: The checkpoint directory of a run.
CHECKPOINTS = "checkpoints"
#: The metrics files of a run.
METRICS_FILES = ("metrics.csv", "metrics.png")
#: The lock file in the output directory (see the module docstring).
LOCK_NAME = ".jaxdl-run.lock"

_RUN_ENTRY = re.compile(rf"{CHECKPOINTS}|metrics\.(csv|png)|\.metrics\.(csv|png)\..*\.tmp|{re.escape(LOCK_NAME)}")
_CHECKPOINT_ENTRY = re.compile(r"step_[0-9]{8,}(\.orbax-checkpoint-tmp.*)?")


def checkpoints_dir(output_dir) -> pathlib.Path:
    """The checkpoint directory of the run directory ``output_dir``."""
    return pathlib.Path(output_dir) / CHECKPOINTS


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


def remove_run(output_dir: pathlib.Path) -> list[str]:
    """Removes what a jaxdl run wrote in ``output_dir`` (its checkpoints, metrics files and their
    temporaries; nothing else); returns the removed names."""
    removed = []
    checkpoints = output_dir / CHECKPOINTS
    for directory, pattern, prefix in ((checkpoints, _CHECKPOINT_ENTRY, f"{CHECKPOINTS}/"),
                                       (output_dir, _RUN_ENTRY, "")):
        for name in sorted(os.listdir(directory)) if directory.is_dir() else []:
            path = directory / name
            if name not in (CHECKPOINTS, LOCK_NAME) and pattern.fullmatch(name):
                shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
                removed.append(prefix + name)
    return removed


@contextlib.contextmanager
def run_lock(output_dir: pathlib.Path, caller: str = "fit") -> Iterator[None]:
    """Holds ``output_dir``'s run lock for the block (creating the directory); the lock file is
    removed at the end while still locked.

    Raises:
        RunDirectoryError: when another process holds it (naming its pid and host), or the
            directory cannot be created or written (naming the cause).
    """
    import fcntl

    path = output_dir / LOCK_NAME
    while True:
        try:
            output_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as error:
            advice = ("free space or choose another output directory" if error.errno in (errno.ENOSPC, errno.EDQUOT)
                      else "choose a directory you can write to")
            raise RunDirectoryError(f"{caller}: cannot write the output directory {output_dir}: "
                                    f"{cause_words(error)}; {advice}.") from error
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            words = os.pread(fd, 200, 0).decode("utf-8", "replace").split()
            os.close(fd)
            holder = f"pid {words[0]} on host {words[1]}" if len(words) >= 2 else "its pid is not recorded yet"
            raise RunDirectoryError(f"{caller}: {output_dir} is in use by another training run ({holder}); wait "
                                    f"until it ends, stop it, or choose another output directory.") from None
        if _same_file(fd, path):
            break
        os.close(fd)  # the previous holder removed that file after we opened it: open the path again
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
        yield
    finally:
        if _same_file(fd, path):
            path.unlink(missing_ok=True)
        os.close(fd)  # releases the lock


def _same_file(fd: int, path: pathlib.Path) -> bool:
    try:
        opened, current = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (opened.st_dev, opened.st_ino) == (current.st_dev, current.st_ino)
