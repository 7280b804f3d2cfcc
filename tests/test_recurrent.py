"""Tests of the recurrent layers (RNN, LSTM, GRU), memorize/TBPTT and reset_memory.

Float64 (enabled in conftest.py) unless a test says otherwise; sizes are tiny so the whole file
runs in well under a minute on two cores.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from jaxdl.core import Serial
from jaxdl.initializers import Constant, UniformRandom
from jaxdl.kernels import recurrent as recurrent_kernels
from jaxdl.layers.dense import FullyConnected
from jaxdl.layers.normalization import BatchNormalization
from jaxdl.layers.recurrent import GRU, LSTM, RNN, elman_rnn, lstm_network, reset_memory
from jaxdl.optimizers import Sgd
from jaxdl.regularizers import L2Regularizer
from jaxdl.training import create_train_state, make_train_step

B, T, F, H = 3, 4, 4, 6
CELLS = [RNN, LSTM, GRU]
F64 = jnp.float64


def quick_jit(fn, **kwargs):
    """`jax.jit` without XLA's backend optimizations: these tiny programs compile 2-3x faster."""
    return jax.jit(fn, compiler_options={"xla_backend_optimization_level": 0}, **kwargs)


def apply(layer, params, state, x, train=False):
    """``layer.apply`` compiled with `quick_jit`."""
    return quick_jit(lambda p, s, x: layer.apply(p, s, x, train=train))(params, state, x)


def random_params(layer, key=0, features=F, scale=0.5):
    """Params with every entry random (biases included), so every path is exercised."""
    params, _ = layer.init(jax.random.key(key), (B, T, features), F64)
    keys = jax.random.split(jax.random.key(key + 1), len(params))
    return {name: scale * jax.random.normal(k, v.shape, F64) for (name, v), k in zip(sorted(params.items()), keys)}


def random_input(shape=(B, T, F), key=7):
    return jax.random.normal(jax.random.key(key), shape, F64)


def random_state(layer, batch=B, key=11):
    names = ("h", "c") if isinstance(layer, LSTM) else ("h",)
    keys = jax.random.split(jax.random.key(key), len(names))
    return {name: 0.5 * jax.random.normal(k, (batch, layer.hidden_size), F64) for name, k in zip(names, keys)}


# ----------------------------------------------------------------------------------------------
# An independent reference: the textbook equations in a Python loop over time.

def sigmoid(v):
    return 1 / (1 + jnp.exp(-v))


def reference_step(kind, p, carry, x_t):
    h = carry["h"]
    if kind is RNN:
        return {"h": jnp.tanh(x_t @ p["w_ih"] + h @ p["w_hh"] + p["b"])}
    if kind is LSTM:
        z = x_t @ p["w_ih"] + h @ p["w_hh"] + p["b"]
        i, f, g, o = (z[:, k * H:(k + 1) * H] for k in range(4))
        c = sigmoid(f) * carry["c"] + sigmoid(i) * jnp.tanh(g)
        return {"h": sigmoid(o) * jnp.tanh(c), "c": c}
    a = x_t @ p["w_ih"] + p["b"]
    s = h @ p["w_hh"]
    r = sigmoid(a[:, :H] + s[:, :H])
    z = sigmoid(a[:, H:2 * H] + s[:, H:2 * H])
    n = jnp.tanh(a[:, 2 * H:] + r * (s[:, 2 * H:] + p["b_hn"]))
    return {"h": (1 - z) * n + z * h}


def reference_run(kind, p, x, initial, reverse=False):
    carry, outputs = dict(initial), [None] * x.shape[1]
    order = range(x.shape[1] - 1, -1, -1) if reverse else range(x.shape[1])
    for t in order:
        carry = reference_step(kind, p, carry, x[:, t])
        outputs[t] = carry["h"]
    return jnp.stack(outputs, axis=1), carry


def weighted_loss(y, final, key=3):
    """A loss with random weights on every output and on the final state (all cotangents used)."""
    leaves = [y] + [final[name] for name in sorted(final)]
    keys = jax.random.split(jax.random.key(key), len(leaves))
    return sum(jnp.sum(jax.random.normal(k, v.shape, v.dtype) * v) for k, v in zip(keys, leaves))


