"""Where the MNIST ResNet's training step spends its time: jaxdl's against Flax's, op by op.

Each contender runs in a child process of its own (Flax through ``--flax-python``, an interpreter
with flax installed, as in `bench_resnet.py`, whose two steps are profiled here). A child compiles
the step (batch 128), writes its optimized HLO to ``--hlo-dir`` (``jaxdl.hlo``, ``flax.hlo``: diff
them), times ``--steps`` steps and traces them with `jax.profiler`, and sums the time per XLA
operation (`profile_lenet.thunk_times`). The parent prints, side by side, the time and the number of
operations of each kind (``transpose_copy_fusion``, ``ynn_fusion``, ...; the number at the end of
an operation's name dropped) and each contender's largest operations with their result shapes.
With two threads operations overlap, so the sums can exceed the wall time.

Usage:
    python benchmarks/profile_resnet.py --flax-python /tmp/flaxenv/bin/python
    python benchmarks/profile_resnet.py --top 10 --hlo-dir /tmp/resnet-hlo      # jaxdl alone
"""

from __future__ import annotations

import argparse
import collections
import json
import pathlib
import re
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import bench_resnet  # noqa: E402
from profile_lenet import result_shape, thunk_times  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]


def build_jaxdl(batch: int):
    """(step(carry) -> (carry, loss), carry, the compiled HLO text): `bench_resnet`'s jaxdl step."""
    sys.path.insert(0, str(ROOT))
    import jax
    import numpy as np

    import jaxdl
    from jaxdl import models
    from jaxdl.recipes.resnet import resnet_mnist

    model, optimizer = resnet_mnist(), models.lenet_optimizer(1e-3, l2=0.0)
    state = jaxdl.create_train_state(model, optimizer, jax.random.key(0), (batch, 1, 28, 28))
    train_step = jaxdl.make_train_step(model, jaxdl.cross_entropy, optimizer)
    rng = np.random.default_rng(0)
    x = jax.device_put(rng.random((batch, 1, 28, 28), dtype=np.float32))
    y = jax.device_put(rng.integers(0, 10, batch).astype(np.int32))

    def step(carry):
        carry, metrics = train_step(carry, x, y)
        return carry, metrics["loss"]

    return step, state, train_step.lower(state, x, y).compile().as_text()


def build_flax(batch: int):
    """The same for `bench_resnet`'s Flax step (its child code up to the timing)."""
    source = bench_resnet.FLAX_CHILD.split("def run(carry):")[0]
    sys.argv = [sys.argv[0], str(batch), "0", "0", str(ROOT), ""]
    scope: dict = {}
    exec(source, scope)  # noqa: S102  (the benchmark's own model code)
    jitted, x, y = scope["step"], scope["x"], scope["y"]

    def step(carry):
        params, stats, opt, value = jitted(*carry, x, y)
        return (params, stats, opt), value

    carry = (scope["params"], scope["stats"], scope["opt"])
    return step, carry, jitted.lower(*carry, x, y).compile().as_text()


def child(contender: str, batch: int, steps: int, hlo_dir: pathlib.Path) -> dict:
    """Compiles, times and traces one contender's step; the summary as a dict."""
    import jax

    step, carry, hlo = (build_jaxdl if contender == "jaxdl" else build_flax)(batch)
    hlo_dir.mkdir(parents=True, exist_ok=True)
    (hlo_dir / f"{contender}.hlo").write_text(hlo)
    for _ in range(3):
        carry, value = step(carry)
    jax.block_until_ready(value)
    start = time.perf_counter()
    for _ in range(steps):
        carry, value = step(carry)
    jax.block_until_ready(value)
    wall_ms = (time.perf_counter() - start) / steps * 1e3
    trace_dir = pathlib.Path(tempfile.mkdtemp(prefix=f"resnet-{contender}-"))
    jax.profiler.start_trace(str(trace_dir), create_perfetto_trace=True)
    for _ in range(steps):
        carry, value = step(carry)
    jax.block_until_ready(value)
    jax.profiler.stop_trace()
    total, calls = thunk_times(trace_dir, steps)
    operations = {name: [ms, calls[name], re.sub(r"\{[^}]*\}", "", result_shape(hlo, name))]
                  for name, ms in total.items()}
    return {"wall_ms": wall_ms, "operations": operations}


def kind(name: str) -> str:
    """An operation's kind: its name without the trailing number (``ynn_fusion.12`` -> ``ynn_fusion``)."""
    return re.sub(r"[.\d]+$", "", name)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--flax-python", default=None, help="an interpreter with flax and jax 0.10.2")
    parser.add_argument("--steps", type=int, default=20, help="timed and traced steps (after 3 warm-up steps)")
    parser.add_argument("--top", type=int, default=15, help="operations listed per contender")
    parser.add_argument("--hlo-dir", default=None, help="where the compiled HLO goes (default: a new temporary folder)")
    parser.add_argument("--child", choices=("jaxdl", "flax"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    hlo_dir = pathlib.Path(args.hlo_dir or tempfile.mkdtemp(prefix="resnet-hlo-"))
    if args.child:
        print(json.dumps(child(args.child, bench_resnet.B, args.steps, hlo_dir)))
        return
    results = {}
    for contender, python in (("jaxdl", sys.executable), ("flax", args.flax_python)):
        if python is None:
            continue
        command = [python, __file__, "--child", contender, "--steps", str(args.steps), "--hlo-dir", str(hlo_dir)]
        output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        results[contender] = json.loads(output.strip().splitlines()[-1])
    print(f"# MNIST ResNet train step, batch {bench_resnet.B}, {args.steps} traced steps, "
          f"{time.strftime('%Y-%m-%d %H:%M')}; HLO in {hlo_dir}")
    names = list(results)
    print("| " + " | ".join(f"{name}: wall {results[name]['wall_ms']:.1f} ms/step" for name in names) + " |")
    totals = {name: collections.Counter() for name in names}
    counts = {name: collections.Counter() for name in names}
    for name in names:
        for operation, (ms, runs, _) in results[name]["operations"].items():
            totals[name][kind(operation)] += ms
            counts[name][kind(operation)] += runs
    kinds = sorted(set().union(*totals.values()), key=lambda k: -max(totals[n][k] for n in names))
    print("\n| operation kind | " + " | ".join(f"{n} ms | {n} ops" for n in names) + " |")
    print("|---|" + "---:|---:|" * len(names))
    for k in kinds[:25]:
        print(f"| {k} | " + " | ".join(f"{totals[n][k]:.2f} | {counts[n][k]:.0f}" for n in names) + " |")
    for name in names:
        print(f"\n{name}: largest operations (ms per step, runs per step, result)")
        largest = sorted(results[name]["operations"].items(), key=lambda item: -item[1][0])[:args.top]
        for operation, (ms, runs, shape) in largest:
            print(f"  {ms:6.2f} {runs:3.0f} {operation} {shape}")


if __name__ == "__main__":
    main()
