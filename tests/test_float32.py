"""float32 as users run it: the training step, and the registry with ``jax_enable_x64`` off.

* The training step (`layer_registry.TRAINING_CASES`): one `jaxdl.make_train_step` step from
  `jaxdl.create_train_state(..., dtype=jnp.float32)` keeps params, state, optimizer state and
  metrics in float32, computes nothing in float64, and agrees with the float64 step from the
  same (exactly converted) train state within float32 tolerance.
* x64 off: the test session runs with x64 on (conftest.py), which changes default dtypes
  (``jnp.arange``, ``jnp.zeros``, random draws and integer draws, ``jnp.asarray`` of lists).
  One subprocess with x64 off runs, for every registry layer (outputs, new state and
  gradients, evaluation and training mode) and every training case (one step), the same
  jitted float32 computation as this process, with the default dtypes everywhere and JAX's
  "float64 is not available, truncated to float32" warning turned into an error, compiled as
  users compile it (without the suite's ``XLA_FLAGS``, tests/conftest.py). The results
  must be float32 and equal this process's float32 results within a few ulps. The subprocess
  starts (and imports JAX) with this module's first test and computes the cases this process
  asks for, one at a time: a test asks for its case, computes the x64-on result while the
  subprocess computes the x64-off one, and compares. Under xdist each worker has its own
  subprocess, which computes only that worker's cases.
"""

import functools
import os
import subprocess
import sys
import time
import traceback
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxdl
from layer_registry import LAYER_CASES, TRAINING_CASES
from plain_python import plain_env
from test_layer_properties import (
    EPS32, FLOAT32_GRAD_TOL, assert_trees_close, describe_float64, float64_values_in, to_float64)

LAYER_IDS = [case[0] for case in LAYER_CASES]
TRAINING_IDS = [case[0] for case in TRAINING_CASES]
TRAINING_BY_NAME = {case[0]: case[1:] for case in TRAINING_CASES}
TESTS_DIR = Path(__file__).resolve().parent
#: x64 off vs on, same float32 program: rtol and atol (relative to the largest entry).
X64_OFF_TOL = (4 * EPS32, 4 * EPS32)


def _normal(key, shape, dtype):
    """A normal draw in ``dtype``, or in the default float dtype when ``dtype`` is None."""
    return jax.random.normal(key, shape) if dtype is None else jax.random.normal(key, shape, dtype)


def _uniform(key, shape, dtype):
    """A uniform [0, 1) draw in ``dtype``, or in the default float dtype when ``dtype`` is None."""
    return jax.random.uniform(key, shape) if dtype is None else jax.random.uniform(key, shape, dtype)


def layer_results(layer, shape, dtype=None) -> dict:
    """Outputs, new state and gradients of ``layer`` in training and evaluation mode.

    One jitted program from the initialization on. ``dtype=None`` uses the defaults
    (`Layer.init`'s float32, the default float of random draws): float32 with x64 off; with
    x64 on pass ``jnp.float32``. Evaluation mode only for layers where it differs (a layer
    with state or randomness); elsewhere ``train`` changes nothing and would only double the
    compilation.
    """
    y_shape = jaxdl.output_shape(layer, shape, jnp.float32)
    has_state = bool(jax.tree.leaves(jax.eval_shape(lambda k: layer.init(k, shape, jnp.float32)[1],
                                                    jax.random.key(0))))
    modes = (("train", True), ("eval", False)) if has_state or layer.needs_key_in_training else (("train", True),)

    @jax.jit
    def run(key):
        init_key, x_key, cotangent_key, apply_key = jax.random.split(key, 4)
        params, state = layer.init(init_key, shape) if dtype is None else layer.init(init_key, shape, dtype)
        x = _normal(x_key, shape, dtype)
        cotangent = _normal(cotangent_key, y_shape, dtype)
        results = {}
        for mode, train in modes:
            def f(params, x):
                return layer.apply(params, state, x, key=apply_key, train=train)
            y, vjp, new_state = jax.vjp(f, params, x, has_aux=True)
            results[f"{mode}_values"] = {"y": y, "state": new_state}
            results[f"{mode}_grads"] = vjp(cotangent)
        return results

    return run(jax.random.key(0))


@functools.lru_cache(maxsize=None)
def training_setup(name: str, dtype=None):
    """``(train_state, x, labels, step)`` of a training case; built once per process.

    `jaxdl.create_train_state` (its default dtype, float32, when ``dtype`` is None), an input
    batch (the default float dtype if None) and labels ("classes": int32 class indices;
    "targets": uniform floats), and the jitted `jaxdl.make_train_step` (cached, so the tests
    that share it compile it once per dtype).
    """
    model, shape, loss_fn, optimizer, labels = TRAINING_BY_NAME[name]
    key = jax.random.key(0)
    train_state = (jaxdl.create_train_state(model, optimizer, key, shape) if dtype is None
                   else jaxdl.create_train_state(model, optimizer, key, shape, dtype=dtype))
    x = _normal(jax.random.key(1), shape, dtype)
    out_shape = jaxdl.output_shape(model, shape, x.dtype)
    if labels == "classes":
        # int32 explicitly: the default integer (int64 with x64) would draw other labels.
        y = jax.random.randint(jax.random.key(2), out_shape[:-1], 0, out_shape[-1], jnp.int32)
    else:
        y = _uniform(jax.random.key(2), out_shape, dtype)
    return train_state, x, y, jaxdl.make_train_step(model, loss_fn, optimizer)


