"""Stacked and bidirectional recurrent layers, sequence lengths, the per-step API, masked losses.

Float64 unless a test says otherwise (conftest.py). The references are independent: PyTorch's
multi-layer bidirectional ``nn.LSTM``/``nn.GRU`` with copied weights (outputs, final states,
gradients; padded batches through ``pack_padded_sequence``), each example run alone at its own
length, and finite differences. The registry (tests/layer_registry.py) runs the generic
property tests over Stacked and Bidirectional entries.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from jax.test_util import check_grads

import jaxdl
from jaxdl.core import memory_mask, regularized_mask
from jaxdl.kernels import recurrent as recurrent_kernels
from jaxdl.layers.recurrent import GRU, LSTM, RNN, Bidirectional, SequenceBatch, Stacked, stepping

B, T, F, H = 3, 5, 2, 3
LENGTHS = np.array([5, 2, 3])
CELLS = [RNN, LSTM, GRU]
F64 = jnp.float64


def quick_jit(fn, **kwargs):
    """`jax.jit` without XLA's backend optimizations (tiny programs compile faster)."""
    return jax.jit(fn, compiler_options={"xla_backend_optimization_level": 0}, **kwargs)


def random_input(shape=(B, T, F), key=7, dtype=F64):
    return jax.random.normal(jax.random.key(key), shape, dtype)


def random_params(layer, shape=(B, T, F), key=0, scale=0.5):
    """Params with every entry random (biases included), so every path is exercised."""
    params, _ = layer.init(jax.random.key(key), shape, F64)
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(key + 1), len(leaves))
    return jax.tree.unflatten(treedef, [scale * jax.random.normal(k, v.shape, F64) for v, k in zip(leaves, keys)])


# ----------------------------------------------------------------------------------------------
# Sequence lengths: equal to running every example alone, unpadded.

MASKED_LAYERS = [  # every cell, forward and reverse (the backward directions), the wrappers, both layouts
    pytest.param(Bidirectional(GRU(H, return_sequences=False)), id="bidirectional-gru-last"),
    pytest.param(Stacked(RNN(H), Bidirectional(LSTM(2))), id="stacked-rnn-bidirectional-lstm"),
    pytest.param(Stacked(LSTM(H), GRU(2, return_sequences=False)), id="stacked-last"),
]


@pytest.mark.parametrize("layer", MASKED_LAYERS)
def test_lengths_equal_each_example_run_alone(layer):
    """Outputs (zeros at padding), final states and gradients equal each example run unpadded."""
    params, x = random_params(layer), random_input()
    weights = random_input((B, T, 64), key=3)

    def padded_loss(p, x):
        y, final = layer.run(p, x, lengths=jnp.asarray(LENGTHS))
        w = weights[..., :y.shape[-1]] if y.ndim == 3 else weights[:, 0, :y.shape[-1]]
        return jnp.sum(y * w), (y, final)

    def alone_loss(p, x):
        total, outputs, finals = 0.0, [], []
        for b, length in enumerate(LENGTHS):
            y, final = layer.run(p, x[b:b + 1, :length])
            w = weights[b:b + 1, :length, :y.shape[-1]] if y.ndim == 3 else weights[b:b + 1, 0, :y.shape[-1]]
            total = total + jnp.sum(y * w)
            outputs.append(y)
            finals.append(final)
        return total, (outputs, finals)

    grad = jax.grad(lambda f, p, x: f(p, x)[0], argnums=(1, 2))
    (_, (y, final)), (_, (ys, finals)), padded_grads, alone_grads = quick_jit(
        lambda p, x: (padded_loss(p, x), alone_loss(p, x), grad(padded_loss, p, x), grad(alone_loss, p, x)))(params, x)
    for b, length in enumerate(LENGTHS):
        if y.ndim == 3:
            np.testing.assert_allclose(y[b, :length], ys[b][0], rtol=1e-12, atol=1e-12)
            np.testing.assert_array_equal(y[b, length:], 0.0)
        else:
            np.testing.assert_allclose(y[b], ys[b][0], rtol=1e-12, atol=1e-12)
        jax.tree.map(lambda a, e, b=b: np.testing.assert_allclose(a[b], e[0], rtol=1e-12, atol=1e-12), final, finals[b])
    jax.tree.map(lambda a, e: np.testing.assert_allclose(a, e, rtol=1e-10, atol=1e-12), padded_grads, alone_grads)
    for b, length in enumerate(LENGTHS):  # the padded inputs get no gradient
        np.testing.assert_array_equal(padded_grads[1][b, length:], 0.0)


