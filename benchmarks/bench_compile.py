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

``--equinox-python PY`` adds Equinox (an interpreter with equinox and the same jax, kept out of
the project's environment) as a third contender for grad, hvp and jacfwd: the same LeNet
(``eqx.nn.Conv2d``/``MaxPool2d``/``Linear``, vmapped over the batch) and the same
Conv+Pooling+LSTM model (``eqx.nn.LSTMCell`` in a ``lax.scan``), the same loss, timed the same
way in fresh processes.

Usage:
    python benchmarks/bench_compile.py                        # everything, 3 processes each
    python benchmarks/bench_compile.py --only grad hvp jacfwd --batch 128 1000 --equinox-python /tmp/eqxenv/bin/python
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


EQUINOX_WORKER = r'''
import json, sys, time
import jax, jax.numpy as jnp
import equinox as eqx
kind, batch = sys.argv[1], int(sys.argv[2])
key = jax.random.key(0)
keys = jax.random.split(key, 8)


class LeNet(eqx.Module):
    layers: list

    def __init__(self, keys):
        self.layers = [eqx.nn.Conv2d(1, 6, 5, padding=2, key=keys[0]), jax.nn.relu, eqx.nn.MaxPool2d(2, 2),
                       eqx.nn.Conv2d(6, 16, 5, padding=2, key=keys[1]), jax.nn.relu, eqx.nn.MaxPool2d(2, 2),
                       jnp.ravel, eqx.nn.Linear(784, 120, key=keys[2]), jax.nn.relu,
                       eqx.nn.Linear(120, 84, key=keys[3]), jax.nn.relu, eqx.nn.Linear(84, 10, key=keys[4])]

    def __call__(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


class ConvLSTM(eqx.Module):
    conv: eqx.nn.Conv2d
    pool: eqx.nn.MaxPool2d
    cell: eqx.nn.LSTMCell
    head: eqx.nn.Linear

    def __init__(self, keys):
        self.conv = eqx.nn.Conv2d(1, 4, 3, padding=1, key=keys[0])
        self.pool = eqx.nn.MaxPool2d(2, 2)
        self.cell = eqx.nn.LSTMCell(24, 16, key=keys[1])
        self.head = eqx.nn.Linear(16, 10, key=keys[2])

    def __call__(self, x):
        features = self.pool(jax.nn.relu(self.conv(x)))            # (4, 6, 6)
        sequence = features.transpose(1, 0, 2).reshape(6, 24)       # rows as time steps
        def step(carry, x_t):
            return self.cell(x_t, carry), None
        (h, _), _ = jax.lax.scan(step, (jnp.zeros(16), jnp.zeros(16)), sequence)
        return self.head(h)


if kind == "jacfwd":
    model, x = ConvLSTM(keys), jax.random.normal(key, (batch, 1, 12, 12))
else:
    model, x = LeNet(keys), jax.random.uniform(key, (batch, 1, 28, 28))
params, static = eqx.partition(model, eqx.is_array)
labels = jnp.arange(batch) % 10


def loss(params, x, labels):
    logits = jax.vmap(eqx.combine(params, static))(x)
    return -jnp.sum(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], axis=1))


start, cpu_start = time.perf_counter(), time.process_time()
if kind == "grad":
    function, args = jax.grad(loss), (params, x, labels)
elif kind == "hvp":
    def function(params, tangent, x, labels):
        return jax.jvp(lambda p: jax.grad(loss)(p, x, labels), (params,), (tangent,))[1]
    args = (params, params, x, labels)
else:
    function, args = jax.jacfwd(loss), (params, x, labels)
jax.jit(function).lower(*args).compile()
print(json.dumps({"seconds": time.perf_counter() - start, "cpu_seconds": time.process_time() - cpu_start}))
'''


def measure_equinox(python: str, kind: str, batch: int) -> dict:
    """One fresh Equinox process's figures for ``kind`` at ``batch`` (see `EQUINOX_WORKER`)."""
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    done = subprocess.run([python, "-c", EQUINOX_WORKER, kind, str(batch)], capture_output=True, text=True,
                          env=env, check=False)
    if done.returncode:
        raise RuntimeError(f"Equinox worker {kind} batch {batch} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


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
    parser.add_argument("--equinox-python", default=None,
                        help="an interpreter with equinox and the same jax: adds Equinox to grad, hvp and jacfwd")
    parser.add_argument("--worker", choices=KINDS, help=argparse.SUPPRESS)
    parser.add_argument("--fast", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.batch[0], bool(args.fast))))
        return
    rows = [(kind, batch) for kind in args.only
            for batch in (args.batch if kind in ("grad", "hvp") else [16 if kind == "jacfwd" else 128])]
    print(environment())
    equinox = ["equinox: wall s (CPU s)", "on / equinox (CPU)"] if args.equinox_python else []
    columns = ["function", "batch", "fast paths on: wall s (CPU s)", "off, plain lax: wall s (CPU s)",
               "on / off (CPU)", *equinox]
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for kind, batch in rows:
        contenders = [True, False] + (["equinox"] if args.equinox_python and kind != "first_step" else [])
        wall, cpu = {c: [] for c in contenders}, {c: [] for c in contenders}
        for _ in range(args.repeats):  # the contenders alternate, so that they see the same load
            for contender in contenders:
                figures = (measure_equinox(args.equinox_python, kind, batch) if contender == "equinox"
                           else measure(kind, batch, contender))
                wall[contender].append(figures["seconds"])
                cpu[contender].append(figures["cpu_seconds"])
        medians = {c: (statistics.median(wall[c]), statistics.median(cpu[c])) for c in contenders}
        cells = [kind, str(batch)] + [f"{medians[c][0]:.2f} ({medians[c][1]:.2f})" for c in (True, False)]
        cells.append(f"{medians[True][1] / medians[False][1]:.2f}")
        if equinox:
            cells += ([f"{medians['equinox'][0]:.2f} ({medians['equinox'][1]:.2f})",
                       f"{medians[True][1] / medians['equinox'][1]:.2f}"] if "equinox" in medians else ["", ""])
        print("| " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
