"""jaxdl.datasets.mnist: MNIST as uint8 tensors in a tfds dataset, read with tfds.data_source.

The builder is exercised on tiny IDX files written here (prepared with
``verify_checksums=False``), and checksum verification is checked against tfds's registered
hashes, the bundled SHA256SUMS and the small label files. One test prepares the bundled real
MNIST once (about 10 s) into a temporary cache, to check what preparing prints (one line of
jaxdl's, nothing of tfds's), that the prepared data is reused only for the same files, and that
the validation split is the one jaxdl has always used (sha256s of its images and labels).
The pipeline over tfds data sources: tests/test_pipeline.py.
"""

import gzip
import hashlib
import http.server
import json
import logging
import pathlib
import socket
import struct
import sys
import threading

import numpy as np
import pytest
import tensorflow_datasets as tfds

from jaxdl.datasets import mnist, pipeline
from jaxdl.datasets.mnist import MNIST_FILES, Split

#: Words of tensorflow-datasets' download/preparation output that jaxdl must not print.
TFDS_WORDS = ("Download", "Dl ", "MiB", "dataset_info", "Generating", "Shuffling", "Variant", "absl")

#: sha256s of the validation split's uint8 images and int32 labels (the last 5,000 of the stored
#: train split) as every jaxdl version has held them out; recipe defaults were chosen on them.
VALIDATION_IMAGES_SHA256 = "101f2fe9bcbd642d54e4e3b716f2d353c22533c751743838d6c843eed1ae66a1"
VALIDATION_LABELS_SHA256 = "d297513881597ebbd9c116cbd78f6705ef11d2cae46c1f57021d339a356fbd18"


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


#: A port nothing listens on: proxies pointed there fail at once instead of reaching out.
DEAD_PROXY = "http://127.0.0.1:9"


@pytest.fixture
def no_network(monkeypatch):
    """No network: proxies point at a dead port, and opening a connection fails the test at once."""

    def refuse(*args, **kwargs):
        raise AssertionError("a test tried to use the network")

    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(name, DEAD_PROXY)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def pairs(split_images, split_labels):
    """{image id: label} from the id pixel of fake_images."""
    return {int(image[0, 0]): int(label) for image, label in zip(split_images, split_labels)}


# ----------------------------------------------------------------------------------------
# IDX parsing.


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


# ----------------------------------------------------------------------------------------
# The builder: uint8 tensors, prepared offline and without TensorFlow.


def test_builder_stores_uint8_tensors_under_its_own_name(tmp_path, no_network):
    builder = mnist.MNIST(data_dir=str(tmp_path / "cache"))
    assert builder.name == mnist.DATASET_NAME == "jaxdl_mnist" and str(builder.version) == "1.0.0"
    image, label = builder.info.features["image"], builder.info.features["label"]
    assert isinstance(image, tfds.features.Tensor) and not isinstance(image, tfds.features.Image)
    assert (image.shape, image.np_dtype) == ((28, 28, 1), np.uint8)
    assert image.to_json()["content"]["encoding"] == "bytes"  # the raw 784 bytes, no PNG
    assert isinstance(label, tfds.features.ClassLabel) and label.num_classes == 10
    assert builder.info.supervised_keys == ("image", "label")
    # Not registered (tfds's "mnist" stays tfds's); the community index would need the network.
    assert "jaxdl_mnist" not in tfds.list_builders(with_community_datasets=False)
    with pytest.raises(ValueError, match="MNIST: preparing needs files="):
        builder.download_and_prepare()


