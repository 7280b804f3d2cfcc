"""Forward mode and second order through every layer of the registry, float64 and float32.

The CPU fast paths (`fast_conv`, `tiled_max_pool`, the recurrent layers' fused derivative)
are `jax.custom_jvp` rules; these properties check that every transformation goes through
them and agrees with the plain paths (`lax.conv`, `lax.reduce_window`, autodiff through
`lax.scan`), which `plain_paths` swaps in:

* `jax.jvp` equals central finite differences (float64) and the float64 JVP at the same
  point (float32, the tolerances of test_layer_properties.py).
* Hessian-vector products (`jax.jvp` of `jax.grad`, with respect to params and input) equal
  the plain paths' and, in float64, central differences of the gradient.
* `jax.hessian` with respect to the input runs and equals the plain paths' (float64).

About half of the registry's cases (dense, activations, dropout, batch norm, overlapping
pooling) have no fast path: for them the comparisons with the plain paths compare a program
with itself, and what checks them is the finite differences (JVP and, in float64, HVP) and,
for the Hessian, that it runs with the right shape. `test_plain_paths_really_swap_the_fast_paths`
checks that the swap takes effect where there is a fast path.
* `jax.linearize` followed by `jax.linear_transpose` equals `jax.vjp`.

Each layer runs in training mode with a fixed key (dropout masks and batch statistics
included); the scalar is ``sum(sin(outputs) * weights)`` so that second derivatives are not
trivially zero.

Shared work: each (case, dtype) sets up and compiles its fast-path programs once per process
(`fast_setup`, `jitted_jvp`; tests/conftest.py runs a case's tests one after the other), the
float32 JVP test reuses the float64 test's compiled JVP, the finite differences of the float64
JVP and HVP tests take the outputs and gradients at the shifted points from the primal outputs
of the compiled JVP and HVP programs (no program of their own; the arithmetic in NumPy), and a
plain-paths program is compiled only when it differs from the fast one (`plain_paths_result`):
where the traced programs are the same, so would be their results, and the comparison could
not fail.
"""

import contextlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from layer_registry import LAYER_CASES
from test_layer_properties import (
    DTYPES,
    FLOAT32_GRAD_TOL,
    FLOAT32_VALUE_TOL,
    IDS,
    _init,
    assert_trees_close,
    shared,
    to_float64,
)

from jaxdl.layers import conv, pooling
from jaxdl.layers.recurrent import layers as recurrent_layers
from jaxdl.layers.recurrent.sequence import scan_sequence

KEY = jax.random.key(7)
#: Same math, differently ordered float operations: rtol, atol relative to the largest entry.
SAME_MATH_TOL = {jnp.float64: (1e-9, 1e-11), jnp.float32: (2e-5, 2e-6)}