def values_and_grads(runs, params, x, initial):
    """For each run: outputs, final state, and the gradients of `weighted_loss` w.r.t.
    params, x and initial state."""

    def evaluate(p, x, s):
        results = []
        for run in runs:
            loss = lambda p, x, s: weighted_loss(*run(p, x, s))  # noqa: E731
            results.append((run(p, x, s), jax.grad(loss, argnums=(0, 1, 2))(p, x, s)))
        return results

    return quick_jit(evaluate)(params, x, initial)


@pytest.mark.parametrize("kind", CELLS, ids=lambda k: k.__name__)
def test_matches_python_loop_reference(kind):
    """Both implementations, forward and reverse, at several unroll values (3 does not divide
    T = 4), equal the Python-loop reference: outputs, final state, and every gradient."""
    params, x, initial = random_params(kind(H)), random_input(), random_state(kind(H))
    configurations = [(False, "scan", 1), (False, "scan", T), (False, "fused", 1), (False, "fused", 3),
                      (True, "scan", 2), (True, "fused", 1)]
    runs = [kind(H, reverse=reverse, unroll=unroll, implementation=implementation).run
            for reverse, implementation, unroll in configurations]
    runs += [lambda p, x, s, reverse=reverse: reference_run(kind, p, x, s, reverse) for reverse in (False, True)]
    results = values_and_grads(runs, params, x, initial)  # one compilation for all
    expected = {False: results[-2], True: results[-1]}
    for (reverse, implementation, unroll), result in zip(configurations, results):
        jax.tree.map(lambda a, b: np.testing.assert_allclose(
            a, b, rtol=1e-10, atol=1e-12, err_msg=f"{implementation=}, {unroll=}, {reverse=}"),
            result, expected[reverse])


@pytest.mark.parametrize("kind", CELLS, ids=lambda k: k.__name__)
def test_fused_blocks_match_python_loop_reference(kind, monkeypatch):
    """The fused rule's tangent loop in blocks (forced here; real sizes take it when the stacked
    gradients are large), blocks of 3 steps: T = 4 and 5 in one block and a shorter last one (1
    and 2 steps, its own forward scan). Several blocks and a shorter one against the masked
    scan: tests/test_recurrent_wrappers.py::test_fused_lengths_equal_the_masked_scan.
    Forward and reverse: outputs, final state and every gradient. (One block of all steps is
    what every other test here runs.)"""
    monkeypatch.setattr(recurrent_kernels, "STACKED_GRADIENT_BYTES", 0)
    monkeypatch.setattr(recurrent_kernels, "BLOCK_STEPS", 3)
    params, initial = random_params(kind(H)), random_state(kind(H))
    runs = [kind(H, reverse=reverse).run for reverse in (False, True)]
    runs += [lambda p, x, s, reverse=reverse: reference_run(kind, p, x, s, reverse) for reverse in (False, True)]

    def evaluate(p, xs, s):
        def loss(run, p, x, s):
            return weighted_loss(*run(p, x, s))

        return [[(run(p, x, s), jax.grad(loss, argnums=(1, 2, 3))(run, p, x, s)) for run in runs] for x in xs]

    for fused, fused_reverse, expected, expected_reverse in quick_jit(evaluate)(
            params, [random_input((B, t, F)) for t in (4, 5)], initial):
        for result, reference in ((fused, expected), (fused_reverse, expected_reverse)):
            jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12), result, reference)


@pytest.mark.parametrize("kind", CELLS, ids=lambda k: k.__name__)
def test_fused_blocks_forward_mode_and_hvp_match_scan(kind, monkeypatch):
    """Forward mode and Hessian-vector products through the blocked tangent loop."""
    monkeypatch.setattr(recurrent_kernels, "STACKED_GRADIENT_BYTES", 0)
    monkeypatch.setattr(recurrent_kernels, "BLOCK_STEPS", 2)
    params, x = random_params(kind(H)), random_input()
    directions = (random_params(kind(H), key=5), random_input(key=9))

    def derivatives(layer):
        def scalar(p, x):
            return jnp.sum(jnp.sin(layer.apply(p, {}, x)[0]))

        jvp = jax.jvp(lambda p, x: layer.apply(p, {}, x)[0], (params, x), directions)[1]
        hvp = jax.jvp(jax.grad(scalar, argnums=(0, 1)), (params, x), directions)[1]
        return jvp, hvp

    fused, plain = quick_jit(lambda: (derivatives(kind(H)), derivatives(kind(H, implementation="scan"))))()
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12), fused, plain)


