"""MNIST through tensorflow-datasets, prepared and read without TensorFlow.

tfds's own `MNIST` builder needs TensorFlow in exactly two places when it prepares the data:
it extracts the downloaded ``.gz`` files with ``tf.io.gfile`` (``download_and_extract``) and
its ``Image`` feature encodes NumPy images to PNG with ``tf.image.encode_png``. `MNIST` below
subclasses tfds's builder and replaces only those two steps: it asks tfds's download manager
for the compressed files (``dl_manager.download``, which still validates tfds's registered
sha256 checksums) and parses them with Python's ``gzip``, and it hands the ``Image`` feature
PNG bytes encoded with pillow (the feature stores bytes unchanged). Name ("mnist"), version
(3.0.1), features, supervised keys, split order and checksums are tfds's. The data is
written as ``array_record`` and read back with ``tfds.data_source``-style random access
(`ArrayRecordDataSource`), which needs no TensorFlow either.

Where the files come from (nothing touches the network unless asked):

* ``data_dir`` (default: the repository's bundled ``data/mnist/``): a directory holding the
  four canonical files. They are given to tfds as its ``manual_dir``; tfds finds them by
  their registered file names and checks their sha256 before use. A missing file is an
  error that names it, never a download.
* ``download=True``: tfds downloads the files from its registered mirror (with the same
  checksum checks) into ``<cache_dir>/downloads``.

Prepared data goes to ``cache_dir`` (default ``$JAXDL_CACHE_DIR/tensorflow_datasets``, where
``JAXDL_CACHE_DIR`` defaults to ``~/.cache/jaxdl``), keyed by the source files::

    <cache_dir>/mnist-<key>/mnist/3.0.1/   tfds's layout: dataset_info.json, features.json,
                                           mnist-{train,test}.array_record-*
    <cache_dir>/mnist-<key>/source.json    the four file names and sha256s it was prepared from
    <cache_dir>/downloads/                 tfds's downloads (``download=True`` only)

``<key>`` is `source_key`: the first 16 hex digits of a sha256 over the four files' names and
sha256s. Every load hashes the files in ``data_dir`` again (about 15 ms for the 11.5 MB), so
prepared data is only ever reused for the very files ``data_dir`` holds now: other files get
another key and are prepared anew (and checked against tfds's checksums); a missing
``data_dir`` is an error even when a cache exists. The canonical files have one key
(``source_key(registered_sha256s())``, from tfds's registered checksums), so
``download=True`` and any directory holding the canonical files share one prepared copy. A
cache written by earlier jaxdl versions (``<cache_dir>/mnist/3.0.1/``, not keyed) is not
used (delete it to reclaim its 26 MB).

Several processes may prepare at once (two first runs started together, the processes of a
multi-process run): preparing holds an exclusive lock (``flock``) on
``<cache_dir>/.mnist-<key>.lock``; a second process waits for it (saying so once, through
``log``, with the holder's pid; at most `PREPARE_WAIT_SECONDS`), then finds the data prepared
and uses it. The operating system releases the lock of a process that dies, so a killed
preparation never blocks the next one (which prepares anew; tfds only renames complete data
into place).

Preparing (about 20 s) happens once per key and prints one line of jaxdl's own (to stderr,
or through the ``log`` callable of `prepare_mnist` / `load_mnist`), for example::

    preparing MNIST from data/mnist into /home/me/.cache/jaxdl/tensorflow_datasets/mnist-<key>, once (about 20 s)

and nothing of tensorflow-datasets: its progress bars are switched off
(``tfds.display_progress_bar``), its absl and Python loggers are raised to ERROR, its own
"Downloading and preparing" / "downloaded and prepared" lines are not emitted, and whatever
else it would write to ``sys.stdout`` / ``sys.stderr`` is captured, all only while it
prepares (and restored afterwards; if preparing fails, the captured text is written to stderr
before the error propagates). Loading prepared data prints nothing.

Example:
    >>> splits = load_mnist()                  # bundled files, prepared once into the cache
    >>> splits.train.images.shape, splits.train.labels.dtype
    ((55000, 28, 28), dtype('int32'))
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import logging
import math
import os
import pathlib
import socket
import struct
import sys
import time
import urllib.parse
import zipfile
from typing import Callable, NamedTuple

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image
from tensorflow_datasets.core.utils import tqdm_utils
from tensorflow_datasets.image_classification import mnist as tfds_mnist

from jaxdl.cache_dir import jaxdl_cache_root

#: The canonical file of each part of MNIST (the names tfds registers for them).
MNIST_FILES = {
    "train_data": tfds_mnist._MNIST_TRAIN_DATA_FILENAME,
    "train_labels": tfds_mnist._MNIST_TRAIN_LABELS_FILENAME,
    "test_data": tfds_mnist._MNIST_TEST_DATA_FILENAME,
    "test_labels": tfds_mnist._MNIST_TEST_LABELS_FILENAME,
}

#: The files bundled with the repository (present in a source checkout).
BUNDLED_DATA_DIR = pathlib.Path(__file__).resolve().parents[2] / "data" / "mnist"

#: IDX magic numbers (big-endian): unsigned bytes, 3 dimensions for images, 1 for labels.
IDX_IMAGES_MAGIC = 2051
IDX_LABELS_MAGIC = 2049

IMAGE_SIZE = 28


def default_cache_dir() -> pathlib.Path:
    """``$JAXDL_CACHE_DIR/tensorflow_datasets``; ``JAXDL_CACHE_DIR`` defaults to ~/.cache/jaxdl."""
    return jaxdl_cache_root() / "tensorflow_datasets"


# ----------------------------------------------------------------------------------------
# The cache key: the source files' sha256s.


def file_sha256(path) -> str:
    """The hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def source_sha256s(directory) -> dict[str, str]:
    """{canonical file name: sha256} of the four files in ``directory``.

    Raises:
        FileNotFoundError: naming the files missing from ``directory`` (`require_mnist_files`).
    """
    directory = pathlib.Path(directory)
    require_mnist_files(directory)
    return {name: file_sha256(directory / name) for name in sorted(MNIST_FILES.values())}


