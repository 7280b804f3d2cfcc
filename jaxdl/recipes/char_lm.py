"""Character-level language models on the bundled text (``scripts/train_char_lm.py``).

The corpus (`jaxdl.datasets.text`: *Pride and Prejudice*, 684,768 characters, 75 distinct)
is cut into train / validation / test parts (90 / 5 / 5 %, contiguous), and every part into
``batch`` parallel streams read in consecutive windows of ``length`` characters
(`jaxdl.datasets.text.StreamBatches`); the model predicts each next character.

* ``lstm``: ``Embedding(V, embed)``, ``LSTM(hidden, memorize=True)`` and a
  ``FullyConnected(V)`` readout, trained with truncated BPTT: the LSTM carries its final state
  from one window into the next (the stream's continuation), gradients stop at window
  boundaries, and `jaxdl.fit` zeroes the memorized state at each epoch's first batch
  (``reset=True``).
* ``transformer``: a small causal Transformer (GPT-style, pre-norm): ``Embedding(V, width)``
  and ``PositionalEmbedding(length)``, then ``layers`` blocks of
  ``Residual(LayerNorm, MultiHeadAttention(heads, causal=True))`` and
  ``Residual(LayerNorm, FullyConnected(4 width), GELU, FullyConnected(width))``, a final
  ``LayerNorm`` and a ``FullyConnected(V)`` readout. Every window is one sequence: position t
  sees the window's characters 0..t (nothing carries over between windows).

The loss is `char_cross_entropy`: the mean cross-entropy per character in nats. Validation
reports it as bits per character (``validation_bits_per_char`` = nats / ln 2; the uniform
baseline is log2(V) = 6.23 bits); evaluation carries the LSTM's state through each
validation stream as training did (`jaxdl.evaluate`). Samples are drawn one character at a
time (`sample`), after every ``sample_every`` epochs: the LSTM from a carried state (the
per-step API `jaxdl.layers.recurrent.stepping`), the Transformer from its last ``length``
characters.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxdl
from jaxdl.datasets.text import CharVocabulary, StreamBatches, TextSplits, bits_per_char, load_text, split_text
from jaxdl.layers.recurrent.stepping import initial_carry, step as recurrent_step
from jaxdl.losses import softmax_cross_entropy
from jaxdl.recipes.cli import SEED_RANGE
from jaxdl.validation import in_interval, positive_finite, positive_int

#: The models this recipe builds.
MODELS = ("lstm", "transformer")

#: The settings chosen on the validation split for each model (benchmarks/RESULTS_models.md);
#: `CharLMConfig.for_model` starts from them.
MODEL_DEFAULTS = {
    "lstm": {"learning_rate": 1e-2, "epochs": 6},
    "transformer": {"learning_rate": 3e-3, "epochs": 3},
}


@dataclasses.dataclass(frozen=True)
class CharLMConfig:
    """One run: the model, the data slicing and the optimization.

    Attributes:
        model: one of `MODELS`.
        hidden: the LSTM's hidden size.
        embed: the LSTM's character embedding size.
        width: the Transformer's feature size (its MLP has 4 * width).
        layers: the Transformer's blocks.
        heads: the Transformer's attention heads (they divide ``width``).
        batch: B, parallel streams per training batch.
        length: T, characters per window (truncated-BPTT length).
        eval_batch: parallel streams of the validation and test parts.
        epochs: passes over the training part.
        max_batches: None for whole epochs, or at most this many batches per epoch.
        learning_rate: Adam's learning rate.
        clip: gradients are clipped to this global norm (optax.clip_by_global_norm).
        seed: initialization and sampling seed, in `jaxdl.recipes.cli.SEED_RANGE`.
        max_chars: None for the whole corpus, or only its first ``max_chars`` characters.
        validation, test: the fractions of the text for validation and test.
        sample_every: print a sample after every this many epochs (0: never).
        sample_length: characters per sample.
        temperature: the sampling temperature (logits divided by it).
        corpus: None for the bundled corpus, or a UTF-8 text file.

    Raises:
        TypeError, ValueError: (when created) for a value of a wrong type or out of range,
            naming the field.
    """

    model: str = "lstm"
    hidden: int = 256
    embed: int = 64
    width: int = 64
    layers: int = 2
    heads: int = 4
    batch: int = 32
    length: int = 64
    eval_batch: int = 8
    epochs: int = 6
    max_batches: int | None = None
    learning_rate: float = 1e-2
    clip: float = 1.0
    seed: int = 0
    max_chars: int | None = None
    validation: float = 0.05
    test: float = 0.05
    sample_every: int = 1
    sample_length: int = 200
    temperature: float = 0.8
    corpus: str | None = None

    def __post_init__(self):
        owner = "CharLMConfig"
        if self.model not in MODELS:
            raise ValueError(f"{owner}: model must be one of {list(MODELS)}, got {self.model!r}.")
        for name in ("hidden", "embed", "width", "layers", "heads", "batch", "length", "eval_batch", "epochs",
                     "sample_length"):
            positive_int(owner, name, getattr(self, name))
        for name in ("max_batches", "max_chars"):
            if getattr(self, name) is not None:
                positive_int(owner, name, getattr(self, name))
        positive_finite(owner, "learning_rate", self.learning_rate)
        positive_finite(owner, "clip", self.clip)
        positive_finite(owner, "temperature", self.temperature)
        in_interval(owner, "validation", self.validation, 0.0, 1.0)
        in_interval(owner, "test", self.test, 0.0, 1.0)
        if isinstance(self.sample_every, bool) or not isinstance(self.sample_every, int) or self.sample_every < 0:
            raise ValueError(f"{owner}: sample_every must be an int >= 0 (0: no samples), got {self.sample_every!r}.")
        low, high = SEED_RANGE
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not low <= self.seed <= high:
            raise ValueError(f"{owner}: seed must be an int in [{low}, {high}], got {self.seed!r}.")
        if self.model == "transformer" and self.width % self.heads:
            raise ValueError(f"{owner}: heads must divide width, got width {self.width} and heads {self.heads}.")

    @classmethod
    def for_model(cls, model: str = "lstm", **fields) -> "CharLMConfig":
        """The config of ``model`` with its `MODEL_DEFAULTS`, then ``fields`` (None values skipped).

        Raises:
            ValueError: for an unknown model, and as the config itself.
        """
        if model not in MODEL_DEFAULTS:
            raise ValueError(f"CharLMConfig.for_model: model must be one of {list(MODELS)}, got {model!r}.")
        chosen = {**MODEL_DEFAULTS[model], **{name: value for name, value in fields.items() if value is not None}}
        return cls(model=model, **chosen)


class CharData(NamedTuple):
    """The encoded corpus: its vocabulary and parts."""

    vocabulary: CharVocabulary
    splits: TextSplits


def load_char_data(config: CharLMConfig) -> CharData:
    """Loads (checking its SHA256), slices, encodes and splits the corpus.

    The vocabulary is the whole (sliced) text's, so validation and test have no unknown
    characters.

    Raises:
        FileNotFoundError, ValueError: from `jaxdl.datasets.text.load_text` (the checksum
            error names the file).
    """
    text = load_text(config.corpus)
    if config.max_chars is not None:
        text = text[:config.max_chars]
    vocabulary = CharVocabulary.from_text(text)
    return CharData(vocabulary, split_text(vocabulary.encode(text), config.validation, config.test))


def char_cross_entropy(logits, targets) -> jax.Array:
    """The mean cross-entropy per character (nats) of (batch, time, V) logits and (batch, time) ids."""
    return softmax_cross_entropy(logits, targets, reduction="mean")


def char_bits(logits, targets) -> jax.Array:
    """Bits per character of each example (row): its mean cross-entropy / ln 2, shape (batch,)."""
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    nats = -jnp.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]
    return jnp.mean(nats, axis=-1) / math.log(2)


def lstm_model(config: CharLMConfig, vocabulary_size: int) -> jaxdl.Serial:
    """Embedding, a memorized LSTM and a linear readout to the characters' logits."""
    return jaxdl.Serial(jaxdl.Embedding(vocabulary_size, config.embed), jaxdl.LSTM(config.hidden, memorize=True),
                        jaxdl.FullyConnected(vocabulary_size))


