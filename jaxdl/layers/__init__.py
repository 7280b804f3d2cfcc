"""The layers: each module holds one idea."""

from jaxdl.layers.activations import GELU, ReLU, Sigmoid, SiLU, SoftMax, TanH
from jaxdl.layers.attention import MultiHeadAttention
from jaxdl.layers.average_pooling import AveragePooling, GlobalAveragePooling, GlobalMaxPooling
from jaxdl.layers.conv import Conv
from jaxdl.layers.dense import FullyConnected
from jaxdl.layers.dropout import Dropout
from jaxdl.layers.embedding import Embedding, PositionalEmbedding
from jaxdl.layers.layer_norm import LayerNorm, RMSNorm
from jaxdl.layers.normalization import BatchNormalization
from jaxdl.layers.pooling import Pooling
from jaxdl.layers.recurrent import GRU, LSTM, RNN, Recurrent, elman_rnn, lstm_network, reset_memory
from jaxdl.layers.recurrent import Bidirectional, SequenceBatch, Stacked
from jaxdl.layers.reshape import Flatten, Reshape

__all__ = [
    "BatchNormalization", "Conv", "Dropout", "Flatten", "FullyConnected", "Pooling", "ReLU",
    "Sigmoid", "SoftMax", "TanH",
    "GRU", "LSTM", "RNN", "Recurrent", "elman_rnn", "lstm_network", "reset_memory",
    "AveragePooling", "Embedding", "GELU", "GlobalAveragePooling", "GlobalMaxPooling", "LayerNorm",
    "MultiHeadAttention", "PositionalEmbedding", "RMSNorm", "Reshape", "SiLU",
    "Bidirectional", "SequenceBatch", "Stacked",
]
