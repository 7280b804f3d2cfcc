"""Input pipeline on grain: seeded per-epoch shuffling, augmentation, batching, sharding by process,
background prefetching, and an iterator state that checkpoints.

`EpochBatches` is the epoch-indexed source `jaxdl.fit` takes: ``epoch(e)`` returns an iterator
over epoch ``e``'s batches built by a grain pipeline (`EpochBatches.dataset`)::

    grain.MapDataset.range(steps_per_epoch)          # one element per global batch
      .map(SelectExamples(order, batch_size, shard))  # the example indices of this process's piece
      .map(ReadExamples(source))                      # read them: uint8 images, labels
      .random_map(RandomShift(max_shift), seed=...)   # augmentation (training only)
      .map(ToModelInput())                            # float32 (b, 1, rows, cols) in [0, 1], int32 labels
      .to_iter_dataset(grain.ReadOptions(num_threads, prefetch_buffer_size))

Conventions:

* Data: a source is a random-access collection of (uint8 image (rows, cols), integer label)
  examples with ``read(indices) -> (images (k, rows, cols) uint8, labels (k,))``:
  `ArraySource` over in-memory arrays (what ``EpochBatches(images, labels, ...)`` builds), or
  `TfdsSource` over a tensorflow-datasets ``data_source`` (``tfds.data_source``, array_record
  random access, e.g. `jaxdl.datasets.mnist.data_source`), which reads only the examples asked
  for. Both are grain random-access data sources (``__len__``, ``__getitem__``), so
  ``grain.MapDataset.source(source)`` works too.
* Batches: ``(x, labels)``: x float32 (batch, 1, rows, cols) = pixel / 255 (the exercise's
  layout), labels int32 (batch,) class indices.
* Shuffling: epoch ``e`` of a run with seed ``s`` visits the examples in the order
  ``np.random.default_rng([s, e]).permutation(n)`` (`epoch_order`), the same order as jaxdl's
  earlier hand-written pipeline. The element of the grain dataset is a whole batch: grain's
  per-example ``shuffle``/``batch`` cost about 11 us per example in Python here (measured:
  0.7 ms per batch of 64, index_shuffle alone 5.8 us per call), where one NumPy gather per
  batch costs microseconds.
* Batching: ``batch_size`` is the GLOBAL batch size (over all processes). Training drops the
  last incomplete batch (``drop_remainder=True``: one compiled shape); evaluation keeps it.
* Augmentation (`RandomShift`, a ``grain.transforms.RandomMap``): each image moves by dy, dx
  uniform in [-max_shift, max_shift] pixels, filled with 0 (the background). The shifts of
  global batch ``b`` are drawn from grain's per-element generator of ``random_map`` (Philox,
  keyed by `augmentation_seed` ``(s, e)`` and counter ``b``): all dy of the global batch, then
  all dx, and each process applies its piece's. They depend on nothing else (not the thread
  that builds the batch, not the number of processes), so every epoch and every sharding of
  it is reproducible.
* Sharding by process (``shard=grain.sharding.ShardByJaxProcess()`` in a multi-process run,
  or ``grain.sharding.ShardOptions(shard_index=i, shard_count=P)``): process ``i`` of ``P``
  reads only rows ``[i * b/P, (i + 1) * b/P)`` of every global batch of ``b`` examples, the
  same batches in the same order on every process, so concatenating the processes' batches in
  process order gives exactly the one-process global batch (augmentation included) -- what
  ``jax.make_array_from_process_local_data`` expects on a one-axis ``"data"`` mesh whose
  devices are in process order. ``batch_size`` must be divisible by ``P``; so must a kept
  last batch (``drop_remainder=False``), else construction fails. ``steps_per_epoch`` is the
  number of global batches (the same on every process). ShardOptions's own ``drop_remainder``
  is not used (the batch's is).
* Prefetching: grain's thread pool builds the next ``prefetch_size`` batches in
  ``num_threads`` background threads while the step runs (``prefetch_size=0``: in the
  caller's thread). Batches come out in order whatever the threads do. grain's worker
  processes (``mp_prefetch``) are not used: on the 2-core test machine they took 1.6 s or
  more to start per epoch and delivered about 26,000 images/s, against about 480,000 from
  two threads (``benchmarks/bench_pipeline.py --multiprocessing``); ``dataset(e)`` is there
  for whoever wants to add them.
* Checkpointing: `BatchIterator` (what ``epoch(e)`` returns) has grain's ``get_state()`` /
  ``set_state(state)``: ``{"next_index": k}`` after ``k`` batches. Together with the epoch
  it is the whole data position: `jaxdl.fit` stores both in its mid-epoch checkpoints
  (``checkpoint_every_steps``) and a resumed run continues with batch ``k`` of epoch ``e``,
  bit-identical to an unbroken run.

Example:
    >>> train = EpochBatches(split.images, split.labels, 64, seed=0, shuffle=True, max_shift=2,
    ...                      drop_remainder=True, shard=grain.sharding.ShardByJaxProcess())
    >>> for x, y in train.epoch(3):
    ...     train_state, metrics = train_step(train_state, x, y)
"""

