"""Training: the ONE step definition and the ONE loop every entry point shares.

* `jaxdl.training.state`: `TrainState`, `create_train_state`.
* `jaxdl.training.step`: `make_train_step` (the step), `make_eval_step` (evaluation mode,
  returns the carried state), `make_predict` (the stateless convenience).
* `jaxdl.training.evaluation`: `evaluate` (mean loss per example and accuracy, state carried).
* `jaxdl.training.data`: `Batch` and the epoch-indexed data-source convention.
* `jaxdl.training.loop`: `fit(train_step, train_state, train_data, ...)`, a small loop
  (validation, checkpoints as orbax steps, resume, NaN guard) whose log lines, metrics files,
  progress bar and early stopping are callbacks.
* `jaxdl.training.run`: `Run`, the output directory of a run (resume, overwrite, mid-epoch
  checkpoints, metadata).
* `jaxdl.training.callbacks`, `jaxdl.training.history`: the hooks (`LogLines`, `MetricsFiles`,
  `ProgressBar`, `EarlyStopping`, `default_callbacks`), metrics.csv and metrics.png.
* `jaxdl.training.network`: `NeuralNetwork`, the one-object convenience over `fit`.
* `jaxdl.training.parallel`: data parallelism on a `jax.sharding.Mesh` (`data_mesh`; the
  ``mesh=`` of the steps and `NeuralNetwork`), `process_rows` / `process_batches` for
  multi-process runs (`jaxdl.distributed`).
"""

from jaxdl.training.callbacks import Callback, EarlyStopping, LogLines, MetricsFiles, ProgressBar, default_callbacks
from jaxdl.training.data import Batch
from jaxdl.training.evaluation import evaluate
from jaxdl.training.loop import FitResult, TrainingDiverged, fit
from jaxdl.training.network import NeuralNetwork
from jaxdl.training.parallel import data_mesh, process_batches, process_rows
from jaxdl.training.run import Run
from jaxdl.training.state import TrainState, create_train_state
from jaxdl.training.step import make_eval_step, make_predict, make_train_step

__all__ = [
    "Batch", "Callback", "EarlyStopping", "FitResult", "LogLines", "MetricsFiles", "NeuralNetwork", "ProgressBar",
    "Run", "TrainState", "TrainingDiverged",
    "create_train_state", "default_callbacks", "evaluate", "fit", "make_eval_step", "make_predict", "make_train_step",
    "data_mesh", "process_batches", "process_rows",
]
