"""Truncated backpropagation through time: memorize across chunks vs reset every chunk.

The task is delayed recall: the input is a stream of random symbols (one-hot, ``--symbols``
classes) and the target at step t is the symbol seen ``--delay`` steps earlier. Sequences of
``--chunks`` x ``--chunk`` steps are fed chunk by chunk, as truncated BPTT does with long
sequences: one optimizer step per chunk, gradients stopping at the chunk boundary.

* ``memorize=True``: the recurrent layer carries its final state into the next chunk (and
  `jaxdl.reset_memory` starts each new batch of sequences from zeros). At the first
  ``delay`` steps of a chunk the symbol to recall came in the previous chunk, and the carried
  state still holds it.
* ``memorize=False``: every chunk starts from zeros, so those steps can only be guessed
  (`reset_ceiling` is the best overall accuracy this allows).

The delay must be shorter than the chunk: the network learns to hold a symbol for ``delay``
steps from the gradient inside a chunk (truncated BPTT has no gradient across chunks), and
memorize then lets that memory work across the boundary. Loss and accuracy skip the first
``delay`` steps of every sequence, whose targets precede the sequence.

Usage:
    python scripts/train_sequence.py                  # about a minute on two CPU cores
    python scripts/train_sequence.py --cell gru --delay 4 --chunk 8
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
from tqdm.auto import tqdm

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import jaxdl  # noqa: E402

CELLS = {"rnn": jaxdl.RNN, "lstm": jaxdl.LSTM, "gru": jaxdl.GRU}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cell", choices=sorted(CELLS), default="lstm")
    parser.add_argument("--hidden", type=int, default=32, help="hidden size")
    parser.add_argument("--symbols", type=int, default=4, help="alphabet size")
    parser.add_argument("--delay", type=int, default=6, help="recall the symbol this many steps back")
    parser.add_argument("--chunk", type=int, default=10, help="time steps per chunk (per optimizer step)")
    parser.add_argument("--chunks", type=int, default=20, help="chunks per sequence")
    parser.add_argument("--batch", type=int, default=32, help="sequences per batch")
    parser.add_argument("--batches", type=int, default=120, help="training batches of sequences")
    parser.add_argument("--test-batches", type=int, default=8)
    parser.add_argument("--learning-rate", type=float, default=1e-2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if not 0 < args.delay < args.chunk:
        parser.error(f"--delay must be in [1, --chunk) for truncated BPTT to learn it, got {args.delay}.")
    return args


def make_batch(key, args):
    """One-hot inputs (batch, length, symbols), targets (batch, length) and loss weights."""
    length = args.chunk * args.chunks
    symbols = jax.random.randint(key, (args.batch, length), 0, args.symbols)
    inputs = jax.nn.one_hot(symbols, args.symbols, dtype=jnp.float32)
    targets = jnp.roll(symbols, args.delay, axis=1)  # targets[:, t] = symbols[:, t - delay]
    weights = (jnp.arange(length) >= args.delay).astype(jnp.float32)
    return inputs, targets, jnp.broadcast_to(weights, (args.batch, length))


def recall_loss(logits, labels):
    """Weighted mean cross-entropy over batch and time; labels = (targets, weights)."""
    targets, weights = labels
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    nll = -jnp.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]
    return jnp.sum(weights * nll) / jnp.sum(weights)


def chunks(args):
    return [slice(c * args.chunk, (c + 1) * args.chunk) for c in range(args.chunks)]


def train(memorize: bool, args):
    """Trains one model; returns it and its train state."""
    model = jaxdl.Serial(CELLS[args.cell](args.hidden, memorize=memorize), jaxdl.FullyConnected(args.symbols))
    optimizer = jaxdl.Adam(args.learning_rate)
    key = jax.random.key(args.seed)
    train_state = jaxdl.create_train_state(model, optimizer, key, (args.batch, args.chunk, args.symbols))
    step = jaxdl.make_train_step(model, recall_loss, optimizer)
    data_key = jax.random.key(args.seed + 1)
    bar = tqdm(total=args.batches, desc=f"memorize={memorize}", unit="batch", disable=args.no_progress)
    for batch_key in jax.random.split(data_key, args.batches):
        inputs, targets, weights = make_batch(batch_key, args)
        train_state = train_state._replace(state=jaxdl.reset_memory(train_state.state))  # new sequences
        for span in chunks(args):
            train_state, metrics = step(train_state, inputs[:, span], (targets[:, span], weights[:, span]))
        bar.update(1)
        bar.set_postfix(loss=f"{float(metrics['data_loss']):.3f}")
    bar.close()
    return model, train_state


def evaluate(model, train_state, args) -> dict:
    """Accuracy on new sequences, fed chunk by chunk as in training (state carried if memorized)."""
    apply = jax.jit(lambda params, state, x: model.apply(params, state, x))
    boundary = (jnp.arange(args.chunk) < args.delay)[None, :]  # steps whose symbol is in the previous chunk
    counts = {"all": [0.0, 0.0], "boundary": [0.0, 0.0], "inside": [0.0, 0.0]}
    test_key = jax.random.key(args.seed + 2)
    for batch_key in jax.random.split(test_key, args.test_batches):
        inputs, targets, weights = make_batch(batch_key, args)
        state = jaxdl.reset_memory(train_state.state)
        for span in chunks(args):
            logits, state = apply(train_state.params, state, inputs[:, span])
            correct = (jnp.argmax(logits, axis=-1) == targets[:, span]).astype(jnp.float32)
            w = weights[:, span]
            for name, mask in (("all", 1.0), ("boundary", boundary), ("inside", ~boundary)):
                counts[name][0] += float(jnp.sum(correct * w * mask))
                counts[name][1] += float(jnp.sum(w * mask))
    return {name: right / total for name, (right, total) in counts.items()}


def main(argv=None):
    args = parse_args(argv)
    print(f"Delayed recall: {args.symbols} symbols, delay {args.delay}, chunks of {args.chunk} steps, "
          f"{args.chunks} chunks per sequence, {args.cell.upper()}({args.hidden}).")
    results = {}
    for memorize in (True, False):
        start = time.perf_counter()
        model, train_state = train(memorize, args)
        results[memorize] = evaluate(model, train_state, args)
        results[memorize]["seconds"] = time.perf_counter() - start

    print(f"\n{'':22s}{'accuracy':>10s}{'boundary':>10s}{'inside':>10s}{'time':>8s}")
    for memorize, label in ((True, "memorize across chunks"), (False, "reset every chunk")):
        r = results[memorize]
        print(f"{label:22s}{r['all']:10.3f}{r['boundary']:10.3f}{r['inside']:10.3f}{r['seconds']:7.0f}s")
    print(f"('boundary': the first {args.delay} steps of each chunk; chance {1 / args.symbols:.3f}; "
          f"the best a reset model can do overall is {reset_ceiling(args):.3f})")
    return results


def reset_ceiling(args) -> float:
    """The best overall accuracy without memory: perfect inside chunks, chance at boundaries.

    Scored steps are t >= delay; the boundary steps among them are the first ``delay`` steps of
    every chunk but the first.
    """
    scored = args.chunk * args.chunks - args.delay
    boundary = (args.chunks - 1) * args.delay
    return 1 - boundary / scored * (1 - 1 / args.symbols)


if __name__ == "__main__":
    main()
