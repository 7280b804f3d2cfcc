"""MNIST through tensorflow-datasets: uint8 tensors in array_record, read with ``tfds.data_source``.

`MNIST` is a tfds builder (``tfds.core.GeneratorBasedBuilder``, the three methods tfds's
guide to writing datasets asks for) named ``jaxdl_mnist``. It reads the four IDX files with
Python's ``gzip`` and stores every image as a uint8 tensor of shape (28, 28, 1) (its raw
784 bytes: ``tfds.features.Tensor(..., encoding=tfds.features.Encoding.BYTES)``) with an
integer label, in array_record files. Nothing is PNG-encoded or decoded, nothing needs
TensorFlow, and reading is tfds's own random access (``tfds.data_source``), which is also what
`jaxdl.datasets.pipeline.TfdsSource` hands to grain. Each example's key is its index in the
IDX file, so tfds's deterministic shuffle stores the records in the order jaxdl has always
used (the validation images, the last 5,000 of the stored train split, are unchanged).

Where the files come from:

* ``data_dir`` (default: the repository's bundled ``data/mnist/``): the four canonical files.
  Before tfds sees them, each is hashed and compared with the sha256 tensorflow-datasets
  registers for MNIST (`MNISTChecksumError` names a damaged file and both sha256s); a missing
  file is an error that names it. Nothing is downloaded.
* ``download=True``: tfds's download manager fetches the registered URLs into
  ``<cache_dir>/downloads`` (checking size and sha256) - the only path that uses the network.

Prepared data goes to ``cache_dir`` (default ``$JAXDL_CACHE_DIR/tensorflow_datasets``, where
``JAXDL_CACHE_DIR`` defaults to ``~/.cache/jaxdl``), keyed by the source files::

    <cache_dir>/mnist-<key>/jaxdl_mnist/1.0.0/   tfds's layout: dataset_info.json, features.json,
                                                 jaxdl_mnist-{train,test}.array_record-*
    <cache_dir>/mnist-<key>/source.json          the four file names and sha256s it came from
    <cache_dir>/downloads/                       tfds's downloads (``download=True`` only)

``<key>`` is `source_key`: 16 hex digits of a sha256 over the four files' names and sha256s,
hashed again on every load (about 15 ms), so prepared data is only used for the very files
``data_dir`` holds now. The canonical files have one key, whichever directory holds them.
Earlier jaxdl versions left ``mnist-<key>/mnist/3.0.1/`` (PNG records) and
``mnist-<key>/decoded-*.npz`` there; nothing reads them any more (delete them to reclaim
about 80 MB).

Several processes may prepare at once (two first runs, the processes of a multi-process run):
preparing holds an exclusive ``flock`` on ``<cache_dir>/.mnist-<key>.lock``; a second process
waits (saying so once, through ``log``, with the holder's pid; at most
`PREPARE_WAIT_SECONDS`), then uses the data the first prepared. The operating system releases
the lock of a process that dies, and tfds only renames complete data into place, so a killed
preparation never blocks or corrupts the next one.

Preparing (about 7 s) happens once per key and prints one line of jaxdl's own (to stderr, or
through ``log``), for example::

    preparing MNIST from data/mnist into /home/me/.cache/jaxdl/tensorflow_datasets/mnist-<key>, once (about 10 s)

and nothing of tensorflow-datasets (`quiet_tfds`). Loading prepared data prints nothing.

Example:
    >>> splits = load_mnist()                  # bundled files, prepared once into the cache
    >>> splits.train.images.shape, splits.train.labels.dtype
    ((55000, 28, 28), dtype('int32'))
    >>> test = tfds.data_source("jaxdl_mnist", split="test", data_dir=prepare_mnist())
    >>> test[0]["image"].shape, test[0]["image"].dtype
    ((28, 28, 1), dtype('uint8'))
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
from typing import Any, Callable, Mapping, NamedTuple, Union

import numpy as np
import tensorflow_datasets as tfds

from jaxdl.cache_dir import jaxdl_cache_root
from jaxdl.validation import nonnegative_int

#: A path given as a string or a path object.
PathLike = Union[str, os.PathLike]

#: The canonical file of each part of MNIST (the names tensorflow-datasets registers).
MNIST_FILES = {
    "train_data": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_data": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}

#: The files bundled with the repository (present in a source checkout).
BUNDLED_DATA_DIR = pathlib.Path(__file__).resolve().parents[2] / "data" / "mnist"

#: IDX magic numbers (big-endian): unsigned bytes, 3 dimensions for images, 1 for labels.
IDX_IMAGES_MAGIC = 2051
IDX_LABELS_MAGIC = 2049

IMAGE_SIZE = 28

#: The tfds name of the prepared dataset (``tfds.data_source(DATASET_NAME, data_dir=...)``).
DATASET_NAME = "jaxdl_mnist"

#: The name of the manifest next to tfds's prepared data (see the module docstring).
SOURCE_MANIFEST = "source.json"

#: How long `prepare_mnist` waits for another process preparing the same files (`preparation_lock`).
PREPARE_WAIT_SECONDS = 900.0


def default_cache_dir() -> pathlib.Path:
    """``$JAXDL_CACHE_DIR/tensorflow_datasets``; ``JAXDL_CACHE_DIR`` defaults to ~/.cache/jaxdl."""
    return jaxdl_cache_root() / "tensorflow_datasets"


# ----------------------------------------------------------------------------------------
# The cache key and the checksums: the source files' sha256s.


def file_sha256(path: PathLike) -> str:
    """The hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def require_mnist_files(directory: PathLike) -> None:
    """Raises FileNotFoundError naming the canonical files missing from ``directory``."""
    directory = pathlib.Path(directory)
    missing = [name for name in MNIST_FILES.values() if not (directory / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"MNIST files missing from {directory}: {', '.join(missing)}. Put the four canonical "
            f"files there ({', '.join(MNIST_FILES.values())}), use a directory that has them, or "
            f"let tensorflow-datasets download them (download=True).")


def source_sha256s(directory: PathLike) -> dict[str, str]:
    """{canonical file name: sha256} of the four files in ``directory``.

    Raises:
        FileNotFoundError: naming the files missing from ``directory`` (`require_mnist_files`).
    """
    directory = pathlib.Path(directory)
    require_mnist_files(directory)
    return {name: file_sha256(directory / name) for name in sorted(MNIST_FILES.values())}


def registered_url_infos() -> dict:
    """{URL: ``tfds.download`` url info (size, sha256, file name)} that tfds registers for MNIST."""
    return dict(tfds.builder_cls("mnist").url_infos)


def registered_sha256s() -> dict[str, str]:
    """{canonical file name: sha256} as tensorflow-datasets registers them for MNIST."""
    return {info.filename: info.checksum for info in registered_url_infos().values()}


def source_key(sha256s: dict[str, str]) -> str:
    """The cache key of four source files: 16 hex digits of a sha256 over names and sha256s.

    The hashed text is the ``sha256sum`` listing of the files sorted by name (``<sha256>  <name>``
    lines), so the canonical files' key is the start of the sha256 of ``data/mnist/SHA256SUMS``.
    """
    listing = "".join(f"{sha256s[name]}  {name}\n" for name in sorted(sha256s))
    return hashlib.sha256(listing.encode("ascii")).hexdigest()[:16]


def prepared_dir(cache_dir: PathLike, key: str) -> pathlib.Path:
    """``<cache_dir>/mnist-<key>``: tfds's ``data_dir`` for the files of ``key``."""
    return pathlib.Path(cache_dir) / f"mnist-{key}"


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


# ----------------------------------------------------------------------------------------
# Quiet preparation: tfds's progress bars, logs and prints, captured while it prepares.


#: The loggers tfds writes through (absl's is the one tfds uses; Python's for its dependencies).
QUIET_LOGGERS = ("absl", "tensorflow_datasets", "etils")


@contextlib.contextmanager
def quiet_tfds():
    """Silences tensorflow-datasets for the duration of the block, then restores everything.

    Raises the `QUIET_LOGGERS` to ERROR and captures ``sys.stdout`` / ``sys.stderr`` (tfds's
    progress bars and its "Downloading and preparing" lines go there). On an exception the
    captured text is written to the real stderr before the exception propagates, so nothing
    that explains a failure is lost.
    """
    loggers = [logging.getLogger(name) for name in QUIET_LOGGERS]
    levels = [logger.level for logger in loggers]
    captured = io.StringIO()
    stderr = sys.stderr
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
# IDX files.


def read_idx_images(path: PathLike, expected_count: int | None = None) -> np.ndarray:
    """Reads a gzipped IDX image file (magic 2051) as uint8 of shape (count, rows, cols).

    Raises:
        ValueError: for a wrong magic number, a truncated file, or an unexpected count.
    """
    return _read_idx(path, IDX_IMAGES_MAGIC, 3, expected_count, "pixel bytes")


def read_idx_labels(path: PathLike, expected_count: int | None = None) -> np.ndarray:
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


# ----------------------------------------------------------------------------------------
# The builder.


class MNIST(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """MNIST from its four IDX files as a tfds dataset of uint8 tensors (see the module docstring).

    Not registered with tfds by class (``tfds.builder("mnist")`` stays tfds's own PNG dataset);
    prepared data is read by name and directory: ``tfds.data_source("jaxdl_mnist",
    split="train", data_dir=...)``.

    Args:
        files: {canonical file name (`MNIST_FILES`): path} of the four files to prepare from;
            None for a builder that only reads prepared data.
        **kwargs: tfds builder arguments (``data_dir``, ``file_format``).
    """

    name = DATASET_NAME
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "MNIST's IDX files as uint8 (28, 28, 1) tensors (raw bytes) and int labels."}

    def __init__(self, *, files: Mapping[str, os.PathLike] | None = None, **kwargs):
        self.files = None if files is None else {name: pathlib.Path(path) for name, path in files.items()}
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        """Images (28, 28, 1) uint8 stored as raw bytes, labels 0-9, supervised as (image, label)."""
        image = tfds.features.Tensor(shape=(IMAGE_SIZE, IMAGE_SIZE, 1), dtype=np.uint8,
                                     encoding=tfds.features.Encoding.BYTES)
        return tfds.core.DatasetInfo(
            builder=self,
            description="MNIST handwritten digits as uint8 tensors, prepared by jaxdl from the IDX files.",
            features=tfds.features.FeaturesDict({"image": image, "label": tfds.features.ClassLabel(num_classes=10)}),
            supervised_keys=("image", "label"),
            homepage="https://yann.lecun.com/exdb/mnist/",
        )

    def _split_generators(self, dl_manager) -> dict:
        """Train then test, each from its images and labels file (``dl_manager`` is not used)."""
        if self.files is None:
            raise ValueError("MNIST: preparing needs files={file name: path} of the four IDX files.")
        return {split: self._generate_examples(self.files[MNIST_FILES[f"{split}_data"]],
                                               self.files[MNIST_FILES[f"{split}_labels"]])
                for split in ("train", "test")}

    def _generate_examples(self, images_path: pathlib.Path, labels_path: pathlib.Path):
        """Yields (index in the files, {"image": uint8 (28, 28, 1), "label": int}) in file order."""
        images, labels = read_idx_images(images_path), read_idx_labels(labels_path)
        if images.shape[0] != labels.shape[0]:
            raise ValueError(f"{images_path} has {images.shape[0]} images but {labels_path} {labels.shape[0]} labels.")
        if images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
            raise ValueError(f"{images_path}: images of {images.shape[1:]}, expected {(IMAGE_SIZE, IMAGE_SIZE)}.")
        for index, (image, label) in enumerate(zip(images[..., None], labels)):
            yield index, {"image": image, "label": int(label)}


# ----------------------------------------------------------------------------------------
# Preparing.


def prepare_mnist(data_dir: PathLike | None = None, *, cache_dir: PathLike | None = None, download: bool = False,
                  verify_checksums: bool = True, log: Callable[[str], None] | None = None) -> pathlib.Path:
    """Prepares MNIST as array_record under ``cache_dir`` once per source; returns tfds's ``data_dir``.

    The files in ``data_dir`` are checked (all four present, canonical sha256s) and hashed on
    every call, before tfds sees them; the data prepared from them lives in
    ``<cache_dir>/mnist-<key>/jaxdl_mnist/1.0.0/`` (the module docstring has the layout, the
    one line preparing prints and the lock another process waits on). Read it with
    ``tfds.data_source("jaxdl_mnist", split=..., data_dir=prepare_mnist())``.

    Args:
        data_dir: the directory with the four ``.gz`` files; default the bundled
            ``data/mnist``. Ignored when ``download`` is True.
        cache_dir: where the prepared data (and tfds's downloads) go; default
            `default_cache_dir`.
        download: let tfds download the files from its registered URLs.
        verify_checksums: compare the files with tfds's registered sha256s; only test
            fixtures (small fake IDX files, which get their own key) turn it off.
        log: called with the one line said before preparing; default prints it to stderr.

    Returns:
        ``<cache_dir>/mnist-<key>``, the ``data_dir`` of the prepared ``jaxdl_mnist`` dataset.

    Raises:
        FileNotFoundError: when ``data_dir`` lacks one of the four files (nothing is
            downloaded), whether or not prepared data exists.
        MNISTChecksumError: (a ValueError) when a file in ``data_dir`` is not the canonical
            one, naming it and both sha256s (nothing is prepared, nothing downloaded).
        TimeoutError: when another process preparing the same files holds the lock for more
            than `PREPARE_WAIT_SECONDS`.
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
    if not is_prepared(data_root):
        with preparation_lock(cache_dir / f".mnist-{key}.lock", log):
            if not is_prepared(data_root):  # another process may have prepared it meanwhile
                _prepare(source_dir, cache_dir, data_root, key, sha256s, verify_checksums, log)
    return data_root


def is_prepared(data_root: pathlib.Path) -> bool:
    """Whether ``data_root`` holds the prepared ``jaxdl_mnist`` dataset (tfds's ``is_prepared``)."""
    with quiet_tfds():
        return MNIST(data_dir=os.fspath(data_root)).is_prepared()


def _prepare(source_dir, cache_dir: pathlib.Path, data_root: pathlib.Path, key: str, sha256s: dict,
             verify_checksums: bool, log: Callable[[str], None]) -> None:
    """Prepares the data (with the lock held) and writes `SOURCE_MANIFEST` beside it."""
    if source_dir is None:
        log(f"downloading MNIST with tensorflow-datasets into {_shown(cache_dir / 'downloads')} "
            f"and preparing it into {_shown(data_root)}, once")
        files = download_mnist(cache_dir / "downloads")
    else:
        log(f"preparing MNIST from {_shown(source_dir)} into {_shown(data_root)}, once"
            + (" (about 10 s)" if verify_checksums else ""))
        files = {name: source_dir / name for name in MNIST_FILES.values()}
    with quiet_tfds():
        builder = MNIST(files=files, data_dir=os.fspath(data_root), file_format="array_record")
        builder.download_and_prepare(download_dir=os.fspath(cache_dir / "downloads"),
                                     download_config=tfds.download.DownloadConfig(try_download_gcs=False))
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


def download_mnist(download_dir: pathlib.Path) -> dict[str, pathlib.Path]:
    """Downloads the four files with tfds's download manager (which checks their sizes and
    sha256s against tfds's registration); returns {canonical file name: downloaded path}."""
    url_infos = registered_url_infos()
    with quiet_tfds():
        manager = tfds.download.DownloadManager(download_dir=download_dir, url_infos=url_infos)
        paths = manager.download({info.filename: url for url, info in url_infos.items()})
    return {name: pathlib.Path(os.fspath(path)) for name, path in paths.items()}


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


# ----------------------------------------------------------------------------------------
# Reading the prepared splits.


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


def data_source(data_root: PathLike, split: str) -> Any:
    """``tfds.data_source`` of a prepared split: random access to its records over array_record.

    Each record is ``{"image": uint8 (28, 28, 1), "label": int}``; wrap it in
    `jaxdl.datasets.pipeline.TfdsSource` to batch it with `EpochBatches.from_source`.
    """
    with quiet_tfds():
        return tfds.data_source(DATASET_NAME, split=split, data_dir=os.fspath(data_root))


def read_split(data_root: PathLike, split: str) -> Split:
    """All examples of a prepared split, in tfds's stored (deterministic) order.

    One ``__getitems__`` of the split's ``tfds.data_source``. The images are taken as the raw
    bytes `MNIST` stores (``tfds.decode.SkipDecoding``) and viewed as one uint8 array, which
    spares tfds a NumPy conversion per record (about a quarter of the read's time).
    """
    with quiet_tfds():
        source = tfds.data_source(DATASET_NAME, split=split, data_dir=os.fspath(data_root),
                                  decoders={"image": tfds.decode.SkipDecoding()})
    records = source.__getitems__(list(range(len(source))))
    images = np.frombuffer(bytearray(b"".join(record["image"] for record in records)), np.uint8)
    labels = np.asarray([record["label"] for record in records], np.int32)
    return Split(images.reshape(len(records), IMAGE_SIZE, IMAGE_SIZE), labels)


def split_validation(train: Split, validation_size: int) -> tuple[Split, Split]:
    """Holds out the last ``validation_size`` examples of ``train`` (deterministic).

    Raises:
        TypeError: for a ``validation_size`` that is not an int.
        ValueError: for a ``validation_size`` outside [0, len(train)).
    """
    validation_size = nonnegative_int("load_mnist", "validation_size", validation_size)
    if validation_size >= len(train):
        raise ValueError(f"load_mnist: validation_size must be an int in [0, {len(train)}) (the training images), "
                         f"got {validation_size}.")
    cut = len(train) - validation_size
    return (Split(train.images[:cut], train.labels[:cut]),
            Split(train.images[cut:], train.labels[cut:]))


def load_mnist(data_dir: PathLike | None = None, *, cache_dir: PathLike | None = None, download: bool = False,
               validation_size: int = 5000, verify_checksums: bool = True,
               log: Callable[[str], None] | None = None) -> MNISTSplits:
    """MNIST in memory: 55,000 train, 5,000 validation, 10,000 test images (uint8, 28x28).

    The validation images are the last ``validation_size`` of tfds's train split in its
    stored order (tfds shuffles records deterministically when preparing), so the split is
    the same on every machine. Pixels stay uint8 here; `jaxdl.datasets.pipeline` scales them.
    The records are read with ``tfds.data_source`` (`read_split`; about 2 s for the 70,000).

    The files in ``data_dir`` are hashed on every call and the data prepared from exactly
    those files is used (prepared first if needed, which prints one line to stderr or through
    ``log``; see `prepare_mnist` for the cache layout and the line). Loading prints nothing.

    Args:
        data_dir: as in `prepare_mnist`.
        cache_dir: as in `prepare_mnist`.
        download: as in `prepare_mnist`.
        validation_size: how many training images to hold out.
        verify_checksums: as in `prepare_mnist`.
        log: as in `prepare_mnist`.

    Returns:
        `MNISTSplits` of train, validation and test.

    Raises:
        FileNotFoundError: as `prepare_mnist`.
        MNISTChecksumError: as `prepare_mnist`.
        TimeoutError: as `prepare_mnist`.
        TypeError: for a ``validation_size`` that is not an int.
        ValueError: for a ``validation_size`` outside [0, train size).
    """
    nonnegative_int("load_mnist", "validation_size", validation_size)  # before any work
    data_root = prepare_mnist(data_dir, cache_dir=cache_dir, download=download, verify_checksums=verify_checksums,
                              log=log)
    train, validation = split_validation(read_split(data_root, "train"), validation_size)
    return MNISTSplits(train, validation, read_split(data_root, "test"))
