"""jaxdl: the FAU deep-learning exercise framework as pure JAX init/apply layers.

Architecture (one functional core, every other part uses it):

* `jaxdl.core`: the layer contract (`Layer`, `Serial`, `output_shape`; what a layer declares:
  its regularized params and its recurrent memory, `regularized_mask`, `memory_mask`).
* `jaxdl.combinators`: `Residual`, `Parallel` and `Tied` (parameters shared by `Tie`).
* `jaxdl.layers`: FullyConnected, Conv, Pooling, Flatten, activations, Dropout,
  BatchNormalization (one module each); the recurrent RNN, LSTM and GRU on `lax.scan` with a
  memorized state for truncated BPTT (`reset_memory`) and the exercise's `elman_rnn` and
  `lstm_network` (the package `jaxdl.layers.recurrent`); for research models Embedding,
  PositionalEmbedding, LayerNorm, RMSNorm, MultiHeadAttention, AveragePooling,
  GlobalAveragePooling, GlobalMaxPooling, GELU, SiLU and Reshape.
* `jaxdl.initializers`, `jaxdl.losses`, `jaxdl.regularizers`, `jaxdl.optimizers` (optax).
* `jaxdl.precision`: the dtype rule every layer follows and `MixedPrecision`, the wrapper that
  keeps float32 parameters and computes in bfloat16 or float16.
* `jaxdl.training`: the ONE training step (`make_train_step`), the evaluation step
  (`make_eval_step`, `evaluate`), the ONE loop (`fit(train_step, train_state, train_data)`:
  validation, orbax checkpoint steps in a `Run`'s directory, resume, NaN guard; log lines,
  metrics files, progress and early stopping as callbacks) and `NeuralNetwork`, the
  one-object convenience over it.
* `jaxdl.training.parallel`, `jaxdl.distributed`: data parallelism on a device mesh
  (`data_mesh`, ``mesh=`` of the steps and `NeuralNetwork`) and multi-process runs
  (`jaxdl.distributed.start`: devices, `jax.distributed`, failing fast).
* `jaxdl.models` (LeNet, `build_model` from a config), `jaxdl.checkpoint` (a thin layer
  over orbax-checkpoint: one plain directory per checkpoint with a digest of its files;
  `RunCheckpoints`, orbax's CheckpointManager keeping a run's last and best step) and
  `jaxdl.datasets` (MNIST through tensorflow-datasets
  without TensorFlow, `EpochBatches`: the grain input pipeline, seeded per-epoch shuffling,
  augmentation, batching, sharding by process, prefetching, checkpointable iterators;
  imported on first use because tensorflow-datasets is slow to import).
* `jaxdl.compilation_cache`: JAX's persistent compilation cache, which the scripts switch on
  (`enable_compilation_cache`), so a second run loads its compiled steps.
* `jaxdl.recipes`: complete configured runs on `fit` that the scripts are thin command lines
  over (LeNet on MNIST, the truncated-BPTT delayed-recall demo).
* `jaxdl.exercise`: the exercise's own object API (``layer.forward``/``backward``,
  ``calculate_update``, ``NeuralNetwork.append_layer``...) as a thin stateful facade over the
  core, and ``python -m jaxdl.exercise scaffold DIR`` for running the course's test file.
  Import it explicitly: it turns on float64 (``jax_enable_x64``), so ``import jaxdl`` does not.
"""

from jaxdl.core import Layer, Serial, count_params, memory_mask, output_shape, regularized_mask
from jaxdl.combinators import Parallel, Residual, Tie, Tied
from jaxdl.initializers import Constant, He, UniformRandom, Xavier
from jaxdl.layers import (
    BatchNormalization, Conv, Dropout, Flatten, FullyConnected, Pooling, ReLU, Sigmoid, SoftMax, TanH,
    GRU, LSTM, RNN, elman_rnn, lstm_network, reset_memory,
)
from jaxdl.layers import (
    GELU, AveragePooling, Embedding, GlobalAveragePooling, GlobalMaxPooling, LayerNorm, MultiHeadAttention,
    PositionalEmbedding, RMSNorm, Reshape, SiLU,
)
from jaxdl.layers import Bidirectional, SequenceBatch, Stacked
from jaxdl.sequence_losses import masked_sequence_cross_entropy, masked_sequence_loss
from jaxdl.losses import accuracy, correct_predictions, cross_entropy, softmax_cross_entropy
from jaxdl.optimizers import Adam, Optimizer, Sgd, SgdWithMomentum, regularization_loss
from jaxdl.regularizers import L1Regularizer, L2Regularizer
from jaxdl.precision import MixedPrecision
from jaxdl.training import (
    Batch, Callback, EarlyStopping, FitResult, LogLines, MetricsFiles, NeuralNetwork, ProgressBar, Run, TrainingDiverged,
    TrainState, create_train_state, default_callbacks, evaluate, fit, make_eval_step, make_predict, make_train_step,
)
from jaxdl.training.parallel import data_mesh, process_batches, process_rows
from jaxdl.compilation_cache import enable_compilation_cache
from jaxdl import checkpoint, distributed, models  # noqa: E402  (they build on the names above)

from jaxdl.version import __version__  # noqa: E402

__all__ = [
    "Layer", "Serial", "count_params", "memory_mask", "output_shape", "regularized_mask",
    "Parallel", "Residual", "Tie", "Tied",
    "Constant", "He", "UniformRandom", "Xavier",
    "BatchNormalization", "Conv", "Dropout", "Flatten", "FullyConnected", "Pooling", "ReLU",
    "Sigmoid", "SoftMax", "TanH",
    "GRU", "LSTM", "RNN", "elman_rnn", "lstm_network", "reset_memory",
    "AveragePooling", "Embedding", "GELU", "GlobalAveragePooling", "GlobalMaxPooling", "LayerNorm",
    "MultiHeadAttention", "PositionalEmbedding", "RMSNorm", "Reshape", "SiLU",
    "Bidirectional", "SequenceBatch", "Stacked", "masked_sequence_cross_entropy", "masked_sequence_loss",
    "accuracy", "correct_predictions", "cross_entropy", "softmax_cross_entropy",
    "Adam", "Optimizer", "Sgd", "SgdWithMomentum", "regularization_loss",
    "L1Regularizer", "L2Regularizer",
    "MixedPrecision",
    "Batch", "Callback", "EarlyStopping", "FitResult", "LogLines", "MetricsFiles", "NeuralNetwork", "ProgressBar", "Run",
    "TrainingDiverged", "TrainState", "create_train_state", "default_callbacks", "evaluate", "fit", "make_eval_step", "make_predict", "make_train_step",
    "data_mesh", "process_batches", "process_rows",
    "enable_compilation_cache",
]


def __getattr__(name):
    """Imports `jaxdl.datasets` on first access (``jaxdl.datasets.load_mnist(...)``)."""
    if name == "datasets":
        import importlib

        return importlib.import_module("jaxdl.datasets")
    raise AttributeError(f"module 'jaxdl' has no attribute {name!r}")
