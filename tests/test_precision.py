"""Mixed precision (`jaxdl.precision`): the layer dtype rule, `MixedPrecision`, float32 losses,
BatchNorm statistics, LeNet in bfloat16 and checkpoints shared by bfloat16 and float32 runs."""

import importlib.util
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from layer_registry import LAYER_CASES
from synthetic_digits import tiny_split

import jaxdl
from jaxdl import checkpoint
from jaxdl.datasets.mnist import MNISTSplits
from jaxdl.precision import MixedPrecision
from jaxdl.recipes import lenet

BF16, F32 = jnp.bfloat16, jnp.float32
IDS = [case[0] for case in LAYER_CASES]
#: bfloat16 keeps 8 significant bits (rounding error 2^-9 ~ 0.2% per operation): a layer's
#: bfloat16 output may differ from its float32 output by a few percent of its largest entry.
BF16_TOL = 0.03


def _floating(leaf):
    return jnp.issubdtype(jnp.result_type(leaf), jnp.floating)


def dtypes(tree):
    return {jnp.result_type(leaf).name for leaf in jax.tree.leaves(tree) if _floating(leaf)}


def lenet_config(tmp_path, **overrides):
    values = {"epochs": 1, "batch_size": 16, "learning_rate": 2e-3, "warmup_epochs": 0.5, "seed": 3,
              "validation_size": 16, "eval_batch_size": 16, "output_dir": str(tmp_path / "run"), "progress": False,
              "plot": False}
    return lenet.LeNetConfig(**{**values, **overrides})


def lenet_batch(batch=16, seed=0):
    split = tiny_split(batch, seed)
    return jnp.asarray(split.images[:, None] / np.float32(255)), jnp.asarray(split.labels)


# ---------------------------------------------------------------- the wrapper
def test_params_tree_is_the_inner_models_and_float32():
    model = jaxdl.models.lenet()
    params, state = model.init(jax.random.key(0), (2, 1, 28, 28))
    wrapped_params, wrapped_state = MixedPrecision(model).init(jax.random.key(0), (2, 1, 28, 28))
    assert jax.tree.structure(wrapped_params) == jax.tree.structure(params)
    jax.tree.map(np.testing.assert_array_equal, wrapped_params, params)
    assert dtypes(wrapped_params) == {"float32"} and wrapped_state == state
    # Inside a Serial the wrapper keeps its layer's key.
    serial = jaxdl.Serial(MixedPrecision(jaxdl.Conv(2, (3, 3))), jaxdl.Flatten(), jaxdl.FullyConnected(2))
    assert set(serial.init(jax.random.key(0), (2, 1, 4, 4))[0]) == {"conv_0", "fully_connected_0"}


def test_lenet_trains_in_bfloat16_with_float32_gradients_params_and_adam_moments():
    model = MixedPrecision(jaxdl.models.lenet())
    optimizer = jaxdl.Adam(2e-3)
    train_state = jaxdl.create_train_state(model, optimizer, jax.random.key(0), (16, 1, 28, 28))
    x, y = lenet_batch()
    grads = jax.eval_shape(jax.grad(lambda p: jaxdl.cross_entropy(model.apply(p, train_state.state, x)[0], y)),
                           train_state.params)
    assert {leaf.dtype for leaf in jax.tree.leaves(grads)} == {jnp.dtype(F32)}
    step = jaxdl.make_train_step(model, jaxdl.cross_entropy, optimizer)
    after, metrics = step(train_state, x, y)
    assert dtypes(after.params) == dtypes(after.opt_state) == {"float32"}
    assert {metric.dtype for metric in metrics.values()} == {jnp.dtype(F32)}
    adam, = [node for node in jax.tree.leaves(after.opt_state, is_leaf=lambda n: hasattr(n, "nu"))
             if hasattr(node, "nu")]  # optax's ScaleByAdamState: the moments mu and nu
    assert dtypes((adam.mu, adam.nu)) == {"float32"} and float(jnp.abs(adam.nu["conv_0"]["weights"]).max()) > 0
    program = str(jax.make_jaxpr(step)(train_state, x, y))
    assert "conv_general_dilated" in program and "bf16[16,6,28,28]" in program  # bf16 convolutions (the CPU fast path runs its forward pass in float32)
    losses = [float(metrics["data_loss"])]
    for _ in range(7):
        after, metrics = step(after, x, y)
        losses.append(float(metrics["data_loss"]))
    assert all(np.isfinite(losses)) and losses[-1] < 0.5 * losses[0], losses


def test_output_dtype_none_returns_the_compute_dtype_and_float16_works():
    layer = jaxdl.FullyConnected(3)
    params, _ = layer.init(jax.random.key(0), (4, 5))
    assert MixedPrecision(layer, output_dtype=None).apply(params, {}, jnp.ones((4, 5)))[0].dtype == BF16
    model = MixedPrecision(jaxdl.models.lenet(), compute_dtype=jnp.float16)
    assert model.compute_dtype == "float16"
    params, state = model.init(jax.random.key(0), (16, 1, 28, 28))
    x, _ = lenet_batch()
    y, _ = model.apply(params, state, x)
    expected, _ = model.layer.apply(params, state, x)
    assert y.dtype == F32 and np.allclose(y, expected, atol=BF16_TOL)
    assert "f16[16,120]" in str(jax.make_jaxpr(lambda x: model.apply(params, state, x))(x))  # dense in float16