@pytest.mark.parametrize("kind,return_sequences", [(RNN, False), (LSTM, True), (GRU, False)],
                         ids=["RNN-last", "LSTM-sequences", "GRU-last"])
def test_fused_equals_scan_in_float32(kind, return_sequences):
    """The fast path against plain lax.scan autodiff at a float32 tolerance."""
    fused = kind(H, return_sequences=return_sequences)
    plain = kind(H, return_sequences=return_sequences, implementation="scan")
    params = jax.tree.map(lambda v: v.astype(jnp.float32), random_params(fused))
    x = random_input().astype(jnp.float32)
    initial = {k: v.astype(jnp.float32) for k, v in random_state(fused).items()}

    def loss(layer):
        return quick_jit(jax.value_and_grad(lambda p, x, s: weighted_loss(*layer.run(p, x, s)), argnums=(0, 1, 2)))

    value, grads = loss(fused)(params, x, initial)
    value_ref, grads_ref = loss(plain)(params, x, initial)
    assert value.dtype == jnp.float32
    np.testing.assert_allclose(value, value_ref, rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), grads, grads_ref)


@pytest.mark.parametrize("kind", CELLS, ids=lambda k: k.__name__)
def test_check_grads_float64(kind):
    """Finite differences against the fused reverse pass, w.r.t. the input and every param."""
    layer = kind(H)
    params, x = random_params(layer), random_input((2, 4, F))
    check_grads(jax.jit(lambda p, x: layer.apply(p, {}, x)[0]), (params, x), order=1, modes=["rev"])


def test_fused_second_order_reverse_matches_scan():
    """The fused backward is itself differentiable (reverse over reverse)."""
    params, x = random_params(RNN(H)), random_input()

    def grad_norm(layer):
        loss = lambda p: jnp.sum(layer.apply(p, {}, x)[0] ** 2)  # noqa: E731
        return quick_jit(jax.grad(lambda p: sum(jnp.sum(g ** 2) for g in jax.tree.leaves(jax.grad(loss)(p)))))(params)

    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12),
                 grad_norm(RNN(H)), grad_norm(RNN(H, implementation="scan")))


# ----------------------------------------------------------------------------------------------
# Layouts and options


