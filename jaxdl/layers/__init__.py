"""The layers: each module holds one idea."""

from jaxdl.layers.activations import ReLU, Sigmoid, SoftMax, TanH
from jaxdl.layers.conv import Conv
from jaxdl.layers.dense import FullyConnected
from jaxdl.layers.dropout import Dropout
from jaxdl.layers.normalization import BatchNormalization
from jaxdl.layers.pooling import Pooling
from jaxdl.layers.recurrent import GRU, LSTM, RNN, Recurrent, elman_rnn, lstm_network, reset_memory
from jaxdl.layers.reshape import Flatten

__all__ = [
    "BatchNormalization", "Conv", "Dropout", "Flatten", "FullyConnected", "Pooling", "ReLU",
    "Sigmoid", "SoftMax", "TanH",
    "GRU", "LSTM", "RNN", "Recurrent", "elman_rnn", "lstm_network", "reset_memory",
]