def registered_sha256s() -> dict[str, str]:
    """{canonical file name: sha256} as tensorflow-datasets registers them for MNIST."""
    return {info.filename: info.checksum for info in MNIST.url_infos.values()}


def source_key(sha256s: dict[str, str]) -> str:
    """The cache key of four source files: 16 hex digits of a sha256 over names and sha256s.

    The hashed text is the ``sha256sum`` listing of the files sorted by name (``<sha256>  <name>``
    lines), so the canonical files' key is the start of the sha256 of ``data/mnist/SHA256SUMS``.
    """
    listing = "".join(f"{sha256s[name]}  {name}\n" for name in sorted(sha256s))
    return hashlib.sha256(listing.encode("ascii")).hexdigest()[:16]


def prepared_dir(cache_dir, key: str) -> pathlib.Path:
    """``<cache_dir>/mnist-<key>``: tfds's ``data_dir`` for the files of ``key``."""
    return pathlib.Path(cache_dir) / f"mnist-{key}"


#: The name of the manifest next to tfds's prepared data (see the module docstring).
SOURCE_MANIFEST = "source.json"


# ----------------------------------------------------------------------------------------
# Quiet preparation: tfds's progress bars, logs and prints, switched off while it prepares.


#: The loggers tfds writes through (absl's is the one tfds uses; Python's for its dependencies).
QUIET_LOGGERS = ("absl", "tensorflow_datasets", "etils")


@contextlib.contextmanager
def quiet_tfds():
    """Silences tensorflow-datasets for the duration of the block, then restores everything.

    Switches tfds's progress bars off with ``tfds.display_progress_bar(False)``, raises the
    `QUIET_LOGGERS` to ERROR, and captures ``sys.stdout`` / ``sys.stderr`` (what tfds prints
    despite the switches). On an exception the captured text is written to the real stderr
    before the exception propagates, so nothing that explains a failure is lost.
    """
    bars = getattr(tqdm_utils, "_active", True)
    loggers = [logging.getLogger(name) for name in QUIET_LOGGERS]
    levels = [logger.level for logger in loggers]
    captured = io.StringIO()
    stderr = sys.stderr
    tfds.display_progress_bar(False)
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(captured), contextlib.redirect_stderr(captured):
            yield
    except BaseException:
        if captured.getvalue():
            stderr.write(captured.getvalue())
            stderr.flush()
        raise
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)
        tfds.display_progress_bar(bars)


