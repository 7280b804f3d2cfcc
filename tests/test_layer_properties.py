"""Generic properties checked for every layer of the registry, in float64 and in float32.

Every test is parametrized by dtype; the tolerances follow the dtype:

* Gradients. float64: finite differences (`check_grads`). float32: finite differences are too
  coarse in float32 (their truncation and cancellation errors are ~1e-3), so the float32
  gradient is compared with the float64 gradient at the same, float32-representable point
  (params, state, input and cotangent drawn in float32 and cast exactly to float64):
  rtol 1e-5, plus atol 1e-6 times the largest float64 gradient entry (entries that are
  mathematically zero, such as the bias before a batch norm, are float32 rounding noise of
  the others' size). The float64 gradient is itself checked by the float64 test. The outputs
  agree within 1e-6 (about 8 ulps). The same key must give the same dropout mask in both.
* Same computation, compiled differently (jit vs eager, vmap vs a loop): a few units of
  rounding, relative to each array's largest entry (float32: 4 and 8 ulps; float64: as before).
* Dtypes: outputs, new state and gradients keep the dtype of the input and params, and the
  traced program of a float32 apply and its gradient contains no float64 value at all (a
  silent promotion that is cast back at the end is still a float64 computation).

Shared work: the tests of one (layer case, dtype) use the same initialization, the same eager
apply in each mode and the same VJP in each mode, computed once per process by `shared`
(tests/conftest.py runs a case's tests one after the other, so they land on the same xdist
worker). Every check still runs on those values; the determinism test applies the layer once
more and compares with the shared result. Eager execution is compared with jit on the forward
pass (`test_jit_equals_eager`); everything else is jitted, one compile per program (eagerly
each primitive compiles on its own, which took most of these tests' time).
"""

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_vjp

import jaxdl
from layer_registry import LAYER_CASES

IDS = [case[0] for case in LAYER_CASES]
DTYPES = [pytest.param(jnp.float64, id="float64"), pytest.param(jnp.float32, id="float32")]
EPS32 = float(jnp.finfo(jnp.float32).eps)

#: rtol and atol (relative to each array's largest entry) of jit vs eager.
JIT_TOL = {jnp.float64: (1e-12, 1e-12), jnp.float32: (4 * EPS32, 4 * EPS32)}
#: rtol and atol (relative to each array's largest entry) of vmap vs a loop.
VMAP_TOL = {jnp.float64: (1e-10, 1e-12), jnp.float32: (8 * EPS32, 8 * EPS32)}
#: float32 outputs vs the float64 outputs at the same point: rtol and atol (relative to the
#: largest entry); ~8 ulps (the registry's worst is ~2, an LSTM over 3 steps).
FLOAT32_VALUE_TOL = (1e-6, 1e-6)
#: float32 gradient vs the float64 gradient: rtol and atol (relative to the largest entry).
FLOAT32_GRAD_TOL = (1e-5, 1e-6)


#: The key of every shared apply (`applied`, `applied_vjp`).
APPLY_KEY_SEED = 1


def _init(layer, shape, dtype=jnp.float64, seed=0):
    params, state = layer.init(jax.random.key(seed), shape, dtype)
    x = jax.random.normal(jax.random.key(seed + 100), shape, dtype)
    return params, state, x


_SHARED: dict = {}


def shared(what: str, layer, shape, dtype, compute: Callable[[], object]):
    """``compute()``, once per process for each (``what``, layer, shape, dtype).

    Keyed by the layer's identity (a registry entry, or the docs' custom layer), which the
    cache keeps alive so that the identity is not reused. A ``compute`` that raises is not
    cached: every test that needs it fails with the error.
    """
    key = (what, id(layer), tuple(shape), jnp.dtype(dtype).name)
    if key not in _SHARED:
        _SHARED[key] = (layer, compute())
    return _SHARED[key][1]


def initialized(layer, shape, dtype):
    """`_init` (seed 0), shared by the tests of one case and dtype."""
    return shared("init", layer, shape, dtype, lambda: _init(layer, shape, dtype))


def applied(layer, shape, dtype) -> dict:
    """``{train: (outputs, new state)}``: the eager apply of `initialized` with
    ``key(APPLY_KEY_SEED)`` in evaluation and in training mode."""
    def compute():
        params, state, x = initialized(layer, shape, dtype)
        key = jax.random.key(APPLY_KEY_SEED)
        return {train: layer.apply(params, state, x, key=key, train=train) for train in (False, True)}

    return shared("apply", layer, shape, dtype, compute)


