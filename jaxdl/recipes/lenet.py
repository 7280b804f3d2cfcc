"""The exercise's LeNet on MNIST as one configured `jaxdl.fit` run (``make train``).

Model, loss and optimizer are the exercise's (`jaxdl.models.lenet`, `jaxdl.cross_entropy`
on the SoftMax output, summed over the batch; Adam with decoupled L2). On top of the
exercise: a learning-rate schedule (linear warm-up for ``warmup_epochs``, then cosine decay
to 0; ``schedule="constant"`` is the exercise's plain Adam) and random translations of the
training images by up to ``shift`` pixels; ``compute_dtype="bfloat16"`` (or float16) computes in
that dtype with float32 params through `jaxdl.MixedPrecision`. Data: `jaxdl.datasets.load_mnist`: 55,000
training images, the last ``validation_size`` of tfds's train split held out for validation,
and the 10,000 test images.

Data hygiene: every epoch is evaluated on the validation images only; the best checkpoint
is chosen by validation accuracy; the test images are evaluated ONCE, after training, on
the best checkpoint (`LeNetResult.test`). The defaults were chosen the same way, on
validation accuracy over three seeds (benchmarks/RESULTS_lenet.md).

Example:
    >>> result = train_lenet(LeNetConfig(epochs=8, output_dir="runs/lenet"))
    >>> result.test["accuracy"]
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
from typing import Callable, ClassVar

import jax
import optax

import jaxdl
from jaxdl import checkpoint, models, precision
from jaxdl.recipes.cli import SEED_RANGE
from jaxdl.training.callbacks import Callback


#: The default evaluation batch (see `LeNetConfig.eval_batch_size`).
EVAL_BATCH_SIZE = 200


@dataclasses.dataclass(frozen=True)
class LeNetConfig:
    """Everything a run needs. The first group are hyperparameters, stored in checkpoints.

    The model is the class's: a recipe on another MNIST model subclasses the config, sets
    `model_name` (a `jaxdl.models` registry name) and `model_title`, and its own defaults
    (`jaxdl.recipes.resnet.ResNetConfig`); `train_lenet` trains any of them.
    """

    #: The `jaxdl.models` name of the model this config trains (built with its defaults).
    model_name: ClassVar[str] = "lenet"
    #: The model's name in log lines.
    model_title: ClassVar[str] = "LeNet"

    epochs: int = 8
    batch_size: int = 64
    learning_rate: float = 4e-3
    schedule: str = "cosine"
    warmup_epochs: float = 0.5
    l2: float = 4e-4
    shift: int = 2
    seed: int = 0
    validation_size: int = 5000
    compute_dtype: str = "float32"

    data_dir: str | None = None
    cache_dir: str | None = None
    download: bool = False
    output_dir: str = "runs/lenet"
    resume: bool = False
    overwrite: bool = False  # start anew in an output_dir that holds a run or other files (`jaxdl.fit`)
    # Evaluation batches of 200 keep XLA's temporaries (one block per call, 26 MiB for LeNet at
    # 200) below glibc's largest mmap threshold (32 MiB). A larger block is mapped afresh and
    # page-faulted in on every call: batches of 1000 (130 MiB) evaluated 10,000 images in
    # 0.70 s, batches of 200 in 0.38 s (benchmarks/RESULTS.md).
    eval_batch_size: int = EVAL_BATCH_SIZE
    log_every: int = 50
    checkpoint_every_steps: int | None = None
    progress: bool = True
    plot: bool = True


#: The fields a resumed run must share with the run it continues.
HYPERPARAMETERS = ("epochs", "batch_size", "learning_rate", "schedule", "warmup_epochs", "l2", "shift", "seed",
                   "validation_size", "compute_dtype")
#: Hyperparameters ``--resume`` may change: the peak learning rate (the change is logged and kept
#: in the checkpoints' ``learning_rate_changes``), so a diverged run continues from its last good
#: checkpoint with a lower one; and the compute dtype (logged; the checkpoints' ``config`` holds the
#: latest), as the checkpoints of every compute dtype hold the same float32 params.
RESUME_OVERRIDABLE = ("learning_rate", "compute_dtype")
SCHEDULES = ("cosine", "constant")
#: ``compute_dtype`` choices (`jaxdl.precision`'s but float64): float32 runs the model as it
#: is; bfloat16 and float16 wrap it in `jaxdl.MixedPrecision` (float32 params, Adam moments and
#: loss; SoftMax exponentiates in float32 and rounds its probabilities to the compute dtype).
#: float16 has no loss scaling: a probability below ~1.5e-5 makes the loss gradient overflow
#: float16 (NaN gradients, reported as a divergence). The checkpoints hold float32 params
#: either way, so a run may resume in another compute dtype.
COMPUTE_DTYPES = tuple(name for name in precision.COMPUTE_DTYPES if name != "float64")
#: The compute dtypes the command line offers: float16 diverges without loss scaling (a LeNet run
#: at the default learning rate gets NaN gradients within a few hundred steps), so only Python
#: callers who take that on may ask for it.
COMMAND_LINE_COMPUTE_DTYPES = ("float32", "bfloat16")
#: Images in tfds's MNIST train split (training + validation).
MNIST_TRAIN_IMAGES = 60_000


class ConfigError(ValueError):
    """Invalid or conflicting options.

    Attributes:
        option: the config field the error is about, when one is (e.g. "data_dir"), so that a
            command line can phrase advice in its own options (`jaxdl.recipes.cli.report_error`).
        run_dir: the run directory the error is about, when one is.
    """

    def __init__(self, message: str, *, option: str | None = None, run_dir: pathlib.Path | None = None):
        super().__init__(message)
        self.option, self.run_dir = option, run_dir


@dataclasses.dataclass
class LeNetResult:
    """What `train_lenet` returns: the `jaxdl.FitResult` and the one test evaluation.

    Attributes:
        fit: the `jaxdl.FitResult` (history, final state, status, message, best epoch).
        test: ``{"accuracy", "loss", "count", "epoch"}`` of the best checkpoint on the test
            images (None when training diverged or no epoch finished).
    """

    fit: jaxdl.FitResult
    test: dict | None


def hyperparameters(config: LeNetConfig) -> dict:
    """The hyperparameters of ``config`` as a JSON dict."""
    return {name: getattr(config, name) for name in HYPERPARAMETERS}


def validate_config(config: LeNetConfig, *, check_data: bool = True) -> None:
    """Checks the options of a run before any training (and before the data is loaded).

    Args:
        config: the run's options.
        check_data: also check the MNIST files the run would read (`check_mnist_files`;
            not with ``download``); False when the caller brings its own data.

    Raises:
        ConfigError: naming the option, what it must be and what it is.
    """
    if config.resume and config.overwrite:
        raise ConfigError("resume continues the run in output_dir and overwrite starts it anew; choose one of them.")
    positive = {"epochs": config.epochs, "batch_size": config.batch_size, "eval_batch_size": config.eval_batch_size,
                "log_every": config.log_every, "validation_size": config.validation_size}
    if config.checkpoint_every_steps is not None:
        positive["checkpoint_every_steps"] = config.checkpoint_every_steps
    for name, value in positive.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name} must be a positive int, got {value!r}.")
    if not (isinstance(config.learning_rate, (int, float)) and math.isfinite(config.learning_rate)
            and config.learning_rate > 0):
        raise ConfigError(f"learning_rate must be a finite number > 0, got {config.learning_rate!r}.")
    if config.schedule not in SCHEDULES:
        raise ConfigError(f"schedule must be one of {SCHEDULES}, got {config.schedule!r}.")
    if config.compute_dtype not in COMPUTE_DTYPES:
        raise ConfigError(f"compute_dtype must be one of {COMPUTE_DTYPES}, got {config.compute_dtype!r}.")
    if not 0 <= config.warmup_epochs < config.epochs:
        raise ConfigError(f"warmup_epochs must be in [0, epochs), got {config.warmup_epochs!r}.")
    if not (math.isfinite(config.l2) and config.l2 >= 0):
        raise ConfigError(f"l2 must be a finite number >= 0, got {config.l2!r}.")
    if isinstance(config.shift, bool) or not isinstance(config.shift, int) or not 0 <= config.shift < 14:
        raise ConfigError(f"shift must be an int in [0, 14), got {config.shift!r}.")
    low, high = SEED_RANGE
    if isinstance(config.seed, bool) or not isinstance(config.seed, int) or not low <= config.seed <= high:
        raise ConfigError(f"seed must be an int in [{low}, {high}], got {config.seed!r}.")
    check_split_sizes(config)
    check_output_dir(config.output_dir)
    if check_data and not config.download:
        check_mnist_files(config.data_dir)


def check_split_sizes(config: LeNetConfig) -> None:
    """Raises ConfigError when the validation images leave no training images, or fewer than
    one batch, naming the numbers."""
    if config.validation_size >= MNIST_TRAIN_IMAGES:
        raise ConfigError(f"validation_size {config.validation_size:,} leaves none of MNIST's {MNIST_TRAIN_IMAGES:,} "
                          f"training images to train on; hold out fewer (default {LeNetConfig.validation_size:,}).")
    training = MNIST_TRAIN_IMAGES - config.validation_size
    if config.batch_size > training:
        raise ConfigError(f"batch_size {config.batch_size:,} is larger than the {training:,} training images "
                          f"(MNIST's {MNIST_TRAIN_IMAGES:,} minus validation_size {config.validation_size:,}); use a "
                          f"batch size of at most {training:,}.")


def check_output_dir(output_dir) -> None:
    """Raises ConfigError for an empty ``output_dir`` (it would be the current directory) or one
    that exists and is not a directory."""
    if not str(output_dir).strip():
        raise ConfigError(f"output_dir must name a directory, got {str(output_dir)!r} (an empty path would write "
                          f"into the current directory; write . for that).")
    output = pathlib.Path(output_dir)
    if output.exists() and not output.is_dir():
        raise ConfigError(f"output_dir {output} exists and is not a directory.")


def check_mnist_files(data_dir=None) -> None:
    """Checks that ``data_dir`` (default the bundled ``data/mnist``) holds the four canonical
    MNIST files, by their sha256 (tensorflow-datasets' registered ones; about 15 ms).

    Raises:
        ConfigError: for an empty ``data_dir``, a missing file, or a file whose sha256 is not
            the registered one (damaged, truncated, or another data set), naming the file, both
            sha256s and what to do.
    """
    from jaxdl.datasets import mnist

    if data_dir is not None and not str(data_dir).strip():
        raise ConfigError(f"data_dir must name a directory, got {str(data_dir)!r}.")
    directory = pathlib.Path(data_dir).expanduser() if data_dir is not None else mnist.BUNDLED_DATA_DIR
    try:
        mnist.check_canonical(directory, mnist.source_sha256s(directory))
    except (FileNotFoundError, mnist.MNISTChecksumError) as error:
        raise ConfigError(str(error), option="data_dir") from None


def check_resume_matches(config: LeNetConfig, stored: dict) -> None:
    """Raises ConfigError when ``config`` changes a hyperparameter of the stored run (other
    than those in `RESUME_OVERRIDABLE`)."""
    changed = [f"{name}: run has {stored[name]!r}, now {getattr(config, name)!r}"
               for name in HYPERPARAMETERS
               if name not in RESUME_OVERRIDABLE and name in stored and stored[name] != getattr(config, name)]
    if changed:
        raise ConfigError(
            "resuming continues a run with its own hyperparameters; these differ:\n  " + "\n  ".join(changed)
            + "\nLeave those settings out (the stored values are used) or start a new run in another output "
              "directory.")


def stored_metadata(output_dir) -> dict:
    """The metadata of the checkpoint a resume of the run in ``output_dir`` continues from
    (`jaxdl.training.run.resume_checkpoint_dir`: its newest step, after an epoch or inside
    one); {} when it holds none."""
    from jaxdl.training.run import resume_checkpoint_dir

    directory = resume_checkpoint_dir(output_dir)
    if directory is None:
        return {}
    return checkpoint.read_manifest(directory).get("metadata") or {}


def stored_hyperparameters(output_dir) -> dict:
    """The hyperparameters of the run in ``output_dir`` ({} when it holds none)."""
    return hyperparameters_in(stored_metadata(output_dir))


def hyperparameters_in(metadata: dict) -> dict:
    """The hyperparameters recorded in a checkpoint's ``metadata`` ({} when there are none)."""
    stored = metadata.get("config", {})
    return dict(stored) if isinstance(stored, dict) else {}


def learning_rate_changes(config: LeNetConfig, stored: dict, log) -> list[dict]:
    """The run's learning-rate changes, plus this resume's if ``config`` changes the stored one."""
    changes = list(stored.get("learning_rate_changes", []))
    previous = hyperparameters_in(stored).get("learning_rate")
    if config.resume and previous is not None and previous != config.learning_rate:
        epoch = len(stored.get("history", [])) + 1
        changes.append({"from_epoch": epoch, "learning_rate": config.learning_rate, "was": previous})
        log and log(f"Changing the peak learning rate from {previous:g} to {config.learning_rate:g} from epoch "
                    f"{epoch} on (kept in the checkpoints' learning_rate_changes).")
    return changes


def checkpoint_to_evaluate(path) -> pathlib.Path:
    """The checkpoint directory that ``path`` names for an evaluation: ``path`` itself when it
    holds a checkpoint (or is damaged, or of an older format: loading it then says how), else the
    ``best`` step of a run directory (``runs/lenet`` -> ``runs/lenet/checkpoints/step_<n>``)
    or of its ``checkpoints``.

    Raises:
        ConfigError: when nothing exists at ``path``, or a run directory holds no best
            checkpoint yet, saying what to pass instead.
    """
    path = pathlib.Path(path)
    if not str(path).strip() or not path.exists():
        raise ConfigError(f"no checkpoint at {str(path)!r}: pass a checkpoint directory such as "
                          f"{LeNetConfig.output_dir} (its best checkpoint; train one with python "
                          f"scripts/train_lenet.py).")
    if any((path / name).exists() for name in ("jaxdl_digest.json", "manifest", "manifest.json")):
        return path
    run_checkpoints = checkpoint.run_directory.checkpoints_dir(path)
    checkpoints = run_checkpoints if run_checkpoints.is_dir() else path
    if checkpoints != path or any(child.name.startswith("step_") for child in path.iterdir()):
        best = checkpoint.find_step_dir(checkpoints, "best")
        if best is None:
            raise ConfigError(f"{path} is a run directory, but {checkpoints} holds no best checkpoint (no epoch "
                              f"finished?); resume that run until an epoch finishes, or pass another checkpoint "
                              f"directory.", run_dir=checkpoints.parent)
        return best
    return path


def learning_rate_schedule(config: LeNetConfig, steps_per_epoch: int):
    """A float (constant) or an optax schedule: linear warm-up, then cosine decay to 0."""
    if config.schedule == "constant":
        return config.learning_rate
    total = config.epochs * steps_per_epoch
    warmup = int(round(config.warmup_epochs * steps_per_epoch))
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=config.learning_rate, warmup_steps=warmup, decay_steps=total, end_value=0.0)


