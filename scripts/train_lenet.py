#!/usr/bin/env python
"""Trains the exercise's LeNet on MNIST (the `make train` command).

    python scripts/train_lenet.py [--epochs N] [--batch-size B] [--learning-rate LR] [--seed S]
                                  [--compute-dtype float32|bfloat16]
                                  [--data-dir DIR] [--output-dir DIR] [--resume] [--download]
                                  [--devices N] [--num-processes P --process-id I --coordinator HOST:PORT]

A thin command line over `jaxdl.recipes.lenet.train_lenet` (the recipe: model, optimizer,
schedule, augmentation, data; see its docstring) and `jaxdl.fit` (the loop: validation every
epoch, checkpoints, metrics, resume, NaN guard). Hyperparameters were chosen on validation
accuracy only; the test images are evaluated once, on the best-validation checkpoint, at the end.

Outputs under --output-dir (default runs/lenet): ``checkpoints/step_<n>``, one plain directory
per saved step, of which orbax keeps the newest (last) and the best by validation accuracy (the
paths are printed at the end), ``metrics.csv`` and ``metrics.png``.
``--checkpoint-every-steps N`` also saves a step every N steps inside an epoch.
``--resume`` continues from the newest step (after an epoch or inside one) with the
stored hyperparameters, bit-identical to an unbroken run (``--learning-rate`` may change the peak
learning rate, recorded in the checkpoints). Exit status: 0 done, 1 diverged (the last good
checkpoint is kept), 2 bad options, data or run directory, 3 a multi-process run could not start,
4 the run's files could not be written (`EXIT_STORAGE`), 130 interrupted (Ctrl-C).

Several devices and processes (`jaxdl.distributed`, docs/guides/multi-device.md): ``--devices N``
trains data-parallel on N local devices (on the CPU it makes the host offer N devices);
``--num-processes P --process-id I --coordinator HOST:PORT`` makes this process I of a run of P
processes that meet at process 0's HOST:PORT (each with --devices local devices); JAXDL_* variables
give the same settings (`jaxdl.distributed.ENVIRONMENT`). --batch-size is the global batch; only
process 0 prints and writes; --output-dir must be on a file system every process sees.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from typing import Sequence

from tensorflow_datasets.core.download.download_manager import NonMatchingChecksumError

import jaxdl
from jaxdl import checkpoint, distributed
from jaxdl.compilation_cache import enable_compilation_cache
from jaxdl.checkpoint import RunDirectoryError
from jaxdl.recipes import cli
from jaxdl.recipes.lenet import (
    COMMAND_LINE_COMPUTE_DTYPES, HYPERPARAMETERS, SCHEDULES, ConfigError, LeNetConfig, stored_hyperparameters,
    train_lenet, validate_config,
)

#: The exit status when process 0 could not write the run's files (a full disk, for example).
EXIT_STORAGE = 4


def parse_args(argv=None) -> argparse.Namespace:
    defaults = LeNetConfig()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    option = parser.add_argument
    option("--epochs", type=cli.positive_int, help=f"passes over the training images (default {defaults.epochs})")
    option("--batch-size", type=cli.positive_int, help=f"images per step (default {defaults.batch_size})")
    option("--learning-rate", type=cli.positive_float, help=f"Adam's (peak) learning rate (default {defaults.learning_rate})")
    option("--schedule", choices=SCHEDULES, help=f"cosine: linear warm-up then cosine decay to 0; constant: the "
                                                 f"exercise's (default {defaults.schedule})")
    option("--warmup-epochs", type=cli.non_negative_float, help=f"warm-up of the cosine schedule (default {defaults.warmup_epochs})")
    option("--l2", type=cli.non_negative_float, help=f"decoupled L2 strength (default {defaults.l2})")
    option("--shift", type=cli.non_negative_int, help=f"augmentation: random translation of training images by up to this many "
                                     f"pixels, 0 for none (default {defaults.shift})")
    option("--seed", type=cli.seed, help=f"initialization, shuffling and augmentation seed (default {defaults.seed})")
    option("--validation-size", type=cli.positive_int,
           help=f"training images held out for validation (default {defaults.validation_size})")
    option("--compute-dtype", choices=COMMAND_LINE_COMPUTE_DTYPES,
           help=f"dtype of the forward and backward passes; params and Adam moments stay float32 "
                f"(default {defaults.compute_dtype}; float16 needs loss scaling, which the recipe lacks)")
    option("--data-dir", default=None, type=cli.path, help="directory with the four MNIST .gz files (default: data/mnist)")
    option("--cache-dir", default=None, type=cli.path, help="where tensorflow-datasets keeps the prepared data "
                                             "(default $JAXDL_CACHE_DIR/tensorflow_datasets, JAXDL_CACHE_DIR=~/.cache/jaxdl)")
    option("--download", action="store_true", help="let tensorflow-datasets download MNIST instead of --data-dir")
    option("--output-dir", default=defaults.output_dir, type=cli.path, help="checkpoints, metrics.csv, metrics.png "
                                                             f"(default {defaults.output_dir})")
    option("--resume", action="store_true",
           help="continue the run in --output-dir from its newest checkpoint with its hyperparameters "
                "(--learning-rate may change the peak learning rate, e.g. after a divergence; --compute-dtype "
                "the compute dtype)")
    option("--overwrite", action="store_true", help="start a new run in --output-dir even if it holds a run or "
                                                     "other files (removes only what a run writes)")
    option("--checkpoint-every-steps", type=cli.positive_int, default=None, metavar="N",
           help="also checkpoint every N steps inside an epoch (train state and data position), so --resume "
                "continues mid-epoch, bit-identical to an unbroken run")
    option("--no-progress", action="store_true", help="no progress bar (one line per epoch)")
    option("--devices", type=int, default=None, metavar="N",
           help="local devices to train on, data-parallel (on the CPU: makes the host offer N devices); env "
                "JAXDL_DEVICES; default 1 (e.g. 8 for all GPUs of an 8-GPU host)")
    option("--num-processes", type=int, default=None, metavar="P",
           help="processes of a multi-process run (one per host, or several on one); env JAXDL_NUM_PROCESSES")
    option("--process-id", type=int, default=None, metavar="I",
           help="this process's index in [0, P); process 0 serves the coordinator; env JAXDL_PROCESS_ID")
    option("--coordinator", default=None, metavar="HOST:PORT",
           help="address of process 0 that every process connects to, e.g. 10.0.0.1:12355 or 127.0.0.1:12355; "
                "env JAXDL_COORDINATOR")
    return parser.parse_args(argv)


def cluster_from_args(args: argparse.Namespace) -> distributed.ClusterConfig:
    """The devices and processes of the run: the options, else the JAXDL_* environment variables."""
    return distributed.cluster_config(devices=args.devices, num_processes=args.num_processes,
                                      process_id=args.process_id, coordinator=args.coordinator)


def device_options(cluster: distributed.ClusterConfig) -> list[str]:
    """The device and process options of the run, for the commands printed in advice."""
    words = [] if cluster.devices is None else ["--devices", str(cluster.devices)]
    if cluster.multi_process:
        words += ["--num-processes", str(cluster.num_processes), "--coordinator", str(cluster.coordinator),
                  "--process-id", "<each process its own>"]
    return words


def config_from_args(args: argparse.Namespace) -> LeNetConfig:
    """Defaults, overridden by the resumed run's hyperparameters, overridden by given options."""
    values = stored_hyperparameters(args.output_dir) if args.resume else {}
    values.update({name: getattr(args, name) for name in HYPERPARAMETERS if getattr(args, name) is not None})
    return LeNetConfig(**values, data_dir=args.data_dir, cache_dir=args.cache_dir, download=args.download,
                       output_dir=args.output_dir, resume=args.resume, overwrite=args.overwrite,
                       progress=not args.no_progress,
                       checkpoint_every_steps=args.checkpoint_every_steps)


