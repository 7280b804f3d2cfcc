"""Forward + backward speed of jaxdl's RNN, LSTM and GRU against PyTorch on CPU.

Each contender computes the value and the gradients (with respect to every parameter and the
input) of ``sum(outputs)`` for a (batch, time, features) input: jaxdl with
``jax.jit(jax.value_and_grad(...))``, PyTorch with ``torch.nn.RNN/LSTM/GRU(batch_first=True)``,
``backward()`` and ``torch.set_num_threads(threads)``. Contenders run interleaved, round by
round, in the same process, so load from other processes hits them alike; the table reports
the median sequences/s over the rounds, the ratio of medians against PyTorch and the first
call's time (tracing + compilation) for jaxdl. PyTorch is optional (not a jaxdl dependency).

Usage:
    python benchmarks/bench_rnn.py                        # all cells, sizes small/default/large
    python benchmarks/bench_rnn.py --cells lstm --sizes default --rounds 30
    python benchmarks/bench_rnn.py --implementations fused,scan --markdown results.md
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from jaxdl.layers.recurrent import GRU, LSTM, RNN  # noqa: E402

#: name -> (batch, time, features, hidden)
SIZES = {
    "small": (16, 50, 16, 32),
    "default": (64, 100, 32, 128),
    "large": (128, 200, 64, 256),
}
CELLS = {"rnn": (RNN, "RNN"), "lstm": (LSTM, "LSTM"), "gru": (GRU, "GRU")}


def jax_contender(cell: str, implementation: str, size):
    """A zero-argument callable running one jitted forward+backward, and its first-call time."""
    batch, steps, features, hidden = size
    layer = CELLS[cell][0](hidden, implementation=implementation)
    params, state = layer.init(jax.random.key(0), (batch, steps, features))
    x = jax.random.normal(jax.random.key(1), (batch, steps, features), jnp.float32)

    def loss(params, x):
        return jnp.sum(layer.apply(params, state, x)[0])

    step = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
    start = time.perf_counter()
    jax.block_until_ready(step(params, x))
    first_call = time.perf_counter() - start
    return (lambda: jax.block_until_ready(step(params, x))), first_call


def torch_contender(cell: str, size):
    """The same computation in PyTorch, or None if torch is not installed."""
    try:
        import torch
    except ImportError:
        return None
    batch, steps, features, hidden = size
    torch.manual_seed(0)
    module = getattr(torch.nn, CELLS[cell][1])(features, hidden, batch_first=True)
    x = torch.randn(batch, steps, features, requires_grad=True)

    def run():
        module.zero_grad(set_to_none=True)
        x.grad = None
        outputs, _ = module(x)
        outputs.sum().backward()

    run()
    return run


def measure(contenders: dict, rounds: int, calls: int) -> dict:
    """Median seconds per call of each contender, timed round-robin."""
    times = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, run in contenders.items():
            start = time.perf_counter()
            for _ in range(calls):
                run()
            times[name].append((time.perf_counter() - start) / calls)
    return {name: statistics.median(ts) for name, ts in times.items()}


def calls_per_round(size) -> int:
    batch, steps, _, hidden = size
    work = batch * steps * hidden * hidden
    return max(1, min(10, int(2e8 // work)))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", default="rnn,lstm,gru")
    parser.add_argument("--sizes", default="small,default,large")
    parser.add_argument("--implementations", default="fused,scan",
                        help="jaxdl implementations to time (fused, scan)")
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds (the median is taken)")
    parser.add_argument("--threads", type=int, default=2, help="PyTorch intra-op threads")
    parser.add_argument("--markdown", default=None, help="also write the table to this file")
    args = parser.parse_args(argv)
    implementations = args.implementations.split(",")

    try:
        import torch
        torch.set_num_threads(args.threads)
        torch_version = torch.__version__
    except ImportError:
        torch_version = None

    rows = []
    for size_name in args.sizes.split(","):
        size = SIZES[size_name]
        for cell in args.cells.split(","):
            contenders, first_calls = {}, {}
            for implementation in implementations:
                run, first_calls[implementation] = jax_contender(cell, implementation, size)
                contenders[implementation] = run
            torch_run = torch_contender(cell, size)
            if torch_run is not None:
                contenders["torch"] = torch_run
            seconds = measure(contenders, args.rounds, calls_per_round(size))
            throughput = {name: size[0] / s for name, s in seconds.items()}
            row = (size_name, size, cell, throughput, first_calls)
            rows.append(row)
            print(format_row(row, implementations), flush=True)

    header = describe(torch_version, args)
    print(header)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(markdown(rows, implementations, header))


def format_row(row, implementations) -> str:
    size_name, size, cell, throughput, first_calls = row
    parts = [f"{size_name:8s} {cell:5s} B,T,F,H={','.join(map(str, size)):15s}"]
    for implementation in implementations:
        parts.append(f"{implementation} {throughput[implementation]:8.0f} seq/s "
                     f"(first call {first_calls[implementation]:.2f} s)")
    if "torch" in throughput:
        parts.append(f"torch {throughput['torch']:8.0f} seq/s")
        parts.append("ratio " + " ".join(
            f"{implementation}/torch {throughput[implementation] / throughput['torch']:.2f}"
            for implementation in implementations))
    return "  ".join(parts)


def describe(torch_version, args) -> str:
    return (f"jax {jax.__version__}, torch {torch_version or 'not installed'} "
            f"({args.threads} threads), {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, "
            f"median of {args.rounds} interleaved rounds, {datetime.date.today()}")


def markdown(rows, implementations, header) -> str:
    columns = ["size (B, T, F, H)", "cell"] + [f"jaxdl {i} seq/s" for i in implementations]
    columns += ["torch seq/s"] + [f"{i} / torch" for i in implementations] + ["first call (s)"]
    lines = [f"<!-- {header} -->", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for size_name, size, cell, throughput, first_calls in rows:
        torch_rate = throughput.get("torch")
        cells = [f"{size_name} {size}", cell.upper()]
        cells += [f"{throughput[i]:,.0f}" for i in implementations]
        cells += [f"{torch_rate:,.0f}" if torch_rate else "-"]
        cells += [f"{throughput[i] / torch_rate:.2f}" if torch_rate else "-" for i in implementations]
        cells += [f"{first_calls[implementations[0]]:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
