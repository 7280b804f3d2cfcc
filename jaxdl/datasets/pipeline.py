"""Input pipeline: seeded per-epoch shuffling, NumPy batches, background prefetching.

Conventions:

* Images are uint8 (n, rows, cols) in memory; batches are float32 (batch, 1, rows, cols)
  scaled to [0, 1] (pixel / 255), the exercise's layout, and labels are int32 (batch,)
  class indices (the jaxdl losses accept them as they are).
* Shuffling: epoch ``e`` of a run with seed ``s`` visits the examples in the order
  ``np.random.default_rng([s, e]).permutation(n)``. The order depends on nothing else, so a
  run resumed at epoch ``e`` sees exactly the batches of an unbroken run.
* Training batches drop the last incomplete batch (every step has the same shape, so the
  jitted step compiles once); evaluation batches keep it.
* Augmentation (optional, training only): `random_shift` moves each image by up to
  ``max_shift`` pixels along each axis, filling with 0 (the background), drawing from
  ``np.random.default_rng([seed, epoch, 1])`` (`epoch_augmentation_rng`): reproducible too.
* `prefetch` builds the next batches in a background thread while the caller (the
  accelerator) works on the current one.

Example:
    >>> for x, y in prefetch(batches(split.images, split.labels, 64, order=epoch_order(len(split), seed=0, epoch=3),
    ...                              drop_remainder=True)):
    ...     train_state, metrics = train_step(train_state, x, y)
"""

from __future__ import annotations

import queue
import threading
from typing import Callable, Iterable, Iterator

import numpy as np


def scale_images(images: np.ndarray) -> np.ndarray:
    """uint8 (n, rows, cols) -> float32 (n, 1, rows, cols) in [0, 1]."""
    if images.dtype != np.uint8 or images.ndim != 3:
        raise ValueError(f"scale_images: expected uint8 (n, rows, cols), got {images.dtype} {images.shape}.")
    return (images[:, None, :, :].astype(np.float32)) * np.float32(1.0 / 255.0)


def epoch_order(num_examples: int, *, seed: int, epoch: int) -> np.ndarray:
    """The permutation of ``range(num_examples)`` used in ``epoch`` of a run with ``seed``."""
    return np.random.default_rng([int(seed), int(epoch)]).permutation(num_examples)


def epoch_augmentation_rng(*, seed: int, epoch: int) -> np.random.Generator:
    """The generator `random_shift` draws from in ``epoch`` of a run with ``seed``."""
    return np.random.default_rng([int(seed), int(epoch), 1])


def random_shift(images: np.ndarray, max_shift: int, rng: np.random.Generator) -> np.ndarray:
    """Translates each uint8 (n, rows, cols) image by dy, dx uniform in [-max_shift, max_shift].

    Pixels shifted in from outside are 0. ``max_shift=0`` returns the images unchanged.
    """
    if max_shift == 0:
        return images
    n, rows, cols = images.shape
    padded = np.pad(images, ((0, 0), (max_shift, max_shift), (max_shift, max_shift)))
    dy = rng.integers(0, 2 * max_shift + 1, n)
    dx = rng.integers(0, 2 * max_shift + 1, n)
    row_index = (dy[:, None] + np.arange(rows))[:, :, None]
    col_index = (dx[:, None] + np.arange(cols))[:, None, :]
    return padded[np.arange(n)[:, None, None], row_index, col_index]


def num_batches(num_examples: int, batch_size: int, *, drop_remainder: bool) -> int:
    """How many batches `batches` yields."""
    full, rest = divmod(num_examples, batch_size)
    return full if drop_remainder or rest == 0 else full + 1