@pytest.mark.parametrize("kind", CELLS, ids=lambda k: k.__name__)
@pytest.mark.parametrize("blocks", [False, True], ids=["one-block", "blocks-of-3"])
def test_fused_lengths_equal_the_masked_scan(kind, blocks, monkeypatch):
    """The fused derivative over a padded batch against the masked `lax.scan` with plain autodiff:
    outputs, final state, gradients (params, input, initial state), forward mode and
    Hessian-vector products; forward and reverse, a non-zero initial state, lengths 0 to T.
    With blocks of 3 steps over T = 7 (two blocks and a shorter last one, lengths ending inside
    each), the reverse scan's padded steps span a whole part."""
    if blocks:
        monkeypatch.setattr(recurrent_kernels, "STACKED_GRADIENT_BYTES", 0)
        monkeypatch.setattr(recurrent_kernels, "BLOCK_STEPS", 3)
    steps = 7
    lengths = jnp.array([7, 0, 2, 4, 6])
    shape = (len(lengths), steps, F)
    x = random_input(shape)
    directions = (random_params(kind(H), shape, key=5), random_input(shape, key=9))
    results = {}
    for implementation in ("fused", "scan"):
        for reverse in (False, True):
            layer = kind(H, reverse=reverse, implementation=implementation)
            params = random_params(layer, shape)
            initial = {name: random_input((len(lengths), H), key=11 + i) for i, name in enumerate(layer.cell.carry_names)}
            weights = random_input(shape[:2] + (H,), key=3)

            def scalar(p, x, s, layer=layer, weights=weights):
                y, final = layer.run(p, x, s, lengths=lengths)
                return jnp.sum(jnp.sin(y) * weights) + sum(jnp.sum(v ** 2) for v in final.values())

            def derivatives(p, x, s, layer=layer, scalar=scalar):
                outputs = layer.run(p, x, s, lengths=lengths)
                grads = jax.grad(scalar, argnums=(0, 1, 2))(p, x, s)
                tangent = jax.jvp(lambda p, x: layer.run(p, x, s, lengths=lengths), (p, x), directions)[1]
                hvp = jax.jvp(lambda p, x: jax.grad(scalar, argnums=(0, 1))(p, x, s), (p, x), directions)[1]
                return outputs, grads, tangent, hvp

            results[implementation, reverse] = quick_jit(derivatives)(params, x, initial)
            if implementation == "fused":  # the fused rule really runs
                assert "_fused" in str(jax.make_jaxpr(lambda p, x: layer.run(p, x, initial, lengths=lengths))(params, x))
    for reverse in (False, True):
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12, err_msg=f"{reverse=}"),
                     results["fused", reverse], results["scan", reverse])


def test_zero_length_keeps_the_initial_state_and_gives_zeros():
    layer = LSTM(H)
    params, x = random_params(layer), random_input()
    initial = {"h": random_input((B, H), key=1), "c": random_input((B, H), key=2)}
    y, final = layer.run(params, x, initial, lengths=jnp.array([0, 5, 0]))
    np.testing.assert_array_equal(y[0], 0.0)
    np.testing.assert_array_equal(final["h"][np.array([0, 2])], initial["h"][np.array([0, 2])])
    np.testing.assert_array_equal(final["c"][np.array([0, 2])], initial["c"][np.array([0, 2])])


