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
of its own; they alternate round by round and the table gives the median steps/s of each.

Usage:
    python3 -m venv /tmp/flaxenv && /tmp/flaxenv/bin/pip install jax==0.10.2 flax
    .venv/bin/python benchmarks/bench_resnet.py --flax-python /tmp/flaxenv/bin/python --rounds 3
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import subprocess
import sys

B = 128
ROOT = pathlib.Path(__file__).resolve().parents[1]

JAXDL_CHILD = r'''
import json, sys, time
sys.path.insert(0, sys.argv[3])
import jax, numpy as np, jaxdl
from jaxdl import models
from jaxdl.recipes.resnet import resnet_mnist
B, steps = int(sys.argv[1]), int(sys.argv[2])
model = resnet_mnist()
optimizer = models.lenet_optimizer(1e-3, l2=0.0)       # plain Adam
state = jaxdl.create_train_state(model, optimizer, jax.random.key(0), (B, 1, 28, 28))
step = jaxdl.make_train_step(model, jaxdl.cross_entropy, optimizer)
rng = np.random.default_rng(0)
x = rng.random((B, 1, 28, 28), dtype=np.float32); y = rng.integers(0, 10, B).astype(np.int32)
for _ in range(2):
    state, metrics = step(state, x, y)
jax.block_until_ready(metrics)
start = time.perf_counter()
for _ in range(steps):
    state, metrics = step(state, x, y)
jax.block_until_ready(metrics)
print(json.dumps({"steps_per_second": steps / (time.perf_counter() - start), "params": jaxdl.count_params(state.params)}))
'''

FLAX_CHILD = r'''
import json, sys, time
import jax, jax.numpy as jnp, numpy as np, optax
import flax.linen as nn
B, steps = int(sys.argv[1]), int(sys.argv[2])

def norm(train):
    return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5)

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
x = rng.random((B, 28, 28, 1), dtype=np.float32); y = rng.integers(0, 10, B).astype(np.int32)
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

for _ in range(2):
    params, stats, opt, value = step(params, stats, opt, x, y)
jax.block_until_ready(value)
start = time.perf_counter()
for _ in range(steps):
    params, stats, opt, value = step(params, stats, opt, x, y)
jax.block_until_ready(value)
count = sum(a.size for a in jax.tree_util.tree_leaves(params))
print(json.dumps({"steps_per_second": steps / (time.perf_counter() - start), "params": count}))
'''


def run_child(python: str, code: str, steps: int) -> dict:
    result = subprocess.run([python, "-c", code, str(B), str(steps), str(ROOT)], capture_output=True, text=True,
                            check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flax-python", required=True, help="an interpreter with flax and jax 0.10.2")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args(argv)
    rates = {"jaxdl": [], "Flax": []}
    for round_ in range(args.rounds):
        for name, python, code in (("jaxdl", sys.executable, JAXDL_CHILD), ("Flax", args.flax_python, FLAX_CHILD)):
            result = run_child(python, code, args.steps)
            rates[name].append(result["steps_per_second"])
            print(f"round {round_ + 1} {name}: {result['steps_per_second']:.2f} steps/s ({result['params']:,} params)",
                  flush=True)
    medians = {name: statistics.median(values) for name, values in rates.items()}
    print("| contender | steps/s (median) | images/s |\n|---|---:|---:|")
    for name, value in medians.items():
        print(f"| {name} | {value:.2f} | {value * B:.0f} |")
    print(f"| jaxdl / Flax | **{medians['jaxdl'] / medians['Flax']:.2f}** | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
