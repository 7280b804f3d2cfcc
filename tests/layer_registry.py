"""ONE registry of every layer with sample configurations.

Each entry of `LAYER_CASES` is ``(id, layer, input_shape)``. The generic property tests in
test_layer_properties.py run over all of them, in float64 and in float32: gradients (float64
against finite differences, float32 against the float64 gradient at the same point), jit
equals eager, init/apply shape agreement with `output_shape`, state structure and dtypes, no
promotion to float64 in a float32 apply or gradient, determinism for a fixed key, vmap.
test_float32.py runs every entry again in a subprocess with ``jax_enable_x64`` off.
A new layer joins by appending an entry here.

`TRAINING_CASES` are models trained one step by `jaxdl.make_train_step` in float32 and float64
(test_float32.py): ``(id, model, input_shape, loss_fn, optimizer, labels)`` with ``labels``
"classes" (integer class labels of the output's shape without its last axis) or "targets"
(uniform floats of the output's shape).
"""

import dataclasses
from typing import ClassVar

import jax.numpy as jnp

import jaxdl

LAYER_CASES = [
    ("fully_connected", jaxdl.FullyConnected(3), (4, 5)),
    ("fully_connected_sequence", jaxdl.FullyConnected(3), (2, 3, 5)),
    ("conv2d_same", jaxdl.Conv(3, (3, 3)), (2, 2, 5, 6)),
    ("conv2d_strided", jaxdl.Conv(2, (3, 2), stride=(2, 3)), (2, 2, 7, 8)),
    ("conv2d_valid", jaxdl.Conv(2, (3, 3), padding="valid"), (2, 2, 5, 6)),
    ("conv2d_even_kernel", jaxdl.Conv(2, (4, 2)), (2, 1, 6, 5)),
    ("conv2d_1x1", jaxdl.Conv(4, (1, 1)), (2, 3, 4, 4)),
    # In float32, 16-31 kernels on 2-29 channels take Conv's CPU path with the kernels padded to 32.
    ("conv2d_padded_kernels", jaxdl.Conv(16, (3, 3)), (2, 3, 4, 5)),
    ("conv1d_same", jaxdl.Conv(3, (3,), stride=2), (2, 2, 9)),
    ("conv1d_valid", jaxdl.Conv(2, (4,), padding="valid"), (2, 3, 9)),
    ("pooling", jaxdl.Pooling(2), (2, 2, 4, 6)),
    ("pooling_overlapping", jaxdl.Pooling((2, 2), stride=(2, 1)), (2, 2, 4, 7)),
    ("pooling_subsampling", jaxdl.Pooling((2, 2), stride=(3, 2)), (2, 2, 4, 7)),
    ("flatten", jaxdl.Flatten(), (3, 2, 3, 4)),
    ("relu", jaxdl.ReLU(), (4, 5)),
    ("tanh", jaxdl.TanH(), (4, 5)),
    ("sigmoid", jaxdl.Sigmoid(), (4, 5)),
    ("softmax", jaxdl.SoftMax(), (4, 5)),
    ("dropout", jaxdl.Dropout(0.3), (4, 5)),
    ("batch_norm_vector", jaxdl.BatchNormalization(), (6, 4)),
    ("batch_norm_sequence", jaxdl.BatchNormalization(), (4, 3, 5)),
    ("batch_norm_image", jaxdl.BatchNormalization(), (3, 2, 3, 4)),
    ("serial", jaxdl.Serial(jaxdl.Conv(2, (3, 3)), jaxdl.ReLU(), jaxdl.Pooling(2), jaxdl.Flatten(),
                            jaxdl.FullyConnected(3), jaxdl.SoftMax()), (2, 1, 6, 6)),
    ("serial_regularized", jaxdl.Serial(jaxdl.FullyConnected(4), jaxdl.BatchNormalization(),
                                        jaxdl.TanH(), jaxdl.Dropout(0.5), jaxdl.FullyConnected(2),
                                        jaxdl.Sigmoid()), (5, 3)),
    ("rnn", jaxdl.RNN(4), (2, 3, 5)),
    ("rnn_exercise_layout", jaxdl.RNN(3, implementation="scan"), (4, 5)),
    ("lstm_memorize", jaxdl.LSTM(3, memorize=True), (2, 3, 4)),
    ("gru_last_reverse", jaxdl.GRU(3, return_sequences=False, reverse=True), (2, 3, 4)),
]

# The combinators (jaxdl.combinators): a residual block, parallel branches, tied weights.
LAYER_CASES += [
    ("residual", jaxdl.Residual(jaxdl.Serial(jaxdl.FullyConnected(5), jaxdl.TanH(), jaxdl.FullyConnected(5))), (3, 5)),
    ("residual_projection_batch_norm", jaxdl.Residual(
        jaxdl.Serial(jaxdl.Conv(3, (3, 3)), jaxdl.BatchNormalization(), jaxdl.TanH()),
        projection=jaxdl.Conv(3, (1, 1))), (2, 2, 4, 4)),
    ("parallel_sum", jaxdl.Parallel(jaxdl.FullyConnected(3), jaxdl.Serial(jaxdl.FullyConnected(3), jaxdl.Sigmoid())),
     (4, 5)),
    ("parallel_concat_dropout", jaxdl.Parallel(
        ("wide", jaxdl.FullyConnected(2)), ("dropped", jaxdl.Serial(jaxdl.Dropout(0.3), jaxdl.FullyConnected(3))),
        merge="concat"), (4, 5)),
    ("shared_tied_output_projection", jaxdl.Tied(
        jaxdl.Serial(jaxdl.FullyConnected(3), jaxdl.TanH(), ("output", jaxdl.FullyConnected(5))),
        jaxdl.Tie("output/weights", "fully_connected_0/weights", transpose=True)), (4, 5)),
]