def transformer_block(width: int, heads: int) -> jaxdl.Serial:
    """One pre-norm block: causal self-attention and a GELU MLP, each on a residual branch."""
    attention = jaxdl.Serial(jaxdl.LayerNorm(), jaxdl.MultiHeadAttention(heads, causal=True))
    mlp = jaxdl.Serial(jaxdl.LayerNorm(), jaxdl.FullyConnected(4 * width), jaxdl.GELU(), jaxdl.FullyConnected(width))
    return jaxdl.Serial(("attention", jaxdl.Residual(attention)), ("mlp", jaxdl.Residual(mlp)))


def transformer_model(config: CharLMConfig, vocabulary_size: int) -> jaxdl.Serial:
    """Token and position embeddings, `transformer_block` x layers, LayerNorm, linear readout."""
    blocks = [(f"block_{i}", transformer_block(config.width, config.heads)) for i in range(config.layers)]
    return jaxdl.Serial(jaxdl.Embedding(vocabulary_size, config.width), jaxdl.PositionalEmbedding(config.length),
                        *blocks, jaxdl.LayerNorm(), jaxdl.FullyConnected(vocabulary_size))


def build_model(config: CharLMConfig, vocabulary_size: int) -> jaxdl.Serial:
    """The `CharLMConfig.model` for a vocabulary of ``vocabulary_size`` characters (int32 ids in)."""
    return (lstm_model if config.model == "lstm" else transformer_model)(config, vocabulary_size)