def test_lengths_gradients_match_finite_differences():
    """float64 reverse and forward mode through the masked recurrence vs finite differences."""
    layer = Stacked(Bidirectional(LSTM(2)), GRU(2))
    params, x = random_params(layer, (2, 4, F)), random_input((2, 4, F))
    lengths = jnp.array([4, 2])
    f = jax.jit(lambda p, x: layer.apply(p, {}, SequenceBatch(x, lengths))[0])
    check_grads(f, (params, x), order=1, modes=["fwd", "rev"], eps=1e-6, atol=1e-5, rtol=1e-5)


def test_lengths_in_float32_match_float64():
    layer = Bidirectional(LSTM(H))
    params, x = random_params(layer), random_input()
    lengths = jnp.asarray(LENGTHS)
    to32 = lambda tree: jax.tree.map(lambda a: a.astype(jnp.float32), tree)  # noqa: E731

    def loss(p, x):
        return jnp.sum(jnp.sin(layer.apply(p, {}, SequenceBatch(x, lengths))[0]))

    value_and_grad = quick_jit(jax.value_and_grad(loss, argnums=(0, 1)))
    value32, grads32 = value_and_grad(to32(params), to32(x))
    value64, grads64 = value_and_grad(*jax.tree.map(lambda a: a.astype(F64), to32((params, x))))
    assert value32.dtype == jnp.float32 and all(g.dtype == jnp.float32 for g in jax.tree.leaves(grads32))
    np.testing.assert_allclose(value32, value64, rtol=1e-6)
    scale = max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(grads64))
    jax.tree.map(lambda a, e: np.testing.assert_allclose(a, e, rtol=1e-5, atol=1e-6 * scale), grads32, grads64)


def test_lengths_under_jit_and_vmap():
    """Traced lengths (jit) and a vmapped batch of SequenceBatches equal eager calls."""
    layer = Bidirectional(GRU(H))
    params, x = random_params(layer), random_input()
    lengths = jnp.asarray(LENGTHS)
    eager = layer.apply(params, {}, SequenceBatch(x, lengths))[0]
    jitted = quick_jit(lambda x, n: layer.apply(params, {}, SequenceBatch(x, n))[0])(x, lengths)
    np.testing.assert_allclose(jitted, eager, rtol=1e-12, atol=1e-12)
    xs, ns = jnp.stack([x, x[::-1]]), jnp.stack([lengths, lengths[::-1]])
    mapped = jax.vmap(lambda x, n: layer.apply(params, {}, SequenceBatch(x, n))[0])(xs, ns)
    np.testing.assert_allclose(mapped[1], layer.apply(params, {}, SequenceBatch(x[::-1], lengths[::-1]))[0],
                               rtol=1e-12, atol=1e-12)


def test_memorize_with_lengths_carries_each_examples_last_state():
    stack = Stacked(LSTM(H, memorize=True), GRU(2, memorize=True))
    params, state = stack.init(jax.random.key(0), (B, T, F), F64)
    x = random_input()
    _, state = stack.apply(params, state, SequenceBatch(x, jnp.asarray(LENGTHS)))
    for b, length in enumerate(LENGTHS):
        _, alone = stack.run(params, x[b:b + 1, :length])
        jax.tree.map(lambda a, e, b=b: np.testing.assert_allclose(a[b], e[0], rtol=1e-12), state, alone)


# ----------------------------------------------------------------------------------------------
# PyTorch: num_layers=2, bidirectional=True, weights copied.

def torch_reference(kind, x_np, lengths=None, key=5):
    """A 2-layer bidirectional PyTorch module: outputs, h_n (c_n), gradients of a weighted loss."""
    torch.manual_seed(0)
    module = getattr(torch.nn, kind.__name__)(F, H, num_layers=2, bidirectional=True, batch_first=True).double()
    x_torch = torch.tensor(x_np, requires_grad=True)
    if lengths is None:
        y, final = module(x_torch)
    else:
        packed = torch.nn.utils.rnn.pack_padded_sequence(x_torch, torch.tensor(lengths), batch_first=True,
                                                         enforce_sorted=False)
        y, final = module(packed)
        y, _ = torch.nn.utils.rnn.pad_packed_sequence(y, batch_first=True, total_length=x_np.shape[1])
    finals = final if isinstance(final, tuple) else (final,)
    cotangents = [np.asarray(random_input(tuple(v.shape), key=key + i)) for i, v in enumerate((y, *finals))]
    sum((v * torch.tensor(w)).sum() for v, w in zip((y, *finals), cotangents)).backward()
    tensors = {name: value.detach().numpy() for name, value in module.state_dict().items()}
    grads = {name: value.grad.numpy() for name, value in module.named_parameters()}
    return module, tensors, (y.detach().numpy(), [f.detach().numpy() for f in finals]), x_torch.grad.numpy(), grads, \
        cotangents


