"""Recurrent layers on `lax.scan`: RNN (Elman), LSTM, GRU, memorized state (truncated BPTT).

* `layers`: the layers `RNN`, `LSTM`, `GRU` (shared contract `Recurrent`) and the exercise's
  networks `elman_rnn`, `lstm_network`.
* `cells`: each cell's step, forward and (hand-written) reverse.
* `sequence`: the cell over time: plain `lax.scan` autodiff, or the fused reverse pass.
* `memory`: `reset_memory`.
"""

from jaxdl.layers.recurrent.layers import GRU, LSTM, RNN, Recurrent, elman_rnn, lstm_network
from jaxdl.layers.recurrent.memory import reset_memory

__all__ = ["GRU", "LSTM", "RNN", "Recurrent", "elman_rnn", "lstm_network", "reset_memory"]