_CASES = {name: (layer, shape) for name, layer, shape in LAYER_CASES}


def squared_error(outputs, targets):
    """sum((outputs - targets)^2): a loss for sequence outputs (batch, time, features)."""
    return jnp.sum(jnp.square(outputs - targets))


TRAINING_CASES = [
    ("serial", *_CASES["serial"], jaxdl.cross_entropy, jaxdl.SgdWithMomentum(0.1, 0.9), "classes"),
    ("serial_regularized", *_CASES["serial_regularized"], jaxdl.cross_entropy,
     jaxdl.SgdWithMomentum(0.1, 0.9, regularizer=jaxdl.L2Regularizer(1e-2)), "classes"),
    ("serial_adam", *_CASES["serial"], jaxdl.cross_entropy,
     jaxdl.Adam(1e-3, regularizer=jaxdl.L1Regularizer(1e-3)), "classes"),
    ("lstm_network_memorize", jaxdl.lstm_network(4, 2, memorize=True), (3, 5, 3), squared_error,
     jaxdl.Sgd(0.1, regularizer=jaxdl.L2Regularizer(1e-2)), "targets"),
]


# ------------------------------------------------ issue 22: the layers researchers reach for
@dataclasses.dataclass(frozen=True)
class FromTokenIds(jaxdl.Layer):
    """Test adapter: `jaxdl.Embedding` behind the registry's float inputs.

    The generic properties draw float inputs; an Embedding takes integer ids. This runs
    ``layer`` on ``floor(4 |x|) mod vocabulary_size`` (piecewise constant in x, so the input's
    gradient is 0 and finite differences of x, steps of 1e-6, see the same ids) and returns
    the vectors in x's dtype, so every property checks the table's gradients, jit, vmap, jvp,
    HVP, float32 and bfloat16. tests/test_research_layers.py tests Embedding on integer ids.
    """

    layer: jaxdl.Embedding

    regularized: ClassVar[tuple[str, ...]] = jaxdl.Embedding.regularized

    def init(self, key, input_shape, dtype=jnp.float32):
        return self.layer.init(key, input_shape, dtype)

    def apply(self, params, state, x, *, key=None, train=False):
        ids = jnp.floor(4 * jnp.abs(x)).astype(jnp.int32) % self.layer.vocabulary_size
        y, state = self.layer.apply(params, state, ids, key=key, train=train)
        return y.astype(x.dtype), state


LAYER_CASES += [
    ("embedding", FromTokenIds(jaxdl.Embedding(7, 3)), (2, 4)),
    ("positional_embedding", jaxdl.PositionalEmbedding(6), (2, 4, 3)),
    ("layer_norm", jaxdl.LayerNorm(), (2, 3, 5)),
    ("rms_norm", jaxdl.RMSNorm(), (3, 5)),
    ("multi_head_attention", jaxdl.MultiHeadAttention(2), (2, 4, 6)),
    ("average_pooling_overlapping", jaxdl.AveragePooling(2, stride=(1, 2)), (2, 2, 3, 6)),
    ("global_average_pooling", jaxdl.GlobalAveragePooling(), (2, 3, 4, 5)),
    ("global_max_pooling", jaxdl.GlobalMaxPooling(), (2, 3, 5)),
    ("gelu", jaxdl.GELU(), (4, 5)),
    ("silu", jaxdl.SiLU(), (4, 5)),
    ("reshape", jaxdl.Reshape((-1, 2)), (2, 3, 4)),
    # Causal attention with head_features, two axes normalized, tanh GELU, inside a Serial.
    ("transformer_block", jaxdl.Serial(
        FromTokenIds(jaxdl.Embedding(11, 4)), jaxdl.PositionalEmbedding(8), jaxdl.LayerNorm(axis=(1, 2)),
        jaxdl.MultiHeadAttention(3, head_features=2, causal=True), jaxdl.FullyConnected(6),
        jaxdl.GELU(approximate=True), jaxdl.FullyConnected(5)), (2, 5)),
]

# Stacked and bidirectional recurrent layers (issue 22): per-layer memorize, both output layouts,
# PyTorch's num_layers=2 bidirectional stack.
LAYER_CASES += [
    ("stacked_lstm_gru_memorize", jaxdl.Stacked(jaxdl.LSTM(3, memorize=True), jaxdl.GRU(2, memorize=True)), (2, 3, 4)),
    ("bidirectional_lstm", jaxdl.Bidirectional(jaxdl.LSTM(2)), (2, 3, 4)),
    ("stacked_bidirectional_gru_last", jaxdl.Stacked(jaxdl.Bidirectional(jaxdl.GRU(2)),
                                                     jaxdl.Bidirectional(jaxdl.RNN(2, return_sequences=False))),
     (2, 3, 4)),
]