@contextlib.contextmanager
def plain_paths():
    """Swaps the CPU fast paths for the plain ones they are tested equal to."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(conv, "fast_conv", lambda x, w, stride, padding, blocked: conv.conv_reference(x, w, stride, padding))
        patch.setattr(pooling, "cpu_tiled_max_pool", lambda x, pool: pooling.reduce_window_max_pool(x, pool, pool))
        patch.setitem(recurrent_layers._IMPLEMENTATIONS, "fused", scan_sequence)
        yield


def _setup(layer, shape, dtype):
    params, state, x = _init(layer, shape, dtype)

    def outputs(params, x):
        return layer.apply(params, state, x, key=KEY, train=True)[0]

    y_shape = jax.eval_shape(outputs, params, x).shape
    weights = jax.random.normal(jax.random.key(21), y_shape, dtype)

    def scalar(params, x):
        return jnp.sum(jnp.sin(outputs(params, x)) * weights)

    directions = jax.tree.map(lambda a: jax.random.normal(jax.random.key(22), a.shape, a.dtype), (params, x))
    return outputs, scalar, (params, x), directions


def fast_setup(layer, shape, dtype):
    """`_setup` with the fast paths, once per process for each case and dtype."""
    return shared("autodiff-setup", layer, shape, dtype, lambda: _setup(layer, shape, dtype))


def jitted_jvp(layer, shape, dtype):
    """The jitted ``(primals, directions) -> jax.jvp(outputs, ...)`` of `fast_setup`, compiled
    once per process (the float32 test reuses the float64 one)."""
    outputs = fast_setup(layer, shape, dtype)[0]
    return shared("autodiff-jvp", layer, shape, dtype, lambda: jax.jit(lambda p, d: jax.jvp(outputs, p, d)))


def _hvp_function(scalar):
    """The jitted ``(primals, directions) -> (gradient, Hessian-vector product)``: the finite
    differences of the float64 test take the gradient at shifted points from the same compiled
    program."""
    return jax.jit(lambda p, d: jax.jvp(jax.grad(scalar, argnums=(0, 1)), p, d))


def _shifted(primals, directions, step: float):
    """``primals + step * directions``, leaf by leaf, computed in NumPy (eager jnp would compile
    a program per leaf shape)."""
    return jax.tree.map(lambda p, d: jnp.asarray(np.asarray(p) + step * np.asarray(d)), primals, directions)


def _hessian_function(scalar):
    return jax.jit(jax.hessian(scalar, argnums=1))


def plain_paths_result(make_function, layer, shape, dtype, arguments, fast_function, fast_result):
    """``make_function(scalar)(*arguments)`` with `plain_paths`, where ``scalar`` is `_setup`'s.

    When the plain paths trace to the same program as ``fast_function`` (a layer without a
    fast path), the result is ``fast_result``: the same program on the same arguments (the
    same initialization) gives the same numbers, so compiling it again could change nothing.
    The jaxprs are compared as text, which names every primitive, shape and dtype (and shows
    a `custom_jvp_call` where a fast path is).
    """
    fast_program = str(jax.make_jaxpr(fast_function)(*arguments))
    with plain_paths():
        _, plain_scalar, _, _ = _setup(layer, shape, dtype)
        plain_function = make_function(plain_scalar)
        if str(jax.make_jaxpr(plain_function)(*arguments)) == fast_program:
            return fast_result
        return plain_function(*arguments)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name,layer,shape", LAYER_CASES, ids=IDS)
def test_jvp_matches_finite_differences(name, layer, shape, dtype):
    outputs, _, primals, directions = fast_setup(layer, shape, dtype)
    y, tangent = jitted_jvp(layer, shape, dtype)(primals, directions)
    if dtype == jnp.float64:
        eps = 1e-6
        # the outputs at p +- eps d from the compiled JVP's primal output; the shifts and the
        # differences in NumPy (eager jnp would compile a program per leaf shape)
        shifted = [np.asarray(jitted_jvp(layer, shape, dtype)(_shifted(primals, directions, sign * eps), directions)[0])
                   for sign in (1, -1)]
        differences = (shifted[0] - shifted[1]) / (2 * eps)
        assert_trees_close(tangent, jnp.asarray(differences), 1e-5, 1e-6, err_msg="jvp vs finite differences")
        return
    y64, tangent64 = jitted_jvp(layer, shape, jnp.float64)(to_float64(primals), to_float64(directions))
    assert_trees_close(to_float64(y), y64, *FLOAT32_VALUE_TOL, err_msg="outputs vs float64")
    assert_trees_close(to_float64(tangent), tangent64, *FLOAT32_GRAD_TOL, err_msg="jvp vs float64")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name,layer,shape", LAYER_CASES, ids=IDS)
def test_hessian_vector_product_equals_the_plain_paths(name, layer, shape, dtype):
    _, scalar, primals, directions = fast_setup(layer, shape, dtype)
    hvp_function = _hvp_function(scalar)
    result = hvp_function(primals, directions)
    hvp = result[1]
    reference = plain_paths_result(_hvp_function, layer, shape, dtype, (primals, directions), hvp_function, result)[1]
    assert_trees_close(hvp, reference, *SAME_MATH_TOL[dtype], scale="tree", err_msg="HVP vs plain paths")
    if dtype == jnp.float64:  # and against central differences of the gradient
        eps = 1e-5
        # the gradients at p +- eps d from the same compiled program; the differences in NumPy
        shifted = [hvp_function(_shifted(primals, directions, sign * eps), directions)[0] for sign in (1, -1)]
        differences = jax.tree.map(lambda a, b: jnp.asarray((np.asarray(a) - np.asarray(b)) / (2 * eps)), *shifted)
        assert_trees_close(hvp, differences, 1e-5, 1e-6, scale="tree", err_msg="HVP vs finite differences")


@pytest.mark.parametrize("name,layer,shape", LAYER_CASES, ids=IDS)
def test_hessian_equals_the_plain_paths(name, layer, shape, dtype=jnp.float64):
    """float64 only: in float32 the Hessian is made of the same HVPs the test above checks."""
    _, scalar, (params, x), _ = fast_setup(layer, shape, dtype)
    hessian_function = _hessian_function(scalar)
    hessian = hessian_function(params, x)
    assert hessian.shape == x.shape * 2
    reference = plain_paths_result(_hessian_function, layer, shape, dtype, (params, x), hessian_function, hessian)
    assert_trees_close(hessian, reference, *SAME_MATH_TOL[dtype], scale="tree", err_msg="hessian vs plain paths")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name,layer,shape", LAYER_CASES, ids=IDS)
def test_linearize_then_transpose_equals_vjp(name, layer, shape, dtype):
    outputs, _, primals, _ = fast_setup(layer, shape, dtype)
    cotangent = jax.random.normal(jax.random.key(23), jax.eval_shape(outputs, *primals).shape, dtype)

    @jax.jit
    def both(primals, cotangent):
        y, linear = jax.linearize(outputs, *primals)
        transposed = jax.linear_transpose(linear, *primals)(cotangent)
        y_vjp, vjp = jax.vjp(outputs, *primals)
        return y, y_vjp, tuple(transposed), vjp(cotangent)

    y, y_vjp, transposed, gradient = both(primals, cotangent)
    np.testing.assert_array_equal(y, y_vjp)
    assert_trees_close(transposed, gradient, *SAME_MATH_TOL[dtype], scale="tree",
                       err_msg="transposed linearization vs vjp")


@pytest.mark.parametrize("name", ["conv2d_padded_kernels", "pooling", "lstm_memorize"])
def test_plain_paths_really_swap_the_fast_paths(name):
    """Guards the comparisons above: under `plain_paths` the traced gradient is another program
    (were a layer to import its fast path by name, they would compare a function with itself)."""
    layer, shape = next((layer, shape) for case, layer, shape in LAYER_CASES if case == name)

    def programs():
        _, scalar, primals, _ = _setup(layer, shape, jnp.float32)
        return (str(jax.make_jaxpr(scalar)(*primals)),
                str(jax.make_jaxpr(jax.grad(scalar, argnums=(0, 1)))(*primals)))

    (fast_forward, fast_gradient) = programs()
    with plain_paths():
        (plain_forward, plain_gradient) = programs()
    assert "custom_jvp_call" in fast_forward and "custom_jvp_call" not in plain_forward
    assert fast_gradient != plain_gradient

