#!/usr/bin/env python
"""Chooses the ResNet recipe's hyperparameters on VALIDATION accuracy only.

Trains `jaxdl.recipes.resnet.train_resnet` for every (peak learning rate, L2, epochs) of the
grid with ``evaluate_test=False``: the test images are never evaluated here. Each run appends a
JSON line (per-epoch validation accuracy and loss, wall time, training samples/s) to
``--results``; a rerun skips what is there. The summary ranks the configurations by their best
validation accuracy (the epoch whose checkpoint is ``best``), a tie by the validation loss there. The chosen one becomes the
`ResNetConfig` defaults, and ``python scripts/train_resnet.py`` evaluates it on test once.

    python benchmarks/select_resnet.py --learning-rates 2e-3 4e-3 8e-3 --results benchmarks/select_resnet.jsonl
    python benchmarks/select_resnet.py --summary-only --results benchmarks/select_resnet.jsonl
    python benchmarks/select_resnet.py --test-of runs/select/lr0.004_l20.0004_e4_s0   # ONCE, the chosen run
"""

from __future__ import annotations

import argparse
import itertools
import json
import pathlib
import shutil
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from jaxdl.recipes.resnet import ResNetConfig, train_resnet  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--learning-rates", type=float, nargs="+", default=[ResNetConfig.learning_rate])
    parser.add_argument("--l2s", type=float, nargs="+", default=[ResNetConfig.l2])
    parser.add_argument("--epochs", type=int, nargs="+", default=[ResNetConfig.epochs])
    parser.add_argument("--seed", type=int, default=ResNetConfig.seed)
    parser.add_argument("--results", default="benchmarks/select_resnet.jsonl")
    parser.add_argument("--runs-dir", default=None,
                        help="keep each run's directory here (<runs-dir>/lr<lr>_l2<l2>_e<epochs>_s<seed>), so the "
                             "chosen run's best checkpoint can be evaluated on test once; default: deleted")
    parser.add_argument("--summary-only", action="store_true")
    parser.add_argument("--test-of", default=None, metavar="RUN_DIR",
                        help="evaluate the best checkpoint of this kept run on the test images, once, for the "
                             "configuration chosen on validation (nothing is trained)")
    return parser.parse_args(argv)


def run(learning_rate: float, l2: float, epochs: int, seed: int, data, runs_dir: str | None = None) -> dict:
    if runs_dir is None:
        output = tempfile.mkdtemp(prefix="select_resnet_")
    else:
        output = str(pathlib.Path(runs_dir) / f"lr{learning_rate:g}_l2{l2:g}_e{epochs}_s{seed}")
    try:
        config = ResNetConfig(learning_rate=learning_rate, l2=l2, epochs=epochs, seed=seed, output_dir=output,
                              progress=False, plot=False)
        start = time.perf_counter()
        result = train_resnet(config, data, log=print, evaluate_test=False).fit
        seconds = time.perf_counter() - start
        train_seconds = sum(row["epoch_seconds"] for row in result.history)
        return {"learning_rate": learning_rate, "l2": l2, "epochs": epochs, "seed": seed,
                "batch_size": config.batch_size, "shift": config.shift, "status": result.status,
                "validation_accuracy": [row["validation_accuracy"] for row in result.history],
                "validation_loss": [row["validation_loss"] for row in result.history],
                "output_dir": output if runs_dir is not None else None, "seconds": seconds, "epoch_seconds": [row["epoch_seconds"] for row in result.history],
                "train_samples_per_second": len(data.train) // config.batch_size * config.batch_size
                * len(result.history) / train_seconds}
    finally:
        if runs_dir is None:
            shutil.rmtree(output, ignore_errors=True)


def best_epoch(row: dict) -> int:
    """The index of the epoch `jaxdl.fit` keeps as ``best``: the first of the highest validation accuracy."""
    accuracies = row["validation_accuracy"]
    return accuracies.index(max(accuracies)) if accuracies else -1


def rank(row: dict) -> tuple:
    """Best validation accuracy first; a tie goes to the lower validation loss at that epoch."""
    if not row["validation_accuracy"]:
        return (0.0, float("inf"))
    epoch = best_epoch(row)
    return (-row["validation_accuracy"][epoch], row["validation_loss"][epoch])


def summary(rows: list[dict]) -> str:
    lines = ["| peak lr | l2 | epochs | best validation accuracy (epoch) | its validation loss | per epoch | wall s "
             "| samples/s |", "|---|---|---|---|---|---|---|---|"]
    for row in sorted(rows, key=rank):
        accuracies = " ".join(f"{100 * value:.2f}" for value in row["validation_accuracy"])
        epoch = best_epoch(row)
        lines.append(f"| {row['learning_rate']:g} | {row['l2']:g} | {row['epochs']} | "
                     f"{-100 * rank(row)[0]:.2f}% ({epoch + 1}) | {rank(row)[1]:.4f} | {accuracies} | "
                     f"{row['seconds']:.0f} | {row['train_samples_per_second']:.0f} |")
    return "\n".join(lines)


def evaluate_test(run_dir: str) -> dict:
    """Accuracy and loss of the best checkpoint of ``run_dir`` on the 10,000 test images."""
    import jax

    import jaxdl
    from jaxdl import checkpoint, models
    from jaxdl.datasets.mnist import load_mnist
    from jaxdl.recipes.lenet import evaluate_checkpoint, learning_rate_schedule, stored_hyperparameters

    best = checkpoint.find_step_dir(pathlib.Path(run_dir) / "checkpoints", "best")
    config = ResNetConfig(**stored_hyperparameters(run_dir))
    model = models.build_model(checkpoint.read_manifest(best)["model_config"])
    data = load_mnist(validation_size=config.validation_size)
    schedule = learning_rate_schedule(config, len(data.train) // config.batch_size)  # the optimizer state's structure
    template = jaxdl.create_train_state(model, models.lenet_optimizer(schedule, config.l2), jax.random.key(0),
                                        (config.batch_size, *models.LENET_INPUT_SHAPE))
    return {"run_dir": run_dir, "checkpoint": str(best),
            **evaluate_checkpoint(model, best, template, data.test, config.eval_batch_size)}


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.test_of is not None:
        print(json.dumps(evaluate_test(args.test_of)))
        return 0
    path = pathlib.Path(args.results)
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    if not args.summary_only:
        from jaxdl.datasets.mnist import load_mnist

        data = load_mnist(validation_size=ResNetConfig.validation_size)
        done = {(row["learning_rate"], row["l2"], row["epochs"], row["seed"]) for row in rows}
        for learning_rate, l2, epochs in itertools.product(args.learning_rates, args.l2s, args.epochs):
            if (learning_rate, l2, epochs, args.seed) in done:
                continue
            row = run(learning_rate, l2, epochs, args.seed, data, args.runs_dir)
            rows.append(row)
            with path.open("a") as file:
                file.write(json.dumps(row) + "\n")
            print(json.dumps(row), flush=True)
    print(summary(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
