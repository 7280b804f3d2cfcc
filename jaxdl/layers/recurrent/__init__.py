"""Recurrent layers on `lax.scan`: RNN (Elman), LSTM, GRU, memorized state (truncated BPTT).

* `layers`: the layers `RNN`, `LSTM`, `GRU` (shared contract `Recurrent`, with the per-step
  API `initial_carry`/`step`) and the exercise's networks `elman_rnn`, `lstm_network`.
* `stacked`: `Stacked`, recurrent layers one after the other (PyTorch's ``num_layers``).
* `bidirectional`: `Bidirectional`, a layer run forward and backward, outputs concatenated.
* `lengths`: `SequenceBatch`, padded sequences with their lengths (masked outputs and states).
* `stepping`: `initial_carry`/`step` of a whole `Serial` model, for sampling one step at a time.
* `cells`: each cell's step, forward and (hand-written) reverse.
* `sequence`: the cell over time: plain `lax.scan` autodiff, or the fused reverse pass.
* `memory`: `reset_memory`.
"""

from jaxdl.layers.recurrent.layers import GRU, LSTM, RNN, Recurrent, elman_rnn, lstm_network
from jaxdl.layers.recurrent.bidirectional import Bidirectional
from jaxdl.layers.recurrent.lengths import SequenceBatch
from jaxdl.layers.recurrent.memory import reset_memory
from jaxdl.layers.recurrent.stacked import Stacked

__all__ = ["Bidirectional", "GRU", "LSTM", "RNN", "Recurrent", "SequenceBatch", "Stacked", "elman_rnn",
           "lstm_network", "reset_memory"]
