"""Residual, Parallel and Tied (jaxdl.combinators): values against hand-written references,
gradients and Hessians of shared parameters, keys, errors, MixedPrecision and a mesh step.

The generic properties (float64 finite differences, float32, jit, vmap, jvp/HVP) run over the
combinators' entries of tests/layer_registry.py (``residual*``, ``parallel*``, ``shared_tied*``).
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import jaxdl

KEY = jax.random.key(0)
RNG = np.random.default_rng(0)


def x64(shape):
    return jnp.asarray(RNG.normal(size=shape))


def dense(params, x):
    return x @ params["weights"] + params["bias"]


# ------------------------------------------------------------------------------- Residual
def test_residual_block_in_a_few_lines_equals_block_plus_input():
    block = jaxdl.Serial(jaxdl.FullyConnected(4), jaxdl.TanH(), jaxdl.FullyConnected(4))
    model = jaxdl.Residual(block)
    params, state = model.init(KEY, (3, 4), jnp.float64)
    assert set(params) == {"block"} and state == {}
    x = x64((3, 4))
    inner = params["block"]
    expected = dense(inner["fully_connected_1"], jnp.tanh(dense(inner["fully_connected_0"], x))) + x
    np.testing.assert_allclose(model.apply(params, state, x)[0], expected, rtol=1e-12)


def test_residual_with_projection_matches_pytorch():
    model = jaxdl.Residual(jaxdl.Serial(jaxdl.FullyConnected(3), jaxdl.ReLU()), projection=jaxdl.FullyConnected(3))
    params, _ = model.init(KEY, (5, 2), jnp.float64)
    assert set(params) == {"block", "projection"}
    x = x64((5, 2))

    def linear(p):
        layer = torch.nn.Linear(2, 3, dtype=torch.float64)
        layer.weight.data = torch.tensor(np.asarray(p["weights"]).T)
        layer.bias.data = torch.tensor(np.asarray(p["bias"]))
        return layer

    block, projection = linear(params["block"]["fully_connected_0"]), linear(params["projection"])
    xt = torch.tensor(np.asarray(x), requires_grad=True)
    yt = torch.relu(block(xt)) + projection(xt)
    yt.sum().backward()
    y = model.apply(params, {}, x)[0]
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-12)
    grads = jax.grad(lambda p: jnp.sum(model.apply(p, {}, x)[0]))(params)
    np.testing.assert_allclose(grads["projection"]["weights"], projection.weight.grad.numpy().T, rtol=1e-12)
    np.testing.assert_allclose(grads["block"]["fully_connected_0"]["weights"], block.weight.grad.numpy().T,
                               rtol=1e-12)


def test_residual_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"Residual: the block's output shape \(2, 3\) must equal the shape of the "
                                         r"input \(the identity skip\), got \(2, 5\); give a projection"):
        jaxdl.Residual(jaxdl.FullyConnected(3)).init(KEY, (2, 5))
    with pytest.raises(ValueError, match=r"\(2, 3\) must equal the shape of the projection's output, got \(2, 4\)"):
        jaxdl.Residual(jaxdl.FullyConnected(3), projection=jaxdl.FullyConnected(4)).init(KEY, (2, 5))
    with pytest.raises(TypeError, match=r"Residual: block must be a jaxdl layer, got 3"):
        jaxdl.Residual(3)
    with pytest.raises(TypeError, match=r"Residual: projection must be a jaxdl layer"):
        jaxdl.Residual(jaxdl.ReLU(), projection="conv")


def test_residual_reraises_a_childs_error_with_its_place():
    with pytest.raises(ValueError, match=r"Residual: the block: .*Conv.* expects input of layout"):
        jaxdl.Residual(jaxdl.Conv(2, (3, 3))).init(KEY, (2, 5))


# ------------------------------------------------------------------------------- Parallel
def test_parallel_branches_sum_and_concat():
    tanh_branch = jaxdl.Serial(jaxdl.FullyConnected(3), jaxdl.TanH())
    summed = jaxdl.Parallel(jaxdl.FullyConnected(3), tanh_branch)
    params, _ = summed.init(KEY, (4, 2), jnp.float64)
    assert summed.names == ("fully_connected_0", "serial_0") and set(params) == set(summed.names)
    x = x64((4, 2))
    first, second = dense(params["fully_connected_0"], x), jnp.tanh(dense(params["serial_0"]["fully_connected_0"], x))
    np.testing.assert_allclose(summed.apply(params, {}, x)[0], first + second, rtol=1e-12)

    joined = jaxdl.Parallel(("wide", jaxdl.FullyConnected(5)), ("narrow", tanh_branch), merge="concat")
    params, _ = joined.init(KEY, (4, 2), jnp.float64)
    y = joined.apply(params, {}, x)[0]
    expected = jnp.concatenate([dense(params["wide"], x), jnp.tanh(dense(params["narrow"]["fully_connected_0"], x))],
                               axis=-1)
    np.testing.assert_allclose(y, expected, rtol=1e-12)
    assert jaxdl.output_shape(joined, (4, 2)) == (4, 8)


def test_parallel_concat_on_the_channel_axis_of_images():
    model = jaxdl.Parallel(jaxdl.Conv(2, (1, 1)), jaxdl.Conv(3, (3, 3)), merge="concat", axis=1)
    assert jaxdl.output_shape(model, (2, 1, 5, 5)) == (2, 5, 5, 5)


@pytest.mark.parametrize("make, error, message", [
    (lambda: jaxdl.Parallel(jaxdl.ReLU()), ValueError, r"Parallel: needs at least 2 branches, got 1"),
    (lambda: jaxdl.Parallel(jaxdl.ReLU(), jaxdl.TanH(), merge="max"), ValueError,
     r"Parallel: merge must be one of 'sum', 'concat', got 'max'"),
    (lambda: jaxdl.Parallel(jaxdl.ReLU(), jaxdl.TanH(), merge="concat", axis=1.0), TypeError,
     r"Parallel: axis must be an int, got 1.0"),
    (lambda: jaxdl.Parallel(jaxdl.ReLU(), "tanh"), TypeError,
     r"Parallel: expects jaxdl layers or \(name, layer\) pairs, got 'tanh' \(type str\) at position 1"),
    (lambda: jaxdl.Parallel(("a", jaxdl.ReLU()), ("a", jaxdl.TanH())), ValueError,
     r"Parallel: the layers' keys must be unique, got 'a' more than once"),
])
def test_parallel_rejects_bad_arguments(make, error, message):
    with pytest.raises(error, match=message):
        make()


def test_parallel_outputs_that_cannot_merge_name_every_branch():
    with pytest.raises(ValueError, match=r"Parallel: merge='sum' needs branch outputs of one shape, got "
                                         r"'fully_connected_0' \(2, 3\), 'fully_connected_1' \(2, 4\)"):
        jaxdl.Parallel(jaxdl.FullyConnected(3), jaxdl.FullyConnected(4)).init(KEY, (2, 5))
    with pytest.raises(ValueError, match=r"Parallel: axis must be a non-batch axis .* got 0"):
        jaxdl.Parallel(jaxdl.ReLU(), jaxdl.TanH(), merge="concat", axis=0).init(KEY, (2, 5))
    with pytest.raises(ValueError, match=r"merge='concat' needs branch outputs of one rank, got 're_lu_0' \(2, 3, 4\), "
                                         r"'flatten_0' \(2, 12\)"):
        jaxdl.Parallel(jaxdl.ReLU(), jaxdl.Flatten(), merge="concat").init(KEY, (2, 3, 4))
    with pytest.raises(ValueError, match=r"merge='concat' on axis -1 needs branch outputs equal in every other axis, "
                                         r"got 're_lu_0' \(2, 1, 4, 4\), 'pooling_0' \(2, 1, 2, 2\)"):
        jaxdl.Parallel(jaxdl.ReLU(), jaxdl.Pooling(2), merge="concat").init(KEY, (2, 1, 4, 4))


def test_combinators_split_the_key_for_dropout_and_ask_for_it():
    model = jaxdl.Parallel(jaxdl.Dropout(0.5), jaxdl.Residual(jaxdl.Dropout(0.5)), merge="concat")
    assert model.needs_key_in_training
    x = jnp.ones((64, 8))
    y = model.apply({}, {}, x, key=jax.random.key(1), train=True)[0]
    left, right = y[:, :8], y[:, 8:]
    assert not np.array_equal(left == 0, (right - 1) == 0)  # two branches, two masks
    np.testing.assert_array_equal(model.apply({}, {}, x)[0], jnp.concatenate([x, 2 * x], axis=1))
    with pytest.raises(ValueError, match=r"needs a key.*key=jax.random.key\(seed\)"):
        model.apply({}, {}, x, train=True)


# ---------------------------------------------------------------------------------- Tied
@dataclasses.dataclass(frozen=True)
class TinyEmbedding(jaxdl.Layer):
    """A table lookup for integer ids (the test's stand-in for jaxdl.Embedding)."""

    vocabulary: int
    features: int

    regularized = ("table",)

    def init(self, key, input_shape, dtype=jnp.float32):
        return {"table": jax.random.normal(key, (self.vocabulary, self.features), dtype)}, {}

    def apply(self, params, state, x, *, key=None, train=False):
        if not jnp.issubdtype(jnp.result_type(x), jnp.integer):
            raise TypeError(f"{self!r} expects integer ids, got dtype {jnp.result_type(x)}.")
        return params["table"][x], state


def char_lm(vocabulary=7, features=4):
    """Tied input and output embeddings: logits = h @ table.T + bias."""
    body = jaxdl.Serial(("embed", TinyEmbedding(vocabulary, features)), jaxdl.TanH(),
                        ("output", jaxdl.FullyConnected(vocabulary)))
    return body, jaxdl.Tied(body, jaxdl.Tie("output/weights", "embed/table", transpose=True))


def test_tied_embedding_and_output_store_the_table_once():
    body, model = char_lm()
    state_ = jaxdl.create_train_state(model, jaxdl.Sgd(0.1), 0, (2, 5), input_dtype=jnp.int32)
    params = state_.params
    assert jax.tree.map(jnp.shape, params) == {"embed": {"table": (7, 4)}, "output": {"bias": (7,)}}
    assert jaxdl.count_params(params) == 7 * 4 + 7
    assert jaxdl.regularized_mask(model, params) == {"embed": {"table": True}, "output": {"bias": False}}
    ids = jnp.asarray(RNG.integers(0, 7, (2, 5)), jnp.int32)
    y = model.apply(params, {}, ids)[0]
    table = params["embed"]["table"]
    np.testing.assert_allclose(y, jnp.tanh(table[ids]) @ table.T + params["output"]["bias"], rtol=1e-6)


def test_tied_gradient_sums_both_uses_and_hessian_matches_the_untied_chain_rule():
    body, model = char_lm()
    params, _ = model.init(KEY, (2, 3), jnp.float64, input_dtype=jnp.int32)
    ids = jnp.asarray([[0, 3, 6], [2, 2, 5]], jnp.int32)
    targets = x64((2, 3, 7))

    def tied_loss(p):
        return jnp.sum((model.apply(p, {}, ids)[0] - targets) ** 2)

    def untied_loss(p):
        return jnp.sum((body.apply(p, {}, ids)[0] - targets) ** 2)

    full = model.full_params(params)
    untied = jax.grad(untied_loss)(full)
    tied = jax.grad(tied_loss)(params)
    np.testing.assert_allclose(tied["embed"]["table"],
                               untied["embed"]["table"] + untied["output"]["weights"].T, rtol=1e-12)
    np.testing.assert_allclose(tied["output"]["bias"], untied["output"]["bias"], rtol=1e-12)
    # Hessian of the shared table: d/dT of the tied loss = the untied Hessian pulled back through T -> (T, T.T).
    table = params["embed"]["table"]

    def tied_of_table(t):
        return tied_loss({**params, "embed": {"table": t}})

    def untied_of_pair(t, w):
        return untied_loss({"embed": {"table": t}, "output": {"weights": w, "bias": params["output"]["bias"]}})

    hessian = jax.hessian(tied_of_table)(table)
    pair = jax.hessian(untied_of_pair, argnums=(0, 1))(table, table.T)
    n = table.size
    tt = np.asarray(pair[0][0]).reshape(n, n)
    tw = np.asarray(jnp.swapaxes(pair[0][1], 2, 3)).reshape(n, n)  # d2/dT dW, W = T.T
    wt = np.asarray(jnp.swapaxes(pair[1][0], 0, 1)).reshape(n, n)
    ww = np.asarray(jnp.swapaxes(jnp.swapaxes(pair[1][1], 0, 1), 2, 3)).reshape(n, n)
    np.testing.assert_allclose(np.asarray(hessian).reshape(n, n), tt + tw + wt + ww, rtol=1e-10, atol=1e-10)


def test_tied_whole_layers_share_every_param():
    model = jaxdl.Tied(jaxdl.Serial(jaxdl.FullyConnected(3), jaxdl.TanH(), jaxdl.FullyConnected(3)),
                       jaxdl.Tie("fully_connected_1", "fully_connected_0"))
    params, _ = model.init(KEY, (2, 3), jnp.float64)
    assert set(params) == {"fully_connected_0"}
    x = x64((2, 3))
    p = params["fully_connected_0"]
    np.testing.assert_allclose(model.apply(params, {}, x)[0], dense(p, jnp.tanh(dense(p, x))), rtol=1e-12)


def test_tied_errors_name_paths_and_shapes():
    body = jaxdl.Serial(jaxdl.FullyConnected(3), jaxdl.FullyConnected(4))
    with pytest.raises(ValueError, match=r"Tied: the target 'fully_connected_1/weights' has shape \(3, 4\) but the "
                                         r"source 'fully_connected_0/weights' has shape \(5, 3\)"):
        jaxdl.Tied(body, jaxdl.Tie("fully_connected_1/weights", "fully_connected_0/weights")).init(KEY, (2, 5))
    with pytest.raises(ValueError, match=r"Tied: 'dense_0/weights' is not an entry of Serial's params, whose entries "
                                         r"are \[.*'fully_connected_0/weights'"):
        jaxdl.Tied(body, jaxdl.Tie("dense_0/weights", "fully_connected_0/weights")).init(KEY, (2, 5))
    with pytest.raises(ValueError, match=r"Tie: transpose needs an array of rank >= 2 at the source 'fully_connected_0', "
                                         r"got \{'bias': \(3,\), 'weights': \(5, 3\)\}"):
        jaxdl.Tied(body, jaxdl.Tie("fully_connected_1", "fully_connected_0", transpose=True)).init(KEY, (2, 5))
    with pytest.raises(ValueError, match=r"Tie: target and source must be separate entries"):
        jaxdl.Tie("fully_connected_0", "fully_connected_0/weights")
    with pytest.raises(ValueError, match=r"Tied: the target 'b' overlaps the source 'b' of another tie"):
        jaxdl.Tied(body, jaxdl.Tie("a", "b"), jaxdl.Tie("b", "c"))
    with pytest.raises(ValueError, match=r"Tied: needs at least one Tie"):
        jaxdl.Tied(body)
    with pytest.raises(TypeError, match=r"Tied: ties must be jaxdl.Tie\(target, source\), got \('a', 'b'\)"):
        jaxdl.Tied(body, ("a", "b"))
    with pytest.raises(TypeError, match=r"Tie: transpose must be a bool, got 1"):
        jaxdl.Tie("a", "b", transpose=1)
    with pytest.raises(ValueError, match=r"Tie: source must be a '/'-separated params path .* got 'a//b'"):
        jaxdl.Tie("c", "a//b")
    with pytest.raises(ValueError, match=r"Tied: the source 'fully_connected_0/weights' is missing from the params"):
        jaxdl.Tied(body, jaxdl.Tie("fully_connected_1/bias", "fully_connected_0/weights")).apply(
            {}, {}, jnp.ones((2, 5)))


# ------------------------------------------------------- MixedPrecision, mesh, training
def test_combinators_under_mixed_precision_and_a_mesh_step():
    model = jaxdl.Serial(jaxdl.FullyConnected(6), jaxdl.Residual(jaxdl.Serial(jaxdl.FullyConnected(6), jaxdl.ReLU())),
                         jaxdl.Parallel(jaxdl.FullyConnected(3), jaxdl.FullyConnected(3)))
    mixed = jaxdl.MixedPrecision(model, compute_dtype="bfloat16")
    optimizer = jaxdl.Sgd(0.05, regularizer=jaxdl.L2Regularizer(1e-2))
    start = jaxdl.create_train_state(mixed, optimizer, 0, (4, 5))
    assert jaxdl.regularized_mask(mixed, start.params) == jaxdl.regularized_mask(model, start.params)
    x = jnp.asarray(RNG.normal(size=(4, 5)), jnp.float32)
    labels = jnp.asarray([0, 1, 2, 1])
    y = mixed.apply(start.params, start.state, x)[0]
    assert y.dtype == jnp.float32
    np.testing.assert_allclose(y, model.apply(start.params, start.state, x)[0], rtol=0.05, atol=0.05)
    local = jaxdl.make_train_step(mixed, jaxdl.softmax_cross_entropy, optimizer)
    meshed = jaxdl.make_train_step(mixed, jaxdl.softmax_cross_entropy, optimizer, mesh=jaxdl.data_mesh())
    one, metrics = local(start, x, labels)
    two, _ = meshed(start, x, labels)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), one.params, two.params)
    assert float(metrics["regularization_loss"]) > 0
    # the decoupled L2 shrank the kernels only: the biases moved by the data gradient alone
    plain = jaxdl.make_train_step(mixed, jaxdl.softmax_cross_entropy, jaxdl.Sgd(0.05))(start, x, labels)[0]
    np.testing.assert_array_equal(one.params["parallel_0"]["fully_connected_0"]["bias"],
                                  plain.params["parallel_0"]["fully_connected_0"]["bias"])
    w = start.params["residual_0"]["block"]["fully_connected_0"]["weights"]
    np.testing.assert_allclose(one.params["residual_0"]["block"]["fully_connected_0"]["weights"]
                               - plain.params["residual_0"]["block"]["fully_connected_0"]["weights"],
                               -0.05 * 1e-2 * w, rtol=0, atol=1e-7)  # float32 differences of ~1e-3 steps