def sample(model, params, state, vocabulary: CharVocabulary, config: CharLMConfig, key, prompt: str = "\n",
           step_fn: Callable | None = None) -> str:
    """Draws `CharLMConfig.sample_length` characters after ``prompt``, one at a time.

    Each character is drawn from softmax(logits / temperature) of the model's prediction
    after all characters so far. The LSTM runs one time step at a time on a batch of one from
    a carried state (`jaxdl.layers.recurrent.stepping`: ``initial_carry``, then ``step`` for
    each prompt character and each drawn one). The Transformer reads the last
    `CharLMConfig.length` characters (its context), right-padded to that length (causal
    attention: the padding does not change the positions before it), and takes the logits at
    the last real one.

    Args:
        model, params, state: the trained model (a memorized state is not used: the carry is).
        vocabulary: the corpus' characters.
        config: the run (model, length, sample_length, temperature).
        key: a `jax.random` key.
        prompt: the text to continue (characters of the vocabulary).
        step_fn: `sampling_step(model, config)` to reuse (compiled once).

    Returns:
        The drawn characters (without the prompt).

    Raises:
        ValueError: for a prompt with a character not in the vocabulary, or an empty one.
    """
    if not isinstance(prompt, str) or not prompt:
        raise ValueError(f"sample: prompt must be a non-empty string (the text to continue), got {prompt!r}.")
    ids = [int(i) for i in vocabulary.encode(prompt)]
    step_fn = step_fn or sampling_step(model, config)
    keys = jax.random.split(key, config.sample_length)
    if config.model == "lstm":
        carry = initial_carry(model, params, 1)
        for char in ids:
            logits, carry = step_fn(params, state, carry, np.array([char], np.int32))
        for step_key in keys:
            ids.append(int(jax.random.categorical(step_key, logits[0] / config.temperature)))
            logits, carry = step_fn(params, state, carry, np.array([ids[-1]], np.int32))
    else:
        for step_key in keys:
            context = ids[-config.length:]
            window = np.zeros((1, config.length), np.int32)
            window[0, :len(context)] = context
            logits = step_fn(params, state, window)[0, len(context) - 1]
            ids.append(int(jax.random.categorical(step_key, logits / config.temperature)))
    return vocabulary.decode(ids[len(prompt):])


def sampling_step(model, config: CharLMConfig) -> Callable:
    """The jit-compiled function `sample` calls: for the LSTM ``step(params, state, carry,
    ids_t) -> (logits_t, carry)``; for the Transformer ``predict(params, state, window) ->
    logits``."""
    if config.model == "lstm":
        return jax.jit(functools.partial(recurrent_step, model))
    return jaxdl.make_predict(model)


class Sampler(jaxdl.Callback):
    """Prints a sample after every ``config.sample_every`` epochs (a `jaxdl.fit` callback)."""

    columns = ()

    def __init__(self, model, vocabulary: CharVocabulary, config: CharLMConfig, log: Callable[[str], None]):
        self.model, self.vocabulary, self.config, self.log = model, vocabulary, config, log
        self.step_fn = sampling_step(model, config)
        self.samples: list[str] = []

    def on_epoch_end(self, row: dict, train_state) -> None:
        if self.config.sample_every and row["epoch"] % self.config.sample_every == 0:
            key = jax.random.fold_in(jax.random.key(self.config.seed), row["epoch"])
            prompt = "\n" if "\n" in self.vocabulary.chars else self.vocabulary.chars[0]
            text = sample(self.model, train_state.params, train_state.state, self.vocabulary, self.config, key,
                          prompt, step_fn=self.step_fn)
            self.samples.append(text)
            self.log(f"sample after epoch {row['epoch']}:\n{text}\n" + "-" * 40)


