"""Checks of RNN and LSTM against jaxdl's facade layers (worker side).

The reference is `jaxdl.exercise.RNN` / `LSTM` (the core's ``elman_rnn`` / ``lstm_network``
under `jax.vjp`) loaded with the student's hidden map (``weights``, set by the checker) and the
student's output map (found in the student's object: an array of shape (hidden + 1, output) or
its transpose, directly or as the ``weights`` of a member such as an embedded FullyConnected).
The student's storage layout (transposed, [h, x, 1] rows, the LSTM's gate order) is the one
under which the reference reproduces the student's first forward. Cases: memorize off (two
forwards of the same input must agree) and on (the second forward starts from the first's
final state), sequences of 6 steps and of 1.
"""

from __future__ import annotations

import numpy as np

import jaxdl.exercise as ex
from jaxdl.exercise._engine import to_device
from jaxdl.exercise.check import _layouts
from jaxdl.exercise.check._layers import _backward, _forward, _get, _set, _sgd

SIZES = (5, 4, 3)  # input, hidden, output


def _members(student):
    for name, value in vars(student).items():
        yield name, value
        values = value if isinstance(value, (list, tuple)) else [value]
        for i, item in enumerate(values):
            if hasattr(item, "__dict__") and not isinstance(item, (type, np.ndarray)):
                label = f"{name}[{i}]" if isinstance(value, (list, tuple)) else name
                try:
                    yield f"{label}.weights", getattr(item, "weights", None)
                except Exception:  # noqa: BLE001 (a student's property may raise anything)
                    continue


def output_map(student, hidden, output):
    """(where, array) of the student's output map (hidden + 1, output) or its transpose, or None."""
    shapes = {(hidden + 1, output), (output, hidden + 1)}
    for where, value in _members(student):
        if isinstance(value, np.ndarray) and value.shape in shapes:
            return where, np.array(value, dtype=float)
    return None


def _output_map_or_fail(result, student, method):
    """`output_map`, or a finding of ``method`` that ends the case."""
    _, n_hidden, n_out = SIZES
    found = output_map(student, n_hidden, n_out)
    if found is None:
        result.call(method, _raise, f"no output map found: expected an array of shape ({n_hidden + 1}, {n_out}) or "
                                    "its transpose in the layer or as the weights of one of its members")
    return found


def _raise(message):
    raise LookupError(message)


class _Reference:
    """One facade layer whose params are replaced for each candidate layout and case."""

    def __init__(self, kind):
        self.layer = kind(*SIZES)

    def load(self, hidden, output, memorize=False):
        layer = self.layer
        layer.memorize = False  # resets a carried state
        layer.memorize = memorize
        layer.testing_phase = False
        layer.weights = hidden
        name = layer._names[1]
        layer._params = {**layer._params, name: {"weights": to_device(output[:-1]), "bias": to_device(output[-1])}}
        return layer


def _layout(kind, hidden_layouts, output_layouts, hidden, output, x, y):
    """The (hidden, output) layouts under which the reference's forward of ``x`` is ``y``."""
    reference = _Reference(kind)
    for h in hidden_layouts:
        for o in output_layouts:
            layer = reference.load(h.to_canonical(hidden), o.to_canonical(output))
            layer.testing_phase = True
            if np.allclose(layer.forward(x), y):
                return h, o
    return hidden_layouts[0], output_layouts[0]