@pytest.mark.parametrize("value,problem", [
    ("int8", "got 'int8' (int8, not a floating dtype)"),
    (jnp.int32, "(int32, not a floating dtype)"),
    ("bf16", "got 'bf16', which is not a dtype"),
    ("float8_e4m3fn", "(float8_e4m3fn, a floating dtype)"),
])
def test_bad_dtypes_are_a_clear_error(value, problem):
    expected = "must be one of 'float32', 'bfloat16', 'float16', 'float64'"
    with pytest.raises(ValueError, match=rf"MixedPrecision: compute_dtype {expected}.*") as error:
        MixedPrecision(jaxdl.ReLU(), compute_dtype=value)
    assert problem in str(error.value)
    with pytest.raises(ValueError, match=r"MixedPrecision: output_dtype must be .* or None; got 'int8'"):
        MixedPrecision(jaxdl.ReLU(), output_dtype="int8")
    with pytest.raises(TypeError, match="MixedPrecision: layer must be a jaxdl layer, got 'relu'"):
        MixedPrecision("relu")


# ---------------------------------------------------------------- every layer of the registry
def _run(layer, params, state, x):
    key = jax.random.key(3) if layer.needs_key_in_training else None
    return layer.apply(params, state, x, key=key, train=True)


@pytest.mark.parametrize("name,layer,shape", LAYER_CASES, ids=IDS)
def test_every_layer_in_bfloat16_is_close_to_float32(name, layer, shape):
    params, state = layer.init(jax.random.key(0), shape, F32)
    x = jax.random.normal(jax.random.key(1), shape, F32)
    expected, expected_state = _run(layer, params, state, x)
    # Rule 1: a bfloat16 input computes in bfloat16 with float32 params; state keeps its dtype.
    y, new_state = _run(layer, params, state, x.astype(BF16))
    assert y.dtype == BF16
    assert jax.tree.map(lambda a: a.dtype, new_state) == jax.tree.map(lambda a: a.dtype, state)
    # The wrapper: float32 output, close to the float32 computation.
    wrapped, wrapped_state = _run(MixedPrecision(layer), params, state, x)
    assert wrapped.dtype == F32
    assert jax.tree.map(lambda a: a.dtype, wrapped_state) == jax.tree.map(lambda a: a.dtype, state)
    scale = float(jnp.max(jnp.abs(expected))) or 1.0
    np.testing.assert_allclose(wrapped, expected, rtol=BF16_TOL, atol=BF16_TOL * scale)
    np.testing.assert_array_equal(wrapped, y.astype(F32))
    for new, old in zip(jax.tree.leaves(wrapped_state), jax.tree.leaves(expected_state)):
        np.testing.assert_allclose(new, old, rtol=BF16_TOL, atol=BF16_TOL * (float(jnp.max(jnp.abs(old))) or 1.0))


# ---------------------------------------------------------------- float32 where it matters
def test_losses_in_bfloat16_are_float32_and_not_capped():
    wrong = jnp.asarray([[1.0, 0.0], [0.0, 1.0]], BF16)  # confident and wrong
    loss = jaxdl.cross_entropy(wrong, jnp.array([1, 0]), reduction="mean")
    assert loss.dtype == F32 and np.isfinite(loss) and float(loss) > 10  # bfloat16's eps would give 4.85
    assert float(loss) == pytest.approx(-np.log(np.finfo(np.float32).eps), rel=1e-6)
    logits = jnp.asarray([[30.0, -30.0]], BF16)
    loss = jaxdl.softmax_cross_entropy(logits, jnp.array([1]))
    assert loss.dtype == F32 and float(loss) == pytest.approx(60.0, rel=1e-6)
    grad = jax.grad(lambda p: jaxdl.cross_entropy(p, jnp.array([1, 0])))(wrong)
    assert grad.dtype == BF16 and np.all(np.isfinite(np.asarray(grad, np.float32)))
    # float64 and float32 keep their own dtype and eps (the exercise's numbers).
    for dtype in (jnp.float64, F32):
        loss = jaxdl.cross_entropy(wrong.astype(dtype), jnp.array([1, 0]), reduction="mean")
        assert loss.dtype == dtype and float(loss) == pytest.approx(-np.log(np.finfo(dtype).eps), rel=1e-6)


def test_softmax_computes_in_float32_and_returns_the_input_dtype():
    x = (10 * jax.random.normal(jax.random.key(0), (5, 7))).astype(BF16)
    y, _ = jaxdl.SoftMax().apply({}, {}, x)
    assert y.dtype == BF16
    np.testing.assert_array_equal(y, jax.nn.softmax(x.astype(F32), axis=-1).astype(BF16))