from __future__ import annotations

from typing import Any, NamedTuple

import grain
import numpy as np

from jaxdl.validation import nonnegative_int, positive_int

# ----------------------------------------------------------------------------------------
# Pure functions: scaling, order, seeds, shifting.


def scale_images(images: np.ndarray) -> np.ndarray:
    """uint8 (n, rows, cols) -> float32 (n, 1, rows, cols) in [0, 1] (pixel / 255).

    Raises:
        TypeError: for images that are not uint8.
        ValueError: for images that are not of shape (n, rows, cols).
    """
    check_images("scale_images", images)
    return (images[:, None, :, :].astype(np.float32)) * np.float32(1.0 / 255.0)


def epoch_order(num_examples: int, *, seed: int, epoch: int) -> np.ndarray:
    """The permutation of ``range(num_examples)`` used in ``epoch`` of a run with ``seed``."""
    return np.random.default_rng([int(seed), int(epoch)]).permutation(num_examples)


def augmentation_seed(*, seed: int, epoch: int) -> int:
    """The seed of the augmentation's ``random_map`` in ``epoch`` of a run with ``seed`` (64 bits)."""
    return int(np.random.SeedSequence([int(seed), int(epoch), 1]).generate_state(1, np.uint64)[0])


def shift_images(images: np.ndarray, dy: np.ndarray, dx: np.ndarray, max_shift: int) -> np.ndarray:
    """Image ``i`` of uint8 (n, rows, cols) moved by ``dy[i] - max_shift`` rows and ``dx[i] - max_shift``
    columns (``dy``, ``dx`` in [0, 2 * max_shift]); pixels shifted in from outside are 0."""
    if max_shift == 0:
        return images
    n, rows, cols = images.shape
    height, width = rows + 2 * max_shift, cols + 2 * max_shift
    padded = np.zeros((n, height, width), images.dtype)
    padded[:, max_shift:max_shift + rows, max_shift:max_shift + cols] = images
    # One flat gather (4x faster than indexing the three axes): the top-left corner of image i's
    # window in the flattened padded batch, plus every pixel's offset from that corner.
    corner = np.arange(n) * (height * width) + np.asarray(dy) * width + np.asarray(dx)
    window = np.arange(rows)[:, None] * width + np.arange(cols)
    return padded.ravel()[corner[:, None, None] + window]


def random_shift(images: np.ndarray, max_shift: int, rng: np.random.Generator) -> np.ndarray:
    """Translates each uint8 (n, rows, cols) image by dy, dx uniform in [-max_shift, max_shift].

    Draws all n dy from ``rng``, then all n dx (what `RandomShift` does for a global batch).
    Pixels shifted in from outside are 0. ``max_shift=0`` returns the images unchanged.
    """
    if max_shift == 0:
        return images
    n = images.shape[0]
    dy = rng.integers(0, 2 * max_shift + 1, n)
    dx = rng.integers(0, 2 * max_shift + 1, n)
    return shift_images(images, dy, dx, max_shift)


def num_batches(num_examples: int, batch_size: int, *, drop_remainder: bool) -> int:
    """How many batches ``num_examples`` make."""
    full, rest = divmod(num_examples, batch_size)
    return full if drop_remainder or rest == 0 else full + 1


# ----------------------------------------------------------------------------------------
# Sources: in-memory arrays and tensorflow-datasets data sources.


def check_images(where: str, images: np.ndarray) -> None:
    """Raises TypeError unless ``images`` are uint8, ValueError unless of shape (n, rows, cols)."""
    if images.dtype != np.uint8:
        raise TypeError(f"{where}: images must be uint8 (n, rows, cols), got {images.dtype} {images.shape}.")
    if images.ndim != 3:
        raise ValueError(f"{where}: images must be uint8 (n, rows, cols), got {images.dtype} {images.shape}.")