def pytorch_final(final, kind):
    """Our stack's final states in PyTorch's layout: h_n (and c_n) of shape (layers*2, B, H)."""
    names = ("h", "c") if kind is LSTM else ("h",)
    return [np.stack([np.asarray(final[layer][direction][name]) for layer in sorted(final)
                      for direction in ("forward", "backward")]) for name in names]


def torch_gradients(grads, params_grads, kind):
    """Our parameter gradients mapped to PyTorch's names (b = bias_ih + folded bias_hh)."""
    mapped = {}
    for k, name in enumerate(sorted(params_grads)):
        for direction, suffix in (("forward", ""), ("backward", "_reverse")):
            g = params_grads[name][direction]
            mapped[f"weight_ih_l{k}{suffix}"] = np.asarray(g["w_ih"]).T
            mapped[f"weight_hh_l{k}{suffix}"] = np.asarray(g["w_hh"]).T
            mapped[f"bias_ih_l{k}{suffix}"] = np.asarray(g["b"])
            mapped[f"bias_hh_l{k}{suffix}"] = (np.concatenate([g["b"][:2 * H], g["b_hn"]]) if kind is GRU
                                               else np.asarray(g["b"]))
    assert set(mapped) == set(grads)
    return mapped


@pytest.mark.parametrize("padded", [False, True], ids=["full", "padded"])
@pytest.mark.parametrize("kind", [LSTM, GRU], ids=lambda k: k.__name__)
def test_matches_pytorch_two_layer_bidirectional(kind, padded):
    x_np = np.asarray(random_input())
    lengths = LENGTHS if padded else None
    module, tensors, (y_torch, finals_torch), dx_torch, grads_torch, cotangents = torch_reference(kind, x_np, lengths)
    stack = Stacked(Bidirectional(kind(H)), Bidirectional(kind(H)))
    params = stack.from_pytorch(tensors)
    assert jax.tree.structure(params) == jax.tree.structure(stack.init(jax.random.key(0), (B, T, F))[0])

    def loss(p, x):
        y, final = stack.run(p, x, lengths=None if lengths is None else jnp.asarray(lengths))
        finals = pytorch_final_traced(final, kind)
        return sum(jnp.sum(v * w) for v, w in zip((y, *finals), cotangents)), (y, final)

    (_, (y, final)), (params_grads, dx) = quick_jit(
        lambda p, x: (loss(p, x), jax.grad(lambda p, x: loss(p, x)[0], argnums=(0, 1))(p, x)))(params, jnp.asarray(x_np))
    np.testing.assert_allclose(y, y_torch, rtol=1e-10, atol=1e-12)
    for ours, theirs in zip(pytorch_final(final, kind), finals_torch):
        np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dx, dx_torch, rtol=1e-10, atol=1e-12)
    for name, grad in torch_gradients(grads_torch, params_grads, kind).items():
        np.testing.assert_allclose(grad, grads_torch[name], rtol=1e-9, atol=1e-12, err_msg=name)


def pytorch_final_traced(final, kind):
    names = ("h", "c") if kind is LSTM else ("h",)
    return [jnp.stack([final[layer][direction][name] for layer in sorted(final)
                       for direction in ("forward", "backward")]) for name in names]


def test_single_layer_from_pytorch_names_missing_tensors():
    with pytest.raises(ValueError, match=r"LSTM.from_pytorch: tensors must hold .*missing \['weight_ih_l1'"):
        Stacked(LSTM(H), LSTM(H)).from_pytorch({f"{n}_l0": np.zeros(1) for n in ("weight_ih", "weight_hh")}
                                               | {"bias_ih_l0": np.zeros(4 * H), "bias_hh_l0": np.zeros(4 * H),
                                                  "weight_ih_l0": np.zeros((4 * H, F)),
                                                  "weight_hh_l0": np.zeros((4 * H, H))})


