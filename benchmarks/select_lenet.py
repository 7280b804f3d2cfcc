#!/usr/bin/env python
"""Chooses LeNet's default learning rate and augmentation on VALIDATION accuracy only.

Trains `jaxdl.recipes.lenet.train_lenet` for every (peak learning rate, shift) of the grid and
every seed, with ``evaluate_test=False``: the test images are never evaluated here. Each run
appends a JSON line (the per-epoch validation accuracies and losses) to ``--results``; a
rerun skips what is there. The summary ranks configurations by the mean final validation
accuracy over the seeds, with the standard error.

    python benchmarks/select_lenet.py --seeds 0 1 2 --results benchmarks/select_lenet.jsonl
    python benchmarks/select_lenet.py --summary-only --results benchmarks/select_lenet.jsonl
    python benchmarks/select_lenet.py --epochs 4 --batch-sizes 128 --learning-rates 6e-3 1e-2 --shifts 2 \
        --results benchmarks/select_lenet_time.jsonl            # the time-to-accuracy search

On two CPU cores one 8-epoch run takes about 2 minutes (18 runs: about 40 minutes).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from jaxdl.recipes.lenet import LeNetConfig, train_lenet  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--learning-rates", type=float, nargs="+", default=[1e-3, 2e-3, 4e-3])
    parser.add_argument("--shifts", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=LeNetConfig.epochs)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[LeNetConfig.batch_size])
    parser.add_argument("--results", default="benchmarks/select_lenet.jsonl")
    parser.add_argument("--summary-only", action="store_true")
    return parser.parse_args(argv)


def run(learning_rate: float, shift: int, seed: int, epochs: int, data, batch_size: int = LeNetConfig.batch_size) -> dict:
    output = tempfile.mkdtemp(prefix="select_lenet_")
    try:
        config = LeNetConfig(learning_rate=learning_rate, shift=shift, seed=seed, epochs=epochs, output_dir=output,
                             batch_size=batch_size, progress=False, plot=False)
        start = time.perf_counter()
        result = train_lenet(config, data, log=None, evaluate_test=False).fit
        return {"learning_rate": learning_rate, "shift": shift, "seed": seed, "batch_size": batch_size, "epochs": epochs,
                "status": result.status,
                "validation_accuracy": [row["validation_accuracy"] for row in result.history],
                "validation_loss": [row["validation_loss"] for row in result.history],
                "train_loss": [row["train_loss"] for row in result.history],
                "seconds": time.perf_counter() - start}
    finally:
        shutil.rmtree(output, ignore_errors=True)


def summary(records: list[dict]) -> str:
    """A Markdown table: one row per configuration, ranked by mean final validation accuracy."""
    groups: dict[tuple, list[float]] = {}
    for record in records:
        key = (epochs_of(record), batch_size_of(record), record["learning_rate"], record["shift"])
        groups.setdefault(key, []).append(record["validation_accuracy"][-1])
    rows = sorted(groups.items(), key=lambda item: -statistics.mean(item[1]))
    lines = ["| epochs | batch size | peak learning rate | shift | seeds | final validation accuracy per seed | mean "
             "| standard error |",
             "|---:|---:|---:|---:|---:|---|---:|---:|"]
    for (epochs, batch_size, learning_rate, shift), values in rows:
        error = statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else float("nan")
        per_seed = ", ".join(f"{100 * v:.2f}%" for v in values)
        lines.append(f"| {epochs} | {batch_size} | {learning_rate:g} | {shift} | {len(values)} | {per_seed} "
                     f"| {100 * statistics.mean(values):.3f}% | {100 * error:.3f}% |")
    return "\n".join(lines)


def batch_size_of(record: dict) -> int:
    """The record's batch size (records written before the option existed used the default, 64)."""
    return record.get("batch_size", 64)


def epochs_of(record: dict) -> int:
    """The record's epochs (older records: the length of its completed history)."""
    return record.get("epochs", len(record["validation_accuracy"]))


def main(argv=None) -> None:
    args = parse_args(argv)
    path = pathlib.Path(args.results)
    records = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    if not args.summary_only:
        from jaxdl.datasets.mnist import load_mnist

        data = load_mnist()
        done = {(epochs_of(r), batch_size_of(r), r["learning_rate"], r["shift"], r["seed"]) for r in records}
        grid = [(b, lr, shift) for b in args.batch_sizes for lr in args.learning_rates for shift in args.shifts]
        for seed in args.seeds:
            for batch_size, learning_rate, shift in grid:
                if (args.epochs, batch_size, learning_rate, shift, seed) in done:
                    continue
                record = run(learning_rate, shift, seed, args.epochs, data, batch_size)
                records.append(record)
                with path.open("a") as file:
                    file.write(json.dumps(record) + "\n")
                print(f"epochs {args.epochs} batch {batch_size} lr {learning_rate:g} shift {shift} seed {seed}: "
                      f"validation {100 * record['validation_accuracy'][-1]:.2f}% ({record['seconds']:.0f} s)",
                      flush=True)
    print(summary(records))


if __name__ == "__main__":
    main()