@pytest.mark.parametrize("kind", CELLS, ids=lambda k: k.__name__)
def test_shapes_and_layouts(kind):
    layer = kind(H)
    params, state = layer.init(jax.random.key(0), (B, T, F))
    assert state == {}
    widths = {RNN: H, LSTM: 4 * H, GRU: 3 * H}[kind]
    assert params["w_ih"].shape == (F, widths) and params["w_hh"].shape == (H, widths)
    assert params["b"].shape == (widths,)
    assert params["w_ih"].dtype == jnp.float32
    x = random_input().astype(jnp.float32)
    layers = [layer, kind(H, return_sequences=False), kind(H, reverse=True),
              kind(H, return_sequences=False, reverse=True)]
    (y, new_state), (last, _), (backward, _), (first, _) = quick_jit(
        lambda p, x: [each.apply(p, {}, x) for each in layers])(params, x)
    assert y.shape == (B, T, H) and y.dtype == jnp.float32 and new_state == {}
    assert last.shape == (B, H) and backward.shape == (B, T, H)
    np.testing.assert_allclose(last, y[:, -1], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(first, backward[:, 0], rtol=1e-6, atol=1e-6)


def test_rank2_input_is_one_sequence():
    """The exercise's (time, features) input: one sequence of batch 1, rank 2 back."""
    layer, last_only, memorizing = LSTM(H), LSTM(H, return_sequences=False), LSTM(H, memorize=True)
    params = random_params(layer)
    _, state = memorizing.init(jax.random.key(0), (T, F), F64)
    assert state["h"].shape == (1, H) and state["c"].shape == (1, H)
    x = random_input((T, F))
    y, y_batched, last, (y_memorized, new_state) = quick_jit(lambda p, s, x: (
        layer.apply(p, {}, x)[0], layer.apply(p, {}, x[None])[0], last_only.apply(p, {}, x)[0],
        memorizing.apply(p, s, x)))(params, state, x)
    assert y.shape == (T, H) and last.shape == (1, H) and new_state["c"].shape == (1, H)
    np.testing.assert_allclose(y, y_batched[0], rtol=1e-12)
    np.testing.assert_allclose(last[0], y[-1], rtol=1e-12)
    np.testing.assert_allclose(y_memorized, y, rtol=1e-12)


def test_lstm_forget_bias_is_initialization_only():
    params, _ = LSTM(H).init(jax.random.key(0), (B, T, F))
    np.testing.assert_array_equal(params["b"], jnp.concatenate([jnp.zeros(H), jnp.ones(H), jnp.zeros(2 * H)]))
    params0, _ = LSTM(H, forget_bias=0.0).init(jax.random.key(0), (B, T, F))
    np.testing.assert_array_equal(params0["b"], jnp.zeros(4 * H))
    # Same params give the same outputs whatever forget_bias says: nothing is added in forward.
    x = random_input().astype(jnp.float32)
    a, b = quick_jit(lambda p, x: [LSTM(H, forget_bias=f).apply(p, {}, x)[0] for f in (1.0, 5.0)])(params, x)
    np.testing.assert_array_equal(a, b)


def test_gru_has_separate_candidate_hidden_bias():
    params, _ = GRU(H, bias_initializer=Constant(0.3)).init(jax.random.key(0), (B, T, F))
    assert sorted(params) == ["b", "b_hn", "w_hh", "w_ih"]
    np.testing.assert_array_equal(params["b_hn"], jnp.full((H,), 0.3, jnp.float32))


def test_initializers_receive_the_exercise_fans():
    seen = []

    def recording(key, shape, fan_in, fan_out, dtype=jnp.float32):
        seen.append((shape, fan_in, fan_out))
        return jnp.zeros(shape, dtype)

    LSTM(H, weights_initializer=recording, bias_initializer=recording).init(jax.random.key(0), (B, T, F))
    assert seen == [((F, 4 * H), F + H, 4 * H), ((H, 4 * H), F + H, 4 * H), ((4 * H,), F + H, 4 * H)]


# ----------------------------------------------------------------------------------------------
# memorize (truncated backpropagation through time)


@pytest.mark.parametrize("kind", CELLS, ids=lambda k: k.__name__)
def test_memorize_two_chunks_equal_one_call(kind):
    layer = kind(H, memorize=True)
    params = random_params(layer)
    _, state = layer.init(jax.random.key(0), (B, T, F), F64)
    x = random_input((B, 2 * T, F))
    whole, final = apply(layer, params, state, x)
    step = quick_jit(layer.apply)
    first, state = step(params, state, x[:, :T])
    second, state = step(params, state, x[:, T:])
    np.testing.assert_allclose(jnp.concatenate([first, second], axis=1), whole, rtol=1e-12, atol=1e-14)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-12), state, final)


@pytest.mark.parametrize("implementation", ["fused", "scan"])
def test_memorize_stops_gradient_at_chunk_boundary(implementation):
    layer = LSTM(H, memorize=True, implementation=implementation)
    params = random_params(layer)
    _, state = layer.init(jax.random.key(0), (B, T, F), F64)

    def chunk2_loss(x1, x2):
        _, carried = layer.apply(params, state, x1)
        y2, _ = layer.apply(params, carried, x2)
        return jnp.sum(y2 ** 2)

    x1, x2 = random_input(key=1), random_input(key=2)
    g1, g2 = quick_jit(jax.grad(chunk2_loss, argnums=(0, 1)))(x1, x2)
    np.testing.assert_array_equal(g1, jnp.zeros_like(x1))
    assert jnp.all(jnp.abs(g2) > 0)
    # But the carried state does change chunk 2's output.
    y_fresh, _ = apply(layer, params, state, x2)
    y_carried, _ = apply(layer, params, apply(layer, params, state, x1)[1], x2)
    assert not np.allclose(y_fresh, y_carried)