# ----------------------------------------------------------------------------------------------
# Bidirectional and Stacked semantics.

def test_bidirectional_concatenates_forward_and_reverse_runs():
    inner = GRU(H)
    layer = Bidirectional(inner)
    params, x = random_params(layer), random_input()
    y, _ = layer.apply(params, {}, x)
    forward = inner.run(params["forward"], x)[0]
    backward = GRU(H, reverse=True).run(params["backward"], x)[0]
    np.testing.assert_allclose(y, jnp.concatenate([forward, backward], axis=-1), rtol=1e-12)
    last, _ = Bidirectional(GRU(H, return_sequences=False)).apply(params, {}, x)
    np.testing.assert_allclose(last, jnp.concatenate([forward[:, -1], backward[:, 0]], axis=-1), rtol=1e-12)
    exercise, _ = layer.apply(params, {}, x[0])  # the exercise's (time, features) layout
    np.testing.assert_allclose(exercise, y[0], rtol=1e-12)


def test_stacked_memorize_two_chunks_equal_one_call_and_reset():
    stack = Stacked(LSTM(H, memorize=True), GRU(2, memorize=True))
    params, state0 = stack.init(jax.random.key(0), (B, T, F), F64)
    x = random_input((B, 2 * T, F))
    whole, _ = stack.apply(params, state0, x)
    first, state = stack.apply(params, state0, x[:, :T])
    second, state = stack.apply(params, state, x[:, T:])
    np.testing.assert_allclose(jnp.concatenate([first, second], axis=1), whole, rtol=1e-12)
    assert memory_mask(stack, state) == {"lstm_0": {"h": True, "c": True}, "gru_0": {"h": True}}
    reset = jaxdl.reset_memory(stack, state)
    assert all(float(jnp.max(jnp.abs(leaf))) == 0.0 for leaf in jax.tree.leaves(reset))


def test_declarations_reach_the_inner_layers():
    model = jaxdl.Serial(Stacked(Bidirectional(LSTM(H)), GRU(H)), jaxdl.FullyConnected(2))
    params, _ = model.init(jax.random.key(0), (B, T, F))
    mask = regularized_mask(model, params)
    inner = mask[next(iter(mask))]
    assert inner["bidirectional_0"]["backward"] == {"w_ih": True, "w_hh": True, "b": False}
    assert inner["gru_0"] == {"w_ih": True, "w_hh": True, "b": False, "b_hn": False}


# ----------------------------------------------------------------------------------------------
# One step at a time.

@pytest.mark.parametrize("layer", [pytest.param(kind(H), id=kind.__name__) for kind in CELLS]
                         + [pytest.param(Stacked(LSTM(H), GRU(2), RNN(H)), id="stacked")])
def test_steps_equal_the_scan(layer):
    params, x = random_params(layer), random_input()
    state = jax.tree.map(lambda a: 0.3 * a, layer.initial_carry(params, B))
    state = jax.tree.map(lambda a: a + random_input(a.shape, key=4), state)

    def stepped(p, x, carry):
        ys = []
        for t in range(T):
            y_t, carry = layer.step(p, carry, x[:, t])
            ys.append(y_t)
        return jnp.stack(ys, axis=1), carry

    (y_steps, carry), (y_scan, final) = quick_jit(lambda p, x, s: (stepped(p, x, s), layer.run(p, x, s)))(
        params, x, state)
    np.testing.assert_allclose(y_steps, y_scan, rtol=1e-12, atol=1e-14)
    jax.tree.map(lambda a, e: np.testing.assert_allclose(a, e, rtol=1e-12, atol=1e-14), carry, final)


