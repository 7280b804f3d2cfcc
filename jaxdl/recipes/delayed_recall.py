"""Truncated BPTT demo task: delayed recall, trained chunk by chunk with `jaxdl.fit`.

The input is a stream of random symbols (one-hot, ``symbols`` classes) and the target at
step t is the symbol seen ``delay`` steps earlier. Sequences of ``chunks`` x ``chunk`` steps
are fed chunk by chunk, as truncated BPTT does with long sequences: one optimizer step per
chunk, gradients stopping at the chunk boundary, and a `jaxdl.training.Batch` with
``reset=True`` at each sequence's first chunk (the loop zeroes the memorized states there).

* ``memorize=True``: the recurrent layer carries its final state into the next chunk. At
  the first ``delay`` steps of a chunk the symbol to recall came in the previous chunk, and
  the carried state still holds it.
* ``memorize=False``: every chunk starts from zeros, so those steps can only be guessed
  (`reset_ceiling` is the best overall accuracy this allows).

Loss and accuracy skip the first ``delay`` steps of every sequence, whose targets precede
the sequence. Evaluation (`evaluate_recall`) feeds new sequences chunk by chunk through
`jaxdl.make_eval_step`, carrying the state from chunk to chunk as training did.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

import jaxdl
from jaxdl.recipes.cli import SEED_RANGE
from jaxdl.training.data import Batch

CELLS = {"rnn": jaxdl.RNN, "lstm": jaxdl.LSTM, "gru": jaxdl.GRU}


@dataclasses.dataclass(frozen=True)
class RecallConfig:
    """The task, the model and the run (defaults: about a minute for both models on 2 cores).

    Raises:
        ValueError: (when created) for an unknown cell, a size that is not a positive int, a
            learning rate that is not a finite number > 0, a seed outside
            `jaxdl.recipes.cli.SEED_RANGE`, or a delay outside [1, chunk).
    """

    cell: str = "lstm"
    hidden: int = 32
    symbols: int = 4
    delay: int = 6
    chunk: int = 10
    chunks: int = 20
    batch: int = 32
    batches: int = 120
    test_batches: int = 8
    learning_rate: float = 1e-2
    seed: int = 0

    def __post_init__(self):
        if self.cell not in CELLS:
            raise ValueError(f"RecallConfig: cell must be one of {sorted(CELLS)}, got {self.cell!r}.")
        for name in ("hidden", "symbols", "chunk", "chunks", "batch", "batches", "test_batches"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"RecallConfig: {name} must be a positive int, got {value!r}.")
        if not (isinstance(self.learning_rate, (int, float)) and not isinstance(self.learning_rate, bool)
                and math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ValueError(f"RecallConfig: learning_rate must be a finite number > 0, got {self.learning_rate!r}.")
        low, high = SEED_RANGE
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not low <= self.seed <= high:
            raise ValueError(f"RecallConfig: seed must be an int in [{low}, {high}], got {self.seed!r}.")
        if not 0 < self.delay < self.chunk:
            raise ValueError(f"RecallConfig: delay must be in [1, chunk) for truncated BPTT to learn it, "
                             f"got {self.delay}.")


def make_sequences(key, config: RecallConfig):
    """One-hot inputs (batch, length, symbols), targets (batch, length) and loss weights."""
    length = config.chunk * config.chunks
    symbols = jax.random.randint(key, (config.batch, length), 0, config.symbols)
    inputs = jax.nn.one_hot(symbols, config.symbols, dtype=jnp.float32)
    targets = jnp.roll(symbols, config.delay, axis=1)  # targets[:, t] = symbols[:, t - delay]
    weights = (jnp.arange(length) >= config.delay).astype(jnp.float32)
    return inputs, targets, jnp.broadcast_to(weights, (config.batch, length))


def recall_loss(logits, labels):
    """Weighted mean cross-entropy over batch and time; labels = (targets, weights)."""
    targets, weights = labels
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    nll = -jnp.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]
    return jnp.sum(weights * nll) / jnp.sum(weights)


class RecallChunks:
    """The epoch-indexed source `jaxdl.fit` trains on: ``count`` batches of sequences per epoch,
    each yielded chunk by chunk (``reset=True`` on its first chunk).

    Args:
        config: the task.
        count: sequence batches per epoch.
        stream: 0 for training, 1 for evaluation (different random sequences).
    """

    def __init__(self, config: RecallConfig, count: int, stream: int):
        self.config, self.count, self.stream = config, count, stream

    @property
    def steps_per_epoch(self) -> int:
        return self.count * self.config.chunks

    def epoch(self, epoch: int):
        config = self.config
        key = jax.random.fold_in(jax.random.key(config.seed + 1 + self.stream), epoch)
        for batch_key in jax.random.split(key, self.count):
            inputs, targets, weights = make_sequences(batch_key, config)
            for c in range(config.chunks):
                span = slice(c * config.chunk, (c + 1) * config.chunk)
                yield Batch(inputs[:, span], (targets[:, span], weights[:, span]), reset=c == 0)


def build_model(config: RecallConfig, memorize: bool):
    """The recurrent cell (``memorize`` as given) and a FullyConnected readout."""
    return jaxdl.Serial(CELLS[config.cell](config.hidden, memorize=memorize), jaxdl.FullyConnected(config.symbols))


def train_recall(config: RecallConfig, memorize: bool, *, progress: bool = False):
    """Trains one model for one epoch of ``config.batches`` sequence batches; (model, FitResult)."""
    model = build_model(config, memorize)
    optimizer = jaxdl.Adam(config.learning_rate)
    train_state = jaxdl.create_train_state(model, optimizer, config.seed, (config.batch, config.chunk, config.symbols))
    result = jaxdl.fit(jaxdl.make_train_step(model, recall_loss, optimizer), train_state,
                       RecallChunks(config, config.batches, 0), epochs=1,
                       validation_data=RecallChunks(config, config.test_batches, 1), best_metric=None,
                       callbacks=jaxdl.default_callbacks(log=None, progress=progress))
    return model, result


def evaluate_recall(model, train_state, config: RecallConfig) -> dict:
    """Accuracy on new sequences fed chunk by chunk (state carried), overall and split into the
    ``boundary`` steps (the first ``delay`` of each chunk) and the ``inside`` ones."""
    eval_step = jaxdl.make_eval_step(model)
    boundary = (jnp.arange(config.chunk) < config.delay)[None, :]
    counts = {"all": [0.0, 0.0], "boundary": [0.0, 0.0], "inside": [0.0, 0.0]}
    state = train_state.state
    for batch in RecallChunks(config, config.test_batches, 1).epoch(0):
        if batch.reset:
            state = jaxdl.reset_memory(model, state)
        logits, state = eval_step(train_state.params, state, batch.x)
        targets, weights = batch.labels
        correct = (jnp.argmax(logits, axis=-1) == targets).astype(jnp.float32)
        for name, mask in (("all", 1.0), ("boundary", boundary), ("inside", ~boundary)):
            counts[name][0] += float(jnp.sum(correct * weights * mask))
            counts[name][1] += float(jnp.sum(weights * mask))
    return {name: right / total for name, (right, total) in counts.items()}


def reset_ceiling(config: RecallConfig) -> float:
    """The best overall accuracy without memory: perfect inside chunks, chance at boundaries.

    Scored steps are t >= delay; the boundary steps among them are the first ``delay`` steps of
    every chunk but the first.
    """
    scored = config.chunk * config.chunks - config.delay
    boundary = (config.chunks - 1) * config.delay
    return 1 - boundary / scored * (1 - 1 / config.symbols)