@dataclasses.dataclass
class CharLMResult:
    """What `train_char_lm` returns.

    Attributes:
        model: the trained model.
        fit_result: `jaxdl.fit`'s result (history: ``validation_bits_per_char`` per epoch).
        vocabulary: the corpus' characters.
        validation_bits: the last epoch's validation bits per character.
        test_bits: the test part's bits per character (None unless asked).
        steps: optimizer steps taken.
        seconds: wall time of the training (compilation included).
        samples: the samples printed during training.
    """

    model: jaxdl.Serial
    fit_result: object
    vocabulary: CharVocabulary
    validation_bits: float
    test_bits: float | None
    steps: int
    seconds: float
    samples: list

    @property
    def steps_per_second(self) -> float:
        return self.steps / self.seconds


def train_char_lm(config: CharLMConfig, *, test: bool = False, output_dir=None, overwrite: bool = False,
                  log: Callable[[str], None] | None = print, progress: bool = False) -> CharLMResult:
    """Trains `CharLMConfig.model` on the corpus with `jaxdl.fit`.

    Args:
        config: the run.
        test: also evaluate the test part once at the end (report it only for the
            configuration chosen on validation).
        output_dir: where `jaxdl.fit` writes checkpoints and metrics (None: nothing written).
        overwrite: as for `jaxdl.Run`.
        log: where the epoch lines and samples go (None: silent).
        progress: show a progress bar.

    Returns:
        `CharLMResult`.

    Raises:
        ValueError: for a corpus too short for the batch and window sizes (naming both), and
            as `load_char_data`.
    """
    data = load_char_data(config)
    size = data.vocabulary.size
    train = StreamBatches(data.splits.train, config.batch, config.length, config.max_batches)
    validation = StreamBatches(data.splits.validation, config.eval_batch, config.length)
    model = build_model(config, size)
    optimizer = optax.chain(optax.clip_by_global_norm(config.clip), jaxdl.Adam(config.learning_rate))
    train_state = jaxdl.create_train_state(model, optimizer, config.seed, (config.batch, config.length),
                                           input_dtype=jnp.int32)
    sampler = Sampler(model, data.vocabulary, config, log or (lambda line: None))
    start = time.perf_counter()
    run = None if output_dir is None else jaxdl.Run(
        output_dir, overwrite=overwrite, metadata={"char_lm": dataclasses.asdict(config), "chars": data.vocabulary.chars})
    eval_step = jaxdl.make_eval_step(model)  # validation's and the test's
    fit_result = jaxdl.fit(jaxdl.make_train_step(model, char_cross_entropy, optimizer), train_state, train,
                           epochs=config.epochs, eval_step=eval_step, validation_data=validation,
                           metrics={"bits_per_char": char_bits}, best_metric="validation_bits_per_char", best_mode="min",
                           run=run, callbacks=[sampler, *jaxdl.default_callbacks(run, log=log, progress=progress)])
    seconds = time.perf_counter() - start
    test_bits = None
    if test:
        final = fit_result.train_state
        report = jaxdl.evaluate(eval_step, final.params, final.state,
                                StreamBatches(data.splits.test, config.eval_batch, config.length).epoch(0),
                                char_cross_entropy, metrics={"bits_per_char": char_bits})
        test_bits = float(report["bits_per_char"])
    history = fit_result.history
    return CharLMResult(model, fit_result, data.vocabulary, float(history[-1]["validation_bits_per_char"]),
                        test_bits, int(history[-1]["step"]), seconds, sampler.samples)


def uniform_bits(vocabulary: CharVocabulary) -> float:
    """log2(V): the bits per character of a uniform guess."""
    return math.log2(vocabulary.size)


__all__ = ["MODELS", "MODEL_DEFAULTS", "CharLMConfig", "CharLMResult", "CharData", "bits_per_char", "build_model",
           "char_bits", "char_cross_entropy", "load_char_data", "lstm_model", "sample", "sampling_step",
           "train_char_lm", "transformer_block", "transformer_model", "uniform_bits"]
