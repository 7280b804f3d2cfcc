"""Placeholder until jaxdl.layers.recurrent lands."""
RNN = LSTM = None