class LearningRateColumn(Callback):
    """Adds the schedule's learning rate at the epoch's last step to each history row."""

    columns = ("learning_rate",)

    def __init__(self, schedule):
        # Jitted: called eagerly, optax's schedule compiles each of its ~10 operations on its own.
        self.schedule = jax.jit(schedule) if callable(schedule) else schedule

    def on_epoch_end(self, row: dict, train_state) -> None:
        schedule = self.schedule
        row["learning_rate"] = float(schedule(row["step"])) if callable(schedule) else float(schedule)


def train_lenet(config: LeNetConfig, data=None, *, log: Callable[[str], None] | None = print,
                resume_command: str | None = None, evaluate_test: bool = True,
                mesh: jax.sharding.Mesh | None = None) -> LeNetResult:
    """Trains the config's model (LeNet; `LeNetConfig.model_name`) as configured with `jaxdl.fit`; then
    evaluates the best checkpoint on test once.

    Args:
        config: the run's options (validated first).
        data: `jaxdl.datasets.MNISTSplits` to use; default `load_mnist` with the config's data
            options (tests pass small synthetic splits).
        log: where progress lines go.
        resume_command: printed on Ctrl-C (the command line that continues the run).
        evaluate_test: evaluate the best checkpoint on the test images at the end; False for
            hyperparameter searches, which must see the validation images only.
        mesh: train data-parallel on this mesh (`jaxdl.distributed.start` builds it from
            ``--devices`` and the process options): ``batch_size`` is the global batch, split
            over the devices, and results equal a one-device run's up to float rounding. In a
            multi-process run each process reads its piece of every batch (the pipeline's
            ``shard``) and only process 0 logs and writes.

    Raises:
        ConfigError: for invalid options, --resume options that differ from the run's (the
            peak learning rate may change: `RESUME_OVERRIDABLE`), or batch sizes that the
            mesh's devices cannot split evenly.
    """
    from jaxdl.datasets.mnist import load_mnist
    from jaxdl.datasets.pipeline import EpochBatches

    if not jaxdl.distributed.is_main_process():
        log = None  # process 0 speaks for the run
    validate_config(config, check_data=data is None)
    output_dir = pathlib.Path(config.output_dir)
    stored = stored_metadata(output_dir) if config.resume else {}
    if config.resume:
        check_resume_matches(config, hyperparameters_in(stored))
    changes = learning_rate_changes(config, stored, log)
    stored_dtype = hyperparameters_in(stored).get("compute_dtype", "float32")
    if stored and stored_dtype != config.compute_dtype:
        log and log(f"Resuming the {stored_dtype} run with compute dtype {config.compute_dtype}.")
    if data is None:
        data = load_mnist(config.data_dir, cache_dir=config.cache_dir, download=config.download,
                          validation_size=config.validation_size)
    if config.batch_size > len(data.train):
        raise ConfigError(f"batch_size {config.batch_size} is larger than the {len(data.train)} training images.")
    shard = check_mesh_batches(config, data, mesh)
    train = EpochBatches(data.train.images, data.train.labels, config.batch_size, seed=config.seed, shuffle=True,
                         max_shift=config.shift, drop_remainder=True, shard=shard)
    validation = EpochBatches(data.validation.images, data.validation.labels, config.eval_batch_size, shard=shard)
    model_config = models.model_config(config.model_name)
    model = lenet_model(model_config, config.compute_dtype)
    schedule = learning_rate_schedule(config, train.steps_per_epoch)
    optimizer = models.lenet_optimizer(schedule, l2=config.l2)
    input_shape = (config.batch_size, *models.LENET_INPUT_SHAPE)
    train_state = jaxdl.create_train_state(model, optimizer, jax.random.key(config.seed), input_shape)
    log and log(f"{config.model_title} ({jaxdl.count_params(train_state.params):,} parameters) on {len(data.train):,} training and "
                f"{len(data.validation):,} validation images; {devices_words(mesh)}, compute dtype "
                f"{config.compute_dtype}.")
    run = jaxdl.Run(output_dir, resume=config.resume, overwrite=config.overwrite,
                    checkpoint_every_steps=config.checkpoint_every_steps,
                    metadata={**_metadata(config), "learning_rate_changes": changes}, model_config=model_config)
    train_step = jaxdl.make_train_step(model, jaxdl.cross_entropy, optimizer, mesh=mesh)
    eval_step = jaxdl.make_eval_step(model, mesh=mesh)  # validation's, and the test evaluation's: compiled once
    result = jaxdl.fit(train_step, train_state, train, epochs=config.epochs, eval_step=eval_step,
                       validation_data=validation, best_metric="validation_accuracy", run=run,
                       callbacks=[LearningRateColumn(schedule),
                                  *jaxdl.default_callbacks(run, log=log, plot=config.plot, progress=config.progress,
                                                           resume_command=resume_command)],
                       log_every=config.log_every)
    test = None
    if evaluate_test and result.status == "completed" and result.best is not None:
        test = evaluate_checkpoint(model, result.checkpoint_dir("best"), train_state, data.test,
                                   config.eval_batch_size, mesh=mesh, eval_step=eval_step)
    return LeNetResult(result, test)