def _step_results(train_state, metrics) -> dict:
    """The comparable parts of a step's result (the PRNG key as its raw bits)."""
    return {
        "params": train_state.params, "state": train_state.state, "opt_state": train_state.opt_state,
        "key": jax.random.key_data(train_state.key), "step": train_state.step, "metrics": metrics,
    }


def training_results(name: str, dtype=None) -> dict:
    """One `jaxdl.make_train_step` step of a training case (see `training_setup`)."""
    train_state, x, y, step = training_setup(name, dtype)
    return _step_results(*step(train_state, x, y))


def flatten(tree) -> dict:
    """``{key path: numpy array}`` for the leaves of ``tree`` (comparable across processes)."""
    return {jax.tree_util.keystr(path): np.asarray(leaf)
            for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


# --------------------------------------------------------------------- x64 off, in a subprocess

X64_OFF_CASES = ([(f"layer-{name}", layer_results, (layer, shape)) for name, layer, shape in LAYER_CASES]
                 + [(f"training-{name}", training_results, (name,)) for name in TRAINING_IDS])


def _x64_off_main(directory: str) -> None:
    """The subprocess: the cases of `X64_OFF_CASES` named on its standard input (one a line),
    in float32 with x64 off, in the order asked, until the input ends.

    Writes ``<case>.npz`` (the flattened results) or ``<case>.error`` as soon as each case is
    done.
    """
    assert jnp.arange(1).dtype == jnp.int32 and jnp.zeros(()).dtype == jnp.float32, "x64 is on"
    warnings.filterwarnings("error", message=r".*is not available, and will be truncated")
    cases = {case: (fn, args) for case, fn, args in X64_OFF_CASES}
    for line in sys.stdin:
        case = line.strip()
        fn, args = cases[case]
        path, partial = Path(directory, case), Path(directory, "partial.npz")
        try:
            np.savez(partial, **flatten(fn(*args)))
            os.replace(partial, path.with_suffix(".npz"))
        except Exception as error:  # reported by the case's test
            Path(directory, "partial.txt").write_text(
                "".join(traceback.format_exception_only(type(error), error)).strip())
            os.replace(Path(directory, "partial.txt"), path.with_suffix(".error"))


_CHILD = f"""
import sys
import jax
jax.config.update("jax_enable_x64", False)
sys.path.insert(0, {str(TESTS_DIR)!r})
import test_float32
test_float32._x64_off_main(sys.argv[1])
"""


class _X64OffRun:
    """The subprocess (started once per module): `ask` for a case, then `case` waits for its
    results."""

    #: Seconds one case may take in the subprocess (about 1 on an idle 2-core machine).
    TIMEOUT = 300.0

    def __init__(self, directory: Path):
        self.directory = directory
        self.deadline = time.monotonic() + self.TIMEOUT
        self.log = open(directory / "output.txt", "w+")
        self.process = subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(directory)],
            # x64 off and JAX's default compilation (without the suite's XLA_FLAGS, conftest.py):
            # every registry layer also runs, in float32, through the code XLA generates for users.
            env=plain_env(directory / "jaxdl_cache", JAX_ENABLE_X64="0"),
            stdin=subprocess.PIPE, stdout=self.log, stderr=subprocess.STDOUT, text=True)

    def ask(self, case: str) -> None:
        """Has the subprocess compute ``case`` next (`case` then waits for it)."""
        self.deadline = time.monotonic() + self.TIMEOUT
        try:
            self.process.stdin.write(case + "\n")
            self.process.stdin.flush()
        except BrokenPipeError:  # it ended: `case` reports how
            pass

    def case(self, case: str) -> dict:
        path = self.directory / case
        while True:
            if path.with_suffix(".npz").exists():
                with np.load(path.with_suffix(".npz")) as data:
                    return {key: data[key] for key in data.files}
            if path.with_suffix(".error").exists():
                pytest.fail(f"{case} with x64 off: {path.with_suffix('.error').read_text()}")
            if self.process.poll() is not None and not path.with_suffix(".npz").exists():
                self.log.seek(0)
                pytest.fail(f"the x64-off subprocess ended (exit code {self.process.returncode}) without "
                            f"{case}:\n{self.log.read()[-5000:]}")
            if time.monotonic() > self.deadline:
                pytest.fail(f"the x64-off subprocess gave no result for {case} within {self.TIMEOUT:.0f} s")
            time.sleep(0.05)

    def close(self):
        try:
            self.process.stdin.close()  # the end of its input: it exits
            self.process.wait(timeout=10)
        except (BrokenPipeError, subprocess.TimeoutExpired):
            pass
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self.log.close()