def _shown(path) -> str:
    """``path`` relative to the working directory when it is inside it, else absolute."""
    path = pathlib.Path(path).expanduser().absolute()
    try:
        return os.fspath(path.relative_to(pathlib.Path.cwd()))
    except ValueError:
        return os.fspath(path)


def _stderr_line(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------
# The two steps that replace TensorFlow: IDX parsing with gzip and PNG encoding with pillow.


def read_idx_images(path, expected_count: int | None = None) -> np.ndarray:
    """Reads a gzipped IDX image file (magic 2051) as uint8 of shape (count, rows, cols).

    Raises:
        ValueError: for a wrong magic number, a truncated file, or an unexpected count.
    """
    return _read_idx(path, IDX_IMAGES_MAGIC, 3, expected_count, "pixel bytes")


def read_idx_labels(path, expected_count: int | None = None) -> np.ndarray:
    """Reads a gzipped IDX label file (magic 2049) as uint8 of shape (count,).

    Raises:
        ValueError: for a wrong magic number, a truncated file, or an unexpected count.
    """
    return _read_idx(path, IDX_LABELS_MAGIC, 1, expected_count, "label bytes")


def _read_idx(path, expected_magic: int, ndim: int, expected_count, what: str) -> np.ndarray:
    """An unsigned-byte IDX file: big-endian magic and ``ndim`` sizes, then the data."""
    header_size = 4 * (1 + ndim)
    with gzip.open(path, "rb") as file:
        header = file.read(header_size)
        if len(header) != header_size:
            raise ValueError(f"{path}: truncated IDX header ({len(header)} of {header_size} bytes).")
        magic, *shape = struct.unpack(">" + "I" * (1 + ndim), header)
        if magic != expected_magic:
            raise ValueError(f"{path}: IDX magic number {magic}, expected {expected_magic}.")
        if expected_count is not None and shape[0] != expected_count:
            raise ValueError(f"{path}: {shape[0]} entries, expected {expected_count}.")
        data = file.read()
    if len(data) != math.prod(shape):
        raise ValueError(f"{path}: expected {'x'.join(map(str, shape))} {what}, got {len(data)}.")
    return np.frombuffer(data, np.uint8).reshape(shape)


def encode_png(image: np.ndarray) -> bytes:
    """PNG bytes (8-bit grey) of a uint8 (rows, cols) image, encoded with pillow."""
    if image.dtype != np.uint8 or image.ndim != 2:
        raise ValueError(f"encode_png: expected a uint8 (rows, cols) image, got {image.dtype} {image.shape}.")
    buffer = io.BytesIO()
    Image.fromarray(image, mode="L").save(buffer, format="png")
    return buffer.getvalue()


def decode_png(data: bytes) -> np.ndarray:
    """The uint8 (rows, cols) image of PNG bytes written by `encode_png`."""
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image, dtype=np.uint8)


# ----------------------------------------------------------------------------------------
# The builder.