def command_line(config: LeNetConfig, *, resume: bool, learning_rate: float | None = None,
                 extra: Sequence[str] = ()) -> str:
    """This command again for ``config``, quoted for a POSIX shell: with ``resume``, ``--resume`` and
    the options a resume takes (directories, ``--checkpoint-every-steps``, ``--no-progress``);
    without, also every hyperparameter that differs from the default. ``learning_rate``: a peak
    learning rate instead of the run's; ``extra``: further words (the device options)."""
    defaults = LeNetConfig()
    values = {"output_dir": config.output_dir}
    if not resume:
        values.update({name: getattr(config, name) for name in HYPERPARAMETERS
                       if getattr(config, name) != getattr(defaults, name)})
    if learning_rate is not None:
        values["learning_rate"] = learning_rate
    values.update(data_dir=config.data_dir, cache_dir=config.cache_dir,
                  checkpoint_every_steps=config.checkpoint_every_steps)
    words = ["--resume"] if resume else []
    for name, value in values.items():
        if value is not None:
            words += [f"--{name.replace('_', '-')}", repr(value) if isinstance(value, float) else str(value)]
    words += ["--download"] * config.download + ["--no-progress"] * (not config.progress)
    return " ".join(["python scripts/train_lenet.py", *map(shlex.quote, words), *extra])