def test_sampling_at_batch_one_from_a_model_trained_at_batch_64():
    """A Serial trained (one step) at batch 64 with memorize samples at batch 1 from its own params."""
    model = jaxdl.Serial(Stacked(LSTM(8, memorize=True), LSTM(8, memorize=True)), jaxdl.FullyConnected(4))
    optimizer = jaxdl.Adam(1e-2)
    train_state = jaxdl.create_train_state(model, optimizer, jax.random.key(0), (64, 6, 4))
    step = jaxdl.make_train_step(model, jaxdl.softmax_cross_entropy, optimizer)
    x = jax.random.normal(jax.random.key(1), (64, 6, 4), jnp.float32)
    train_state, _ = step(train_state, x, jax.random.randint(jax.random.key(2), (64, 6), 0, 4))
    params = train_state.params

    carry = stepping.initial_carry(model, params, 1)
    assert jax.tree.map(jnp.shape, carry) == {"stacked_0": {"lstm_0": {"h": (1, 8), "c": (1, 8)},
                                                            "lstm_1": {"h": (1, 8), "c": (1, 8)}}}
    token, logits = jnp.zeros((1, 4), jnp.float32), []
    for t in range(5):  # feed back the one-hot of the argmax: a greedy sample
        y, carry = stepping.step(model, params, train_state.state, carry, token)
        logits.append(y)
        token = jax.nn.one_hot(jnp.argmax(y, axis=-1), 4, dtype=jnp.float32)
    fed = jnp.concatenate([jnp.zeros((1, 1, 4)), jnp.stack([jax.nn.one_hot(jnp.argmax(y, -1), 4) for y in logits[:-1]],
                                                            axis=1)], axis=1)
    whole, _ = model.apply(params, jaxdl.layers.recurrent.memory.memory_for_batch(model,
        jaxdl.reset_memory(model, train_state.state), 1), fed)
    np.testing.assert_allclose(jnp.stack(logits, axis=1), whole, rtol=1e-5, atol=1e-6)


def test_step_errors():
    stack = Stacked(Bidirectional(LSTM(H)))
    params, _ = stack.init(jax.random.key(0), (B, T, F))
    with pytest.raises(ValueError, match=r"Stacked.initial_carry: the layer at 'bidirectional_0' is Bidirectional"):
        stack.initial_carry(params, 1)
    with pytest.raises(ValueError, match=r"step: the layer at 'bidirectional_0' \(Bidirectional\) holds a recurrent"):
        stepping.step(jaxdl.Serial(Bidirectional(LSTM(H))), {}, {}, {}, jnp.zeros((1, F)))
    layer = LSTM(H)
    params, _ = layer.init(jax.random.key(0), (B, T, F))
    with pytest.raises(ValueError, match=r"LSTM.initial_carry: batch must be a positive int, got 0"):
        layer.initial_carry(params, 0)
    with pytest.raises(ValueError, match=r"expects input of layout \(batch, features\)"):
        layer.step(params, layer.initial_carry(params, B), jnp.zeros((B, T, F)))
    with pytest.raises(ValueError, match=r"holds a state 'h' of shape \(3, 3\), expected \(1, 3\)"):
        layer.step(params, layer.initial_carry(params, B), jnp.zeros((1, F)))
    with pytest.raises(TypeError, match=r"initial_carry: batch must be a positive int, got 1.0"):
        stepping.initial_carry(layer, params, 1.0)


# ----------------------------------------------------------------------------------------------
# Masked sequence losses.

