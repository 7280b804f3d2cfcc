"""What layers declare (Layer.regularized, Layer.memory, Layer.sublayers) and what reads it:
L1/L2 regularizers, the training step, reset_memory, memory_for_batch; Serial's stable keys,
its errors naming the layer, and integer inputs through Serial.init and create_train_state."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxdl
from jaxdl.layers.recurrent.memory import memory_for_batch

KEY = jax.random.key(0)


@dataclasses.dataclass(frozen=True)
class KernelLayer(jaxdl.Layer):
    """y = x @ kernel + offset; regularizes ``kernel`` when ``declare`` (a subclass below)."""

    features: int

    def init(self, key, input_shape, dtype=jnp.float32):
        kernel = jax.random.normal(key, (input_shape[-1], self.features), dtype)
        return {"kernel": kernel, "offset": jnp.ones((self.features,), dtype)}, {}

    def apply(self, params, state, x, *, key=None, train=False):
        return x @ params["kernel"] + params["offset"], state


@dataclasses.dataclass(frozen=True)
class RegularizedKernelLayer(KernelLayer):
    regularized = ("kernel",)


@dataclasses.dataclass(frozen=True)
class RunningMean(jaxdl.Layer):
    """Identity that keeps a running mean of its input in state ``h`` (NOT recurrent memory)."""

    def init(self, key, input_shape, dtype=jnp.float32):
        return {}, {"h": jnp.zeros(input_shape[1:], dtype)}

    def apply(self, params, state, x, *, key=None, train=False):
        return x, {"h": 0.9 * state["h"] + 0.1 * jnp.mean(x, axis=0)} if train else state


@dataclasses.dataclass(frozen=True)
class CumulativeSum(jaxdl.Layer):
    """A custom recurrent layer: y_t = carry + sum_{s<=t} x_s, memorizing ``carry`` (batch, features)."""

    memory = ("carry",)

    def init(self, key, input_shape, dtype=jnp.float32):
        return {}, {"carry": jnp.zeros((input_shape[0], input_shape[-1]), dtype)}

    def apply(self, params, state, x, *, key=None, train=False):
        y = state["carry"][:, None, :] + jnp.cumsum(x, axis=1)
        return y, {"carry": y[:, -1]}


# --------------------------------------------------------------------------- regularized
def test_a_custom_kernel_is_regularized_when_declared_and_never_by_its_name_otherwise():
    declared = jaxdl.Serial(RegularizedKernelLayer(3), jaxdl.TanH(), jaxdl.FullyConnected(2))
    undeclared = jaxdl.Serial(KernelLayer(3), jaxdl.TanH(), jaxdl.FullyConnected(2))
    params, _ = declared.init(KEY, (4, 5), jnp.float64)
    assert jaxdl.regularized_mask(declared, params) == {
        "regularized_kernel_layer_0": {"kernel": True, "offset": False},
        "fully_connected_0": {"weights": True, "bias": False}}
    assert jaxdl.regularized_mask(undeclared, params | {"kernel_layer_0": params["regularized_kernel_layer_0"]}
                                  )["kernel_layer_0"] == {"kernel": False, "offset": False}
    l2 = jaxdl.L2Regularizer(0.5)
    kernel, weights = params["regularized_kernel_layer_0"]["kernel"], params["fully_connected_0"]["weights"]
    np.testing.assert_allclose(l2.norm(params, declared), 0.5 * (jnp.sum(kernel ** 2) + jnp.sum(weights ** 2)),
                               rtol=1e-12)
    gradient = l2.gradient(params, jaxdl.regularized_mask(declared, params))
    np.testing.assert_allclose(gradient["regularized_kernel_layer_0"]["kernel"], 0.5 * kernel, rtol=1e-12)
    np.testing.assert_array_equal(gradient["regularized_kernel_layer_0"]["offset"], 0.0)


def test_the_training_step_shrinks_exactly_the_declared_kernels():
    model = jaxdl.Serial(RegularizedKernelLayer(3), KernelLayer(2))
    regularized, plain = (jaxdl.Sgd(0.1, regularizer=jaxdl.L1Regularizer(0.01)), jaxdl.Sgd(0.1))
    start = jaxdl.create_train_state(model, regularized, 0, (4, 5), jnp.float64)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 5)))

    def loss(outputs, labels):
        return jnp.sum(outputs ** 2)

    shrunk, metrics = jaxdl.make_train_step(model, loss, regularized)(start, x, None)
    moved, _ = jaxdl.make_train_step(model, loss, plain)(start._replace(opt_state=plain.init(start.params)), x, None)
    kernel = start.params["regularized_kernel_layer_0"]["kernel"]
    np.testing.assert_allclose(shrunk.params["regularized_kernel_layer_0"]["kernel"],
                               moved.params["regularized_kernel_layer_0"]["kernel"] - 0.1 * 0.01 * jnp.sign(kernel),
                               rtol=1e-12)
    for name in ("offset", "kernel"):  # the undeclared layer's kernel and every offset: data gradient only
        np.testing.assert_array_equal(shrunk.params["kernel_layer_0"][name], moved.params["kernel_layer_0"][name])
    np.testing.assert_array_equal(shrunk.params["regularized_kernel_layer_0"]["offset"],
                                  moved.params["regularized_kernel_layer_0"]["offset"])
    np.testing.assert_allclose(metrics["regularization_loss"], 0.01 * jnp.sum(jnp.abs(kernel)), rtol=1e-12)


def test_penalty_in_the_loss_follows_the_declarations():
    model = jaxdl.Serial(RegularizedKernelLayer(2))
    start = jaxdl.create_train_state(model, jaxdl.Sgd(1.0), 0, (3, 2), jnp.float64)
    step = jaxdl.make_train_step(model, lambda out, y: jnp.zeros(()), jaxdl.Sgd(1.0), penalty=jaxdl.L2Regularizer(0.5))
    after, _ = step(start, jnp.ones((3, 2)), None)
    before = start.params["regularized_kernel_layer_0"]
    np.testing.assert_allclose(after.params["regularized_kernel_layer_0"]["kernel"], before["kernel"] * (1 - 1.0),
                               atol=1e-12)  # w - lr * 2 * 0.5 * w
    np.testing.assert_array_equal(after.params["regularized_kernel_layer_0"]["offset"], before["offset"])


def test_a_params_tree_without_the_model_is_refused_not_guessed():
    params = {"fully_connected_0": {"weights": jnp.ones((2, 2)), "bias": jnp.ones(2)}}
    with pytest.raises(ValueError, match=r"L2Regularizer.gradient: which leaves .* pass regularized=model"):
        jaxdl.L2Regularizer(0.1).gradient(params)
    with pytest.raises(ValueError, match=r"L2Regularizer.norm: regularized must be the model .* or a pytree of bools"):
        jaxdl.L2Regularizer(0.1).norm(params, {"fully_connected_0": True})
    np.testing.assert_allclose(jaxdl.L2Regularizer(0.1).norm(jnp.full(3, 2.0)), 1.2)  # a bare array: regularized
    with pytest.raises(TypeError, match=r"regularized_mask: layer must be a jaxdl Layer, got dict"):
        jaxdl.regularized_mask(params, params)


# -------------------------------------------------------------------------------- memory
def memory_model():
    return jaxdl.Serial(RunningMean(), CumulativeSum(), jaxdl.LSTM(3, memorize=True),
                        jaxdl.Residual(jaxdl.GRU(3, memorize=True)))


def test_reset_memory_resets_exactly_the_declared_memory():
    model = memory_model()
    params, state0 = model.init(KEY, (2, 4, 3), jnp.float64)
    assert jaxdl.memory_mask(model, state0) == {
        "running_mean_0": {"h": False}, "cumulative_sum_0": {"carry": True}, "lstm_0": {"h": True, "c": True},
        "residual_0": {"block": {"h": True}}}
    x = jnp.asarray(np.random.default_rng(1).normal(size=(2, 4, 3)))
    _, state = model.apply(params, state0, x, train=True)
    assert all(float(jnp.abs(leaf).sum()) > 0 for leaf in jax.tree.leaves(state))
    reset = jax.jit(jaxdl.reset_memory, static_argnums=0)(model, state)
    np.testing.assert_array_equal(reset["running_mean_0"]["h"], state["running_mean_0"]["h"])  # kept: not memory
    for leaf in jax.tree.leaves({k: v for k, v in reset.items() if k != "running_mean_0"}):
        np.testing.assert_array_equal(leaf, 0.0)
    partly = jaxdl.reset_memory(model, state, jnp.array([True, False]))
    np.testing.assert_array_equal(partly["cumulative_sum_0"]["carry"][0], 0.0)
    np.testing.assert_array_equal(partly["cumulative_sum_0"]["carry"][1], state["cumulative_sum_0"]["carry"][1])
    np.testing.assert_array_equal(partly["running_mean_0"]["h"], state["running_mean_0"]["h"])


def test_memory_for_batch_resizes_exactly_the_declared_memory():
    model = memory_model()
    _, state = model.init(KEY, (2, 4, 3), jnp.float64)
    state = jax.tree.map(lambda leaf: leaf + 1.0, state)
    bigger = memory_for_batch(model, state, 3)
    assert bigger["cumulative_sum_0"]["carry"].shape == (3, 3) and bigger["lstm_0"]["c"].shape == (3, 3)
    np.testing.assert_array_equal(bigger["cumulative_sum_0"]["carry"][2], 0.0)
    assert bigger["running_mean_0"]["h"].shape == (4, 3)  # (time, features): not memory, never cut
    smaller = memory_for_batch(model, state, 1)
    assert smaller["residual_0"]["block"]["h"].shape == (1, 3)
    assert memory_for_batch(model, state, 2) is state
    with pytest.raises(TypeError, match=r"memory_for_batch: model must be the jaxdl layer"):
        memory_for_batch(state, 2, 3)  # a state where the model goes


def test_evaluate_resets_declared_memory_through_the_eval_steps_model():
    model = jaxdl.Serial(CumulativeSum())
    params, state = model.init(KEY, (1, 2, 1))
    step = jaxdl.make_eval_step(model)
    assert step.model == model
    dirty = {"cumulative_sum_0": {"carry": jnp.full((1, 1), 5.0, jnp.float32)}}
    x, labels = jnp.ones((1, 2, 1), jnp.float32), jnp.zeros((1, 2, 1), jnp.float32)
    squared = lambda y, t: jnp.sum((y - t) ** 2)  # noqa: E731
    clean = jaxdl.evaluate(step, params, state, [(x, labels)], squared)["loss"]  # outputs 1, 2: squares 1 + 4
    assert clean > 0
    assert jaxdl.evaluate(step, params, dirty, [(x, labels)], squared)["loss"] == pytest.approx(clean)
    carried = jaxdl.evaluate(step, params, dirty, [(x, labels)], squared, reset=False)["loss"]  # outputs 6, 7
    assert carried == pytest.approx(clean * (36 + 49) / (1 + 4))
    with pytest.raises(ValueError, match=r"evaluate: the eval step does not say its model .* pass model="):
        jaxdl.evaluate(lambda p, s, x: model.apply(p, s, x), params, dirty, [(x, labels)], squared)


# ------------------------------------------------------------------------ Serial's keys
def test_inserting_a_dropout_into_a_trained_serial_renames_no_parameter():
    before = jaxdl.Serial(jaxdl.Conv(2, (3, 3)), jaxdl.ReLU(), jaxdl.Flatten(), jaxdl.FullyConnected(4),
                          jaxdl.FullyConnected(2))
    after = jaxdl.Serial(jaxdl.Conv(2, (3, 3)), jaxdl.ReLU(), jaxdl.Dropout(0.5), jaxdl.Flatten(),
                         jaxdl.FullyConnected(4), jaxdl.Dropout(0.2), jaxdl.FullyConnected(2))
    assert before.names == ("conv_0", "re_lu_0", "flatten_0", "fully_connected_0", "fully_connected_1")
    optimizer = jaxdl.Adam(1e-2)
    trained = jaxdl.create_train_state(before, optimizer, 0, (3, 1, 4, 4))
    x = jnp.asarray(np.random.default_rng(0).normal(size=(3, 1, 4, 4)), jnp.float32)
    trained, _ = jaxdl.make_train_step(before, jaxdl.softmax_cross_entropy, optimizer)(trained, x, jnp.array([0, 1, 0]))
    fresh, _ = after.init(KEY, (3, 1, 4, 4))
    assert jax.tree.structure(fresh) == jax.tree.structure(trained.params)
    np.testing.assert_array_equal(after.apply(trained.params, {}, x)[0], before.apply(trained.params, {}, x)[0])


def test_user_names_key_the_params_and_bad_names_are_refused():
    model = jaxdl.Serial(("encoder", jaxdl.FullyConnected(3)), jaxdl.ReLU(), ("head", jaxdl.FullyConnected(2)),
                         jaxdl.FullyConnected(2))
    assert model.names == ("encoder", "re_lu_0", "head", "fully_connected_0")
    assert set(model.init(KEY, (1, 4))[0]) == {"encoder", "head", "fully_connected_0"}
    assert repr(model).startswith("Serial(('encoder', FullyConnected(output_size=3")
    assert model == jaxdl.Serial(("encoder", jaxdl.FullyConnected(3)), jaxdl.ReLU(), ("head", jaxdl.FullyConnected(2)),
                                 jaxdl.FullyConnected(2))
    assert model != jaxdl.Serial(jaxdl.FullyConnected(3), jaxdl.ReLU(), jaxdl.FullyConnected(2), jaxdl.FullyConnected(2))
    with pytest.raises(ValueError, match=r"Serial: the layers' keys must be unique, got 'fully_connected_0' more than "
                                         r"once"):
        jaxdl.Serial(jaxdl.FullyConnected(2), ("fully_connected_0", jaxdl.FullyConnected(2)))
    with pytest.raises(ValueError, match=r"Serial: a layer's name must be a non-empty string without '/', got 'a/b' "
                                         r"at position 0"):
        jaxdl.Serial(("a/b", jaxdl.ReLU()))
    with pytest.raises(TypeError, match=r"Serial: expects jaxdl layers or \(name, layer\) pairs, got \(3, ReLU\(\)\)"):
        jaxdl.Serial((3, jaxdl.ReLU()))


def test_serial_reraises_a_layers_error_with_its_key_and_position():
    model = jaxdl.Serial(jaxdl.FullyConnected(3), jaxdl.ReLU(), ("head", jaxdl.Conv(2, (3, 3))))
    with pytest.raises(ValueError, match=r"^Serial: layer 'head' \(position 2\): Conv\(.*\) expects input of layout "
                                         r"\(batch, channels, y, x\)") as raised:
        model.init(KEY, (2, 4))
    assert "expects input of layout" in str(raised.value.__cause__)  # the original, chained
    inner = jaxdl.Serial(jaxdl.FullyConnected(3))
    params, _ = inner.init(KEY, (2, 4))
    with pytest.raises(TypeError, match=r"^Serial: layer 'fully_connected_0' \(position 0\): FullyConnected.* "
                                        r"expects a floating-point input, got dtype int32"):
        inner.apply(params, {}, jnp.ones((2, 4), jnp.int32))
    nested = jaxdl.Serial(jaxdl.ReLU(), jaxdl.Serial(jaxdl.Conv(2, (3, 3))))
    with pytest.raises(ValueError, match=r"^Serial: layer 'serial_0' \(position 1\): Serial: layer 'conv_0' "
                                         r"\(position 0\): Conv"):
        nested.init(KEY, (2, 5))


# ------------------------------------------------------------------------ integer inputs
@dataclasses.dataclass(frozen=True)
class Lookup(jaxdl.Layer):
    """A tiny Embedding-like layer: integer ids (batch, time) -> rows of a table."""

    vocabulary: int
    features: int

    regularized = ("table",)

    def init(self, key, input_shape, dtype=jnp.float32):
        return {"table": jax.random.normal(key, (self.vocabulary, self.features), dtype)}, {}

    def apply(self, params, state, x, *, key=None, train=False):
        if not jnp.issubdtype(jnp.result_type(x), jnp.integer):
            raise TypeError(f"{self!r} expects integer token ids, got dtype {jnp.result_type(x)}.")
        return params["table"][x], state


def test_integer_inputs_through_serial_init_and_create_train_state():
    model = jaxdl.Serial(jaxdl.Flatten(), Lookup(5, 3), jaxdl.Flatten(), jaxdl.FullyConnected(2))  # ints flattened
    params, _ = model.init(KEY, (4, 2, 3), jnp.float64, input_dtype=jnp.int32)
    assert params["lookup_0"]["table"].dtype == jnp.float64 and params["fully_connected_0"]["weights"].shape == (18, 2)
    assert jaxdl.output_shape(model, (4, 2, 3), input_dtype=jnp.int32) == (4, 2)
    optimizer = jaxdl.Adam(1e-2)
    train_state = jaxdl.create_train_state(model, optimizer, 0, (4, 2, 3), input_dtype=jnp.int32)
    assert train_state.params["lookup_0"]["table"].dtype == jnp.float32
    ids = jnp.asarray(np.random.default_rng(0).integers(0, 5, (4, 2, 3)), jnp.int32)
    step = jaxdl.make_train_step(model, jaxdl.softmax_cross_entropy, optimizer)
    trained, metrics = step(train_state, ids, jnp.array([0, 1, 1, 0]))
    assert np.isfinite(float(metrics["loss"]))
    assert not np.array_equal(trained.params["lookup_0"]["table"], train_state.params["lookup_0"]["table"])
    with pytest.raises(TypeError, match=r"Serial: layer 'lookup_0' \(position 1\): Lookup.* expects integer token ids, "
                                        r"got dtype float32"):
        jaxdl.create_train_state(model, optimizer, 0, (4, 2, 3))  # without input_dtype: traced with float32
    with pytest.raises(TypeError, match=r"create_train_state: input_dtype must be a dtype such as jnp.int32, got "
                                        r"'tokens'"):
        jaxdl.create_train_state(model, optimizer, 0, (4, 2, 3), input_dtype="tokens")
    with pytest.raises(TypeError, match=r"create_train_state: .*dtype"):
        jaxdl.create_train_state(model, optimizer, 0, (4, 2, 3), jnp.int32)  # the params' dtype stays floating