def test_prepare_and_load_fixture_without_tensorflow_or_network(fake_mnist, tmp_path, no_network):
    directory, parts = fake_mnist
    cache = tmp_path / "cache"
    splits = mnist.load_mnist(directory, cache_dir=cache, validation_size=4, verify_checksums=False)
    assert "tensorflow" not in sys.modules
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (8, 4, 6)
    for split in splits:
        assert split.images.dtype == np.uint8 and split.images.shape[1:] == (28, 28)
        assert split.labels.dtype == np.int32
    # Every (image, label) pair is stored exactly (its order is tfds's).
    train_pairs = {**pairs(*splits.train), **pairs(*splits.validation)}
    assert train_pairs == pairs(*parts["train"])
    assert pairs(*splits.test) == pairs(*parts["test"])
    originals = {int(image[0, 0]): image for image in parts["test"][0]}
    for image in splits.test.images:
        np.testing.assert_array_equal(image, originals[int(image[0, 0])])
    # Prepared as tfds lays it out, in array_record, under the key of the source files, with a
    # manifest of them, and nothing else: no second cache beside tfds's files.
    key = mnist.source_key(mnist.source_sha256s(directory))
    root = mnist.prepared_dir(cache, key)
    assert [p.name for p in cache.glob("mnist*")] == [f"mnist-{key}"]
    assert sorted(p.name for p in root.iterdir()) == ["jaxdl_mnist", mnist.SOURCE_MANIFEST]
    manifest = json.loads((root / mnist.SOURCE_MANIFEST).read_text())
    assert manifest["files"] == mnist.source_sha256s(directory) and manifest["key"] == key
    assert manifest["verified_against_tfds_checksums"] is False
    prepared = root / "jaxdl_mnist" / "1.0.0"
    info = json.loads((prepared / "dataset_info.json").read_text())
    assert info["name"] == "jaxdl_mnist" and info["fileFormat"] == "array_record"
    assert [split["name"] for split in info["splits"]] == ["train", "test"]
    assert sorted(p.name.split(".")[0] for p in prepared.glob("*.array_record*")) == [
        "jaxdl_mnist-test", "jaxdl_mnist-train"]
    assert not list(root.rglob("*.npz")) and not list(root.rglob("*.png"))


def test_records_are_read_with_tfds_data_source_as_uint8_tensors(fake_mnist, tmp_path, no_network):
    directory, parts = fake_mnist
    root = mnist.prepare_mnist(directory, cache_dir=tmp_path / "cache", verify_checksums=False, log=lambda line: None)
    source = tfds.data_source("jaxdl_mnist", split="test", data_dir=root)
    assert len(source) == 6
    originals = dict(zip(parts["test"][0][:, 0, 0].tolist(), zip(*parts["test"])))
    for record in source:
        image, label = originals[int(record["image"][0, 0, 0])]
        assert record["image"].dtype == np.uint8 and record["image"].shape == (28, 28, 1)
        np.testing.assert_array_equal(record["image"][..., 0], image)
        assert record["label"] == label
    # load_mnist's arrays are these records in stored order; the grain pipeline reads the same
    # batches straight from the data source (TfdsSource) as from the arrays.
    splits = mnist.load_mnist(directory, cache_dir=tmp_path / "cache", validation_size=2, verify_checksums=False)
    np.testing.assert_array_equal(splits.test.images, np.stack([record["image"][..., 0] for record in source]))
    options = dict(seed=3, shuffle=True, max_shift=2, drop_remainder=True)
    from_records = pipeline.EpochBatches.from_source(pipeline.TfdsSource(mnist.data_source(root, "train"), stop=10),
                                                     4, **options)
    from_arrays = pipeline.EpochBatches(splits.train.images, splits.train.labels, 4, **options)
    for (xa, ya), (xb, yb) in zip(from_records.epoch(1), from_arrays.epoch(1), strict=True):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)


def test_prepared_data_is_reused(fake_mnist, tmp_path, monkeypatch):
    directory, _ = fake_mnist
    first = mnist.load_mnist(directory, cache_dir=tmp_path / "cache", validation_size=2, verify_checksums=False)
    must_not_prepare(monkeypatch)
    second = mnist.load_mnist(directory, cache_dir=tmp_path / "cache", validation_size=2, verify_checksums=False)
    for a, b in zip(first, second):  # the same deterministic order, so the same validation split
        np.testing.assert_array_equal(a.images, b.images)
        np.testing.assert_array_equal(a.labels, b.labels)


def test_missing_files_are_an_error_not_a_download(tmp_path, no_network):
    (tmp_path / "partial").mkdir()
    write_idx_labels(tmp_path / "partial" / "t10k-labels-idx1-ubyte.gz", [1])
    with pytest.raises(FileNotFoundError, match=r"train-images-idx3-ubyte.gz.*download=True"):
        mnist.prepare_mnist(tmp_path / "partial", cache_dir=tmp_path / "cache")


def test_non_canonical_files_are_named_before_tfds_sees_them(fake_mnist, tmp_path, no_network, capsys, monkeypatch):
    directory, _ = fake_mnist
    must_not_prepare(monkeypatch)
    with pytest.raises(mnist.MNISTChecksumError, match=r"the MNIST file .*-ubyte.gz is damaged or not the canonical "
                                                        r"one: its SHA256 is [0-9a-f]{64}, MNIST's is [0-9a-f]{64}"):
        mnist.prepare_mnist(directory, cache_dir=tmp_path / "cache", log=lambda line: None)
    assert "https://" not in capsys.readouterr().err
    assert not list((tmp_path / "cache").rglob("dataset_info.json"))
    assert not list((tmp_path / "cache").rglob(mnist.SOURCE_MANIFEST))


