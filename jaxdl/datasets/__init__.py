"""Datasets: MNIST through tensorflow-datasets without TensorFlow, and the input pipeline.

* `jaxdl.datasets.mnist`: `load_mnist` (train/validation/test in memory), `prepare_mnist`
  and the TensorFlow-free tfds builder `MNIST`.
* `jaxdl.datasets.pipeline`: `EpochBatches` (the epoch-indexed source `jaxdl.fit` takes), `batches`, `epoch_order` (seeded per-epoch shuffling),
  `random_shift` (augmentation), `prefetch` (background thread), `scale_images`.
"""

from jaxdl.datasets.mnist import (
    MNIST, MNISTSplits, Split, default_cache_dir, load_mnist, prepare_mnist,
)
from jaxdl.datasets.pipeline import (
    EpochBatches, batches, epoch_augmentation_rng, epoch_order, num_batches, prefetch, random_shift, scale_images,
)

__all__ = [
    "MNIST", "MNISTSplits", "Split", "default_cache_dir", "load_mnist", "prepare_mnist",
    "EpochBatches", "batches", "epoch_augmentation_rng", "epoch_order", "num_batches", "prefetch", "random_shift",
    "scale_images",
]
