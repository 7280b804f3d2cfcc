"""Where the LeNet training step's time goes: a `jax.profiler` trace of the compiled step.

Traces ``--steps`` calls of the jitted `jaxdl.make_train_step` (after warm-up) with
`jax.profiler` (``create_perfetto_trace=True``) and sums, per XLA operation (the thunks the
CPU runtime executes: fusions, convolutions, YNNPACK calls, reduce-windows...), the time per
step. The whole step's wall time per call is printed beside it, so the share of each
operation is visible; with two threads operations overlap and their sum can exceed the wall
time. The trace directory is kept for Perfetto (ui.perfetto.dev: open its
``perfetto_trace.json.gz``).

Profile the whole step before optimizing a part: micro-benchmarks of a layer alone misled
earlier rounds (XLA fuses across layer boundaries; benchmarks/RESULTS.md).

Usage:
    python benchmarks/profile_lenet.py                       # batch 128, 2 threads
    python benchmarks/profile_lenet.py --threads 1 --batch 64 --top 15
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import pathlib
import re
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from bench_lenet import set_threads  # the same thread settings as the benchmark

#: Trace events that are the runtime's or Python's, not an XLA operation of the step.
RUNTIME_EVENTS = ("ThunkExecutor", "PjitFunction", "ExecuteReplicated", "shard_args", "PjRt", "TfrtCpu",
                  "CommonPjRtLoadedExecutable", "Handle inputs")


def is_operation(name: str) -> bool:
    return not name.startswith("$") and not any(name.startswith(prefix) for prefix in RUNTIME_EVENTS)


def profile(batch: int, steps: int, trace_dir: pathlib.Path) -> tuple[float, dict[str, float], dict[str, float], str]:
    """(wall ms per step, {operation: ms per step}, {operation: calls per step}, compiled HLO text)."""
    import jax
    import numpy as np

    import jaxdl
    import jaxdl.models

    rng = np.random.default_rng(0)
    x = jax.device_put(rng.uniform(size=(batch, 1, 28, 28)).astype(np.float32))
    y = jax.device_put(rng.integers(0, 10, batch).astype(np.int32))
    model, optimizer = jaxdl.models.lenet(), jaxdl.Adam(5e-4)
    train_state = jaxdl.create_train_state(model, optimizer, jax.random.key(0), (batch, 1, 28, 28))
    step = jaxdl.make_train_step(model, jaxdl.cross_entropy, optimizer)
    hlo = step.lower(train_state, x, y).compile().as_text()
    for _ in range(5):
        train_state, metrics = step(train_state, x, y)
    jax.block_until_ready(metrics)

    trace_dir.mkdir(parents=True, exist_ok=True)
    jax.profiler.start_trace(str(trace_dir), create_perfetto_trace=True)
    start = time.perf_counter()
    for _ in range(steps):
        train_state, metrics = step(train_state, x, y)
    jax.block_until_ready(metrics)
    wall_ms = (time.perf_counter() - start) / steps * 1e3
    jax.profiler.stop_trace()

    total, calls = thunk_times(trace_dir, steps)
    return wall_ms, total, calls, hlo


def thunk_times(trace_dir: pathlib.Path, calls: int) -> tuple[dict[str, float], dict[str, float]]:
    """({operation: ms per call}, {operation: runs per call}) from the newest Perfetto trace in
    ``trace_dir``, which traced ``calls`` calls (`profile_rnn.py` sums its traces the same way)."""
    trace = max(trace_dir.rglob("perfetto_trace.json.gz"), key=lambda path: path.stat().st_mtime)
    with gzip.open(trace) as file:
        data = json.load(file)
    events = data["traceEvents"] if isinstance(data, dict) else data
    total, runs = collections.Counter(), collections.Counter()
    for event in events:
        if event.get("ph") == "X" and is_operation(event["name"]):
            total[event["name"]] += event.get("dur", 0) / 1e3 / calls
            runs[event["name"]] += 1 / calls
    return dict(total), dict(runs)


def result_shape(hlo: str, name: str) -> str:
    """The shape an operation of the compiled HLO produces (its defining line), or ''."""
    for line in hlo.splitlines():
        line = line.strip().removeprefix("ROOT ").removeprefix("%")
        if line.startswith(f"{name} = "):
            rest = line[len(name) + 3:]
            shape = rest[:rest.index(")") + 1] if rest.startswith("(") else rest.split(" ", 1)[0]
            return re.sub(r"\{[^}]*\}", "", shape)
    return ""


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=30, help="traced steps (after 5 warm-up steps)")
    parser.add_argument("--top", type=int, default=20, help="operations listed")
    parser.add_argument("--trace-dir", default=None, help="where the trace goes (default: a new temporary folder)")
    args = parser.parse_args(argv)
    set_threads(args.threads)
    trace_dir = pathlib.Path(args.trace_dir or tempfile.mkdtemp(prefix="jaxdl-profile-"))
    wall_ms, total, calls, hlo = profile(args.batch, args.steps, trace_dir)
    print(f"# LeNet train step, batch {args.batch}, {args.threads} thread(s), {args.steps} traced steps, "
          f"{time.strftime('%Y-%m-%d %H:%M')}; wall {wall_ms:.2f} ms per step; "
          f"operations sum {sum(total.values()):.2f} ms; trace in {trace_dir}")
    print("| operation (XLA thunk) | result | ms per step | calls per step |")
    print("|---|---|---:|---:|")
    for name, ms in sorted(total.items(), key=lambda item: -item[1])[:args.top]:
        print(f"| {name} | {result_shape(hlo, name)} | {ms:.2f} | {calls[name]:.0f} |")


if __name__ == "__main__":
    main()