@pytest.mark.parametrize("kind", CELLS, ids=lambda k: k.__name__)
def test_without_memorize_calls_repeat_with_memorize_they_differ(kind):
    """Memorized state is carried in evaluation and in training mode."""
    x = random_input()
    plain, memorizing = kind(H), kind(H, memorize=True)
    params = random_params(plain)
    _, state = memorizing.init(jax.random.key(0), (B, T, F), F64)

    def four_calls(p, s, x):
        a, plain_state = plain.apply(p, {}, x)
        b, _ = plain.apply(p, plain_state, x)
        c, s = memorizing.apply(p, s, x, train=False)
        d, s = memorizing.apply(p, s, x, train=True)
        return a, b, c, d, plain_state

    a, b, c, d, plain_state = quick_jit(four_calls)(params, state, x)
    assert plain_state == {}
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)
    assert not np.allclose(c, d)


def test_explicit_initial_state_without_memorize_is_reused_and_returned_unchanged():
    layer = RNN(H)
    params, x, initial = random_params(layer), random_input(), random_state(RNN(H))
    y, state = layer.apply(params, initial, x)
    assert state is initial
    np.testing.assert_allclose(y, reference_run(RNN, params, x, initial)[0], rtol=1e-12)


def test_memorized_state_keeps_its_dtype():
    layer = GRU(H, memorize=True)
    params, state = layer.init(jax.random.key(0), (B, T, F), jnp.float32)
    _, new_state = jax.jit(layer.apply)(params, state, random_input())  # float64 input
    assert new_state["h"].dtype == jnp.float32


# ----------------------------------------------------------------------------------------------
# reset_memory


def memorizing_model():
    return Serial(LSTM(H, memorize=True), RNN(H, memorize=True), BatchNormalization(), FullyConnected(2))


def test_reset_memory_restores_zeros_and_keeps_other_state():
    model = memorizing_model()
    params, state0 = model.init(jax.random.key(0), (B, T, F))
    _, state = apply(model, params, state0, random_input().astype(jnp.float32), train=True)
    assert float(jnp.abs(state["lstm_0"]["c"]).sum()) > 0
    reset = jax.jit(reset_memory, static_argnums=0)(model, state)
    jax.tree.map(np.testing.assert_array_equal, reset["lstm_0"], state0["lstm_0"])
    jax.tree.map(np.testing.assert_array_equal, reset["rnn_0"], state0["rnn_0"])
    jax.tree.map(np.testing.assert_array_equal, reset["batch_normalization_0"], state["batch_normalization_0"])
    assert jax.tree.map(lambda v: v.dtype, reset) == jax.tree.map(lambda v: v.dtype, state)


def test_reset_memory_with_mask_resets_only_marked_sequences():
    model = memorizing_model()
    params, state = model.init(jax.random.key(0), (B, T, F))
    _, state = apply(model, params, state, random_input().astype(jnp.float32))
    mask = jnp.array([True, False, True])
    reset = reset_memory(model, state, mask)
    for layer_name in ("lstm_0", "rnn_0"):
        for name, value in state[layer_name].items():
            np.testing.assert_array_equal(reset[layer_name][name][1], value[1])
            np.testing.assert_array_equal(reset[layer_name][name][0], jnp.zeros(H))
            np.testing.assert_array_equal(reset[layer_name][name][2], jnp.zeros(H))


