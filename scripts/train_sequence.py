#!/usr/bin/env python
"""Truncated backpropagation through time: memorize across chunks vs reset every chunk.

A thin command line over `jaxdl.recipes.delayed_recall` (the task: recall the symbol seen
``--delay`` steps earlier, sequences fed chunk by chunk; see its docstring), trained with
`jaxdl.fit` and evaluated with `jaxdl.make_eval_step`, the state carried from chunk to chunk.

Usage:
    python scripts/train_sequence.py                  # about a minute on two CPU cores
    python scripts/train_sequence.py --cell gru --delay 4 --chunk 8
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from jaxdl.compilation_cache import enable_compilation_cache  # noqa: E402
from jaxdl.recipes import cli  # noqa: E402
from jaxdl.recipes.delayed_recall import (  # noqa: E402
    CELLS, RecallConfig, evaluate_recall, reset_ceiling, train_recall,
)

HELP = {"hidden": "hidden size", "symbols": "alphabet size", "delay": "recall the symbol this many steps back",
        "chunk": "time steps per chunk (per optimizer step)", "chunks": "chunks per sequence",
        "batch": "sequences per batch", "batches": "training batches of sequences",
        "test_batches": "evaluation batches of sequences", "learning_rate": "Adam's learning rate", "seed": "seed"}
#: The option types (`jaxdl.recipes.cli`): every other field is a size, a positive int.
TYPES = {"learning_rate": cli.positive_float, "seed": cli.seed}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cell", choices=sorted(CELLS), default=RecallConfig.cell)
    for field in dataclasses.fields(RecallConfig):
        if field.name != "cell":
            parser.add_argument(f"--{field.name.replace('_', '-')}", type=TYPES.get(field.name, cli.positive_int),
                                default=field.default,
                                help=f"{HELP[field.name]} (default {field.default})")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    try:
        config = RecallConfig(**{field.name: getattr(args, field.name) for field in dataclasses.fields(RecallConfig)})
    except ValueError as error:
        cli.report_error("train_sequence.py", error)
        sys.exit(2)
    print(f"Delayed recall: {config.symbols} symbols, delay {config.delay}, chunks of {config.chunk} steps, "
          f"{config.chunks} chunks per sequence, {config.cell.upper()}({config.hidden}).")
    results = {}
    for memorize in (True, False):
        start = time.perf_counter()
        model, fit_result = train_recall(config, memorize, progress=not args.no_progress)
        results[memorize] = evaluate_recall(model, fit_result.train_state, config)
        results[memorize]["validation_loss"] = fit_result.history[-1]["validation_loss"]
        results[memorize]["seconds"] = time.perf_counter() - start
    print(f"\n{'':22s}{'accuracy':>10s}{'boundary':>10s}{'inside':>10s}{'loss':>8s}{'time':>8s}")
    for memorize, label in ((True, "memorize across chunks"), (False, "reset every chunk")):
        r = results[memorize]
        print(f"{label:22s}{r['all']:10.3f}{r['boundary']:10.3f}{r['inside']:10.3f}{r['validation_loss']:8.3f}"
              f"{r['seconds']:7.0f}s")
    print(f"('boundary': the first {config.delay} steps of each chunk; chance {1 / config.symbols:.3f}; "
          f"the best a reset model can do overall is {reset_ceiling(config):.3f})")
    return results


if __name__ == "__main__":
    enable_compilation_cache()
    main()