def batches(images: np.ndarray, labels: np.ndarray, batch_size: int, *, order: np.ndarray | None = None,
            drop_remainder: bool = False, transform: Callable[[np.ndarray], np.ndarray] | None = None,
            ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yields (x float32 (b, 1, rows, cols) in [0, 1], labels int32 (b,)) batches.

    Args:
        images: uint8 (n, rows, cols).
        labels: integer (n,).
        batch_size: examples per batch.
        order: the example indices to visit (e.g. `epoch_order`); default 0..n-1.
        drop_remainder: skip the last batch if it has fewer than ``batch_size`` examples.
        transform: applied to each batch of uint8 images before scaling (augmentation).
    """
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batches: batch_size must be a positive int, got {batch_size!r}.")
    if len(images) != len(labels):
        raise ValueError(f"batches: {len(images)} images but {len(labels)} labels.")
    order = np.arange(len(labels)) if order is None else np.asarray(order)
    for b in range(num_batches(len(order), batch_size, drop_remainder=drop_remainder)):
        index = order[b * batch_size:(b + 1) * batch_size]
        batch = images[index] if transform is None else transform(images[index])
        yield scale_images(batch), np.asarray(labels[index], np.int32)


class prefetch:  # noqa: N801 (used like a function)
    """Iterates over ``iterable`` in a background thread, ``size`` items ahead.

    Exceptions raised by the producer are re-raised in the consumer. Use as a context
    manager, or call `close`, to stop the thread early (for example when training stops on a
    NaN loss); exhausting the iterator stops it too.

    Args:
        iterable: what to iterate over (its items are produced in the thread).
        size: how many items may wait in the queue (2 hides one batch of latency).
    """

    _DONE = object()

    def __init__(self, iterable: Iterable, size: int = 2):
        if size < 1:
            raise ValueError(f"prefetch: size must be >= 1, got {size}.")
        self._queue: queue.Queue = queue.Queue(maxsize=size)
        self._stop = threading.Event()
        self._finished = False
        self._thread = threading.Thread(target=self._produce, args=(iter(iterable),), daemon=True,
                                        name="jaxdl-prefetch")
        self._thread.start()

    def _produce(self, iterator):
        try:
            for item in iterator:
                if not self._put((True, item)):
                    return
        except BaseException as error:  # re-raised in the consumer
            self._put((False, error))
            return
        self._put((True, self._DONE))

    def _put(self, entry) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(entry, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self):
        return self

    def __next__(self):
        if self._finished:
            raise StopIteration
        ok, item = self._queue.get()
        if not ok:
            self.close()
            raise item
        if item is self._DONE:
            self.close()
            raise StopIteration
        return item

    def close(self) -> None:
        """Stops the producer thread and waits for it."""
        self._finished = True
        self._stop.set()
        self._thread.join()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    @property
    def alive(self) -> bool:
        """Whether the producer thread is still running."""
        return self._thread.is_alive()


class EpochBatches:
    """An epoch-indexed image source for `jaxdl.fit`: ``epoch(e)`` yields that epoch's batches.

    Epoch ``e`` visits the examples in `epoch_order` (``shuffle=True``) and shifts the images
    with `random_shift` drawing from `epoch_augmentation_rng` (``max_shift > 0``): both depend
    only on ``seed`` and ``e``, so a run resumed at epoch ``e`` sees exactly the batches of an
    unbroken run. Batches are built in a background thread (`prefetch`) while the step runs.

    Args:
        images: uint8 (n, rows, cols).
        labels: integer (n,).
        batch_size: examples per batch.
        seed: the run's seed (shuffling and augmentation).
        shuffle: visit the examples in `epoch_order` (else in stored order).
        max_shift: augmentation, in pixels (0: none).
        drop_remainder: skip the last incomplete batch (training: one compiled shape).
        prefetch_size: batches built ahead in the background thread (0: no thread).

    Example:
        >>> train = EpochBatches(split.images, split.labels, 64, seed=0, shuffle=True, max_shift=2,
        ...                      drop_remainder=True)
        >>> result = jaxdl.fit(model, loss_fn, optimizer, train_state, train, epochs=8)
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, batch_size: int, *, seed: int = 0,
                 shuffle: bool = False, max_shift: int = 0, drop_remainder: bool = False, prefetch_size: int = 2):
        if len(images) != len(labels):
            raise ValueError(f"EpochBatches: {len(images)} images but {len(labels)} labels.")
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"EpochBatches: batch_size must be a positive int, got {batch_size!r}.")
        if drop_remainder and batch_size > len(labels):
            raise ValueError(f"EpochBatches: batch_size {batch_size} is larger than the {len(labels)} examples, "
                             f"so every batch would be dropped.")
        self.images, self.labels, self.batch_size = images, labels, int(batch_size)
        self.seed, self.shuffle, self.max_shift = int(seed), bool(shuffle), int(max_shift)
        self.drop_remainder, self.prefetch_size = bool(drop_remainder), int(prefetch_size)

    @property
    def steps_per_epoch(self) -> int:
        """The number of batches of every epoch."""
        return num_batches(len(self.labels), self.batch_size, drop_remainder=self.drop_remainder)

    def __len__(self) -> int:
        return self.steps_per_epoch

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Epoch 0's batches (so the object is a re-iterable too)."""
        return self.epoch(0)

    def epoch(self, epoch: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """The batches of ``epoch`` (0-based)."""
        order = epoch_order(len(self.labels), seed=self.seed, epoch=epoch) if self.shuffle else None
        transform = None
        if self.max_shift:
            rng = epoch_augmentation_rng(seed=self.seed, epoch=epoch)
            transform = lambda images: random_shift(images, self.max_shift, rng)  # noqa: E731
        stream = batches(self.images, self.labels, self.batch_size, order=order,
                         drop_remainder=self.drop_remainder, transform=transform)
        if self.prefetch_size:
            return _prefetched(stream, self.prefetch_size)
        return stream


def _prefetched(stream: Iterable, size: int) -> Iterator:
    """Iterates ``stream`` through `prefetch`, stopping its thread however iteration ends."""
    with prefetch(stream, size) as prefetched:
        yield from prefetched
