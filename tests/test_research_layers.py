"""The layers of issue 22 against PyTorch, in float64 and float32: outputs AND gradients.

Embedding (torch.nn.Embedding), LayerNorm (torch.nn.LayerNorm), RMSNorm (torch.nn.RMSNorm),
MultiHeadAttention (torch.nn.MultiheadAttention, batch_first=True, weights copied, with and
without a causal mask), GELU (exact and tanh), SiLU, AveragePooling
(torch.nn.functional.avg_pool1d/avg_pool2d), GlobalAveragePooling and GlobalMaxPooling
(adaptive_avg_pool2d / adaptive_max_pool2d). Each comparison draws one input, copies the
parameters into the torch module, and compares the outputs and the gradients of
``sum(y * w)`` (w a random cotangent) with respect to the input and every parameter.
The generic properties (finite differences, jit, vmap, jvp/HVP, bfloat16, x64 off) come from
the registry entries (tests/layer_registry.py). Then: the conventions the docstrings state
(out-of-range ids, tied weights, causal right padding, float32 statistics) and the argument
and input errors, one table.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from jax.test_util import check_grads

import jaxdl
from jaxdl.initializers import UniformRandom
from jaxdl.layers import SequenceBatch
from jaxdl.layers.attention import attention_reference

#: float64: the same math in another library, differently ordered (rtol, atol).
TOL64 = (1e-10, 1e-12)
#: float32: a few ulps of the largest entries (rtol, atol relative to the largest entry).
TOL32 = (2e-5, 2e-6)


def _torch_dtype(dtype):
    return torch.float64 if dtype == jnp.float64 else torch.float32


def _close(actual, expected, dtype, err_msg=""):
    actual, expected = np.asarray(actual), np.asarray(expected)
    rtol, atol = TOL64 if dtype == jnp.float64 else TOL32
    scale = float(np.max(np.abs(expected))) if expected.size else 0.0
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol * max(scale, 1.0), err_msg=err_msg)


def _t(array, dtype, grad=False):
    return torch.tensor(np.asarray(array), dtype=_torch_dtype(dtype), requires_grad=grad)


@functools.partial(jax.jit, static_argnums=0)
def _jax_value_and_grads(layer, params, x, cotangent):
    """The output and the gradients of sum(y * cotangent) with respect to (params, x): one
    compiled program (``layer`` is a static argument: layers are hashable)."""
    def f(params, x):
        return jnp.sum(layer.apply(params, {}, x)[0] * cotangent)
    y = layer.apply(params, {}, x)[0]
    return y, jax.grad(f, argnums=(0, 1))(params, x)


DTYPES = [pytest.param(jnp.float64, id="float64"), pytest.param(jnp.float32, id="float32")]


# ------------------------------------------------------------------------------- Embedding
@pytest.mark.parametrize("dtype", DTYPES)
def test_embedding_matches_torch(dtype):
    layer = jaxdl.Embedding(9, 4)
    ids = jax.random.randint(jax.random.key(1), (3, 5), 0, 9, jnp.int32)
    params, _ = layer.init(jax.random.key(0), ids.shape, dtype)
    cotangent = jax.random.normal(jax.random.key(2), (3, 5, 4), dtype)
    y, _ = layer.apply(params, {}, ids)
    grads = jax.grad(lambda p: jnp.sum(layer.apply(p, {}, ids)[0] * cotangent))(params)

    module = torch.nn.Embedding(9, 4).to(_torch_dtype(dtype))
    with torch.no_grad():
        module.weight.copy_(_t(params["embedding"], dtype))
    y_torch = module(torch.tensor(np.asarray(ids), dtype=torch.long))
    (y_torch * _t(cotangent, dtype)).sum().backward()
    assert y.shape == (3, 5, 4) and y.dtype == dtype
    _close(y, y_torch.detach().numpy(), dtype)
    _close(grads["embedding"], module.weight.grad.numpy(), dtype)


def test_embedding_gradient_is_finite_differences_and_ids_of_any_rank_and_integer_dtype():
    layer = jaxdl.Embedding(6, 3)
    params, _ = layer.init(jax.random.key(0), (2, 3, 4), jnp.float64)
    ids = jax.random.randint(jax.random.key(1), (2, 3, 4), 0, 6, jnp.int32)
    check_grads(jax.jit(lambda p: layer.apply(p, {}, ids)[0]), (params,), order=2, modes=["fwd", "rev"], eps=1e-6)
    for int_dtype in (jnp.int8, jnp.uint8, jnp.int64):
        y, _ = layer.apply(params, {}, ids.astype(int_dtype))
        np.testing.assert_array_equal(y, np.asarray(params["embedding"])[np.asarray(ids)])
    y, _ = layer.apply(params, {}, np.array([5, 0]))  # NumPy ids, rank 1 (batch,)
    np.testing.assert_array_equal(y, np.asarray(params["embedding"])[[5, 0]])


def test_embedding_out_of_range_ids_are_an_error_eagerly_and_nan_rows_under_jit():
    layer = jaxdl.Embedding(5, 2)
    params, _ = layer.init(jax.random.key(0), (1, 3))
    bad = jnp.array([[4, 5, -1]])
    outside = r"Embedding\(.*\): ids must be in \[0, 5\) .*got 2 id\(s\) outside it: -1, 5\."
    with pytest.raises(ValueError, match=outside):
        layer.apply(params, {}, bad)
    y = jax.jit(lambda p, ids: layer.apply(p, {}, ids)[0])(params, bad)
    np.testing.assert_array_equal(y[0, 0], params["embedding"][4])
    assert np.all(np.isnan(y[0, 1:]))  # past the end and negative: NaN, never a clamped or wrapped row
    grads = jax.jit(jax.grad(lambda p, ids: jnp.sum(layer.apply(p, {}, ids)[0])))(params, bad)
    np.testing.assert_array_equal(grads["embedding"], np.eye(5)[4][:, None] * np.ones((1, 2)))


def test_embedding_attend_ties_input_and_output_weights():
    layer = jaxdl.Embedding(7, 3)
    params, _ = layer.init(jax.random.key(0), (2, 4), jnp.float64)
    ids = jnp.array([[1, 2, 3, 6], [0, 0, 5, 4]])

    def logits(params):
        vectors, _ = layer.apply(params, {}, ids)
        return layer.attend(params, jnp.tanh(vectors))

    out = logits(params)
    assert out.shape == (2, 4, 7)
    table = np.asarray(params["embedding"])
    np.testing.assert_allclose(out, np.tanh(table[np.asarray(ids)]) @ table.T, rtol=1e-12)
    check_grads(jax.jit(logits), (params,), order=1, modes=["rev"], eps=1e-6)  # both uses reach the one table
    assert layer.attend(params, jnp.ones((4, 3), jnp.float32)).dtype == jnp.float32  # x's dtype


def test_embedding_under_mixed_precision_and_regularized_declaration():
    model = jaxdl.MixedPrecision(jaxdl.Embedding(5, 2))
    params, _ = model.init(jax.random.key(0), (2, 3))
    y, _ = model.apply(params, {}, jnp.array([[0, 1, 2], [3, 4, 0]]))
    assert params["embedding"].dtype == jnp.float32 and y.dtype == jnp.float32
    np.testing.assert_array_equal(y[0, 0], params["embedding"][0].astype(jnp.bfloat16).astype(jnp.float32))
    assert jaxdl.Embedding.regularized == ("embedding",)
    assert jaxdl.PositionalEmbedding.regularized == ()
    assert set(jaxdl.MultiHeadAttention.regularized) == {
        "query_weights", "key_weights", "value_weights", "output_weights"}
    assert jaxdl.LayerNorm.regularized == () and jaxdl.RMSNorm.regularized == ()


def test_a_causal_language_model_of_these_layers_trains_on_integer_ids():
    vocabulary, time = 6, 5
    model = jaxdl.Serial(jaxdl.Embedding(vocabulary, 8), jaxdl.PositionalEmbedding(time), jaxdl.LayerNorm(),
                         jaxdl.MultiHeadAttention(2, causal=True), jaxdl.RMSNorm(), jaxdl.GELU(),
                         jaxdl.FullyConnected(vocabulary))
    assert jaxdl.output_shape(model, (4, time), input_dtype=jnp.int32) == (4, time, vocabulary)
    optimizer = jaxdl.Adam(3e-2, regularizer=jaxdl.L2Regularizer(1e-4))
    train_state = jaxdl.create_train_state(model, optimizer, 0, (4, time), input_dtype=jnp.int32)
    mask = jaxdl.regularized_mask(model, train_state.params)
    assert mask["embedding_0"] == {"embedding": True} and mask["positional_embedding_0"] == {"embedding": False}
    assert not any(jax.tree.leaves(mask["layer_norm_0"])) and mask["multi_head_attention_0"]["key_weights"]
    step = jaxdl.make_train_step(model, jaxdl.softmax_cross_entropy, optimizer)
    ids = jnp.tile(jnp.arange(time + 1) % vocabulary, (4, 1)).astype(jnp.int32)  # predict the next id
    losses = []
    for _ in range(30):
        train_state, metrics = step(train_state, ids[:, :-1], ids[:, 1:])
        losses.append(float(metrics["loss"]))
    assert np.isfinite(losses).all() and losses[-1] < 0.1 * losses[0], losses


def test_positional_embedding_adds_the_first_rows():
    layer = jaxdl.PositionalEmbedding(6)
    params, _ = layer.init(jax.random.key(0), (2, 4, 3), jnp.float64)
    x = jax.random.normal(jax.random.key(1), (2, 3, 3), jnp.float64)  # shorter than at init: fine
    y, _ = layer.apply(params, {}, x)
    np.testing.assert_array_equal(y, x + params["embedding"][:3])


# ---------------------------------------------------------------------- LayerNorm, RMSNorm
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("axis", [-1, (1, 2)], ids=["last", "two_axes"])
def test_layer_norm_matches_torch(axis, dtype):
    layer = jaxdl.LayerNorm(axis=axis, epsilon=1e-5)
    shape = (3, 4, 5)
    x = 2 + 3 * jax.random.normal(jax.random.key(1), shape, dtype)
    normalized = layer.init(jax.random.key(0), shape)[0]["scale"].shape
    params = {"scale": 1 + jax.random.normal(jax.random.key(2), normalized, dtype)}
    params["offset"] = jax.random.normal(jax.random.key(3), params["scale"].shape, dtype)
    cotangent = jax.random.normal(jax.random.key(4), shape, dtype)
    y, (grads, grad_x) = _jax_value_and_grads(layer, params, x, cotangent)

    module = torch.nn.LayerNorm(params["scale"].shape, eps=1e-5).to(_torch_dtype(dtype))
    with torch.no_grad():
        module.weight.copy_(_t(params["scale"], dtype))
        module.bias.copy_(_t(params["offset"], dtype))
    x_torch = _t(x, dtype, grad=True)
    y_torch = module(x_torch)
    (y_torch * _t(cotangent, dtype)).sum().backward()
    _close(y, y_torch.detach().numpy(), dtype)
    _close(grad_x, x_torch.grad.numpy(), dtype, "input")
    _close(grads["scale"], module.weight.grad.numpy(), dtype, "scale")
    _close(grads["offset"], module.bias.grad.numpy(), dtype, "offset")


def test_layer_norm_without_scale_or_offset_has_no_such_params():
    for scale, offset, keys in [(True, False, ["scale"]), (False, True, ["offset"]), (False, False, [])]:
        layer = jaxdl.LayerNorm(scale=scale, offset=offset)
        params, _ = layer.init(jax.random.key(0), (2, 4))
        assert sorted(params) == keys
    x = jax.random.normal(jax.random.key(1), (3, 6), jnp.float64)
    y, _ = jaxdl.LayerNorm(scale=False, offset=False).apply({}, {}, x)
    np.testing.assert_allclose(y, (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-5),
                               rtol=1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
def test_rms_norm_matches_torch(dtype):
    layer = jaxdl.RMSNorm(epsilon=1e-6)
    x = jax.random.normal(jax.random.key(1), (3, 2, 5), dtype)
    params = {"scale": 1 + jax.random.normal(jax.random.key(2), (5,), dtype)}
    cotangent = jax.random.normal(jax.random.key(4), x.shape, dtype)
    y, (grads, grad_x) = _jax_value_and_grads(layer, params, x, cotangent)

    module = torch.nn.RMSNorm(5, eps=1e-6).to(_torch_dtype(dtype))
    with torch.no_grad():
        module.weight.copy_(_t(params["scale"], dtype))
    x_torch = _t(x, dtype, grad=True)
    y_torch = module(x_torch)
    (y_torch * _t(cotangent, dtype)).sum().backward()
    _close(y, y_torch.detach().numpy(), dtype)
    _close(grad_x, x_torch.grad.numpy(), dtype, "input")
    _close(grads["scale"], module.weight.grad.numpy(), dtype, "scale")


@pytest.mark.parametrize("layer", [jaxdl.LayerNorm(), jaxdl.RMSNorm()], ids=["layer_norm", "rms_norm"])
def test_norms_compute_statistics_in_float32_for_bfloat16(layer):
    # A large mean next to a small spread: the bfloat16 values, normalized in float32, then rounded.
    x = (300 + jax.random.normal(jax.random.key(1), (4, 16), jnp.float32)).astype(jnp.bfloat16)
    params, _ = layer.init(jax.random.key(0), x.shape)
    y, _ = layer.apply(params, {}, x)
    expected, _ = layer.apply(params, {}, x.astype(jnp.float32))
    assert y.dtype == jnp.bfloat16
    np.testing.assert_array_equal(y, expected.astype(jnp.bfloat16))
    wrapped, _ = jaxdl.MixedPrecision(layer).apply(params, {}, x.astype(jnp.float32))
    np.testing.assert_array_equal(wrapped, expected.astype(jnp.bfloat16).astype(jnp.float32))


# ---------------------------------------------------------------------- MultiHeadAttention
def _torch_attention(params, features, num_heads, dtype):
    module = torch.nn.MultiheadAttention(features, num_heads, batch_first=True).to(_torch_dtype(dtype))
    in_weight = np.concatenate([np.asarray(params[f"{p}_weights"]) for p in ("query", "key", "value")], axis=1).T
    in_bias = np.concatenate([np.asarray(params[f"{p}_bias"]) for p in ("query", "key", "value")])
    with torch.no_grad():
        module.in_proj_weight.copy_(_t(in_weight, dtype))
        module.in_proj_bias.copy_(_t(in_bias, dtype))
        module.out_proj.weight.copy_(_t(np.asarray(params["output_weights"]).T, dtype))
        module.out_proj.bias.copy_(_t(params["output_bias"], dtype))
    return module


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_multi_head_attention_matches_torch(causal, dtype):
    batch, time, features, num_heads = 2, 5, 6, 3
    layer = jaxdl.MultiHeadAttention(num_heads, causal=causal, bias_initializer=UniformRandom(-0.5, 0.5))
    params, _ = layer.init(jax.random.key(0), (batch, time, features), dtype)
    x = jax.random.normal(jax.random.key(1), (batch, time, features), dtype)
    cotangent = jax.random.normal(jax.random.key(2), x.shape, dtype)
    y, (grads, grad_x) = _jax_value_and_grads(layer, params, x, cotangent)

    module = _torch_attention(params, features, num_heads, dtype)
    x_torch = _t(x, dtype, grad=True)
    mask = torch.triu(torch.ones(time, time, dtype=torch.bool), diagonal=1) if causal else None  # True: masked
    y_torch, _ = module(x_torch, x_torch, x_torch, attn_mask=mask, need_weights=False)
    (y_torch * _t(cotangent, dtype)).sum().backward()
    _close(y, y_torch.detach().numpy(), dtype)
    _close(grad_x, x_torch.grad.numpy(), dtype, "input")
    in_grad = module.in_proj_weight.grad.numpy().T
    in_bias_grad = module.in_proj_bias.grad.numpy()
    for i, name in enumerate(("query", "key", "value")):
        _close(grads[f"{name}_weights"], in_grad[:, i * features:(i + 1) * features], dtype, name)
        _close(grads[f"{name}_bias"], in_bias_grad[i * features:(i + 1) * features], dtype, name)
    _close(grads["output_weights"], module.out_proj.weight.grad.numpy().T, dtype, "output")
    _close(grads["output_bias"], module.out_proj.bias.grad.numpy(), dtype, "output")


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_attention_on_dot_product_attention_equals_the_plain_path(causal):
    q, k, v = (jax.random.normal(jax.random.key(i), (2, 4, 3, 5), jnp.float32) for i in range(3))
    fast = jax.nn.dot_product_attention(q, k, v, is_causal=causal)
    _close(fast, attention_reference(q, k, v, causal=causal), jnp.float32)
    q64, k64, v64 = (a.astype(jnp.float64) for a in (q, k, v))
    # The plain path against a loop over positions (causal: keys 0..t only).
    logits = np.einsum("btnh,bsnh->bnts", q64, k64) / np.sqrt(5)
    for t in range(4):
        keep = slice(0, t + 1) if causal else slice(0, 4)
        w = np.exp(logits[:, :, t, keep] - logits[:, :, t, keep].max(-1, keepdims=True))
        w /= w.sum(-1, keepdims=True)
        expected = np.einsum("bns,bsnh->bnh", w, np.asarray(v64)[:, keep])
        np.testing.assert_allclose(attention_reference(q64, k64, v64, causal=causal)[:, t], expected, rtol=1e-12)


def test_causal_attention_ignores_right_padding_and_head_features():
    layer = jaxdl.MultiHeadAttention(2, head_features=3, causal=True)
    params, _ = layer.init(jax.random.key(0), (1, 6, 4), jnp.float64)
    assert params["query_weights"].shape == (4, 6) and params["output_weights"].shape == (6, 4)
    x = jax.random.normal(jax.random.key(1), (1, 6, 4), jnp.float64)
    padded = x.at[:, 4:].set(123.0)  # two padding positions at the end
    y, _ = layer.apply(params, {}, x)
    y_padded, _ = layer.apply(params, {}, padded)
    np.testing.assert_array_equal(y[:, :4], y_padded[:, :4])
    full = jaxdl.MultiHeadAttention(2, head_features=3)
    assert not np.allclose(full.apply(params, {}, x)[0][:, :4], full.apply(params, {}, padded)[0][:, :4])


@pytest.mark.parametrize("dtype", DTYPES)
def test_attention_with_lengths_matches_torch_key_padding_mask(dtype):
    batch, time, features, num_heads = 2, 5, 4, 2
    layer = jaxdl.MultiHeadAttention(num_heads, bias_initializer=UniformRandom(-0.5, 0.5))
    params, _ = layer.init(jax.random.key(0), (batch, time, features), dtype)
    x = jax.random.normal(jax.random.key(1), (batch, time, features), dtype)
    lengths = jnp.array([5, 3])
    valid = np.arange(time)[None, :] < np.asarray(lengths)[:, None]
    cotangent = jax.random.normal(jax.random.key(2), x.shape, dtype) * valid[..., None]  # the loss ignores padding

    def f(params, x):
        return jnp.sum(layer.apply(params, {}, SequenceBatch(x, lengths))[0] * cotangent)
    y, _ = jax.jit(lambda p, x: layer.apply(p, {}, SequenceBatch(x, lengths)))(params, x)
    grads, grad_x = jax.jit(jax.grad(f, argnums=(0, 1)))(params, x)

    module = _torch_attention(params, features, num_heads, dtype)
    x_torch = _t(x, dtype, grad=True)
    padding = torch.tensor(~valid)  # True: a padded key
    y_torch, _ = module(x_torch, x_torch, x_torch, key_padding_mask=padding, need_weights=False)
    (y_torch * _t(cotangent, dtype)).sum().backward()
    _close(np.asarray(y)[valid], y_torch.detach().numpy()[valid], dtype)
    assert np.all(np.asarray(y)[~valid] == 0)
    _close(grad_x, x_torch.grad.numpy(), dtype, "input")
    _close(grads["query_weights"], module.in_proj_weight.grad.numpy().T[:, :features], dtype, "query")
    _close(grads["output_weights"], module.out_proj.weight.grad.numpy().T, dtype, "output")


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_attention_with_lengths_equals_each_example_alone(causal):
    layer = jaxdl.MultiHeadAttention(2, head_features=3, causal=causal)
    params, _ = layer.init(jax.random.key(0), (3, 4, 4), jnp.float64)
    x = jax.random.normal(jax.random.key(1), (3, 4, 4), jnp.float64)
    lengths = jnp.array([4, 1, 0])
    for dtype in (jnp.float64, jnp.float32):
        p, xs = jax.tree.map(lambda a: a.astype(dtype), (params, x))
        y, _ = jax.jit(lambda p, x, n: layer.apply(p, {}, SequenceBatch(x, n)))(p, xs, lengths)
        for b, n in enumerate(lengths.tolist()):
            if n:
                alone, _ = layer.apply(p, {}, xs[b:b + 1, :n])
                _close(y[b, :n], alone[0], dtype, f"example {b}")
            assert np.all(np.asarray(y[b, n:]) == 0)
    check_grads(jax.jit(lambda p, x: layer.apply(p, {}, SequenceBatch(x, lengths))[0]), (params, x), order=1,
                modes=["rev"], eps=1e-6)  # the empty example included: finite, zero gradients


# ----------------------------------------------------------------------- GELU, SiLU
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layer,module", [
    (jaxdl.GELU(), torch.nn.GELU()), (jaxdl.GELU(approximate=True), torch.nn.GELU(approximate="tanh")),
    (jaxdl.SiLU(), torch.nn.SiLU()),
], ids=["gelu_exact", "gelu_tanh", "silu"])
def test_activations_match_torch(layer, module, dtype):
    x = 3 * jax.random.normal(jax.random.key(1), (4, 7), dtype)
    cotangent = jax.random.normal(jax.random.key(2), x.shape, dtype)
    y, (_, grad_x) = _jax_value_and_grads(layer, {}, x, cotangent)
    x_torch = _t(x, dtype, grad=True)
    y_torch = module(x_torch)
    (y_torch * _t(cotangent, dtype)).sum().backward()
    _close(y, y_torch.detach().numpy(), dtype)
    _close(grad_x, x_torch.grad.numpy(), dtype, "input")


def test_gelu_forms_differ():
    x = jnp.linspace(-3, 3, 13, dtype=jnp.float64)
    exact, tanh = jaxdl.GELU().apply({}, {}, x)[0], jaxdl.GELU(approximate=True).apply({}, {}, x)[0]
    assert 1e-5 < float(jnp.max(jnp.abs(exact - tanh))) < 1e-2


# -------------------------------------------------------------------------------- pooling
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layer,shape,reference", [
    (jaxdl.AveragePooling(2), (2, 3, 4, 6), lambda x: torch.nn.functional.avg_pool2d(x, 2)),
    (jaxdl.AveragePooling((3, 2), stride=(1, 2)), (2, 2, 5, 7),
     lambda x: torch.nn.functional.avg_pool2d(x, (3, 2), stride=(1, 2))),
    (jaxdl.AveragePooling(3, stride=2), (2, 3, 8), lambda x: torch.nn.functional.avg_pool1d(x, 3, stride=2)),
    (jaxdl.GlobalAveragePooling(), (2, 3, 4, 5),
     lambda x: torch.nn.functional.adaptive_avg_pool2d(x, 1).flatten(1)),
    (jaxdl.GlobalMaxPooling(), (2, 3, 4, 5), lambda x: torch.nn.functional.adaptive_max_pool2d(x, 1).flatten(1)),
], ids=["average_2x2", "average_overlapping", "average_1d", "global_average", "global_max"])
def test_pooling_matches_torch(layer, shape, reference, dtype):
    x = jax.random.normal(jax.random.key(1), shape, dtype)
    y_torch_shape = reference(torch.zeros(shape)).shape
    cotangent = jax.random.normal(jax.random.key(2), tuple(y_torch_shape), dtype)
    y, (_, grad_x) = _jax_value_and_grads(layer, {}, x, cotangent)
    x_torch = _t(x, dtype, grad=True)
    y_torch = reference(x_torch)
    (y_torch * _t(cotangent, dtype)).sum().backward()
    assert y.shape == tuple(y_torch.shape) and y.dtype == dtype
    _close(y, y_torch.detach().numpy(), dtype)
    _close(grad_x, x_torch.grad.numpy(), dtype, "input")


def test_global_pooling_of_bfloat16_keeps_the_dtype():
    x = jnp.full((1, 2, 64, 64), 1.01, jnp.bfloat16)
    y, _ = jaxdl.GlobalAveragePooling().apply({}, {}, x)
    assert y.dtype == jnp.bfloat16
    np.testing.assert_array_equal(y, np.full((1, 2), 1.01, jnp.bfloat16))


# -------------------------------------------------------------------------------- Reshape
def test_reshape_keeps_the_batch_and_infers_minus_one():
    x = jnp.arange(24.0).reshape(2, 3, 4)
    assert jaxdl.Reshape((4, 3)).apply({}, {}, x)[0].shape == (2, 4, 3)
    assert jaxdl.Reshape([-1]).apply({}, {}, x)[0].shape == (2, 12)
    assert jaxdl.Reshape(12).apply({}, {}, x)[0].shape == (2, 12)
    y, _ = jaxdl.Reshape((2, -1, 3)).apply({}, {}, x)
    np.testing.assert_array_equal(y, np.asarray(x).reshape(2, 2, 2, 3))
    assert jaxdl.output_shape(jaxdl.Reshape((-1, 6)), (0, 3, 4)) == (0, 2, 6)
    assert jaxdl.Reshape((3, 4)) == jaxdl.Reshape([3, 4])
    assert hash(jaxdl.Reshape((3, 4))) == hash(jaxdl.Reshape([3, 4]))


# --------------------------------------------------------------------------- bad arguments
def _apply(layer, x, shape=None):
    params, state = layer.init(jax.random.key(0), shape or x.shape)
    return layer.apply(params, state, x)


def _apply_with(layer, init_shape, x):
    params, state = layer.init(jax.random.key(0), init_shape)
    return layer.apply(params, state, x)


F = jnp.ones
BAD_INPUTS = [
    ("embedding_size", lambda: jaxdl.Embedding(0, 3),
     ValueError, r"Embedding: vocabulary_size must be a positive int, got 0"),
    ("embedding_features_type", lambda: jaxdl.Embedding(3, True),
     TypeError, r"Embedding: features must be a positive int, got True of type bool"),
    ("embedding_initializer", lambda: jaxdl.Embedding(3, 2, initializer="xavier"),
     TypeError, r"Embedding: initializer must be None or a callable"),
    ("embedding_float_ids", lambda: _apply(jaxdl.Embedding(3, 2), F((2, 3))),
     TypeError, r"Embedding\(.*\) expects integer token ids, got dtype float"),
    ("embedding_scalar_ids", lambda: _apply(jaxdl.Embedding(3, 2), jnp.array(1), (2,)),
     ValueError, r"Embedding\(.*\) expects ids of layout \(batch, \.\.\.\), got a scalar"),
    ("embedding_attend_features", lambda: jaxdl.Embedding(3, 2).attend({"embedding": F((3, 2))}, F((4, 3))),
     ValueError, r"Embedding\(.*\)\.attend expects vectors of layout \(\.\.\., 2\), got shape \(4, 3\)"),
    ("embedding_attend_ids",
     lambda: jaxdl.Embedding(3, 2).attend({"embedding": F((3, 2))}, jnp.ones((4, 2), jnp.int32)),
     TypeError, r"expects a floating-point input"),
    ("positional_length_type", lambda: jaxdl.PositionalEmbedding(4.0),
     TypeError, r"PositionalEmbedding: max_length must be a positive int, got 4.0 of type float"),
    ("positional_too_long", lambda: _apply_with(jaxdl.PositionalEmbedding(4), (1, 3, 2), F((1, 5, 2))),
     ValueError, r"PositionalEmbedding\(max_length=4\): the sequence length \(axis 1\) must be <= max_length 4, got"
                 r" input of shape \(1, 5, 2\)"),
    ("positional_init_too_long", lambda: jaxdl.PositionalEmbedding(4).init(jax.random.key(0), (1, 5, 2)),
     ValueError, r"must be <= max_length 4"),
    ("positional_rank", lambda: _apply(jaxdl.PositionalEmbedding(4), F((2, 3))),
     ValueError, r"PositionalEmbedding\(max_length=4\) expects input of layout \(batch, time, features\), got shape"
                 r" \(2, 3\)"),
    ("positional_features", lambda: _apply_with(jaxdl.PositionalEmbedding(4), (1, 3, 2), F((1, 3, 5))),
     ValueError, r"was initialized for 2 features, got input of shape \(1, 3, 5\)"),
    ("layer_norm_axis_type", lambda: jaxdl.LayerNorm(axis=1.0),
     TypeError, r"LayerNorm: axis must be an int or a non-empty sequence of distinct ints, got 1.0"),
    ("layer_norm_axis_repeated", lambda: jaxdl.LayerNorm(axis=(1, 1)),
     ValueError, r"LayerNorm: axis must be .* distinct ints, got \(1, 1\)"),
    ("layer_norm_batch_axis", lambda: _apply(jaxdl.LayerNorm(axis=0), F((2, 3))),
     ValueError, r"LayerNorm\(.*\): axis must name axes 1 \.\. 1 .* never the batch axis 0; got input of shape \(2,"
                 r" 3\)"),
    ("layer_norm_axis_outside", lambda: _apply(jaxdl.LayerNorm(axis=-3), F((2, 3))),
     ValueError, r"never the batch axis 0; got input of shape \(2, 3\)"),
    ("layer_norm_epsilon_type", lambda: jaxdl.LayerNorm(epsilon="1e-5"),
     TypeError, r"LayerNorm: epsilon must be a real number, got '1e-5' of type str"),
    ("layer_norm_epsilon_negative", lambda: jaxdl.LayerNorm(epsilon=-1.0),
     ValueError, r"LayerNorm: epsilon must be a finite number >= 0, got -1.0"),
    ("layer_norm_scale_type", lambda: jaxdl.LayerNorm(scale=1),
     TypeError, r"LayerNorm: scale must be a bool, got 1 of type int"),
    ("layer_norm_features", lambda: _apply_with(jaxdl.LayerNorm(), (2, 3), F((2, 4))),
     ValueError, r"LayerNorm\(.*\) was initialized for normalized axes of shape \(3,\), got input of shape \(2, 4\)"),
    ("layer_norm_integer_input", lambda: _apply(jaxdl.LayerNorm(), jnp.ones((2, 3), jnp.int32)),
     TypeError, r"LayerNorm\(.*\) expects a floating-point input, got dtype int32"),
    ("rms_norm_epsilon", lambda: jaxdl.RMSNorm(epsilon=float("nan")),
     ValueError, r"RMSNorm: epsilon must be a finite number >= 0, got nan"),
    ("rms_norm_rank", lambda: jaxdl.RMSNorm().init(jax.random.key(0), (3,)),
     ValueError, r"RMSNorm\(epsilon=1e-06\) expects input of layout \(batch, \.\.\., features\), got shape \(3,\)"),
    ("rms_norm_features", lambda: _apply_with(jaxdl.RMSNorm(), (2, 3), F((2, 4))),
     ValueError, r"RMSNorm\(epsilon=1e-06\) was initialized for 3 features, got input of shape \(2, 4\)"),
    ("attention_heads", lambda: jaxdl.MultiHeadAttention(0),
     ValueError, r"MultiHeadAttention: num_heads must be a positive int, got 0"),
    ("attention_head_features", lambda: jaxdl.MultiHeadAttention(2, head_features=2.5),
     TypeError, r"MultiHeadAttention: head_features must be a positive int, got 2.5 of type float"),
    ("attention_causal", lambda: jaxdl.MultiHeadAttention(2, causal="yes"),
     TypeError, r"MultiHeadAttention: causal must be a bool, got 'yes' of type str"),
    ("attention_divisible", lambda: jaxdl.MultiHeadAttention(4).init(jax.random.key(0), (2, 3, 6)),
     ValueError, r"MultiHeadAttention\(.*\): the features \(6\) must be a multiple of num_heads \(4\) when"
                 r" head_features is None"),
    ("attention_rank", lambda: jaxdl.MultiHeadAttention(2).init(jax.random.key(0), (2, 6)),
     ValueError, r"MultiHeadAttention\(.*\) expects input of layout \(batch, time, features\), got shape \(2, 6\)"),
    ("attention_features", lambda: _apply_with(jaxdl.MultiHeadAttention(2), (1, 3, 4), F((1, 3, 6))),
     ValueError, r"MultiHeadAttention\(.*\) was initialized for 4 features, got input of shape \(1, 3, 6\)"),
    ("attention_float_lengths",
     lambda: _apply_with(jaxdl.MultiHeadAttention(2), (1, 3, 4), SequenceBatch(F((1, 3, 4)), F((1,)))),
     TypeError, r"MultiHeadAttention\(.*\): lengths must be integers, got dtype float"),
    ("attention_lengths_shape",
     lambda: _apply_with(jaxdl.MultiHeadAttention(2), (2, 3, 4), SequenceBatch(F((2, 3, 4)), jnp.array([3]))),
     ValueError, r"lengths must have shape \(batch,\) = \(2,\), got shape \(1,\)"),
    ("attention_lengths_range",
     lambda: _apply_with(jaxdl.MultiHeadAttention(2), (1, 3, 4), SequenceBatch(F((1, 3, 4)), jnp.array([4]))),
     ValueError, r"lengths must lie in \[0, 3\]"),
    ("attention_integer_input",
     lambda: _apply_with(jaxdl.MultiHeadAttention(2), (1, 3, 4), jnp.ones((1, 3, 4), jnp.int32)),
     TypeError, r"expects a floating-point input, got dtype int32"),
    ("average_window", lambda: jaxdl.AveragePooling(0),
     ValueError, r"AveragePooling: window must be a positive int, got 0"),
    ("average_window_count", lambda: jaxdl.AveragePooling((2, 2, 2)),
     ValueError, r"AveragePooling: window must be a positive int or 1 or 2 positive ints, got \(2, 2, 2\)"),
    ("average_stride_type", lambda: jaxdl.AveragePooling(2, stride=True),
     TypeError, r"AveragePooling: stride must be a positive int, got True of type bool"),
    ("average_rank", lambda: _apply(jaxdl.AveragePooling(2), F((2, 4))),
     ValueError, r"AveragePooling\(.*\) expects input of layout \(batch, channels, length\) or \(batch, channels,"
                 r" y, x\) \(rank 3 or 4\), got shape \(2, 4\)"),
    ("average_axes", lambda: _apply(jaxdl.AveragePooling((2, 2)), F((2, 3, 4))),
     ValueError, r"AveragePooling\(.*\): window and stride give sizes for 2 and 2 spatial axes, got input of shape"
                 r" \(2, 3, 4\) with 1"),
    ("average_too_large", lambda: _apply(jaxdl.AveragePooling(3), F((1, 1, 2, 4))),
     ValueError, r"AveragePooling\(.*\): window \(3, 3\) is larger than the input's spatial size \(2, 4\)"),
    ("global_rank", lambda: _apply(jaxdl.GlobalAveragePooling(), F((2, 4))),
     ValueError, r"GlobalAveragePooling\(\) expects input of layout .* with non-empty spatial axes, got shape \(2,"
                 r" 4\)"),
    ("global_max_empty", lambda: _apply(jaxdl.GlobalMaxPooling(), F((2, 4, 0))),
     ValueError, r"GlobalMaxPooling\(\) expects .* non-empty spatial axes, got shape \(2, 4, 0\)"),
    ("gelu_approximate", lambda: jaxdl.GELU(approximate="tanh"),
     TypeError, r"GELU: approximate must be a bool, got 'tanh' of type str"),
    ("silu_integer_input", lambda: _apply(jaxdl.SiLU(), jnp.ones((2, 3), jnp.int32)),
     TypeError, r"SiLU\(\) expects a floating-point input"),
    ("reshape_type", lambda: jaxdl.Reshape((2, 2.0)),
     TypeError, r"Reshape: shape must be a tuple of ints \(>= 1, or one -1\), got \(2, 2.0\) with 2.0 of type float"),
    ("reshape_two_unknown", lambda: jaxdl.Reshape((-1, -1)),
     ValueError, r"Reshape: shape must be a tuple of ints >= 1 with at most one -1, got \(-1, -1\)"),
    ("reshape_zero", lambda: jaxdl.Reshape((0, 3)), ValueError, r"at most one -1, got \(0, 3\)"),
    ("reshape_size", lambda: _apply(jaxdl.Reshape((5,)), F((2, 3, 4))),
     ValueError, r"Reshape\(shape=\(5,\)\): each example has shape \(3, 4\) \(12 values\), which does not fit shape"
                 r" \(5,\) \(5 values\)"),
    ("reshape_size_unknown", lambda: _apply(jaxdl.Reshape((5, -1)), F((2, 3, 4))),
     ValueError, r"does not fit shape \(5, -1\) \(a multiple of 5 values\)"),
    ("reshape_scalar", lambda: jaxdl.Reshape((1,)).apply({}, {}, jnp.array(1.0)),
     ValueError, r"Reshape\(shape=\(1,\)\) expects input with a batch axis, got a scalar"),
]


@pytest.mark.parametrize("call,error,message", [case[1:] for case in BAD_INPUTS],
                         ids=[case[0] for case in BAD_INPUTS])
def test_bad_arguments_and_inputs_are_clear_errors(call, error, message):
    with pytest.raises(error, match=message):
        call()
