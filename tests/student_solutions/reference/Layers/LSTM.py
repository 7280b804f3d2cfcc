import numpy as np

from Layers.RNN import RNN, _sigmoid


class LSTM(RNN):
    """Gates over [x_t, h_{t-1}, 1] in the columns' order f, i, c~, o."""

    gates = 4

    def _initial_state(self):
        if self.memorize and self.state is not None:
            return self.state
        return (np.zeros(self.hidden_size), np.zeros(self.hidden_size))

    def _step(self, x_t, state):
        h_prev, c_prev = state
        z = np.concatenate([x_t, h_prev, [1.0]])
        pre = z @ self.weights
        n = self.hidden_size
        f, i, o = _sigmoid(pre[:n]), _sigmoid(pre[n:2 * n]), _sigmoid(pre[3 * n:])
        c_tilde = np.tanh(pre[2 * n:3 * n])
        c = f * c_prev + i * c_tilde
        h = o * np.tanh(c)
        return (h, c), {"z": z, "f": f, "i": i, "o": o, "c_tilde": c_tilde, "c": c, "c_prev": c_prev}

    def _step_backward(self, cache, dstate):
        dh, dc = dstate
        tanh_c = np.tanh(cache["c"])
        do = dh * tanh_c
        dc = dc + dh * cache["o"] * (1 - tanh_c ** 2)
        df, di, dc_tilde = dc * cache["c_prev"], dc * cache["c_tilde"], dc * cache["i"]
        dpre = np.concatenate([df * cache["f"] * (1 - cache["f"]), di * cache["i"] * (1 - cache["i"]),
                               dc_tilde * (1 - cache["c_tilde"] ** 2), do * cache["o"] * (1 - cache["o"])])
        dz = self.weights @ dpre
        n = self.input_size
        return np.outer(cache["z"], dpre), dz, (dz[n:n + self.hidden_size], dc * cache["f"])