def compiled(layer, shape, train: bool):
    """``(forward, vjp)``: the jitted ``(params, state, x, key) -> outputs`` and
    ``(params, state, x, key, cotangent) -> (outputs, new state, gradients of (params, x))`` of
    the apply in mode ``train``, once per process for each case and mode.

    State, key and cotangent are arguments, not constants, so one compiled program serves every
    caller of a dtype: `applied_vjp`, the float64 finite-difference check, and the float64
    reference of the float32 gradient (float32 values cast to float64).
    """
    def compute():
        def forward(params, state, x, key):
            return layer.apply(params, state, x, key=key, train=train)[0]

        def vjp(params, state, x, key, cotangent):
            y, pullback, new_state = jax.vjp(lambda p, x: layer.apply(p, state, x, key=key, train=train), params, x,
                                             has_aux=True)
            return y, new_state, pullback(cotangent)

        return jax.jit(forward), jax.jit(vjp)

    return shared(f"compiled-{train}", layer, shape, "float64", compute)


def applied_vjp(layer, shape, dtype, train: bool):
    """``(outputs, new state, cotangent, gradients of (params, x))``: the VJP of the apply of
    `initialized` with ``key(APPLY_KEY_SEED)`` and a normal cotangent (``key(8)``).

    Jitted (`compiled`; eagerly, every primitive of the forward and backward pass compiles on
    its own). Nothing here depends on eager execution: the values are checked against the
    float64 gradient (float32), which is itself checked against finite differences, and their
    dtypes against the inputs'; eager execution is `test_jit_equals_eager`'s.
    """
    def compute():
        params, state, x = initialized(layer, shape, dtype)
        key = jax.random.key(APPLY_KEY_SEED)
        y_shape = jax.eval_shape(compiled(layer, shape, train)[0], params, state, x, key).shape
        cotangent = jax.random.normal(jax.random.key(8), y_shape, dtype)
        y, new_state, grads = compiled(layer, shape, train)[1](params, state, x, key, cotangent)
        return y, new_state, cotangent, grads

    return shared(f"vjp-{train}", layer, shape, dtype, compute)


def _floating(leaf) -> bool:
    return jnp.issubdtype(jnp.result_type(leaf), jnp.floating)


def to_float64(tree):
    """``tree`` with its floating leaves cast (exactly) to float64; other leaves unchanged.

    The cast is NumPy's (on the host): a jnp cast would compile one program per leaf shape.
    """
    return jax.tree.map(lambda a: jnp.asarray(np.asarray(a).astype(np.float64)) if _floating(a) else a, tree)


def assert_trees_close(actual, expected, rtol, atol, scale="leaf", err_msg=""):
    """Leaf-wise |actual - expected| <= rtol |expected| + atol * (largest |expected|).

    The largest entry is taken per leaf (``scale="leaf"``) or over the whole tree ("tree").
    Structures and dtypes must agree too.
    """
    assert jax.tree.structure(actual) == jax.tree.structure(expected), err_msg
    paths = [jax.tree_util.keystr(path) for path, _ in jax.tree_util.tree_flatten_with_path(expected)[0]]
    pairs = list(zip(jax.tree.leaves(actual), jax.tree.leaves(expected)))
    # NumPy on the host throughout: jnp.max(jnp.abs(b)) would compile two programs per leaf shape.
    tree_scale = max((float(np.max(np.abs(np.asarray(b)))) for _, b in pairs if _floating(b) and np.size(b)),
                     default=0.0)
    for path, (a, b) in zip(paths, pairs):
        where = f"{err_msg} {path}".strip()
        assert jnp.result_type(a) == jnp.result_type(b), f"{where}: {jnp.result_type(a)} vs {jnp.result_type(b)}"
        a, b = np.asarray(a), np.asarray(b)
        if not _floating(b):
            np.testing.assert_array_equal(a, b, err_msg=where)
            continue
        leaf_scale = float(np.max(np.abs(b))) if b.size else 0.0
        np.testing.assert_allclose(
            a, b, rtol=rtol, atol=atol * (leaf_scale if scale == "leaf" else tree_scale), err_msg=where)


