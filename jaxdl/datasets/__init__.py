"""Datasets: MNIST through tensorflow-datasets without TensorFlow, and the input pipeline.

* `jaxdl.datasets.mnist`: `load_mnist` (train/validation/test in memory), `prepare_mnist`
  and the TensorFlow-free tfds builder `MNIST`. Prepared data is cached per source: in
  ``<cache_dir>/mnist-<key>/`` where ``<key>`` (`source_key`) comes from the sha256s of the
  four files in ``data_dir``, hashed on every load; preparing prints one line to stderr (or
  through ``log``) and nothing of tensorflow-datasets; loading prepared data prints nothing.
* `jaxdl.datasets.pipeline`: `EpochBatches` (the epoch-indexed source `jaxdl.fit` takes), `batches`, `epoch_order` (seeded per-epoch shuffling),
  `random_shift` (augmentation), `prefetch` (background thread), `scale_images`.
"""

from jaxdl.datasets.mnist import (
    MNIST, MNISTSplits, Split, default_cache_dir, load_mnist, prepare_mnist, prepared_dir, require_mnist_files,
    source_key,
)
from jaxdl.datasets.pipeline import (
    EpochBatches, batches, epoch_augmentation_rng, epoch_order, num_batches, prefetch, random_shift, scale_images,
)

__all__ = [
    "MNIST", "MNISTSplits", "Split", "default_cache_dir", "load_mnist", "prepare_mnist", "prepared_dir",
    "require_mnist_files", "source_key",
    "EpochBatches", "batches", "epoch_augmentation_rng", "epoch_order", "num_batches", "prefetch", "random_shift",
    "scale_images",
]
