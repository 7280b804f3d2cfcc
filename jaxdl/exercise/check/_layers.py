"""Checks of the feed-forward layers against jaxdl's facade layers (worker side).

Every reference is a `jaxdl.exercise` layer loaded with the student's own parameters: its
forward is the core layer's ``apply`` under `jax.vjp` in float64, its backward that VJP, so
the input gradient, ``gradient_weights`` and ``gradient_bias`` come from `jax.vjp`. The
student's layer and the reference see the same inputs (seeded), batch sizes 1 and odd.
"""

from __future__ import annotations

import numpy as np

import jaxdl.exercise as ex
from jaxdl.exercise import _engine
from jaxdl.exercise.check import _layouts


def _forward(result, layer, x, method="forward"):
    return result.call(method, layer.forward, np.array(x))


def _backward(result, layer, e, method="backward"):
    return result.call(method, layer.backward, np.array(e))


def _get(result, obj, name):
    return result.call(name, getattr, obj, name)


def _set(result, obj, name, value):
    result.call(name, setattr, obj, name, np.array(value))
    return np.asarray(result.call(name, getattr, obj, name), dtype=float)


def _sgd(learning_rate=0.5):
    return ex.Sgd(learning_rate)


# -- FullyConnected -------------------------------------------------------------------------
def _reference_fc(n_in, n_out, weights):
    ref = ex.FullyConnected(n_in, n_out)
    ref.weights = weights
    return ref


def fully_connected(cls, result):
    """forward, backward, gradient_weights and the update with an optimizer; weights (in+1, out)
    or transposed, bias row last or first, found from the student's forward."""
    for seed, (batch, n_in, n_out) in enumerate([(1, 3, 4), (7, 4, 5), (5, 6, 2)]):
        rng = np.random.default_rng(seed)
        with result.case(f"FullyConnected({n_in}, {n_out}), input ({batch}, {n_in})"):
            np.random.seed(seed)
            student = result.call("constructor", cls, n_in, n_out)
            shape = np.shape(_get(result, student, "weights"))
            candidates = _layouts.matching(_layouts.layouts((n_in, 1), n_out, [(0, 1), (1, 0)]), shape)
            if not candidates:
                result.fail("weights", f"shape {shape}, expected ({n_in + 1}, {n_out}) (the bias as one more row) "
                                       "or its transpose")
                continue
            weights = _set(result, student, "weights", rng.normal(size=shape))
            x, e = rng.normal(size=(batch, n_in)), rng.normal(size=(batch, n_out))
            y = _forward(result, student, x)
            layout = next((c for c in candidates
                           if np.allclose(_reference_fc(n_in, n_out, c.to_canonical(weights)).forward(x), y)),
                          candidates[0])
            ref = _reference_fc(n_in, n_out, layout.to_canonical(weights))
            result.compare("forward", y, ref.forward(x))
            result.compare("backward", _backward(result, student, e), ref.backward(e))
            result.compare("gradient_weights", _get(result, student, "gradient_weights"),
                           layout.from_canonical(ref.gradient_weights))
            # With an optimizer: the error still uses the weights of the forward, then one step.
            updated = ref.weights - 0.5 * ref.gradient_weights
            late = _reference_fc(n_in, n_out, updated)
            late.forward(x)
            stepping = result.call("constructor", cls, n_in, n_out)
            _set(result, stepping, "weights", weights)
            result.call("optimizer", setattr, stepping, "optimizer", _sgd())
            _forward(result, stepping, x)
            hint = "the error is computed with the updated weights: compute it before the optimizer step"
            result.compare("backward with an optimizer", _backward(result, stepping, e, "backward with an optimizer"),
                           ref.backward(e), variants=[(late.backward(e), hint)])
            result.compare("weights update", _get(result, stepping, "weights"), layout.from_canonical(updated),
                           variants=[(weights, "backward does not update the weights when an optimizer is set")])


# -- parameter-free element-wise layers -----------------------------------------------------
_SHAPES = [(1, 5), (7, 4), (3, 2, 4, 5)]


