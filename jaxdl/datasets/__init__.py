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

import importlib

#: The public names and the submodule each lives in. They are imported on first access
#: (PEP 562), so ``import jaxdl.datasets.text`` does not load tensorflow-datasets (seconds).
_NAMES = {
    "mnist": ("MNIST", "MNISTChecksumError", "MNISTSplits", "Split", "default_cache_dir", "load_mnist",
              "prepare_mnist", "prepared_dir", "require_mnist_files", "source_key"),
    "pipeline": ("ArraySource", "BatchIterator", "EpochBatches", "RandomShift", "TfdsSource", "augmentation_seed",
                 "epoch_order", "num_batches", "process_shard", "random_shift", "scale_images", "shift_images"),
}
_MODULE_OF = {name: module for module, names in _NAMES.items() for name in names}

__all__ = [
    "MNIST", "MNISTChecksumError", "MNISTSplits", "Split", "default_cache_dir", "load_mnist", "prepare_mnist", "prepared_dir",
    "require_mnist_files", "source_key",
    "ArraySource", "BatchIterator", "EpochBatches", "RandomShift", "TfdsSource", "augmentation_seed", "epoch_order",
    "num_batches", "process_shard", "random_shift", "scale_images", "shift_images",
]


def __getattr__(name: str):
    """Imports the submodule that defines ``name`` on first access."""
    if name in _MODULE_OF:
        value = getattr(importlib.import_module(f"jaxdl.datasets.{_MODULE_OF[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'jaxdl.datasets' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