def _check_images_labels(where: str, images, labels) -> None:
    images, labels = np.asarray(images), np.asarray(labels)
    check_images(where, images)
    if not np.issubdtype(labels.dtype, np.integer):
        raise TypeError(f"{where}: labels must be integer class indices of shape (n,), got {labels.dtype} "
                        f"{labels.shape}.")
    if labels.ndim != 1:
        raise ValueError(f"{where}: labels must be integer class indices of shape (n,), got {labels.dtype} "
                         f"{labels.shape}.")
    if len(images) != len(labels):
        raise ValueError(f"{where}: {len(images)} images but {len(labels)} labels.")


class ArraySource:
    """In-memory examples as a grain random-access data source.

    Args:
        images: uint8 (n, rows, cols).
        labels: integer class indices (n,).
        where: how error messages name the caller.

    Raises:
        TypeError: for images that are not uint8 or labels that are not integers.
        ValueError: for other shapes, or different lengths.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, *, where: str = "ArraySource"):
        _check_images_labels(where, images, labels)
        self.images, self.labels = np.asarray(images), np.asarray(labels)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        return self.images[index], int(self.labels[index])

    def read(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """uint8 images (k, rows, cols) and labels (k,) of ``indices`` (one gather each)."""
        return self.images[indices], self.labels[indices]

    def __repr__(self) -> str:
        return f"ArraySource({len(self)} images of {self.images.shape[1:]})"


class TfdsSource:
    """Image classification examples read from a tensorflow-datasets ``data_source`` on demand.

    Each `read` asks the data source for just those records (``__getitems__``: random access into
    array_record files); nothing is held in memory. The images must be stored decoded, as uint8
    (rows, cols) or (rows, cols, 1) tensors (as `jaxdl.datasets.mnist` stores MNIST); tfds's
    ``Image`` features are decoded by the data source itself.

    Args:
        data_source: e.g. ``tfds.data_source("jaxdl_mnist", split="train", data_dir=...)``.
        start: the first record to use.
        stop: one past the last record to use (None: the data source's end); ``start`` and
            ``stop`` select e.g. a held-out validation tail.
        image_key: the image feature.
        label_key: the label feature.

    Raises:
        TypeError: for a ``start`` or ``stop`` that is not an int.
        ValueError: for an empty or out-of-range ``[start, stop)``.

    Example:
        >>> data = tfds.data_source("jaxdl_mnist", split="train", data_dir=mnist.prepare_mnist())
        >>> train = EpochBatches.from_source(TfdsSource(data, stop=55_000), 64, shuffle=True, max_shift=2)
    """

    def __init__(self, data_source, *, start: int = 0, stop: int | None = None, image_key: str = "image",
                 label_key: str = "label"):
        total = len(data_source)
        start = nonnegative_int("TfdsSource", "start", start)
        stop = total if stop is None else nonnegative_int("TfdsSource", "stop", stop)
        if not start < stop <= total:
            raise ValueError(f"TfdsSource: start and stop must satisfy 0 <= start < stop <= {total} (the data "
                             f"source's length), got start={start}, stop={stop}.")
        self.data_source, self.start, self.stop = data_source, start, stop
        self.image_key, self.label_key = image_key, label_key

    def __len__(self) -> int:
        return self.stop - self.start

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        images, labels = self.read(np.asarray([index]))
        return images[0], int(labels[0])

    def read(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """uint8 images (k, rows, cols) and int32 labels (k,) of ``indices`` (relative to ``start``).

        Raises:
            TypeError: for records whose images are not uint8 arrays (e.g. undecoded bytes).
            ValueError: for images of another shape than (rows, cols) or (rows, cols, 1).
        """
        records = self.data_source.__getitems__([self.start + int(i) for i in indices])
        images = [record[self.image_key] for record in records]
        if not all(isinstance(image, np.ndarray) for image in images):
            kinds = sorted({type(image).__name__ for image in images})
            raise TypeError(f"TfdsSource: images must be uint8 arrays (stored decoded, e.g. as a "
                            f"tfds.features.Tensor), got {', '.join(kinds)}.")
        images = np.stack(images)
        if images.ndim == 4 and images.shape[-1] == 1:
            images = images[..., 0]
        check_images("TfdsSource", images)
        return images, np.asarray([record[self.label_key] for record in records], np.int32)

    def __repr__(self) -> str:
        return f"TfdsSource({self.data_source!r}, start={self.start}, stop={self.stop})"


# ----------------------------------------------------------------------------------------
# The grain transforms (module-level classes: picklable, for grain's worker processes too).


class Piece(NamedTuple):
    """The examples of this process's piece of one global batch.

    Attributes:
        indices: the source indices of the piece's examples (int64 (k,)).
        offset: where the piece starts in the global batch.
        size: the global batch's number of examples.
    """

    indices: np.ndarray
    offset: int
    size: int


class Examples(NamedTuple):
    """A piece read from the source: uint8 images (k, rows, cols), labels (k,), and its place in
    the global batch (as `Piece`)."""

    images: np.ndarray
    labels: np.ndarray
    offset: int
    size: int


class SelectExamples(grain.transforms.Map):
    """Global batch index -> the `Piece` of it that this process reads.

    Args:
        order: the epoch's example order (a permutation), or None for 0..n-1.
        num_examples: n.
        batch_size: the global batch size.
        shard_index: this process's piece of every global batch...
        shard_count: ...of this many equal pieces.
    """

    def __init__(self, order: np.ndarray | None, num_examples: int, batch_size: int, shard_index: int = 0,
                 shard_count: int = 1):
        self.order, self.num_examples, self.batch_size = order, num_examples, batch_size
        self.shard_index, self.shard_count = shard_index, shard_count

    def map(self, batch: int) -> Piece:
        start = int(batch) * self.batch_size
        size = min(self.batch_size, self.num_examples - start)
        local = size // self.shard_count
        lo = start + self.shard_index * local
        indices = np.arange(lo, lo + local) if self.order is None else self.order[lo:lo + local]
        return Piece(indices, lo - start, size)


class ReadExamples(grain.transforms.Map):
    """`Piece` -> `Examples`: one ``source.read`` of the piece's indices."""

    def __init__(self, source):
        self.source = source

    def map(self, piece: Piece) -> Examples:
        images, labels = self.source.read(piece.indices)
        return Examples(images, labels, piece.offset, piece.size)


class RandomShift(grain.transforms.RandomMap):
    """The augmentation: each image moves by up to ``max_shift`` pixels along each axis.

    ``rng`` is grain's generator for this element (the global batch): the transform draws
    ``size`` dy then ``size`` dx for the whole global batch and applies rows ``[offset, offset +
    k)`` of them, so a piece is shifted exactly as in the one-process batch.
    """

    def __init__(self, max_shift: int):
        self.max_shift = max_shift

    def random_map(self, examples: Examples, rng: np.random.Generator) -> Examples:
        m, k = self.max_shift, len(examples.labels)
        dy = rng.integers(0, 2 * m + 1, examples.size)[examples.offset:examples.offset + k]
        dx = rng.integers(0, 2 * m + 1, examples.size)[examples.offset:examples.offset + k]
        return examples._replace(images=shift_images(examples.images, dy, dx, m))


class ToModelInput(grain.transforms.Map):
    """`Examples` -> ``(x, labels)``: float32 (k, 1, rows, cols) in [0, 1] and int32 (k,)."""

    def map(self, examples: Examples) -> tuple[np.ndarray, np.ndarray]:
        return scale_images(examples.images), np.asarray(examples.labels, np.int32)


# ----------------------------------------------------------------------------------------
# The epoch-indexed source.


def process_shard() -> grain.sharding.ShardOptions:
    """This JAX process's shard (``grain.sharding.ShardByJaxProcess``): pass it as ``shard=``."""
    return grain.sharding.ShardByJaxProcess()


class EpochBatches:
    """An epoch-indexed image source for `jaxdl.fit`: ``epoch(e)`` iterates over that epoch's batches.

    Epoch ``e`` visits the examples in `epoch_order` (``shuffle=True``) and shifts the images
    with `RandomShift` seeded by `augmentation_seed` (``max_shift > 0``): both depend only on
    ``seed`` and ``e``, so every epoch, and a run resumed anywhere in it, sees exactly the
    batches of an unbroken run. The module docstring has the pipeline and its conventions.

    Args:
        images: uint8 (n, rows, cols) (`from_source` takes any source instead).
        labels: integer class indices (n,).
        batch_size: examples per global batch (over all processes).
        seed: the run's seed (shuffling and augmentation).
        shuffle: visit the examples in `epoch_order` (else in stored order).
        max_shift: augmentation, in pixels (0: none).
        drop_remainder: skip the last incomplete batch (training: one compiled shape).
        shard: this process's shard, a ``grain.sharding.ShardOptions`` (`process_shard`,
            ``grain.sharding.ShardByJaxProcess()``); None for all of every batch.
        num_threads: grain's background threads that build batches.
        prefetch_size: batches built ahead (0: each batch is built when asked for, in the
            caller's thread).

    Raises:
        TypeError: for images that are not uint8, labels that are not integers, a
            ``batch_size``, ``seed``, ``max_shift``, ``num_threads`` or ``prefetch_size`` that is
            not an int (`jaxdl.validation`), or a ``shard`` that is not a ``ShardOptions``.
        ValueError: for images or labels of other shapes, a ``batch_size`` < 1 or one larger
            than the data with ``drop_remainder`` (every batch would be dropped), a negative
            ``seed``, ``max_shift``, ``num_threads`` or ``prefetch_size``, or a shard that does
            not divide the batches.

    Example:
        >>> train = EpochBatches(split.images, split.labels, 64, seed=0, shuffle=True, max_shift=2,
        ...                      drop_remainder=True)
        >>> result = jaxdl.fit(jaxdl.make_train_step(model, loss_fn, optimizer), train_state, train, epochs=8)
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, batch_size: int, *, seed: int = 0,
                 shuffle: bool = False, max_shift: int = 0, drop_remainder: bool = False,
                 shard: grain.sharding.ShardOptions | None = None, num_threads: int = 2, prefetch_size: int = 4):
        self._setup(ArraySource(images, labels, where="EpochBatches"), batch_size, seed=seed, shuffle=shuffle,
                    max_shift=max_shift, drop_remainder=drop_remainder, shard=shard, num_threads=num_threads,
                    prefetch_size=prefetch_size)

    @classmethod
    def from_source(cls, source, batch_size: int, **options) -> "EpochBatches":
        """The same over any source with ``__len__`` and ``read(indices)`` (`ArraySource`,
        `TfdsSource`); ``options`` as for the constructor."""
        if not (hasattr(source, "__len__") and callable(getattr(source, "read", None))):
            raise TypeError(f"EpochBatches.from_source: the source needs __len__ and read(indices), got "
                            f"{type(source).__name__} (wrap a tfds data source in TfdsSource).")
        batches = cls.__new__(cls)
        batches._setup(source, batch_size, **options)
        return batches

    def _setup(self, source, batch_size, *, seed: int = 0, shuffle: bool = False, max_shift: int = 0,
               drop_remainder: bool = False, shard: grain.sharding.ShardOptions | None = None, num_threads: int = 2,
               prefetch_size: int = 4) -> None:
        where = "EpochBatches"
        self.source = source
        self.batch_size = positive_int(where, "batch_size", batch_size)
        self.seed = nonnegative_int(where, "seed", seed)
        self.max_shift = nonnegative_int(where, "max_shift", max_shift)
        self.num_threads = nonnegative_int(where, "num_threads", num_threads)
        self.prefetch_size = nonnegative_int(where, "prefetch_size", prefetch_size)
        self.shuffle, self.drop_remainder = bool(shuffle), bool(drop_remainder)
        if shard is not None and not isinstance(shard, grain.sharding.ShardOptions):
            raise TypeError(f"{where}: shard must be a grain.sharding.ShardOptions (e.g. process_shard()) or None, "
                            f"got {shard!r} of type {type(shard).__name__}.")
        self.shard_index = 0 if shard is None else int(shard.shard_index)
        self.shard_count = 1 if shard is None else int(shard.shard_count)
        n = len(source)
        if n == 0:
            raise ValueError(f"{where}: the source holds no examples.")
        if self.drop_remainder and self.batch_size > n:
            raise ValueError(f"{where}: batch_size {self.batch_size} is larger than the {n} examples, so every "
                             f"batch would be dropped.")
        if not (self.shard_count >= 1 and 0 <= self.shard_index < self.shard_count):
            raise ValueError(f"{where}: shard_index must be in [0, shard_count), got {self.shard_index} of "
                             f"{self.shard_count}.")
        if self.batch_size % self.shard_count:
            raise ValueError(f"{where}: batch_size {self.batch_size} is not divisible by the {self.shard_count} "
                             f"shards (every process gets an equal piece of each global batch).")
        rest = 0 if self.drop_remainder else n % self.batch_size
        if rest % self.shard_count:
            raise ValueError(f"{where}: the last batch ({rest} of the {n} examples) is not divisible by the "
                             f"{self.shard_count} shards; use drop_remainder=True or another batch size.")

    @property
    def num_examples(self) -> int:
        """Examples in the source."""
        return len(self.source)

    @property
    def local_batch_size(self) -> int:
        """Examples per batch on this process (``batch_size / shard_count``; the kept last batch is smaller)."""
        return self.batch_size // self.shard_count

    @property
    def steps_per_epoch(self) -> int:
        """The number of (global) batches of every epoch."""
        return num_batches(self.num_examples, self.batch_size, drop_remainder=self.drop_remainder)

    def __len__(self) -> int:
        return self.steps_per_epoch

    def __iter__(self) -> "BatchIterator":
        """Epoch 0's batches (so the object is a re-iterable too)."""
        return self.epoch(0)

    def dataset(self, epoch: int) -> grain.MapDataset:
        """Epoch ``epoch``'s batches as a ``grain.MapDataset`` (random access: ``dataset(e)[k]``)."""
        order = epoch_order(self.num_examples, seed=self.seed, epoch=epoch) if self.shuffle else None
        dataset = grain.MapDataset.range(self.steps_per_epoch).map(
            SelectExamples(order, self.num_examples, self.batch_size, self.shard_index, self.shard_count))
        dataset = dataset.map(ReadExamples(self.source))
        if self.max_shift:
            dataset = dataset.random_map(RandomShift(self.max_shift),
                                         seed=augmentation_seed(seed=self.seed, epoch=epoch))
        return dataset.map(ToModelInput())

    def epoch(self, epoch: int) -> "BatchIterator":
        """The batches of ``epoch`` (0-based), built ahead in grain's threads.

        Raises:
            TypeError: for an ``epoch`` that is not an int.
            ValueError: for a negative ``epoch``.
        """
        epoch = nonnegative_int("EpochBatches.epoch", "epoch", epoch)
        options = grain.ReadOptions(num_threads=self.num_threads, prefetch_buffer_size=self.prefetch_size)
        return BatchIterator(iter(self.dataset(epoch).to_iter_dataset(options)))

    def __repr__(self) -> str:
        shard = f", shard {self.shard_index} of {self.shard_count}" if self.shard_count > 1 else ""
        return (f"EpochBatches({self.source!r}, batch_size={self.batch_size}, seed={self.seed}, "
                f"shuffle={self.shuffle}, max_shift={self.max_shift}, drop_remainder={self.drop_remainder}{shard})")


class BatchIterator:
    """One epoch's batches: an iterator with grain's checkpoint protocol.

    ``get_state()`` is ``{"next_index": k}`` after ``k`` batches; ``set_state`` of such a
    state continues with batch ``k``. Exhausting the iterator, `close` or leaving a ``with``
    block stops grain's threads.
    """

    def __init__(self, iterator: grain.DatasetIterator):
        self._iterator = iterator
        self._closed = False

    def __iter__(self) -> "BatchIterator":
        return self

    def __next__(self) -> tuple[np.ndarray, np.ndarray]:
        if self._closed:
            raise StopIteration
        try:
            return next(self._iterator)
        except StopIteration:
            self.close()
            raise

    def get_state(self) -> dict[str, Any]:
        """The position (JSON-serializable; grain's iterator state)."""
        return self._iterator.get_state()

    def set_state(self, state: dict[str, Any]) -> None:
        """Continues from a position that `get_state` returned (for the same epoch of the same source).

        Raises:
            ValueError: for a state that is not such a position, or a closed iterator.
        """
        if self._closed:
            raise ValueError("BatchIterator.set_state: the iterator is closed (exhausted); start the epoch again.")
        if not isinstance(state, dict) or set(state) != {"next_index"}:
            raise ValueError(f"BatchIterator.set_state: expected {{'next_index': int}}, got {state!r}.")
        try:
            self._iterator.set_state(state)
        except IndexError as error:
            raise ValueError(f"BatchIterator.set_state: {error}") from error

    def close(self) -> None:
        """Stops grain's background threads."""
        if not self._closed:
            self._closed = True
            self._iterator.close()

    def __enter__(self) -> "BatchIterator":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


__all__ = [
    "ArraySource", "BatchIterator", "EpochBatches", "Examples", "Piece", "RandomShift", "ReadExamples",
    "SelectExamples", "TfdsSource", "ToModelInput", "augmentation_seed", "epoch_order", "num_batches",
    "process_shard", "random_shift", "scale_images", "shift_images",
]
