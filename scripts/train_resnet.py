#!/usr/bin/env python
"""Trains a small residual CNN (ResNet) on MNIST: >= 99.4% test accuracy in a few CPU minutes.

    python scripts/train_resnet.py [--epochs N] [--batch-size B] [--learning-rate LR] [--l2 A]
                                   [--shift S] [--seed S] [--data-dir DIR] [--output-dir DIR]
                                   [--resume] [--overwrite] [--no-progress]

A thin command line over `jaxdl.recipes.resnet.train_resnet` (the model `resnet_mnist` of
`jaxdl.Residual` blocks; the data, augmentation, schedule, checkpoints and the one test
evaluation are the LeNet recipe's). The defaults were chosen on validation accuracy only
(benchmarks/select_resnet.py, benchmarks/RESULTS_models.md); the test images are evaluated
once, on the best-validation checkpoint, at the end.

Outputs under --output-dir (default runs/resnet): ``checkpoints/step_<n>`` (the newest and the
best by validation accuracy), ``metrics.csv`` and ``metrics.png``; ``--resume`` continues the
run from its newest checkpoint with its stored hyperparameters. Exit status: 0 done, 1 diverged
(the last good checkpoint is kept), 2 bad options, data or run directory, 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from jaxdl import checkpoint  # noqa: E402
from jaxdl.compilation_cache import enable_compilation_cache  # noqa: E402
from jaxdl.recipes import cli  # noqa: E402
from jaxdl.recipes.lenet import HYPERPARAMETERS, ConfigError, stored_hyperparameters, validate_config  # noqa: E402
from jaxdl.recipes.resnet import ResNetConfig, train_resnet  # noqa: E402

SCRIPT = "train_resnet.py"
#: The hyperparameters this command line offers (the others keep `ResNetConfig`'s defaults).
OPTIONS = ("epochs", "batch_size", "learning_rate", "warmup_epochs", "l2", "shift", "seed", "validation_size")


def parse_args(argv=None) -> argparse.Namespace:
    defaults = ResNetConfig()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--epochs", type=cli.positive_int, help=f"passes over the training images (default {defaults.epochs})")
    add("--batch-size", type=cli.positive_int, help=f"images per step (default {defaults.batch_size})")
    add("--learning-rate", type=cli.positive_float,
        help=f"Adam's peak learning rate (warm-up, then cosine decay; default {defaults.learning_rate})")
    add("--warmup-epochs", type=cli.non_negative_float, help=f"linear warm-up (default {defaults.warmup_epochs})")
    add("--l2", type=cli.non_negative_float, help=f"decoupled L2 strength on the kernels (default {defaults.l2})")
    add("--shift", type=cli.non_negative_int,
        help=f"augmentation: random translation by up to this many pixels, 0 for none (default {defaults.shift})")
    add("--seed", type=cli.seed, help=f"initialization, shuffling and augmentation seed (default {defaults.seed})")
    add("--validation-size", type=cli.positive_int,
        help=f"training images held out for validation (default {defaults.validation_size})")
    add("--data-dir", type=cli.path, help="directory with the four MNIST .gz files (default: data/mnist)")
    add("--cache-dir", type=cli.path, help="where tensorflow-datasets keeps the prepared data "
                                           "(default $JAXDL_CACHE_DIR/tensorflow_datasets)")
    add("--download", action="store_true", help="let tensorflow-datasets download MNIST instead of --data-dir")
    add("--output-dir", type=cli.path, default=defaults.output_dir,
        help=f"checkpoints, metrics.csv, metrics.png (default {defaults.output_dir})")
    add("--resume", action="store_true", help="continue the run in --output-dir with its hyperparameters")
    add("--overwrite", action="store_true", help="start a new run in --output-dir even if it holds one")
    add("--no-progress", action="store_true", help="no progress bar (one line per epoch)")
    return parser.parse_args(argv)


def config_from_args(args: argparse.Namespace) -> ResNetConfig:
    """Defaults, overridden by the resumed run's hyperparameters, overridden by given options."""
    stored = stored_hyperparameters(args.output_dir) if args.resume else {}
    values = {name: value for name, value in stored.items() if name in HYPERPARAMETERS}
    values.update({name: getattr(args, name) for name in OPTIONS if getattr(args, name) is not None})
    return ResNetConfig(**values, data_dir=args.data_dir, cache_dir=args.cache_dir, download=args.download,
                        output_dir=args.output_dir, resume=args.resume, overwrite=args.overwrite,
                        progress=not args.no_progress)


def main(argv=None) -> int:
    """Runs the command line; returns the exit status (0 done, 1 diverged, 2 bad options, 130 Ctrl-C)."""
    args = parse_args(argv)
    try:
        config = config_from_args(args)
        validate_config(config)
        resume = f"python scripts/{SCRIPT} --resume --output-dir {shlex.quote(config.output_dir)}"
        result = train_resnet(config, resume_command=resume)
    except (ConfigError, checkpoint.RunDirectoryError, checkpoint.CheckpointError, FileNotFoundError) as error:
        cli.report_error(SCRIPT, error)
        return 2
    except KeyboardInterrupt:
        return 130
    print(result.fit.message)
    if result.fit.status == "diverged":
        print(f"Continue from the last good checkpoint with a lower peak learning rate: {resume} "
              f"--learning-rate {config.learning_rate / 2:g}")
        return 1
    cli.print_outputs(result)
    return 0


if __name__ == "__main__":
    enable_compilation_cache()  # later runs load the compiled steps instead of compiling them
    sys.exit(main())