def test_masked_cross_entropy_equals_the_unpadded_losses():
    logits = random_input((B, T, 4), key=1)
    labels = np.asarray(jax.random.randint(jax.random.key(2), (B, T), 0, 4))
    padded_labels = np.where(np.arange(T)[None] < LENGTHS[:, None], labels, -1)  # any padding value
    full = jnp.full((B,), T)
    one_hot = jax.nn.one_hot(labels, 4, dtype=F64)
    probabilities = jax.nn.softmax(logits)
    lengths = jnp.asarray(LENGTHS)

    @quick_jit
    def losses(traced_logits, traced_lengths):
        """Every loss below in one compiled program (eagerly, each slice length and primitive
        compiles on its own). Their inputs are concrete arrays (closed over), as in an eager
        call, so the losses' checks of concrete values run (while tracing); the gradient is
        taken at ``traced_logits`` with ``traced_lengths``, the same arrays as jit arguments."""
        return {
            "total": sum(jaxdl.softmax_cross_entropy(logits[b, :n], labels[b, :n]) for b, n in enumerate(LENGTHS)),
            "sum": jaxdl.masked_sequence_cross_entropy(logits, padded_labels, lengths),
            "mean": jaxdl.masked_sequence_cross_entropy(logits, padded_labels, lengths, reduction="mean"),
            "full": {reduction: (jaxdl.masked_sequence_cross_entropy(logits, labels, full, reduction=reduction),
                                 jaxdl.softmax_cross_entropy(logits, labels, reduction=reduction))
                     for reduction in ("sum", "mean")},
            "one_hot": jaxdl.masked_sequence_cross_entropy(logits, one_hot, lengths),
            "grads": jax.grad(lambda z, n: jaxdl.masked_sequence_cross_entropy(z, padded_labels, n))(
                traced_logits, traced_lengths),
            "probabilities_mean": jaxdl.masked_sequence_loss(
                jaxdl.cross_entropy, probabilities, padded_labels, lengths, reduction="mean"),
        }

    results = losses(logits, lengths)
    total = results["total"]
    np.testing.assert_allclose(results["sum"], total, rtol=1e-12)
    np.testing.assert_allclose(results["mean"], total / LENGTHS.sum(), rtol=1e-12)
    for reduction, (masked, plain) in results["full"].items():
        np.testing.assert_allclose(masked, plain, rtol=1e-12, err_msg=reduction)
    np.testing.assert_allclose(results["one_hot"], total, rtol=1e-12)
    for b, n in enumerate(LENGTHS):
        np.testing.assert_array_equal(results["grads"][b, n:], 0.0)
    np.testing.assert_allclose(results["probabilities_mean"], total / LENGTHS.sum(), rtol=1e-6)


def test_masked_loss_trains_a_padded_batch():
    """make_train_step with SequenceBatch inputs and (targets, lengths) labels: padding changes nothing."""
    model = jaxdl.Serial(Bidirectional(GRU(4)), jaxdl.FullyConnected(3))
    optimizer = jaxdl.Sgd(0.1)
    train_state = jaxdl.create_train_state(model, optimizer, jax.random.key(0), (B, T, F), jnp.float64)
    loss = lambda logits, labels: jaxdl.masked_sequence_cross_entropy(logits, *labels)  # noqa: E731
    step = jaxdl.make_train_step(model, loss, optimizer)
    x, lengths = random_input(), jnp.asarray(LENGTHS)
    targets = jax.random.randint(jax.random.key(3), (B, T), 0, 3)
    trained, metrics = step(train_state, SequenceBatch(x, lengths), (targets, lengths))
    noisy = jnp.where((jnp.arange(T)[None] < lengths[:, None])[..., None], x, 100.0)  # other padding values
    trained_noisy, metrics_noisy = step(train_state, SequenceBatch(noisy, lengths),
                                        (jnp.where(jnp.arange(T)[None] < lengths[:, None], targets, 2), lengths))
    np.testing.assert_allclose(metrics["loss"], metrics_noisy["loss"], rtol=1e-12)
    jax.tree.map(lambda a, e: np.testing.assert_allclose(a, e, rtol=1e-12, atol=1e-15),
                 trained.params, trained_noisy.params)


# ----------------------------------------------------------------------------------------------
# Bad input.