@pytest.fixture(scope="module")
def x64_off(tmp_path_factory):
    run = _X64OffRun(tmp_path_factory.mktemp("float32_x64_off"))
    yield run
    run.close()


@pytest.fixture(scope="module", autouse=True)
def _start_the_x64_off_run_early(request):
    """Starts the subprocess before this module's first test, if any test here uses it, so it
    runs alongside the in-process tests."""
    if any("x64_off" in getattr(item, "fixturenames", ()) for item in request.session.items
           if item.module is request.module):
        request.getfixturevalue("x64_off")


def _assert_all_float32(flat: dict, what: str) -> None:
    wider = {key: str(value.dtype) for key, value in flat.items()
             if np.issubdtype(value.dtype, np.floating) and value.dtype != np.float32}
    assert not wider, f"{what}: floating values not in float32: {wider}"


def _assert_flat_close(actual: dict, expected: dict, what: str) -> None:
    assert sorted(actual) == sorted(expected), f"{what}: different results {sorted(actual)} vs {sorted(expected)}"
    rtol, atol = X64_OFF_TOL
    for group in sorted({key.split("]")[0] + "]" for key in expected}):  # "['train_grads']", "['params']"
        keys = [key for key in expected if key.startswith(group)]
        # Updated params and gradients: one scale per group (a gradient's mathematically zero
        # entries are rounding noise of the size of the others); values: per array.
        scale = "tree" if any(word in group for word in ("grads", "params", "opt_state")) else "leaf"
        assert_trees_close({k: actual[k] for k in keys}, {k: expected[k] for k in keys}, rtol, atol,
                           scale=scale, err_msg=what)


# --------------------------------------------------------------------- the training step, x64 on

@pytest.mark.parametrize("name", TRAINING_IDS)
def test_train_step_stays_float32(name):
    """`create_train_state(..., dtype=float32)` and one step: all float32, nothing in float64."""
    train_state, x, y, step = training_setup(name, jnp.float32)
    _assert_all_float32(flatten(_step_results(train_state, {})), "the float32 train state")
    new_state, metrics = step(train_state, x, y)
    assert jax.tree.structure(new_state) == jax.tree.structure(train_state)
    flat = flatten(_step_results(new_state, metrics))
    assert flat["['step']"].dtype == np.int32
    wider = {key: str(value.dtype) for key, value in flat.items()
             if np.issubdtype(value.dtype, np.floating) and value.dtype != np.float32}
    promoted = float64_values_in(jax.make_jaxpr(step)(train_state, x, y).jaxpr)
    # optax computes Adam's scalar bias corrections 1 - beta**count with Python floats, in
    # float64 when x64 is on (in float32 with x64 off); that is optax's, not jaxdl's.
    promoted = {where: prims for where, prims in promoted.items() if f"{os.sep}optax{os.sep}" not in where}
    assert not wider and not promoted, (
        f"one float32 train step: results not in float32: {wider}; "
        f"computes in float64 at:{describe_float64(promoted)}")


@pytest.mark.parametrize("name", TRAINING_IDS)
def test_train_step_float32_agrees_with_float64(name):
    """The float32 step and the float64 step from the same (exactly converted) train state."""
    train_state, x, y, step = training_setup(name, jnp.float32)
    new32, metrics32 = step(train_state, x, y)
    new64, metrics64 = step(*to_float64((train_state, x, y)))
    rtol, atol = FLOAT32_GRAD_TOL
    for part in ("params", "state", "opt_state"):
        assert_trees_close(to_float64(getattr(new32, part)), getattr(new64, part), rtol, atol, scale="tree",
                           err_msg=f"{part} after one step, float32 vs float64")
    assert_trees_close(to_float64(metrics32), metrics64, rtol, atol, err_msg="metrics, float32 vs float64")
    np.testing.assert_array_equal(jax.random.key_data(new32.key), jax.random.key_data(new64.key))


# --------------------------------------------------------------------- x64 off vs on

@pytest.mark.parametrize("name,layer,shape", LAYER_CASES, ids=LAYER_IDS)
def test_layer_with_x64_off_matches_x64_on(name, layer, shape, x64_off):
    x64_off.ask(f"layer-{name}")
    expected = flatten(layer_results(layer, shape, jnp.float32))
    actual = x64_off.case(f"layer-{name}")
    _assert_all_float32(actual, f"{name} with x64 off")
    _assert_flat_close(actual, expected, f"{name}: float32 with x64 off vs on")


@pytest.mark.parametrize("name", TRAINING_IDS)
def test_train_step_with_x64_off_matches_x64_on(name, x64_off):
    x64_off.ask(f"training-{name}")
    expected = flatten(training_results(name, jnp.float32))
    actual = x64_off.case(f"training-{name}")
    _assert_all_float32(actual, f"{name} with x64 off")
    _assert_flat_close(actual, expected, f"{name}: float32 train step with x64 off vs on")