def _elementwise(cls, result, reference_class, forward_variants=None):
    for seed, shape in enumerate(_SHAPES):
        rng = np.random.default_rng(seed)
        with result.case(f"input {shape}"):
            student = result.call("constructor", cls)
            ref = reference_class()
            x, e = 2 * rng.normal(size=shape), rng.normal(size=shape)
            y = ref.forward(x)
            result.compare("forward", _forward(result, student, x), y,
                           variants=forward_variants(y) if forward_variants else ())
            local = reference_class()
            local.forward(x)
            variants = [(local.backward(np.ones(shape)), "backward returns the derivative alone: multiply it by "
                                                         "error_tensor (the chain rule)")]
            if reference_class is ex.ReLU:
                variants.append((ex.ReLU().forward(e), "the mask comes from the error's sign: pass the error where "
                                                       "the stored INPUT was > 0"))
            result.compare("backward", _backward(result, student, e), ref.backward(e), variants=variants)


def relu(cls, result):
    """forward and backward on random inputs of ranks 2 and 4."""
    _elementwise(cls, result, ex.ReLU)


def tanh(cls, result):
    """forward and backward on random inputs of ranks 2 and 4."""
    _elementwise(cls, result, ex.TanH)


def sigmoid(cls, result):
    """forward and backward on random inputs of ranks 2 and 4."""
    _elementwise(cls, result, ex.Sigmoid, lambda y: [(1 - y, "1 - sigmoid(x): the sign of the exponent is flipped, "
                                                                "use 1 / (1 + exp(-x))")])


def softmax(cls, result):
    """forward and backward, including inputs around 1000 (exp overflows without the row maximum)."""
    cases = [((1, 4), 0.0), ((7, 5), 0.0), ((5, 4), 1000.0)]
    for seed, (shape, shift) in enumerate(cases):
        rng = np.random.default_rng(seed)
        with result.case(f"input {shape}" + (f" around {shift:g}" if shift else "")):
            student, ref = result.call("constructor", cls), ex.SoftMax()
            x, e = shift + 3 * rng.normal(size=shape), rng.normal(size=shape)
            overflow = "exp overflows: subtract each row's maximum before exp"
            result.compare("forward", _forward(result, student, x), ref.forward(x), nonfinite_hint=overflow)
            result.compare("backward", _backward(result, student, e), ref.backward(e), nonfinite_hint=overflow)


def flatten(cls, result):
    """forward and backward of ranks 3 and 4."""
    for seed, shape in enumerate([(1, 3, 4, 5), (5, 2, 3)]):
        rng = np.random.default_rng(seed)
        with result.case(f"input {shape}"):
            student, ref = result.call("constructor", cls), ex.Flatten()
            x = rng.normal(size=shape)
            y = ref.forward(x)
            result.compare("forward", _forward(result, student, x), y)
            e = rng.normal(size=y.shape)
            result.compare("backward", _backward(result, student, e), ref.backward(e))


# -- Conv ----------------------------------------------------------------------------------
_CONV_CASES = [  # stride, convolution shape, kernels, input shape (odd kernels: "same" is unambiguous)
    ((1, 1), (2, 3, 3), 3, (1, 2, 5, 7)),
    ((2, 3), (3, 3, 5), 2, (3, 3, 7, 9)),
    ([2], (2, 3), 3, (3, 2, 9)),
]


def _reference_conv(stride, shape, kernels, weights, bias):
    ref = ex.Conv(stride, shape, kernels)
    ref.weights, ref.bias = weights, bias
    return ref