class MNIST(tfds_mnist.MNIST, skip_registration=True):
    """tfds's MNIST builder with TensorFlow-free preparation (see the module docstring).

    Not registered with tfds (``tfds.builder("mnist")`` still returns tfds's class); it
    reads and writes the same ``mnist/3.0.1`` data.

    Args:
        source_dir: the directory with the four canonical ``.gz`` files, or None to let tfds
            download them (only with `prepare_mnist(download=True)`).
        verify_checksums: check the files against tfds's registered sha256 (the default).
            False reads ``source_dir`` directly, without checks and without tfds's download
            manager: only for test fixtures (small fake IDX files). Such files have their
            own cache key (`source_key`), so real runs never read what they prepare.
        **kwargs: tfds builder arguments (``data_dir``, ``file_format``).
    """

    name = "mnist"

    def __init__(self, *, source_dir=None, verify_checksums: bool = True, **kwargs):
        self.source_dir = None if source_dir is None else pathlib.Path(source_dir)
        self.verify_checksums = verify_checksums
        if not verify_checksums and self.source_dir is None:
            raise ValueError("MNIST: verify_checksums=False needs a source_dir (nothing is downloaded unchecked).")
        super().__init__(**kwargs)

    @tfds.core.utils.classproperty
    @classmethod
    def _checksums_path(cls):
        # tfds looks for checksums next to the builder's module; use tfds's own MNIST file.
        return tfds.core.utils.tfds_path() / "url_checksums" / "mnist.txt"

    def _log_download_bytes(self) -> None:
        """Says nothing: `prepare_mnist` prints jaxdl's own line instead of tfds's."""

    def _log_download_done(self) -> None:
        """Says nothing (tfds's "downloaded and prepared" line)."""

    def _split_generators(self, dl_manager):
        """Train then test, as tfds's builder; files from `_source_paths`."""
        paths = self._source_paths(dl_manager)
        canonical = self.verify_checksums
        splits = ((tfds.Split.TRAIN, "train", tfds_mnist._TRAIN_EXAMPLES),
                  (tfds.Split.TEST, "test", tfds_mnist._TEST_EXAMPLES))
        return [
            tfds.core.SplitGenerator(
                name=split,
                gen_kwargs=dict(
                    num_examples=examples if canonical else None,
                    data_path=paths[f"{prefix}_data"],
                    label_path=paths[f"{prefix}_labels"],
                ),
            )
            for split, prefix, examples in splits
        ]

    def _source_paths(self, dl_manager) -> dict:
        """The four compressed files, checksum-validated by tfds unless disabled."""
        if self.source_dir is not None:
            require_mnist_files(self.source_dir)
            if not self.verify_checksums:
                return {part: self.source_dir / name for part, name in MNIST_FILES.items()}
        # tfds takes each file from manual_dir (= source_dir) by its registered name, or
        # downloads it when source_dir is None; either way it checks size and sha256.
        urls = {part: urllib.parse.urljoin(self.URL, name) for part, name in MNIST_FILES.items()}
        return dl_manager.download(urls)

    def _generate_examples(self, num_examples, data_path, label_path):
        """Yields (index, {"image": PNG bytes, "label": int}) in file order, as tfds's builder."""
        images = read_idx_images(data_path, num_examples)
        labels = read_idx_labels(label_path, num_examples)
        if images.shape[0] != labels.shape[0]:
            raise ValueError(f"{data_path} has {images.shape[0]} images but {label_path} {labels.shape[0]} labels.")
        if images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
            raise ValueError(f"{data_path}: images of {images.shape[1:]}, expected {(IMAGE_SIZE, IMAGE_SIZE)}.")
        for index, (image, label) in enumerate(zip(images, labels)):
            yield index, {"image": encode_png(image), "label": int(label)}


