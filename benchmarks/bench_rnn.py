"""Forward + backward speed of jaxdl's RNN, LSTM and GRU against PyTorch on CPU.

Each contender computes the value and the gradients (with respect to every parameter and the
input) of ``sum(outputs)`` for a (batch, time, features) float32 input: jaxdl with
``jax.jit(jax.value_and_grad(...))``, PyTorch with ``torch.nn.RNN/LSTM/GRU(batch_first=True)``,
``backward()`` and ``torch.set_num_threads(threads)`` in a child process. Contenders run
interleaved, round by round, so load from other processes hits them alike; the table reports
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


class TorchWorker:
    """PyTorch in a child process, timed there; None-like (``available`` False) without torch.

    A separate process keeps the two runtimes' thread pools apart: PyTorch's OpenMP threads
    and XLA's threads, both busy-waiting for a while after their work, slow each other down
    badly when they share a process on two cores.
    """

    def __init__(self, threads: int):
        import multiprocessing

        context = multiprocessing.get_context("spawn")
        self._connection, child = context.Pipe()
        self._process = context.Process(target=_torch_worker, args=(child, threads), daemon=True)
        self._process.start()
        self.version = self._connection.recv()
        self.available = self.version is not None

    def setup(self, cell: str, size):
        self._connection.send(("setup", CELLS[cell][1], size))
        self._connection.recv()

    def run(self, calls: int) -> float:
        """Seconds per call, timed in the child."""
        self._connection.send(("run", calls))
        return self._connection.recv()

    def close(self):
        self._connection.send(("stop",))
        self._process.join(timeout=10)


def _torch_worker(connection, threads):
    try:
        import torch
    except ImportError:
        connection.send(None)
        return
    torch.set_num_threads(threads)
    connection.send(torch.__version__)
    step = None
    while True:
        message = connection.recv()
        if message[0] == "stop":
            return
        if message[0] == "setup":
            _, class_name, (batch, steps, features, hidden) = message
            torch.manual_seed(0)
            module = getattr(torch.nn, class_name)(features, hidden, batch_first=True)
            x = torch.randn(batch, steps, features, requires_grad=True)

            def step(module=module, x=x):
                module.zero_grad(set_to_none=True)
                x.grad = None
                outputs, _ = module(x)
                outputs.sum().backward()

            step()
            connection.send("ready")
        elif message[0] == "run":
            start = time.perf_counter()
            for _ in range(message[1]):
                step()
            connection.send((time.perf_counter() - start) / message[1])


def measure(contenders: dict, torch_worker, rounds: int, calls: int) -> dict:
    """Median seconds per call of each contender (and "torch"), timed round-robin."""
    times = {name: [] for name in contenders}
    if torch_worker is not None:
        times["torch"] = []
    for _ in range(rounds):
        for name, run in contenders.items():
            start = time.perf_counter()
            for _ in range(calls):
                run()
            times[name].append((time.perf_counter() - start) / calls)
            time.sleep(0.02)  # let the other runtime's spinning threads go idle
        if torch_worker is not None:
            times["torch"].append(torch_worker.run(calls))
            time.sleep(0.02)
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
    parser.add_argument("--threads", type=int, default=2, help="PyTorch intra-op threads (0: skip PyTorch)")
    parser.add_argument("--markdown", default=None, help="also write the table to this file")
    args = parser.parse_args(argv)
    implementations = args.implementations.split(",")

    torch_worker = TorchWorker(args.threads) if args.threads > 0 else None
    if torch_worker is not None and not torch_worker.available:
        torch_worker = None
    torch_version = torch_worker.version if torch_worker else None

    rows = []
    for size_name in args.sizes.split(","):
        size = SIZES[size_name]
        for cell in args.cells.split(","):
            contenders, first_calls = {}, {}
            for implementation in implementations:
                run, first_calls[implementation] = jax_contender(cell, implementation, size)
                contenders[implementation] = run
            if torch_worker is not None:
                torch_worker.setup(cell, size)
            seconds = measure(contenders, torch_worker, args.rounds, calls_per_round(size))
            throughput = {name: size[0] / s for name, s in seconds.items()}
            row = (size_name, size, cell, throughput, first_calls)
            rows.append(row)
            print(format_row(row, implementations), flush=True)
    if torch_worker is not None:
        torch_worker.close()

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