def check_mesh_batches(config: LeNetConfig, data, mesh: jax.sharding.Mesh | None):
    """Checks that the mesh's devices split every batch evenly; returns the pipeline's ``shard``
    (this process's piece of every batch in a multi-process run, else None).

    Raises:
        ConfigError: naming the batch size, the device count and a size that works.
    """
    from jaxdl.datasets.pipeline import process_shard
    from jaxdl.training import parallel

    if mesh is None:
        return None
    devices = parallel.data_size(parallel.check_mesh(mesh, "train_lenet"))
    sizes = {"batch_size": config.batch_size, "eval_batch_size": config.eval_batch_size,
             "the last validation batch (validation images % eval_batch_size)":
                 len(data.validation) % config.eval_batch_size,
             "the last test batch (test images % eval_batch_size)": len(data.test) % config.eval_batch_size}
    for name, size in sizes.items():
        if size % devices:
            raise ConfigError(f"{name} is {size}, which the {devices} devices cannot split evenly (each takes an equal "
                              f"share of every batch); use a multiple of {devices}.")
    return process_shard() if parallel.spans_processes(mesh) else None


def devices_words(mesh: jax.sharding.Mesh | None) -> str:
    """What the run trains on, e.g. "device TFRT_CPU_0" or "4 cpu devices in 2 processes (data parallel)"."""
    if mesh is None:
        return f"device {jax.devices()[0]}"
    devices = list(mesh.devices.flat)
    processes = len({device.process_index for device in devices})
    return (f"{len(devices)} {devices[0].platform} devices in {processes} process{'es' if processes > 1 else ''} "
            f"(data parallel)")