def conv(cls, result):
    """forward, backward, gradient_weights, gradient_bias and the update, 2-D with strides and 1-D."""
    for seed, (stride, shape, kernels, input_shape) in enumerate(_CONV_CASES):
        rng = np.random.default_rng(seed)
        with result.case(f"Conv({stride}, {shape}, {kernels}), input {input_shape}"):
            np.random.seed(seed)
            student = result.call("constructor", cls, stride, shape, kernels)
            weights = _set(result, student, "weights", rng.normal(size=(kernels, *shape)))
            bias = _set(result, student, "bias", rng.normal(size=kernels))
            if weights.shape != (kernels, *shape) or bias.shape != (kernels,):
                result.fail("weights", f"weights {weights.shape} and bias {bias.shape}, expected "
                                       f"{(kernels, *shape)} and {(kernels,)}")
                continue
            ref = _reference_conv(stride, shape, kernels, weights, bias)
            flipped = _reference_conv(stride, shape, kernels, weights[:, :, ::-1, ::-1] if len(shape) == 3
                                      else weights[:, :, ::-1], bias)
            x = rng.normal(size=input_shape)
            y = ref.forward(x)
            e = rng.normal(size=y.shape)
            hint = "the kernel is flipped: the forward is a cross-correlation (scipy.signal.correlate), not a convolution"
            result.compare("forward", _forward(result, student, x), y, variants=[(flipped.forward(x), hint)])
            result.compare("backward", _backward(result, student, e), ref.backward(e))
            result.compare("gradient_weights", _get(result, student, "gradient_weights"), ref.gradient_weights)
            result.compare("gradient_bias", _get(result, student, "gradient_bias"), ref.gradient_bias,
                           factors=[(1 / input_shape[0], "averaged over the batch: sum over it (and over the "
                                                         "positions)")] if input_shape[0] > 1 else ())
            stepping = result.call("constructor", cls, stride, shape, kernels)
            _set(result, stepping, "weights", weights)
            _set(result, stepping, "bias", bias)
            result.call("optimizer", setattr, stepping, "optimizer", _sgd())
            _forward(result, stepping, x)
            result.compare("backward with an optimizer",
                           _backward(result, stepping, e, "backward with an optimizer"), ref.backward(e))
            result.compare("weights update", _get(result, stepping, "weights"), weights - 0.5 * ref.gradient_weights)
            result.compare("bias update", _get(result, stepping, "bias"), bias - 0.5 * ref.gradient_bias)


# -- Pooling -------------------------------------------------------------------------------
def _covered_twice(input_shape, stride, pool):
    """Where more than one pooling window covers the input (overlapping windows)."""
    counts = np.zeros(input_shape[2:], dtype=int)
    for y in range(0, input_shape[2] - pool[0] + 1, stride[0]):
        for x in range(0, input_shape[3] - pool[1] + 1, stride[1]):
            counts[y:y + pool[0], x:x + pool[1]] += 1
    return counts > 1


def pooling(cls, result):
    """forward and backward: plain, overlapping (stride < pool) and subsampling windows."""
    cases = [((2, 2), (2, 2), (1, 2, 4, 6)), ((2, 1), (2, 2), (3, 1, 5, 5)), ((3, 2), (2, 2), (2, 2, 7, 5))]
    for seed, (stride, pool, input_shape) in enumerate(cases):
        rng = np.random.default_rng(seed)
        with result.case(f"Pooling({stride}, {pool}), input {input_shape}"):
            student, ref = result.call("constructor", cls, stride, pool), ex.Pooling(stride, pool)
            x = rng.normal(size=input_shape)
            y = ref.forward(x)
            e = rng.normal(size=y.shape)
            result.compare("forward", _forward(result, student, x), y)
            expected = ref.backward(e)
            dx = _backward(result, student, e)
            overlap = "wrong only where windows overlap: add (+=) the errors of every window that picked the same input"
            result.compare("backward", dx, expected,
                           variants=[(dx, overlap)] if _only_where_overlapping(dx, expected, input_shape, stride, pool)
                           else ())


def _only_where_overlapping(dx, expected, input_shape, stride, pool) -> bool:
    """Whether ``dx`` differs from ``expected`` only at inputs that several windows cover."""
    if np.shape(dx) != expected.shape:
        return False
    wrong = ~np.isclose(np.asarray(dx, dtype=float), expected).all(axis=(0, 1))
    return bool(wrong.any() and not (wrong & ~_covered_twice(input_shape, stride, pool)).any())


# -- Dropout -------------------------------------------------------------------------------
class _MaskedDropout(ex.Dropout):
    """The facade's Dropout with a given keep mask (the student's), instead of a drawn one."""

    def __init__(self, probability, keep):
        super().__init__(probability)
        self._keep = keep

    def _call(self, x):
        if self.testing_phase:
            return super()._call(x)
        return _engine.DropoutFn(self._core.rate), self._keep