def divergence_advice(result: jaxdl.FitResult, config: LeNetConfig, extra: Sequence[str] = ()) -> str:
    """A command that continues after a divergence with the user's options (`command_line`):
    resume with half the peak learning rate, or start again with it when no epoch finished (no
    checkpoint was written). ``extra``: further words for the command (the device options)."""
    lower = config.learning_rate / 2
    if result.history:
        return ("Continue from the last good checkpoint with a lower peak learning rate: "
                + command_line(config, resume=True, learning_rate=lower, extra=extra))
    return ("No epoch finished, so no checkpoint was written; start again with a lower peak learning rate: "
            + command_line(config, resume=False, learning_rate=lower, extra=extra))


def main(argv=None) -> int:
    """Runs the command line; returns the exit status (0 done, 1 diverged, 2 bad options, 130 Ctrl-C)."""
    args = parse_args(argv)
    try:
        cluster = cluster_from_args(args)
        config = config_from_args(args)
        validate_config(config)  # before joining other processes: a bad option fails alone, at once
    except (ConfigError, distributed.DistributedError, FileNotFoundError, checkpoint.CheckpointError) as error:
        cli.report_error("train_lenet.py", error)
        return 2
    try:
        mesh = distributed.start(cluster, log=lambda line: print(line, file=sys.stderr))
    except distributed.DistributedError as error:
        cli.report_error("train_lenet.py", error)
        return distributed.EXIT_NOT_JOINED
    try:
        resume_command = command_line(config, resume=True, extra=device_options(cluster))
        result = train_lenet(config, resume_command=resume_command, mesh=mesh)
    except checkpoint.StorageError as error:  # process 0's write failed: the others did not fail with it
        cli.report_error("train_lenet.py", error)
        return EXIT_STORAGE
    except (ConfigError, RunDirectoryError, FileNotFoundError, checkpoint.CheckpointError,
            NonMatchingChecksumError) as error:
        cli.report_error("train_lenet.py", error)
        return 2
    except KeyboardInterrupt:
        return 130
    if not distributed.is_main_process():
        return 0 if result.fit.status == "completed" else 1  # process 0 reports for the run
    print(result.fit.message)
    if result.fit.status == "diverged":
        print(divergence_advice(result.fit, config, extra=device_options(cluster)))
        return 1
    cli.print_outputs(result)
    return 0


if __name__ == "__main__":
    enable_compilation_cache()  # later runs load the compiled steps instead of compiling them
    # Multi-process: a failure of this process alone ends it at once, so the others stop too; 2 (bad
    # options, data or run directory) every process reaches alike: all pass JAX's shutdown barrier.
    sys.exit(distributed.exit_status(main(), agreed=(0, 1, 2)))
