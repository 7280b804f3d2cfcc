"""A `jaxdl.SequenceBatch` through the composites: `Serial`, `Residual`, `Parallel`, `Tied` and
`MixedPrecision` hand its lengths to the layers that take them (`Layer.takes_lengths`: the
recurrent layers and attention) and the plain arrays to the others, so a model like
``Serial(Embedding, LSTM, FullyConnected)`` trained on padded batches equals each example run
alone at its own length, in values and gradients; any other layer given one is a TypeError
naming it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxdl
from jaxdl.combinators import Tie

V, D, H, T, B = 7, 4, 5, 6, 3
LENGTHS = (6, 3, 1)


def token_ids(seed: int = 1) -> jax.Array:
    return jax.random.randint(jax.random.key(seed), (B, T), 0, V)


def assert_each_example_alone(model, params, state, ids, lengths=LENGTHS, rtol=1e-10, atol=1e-12):
    """The padded batch's valid steps equal each example run alone, unpadded."""
    y, _ = model.apply(params, state, jaxdl.SequenceBatch(ids, jnp.asarray(lengths)))
    for b, length in enumerate(lengths):
        alone, _ = model.apply(params, state, ids[b:b + 1, :length])
        np.testing.assert_allclose(y[b, :length], alone[0], rtol=rtol, atol=atol, err_msg=f"example {b}")
    return y


MODELS = {
    "serial_embedding_lstm": lambda: jaxdl.Serial(jaxdl.Embedding(V, D), jaxdl.LSTM(H), jaxdl.FullyConnected(V)),
    "residual_attention_bidirectional": lambda: jaxdl.Serial(
        jaxdl.Embedding(V, D),
        jaxdl.Residual(jaxdl.Serial(jaxdl.LayerNorm(), jaxdl.MultiHeadAttention(2))),
        jaxdl.Bidirectional(jaxdl.GRU(3))),
    "parallel_branches": lambda: jaxdl.Serial(
        jaxdl.Embedding(V, D), jaxdl.Parallel(jaxdl.RNN(3), jaxdl.Serial(jaxdl.FullyConnected(3), jaxdl.LSTM(3)),
                                               merge="concat")),
    "tied_output": lambda: jaxdl.Tied(
        jaxdl.Serial(("embed", jaxdl.Embedding(V, D)), jaxdl.LSTM(D), ("output", jaxdl.FullyConnected(V))),
        Tie("output/weights", "embed/embedding", transpose=True)),
    "mixed_precision": lambda: jaxdl.MixedPrecision(
        jaxdl.Serial(jaxdl.Embedding(V, D), jaxdl.GRU(H)), compute_dtype=jnp.float32, output_dtype=jnp.float64),
}


@pytest.mark.parametrize("name", list(MODELS))
def test_padded_batch_equals_each_example_alone(name):
    model = MODELS[name]()
    params, state = model.init(jax.random.key(0), (B, T), jnp.float64, input_dtype=jnp.int32)
    tolerance = {"rtol": 1e-5, "atol": 1e-6} if name == "mixed_precision" else {}
    assert_each_example_alone(model, params, state, token_ids(), **tolerance)


def test_padding_values_change_neither_loss_nor_gradient():
    """Gradients of the masked loss through Embedding -> LSTM: whatever the padded ids are."""
    model = MODELS["serial_embedding_lstm"]()
    params, state = model.init(jax.random.key(0), (B, T), jnp.float64, input_dtype=jnp.int32)
    lengths = jnp.asarray(LENGTHS)
    targets = token_ids(2)
    valid = jnp.arange(T)[None] < lengths[:, None]

    def loss(params, ids):
        logits, _ = model.apply(params, state, jaxdl.SequenceBatch(ids, lengths))
        return jaxdl.masked_sequence_cross_entropy(logits, targets, lengths)

    ids = token_ids()
    other = jnp.where(valid, ids, (ids + 3) % V)
    # jitted, closing over concrete lengths (the masked loss once failed there: int() of a tracer)
    value_and_grad = jax.jit(jax.value_and_grad(loss))
    value, grads = value_and_grad(params, ids)
    other_value, other_grads = value_and_grad(params, other)
    np.testing.assert_allclose(value, other_value, rtol=1e-12)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-13), grads, other_grads)

    def alone_loss(params):  # the same loss, summed over examples run one by one at their lengths
        total = 0.0
        for b, length in enumerate(LENGTHS):
            logits, _ = model.apply(params, state, ids[b:b + 1, :length])
            total += jaxdl.softmax_cross_entropy(logits[0], targets[b, :length])
        return total

    expected_value, expected_grads = jax.jit(jax.value_and_grad(alone_loss))(params)
    np.testing.assert_allclose(value, expected_value, rtol=1e-10)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-12), grads, expected_grads)


def test_a_training_step_in_float32_with_padded_token_ids():
    model = MODELS["serial_embedding_lstm"]()
    optimizer = jaxdl.Adam(5e-2)
    train_state = jaxdl.create_train_state(model, optimizer, jax.random.key(0), (B, T), jnp.float32,
                                           input_dtype=jnp.int32)
    loss = lambda logits, labels: jaxdl.masked_sequence_cross_entropy(logits, *labels)  # noqa: E731
    step = jaxdl.make_train_step(model, loss, optimizer)
    lengths = jnp.asarray(LENGTHS)
    batch, labels = jaxdl.SequenceBatch(token_ids(), lengths), (token_ids(2), lengths)
    losses = []
    for _ in range(20):
        train_state, metrics = step(train_state, batch, labels)
        losses.append(float(metrics["loss"]))
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(train_state.params))
    assert np.isfinite(losses).all() and losses[-1] < 0.5 * losses[0]


def test_lengths_stop_where_the_time_axis_ends():
    """After a recurrent layer's last state (batch, H) with H == T, the lengths are not handed on:
    the attention after it sees a plain array even though its leading axes look like (batch, T)."""
    seen = []

    class Probe(jaxdl.Layer):
        takes_lengths = True

        def apply(self, params, state, x, *, key=None, train=False):
            seen.append(type(x).__name__)
            return (x.x if isinstance(x, jaxdl.SequenceBatch) else x), {}

    model = jaxdl.Serial(Probe(), jaxdl.LSTM(T, return_sequences=False), Probe())
    params, state = model.init(jax.random.key(0), (B, T, D), jnp.float64)
    seen.clear()
    model.apply(params, state, jaxdl.SequenceBatch(jnp.ones((B, T, D)), jnp.asarray(LENGTHS)))
    assert seen[0] == "SequenceBatch" and seen[1] != "SequenceBatch" and len(seen) == 2


@pytest.mark.parametrize("layer", [jaxdl.FullyConnected(3), jaxdl.LayerNorm(), jaxdl.Embedding(V, D)],
                         ids=["fully_connected", "layer_norm", "embedding"])
def test_a_layer_that_takes_no_lengths_names_itself(layer):
    x = jnp.ones((B, T, D)) if not isinstance(layer, jaxdl.Embedding) else token_ids()
    params, state = layer.init(jax.random.key(0), x.shape, jnp.float64)
    with pytest.raises(TypeError, match=rf"^{type(layer).__name__}\(.*x must be an array, got a SequenceBatch"):
        layer.apply(params, state, jaxdl.SequenceBatch(x, jnp.asarray(LENGTHS)))
