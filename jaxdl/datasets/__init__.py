"""Datasets: MNIST through tensorflow-datasets without TensorFlow, and the input pipeline.

* `jaxdl.datasets.mnist`: `load_mnist` (train/validation/test in memory, read with
  ``tfds.data_source``), `prepare_mnist` and the tfds builder `MNIST` (dataset
  ``jaxdl_mnist``: uint8 image tensors in array_record, no PNG). Prepared data is cached per
  source: in ``<cache_dir>/mnist-<key>/`` where ``<key>`` (`source_key`) comes from the
  sha256s of the four files in ``data_dir``, hashed and checked (`MNISTChecksumError`) on
  every load; preparing prints one line to stderr (or through ``log``) and nothing of
  tensorflow-datasets; loading prepared data prints nothing.
* `jaxdl.datasets.pipeline`: the input pipeline on grain: `EpochBatches` (the epoch-indexed
  source `jaxdl.fit` takes: seeded per-epoch shuffling, `RandomShift` augmentation, batching,
  sharding by process, prefetching in grain's threads, checkpointable iterators) over an
  `ArraySource` (in-memory arrays) or a `TfdsSource` (a tensorflow-datasets data source).
"""

from jaxdl.datasets.mnist import (
    MNIST, MNISTChecksumError, MNISTSplits, Split, default_cache_dir, load_mnist, prepare_mnist, prepared_dir,
    require_mnist_files, source_key,
)
from jaxdl.datasets.pipeline import (
    ArraySource, BatchIterator, EpochBatches, RandomShift, TfdsSource, augmentation_seed, epoch_order, num_batches,
    process_shard, random_shift, scale_images, shift_images,
)

__all__ = [
    "MNIST", "MNISTChecksumError", "MNISTSplits", "Split", "default_cache_dir", "load_mnist", "prepare_mnist", "prepared_dir",
    "require_mnist_files", "source_key",
    "ArraySource", "BatchIterator", "EpochBatches", "RandomShift", "TfdsSource", "augmentation_seed", "epoch_order",
    "num_batches", "process_shard", "random_shift", "scale_images", "shift_images",
]
