#!/usr/bin/env python
"""Trains the exercise's LeNet on MNIST (the `make train` command).

    python scripts/train_lenet.py [--epochs N] [--batch-size B] [--learning-rate LR] [--seed S]
                                  [--data-dir DIR] [--output-dir DIR] [--resume] [--download]

A thin command line over `jaxdl.recipes.lenet.train_lenet` (the recipe: model, optimizer,
schedule, augmentation, data; see its docstring) and `jaxdl.fit` (the loop: validation every
epoch, checkpoints, metrics, resume, NaN guard). Hyperparameters were chosen on validation
accuracy only; the test images are evaluated once, on the best-validation checkpoint, at the end.

Outputs under --output-dir (default runs/lenet): ``checkpoints/last`` (every epoch),
``checkpoints/best`` (best validation accuracy), ``metrics.csv`` and ``metrics.png``.
``--resume`` continues the run from ``checkpoints/last`` with its stored hyperparameters,
bit-identical to an unbroken run (``--learning-rate`` with ``--resume`` changes the peak
learning rate from the next epoch on, recorded in the checkpoints). Exit status: 0 done, 1 diverged (NaN loss; the last good
checkpoint is kept), 2 bad options or data, 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import sys

from tensorflow_datasets.core.download.download_manager import NonMatchingChecksumError

from jaxdl import checkpoint
from jaxdl.training.loop import RunDirectoryError
from jaxdl.recipes.lenet import (
    HYPERPARAMETERS, SCHEDULES, ConfigError, LeNetConfig, divergence_advice, stored_hyperparameters, train_lenet,
)


def parse_args(argv=None) -> argparse.Namespace:
    defaults = LeNetConfig()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    option = parser.add_argument
    option("--epochs", type=int, help=f"passes over the training images (default {defaults.epochs})")
    option("--batch-size", type=int, help=f"images per step (default {defaults.batch_size})")
    option("--learning-rate", type=float, help=f"Adam's (peak) learning rate (default {defaults.learning_rate})")
    option("--schedule", choices=SCHEDULES, help=f"cosine: linear warm-up then cosine decay to 0; constant: the "
                                                 f"exercise's (default {defaults.schedule})")
    option("--warmup-epochs", type=float, help=f"warm-up of the cosine schedule (default {defaults.warmup_epochs})")
    option("--l2", type=float, help=f"decoupled L2 strength (default {defaults.l2})")
    option("--shift", type=int, help=f"augmentation: random translation of training images by up to this many "
                                     f"pixels, 0 for none (default {defaults.shift})")
    option("--seed", type=int, help=f"initialization, shuffling and augmentation seed (default {defaults.seed})")
    option("--validation-size", type=int,
           help=f"training images held out for validation (default {defaults.validation_size})")
    option("--data-dir", default=None, help="directory with the four MNIST .gz files (default: data/mnist)")
    option("--cache-dir", default=None, help="where tensorflow-datasets keeps the prepared data "
                                             "(default $JAXDL_CACHE_DIR/tensorflow_datasets, JAXDL_CACHE_DIR=~/.cache/jaxdl)")
    option("--download", action="store_true", help="let tensorflow-datasets download MNIST instead of --data-dir")
    option("--output-dir", default=defaults.output_dir, help="checkpoints, metrics.csv, metrics.png "
                                                             f"(default {defaults.output_dir})")
    option("--resume", action="store_true",
           help="continue the run in --output-dir from checkpoints/last with its hyperparameters "
                "(--learning-rate may change the peak learning rate, e.g. after a divergence)")
    option("--no-progress", action="store_true", help="no progress bar (one line per epoch)")
    return parser.parse_args(argv)


def config_from_args(args: argparse.Namespace) -> LeNetConfig:
    """Defaults, overridden by the resumed run's hyperparameters, overridden by given options."""
    values = stored_hyperparameters(args.output_dir) if args.resume else {}
    values.update({name: getattr(args, name) for name in HYPERPARAMETERS if getattr(args, name) is not None})
    return LeNetConfig(**values, data_dir=args.data_dir, cache_dir=args.cache_dir, download=args.download,
                       output_dir=args.output_dir, resume=args.resume, progress=not args.no_progress)


def main(argv=None) -> int:
    """Runs the command line; returns the exit status (0 done, 1 diverged, 2 bad options, 130 Ctrl-C)."""
    args = parse_args(argv)
    resume_command = f"python scripts/train_lenet.py --resume --output-dir {args.output_dir}"
    try:
        config = config_from_args(args)
        result = train_lenet(config, resume_command=resume_command)
    except (ConfigError, RunDirectoryError, FileNotFoundError, checkpoint.CheckpointError,
            NonMatchingChecksumError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    print(result.fit.message)
    if result.fit.status != "completed":
        print(divergence_advice(result.fit, config))
        return 1
    print(f"Outputs: {result.fit.output_dir}/metrics.csv, metrics.png, checkpoints/last, checkpoints/best")
    if result.test is not None:
        print(f"Test accuracy of the best-validation checkpoint (epoch {result.test['epoch']}), evaluated once: "
              f"{100 * result.test['accuracy']:.2f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