def test_batch_norm_statistics_are_float32_and_the_normalization_is_accurate():
    layer = MixedPrecision(jaxdl.BatchNormalization())
    params, state = layer.init(jax.random.key(0), (64, 3))
    x = 100.0 + jax.random.normal(jax.random.key(1), (64, 3), F32)  # a large mean next to the spread
    y, new_state = layer.apply(params, state, x, train=True)
    assert dtypes(new_state) == {"float32"} and y.dtype == F32
    rounded = np.asarray(x.astype(BF16), np.float32)  # what the layer sees
    np.testing.assert_allclose(new_state["mean"], rounded.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(new_state["var"], rounded.var(axis=0), rtol=1e-4)
    reference = (rounded - rounded.mean(axis=0)) / np.sqrt(rounded.var(axis=0) + 1e-5)
    # Normalized in float32, only the output rounded to bfloat16 (x * inv + shift in bfloat16
    # would be off by ~100 / std * 2^-9 ~ 0.2 here).
    np.testing.assert_allclose(y, reference, rtol=2 ** -8, atol=2 ** -8)


# ---------------------------------------------------------------- LeNet
class StopAfterEpochs(jaxdl.Callback):
    """Raises KeyboardInterrupt (as Ctrl-C would) once ``epoch`` epochs are done (0-based starts)."""

    def __init__(self, epoch):
        self.epoch = epoch

    def on_epoch_start(self, epoch, steps):
        if epoch == self.epoch:
            raise KeyboardInterrupt("simulated Ctrl-C")


def test_checkpoints_round_trip_between_bfloat16_and_float32_runs(tmp_path, monkeypatch):
    """A 3-epoch run: epoch 1 in bfloat16, resumed for epoch 2 in float32, resumed for epoch 3 in
    bfloat16 again; each checkpoint records its compute dtype and holds float32 params."""
    data = MNISTSplits(tiny_split(32, 0), tiny_split(16, 1), tiny_split(16, 2))
    real_fit, logs = jaxdl.fit, []

    def run(compute_dtype, resume, stop_after=None):
        if stop_after is not None:
            monkeypatch.setattr(jaxdl, "fit", lambda *a, **k: real_fit(
                *a, **{**k, "callbacks": [*k["callbacks"], StopAfterEpochs(stop_after)]}))
        config = lenet_config(tmp_path, epochs=3, compute_dtype=compute_dtype, resume=resume)
        try:
            result = lenet.train_lenet(config, data, log=logs.append, evaluate_test=False)
        except KeyboardInterrupt:
            result = None
        monkeypatch.setattr(jaxdl, "fit", real_fit)
        manifest = checkpoint.read_manifest(checkpoint.find_step_dir(tmp_path / "run" / "checkpoints", "last"))
        assert manifest["metadata"]["config"]["compute_dtype"] == compute_dtype
        assert manifest["model_config"] == {"name": "lenet"}
        return result, manifest

    _, manifest = run("bfloat16", resume=False, stop_after=1)
    assert manifest["metadata"]["epoch"] == 1
    _, manifest = run("float32", resume=True, stop_after=2)  # a bfloat16 checkpoint restores in a float32 run
    assert manifest["metadata"]["epoch"] == 2
    assert any("Resuming the bfloat16 run with compute dtype float32" in line for line in logs)
    last, manifest = run("bfloat16", resume=True)  # and a float32 one in a bfloat16 run
    assert any("Resuming the float32 run with compute dtype bfloat16" in line for line in logs)
    assert last.fit.status == "completed" and manifest["metadata"]["epoch"] == 3
    assert dtypes(last.fit.train_state.params) == dtypes(last.fit.train_state.opt_state) == {"float32"}
    # The bfloat16 run's params evaluate in float32 too, with nearly the same outputs.
    x = jnp.asarray(data.test.images[:, None] / np.float32(255))
    params, state = last.fit.train_state.params, last.fit.train_state.state
    float32, _ = jaxdl.models.lenet().apply(params, state, x)
    bfloat16, _ = MixedPrecision(jaxdl.models.lenet()).apply(params, state, x)
    np.testing.assert_allclose(bfloat16, float32, atol=0.05)


def test_lenet_config_and_command_line_take_the_compute_dtype(tmp_path):
    with pytest.raises(lenet.ConfigError, match=r"compute_dtype must be one of \('float32', 'bfloat16', 'float16'\), "
                                                r"got 'int8'"):
        lenet.validate_config(lenet_config(tmp_path, compute_dtype="int8"))
    path = pathlib.Path(__file__).resolve().parents[1] / "scripts" / "train_lenet.py"
    spec = importlib.util.spec_from_file_location("train_lenet_script", path)
    train_script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train_script)
    args = train_script.parse_args(["--compute-dtype", "bfloat16"])
    assert train_script.config_from_args(args).compute_dtype == "bfloat16"
    assert train_script.config_from_args(train_script.parse_args([])).compute_dtype == "float32"
    with pytest.raises(SystemExit):
        train_script.parse_args(["--compute-dtype", "int8"])