def test_a_damaged_bundled_file_is_named_with_both_sha256s(tmp_path, no_network, monkeypatch):
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in MNIST_FILES.values():
        (copy / name).symlink_to(mnist.BUNDLED_DATA_DIR / name)
    damaged = copy / "t10k-labels-idx1-ubyte.gz"
    data = bytearray(damaged.read_bytes())
    data[-1] ^= 1
    damaged.unlink()
    damaged.write_bytes(bytes(data))
    must_not_prepare(monkeypatch)
    expected = mnist.registered_sha256s()[damaged.name]
    with pytest.raises(mnist.MNISTChecksumError) as error:
        mnist.prepare_mnist(copy, cache_dir=tmp_path / "cache", log=lambda line: None)
    assert str(damaged) in str(error.value)
    assert hashlib.sha256(bytes(data)).hexdigest() in str(error.value) and expected in str(error.value)


class BundledFiles(http.server.BaseHTTPRequestHandler):
    """Serves the bundled files by name (a stand-in for MNIST's mirror) and records the paths asked for."""

    requested: list = []

    def do_GET(self):
        self.requested.append(self.path)
        data = (mnist.BUNDLED_DATA_DIR / self.path.rsplit("/", 1)[-1]).read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def test_download_goes_through_tfds_download_manager_with_checksums(tmp_path, monkeypatch):
    """download=True: tfds's download manager fetches the registered files (served here by a
    local server at the registered sizes and sha256s) and checks them."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), BundledFiles)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}/mnist/"
        registered = mnist.registered_url_infos()
        local = {base + info.filename: info for info in registered.values()}
        monkeypatch.setattr(mnist, "registered_url_infos", lambda: local)
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        # Parse 3 fake examples per split instead of the 70,000 real ones.
        monkeypatch.setattr(mnist, "read_idx_images", lambda path, count=None: fake_images(3, 0))
        monkeypatch.setattr(mnist, "read_idx_labels", lambda path, count=None: np.array([1, 2, 3], np.uint8))
        lines = []
        splits = mnist.load_mnist(cache_dir=tmp_path / "cache", download=True, validation_size=1, log=lines.append)
    finally:
        server.shutdown()
    assert sorted(BundledFiles.requested) == sorted(f"/mnist/{name}" for name in MNIST_FILES.values())
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (2, 1, 3)
    assert len(lines) == 1 and lines[0].startswith("downloading MNIST with tensorflow-datasets into ")
    assert len(list((tmp_path / "cache" / "downloads").glob("*ubyte*.gz*"))) == 4  # kept by tfds
    key = mnist.source_key(mnist.registered_sha256s())  # the canonical files' key
    assert (mnist.prepared_dir(tmp_path / "cache", key) / "jaxdl_mnist" / "1.0.0" / "dataset_info.json").is_file()


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
    assert len(list(cache.glob("mnist-*/jaxdl_mnist/1.0.0/dataset_info.json"))) == 3
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


def test_quiet_tfds_restores_loggers_and_replays_output_on_failure(capfd):
    absl_logger = logging.getLogger("absl")
    absl_logger.setLevel(logging.INFO)
    try:
        with mnist.quiet_tfds():
            from absl import logging as absl_logging

            absl_logging.warning("Variant folder x has no dataset_info.json")
            print("tfds says something")
        assert capfd.readouterr() == ("", "")
        assert absl_logger.level == logging.INFO
        with pytest.raises(RuntimeError, match="broken"), mnist.quiet_tfds():
            print("what tfds said before failing")
            raise RuntimeError("broken")
        assert capfd.readouterr() == ("", "what tfds said before failing\n")
        assert absl_logger.level == logging.INFO
    finally:
        absl_logger.setLevel(logging.NOTSET)


def test_first_preparation_prints_one_line_then_nothing(tmp_path, monkeypatch, capfd, no_network):
    """The real MNIST from data/mnist: one line of jaxdl's own, no tfds output; then silence;
    the validation split is the one every jaxdl version held out."""
    monkeypatch.chdir(mnist.BUNDLED_DATA_DIR.parents[1])
    cache = tmp_path / "cache"
    key = hashlib.sha256((mnist.BUNDLED_DATA_DIR / "SHA256SUMS").read_bytes()).hexdigest()[:16]
    assert mnist.source_key(mnist.registered_sha256s()) == key  # the canonical files' key
    absl_logger = logging.getLogger("absl")
    absl_logger.setLevel(logging.INFO)  # louder than tfds's default: jaxdl must still say nothing of it
    tfds.display_progress_bar(True)
    try:
        root = mnist.prepare_mnist(pathlib.Path("data/mnist"), cache_dir=cache)
        out, err = capfd.readouterr()
        assert out == ""
        assert err == f"preparing MNIST from data/mnist into {cache}/mnist-{key}, once (about 10 s)\n"
        for word in TFDS_WORDS:
            assert word not in out + err, word
        assert absl_logger.level == logging.INFO  # restored
    finally:
        absl_logger.setLevel(logging.NOTSET)
    assert root == cache / f"mnist-{key}"
    manifest = json.loads((root / mnist.SOURCE_MANIFEST).read_text())
    assert manifest["files"] == mnist.registered_sha256s() and manifest["verified_against_tfds_checksums"]

    must_not_prepare(monkeypatch)
    # Later loads: the same directory, a copy of its files, and download=True all reuse it silently.
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in MNIST_FILES.values():
        (copy / name).write_bytes((mnist.BUNDLED_DATA_DIR / name).read_bytes())
    for again in (mnist.prepare_mnist(cache_dir=cache), mnist.prepare_mnist(copy, cache_dir=cache),
                  mnist.prepare_mnist(cache_dir=cache, download=True)):
        assert again == root
    splits = mnist.load_mnist(copy, cache_dir=cache)
    assert capfd.readouterr() == ("", "")
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (55000, 5000, 10000)
    assert hashlib.sha256(splits.validation.images.tobytes()).hexdigest() == VALIDATION_IMAGES_SHA256
    assert hashlib.sha256(splits.validation.labels.tobytes()).hexdigest() == VALIDATION_LABELS_SHA256
    # The test split holds the IDX file's images and labels, each exactly once.
    idx_images = mnist.read_idx_images(mnist.BUNDLED_DATA_DIR / "t10k-images-idx3-ubyte.gz", 10000)
    idx_labels = mnist.read_idx_labels(mnist.BUNDLED_DATA_DIR / "t10k-labels-idx1-ubyte.gz", 10000)

    def rows(images, labels):
        return np.sort(np.concatenate([images.reshape(len(images), -1), labels[:, None].astype(np.uint8)], 1)
                       .view(f"V{28 * 28 + 1}").ravel())

    np.testing.assert_array_equal(rows(splits.test.images, splits.test.labels), rows(idx_images, idx_labels))
    # A missing data dir is an error although the cache is warm.
    with pytest.raises(FileNotFoundError, match="MNIST files missing from /nonexistent"):
        mnist.prepare_mnist("/nonexistent", cache_dir=cache)


def test_bundled_files_match_tfds_registered_checksums():
    sums = dict(line.split()[::-1] for line in (mnist.BUNDLED_DATA_DIR / "SHA256SUMS").read_text().splitlines())
    registered = mnist.registered_url_infos().values()
    assert sums == {info.filename: info.checksum for info in registered} == mnist.registered_sha256s()
    assert set(sums) == set(MNIST_FILES.values())
    for name in ("t10k-labels-idx1-ubyte.gz", "train-labels-idx1-ubyte.gz"):  # the small files only
        assert hashlib.sha256((mnist.BUNDLED_DATA_DIR / name).read_bytes()).hexdigest() == sums[name]
    for name in MNIST_FILES.values():
        assert (mnist.BUNDLED_DATA_DIR / name).stat().st_size == {
            info.filename: int(info.size) for info in registered}[name]


def test_split_validation_holds_out_the_last_examples():
    split = Split(fake_images(10, 0), np.arange(10, dtype=np.int32))
    train, validation = mnist.split_validation(split, 3)
    np.testing.assert_array_equal(validation.labels, [7, 8, 9])
    np.testing.assert_array_equal(train.labels, np.arange(7))
    with pytest.raises(ValueError, match=r"load_mnist: validation_size must be an int in \[0, 10\) \(the training "
                                         r"images\), got 10\."):
        mnist.split_validation(split, 10)
    with pytest.raises(ValueError, match=r"load_mnist: validation_size must be an int >= 0, got -1\."):
        mnist.split_validation(split, -1)
    for bad in (2.0, "3", True):
        with pytest.raises(TypeError, match=rf"load_mnist: validation_size must be an int >= 0, got {bad!r} of "
                                            rf"type {type(bad).__name__}\."):
            mnist.load_mnist("/nonexistent", validation_size=bad)  # refused before any file is looked at


def test_default_cache_dir_follows_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("JAXDL_CACHE_DIR", str(tmp_path))
    assert mnist.default_cache_dir() == tmp_path / "tensorflow_datasets"