def test_reset_memory_rejects_bad_masks():
    model = memorizing_model()
    _, state = model.init(jax.random.key(0), (B, T, F))
    with pytest.raises(ValueError, match=r"mask has shape \(2,\).*lstm_0/[hc] has shape \(3, 6\)"):
        reset_memory(model, state, jnp.array([True, False]))
    with pytest.raises(TypeError, match="boolean"):
        reset_memory(model, state, jnp.array([1, 0, 1]))
    with pytest.raises(ValueError, match=r"shape \(batch,\)"):
        reset_memory(model, state, jnp.ones((3, 1), bool))
    with pytest.raises(TypeError, match=r"reset_memory: model must be the jaxdl layer.*reset_memory\(model, state"):
        reset_memory(state, None)  # the old call, without the model


# ----------------------------------------------------------------------------------------------
# Errors


def test_batch_mismatch_with_memorized_state_is_an_error():
    layer = LSTM(H, memorize=True)
    params, state = layer.init(jax.random.key(0), (B, T, F))
    with pytest.raises(ValueError, match=r"LSTM\(hidden_size=6.*state 'h' of shape \(3, 6\).*expected \(2, 6\)"):
        layer.apply(params, state, jnp.ones((2, T, F), jnp.float32))


@pytest.mark.parametrize("shape", [(F,), (1, 2, T, F)])
def test_rank_errors_name_the_layer(shape):
    layer = GRU(H)
    params, _ = layer.init(jax.random.key(0), (B, T, F))
    with pytest.raises(ValueError, match=r"GRU\(hidden_size=6.*\(batch, time, features\) or \(time, features\)"):
        layer.apply(params, {}, jnp.ones(shape, jnp.float32))
    with pytest.raises(ValueError, match=r"GRU\(hidden_size=6.*\(batch, time, features\)"):
        layer.init(jax.random.key(0), shape)


def test_other_errors():
    layer = RNN(H)
    params, _ = layer.init(jax.random.key(0), (B, T, F))
    with pytest.raises(ValueError, match=r"initialized for 4 input features.*\(3, 4, 2\)"):
        layer.apply(params, {}, jnp.ones((B, T, 2), jnp.float32))
    with pytest.raises(TypeError, match="floating-point"):
        layer.apply(params, {}, jnp.ones((B, T, F), jnp.int32))
    with pytest.raises(ValueError, match=r"keys \['h'\]"):
        layer.apply(params, {"h": jnp.zeros((B, H)), "c": jnp.zeros((B, H))}, jnp.ones((B, T, F)))
    with pytest.raises(ValueError, match=r"params with keys \['b', 'w_hh', 'w_ih'\]"):
        layer.apply({"w_ih": params["w_ih"]}, {}, jnp.ones((B, T, F)))
    with pytest.raises(ValueError, match="hidden_size must be a positive int"):
        LSTM(0)
    with pytest.raises(ValueError, match="unroll must be a positive int"):
        RNN(3, unroll=0)
    with pytest.raises(ValueError, match="implementation must be one of"):
        GRU(3, implementation="cudnn")


# ----------------------------------------------------------------------------------------------
# The exercise's checks (TestRNN / TestLSTM) on elman_rnn / lstm_network


@pytest.mark.parametrize("network", [elman_rnn, lstm_network])
def test_exercise_forward_size_and_statefulness(network):
    model = network(7, 5)
    params, state = model.init(jax.random.key(0), (9, 13))
    y, _ = apply(model, params, state, jax.random.uniform(jax.random.key(1), (9, 13)))
    assert y.shape == (9, 5)
    repeats = 2 if network is elman_rnn else 13
    tiled = jnp.tile(jax.random.uniform(jax.random.key(2), (1, 13)), (repeats, 1))
    y, _ = apply(model, params, state, tiled)
    assert not np.allclose(y[0], y[1])


@pytest.mark.parametrize("network", [elman_rnn, lstm_network])
def test_exercise_tbptt_two_forwards_differ(network):
    model = network(7, 5, memorize=True)
    x = jax.random.uniform(jax.random.key(1), (9, 13))
    params, state = model.init(jax.random.key(0), (9, 13))
    first, state = apply(model, params, state, x)
    second, _ = apply(model, params, state, x)
    assert not np.allclose(first, second)