def lenet_model(model_config: dict, compute_dtype: str = "float32") -> jaxdl.Layer:
    """The model of ``model_config``, in `jaxdl.MixedPrecision` for a compute dtype other than
    float32 (whose params are float32 all the same: the checkpoints do not depend on it)."""
    model = models.build_model(model_config)
    return model if compute_dtype == "float32" else jaxdl.MixedPrecision(model, compute_dtype)


def evaluate_checkpoint(model, directory, template, split, batch_size: int, *,
                        mesh: jax.sharding.Mesh | None = None, eval_step: Callable | None = None) -> dict:
    """Accuracy and mean cross-entropy per image of the checkpoint in ``directory`` on ``split``
    (on ``mesh``, data-parallel, when given: every process of a multi-process run calls it),
    with ``eval_step`` (default ``jaxdl.make_eval_step(model, mesh=mesh)``)."""
    from jaxdl.datasets.pipeline import EpochBatches, process_shard
    from jaxdl.training import parallel

    train_state, manifest = checkpoint.load_checkpoint(directory, template)
    shard = process_shard() if mesh is not None and parallel.spans_processes(mesh) else None
    eval_step = jaxdl.make_eval_step(model, mesh=mesh) if eval_step is None else eval_step
    result = jaxdl.evaluate(eval_step, train_state.params, train_state.state,
                            EpochBatches(split.images, split.labels, batch_size, shard=shard), jaxdl.cross_entropy)
    return {**result, "epoch": manifest.get("metadata", {}).get("epoch")}


def _metadata(config: LeNetConfig) -> dict:
    return {
        "config": hyperparameters(config),
        "input_shape": list(models.LENET_INPUT_SHAPE),
        "loss": "jaxdl.cross_entropy (sum over the batch)",
        "optimizer": {"name": "Adam", "learning_rate": config.learning_rate, "schedule": config.schedule,
                      "l2": config.l2, "regularization": "decoupled"},
    }