def _where(eqn) -> str:
    """``file:line (function)`` of the code that emitted ``eqn`` ("" if JAX cannot tell)."""
    try:
        from jax._src import source_info_util  # private; only used to name the culprit

        return source_info_util.summarize(eqn.source_info)
    except Exception:  # pragma: no cover - a JAX without it only loses the location
        return ""


def float64_values_in(jaxpr) -> dict:
    """``{source location: primitives}`` of the equations of ``jaxpr`` (and of every sub-jaxpr)
    that take or give a float64 (or complex128) value.

    Calls (jit, custom_vjp, scan, ...) are looked into, not reported themselves; an equation
    inside one (a jitted library function such as a `jax.random` draw) takes the location of
    the call when JAX gives it none of its own.
    """
    found = {}

    def wide(var) -> bool:
        return getattr(getattr(var, "aval", None), "dtype", None) in (jnp.float64, jnp.complex128)

    def visit(jaxpr, outer):
        if any(wide(var) for var in jaxpr.constvars):
            found.setdefault(outer or "a constant", set()).add("constant")
        for eqn in jaxpr.eqns:
            where = _where(eqn) or outer
            subs = [sub.jaxpr if hasattr(sub, "jaxpr") and hasattr(sub.jaxpr, "eqns") else sub
                    for param in eqn.params.values()
                    for sub in (param if isinstance(param, (tuple, list)) else (param,))
                    if hasattr(sub, "eqns") or hasattr(getattr(sub, "jaxpr", None), "eqns")]
            for sub in subs:  # a call (jit, custom_vjp, scan, ...): its body says where
                visit(sub, where)
            if not subs and any(wide(var) for var in (*eqn.invars, *eqn.outvars)):
                found.setdefault(where, set()).add(eqn.primitive.name)

    visit(jaxpr, "")
    return found


def describe_float64(found: dict) -> str:
    """One line per source location of `float64_values_in`'s result."""
    return "".join(f"\n  {where or '?'}: {', '.join(sorted(prims))}" for where, prims in sorted(found.items()))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name,layer,shape", LAYER_CASES, ids=IDS)
def test_output_shape_matches_apply(name, layer, shape, dtype):
    for train, (y, _) in applied(layer, shape, dtype).items():
        assert y.shape == jaxdl.output_shape(layer, shape, dtype), f"train={train}"
        assert y.dtype == dtype, f"train={train}"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name,layer,shape", LAYER_CASES, ids=IDS)
def test_state_structure_is_preserved(name, layer, shape, dtype):
    _, state, _ = initialized(layer, shape, dtype)
    for leaf in jax.tree.leaves(state):
        assert not _floating(leaf) or leaf.dtype == dtype, f"initial state leaf {leaf.dtype}"
    for train, (_, new_state) in applied(layer, shape, dtype).items():
        assert jax.tree.structure(new_state) == jax.tree.structure(state), f"train={train}"
        for old, new in zip(jax.tree.leaves(state), jax.tree.leaves(new_state)):
            assert old.shape == new.shape and old.dtype == new.dtype, f"train={train}"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name,layer,shape", LAYER_CASES, ids=IDS)
def test_jit_equals_eager(name, layer, shape, dtype):
    params, state, x = initialized(layer, shape, dtype)
    rtol, atol = JIT_TOL[dtype]
    eager = applied(layer, shape, dtype)
    # both modes in one compile
    jitted = jax.jit(lambda p, s, x, k: {train: layer.apply(p, s, x, key=k, train=train) for train in eager})(
        params, state, x, jax.random.key(APPLY_KEY_SEED))
    for train in eager:
        assert_trees_close(jitted[train], eager[train], rtol, atol, err_msg=f"train={train}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name,layer,shape", LAYER_CASES, ids=IDS)
def test_deterministic_for_fixed_key(name, layer, shape, dtype):
    """A second initialization and a second training-mode apply (same keys) equal the shared ones."""
    params, state, x = _init(layer, shape, dtype)
    for a, b in zip(jax.tree.leaves((params, state, x)), jax.tree.leaves(initialized(layer, shape, dtype))):
        np.testing.assert_array_equal(a, b)
    y, _ = layer.apply(params, state, x, key=jax.random.key(APPLY_KEY_SEED), train=True)
    np.testing.assert_array_equal(y, applied(layer, shape, dtype)[True][0])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name,layer,shape", LAYER_CASES, ids=IDS)
