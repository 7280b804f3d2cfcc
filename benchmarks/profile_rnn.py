"""Where the recurrent layers' forward+backward time goes: a `jax.profiler` trace of the step.

Traces ``--calls`` calls of ``jax.jit(jax.value_and_grad(...))`` of an RNN/LSTM/GRU layer
(after warm-up; the same function as `bench_rnn.py` times) and sums, per XLA thunk (fusions,
dot calls, copies, while loops...), the time per call, with the number of times it ran per
call. The wall time per call is printed beside it. Thunks nested in a ``while`` loop are
listed on their own and inside the loop's own total, so the column does not add up to the
wall time; with two threads thunks may also overlap.

Usage:
    python benchmarks/profile_rnn.py --cell lstm               # default size, 1 thread
    python benchmarks/profile_rnn.py --cell gru --threads 2 --top 30
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from bench_lenet import set_threads  # the same thread settings as the benchmarks
from profile_lenet import result_shape, thunk_times

SIZES = {"small": (16, 50, 16, 32), "default": (64, 100, 32, 128), "large": (128, 200, 64, 256)}


def profile(cell: str, implementation: str, size, calls: int, trace_dir: pathlib.Path):
    """(wall ms per call, {thunk: ms per call}, {thunk: runs per call}, compiled HLO text)."""

    import jax
    import jax.numpy as jnp

    from jaxdl.layers.recurrent import GRU, LSTM, RNN

    batch, steps, features, hidden = size
    layer = {"rnn": RNN, "lstm": LSTM, "gru": GRU}[cell](hidden, implementation=implementation)
    params, state = layer.init(jax.random.key(0), (batch, steps, features))
    x = jax.random.normal(jax.random.key(1), (batch, steps, features), jnp.float32)

    def loss(params, x):
        return jnp.sum(layer.apply(params, state, x)[0])

    step = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
    hlo = step.lower(params, x).compile().as_text()
    for _ in range(5):
        jax.block_until_ready(step(params, x))

    trace_dir.mkdir(parents=True, exist_ok=True)
    jax.profiler.start_trace(str(trace_dir), create_perfetto_trace=True)
    start = time.perf_counter()
    for _ in range(calls):
        jax.block_until_ready(step(params, x))
    wall_ms = (time.perf_counter() - start) / calls * 1e3
    jax.profiler.stop_trace()

    total, runs = thunk_times(trace_dir, calls)
    return wall_ms, total, runs, hlo


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cell", choices=["rnn", "lstm", "gru"], default="lstm")
    parser.add_argument("--size", choices=sorted(SIZES), default="default")
    parser.add_argument("--implementation", choices=["fused", "scan"], default="fused")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--calls", type=int, default=20, help="traced calls (after 5 warm-up calls)")
    parser.add_argument("--top", type=int, default=25, help="thunks listed")
    parser.add_argument("--hlo", default=None, help="also write the compiled HLO text to this file")
    parser.add_argument("--trace-dir", default=None, help="where the trace goes (default: a new temporary folder)")
    args = parser.parse_args(argv)
    set_threads(args.threads)
    trace_dir = pathlib.Path(args.trace_dir or tempfile.mkdtemp(prefix="jaxdl-profile-rnn-"))
    size = SIZES[args.size]
    wall_ms, total, runs, hlo = profile(args.cell, args.implementation, size, args.calls, trace_dir)
    if args.hlo:
        pathlib.Path(args.hlo).write_text(hlo)
    print(f"# {args.cell.upper()} {args.implementation}, (B, T, F, H) = {size}, {args.threads} thread(s), "
          f"{args.calls} traced calls, {time.strftime('%Y-%m-%d %H:%M')}; wall {wall_ms:.2f} ms per call; "
          f"trace in {trace_dir}")
    print("| thunk | result | ms per call | runs per call | us per run |")
    print("|---|---|---:|---:|---:|")
    for name, ms in sorted(total.items(), key=lambda item: -item[1])[:args.top]:
        shape = result_shape(hlo, name)
        shape = shape if len(shape) <= 60 else shape[:57] + "..."  # a loop's state: a long tuple
        print(f"| {name} | {shape} | {ms:.2f} | {runs[name]:.0f} | {ms / runs[name] * 1e3:.1f} |")


if __name__ == "__main__":
    main()