def dropout(cls, result):
    """The kept fraction, forward and backward with the student's own mask, and the testing phase."""
    p = 0.7
    for seed, shape in enumerate([(7, 300), (1, 9)]):
        rng = np.random.default_rng(seed)
        with result.case(f"Dropout({p}), input {shape}"):
            np.random.seed(seed)
            student = result.call("constructor", cls, p)
            x, e = rng.uniform(0.5, 1.5, size=shape), rng.normal(size=shape)
            y = np.asarray(_forward(result, student, x), dtype=float)
            if y.shape != shape:
                result.compare("forward", y, x)
                continue
            keep = y != 0
            kept, spread = keep.mean(), 5 * np.sqrt(p * (1 - p) / keep.size)
            if keep.size >= 1000 and abs(kept - p) > spread:
                swapped = abs(kept - (1 - p)) <= spread
                result.fail("forward", f"kept {kept:.3f} of the units, expected about {p}",
                            "probability is the fraction KEPT, not dropped" if swapped else None)
            ref = _MaskedDropout(p, keep)
            result.compare("forward", y, ref.forward(x),
                           factors=[(p, "the kept units are not scaled by 1/p (inverted dropout: divide by the "
                                        "probability in training)")])
            result.compare("backward", _backward(result, student, e), ref.backward(e),
                           factors=[(p, "the error is not scaled by 1/p like the forward")])
            testing = result.call("constructor", cls, p)
            result.call("testing_phase", setattr, testing, "testing_phase", True)
            result.compare("forward (testing phase)", _forward(result, testing, x, "forward (testing phase)"), x,
                           factors=[(1 / p, "scaled by 1/p in the testing phase: the identity when testing")])


# -- BatchNormalization --------------------------------------------------------------------
def _reference_bn(channels, gamma, beta):
    ref = ex.BatchNormalization(channels)
    ref.weights, ref.bias = gamma, beta
    return ref


def batch_normalization(cls, result):
    """Training forward, backward, gradient_weights (gamma), gradient_bias (beta), the testing
    phase after one training batch, and reformat; vector and image input, odd batches."""
    for seed, (channels, shape) in enumerate([(4, (7, 4)), (2, (3, 2, 3, 5))]):
        rng = np.random.default_rng(seed)
        with result.case(f"BatchNormalization({channels}), input {shape}"):
            student = result.call("constructor", cls, channels)
            gamma = _set(result, student, "weights", rng.uniform(0.5, 1.5, channels))
            beta = _set(result, student, "bias", rng.normal(size=channels))
            ref = _reference_bn(channels, gamma, beta)
            x, x2, e = rng.normal(size=shape), rng.normal(size=shape), rng.normal(size=shape)
            y = ref.forward(x)
            rows = x.size // channels
            centred = (y - beta.reshape((1, -1) + (1,) * (x.ndim - 2)))
            n_minus_1 = y - centred + centred * np.sqrt((rows - 1) / rows)
            result.compare("forward", _forward(result, student, x), y, variants=[
                (n_minus_1, "the variance divides by n - 1: use the biased variance (np.var, ddof=0)")])
            result.compare("backward", _backward(result, student, e), ref.backward(e))
            result.compare("gradient_weights", _get(result, student, "gradient_weights"), ref.gradient_weights)
            result.compare("gradient_bias", _get(result, student, "gradient_bias"), ref.gradient_bias)
            testing = result.call("constructor", cls, channels)
            _set(result, testing, "weights", gamma)
            _set(result, testing, "bias", beta)
            later = _reference_bn(channels, gamma, beta)
            later.forward(x)
            batch_statistics = _reference_bn(channels, gamma, beta).forward(x2)
            _forward(result, testing, x, "forward (testing phase)")
            result.call("testing_phase", setattr, testing, "testing_phase", True)
            later.testing_phase = True
            result.compare("forward (testing phase)", _forward(result, testing, x2, "forward (testing phase)"),
                           later.forward(x2), variants=[(batch_statistics, "the testing phase uses the batch's "
                                                         "statistics: use the running mean and variance")])
            if x.ndim == 4:
                vectors = ref.reformat(x)
                result.compare("reformat", result.call("reformat", student.reformat, np.array(x)), vectors)
                result.compare("reformat", result.call("reformat", student.reformat, vectors), x)