@pytest.mark.parametrize("network", [elman_rnn, lstm_network])
def test_exercise_positive_output_on_zero_input(network):
    model = network(20, 1, weights_initializer=UniformRandom(), bias_initializer=UniformRandom())
    params, state = model.init(jax.random.key(0), (1, 1000))
    y, _ = apply(model, params, state, jnp.zeros((1, 1000), jnp.float32))
    assert float(jnp.sum(y)) > 0


def test_regularizer_sees_recurrent_weights_not_biases():
    model = elman_rnn(H, 2)
    params, _ = model.init(jax.random.key(0), (B, T, F))
    rnn = params["rnn_0"]
    expected = 0.1 * (jnp.sum(rnn["w_ih"] ** 2) + jnp.sum(rnn["w_hh"] ** 2)
                      + jnp.sum(params["fully_connected_0"]["weights"] ** 2))
    np.testing.assert_allclose(L2Regularizer(0.1).norm(params, model), expected, rtol=1e-6)
    gradient = L2Regularizer(0.1).gradient(params, model)["rnn_0"]
    np.testing.assert_array_equal(gradient["b"], jnp.zeros(H))
    np.testing.assert_allclose(gradient["w_hh"], 0.1 * rnn["w_hh"], rtol=1e-6)


def test_regularization_loss_is_added_for_recurrent_layers():
    """Exercise 5.17 test_regularization_loss with an RNN instead of the network's FC."""
    model = Serial(RNN(4), FullyConnected(3))
    x = jax.random.normal(jax.random.key(0), (6, 4), jnp.float32)
    labels = jax.nn.one_hot(jnp.arange(6) % 3, 3)
    loss = lambda y, t: jnp.sum((y - t) ** 2)  # noqa: E731
    losses = []
    for regularizer in (None, L2Regularizer(8e-2)):
        optimizer = Sgd(1e-3, regularizer=regularizer)
        train_state = create_train_state(model, optimizer, jax.random.key(1), x.shape)
        _, metrics = quick_jit(make_train_step(model, loss, optimizer, jit=False))(train_state, x, labels)
        losses.append(float(metrics["loss"]))
    assert losses[1] > losses[0]


# ----------------------------------------------------------------------------------------------
# PyTorch equivalence (skipped when torch is not installed)


@pytest.mark.parametrize("kind", CELLS, ids=lambda k: k.__name__)
def test_matches_pytorch_outputs_and_gradients(kind):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    module = getattr(torch.nn, kind.__name__)(F, H, batch_first=True).double()
    x_np = np.asarray(random_input())
    x_torch = torch.tensor(x_np, requires_grad=True)
    y_torch, _ = module(x_torch)
    weights = torch.tensor(np.asarray(jax.random.normal(jax.random.key(5), (B, T, H))))
    (y_torch * weights).sum().backward()

    layer = kind(H)
    tensors = {name: getattr(module, name).detach().numpy()
               for name in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")}
    params = layer.from_pytorch(**tensors)
    loss = lambda p, x: jnp.sum(layer.apply(p, {}, x)[0] * jnp.asarray(weights.numpy()))  # noqa: E731
    y = apply(layer, params, {}, jnp.asarray(x_np))[0]
    grads, dx = quick_jit(jax.grad(loss, argnums=(0, 1)))(params, jnp.asarray(x_np))

    np.testing.assert_allclose(y, y_torch.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dx, x_torch.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(grads["w_ih"], module.weight_ih_l0.grad.numpy().T, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(grads["w_hh"], module.weight_hh_l0.grad.numpy().T, rtol=1e-10, atol=1e-12)
    bias_ih_grad, bias_hh_grad = module.bias_ih_l0.grad.numpy(), module.bias_hh_l0.grad.numpy()
    np.testing.assert_allclose(grads["b"], bias_ih_grad, rtol=1e-10, atol=1e-12)  # d/db = d/dbias_ih
    if kind is GRU:
        np.testing.assert_allclose(grads["b_hn"], bias_hh_grad[2 * H:], rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(grads["b"][:2 * H], bias_hh_grad[:2 * H], rtol=1e-10, atol=1e-12)
    else:
        np.testing.assert_allclose(grads["b"], bias_hh_grad, rtol=1e-10, atol=1e-12)
