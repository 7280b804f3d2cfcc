#!/usr/bin/env python
"""Training-step speed of the MNIST ResNet: jaxdl against Flax, in one run.

The same model and step on both sides: `jaxdl.recipes.resnet.resnet_mnist()` (Conv 3x3/2 +
BN + ReLU, three stages of one basic block with 16/32/64 channels and 1x1/2 projection
shortcuts, global average pooling, Dense(10)), batch 128 of 28x28 images, BatchNorm in
training mode (batch statistics, running averages updated), summed cross-entropy, optax Adam
(1e-3), one jit-compiled step. jaxdl is `jaxdl.make_train_step` over the recipe's model
(NCHW, as jaxdl's layers are); Flax is ``nn.Conv``/``nn.BatchNorm``/``nn.Dense`` in Flax's
NHWC layout with ``mutable=["batch_stats"]``, run by ``--flax-python`` (an interpreter with
flax installed, kept out of the project's environment). Each contender runs in a child process
of its own; they alternate round by round. Each child times ``--repeats`` blocks of ``--steps``
steps after warm-up and reports the median block's steps/s and the CPU seconds (process time, all
threads) per step; the table gives each contender's median over the rounds and the median over
the rounds of its speed relative to Flax's, by wall time and by CPU time (back-to-back children
see about the same load on a shared machine; the CPU time, which waiting for a core does not
count, is the steadier of the two there). x and labels are on the device before the timing (the step, not the transfer, is timed).

Flax's BatchNorm computes the batch variance as E[x^2] - E[x]^2 (``use_fast_variance=True``, its
default: one pass less, but it cancels where a channel's mean is large next to its spread);
jaxdl's as E[(x - E[x])^2]. ``--flax-two-pass`` adds Flax with ``use_fast_variance=False``, the
same arithmetic as jaxdl's. ``--fast-paths`` adds the recipe's model with the CPU fast paths switched on
(`jaxdl.kernels.configure`); ``--baseline-root DIR`` adds jaxdl from another checkout (e.g.
``git archive <commit> jaxdl | tar -x -C DIR``), the same child code run against it.

Usage:
    python3 -m venv /tmp/flaxenv && /tmp/flaxenv/bin/pip install jax==0.10.2 flax
    .venv/bin/python benchmarks/bench_resnet.py --flax-python /tmp/flaxenv/bin/python --rounds 5
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from bench_lenet import cpu_model  # noqa: E402

B = 128
ROOT = pathlib.Path(__file__).resolve().parents[1]

TIMING = r'''
def timed(step, state, steps, repeats):
    for _ in range(2):
        state, value = step(state)
    jax.block_until_ready(value)
    rates, cpu = [], []
    for _ in range(repeats):
        wall, process = time.perf_counter(), time.process_time()
        for _ in range(steps):
            state, value = step(state)
        jax.block_until_ready(value)
        rates.append(steps / (time.perf_counter() - wall)); cpu.append((time.process_time() - process) / steps)
    return sorted(rates)[len(rates) // 2], sorted(cpu)[len(cpu) // 2]
'''

JAXDL_CHILD = r'''
import json, sys, time
sys.path.insert(0, sys.argv[4])
import jax, numpy as np, jaxdl
from jaxdl import kernels, models
from jaxdl.recipes.resnet import resnet_mnist
B, steps, repeats = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
model = resnet_mnist()
if sys.argv[5] == "fast":
    model = kernels.configure(model, enabled=True)
optimizer = models.lenet_optimizer(1e-3, l2=0.0)       # plain Adam
state = jaxdl.create_train_state(model, optimizer, jax.random.key(0), (B, 1, 28, 28))
train_step = jaxdl.make_train_step(model, jaxdl.cross_entropy, optimizer)
rng = np.random.default_rng(0)
x = jax.device_put(rng.random((B, 1, 28, 28), dtype=np.float32)); y = jax.device_put(rng.integers(0, 10, B).astype(np.int32))
def step(state):
    state, metrics = train_step(state, x, y)
    return state, metrics["loss"]
''' + TIMING + r'''
rate, cpu = timed(step, state, steps, repeats)
print(json.dumps({"steps_per_second": rate, "cpu_seconds_per_step": cpu, "params": jaxdl.count_params(state.params)}))
'''

FLAX_CHILD = r'''
import json, sys, time
import jax, jax.numpy as jnp, numpy as np, optax
import flax.linen as nn
B, steps, repeats = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])

def norm(train):  # Flax's default: variance as E[x^2] - E[x]^2; "two-pass" as jaxdl's, E[(x - E[x])^2]
    return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                        use_fast_variance=sys.argv[5] != "two-pass")

class Block(nn.Module):
    channels: int
    stride: int
    @nn.compact
    def __call__(self, x, train):
        s = (self.stride, self.stride)
        y = nn.relu(norm(train)(nn.Conv(self.channels, (3, 3), s, padding="SAME")(x)))
        y = norm(train)(nn.Conv(self.channels, (3, 3), padding="SAME")(y))
        if self.stride != 1 or x.shape[-1] != self.channels:
            x = norm(train)(nn.Conv(self.channels, (1, 1), s, padding="SAME")(x))
        return nn.relu(y + x)

class ResNet(nn.Module):
    @nn.compact
    def __call__(self, x, train):
        x = nn.relu(norm(train)(nn.Conv(16, (3, 3), (2, 2), padding="SAME")(x)))
        x = Block(16, 1)(x, train); x = Block(32, 2)(x, train); x = Block(64, 2)(x, train)
        return nn.Dense(10)(jnp.mean(x, axis=(1, 2)))

model = ResNet()
rng = np.random.default_rng(0)
x = jax.device_put(rng.random((B, 28, 28, 1), dtype=np.float32)); y = jax.device_put(rng.integers(0, 10, B).astype(np.int32))
variables = model.init(jax.random.key(0), x, train=False)
params, stats = variables["params"], variables["batch_stats"]
tx = optax.adam(1e-3)
opt = tx.init(params)

@jax.jit
def step(params, stats, opt, x, y):
    def loss(params):
        logits, new = model.apply({"params": params, "batch_stats": stats}, x, train=True, mutable=["batch_stats"])
        log_p = jax.nn.log_softmax(logits)
        return -jnp.sum(jnp.take_along_axis(log_p, y[:, None], axis=1)), new["batch_stats"]
    (value, stats), grads = jax.value_and_grad(loss, has_aux=True)(params)
    updates, opt = tx.update(grads, opt, params)
    return optax.apply_updates(params, updates), stats, opt, value

def run(carry):
    params, stats, opt = carry
    params, stats, opt, value = step(params, stats, opt, x, y)
    return (params, stats, opt), value
''' + TIMING + r'''
rate, cpu = timed(run, (params, stats, opt), steps, repeats)
count = sum(a.size for a in jax.tree_util.tree_leaves(params))
print(json.dumps({"steps_per_second": rate, "cpu_seconds_per_step": cpu, "params": count}))
'''


def run_child(python: str, code: str, steps: int, repeats: int, root: pathlib.Path, variant: str = "") -> dict:
    result = subprocess.run([python, "-c", code, str(B), str(steps), str(repeats), str(root), variant],
                            capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flax-python", required=True, help="an interpreter with flax and jax 0.10.2")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10, help="steps per timed block")
    parser.add_argument("--repeats", type=int, default=3, help="timed blocks per child (the median is kept)")
    parser.add_argument("--fast-paths", action="store_true", help="also the model with the CPU fast paths on")
    parser.add_argument("--baseline-root", default=None, help="also jaxdl from this checkout")
    parser.add_argument("--flax-two-pass", action="store_true",
                        help="also Flax with use_fast_variance=False (jaxdl's two-pass batch variance)")
    args = parser.parse_args(argv)
    import jax  # noqa: PLC0415  (versions for the header only; the children run the steps)

    contenders = [("jaxdl", sys.executable, JAXDL_CHILD, ROOT, "plain")]
    if args.fast_paths:
        contenders.append(("jaxdl, fast paths on", sys.executable, JAXDL_CHILD, ROOT, "fast"))
    if args.baseline_root:
        contenders.append(("jaxdl baseline", sys.executable, JAXDL_CHILD, pathlib.Path(args.baseline_root), "plain"))
    contenders.append(("Flax", args.flax_python, FLAX_CHILD, ROOT, ""))
    if args.flax_two_pass:
        contenders.append(("Flax, two-pass variance", args.flax_python, FLAX_CHILD, ROOT, "two-pass"))
    print(f"# {time.strftime('%Y-%m-%d %H:%M %Z')}; {cpu_model()}; {os.cpu_count()} CPUs; jax/jaxlib {jax.__version__}; "
          f"batch {B}; {args.rounds} rounds x {args.repeats} blocks of {args.steps} steps", flush=True)
    rates = {name: [] for name, *_ in contenders}
    cpu = {name: [] for name, *_ in contenders}
    loads = []
    for round_ in range(args.rounds):
        loads.append(os.getloadavg()[0])
        for name, python, code, root, variant in contenders:
            result = run_child(python, code, args.steps, args.repeats, root, variant)
            rates[name].append(result["steps_per_second"])
            cpu[name].append(result["cpu_seconds_per_step"])
            print(f"round {round_ + 1} {name}: {result['steps_per_second']:.2f} steps/s, "
                  f"{result['cpu_seconds_per_step'] * 1e3:.1f} CPU ms/step ({result['params']:,} params)", flush=True)
    print(f"1-minute load average at the rounds' starts: {', '.join(f'{load:.1f}' for load in loads)}")
    print("| contender | steps/s (median) | images/s | CPU ms per step (median) | speed / Flax, wall | "
          "speed / Flax, CPU time |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in rates:  # ratios: the median over the rounds of each round's ratio
        ratio = statistics.median(a / b for a, b in zip(rates[name], rates["Flax"]))
        cpu_ratio = statistics.median(b / a for a, b in zip(cpu[name], cpu["Flax"]))
        value = statistics.median(rates[name])
        print(f"| {name} | {value:.2f} | {value * B:.0f} | {statistics.median(cpu[name]) * 1e3:.1f} | {ratio:.2f} | "
              f"{cpu_ratio:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
