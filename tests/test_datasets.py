"""jaxdl.datasets.mnist: the TensorFlow-free tfds MNIST builder (the pipeline: tests/test_pipeline.py).

The builder is exercised on tiny IDX files written here (prepared with
``verify_checksums=False``), and checksum verification is checked against tfds's registered
hashes, the bundled SHA256SUMS and the small label files. One test prepares the bundled real
MNIST once (about 10-20 s) into a temporary cache, to check what preparing prints (one line
of jaxdl's, nothing of tfds's) and that the prepared data is reused only for the same files.
"""

import gzip
import hashlib
import json
import logging
import pathlib
import shutil
import socket
import struct
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds
from tensorflow_datasets.image_classification import mnist as tfds_mnist

from jaxdl.datasets import mnist
from jaxdl.datasets.mnist import MNIST_FILES, Split

# tfds's progress bars stay at their default (on): jaxdl must switch them off itself.

#: Words of tensorflow-datasets' download/preparation output that jaxdl must not print.
TFDS_WORDS = ("Download", "Dl ", "MiB", "dataset_info", "Generating", "Shuffling", "Variant", "absl")


# ----------------------------------------------------------------------------------------
# Fixtures: tiny MNIST-format files, no network.


def deterministic_gzip(path):
    """A gzip writer whose bytes depend on the content only: gzip.open stamps the current time
    into the header, so the same images written a second apart would hash to another key."""
    return gzip.GzipFile(path, "wb", mtime=0)


def write_idx_images(path, images):
    images = np.asarray(images, np.uint8)
    with deterministic_gzip(path) as file:
        file.write(struct.pack(">IIII", 2051, *images.shape))
        file.write(images.tobytes())


def write_idx_labels(path, labels):
    labels = np.asarray(labels, np.uint8)
    with deterministic_gzip(path) as file:
        file.write(struct.pack(">II", 2049, labels.shape[0]))
        file.write(labels.tobytes())


def fake_images(count, offset):
    """Images whose pixel (0, 0) is a unique id (offset + index) and the rest random."""
    rng = np.random.default_rng(offset)
    images = rng.integers(0, 256, (count, 28, 28), dtype=np.uint8)
    images[:, 0, 0] = offset + np.arange(count)
    return images