@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_gradients_are_correct(name, layer, shape, train, dtype):
    """float64: against finite differences; float32: against the float64 gradient."""
    params, state, x = initialized(layer, shape, dtype)
    key = jax.random.key(APPLY_KEY_SEED)
    forward, vjp = compiled(layer, shape, train)

    if dtype == jnp.float64:
        # jax.test_util.check_grads(f, (params, x), order=1, modes=["rev"]) is this check_vjp,
        # with jitted programs (one compile each, shared with the other tests; eagerly, a
        # lax.scan recompiles on each call)
        def f_vjp(params, x):
            y_shape = jax.eval_shape(forward, params, state, x, key).shape
            y = vjp(params, state, x, key, jnp.asarray(np.zeros(y_shape, dtype)))[0]
            return y, lambda cotangent: vjp(params, state, x, key, cotangent)[2]

        check_vjp(lambda params, x: forward(params, state, x, key), f_vjp, (params, x),
                  eps=1e-6, atol=1e-5, rtol=1e-5, err_msg="VJP")
        return
    y, _, cotangent, grads = applied_vjp(layer, shape, dtype, train)
    y64, _, reference = vjp(*to_float64((params, state, x)), key, to_float64(cotangent))
    rtol, atol = FLOAT32_GRAD_TOL
    assert_trees_close(to_float64(y), y64, *FLOAT32_VALUE_TOL, err_msg="outputs vs float64")
    assert_trees_close(to_float64(grads), reference, rtol, atol, scale="tree", err_msg="gradient vs float64")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name,layer,shape", LAYER_CASES, ids=IDS)
def test_vmap_over_an_extra_axis_equals_a_loop(name, layer, shape, dtype):
    params, state, _ = initialized(layer, shape, dtype)
    xs = jax.random.normal(jax.random.key(11), (3, *shape), dtype)
    # Jitted (one compile; eagerly each batched primitive compiles on its own): the batching
    # rules are the same either way, and jit vs eager is `test_jit_equals_eager`'s.
    batched = jax.jit(jax.vmap(lambda x: layer.apply(params, state, x)[0]))(xs)
    apply = jax.jit(lambda x: layer.apply(params, state, x)[0])  # one compile for the loop's calls
    looped = jnp.asarray(np.stack([apply(x) for x in np.asarray(xs)]))  # slices and stack in NumPy: no compiles
    rtol, atol = VMAP_TOL[dtype]
    assert_trees_close(batched, looped, rtol, atol)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name,layer,shape", LAYER_CASES, ids=IDS)
def test_apply_and_gradient_keep_the_dtype(name, layer, shape, dtype):
    """Outputs, new state and gradients keep the dtype; float32 computes nothing in float64."""
    params, state, x = initialized(layer, shape, dtype)
    for leaf in jax.tree.leaves(params):
        assert leaf.dtype == dtype
    for train in (False, True):
        y, new_state, cotangent, grads = applied_vjp(layer, shape, dtype, train)
        assert y.dtype == dtype, f"train={train}: output {y.dtype}"
        for old, new in zip(jax.tree.leaves(state), jax.tree.leaves(new_state)):
            assert new.dtype == old.dtype, f"train={train}: state {old.dtype} -> {new.dtype}"
        for leaf, grad in zip(jax.tree.leaves((params, x)), jax.tree.leaves(grads)):
            assert grad.dtype == leaf.dtype, f"train={train}: gradient {grad.dtype} of a {leaf.dtype} value"
        if dtype == jnp.float32:
            def forward_and_backward(params, x, key, cotangent):
                def f(params, x):
                    return layer.apply(params, state, x, key=key, train=train)
                y, vjp, new_state = jax.vjp(f, params, x, has_aux=True)
                return y, new_state, vjp(cotangent)

            args = (params, x, jax.random.key(APPLY_KEY_SEED), cotangent)
            promoted = float64_values_in(jax.make_jaxpr(forward_and_backward)(*args).jaxpr)
            assert not promoted, (
                f"train={train}: the float32 apply and its gradient compute in float64 at:{describe_float64(promoted)}")
