#!/usr/bin/env python
"""Training-step speed of the character language models: jaxdl against Flax, in one run.

The same model and step on both sides, batch 32 x 64 characters (V = 75), mean softmax
cross-entropy, optax clip_by_global_norm(1) + Adam, one jit-compiled step (params and optimizer
state in, updated ones out):

* ``--model lstm`` (default): Embedding(75, 64) -> LSTM(256) -> Dense(75), the LSTM's final
  state carried into the next step (truncated BPTT, the carry's gradient stopped). jaxdl is
  `jaxdl.make_train_step` over `jaxdl.recipes.char_lm.lstm_model` (the fused LSTM); Flax is
  ``nn.Embed`` + ``nn.RNN(nn.OptimizedLSTMCell(256), return_carry=True)`` + ``nn.Dense``.
* ``--model transformer``: the recipe's `transformer_model` (token and learned position
  embeddings of width 64, 2 pre-norm blocks of causal 4-head self-attention and a GELU MLP of
  width 256, LayerNorm, Dense(75)); Flax is the same written with ``nn.Embed``, ``nn.LayerNorm``,
  ``nn.MultiHeadDotProductAttention`` with ``nn.make_causal_mask`` (what a Flax user writes)
  and ``nn.Dense``.

Flax runs in ``--flax-python`` (an interpreter with flax installed, kept out of the project's
environment), in a child process. The two alternate round by round; the table gives the
median steps/s of each.

Usage:
    python3 -m venv /tmp/flaxenv && /tmp/flaxenv/bin/pip install jax==0.10.2 flax
    .venv/bin/python benchmarks/bench_char_lm.py --flax-python /tmp/flaxenv/bin/python --rounds 5
    .venv/bin/python benchmarks/bench_char_lm.py --flax-python /tmp/flaxenv/bin/python --model transformer
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

B, T, V, E, H = 32, 64, 75, 64, 256
#: The transformer's width, heads and blocks (the recipe's defaults).
WIDTH, HEADS, LAYERS = 64, 4, 2

FLAX_CHILD = r'''
import json, sys, time
import jax, jax.numpy as jnp, numpy as np, optax
import flax.linen as nn
B, T, V, E, H, WIDTH, HEADS, LAYERS, steps = (int(a) for a in sys.argv[1:10])
kind = sys.argv[10]

class LSTMModel(nn.Module):
    @nn.compact
    def __call__(self, carry, ids):
        x = nn.Embed(V, E)(ids)
        carry, y = nn.RNN(nn.OptimizedLSTMCell(H), return_carry=True)(x, initial_carry=carry)
        return carry, nn.Dense(V)(y)

class Block(nn.Module):
    @nn.compact
    def __call__(self, x, mask):
        x = x + nn.MultiHeadDotProductAttention(num_heads=HEADS)(nn.LayerNorm()(x), mask=mask)
        h = nn.Dense(WIDTH)(nn.gelu(nn.Dense(4 * WIDTH)(nn.LayerNorm()(x)), approximate=False))
        return x + h

class TransformerModel(nn.Module):
    @nn.compact
    def __call__(self, carry, ids):
        x = nn.Embed(V, WIDTH)(ids)
        x = x + self.param("positions", nn.initializers.normal(0.02), (ids.shape[1], WIDTH))
        mask = nn.make_causal_mask(ids)
        for _ in range(LAYERS):
            x = Block()(x, mask)
        return carry, nn.Dense(V)(nn.LayerNorm()(x))

model = LSTMModel() if kind == "lstm" else TransformerModel()
optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-2 if kind == "lstm" else 3e-3))
carry = (jnp.zeros((B, H)), jnp.zeros((B, H)))
ids = jnp.asarray(np.random.default_rng(0).integers(0, V, (B, T + 1)), jnp.int32)
params = model.init(jax.random.key(0), carry, ids[:, :T])
opt_state = optimizer.init(params)

@jax.jit
def step(params, opt_state, carry, x, y):
    def loss_fn(params):
        new_carry, logits = model.apply(params, jax.lax.stop_gradient(carry), x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), new_carry
    (loss, new_carry), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, new_carry, loss

x, y = ids[:, :T], ids[:, 1:]
for line in sys.stdin:
    start = time.perf_counter()
    for _ in range(steps):
        params, opt_state, carry, loss = step(params, opt_state, carry, x, y)
    jax.block_until_ready(loss)
    print(json.dumps(time.perf_counter() - start), flush=True)
'''


def jaxdl_stepper(steps: int, kind: str = "lstm"):
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    import jaxdl
    from jaxdl.recipes import char_lm

    config = char_lm.CharLMConfig(model=kind, hidden=H, embed=E, width=WIDTH, heads=HEADS, layers=LAYERS, length=T)
    model = char_lm.build_model(config, V)
    optimizer = optax.chain(optax.clip_by_global_norm(1.0), jaxdl.Adam(1e-2 if kind == "lstm" else 3e-3))
    train_state = jaxdl.create_train_state(model, optimizer, 0, (B, T), input_dtype=jnp.int32)
    step = jaxdl.make_train_step(model, char_lm.char_cross_entropy, optimizer, check_labels=False)
    ids = jnp.asarray(np.random.default_rng(0).integers(0, V, (B, T + 1)), jnp.int32)
    x, y = ids[:, :T], ids[:, 1:]
    holder = [train_state]

    def run() -> float:
        start = time.perf_counter()
        state = holder[0]
        for _ in range(steps):
            state, metrics = step(state, x, y)
        jax.block_until_ready(metrics["loss"])
        holder[0] = state
        return time.perf_counter() - start

    return run


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flax-python", required=True, help="an interpreter with flax installed")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20, help="steps per timed call")
    parser.add_argument("--model", choices=["lstm", "transformer"], default="lstm")
    args = parser.parse_args(argv)
    child = subprocess.Popen([args.flax_python, "-c", FLAX_CHILD,
                              *map(str, (B, T, V, E, H, WIDTH, HEADS, LAYERS, args.steps)), args.model],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def flax_round() -> float:
        child.stdin.write("go\n")
        child.stdin.flush()
        return json.loads(child.stdout.readline())

    jaxdl_round = jaxdl_stepper(args.steps, args.model)
    jaxdl_round(), flax_round()                       # compile and warm up
    times = {"jaxdl": [], "flax": []}
    for _ in range(args.rounds):
        times["jaxdl"].append(jaxdl_round())
        times["flax"].append(flax_round())
    child.stdin.close()
    child.wait()
    rates = {name: args.steps / statistics.median(values) for name, values in times.items()}
    sizes = f"E={E}, H={H}" if args.model == "lstm" else f"width={WIDTH}, heads={HEADS}, blocks={LAYERS}"
    print(f"{args.model} LM step (B={B}, T={T}, V={V}, {sizes}), median of {args.rounds} rounds of {args.steps} steps:")
    for name, rate in rates.items():
        print(f"  {name:6s} {rate:7.1f} steps/s")
    print(f"  jaxdl / flax: {rates['jaxdl'] / rates['flax']:.2f}")


if __name__ == "__main__":
    sys.exit(main())