@pytest.fixture
def fake_mnist(tmp_path):
    """A directory with the four canonical file names holding 12 train and 6 test images."""
    directory = tmp_path / "fake_mnist"
    directory.mkdir()
    parts = {"train": (fake_images(12, 0), np.arange(12) % 10), "test": (fake_images(6, 100), (np.arange(6) * 3) % 10)}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images, labels = parts[split]
        write_idx_images(directory / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx_labels(directory / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return directory, parts


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection fails the test at once (instead of retrying offline)."""

    def refuse(*args, **kwargs):
        raise AssertionError("a test tried to use the network")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def pairs(split_images, split_labels):
    """{image id: label} from the id pixel of fake_images."""
    return {int(image[0, 0]): int(label) for image, label in zip(split_images, split_labels)}


# ----------------------------------------------------------------------------------------
# The TensorFlow-free steps: IDX parsing and PNG encoding.


def test_idx_round_trip(tmp_path):
    images, labels = fake_images(3, 7), np.array([1, 2, 9])
    write_idx_images(tmp_path / "images.gz", images)
    write_idx_labels(tmp_path / "labels.gz", labels)
    np.testing.assert_array_equal(mnist.read_idx_images(tmp_path / "images.gz", 3), images)
    np.testing.assert_array_equal(mnist.read_idx_labels(tmp_path / "labels.gz"), labels)


def test_idx_errors_are_readable(tmp_path):
    write_idx_labels(tmp_path / "labels.gz", np.arange(20) % 10)
    with pytest.raises(ValueError, match="magic number 2049, expected 2051"):
        mnist.read_idx_images(tmp_path / "labels.gz")
    with pytest.raises(ValueError, match="20 entries, expected 3"):
        mnist.read_idx_labels(tmp_path / "labels.gz", 3)
    write_idx_labels(tmp_path / "tiny.gz", [1])
    with pytest.raises(ValueError, match="truncated IDX header"):
        mnist.read_idx_images(tmp_path / "tiny.gz")
    with gzip.open(tmp_path / "short.gz", "wb") as file:
        file.write(struct.pack(">IIII", 2051, 2, 28, 28) + b"\0" * 100)
    with pytest.raises(ValueError, match="pixel bytes"):
        mnist.read_idx_images(tmp_path / "short.gz")


def test_png_round_trip():
    image = fake_images(1, 3)[0]
    data = mnist.encode_png(image)
    assert data.startswith(b"\x89PNG")
    np.testing.assert_array_equal(mnist.decode_png(data), image)
    with pytest.raises(ValueError, match="uint8"):
        mnist.encode_png(image.astype(np.float32))


# ----------------------------------------------------------------------------------------
# The builder: same dataset identity as tfds's, prepared offline and without TensorFlow.


def test_builder_keeps_tfds_identity(tmp_path):
    builder = mnist.MNIST(source_dir=tmp_path, data_dir=str(tmp_path / "cache"), file_format="array_record")
    stock = tfds_mnist.MNIST(data_dir=str(tmp_path / "stock"))
    assert builder.name == stock.name == "mnist"
    assert builder.version == stock.version
    assert builder.info.features.to_json() == stock.info.features.to_json()
    assert builder.info.supervised_keys == stock.info.supervised_keys
    assert builder.url_infos == stock.url_infos  # tfds's registered checksums
    assert tfds.builder_cls("mnist") is tfds_mnist.MNIST  # ours is not registered over tfds's


def test_prepare_and_load_fixture_without_tensorflow_or_network(fake_mnist, tmp_path, no_network):
    directory, parts = fake_mnist
    cache = tmp_path / "cache"
    splits = mnist.load_mnist(directory, cache_dir=cache, validation_size=4, verify_checksums=False)
    assert "tensorflow" not in sys.modules
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (8, 4, 6)
    for split in splits:
        assert split.images.dtype == np.uint8 and split.images.shape[1:] == (28, 28)
        assert split.labels.dtype == np.int32
    # Every (image, label) pair survives PNG encoding and tfds's storage (its order is tfds's).
    train_pairs = {**pairs(*splits.train), **pairs(*splits.validation)}
    assert train_pairs == pairs(*parts["train"])
    assert pairs(*splits.test) == pairs(*parts["test"])
    originals = {int(image[0, 0]): image for image in parts["test"][0]}
    for image in splits.test.images:
        np.testing.assert_array_equal(image, originals[int(image[0, 0])])
    # Prepared as tfds lays it out, in array_record, with tfds's split order, under the key
    # of the source files, with a manifest of them.
    key = mnist.source_key(mnist.source_sha256s(directory))
    assert [p.name for p in cache.glob("mnist*")] == [f"mnist-{key}"]
    manifest = json.loads((mnist.prepared_dir(cache, key) / mnist.SOURCE_MANIFEST).read_text())
    assert manifest["files"] == mnist.source_sha256s(directory) and manifest["key"] == key
    assert manifest["verified_against_tfds_checksums"] is False
    prepared = mnist.prepared_dir(cache, key) / "mnist" / "3.0.1"
    info = json.loads((prepared / "dataset_info.json").read_text())
    assert info["name"] == "mnist" and info["fileFormat"] == "array_record"
    assert [split["name"] for split in info["splits"]] == ["train", "test"]
    assert sorted(p.name.split(".")[0] for p in prepared.glob("*.array_record*")) == ["mnist-test", "mnist-train"]


def test_prepared_data_is_reused(fake_mnist, tmp_path, monkeypatch):
    directory, _ = fake_mnist
    first = mnist.load_mnist(directory, cache_dir=tmp_path / "cache", validation_size=2, verify_checksums=False)

    def must_not_run(*args, **kwargs):
        raise AssertionError("prepared again")

    monkeypatch.setattr(mnist.MNIST, "_generate_examples", must_not_run)
    second = mnist.load_mnist(directory, cache_dir=tmp_path / "cache", validation_size=2, verify_checksums=False)
    for a, b in zip(first, second):  # the same deterministic order, so the same validation split
        np.testing.assert_array_equal(a.images, b.images)
        np.testing.assert_array_equal(a.labels, b.labels)


def test_missing_files_are_an_error_not_a_download(tmp_path, no_network):
    (tmp_path / "partial").mkdir()
    write_idx_labels(tmp_path / "partial" / "t10k-labels-idx1-ubyte.gz", [1])
    with pytest.raises(FileNotFoundError, match=r"train-images-idx3-ubyte.gz.*download=True"):
        mnist.prepare_mnist(tmp_path / "partial", cache_dir=tmp_path / "cache")


def test_non_canonical_files_are_named_before_tfds_sees_them(fake_mnist, tmp_path, no_network, capsys):
    # Named by path and sha256, not tfds's "Artifact https://... downloaded" (issue 20, 9).
    directory, _ = fake_mnist
    with pytest.raises(mnist.MNISTChecksumError, match=r"the MNIST file .*-ubyte.gz is damaged or not the canonical "
                                                        r"one: its SHA256 is [0-9a-f]{64}, MNIST's is [0-9a-f]{64}"):
        mnist.prepare_mnist(directory, cache_dir=tmp_path / "cache", log=lambda line: None)
    assert "https://" not in capsys.readouterr().err
    assert not list((tmp_path / "cache").rglob("dataset_info.json"))
    assert not list((tmp_path / "cache").rglob(mnist.SOURCE_MANIFEST))


def test_download_goes_through_tfds_downloader_with_checksums(tmp_path, monkeypatch, no_network):
    """--download: tfds fetches the registered URLs (served here from the bundled files)."""
    from tensorflow_datasets.core.download import checksums, downloader

    requested = []

    def serve_bundled(self, url, destination_path, verify=True):
        requested.append(url)
        path = destination_path / url.rsplit("/", 1)[-1]
        path.write_bytes((mnist.BUNDLED_DATA_DIR / path.name).read_bytes())
        return downloader.DownloadResult(path=path, url_info=checksums.compute_url_info(path))

    monkeypatch.setattr(downloader._Downloader, "_sync_download", serve_bundled)
    # Parse 3 fake examples per split instead of the 70,000 real ones.
    monkeypatch.setattr(mnist, "read_idx_images", lambda path, count=None: fake_images(3, 0))
    monkeypatch.setattr(mnist, "read_idx_labels", lambda path, count=None: np.array([1, 2, 3], np.uint8))
    splits = mnist.load_mnist(cache_dir=tmp_path / "cache", download=True, validation_size=1)
    assert sorted(requested) == sorted(mnist.MNIST.url_infos)
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (2, 1, 3)
    assert len(list((tmp_path / "cache" / "downloads").rglob("*ubyte*.gz"))) == 4  # kept by tfds


def write_fake_mnist(directory, offset):
    """The four canonical file names holding 4 train and 2 test images (ids from ``offset``)."""
    directory.mkdir(parents=True, exist_ok=True)
    write_idx_images(directory / "train-images-idx3-ubyte.gz", fake_images(4, offset))
    write_idx_labels(directory / "train-labels-idx1-ubyte.gz", np.arange(4) + offset % 3)
    write_idx_images(directory / "t10k-images-idx3-ubyte.gz", fake_images(2, offset + 50))
    write_idx_labels(directory / "t10k-labels-idx1-ubyte.gz", np.arange(2))
    return directory


def must_not_prepare(monkeypatch):
    def prepared_again(*args, **kwargs):
        raise AssertionError("prepared again")

    monkeypatch.setattr(mnist.MNIST, "_generate_examples", prepared_again)


def test_cache_is_keyed_by_the_source_files(tmp_path, monkeypatch, capfd, no_network):
    """Other files in data_dir (same path or another) are prepared and used, never a stale cache."""
    cache = tmp_path / "cache"
    first = write_fake_mnist(tmp_path / "first", 0)
    lines = []

    def load(directory):
        return mnist.load_mnist(directory, cache_dir=cache, validation_size=1, verify_checksums=False,
                                log=lines.append)

    a = load(first)
    assert {int(i[0, 0]) for i in a.test.images} == {50, 51}
    # Different files at another path: a second key, prepared from those files.
    other = write_fake_mnist(tmp_path / "other", 7)
    b = load(other)
    assert {int(i[0, 0]) for i in b.test.images} == {57, 58}
    # Different files at the same path: prepared again, not the cache of the path's old files.
    write_fake_mnist(first, 20)
    c = load(first)
    assert {int(i[0, 0]) for i in c.test.images} == {70, 71}
    assert len(lines) == 3 and all(line.startswith("preparing MNIST from ") for line in lines)
    assert len(list(cache.glob("mnist-*/mnist/3.0.1/dataset_info.json"))) == 3
    # The same files again (at any path): reused, nothing prepared and nothing said.
    must_not_prepare(monkeypatch)
    write_fake_mnist(tmp_path / "copy", 7)
    d = load(tmp_path / "copy")
    assert {int(i[0, 0]) for i in d.test.images} == {57, 58}
    assert len(lines) == 3
    assert capfd.readouterr() == ("", "")  # log= replaces the stderr line; tfds says nothing


def test_missing_data_dir_is_an_error_even_with_a_warm_cache(tmp_path, monkeypatch, no_network):
    cache = tmp_path / "cache"
    directory = write_fake_mnist(tmp_path / "fake", 0)
    mnist.load_mnist(directory, cache_dir=cache, validation_size=1, verify_checksums=False, log=lambda line: None)
    must_not_prepare(monkeypatch)
    for verify in (True, False):
        with pytest.raises(FileNotFoundError, match=r"missing from /nonexistent: .*train-images-idx3-ubyte\.gz"):
            mnist.load_mnist("/nonexistent", cache_dir=cache, verify_checksums=verify)
    (directory / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError, match=r"missing from .*fake: t10k-labels-idx1-ubyte\.gz\. "):
        mnist.load_mnist(directory, cache_dir=cache, verify_checksums=False)


def test_quiet_tfds_restores_switches_and_replays_output_on_failure(capfd):
    absl_logger = logging.getLogger("absl")
    absl_logger.setLevel(logging.INFO)
    tfds.display_progress_bar(True)
    try:
        with mnist.quiet_tfds():
            from absl import logging as absl_logging

            absl_logging.warning("Variant folder x has no dataset_info.json")
            print("tfds says something")
            assert not tfds.core.utils.tqdm_utils._active
        assert capfd.readouterr() == ("", "")
        assert tfds.core.utils.tqdm_utils._active and absl_logger.level == logging.INFO
        with pytest.raises(RuntimeError, match="broken"), mnist.quiet_tfds():
            print("what tfds said before failing")
            raise RuntimeError("broken")
        assert capfd.readouterr() == ("", "what tfds said before failing\n")
        assert tfds.core.utils.tqdm_utils._active and absl_logger.level == logging.INFO
    finally:
        absl_logger.setLevel(logging.NOTSET)


def test_first_preparation_prints_one_line_then_nothing(tmp_path, monkeypatch, capfd, no_network):
    """The real MNIST from data/mnist: one line of jaxdl's own, no tfds output; then silence."""
    monkeypatch.chdir(mnist.BUNDLED_DATA_DIR.parents[1])
    cache = tmp_path / "cache"
    key = hashlib.sha256((mnist.BUNDLED_DATA_DIR / "SHA256SUMS").read_bytes()).hexdigest()[:16]
    assert mnist.source_key(mnist.registered_sha256s()) == key  # the canonical files' key
    absl_logger = logging.getLogger("absl")
    absl_logger.setLevel(logging.INFO)  # louder than tfds's default: jaxdl must still say nothing of it
    tfds.display_progress_bar(True)
    try:
        builder = mnist.prepare_mnist(pathlib.Path("data/mnist"), cache_dir=cache)
        out, err = capfd.readouterr()
        assert out == ""
        assert err == f"preparing MNIST from data/mnist into {cache}/mnist-{key}, once (about 20 s)\n"
        for word in TFDS_WORDS:
            assert word not in out + err, word
        # tfds's switches are back as they were.
        assert tfds.core.utils.tqdm_utils._active and absl_logger.level == logging.INFO
    finally:
        absl_logger.setLevel(logging.NOTSET)
    assert {name: split.num_examples for name, split in builder.info.splits.items()} == {"train": 60000, "test": 10000}
    manifest = json.loads((cache / f"mnist-{key}" / mnist.SOURCE_MANIFEST).read_text())
    assert manifest["files"] == mnist.registered_sha256s() and manifest["verified_against_tfds_checksums"]

    must_not_prepare(monkeypatch)
    # Later loads: the same directory, a copy of its files, and --download all reuse it silently.
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in MNIST_FILES.values():
        (copy / name).write_bytes((mnist.BUNDLED_DATA_DIR / name).read_bytes())
    for again in (mnist.prepare_mnist(cache_dir=cache), mnist.prepare_mnist(copy, cache_dir=cache),
                  mnist.prepare_mnist(cache_dir=cache, download=True)):
        assert pathlib.Path(again.data_dir) == pathlib.Path(builder.data_dir)
    assert capfd.readouterr() == ("", "")
    # A missing data dir is an error although the cache is warm.
    with pytest.raises(FileNotFoundError, match="MNIST files missing from /nonexistent"):
        mnist.prepare_mnist("/nonexistent", cache_dir=cache)


def test_bundled_files_match_tfds_registered_checksums():
    sums = dict(line.split()[::-1] for line in (mnist.BUNDLED_DATA_DIR / "SHA256SUMS").read_text().splitlines())
    registered = {info.filename: info.checksum for info in mnist.MNIST.url_infos.values()}
    assert sums == registered
    assert set(sums) == set(MNIST_FILES.values())
    for name in ("t10k-labels-idx1-ubyte.gz", "train-labels-idx1-ubyte.gz"):  # the small files only
        assert hashlib.sha256((mnist.BUNDLED_DATA_DIR / name).read_bytes()).hexdigest() == sums[name]
    for name in MNIST_FILES.values():
        assert (mnist.BUNDLED_DATA_DIR / name).stat().st_size == {
            info.filename: int(info.size) for info in mnist.MNIST.url_infos.values()}[name]


def test_unverified_mode_needs_a_source_dir():
    with pytest.raises(ValueError, match="source_dir"):
        mnist.MNIST(source_dir=None, verify_checksums=False)


def test_split_validation_holds_out_the_last_examples():
    split = Split(fake_images(10, 0), np.arange(10, dtype=np.int32))
    train, validation = mnist.split_validation(split, 3)
    np.testing.assert_array_equal(validation.labels, [7, 8, 9])
    np.testing.assert_array_equal(train.labels, np.arange(7))
    with pytest.raises(ValueError, match="validation_size"):
        mnist.split_validation(split, 10)


def test_default_cache_dir_follows_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("JAXDL_CACHE_DIR", str(tmp_path))
    assert mnist.default_cache_dir() == tmp_path / "tensorflow_datasets"


# ----------------------------------------------------------------------------------------
# The decoded-array cache beside the prepared data.


def test_decoded_splits_are_cached_and_equal_to_decoding(fake_mnist, tmp_path, monkeypatch):
    directory, _ = fake_mnist
    cache = tmp_path / "cache"
    first = mnist.load_mnist(directory, cache_dir=cache, validation_size=2, verify_checksums=False)
    key = mnist.source_key(mnist.source_sha256s(directory))
    assert sorted(p.name for p in mnist.prepared_dir(cache, key).glob("decoded-*")) == [
        "decoded-test.npz", "decoded-train.npz"]
    builder = mnist.prepare_mnist(directory, cache_dir=cache, verify_checksums=False)
    for split in ("train", "test"):  # the cache holds exactly what decoding the records gives
        decoded = mnist.decode_split(builder, split)
        cached = mnist.read_split(builder, split)
        for a, b in zip(decoded, cached):
            assert a.dtype == b.dtype
            np.testing.assert_array_equal(a, b)

    def must_not_decode(*args, **kwargs):
        raise AssertionError("decoded the records again")

    monkeypatch.setattr(mnist, "decode_split", must_not_decode)
    second = mnist.load_mnist(directory, cache_dir=cache, validation_size=2, verify_checksums=False)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a.images, b.images)
        np.testing.assert_array_equal(a.labels, b.labels)


def _tamper_pixel(path):
    with np.load(path) as archive:
        images, labels, sha256 = archive["images"].copy(), archive["labels"], archive["sha256"]
    images[0, 5, 5] ^= 1
    np.savez(path, images=images, labels=labels, sha256=sha256)


def _drop_last_example(path):
    with np.load(path) as archive:
        images, labels = archive["images"][:-1], archive["labels"][:-1]
    split = Split(images, labels)
    np.savez(path, images=images, labels=labels, sha256=np.array(mnist.split_sha256(split)))


@pytest.mark.parametrize("damage", [
    lambda path: path.write_bytes(path.read_bytes()[: path.stat().st_size // 2]),  # truncated
    lambda path: path.write_bytes(b"not an npz"),  # garbage
    _tamper_pixel,  # a changed pixel: the hash no longer matches
    _drop_last_example,  # consistent hash, but not the size of tfds's split
    lambda path: np.savez(path, images=np.zeros((6, 28, 28), np.float32), labels=np.zeros(6, np.int32),
                          sha256=np.array("0")),  # another dtype
], ids=["truncated", "garbage", "tampered", "wrong_count", "wrong_dtype"])
def test_a_damaged_decoded_cache_is_rebuilt_from_the_records(fake_mnist, tmp_path, damage):
    directory, parts = fake_mnist
    cache = tmp_path / "cache"
    first = mnist.load_mnist(directory, cache_dir=cache, validation_size=2, verify_checksums=False)
    builder = mnist.prepare_mnist(directory, cache_dir=cache, verify_checksums=False)
    path = mnist.decoded_split_path(builder, "test")
    damage(path)
    assert mnist.read_decoded_split(path, 6) is None
    again = mnist.load_mnist(directory, cache_dir=cache, validation_size=2, verify_checksums=False)
    np.testing.assert_array_equal(again.test.images, first.test.images)
    np.testing.assert_array_equal(again.test.labels, first.test.labels)
    assert mnist.read_decoded_split(path, 6) is not None  # written anew


def test_preparing_again_drops_the_decoded_files_of_the_earlier_preparation(fake_mnist, tmp_path):
    """Decoded arrays follow tfds's records: a stale file (well formed, hash intact, but another
    order) is not used once the data is prepared anew."""
    directory, _ = fake_mnist
    cache = tmp_path / "cache"
    first = mnist.load_mnist(directory, cache_dir=cache, validation_size=2, verify_checksums=False)
    builder = mnist.prepare_mnist(directory, cache_dir=cache, verify_checksums=False)
    path = mnist.decoded_split_path(builder, "test")
    reordered = Split(first.test.images[::-1].copy(), first.test.labels[::-1].copy())
    mnist.write_decoded_split(path, reordered)
    assert mnist.read_decoded_split(path, len(reordered)) is not None  # a file the cache would use
    shutil.rmtree(pathlib.Path(builder.data_dir))  # tfds's prepared files gone: prepared again
    again = mnist.load_mnist(directory, cache_dir=cache, validation_size=2, verify_checksums=False)
    np.testing.assert_array_equal(again.test.images, first.test.images)
    np.testing.assert_array_equal(again.test.labels, first.test.labels)


def test_an_unwritable_decoded_cache_is_skipped(fake_mnist, tmp_path, monkeypatch):
    directory, parts = fake_mnist

    def refuse(*args, **kwargs):
        raise PermissionError("read-only cache")

    monkeypatch.setattr(mnist, "write_decoded_split", refuse)
    splits = mnist.load_mnist(directory, cache_dir=tmp_path / "cache", validation_size=2, verify_checksums=False)
    assert pairs(*splits.test) == pairs(*parts["test"])
    assert not list((tmp_path / "cache").rglob("decoded-*"))