def require_mnist_files(directory) -> None:
    """Raises FileNotFoundError naming the canonical files missing from ``directory``."""
    directory = pathlib.Path(directory)
    missing = [name for name in MNIST_FILES.values() if not (directory / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"MNIST files missing from {directory}: {', '.join(missing)}. Put the four canonical "
            f"files there ({', '.join(MNIST_FILES.values())}), use a directory that has them, or "
            f"let tensorflow-datasets download them (download=True)."
        )


class MNISTChecksumError(ValueError):
    """A local MNIST file is damaged or not the canonical one (its sha256 differs)."""


def check_canonical(directory: pathlib.Path, sha256s: dict[str, str]) -> None:
    """Raises `MNISTChecksumError` naming the first of ``sha256s`` (file name -> sha256 of the
    file in ``directory``) that is not tensorflow-datasets' registered sha256 for it."""
    for name, expected in sorted(registered_sha256s().items()):
        actual = sha256s.get(name)
        if actual is not None and actual != expected:
            raise MNISTChecksumError(
                f"the MNIST file {directory / name} is damaged or not the canonical one: its SHA256 is {actual}, "
                f"MNIST's is {expected}. Replace it with the original file (data/mnist/SHA256SUMS lists the four "
                f"SHA256s), or read MNIST from a directory that has the canonical files.")


def prepare_mnist(data_dir=None, *, cache_dir=None, download: bool = False,
                  verify_checksums: bool = True, log: Callable[[str], None] | None = None) -> MNIST:
    """Prepares MNIST as array_record under ``cache_dir`` once per source, and returns the builder.

    The files in ``data_dir`` are checked (all four present) and hashed on every call; the
    prepared data lives in ``<cache_dir>/mnist-<key>/mnist/3.0.1/`` with ``<key>`` =
    `source_key` of their sha256s (``download=True``: of tfds's registered sha256s), so a
    cache is only reused for the same files (the layout is in the module docstring).

    Preparing prints exactly one line, through ``log`` (default: to ``sys.stderr``), e.g.
    ``preparing MNIST from data/mnist into <cache_dir>/mnist-<key>, once (about 20 s)``
    (with ``download=True``: ``downloading MNIST with tensorflow-datasets into
    <cache_dir>/downloads and preparing it into <cache_dir>/mnist-<key>, once``), and nothing
    of tensorflow-datasets (`quiet_tfds`); paths inside the working directory are shown
    relative to it. Reusing prepared data prints nothing.

    Args:
        data_dir: the directory with the four ``.gz`` files; default the bundled
            ``data/mnist``. Ignored when ``download`` is True.
        cache_dir: where the prepared data (and tfds's downloads) go; default
            `default_cache_dir`.
        download: let tfds download the files from its registered mirror.
        verify_checksums: see `MNIST`; only test fixtures turn it off.
        log: called with the one line said before preparing; default prints it to stderr.

    Another process preparing the same files at the same time is waited for (module
    docstring: `preparation_lock`), and its result used.

    Raises:
        FileNotFoundError: when ``data_dir`` lacks one of the four files (nothing is
            downloaded), whether or not prepared data exists.
        TimeoutError: when another process preparing the same files holds the lock for more
            than `PREPARE_WAIT_SECONDS`.
        MNISTChecksumError: (a ValueError) when a file in ``data_dir`` is not the canonical
            one, naming it and both sha256s (nothing is prepared, nothing downloaded).
        tensorflow_datasets.core.download.download_manager.NonMatchingChecksumError: when a
            downloaded file is not the canonical one.
    """
    log = _stderr_line if log is None else log
    cache_dir = pathlib.Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    if download:
        source_dir, sha256s = None, registered_sha256s()
    else:
        source_dir = pathlib.Path(data_dir or BUNDLED_DATA_DIR).expanduser()
        sha256s = source_sha256s(source_dir)
        if verify_checksums:
            check_canonical(source_dir, sha256s)
    key = source_key(sha256s)
    data_root = prepared_dir(cache_dir, key)
    builder, prepared = _builder(source_dir, verify_checksums, data_root)
    if prepared:
        return builder
    with preparation_lock(cache_dir / f".mnist-{key}.lock", log):
        builder, prepared = _builder(source_dir, verify_checksums, data_root)  # another process may have prepared it
        if not prepared:
            _prepare(builder, source_dir, cache_dir, data_root, key, sha256s, verify_checksums, log)
    return builder


def _builder(source_dir, verify_checksums: bool, data_root: pathlib.Path) -> tuple[MNIST, bool]:
    """The builder for ``data_root`` and whether its data is prepared (tfds silenced)."""
    with quiet_tfds():
        builder = MNIST(source_dir=source_dir, verify_checksums=verify_checksums, data_dir=os.fspath(data_root),
                        file_format="array_record")
        return builder, builder.is_prepared()


#: How long `prepare_mnist` waits for another process preparing the same files (`preparation_lock`).
PREPARE_WAIT_SECONDS = 900.0


@contextlib.contextmanager
def preparation_lock(path: pathlib.Path, log: Callable[[str], None], timeout: float | None = None):
    """Holds an exclusive ``flock`` on ``path`` (created with its directory) for the block.

    While another process holds it, says once through ``log`` that it waits (naming that
    process) and polls, for at most ``timeout`` seconds (default `PREPARE_WAIT_SECONDS`).

    Raises:
        TimeoutError: when the other process still holds the lock after ``timeout`` seconds.
    """
    import fcntl

    timeout = PREPARE_WAIT_SECONDS if timeout is None else timeout
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        _acquire(fd, path, log, timeout, fcntl)
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def _acquire(fd: int, path: pathlib.Path, log: Callable[[str], None], timeout: float, fcntl) -> None:
    deadline, said = time.monotonic() + timeout, False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pass
        except OSError:  # a file system without flock: no lock
            return
        holder = _lock_holder(fd)
        if time.monotonic() >= deadline:
            raise TimeoutError(f"prepare_mnist: another process ({holder}) has held {_shown(path)} for more than "
                               f"{timeout:.0f} s while preparing MNIST; wait for it to finish or stop it, then "
                               f"run again.")
        if not said:
            log(f"waiting for another process ({holder}) preparing MNIST (lock {_shown(path)}; at most "
                f"{timeout:.0f} s)")
            said = True
        time.sleep(0.2)


def _lock_holder(fd: int) -> str:
    try:
        words = os.pread(fd, 200, 0).decode("utf-8", "replace").split()
    except OSError:
        words = []
    return f"pid {words[0]} on host {words[1]}" if len(words) >= 2 and words[0].isdigit() else "pid not recorded"


def _prepare(builder: MNIST, source_dir, cache_dir: pathlib.Path, data_root: pathlib.Path, key: str,
             sha256s: dict, verify_checksums: bool, log: Callable[[str], None]) -> None:
    """Prepares ``builder``'s data (with the lock held) and writes `SOURCE_MANIFEST`."""
    if source_dir is None:
        log(f"downloading MNIST with tensorflow-datasets into {_shown(cache_dir / 'downloads')} "
            f"and preparing it into {_shown(data_root)}, once")
    else:
        log(f"preparing MNIST from {_shown(source_dir)} into {_shown(data_root)}, once"
            + (" (about 20 s)" if verify_checksums else ""))
    for stale in data_root.glob("decoded-*.npz"):  # decoded from an earlier preparation (`read_split`)
        stale.unlink(missing_ok=True)
    config = tfds.download.DownloadConfig(
        manual_dir=None if source_dir is None else os.fspath(source_dir),
        download_mode=tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS,
    )
    with quiet_tfds():
        builder.download_and_prepare(download_dir=os.fspath(cache_dir / "downloads"), download_config=config)
    manifest = {
        "key": key,
        "files": sha256s,
        "source": "download" if source_dir is None else os.fspath(source_dir.absolute()),
        "verified_against_tfds_checksums": verify_checksums,
        "tfds_version": tfds.__version__,
    }
    temporary = data_root / f".{SOURCE_MANIFEST}.{os.getpid()}.tmp"
    temporary.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(temporary, data_root / SOURCE_MANIFEST)


# ----------------------------------------------------------------------------------------
# Reading the prepared splits into memory.


class Split(NamedTuple):
    """One split in memory: uint8 images (n, 28, 28) and int32 labels (n,)."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return int(self.labels.shape[0])


class MNISTSplits(NamedTuple):
    """Train (tfds's train minus the held-out validation), validation and test."""

    train: Split
    validation: Split
    test: Split


def read_split(builder: MNIST, split: str) -> Split:
    """All examples of a prepared split, in tfds's stored (deterministic) order.

    tfds stores each image as PNG bytes; parsing and decoding MNIST's 70,000 records takes
    about 5 s of a CPU core, on every run. So the first read also writes the decoded arrays
    next to the prepared data (`decoded_split_path`: uint8 images, int32 labels and a sha256
    over their bytes), and later reads load that file instead (about 0.1 s, hash checked). A
    decoded file that is missing, unreadable, of another size than tfds's split or whose hash
    does not match is ignored and written anew from the records; one that cannot be written (a
    read-only cache) is skipped. Preparing the data again (`prepare_mnist`, e.g. after tfds's
    files were deleted) removes the decoded files first, so they always follow tfds's records.
    """
    path = decoded_split_path(builder, split)
    cached = read_decoded_split(path, builder.info.splits[split].num_examples)
    if cached is not None:
        return cached
    decoded = decode_split(builder, split)
    with contextlib.suppress(OSError):
        write_decoded_split(path, decoded)
    return decoded


def decode_split(builder: MNIST, split: str) -> Split:
    """A prepared split read from tfds's records and decoded (no cache)."""
    source = builder.as_data_source(split=split, decoders={"image": tfds.decode.SkipDecoding()})
    records = source.__getitems__(list(range(len(source))))
    if not records:
        return Split(np.zeros((0, IMAGE_SIZE, IMAGE_SIZE), np.uint8), np.zeros((0,), np.int32))
    images = np.stack([decode_png(record["image"]) for record in records])
    labels = np.asarray([record["label"] for record in records], np.int32)
    return Split(images, labels)


def decoded_split_path(builder: MNIST, split: str) -> pathlib.Path:
    """``<cache_dir>/mnist-<key>/decoded-<split>.npz``: beside tfds's files, under the same key."""
    return pathlib.Path(builder.data_dir).parents[1] / f"decoded-{split}.npz"


def split_sha256(split: Split) -> str:
    """sha256 over a split's image and label bytes (with their shapes and dtypes)."""
    digest = hashlib.sha256()
    for array in split:
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def write_decoded_split(path: pathlib.Path, split: Split) -> None:
    """Writes ``split`` and its `split_sha256` to ``path`` atomically (a temporary file, renamed)."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with temporary.open("wb") as file:
            np.savez(file, images=split.images, labels=split.labels, sha256=np.array(split_sha256(split)))
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def read_decoded_split(path: pathlib.Path, expected_count: int) -> Split | None:
    """The split in ``path`` if it is whole and right (shapes, dtypes, count, hash), else None."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            split = Split(archive["images"], archive["labels"])
            stored_sha256 = str(archive["sha256"])
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None
    well_formed = (split.images.dtype == np.uint8 and split.images.shape == (expected_count, IMAGE_SIZE, IMAGE_SIZE)
                   and split.labels.dtype == np.int32 and split.labels.shape == (expected_count,))
    return split if well_formed and split_sha256(split) == stored_sha256 else None


def split_validation(train: Split, validation_size: int) -> tuple[Split, Split]:
    """Holds out the last ``validation_size`` examples of ``train`` (deterministic)."""
    if not 0 <= validation_size < len(train):
        raise ValueError(f"validation_size must be in [0, {len(train)}), got {validation_size}.")
    cut = len(train) - validation_size
    return (Split(train.images[:cut], train.labels[:cut]),
            Split(train.images[cut:], train.labels[cut:]))


def load_mnist(data_dir=None, *, cache_dir=None, download: bool = False, validation_size: int = 5000,
               verify_checksums: bool = True, log: Callable[[str], None] | None = None) -> MNISTSplits:
    """MNIST in memory: 55,000 train, 5,000 validation, 10,000 test images (uint8, 28x28).

    The validation images are the last ``validation_size`` of tfds's train split in its
    stored order (tfds shuffles records deterministically when preparing), so the split is
    the same on every machine. Pixels stay uint8 here; `jaxdl.datasets.pipeline` scales them.

    The files in ``data_dir`` are hashed on every call and the data prepared from exactly
    those files is used (prepared first if needed, which prints one line to stderr or through
    ``log``; see `prepare_mnist` for the cache layout and the line). Loading prints nothing.

    Args:
        data_dir, cache_dir, download, verify_checksums, log: as in `prepare_mnist`.
        validation_size: how many training images to hold out.

    Raises:
        FileNotFoundError, NonMatchingChecksumError: as `prepare_mnist`.
    """
    builder = prepare_mnist(data_dir, cache_dir=cache_dir, download=download, verify_checksums=verify_checksums,
                            log=log)
    train, validation = split_validation(read_split(builder, "train"), validation_size)
    return MNISTSplits(train, validation, read_split(builder, "test"))
