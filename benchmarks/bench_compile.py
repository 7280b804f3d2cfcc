"""Cold compile time of second-order and forward-mode derivatives through the CPU fast paths.

What a researcher compiles beside a train step (issue 24): `jax.grad` and a Hessian-vector
product of the LeNet loss at batch 64, 128 and 1000, and `jax.jacfwd` of a small
Conv+Pooling+LSTM model's loss at batch 16. Each figure is trace + lower + XLA compile of the
jitted function (``jax.jit(f).lower(*args).compile()``), measured in a fresh Python process (no
persistent compilation cache, nothing traced before), the median over ``--repeats`` processes,
as wall time and as the process's CPU time (user + system: on a shared machine, other jobs
stretch the wall time far more than the CPU time).
Every configuration runs twice, with jaxdl's CPU fast paths on and off
(`jaxdl.kernels.use_fast_paths`; off is the plain `lax` model, what Equinox or Flax would
compile), contenders alternating so that both see the same machine load.

Also: the first LeNet train step (``make_train_step`` + first call, trace + compile, cold) at
batch 128, fast paths on and off.

Usage:
    python benchmarks/bench_compile.py                        # everything, 3 processes each
    python benchmarks/bench_compile.py --only grad hvp --batch 128 1000 --repeats 1
Prints a Markdown table and the CPU, jaxlib and date line for benchmarks/RESULTS_compile.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import time

KINDS = ("grad", "hvp", "jacfwd", "first_step")


def worker(kind: str, batch: int, fast: bool) -> dict:
    """Builds the function of ``kind`` and times its first lower + compile (this process is fresh)."""
    import jax
    import jax.numpy as jnp

    import jaxdl
    from jaxdl import kernels

    with kernels.use_fast_paths(fast):
        if kind == "jacfwd":
            model = jaxdl.Serial(jaxdl.Conv(4, (3, 3)), jaxdl.ReLU(), jaxdl.Pooling(2))
            lstm = jaxdl.LSTM(16, return_sequences=False)
            head = jaxdl.FullyConnected(10)
        else:
            model = jaxdl.models.lenet(logits=True)
    key = jax.random.key(0)
    if kind == "jacfwd":
        x = jax.random.normal(key, (batch, 1, 12, 12))
        params = (model.init(key, x.shape)[0], lstm.init(key, (batch, 6, 24))[0], head.init(key, (batch, 16))[0])

        def loss(params, x, labels):
            conv_params, lstm_params, head_params = params
            features, _ = model.apply(conv_params, {}, x)
            sequence = features.transpose(0, 2, 1, 3).reshape(batch, 6, 24)  # rows as time steps
            hidden, _ = lstm.apply(lstm_params, {}, sequence)
            logits, _ = head.apply(head_params, {}, hidden)
            return jaxdl.softmax_cross_entropy(logits, labels)
    else:
        x = jax.random.uniform(key, (batch, 1, 28, 28))
        params = model.init(key, x.shape)[0]

        def loss(params, x, labels):
            return jaxdl.softmax_cross_entropy(model.apply(params, {}, x)[0], labels)
    labels = jnp.arange(batch) % 10

    start, cpu_start = time.perf_counter(), time.process_time()
    if kind == "first_step":
        optimizer = jaxdl.models.lenet_optimizer()
        state = jaxdl.create_train_state(model, optimizer, key, x.shape)
        step = jaxdl.make_train_step(model, jaxdl.softmax_cross_entropy, optimizer)
        jax.block_until_ready(step(state, x, labels))
        return {"seconds": time.perf_counter() - start, "cpu_seconds": time.process_time() - cpu_start}
    if kind == "grad":
        function = jax.grad(loss)
        args = (params, x, labels)
    elif kind == "hvp":
        def function(params, tangent, x, labels):
            return jax.jvp(lambda p: jax.grad(loss)(p, x, labels), (params,), (tangent,))[1]
        args = (params, params, x, labels)
    else:
        function = jax.jacfwd(loss)
        args = (params, x, labels)
    lowered = jax.jit(function).lower(*args)
    traced = time.perf_counter()
    lowered.compile()
    end = time.perf_counter()
    return {"seconds": end - start, "cpu_seconds": time.process_time() - cpu_start, "trace_lower": traced - start,
            "compile": end - traced}


def measure(kind: str, batch: int, fast: bool) -> dict:
    command = [sys.executable, __file__, "--worker", kind, "--batch", str(batch), "--fast", str(int(fast))]
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode:
        raise RuntimeError(f"worker {kind} batch {batch} fast={fast} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def environment() -> str:
    import jaxlib

    fields = {}
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            name, _, value = line.partition(":")
            fields.setdefault(name.strip(), value.strip())
    cpu = f"{fields.get('model name', '?')} (family {fields.get('cpu family', '?')}, model {fields.get('model', '?')})"
    return (f"{cpu}, {os.cpu_count()} CPUs, jaxlib {jaxlib.__version__}, "
            f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=KINDS, default=list(KINDS))
    parser.add_argument("--batch", type=int, nargs="+", default=[64, 128, 1000],
                        help="batch sizes for grad and hvp (jacfwd: 16, first_step: 128)")
    parser.add_argument("--repeats", type=int, default=3, help="fresh processes per figure (median)")
    parser.add_argument("--worker", choices=KINDS, help=argparse.SUPPRESS)
    parser.add_argument("--fast", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.batch[0], bool(args.fast))))
        return
    rows = [(kind, batch) for kind in args.only
            for batch in (args.batch if kind in ("grad", "hvp") else [16 if kind == "jacfwd" else 128])]
    print(environment())
    print("| function | batch | fast paths on: wall s (CPU s) | off, plain lax: wall s (CPU s) | on / off (CPU) |")
    print("|---|---|---|---|---|")
    for kind, batch in rows:
        wall, cpu = {True: [], False: []}, {True: [], False: []}
        for _ in range(args.repeats):
            for fast in (True, False):
                figures = measure(kind, batch, fast)
                wall[fast].append(figures["seconds"])
                cpu[fast].append(figures["cpu_seconds"])
        on, off = (statistics.median(wall[f]) for f in (True, False))
        cpu_on, cpu_off = (statistics.median(cpu[f]) for f in (True, False))
        print(f"| {kind} | {batch} | {on:.2f} ({cpu_on:.2f}) | {off:.2f} ({cpu_off:.2f}) | {cpu_on / cpu_off:.2f} |",
              flush=True)


if __name__ == "__main__":
    main()