def _check(kind, gates, cls, result):
    n_in, n_hidden, n_out = SIZES
    all_hidden = _layouts.layouts((n_in, n_hidden, 1), n_hidden, [(0, 1, 2), (1, 0, 2)], gates)
    all_output = _layouts.layouts((n_hidden, 1), n_out, [(0, 1), (1, 0)])
    rng = np.random.default_rng(0)
    x1, x2, e = (rng.normal(size=(6, n_in)) for _ in range(3))
    e = rng.normal(size=(6, n_out))
    name = kind.__name__
    h_layout = None
    with result.case(f"{name}{SIZES}, input (6, {n_in}), memorize False"):
        np.random.seed(0)
        student = result.call("constructor", cls, *SIZES)
        shape = np.shape(_get(result, student, "weights"))
        hidden_layouts = _layouts.matching(all_hidden, shape)
        if not hidden_layouts:
            result.fail("weights", f"shape {shape}, expected ({n_in + n_hidden + 1}, {gates * n_hidden}) (the "
                                   "hidden map over [x, h, 1]) or its transpose")
            return
        hidden = _set(result, student, "weights", 0.5 * rng.normal(size=shape))
        found = _output_map_or_fail(result, student, "forward")
        output_layouts = _layouts.matching(all_output, found[1].shape)
        y = _forward(result, student, x1)
        h_layout, o_layout = _layout(kind, hidden_layouts, output_layouts, hidden, found[1], x1, y)
        canonical = h_layout.to_canonical(hidden), o_layout.to_canonical(found[1])
        ref = _Reference(kind).load(*canonical)
        expected = ref.forward(x1)
        result.compare("forward", y, expected)
        carried = _Reference(kind).load(*canonical, memorize=True)
        carried.forward(x1)
        result.compare("forward", _forward(result, student, x1), expected, variants=[
            (carried.forward(x1), "the hidden state is carried over although memorize is False: start from zeros")])
        result.compare("backward", _backward(result, student, e), ref.backward(e))
        result.compare("gradient_weights", _get(result, student, "gradient_weights"),
                       h_layout.from_canonical(ref.gradient_weights))
        stepping = result.call("constructor", cls, *SIZES)
        _set(result, stepping, "weights", hidden)
        own = _Reference(kind).load(canonical[0], o_layout.to_canonical(
            _output_map_or_fail(result, stepping, "weights update")[1]))
        own.forward(x1)
        own.backward(e)
        result.call("optimizer", setattr, stepping, "optimizer", _sgd())
        _forward(result, stepping, x1)
        _backward(result, stepping, e, "backward with an optimizer")
        result.compare("weights update", _get(result, stepping, "weights"),
                       h_layout.from_canonical(canonical[0] - 0.5 * own.gradient_weights))

    if h_layout is None:  # the first case ended early: its finding says why
        return
    with result.case(f"{name}{SIZES}, inputs (6, {n_in}) twice, memorize True"):
        np.random.seed(0)
        student = result.call("constructor", cls, *SIZES)
        _set(result, student, "weights", hidden)
        result.call("memorize", setattr, student, "memorize", True)
        found = _output_map_or_fail(result, student, "forward (memorize=True)")
        ref = _Reference(kind).load(h_layout.to_canonical(hidden), o_layout.to_canonical(found[1]), memorize=True)
        fresh = _Reference(kind).load(h_layout.to_canonical(hidden), o_layout.to_canonical(found[1]))
        method = "forward (memorize=True)"
        result.compare(method, _forward(result, student, x1, method), ref.forward(x1))
        result.compare(method, _forward(result, student, x2, method), ref.forward(x2), variants=[
            (fresh.forward(x2), "the hidden state is not carried over when memorize is True")])
        result.compare("backward", _backward(result, student, e), ref.backward(e))
        result.compare("gradient_weights", _get(result, student, "gradient_weights"),
                       h_layout.from_canonical(ref.gradient_weights))

    with result.case(f"{name}{SIZES}, input (1, {n_in})"):
        np.random.seed(0)
        student = result.call("constructor", cls, *SIZES)
        _set(result, student, "weights", hidden)
        found = _output_map_or_fail(result, student, "forward")
        ref = _Reference(kind).load(h_layout.to_canonical(hidden), o_layout.to_canonical(found[1]))
        result.compare("forward", _forward(result, student, x2[:1]), ref.forward(x2[:1]))
        result.compare("backward", _backward(result, student, e[:1]), ref.backward(e[:1]))


def rnn(cls, result):
    """forward, backward, gradient_weights, the update, memorize off and on (module docstring)."""
    _check(ex.RNN, 1, cls, result)


def lstm(cls, result):
    """As `rnn`, with the four gates in any column order."""
    _check(ex.LSTM, 4, cls, result)