BAD = [
    ("bidirectional memorize", lambda: Bidirectional(LSTM(H, memorize=True)), ValueError,
     r"Bidirectional: layer must have memorize=False, got LSTM\(.*ill-defined for the backward direction"),
    ("bidirectional reverse", lambda: Bidirectional(GRU(H, reverse=True)), ValueError,
     r"Bidirectional: layer must have reverse=False"),
    ("bidirectional of a dense layer", lambda: Bidirectional(jaxdl.FullyConnected(3)), TypeError,
     r"Bidirectional: layer must be an RNN, LSTM or GRU, got FullyConnected\(.*of type FullyConnected"),
    ("stacked empty", lambda: Stacked(), ValueError, r"Stacked: layers must hold at least one recurrent layer"),
    ("stacked dense", lambda: Stacked(LSTM(H), jaxdl.ReLU()), TypeError,
     r"Stacked: layers must be RNN, LSTM, GRU or Bidirectional layers, got ReLU\(\) \(type ReLU\) at position 1"),
    ("stacked last state inside", lambda: Stacked(LSTM(H, return_sequences=False), LSTM(H)), ValueError,
     r"Stacked: every layer but the last must have return_sequences=True.*at position 0"),
    ("float lengths", lambda: LSTM(H).run(random_params(LSTM(H)), random_input(), lengths=jnp.ones(B)), TypeError,
     r"LSTM\(.*\): lengths must be integers, got dtype float"),
    ("lengths shape", lambda: GRU(H).apply(random_params(GRU(H)), {}, SequenceBatch(random_input(), jnp.ones(2, int))),
     ValueError, r"GRU\(.*\): lengths must have shape \(batch,\) = \(3,\), got shape \(2,\)"),
    ("lengths range", lambda: Stacked(RNN(H)).apply(random_params(Stacked(RNN(H))), {},
                                                    SequenceBatch(random_input(), jnp.array([1, 6, 2]))),
     ValueError, r"Stacked\(.*\): lengths must lie in \[0, 5\] .*got values from 1 to 6"),
    ("lengths of the exercise layout", lambda: RNN(H).apply(random_params(RNN(H)), {},
                                                            SequenceBatch(random_input((T, F)), jnp.array([2]))),
     ValueError, r"lengths need input of layout \(batch, time, features\), got shape \(5, 2\)"),
    ("bidirectional params", lambda: Bidirectional(RNN(H)).apply({"forward": {}}, {}, random_input()), ValueError,
     r"Bidirectional\(.*\): params must have the keys \['forward', 'backward'\], got \['forward'\]"),
    ("stacked params", lambda: Stacked(RNN(H), GRU(H)).apply({"rnn_0": {}}, {}, random_input()), ValueError,
     r"Stacked\(.*\): params must hold every layer's params \['rnn_0', 'gru_0'\] .*missing \['gru_0'\]"),
    ("masked loss reduction", lambda: jaxdl.masked_sequence_cross_entropy(
        jnp.zeros((B, T, 4)), jnp.zeros((B, T), int), jnp.ones(B, int), reduction="none"), ValueError,
     r"masked_sequence_cross_entropy: reduction must be one of \['sum', 'mean'\], got 'none'"),
    ("masked loss lengths", lambda: jaxdl.masked_sequence_cross_entropy(
        jnp.zeros((B, T, 4)), jnp.zeros((B, T), int), jnp.full(B, 6)), ValueError,
     r"masked_sequence_cross_entropy: lengths must lie in \[0, 5\], got values from 6 to 6"),
    ("masked loss labels", lambda: jaxdl.masked_sequence_cross_entropy(
        jnp.zeros((B, T, 4)), jnp.full((B, T), 4), jnp.ones(B, int)), ValueError,
     r"masked_sequence_cross_entropy: labels must be class indices in \[0, 4\)"),
    ("masked loss shapes", lambda: jaxdl.masked_sequence_loss(
        jaxdl.cross_entropy, jnp.zeros((B, 4)), jnp.zeros(B, int), jnp.ones(B, int)), ValueError,
     r"masked_sequence_loss: outputs must be \(batch, time, \.\.\.\) with a class axis, got shape \(3, 4\)"),
    ("masked loss float lengths", lambda: jaxdl.masked_sequence_cross_entropy(
        jnp.zeros((B, T, 4)), jnp.zeros((B, T), int), jnp.ones(B)), TypeError,
     r"masked_sequence_cross_entropy: lengths must be integers"),
]


@pytest.mark.parametrize("name,call,error,message", BAD, ids=[case[0] for case in BAD])
def test_bad_input_is_named(name, call, error, message):
    with pytest.raises(error, match=message):
        call()
