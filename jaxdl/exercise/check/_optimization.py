"""Checks of the optimizers, regularizers, the loss and the initializers (worker side).

References: the facade's optimizers (the core optax optimizers, state per object), its
regularizers (`jaxdl.regularizers`), `course_cross_entropy` with its gradient from `jax.grad`,
and the standard deviations of `jaxdl.initializers`. An optimizer is called three times in a
row on arrays (state matters from the second call on), with a regularizer given to its
``add_regularizer`` (the facade's, so a student's own Constraints.py does not interfere), and
on Python floats.
"""

from __future__ import annotations

import jax
import numpy as np

import jaxdl.exercise as ex
from jaxdl import initializers as core_initializers
from jaxdl.exercise.loss import course_cross_entropy

_HYPERPARAMETERS = {"Sgd": (0.3,), "SgdWithMomentum": (0.3, 0.9), "Adam": (0.05, 0.8, 0.95)}


def _chain(result, student, reference, steps, variants):
    """Calls both on the reference's weights chain; each variant optimizer is fed the same."""
    for step, (w, g) in enumerate(steps):
        expected = reference.calculate_update(w, g)
        others = [(make_step(w, g), hint) for make_step, hint in variants]
        got = result.call("calculate_update", student.calculate_update, np.array(w), np.array(g))
        result.compare("calculate_update", got, expected, variants=others)
        if step + 1 < len(steps):
            steps[step + 1] = (expected, steps[step + 1][1])


def _optimizer(name):
    def check(cls, result):
        hyper = _HYPERPARAMETERS[name]
        call = f"{name}({', '.join(map(str, hyper))})"
        rng = np.random.default_rng(0)
        for regularizer in (None, ex.L2_Regularizer(0.1), ex.L1_Regularizer(0.1)):
            label = "" if regularizer is None else f", add_regularizer({regularizer!r})"
            with result.case(f"{call}{label}, weights (3, 4), 3 calls"):
                student, reference = result.call("constructor", cls, *hyper), getattr(ex, name)(*hyper)
                variants = [(lambda w, g: 2 * w - reference_step(w, g), "the step goes the wrong way: subtract "
                                                                        "learning_rate * gradient")]
                reference_step = _fresh_step(name, hyper, regularizer)
                if name != "Sgd":
                    variants.append((reference_step, "the state is not kept between calls: store it in the "
                                                     "optimizer object (self.)"))
                if regularizer is not None:
                    result.call("add_regularizer", student.add_regularizer, regularizer)
                    reference.add_regularizer(regularizer)
                    variants.append((_in_moments(name, hyper, regularizer), "the regularizer's gradient goes into "
                                     "the step: shrink the weights by learning_rate * calculate_gradient(w) "
                                     "separately"))
                if name == "Adam":
                    variants.append((_swapped(hyper, regularizer), "mu and rho are swapped: mu decays the first "
                                                                   "moment, rho the second"))
                steps = [(rng.normal(size=(3, 4)), rng.normal(size=(3, 4))) for _ in range(3)]
                _chain(result, student, reference, steps, variants)
        with result.case(f"{call} on Python floats"):
            student, reference = result.call("constructor", cls, *hyper), getattr(ex, name)(*hyper)
            for w, g in ((1.0, 1.0), (0.5, -2.0)):
                got = result.call("calculate_update", student.calculate_update, w, g)
                result.compare("calculate_update", got, reference.calculate_update(w, g))
    check.__doc__ = f"{name}: calculate_update, three calls, with L2 and L1 regularizers, on floats."
    return check


def _fresh_step(name, hyper, regularizer):
    """One step of a new optimizer per call (what an optimizer that forgets its state does)."""
    def step(w, g):
        optimizer = getattr(ex, name)(*hyper)
        if regularizer is not None:
            optimizer.add_regularizer(regularizer)
        return optimizer.calculate_update(w, g)
    return step


def _in_moments(name, hyper, regularizer):
    """An optimizer fed gradient + regularizer gradient (instead of the separate shrinkage)."""
    optimizer = getattr(ex, name)(*hyper)
    return lambda w, g: optimizer.calculate_update(w, g + regularizer.calculate_gradient(w))


def _swapped(hyper, regularizer):
    optimizer = ex.Adam(hyper[0], hyper[2], hyper[1])
    if regularizer is not None:
        optimizer.add_regularizer(regularizer)
    return optimizer.calculate_update


sgd = _optimizer("Sgd")
sgd_with_momentum = _optimizer("SgdWithMomentum")
adam = _optimizer("Adam")


def _regularizer(name):
    def check(cls, result):
        alpha = 0.3
        rng = np.random.default_rng(1)
        for shape in ((4, 5), (3,)):
            with result.case(f"{name}({alpha}), weights {shape}"):
                student, reference = result.call("constructor", cls, alpha), getattr(ex, name)(alpha)
                w = rng.normal(size=shape)
                missing_alpha = [(1 / alpha, "not multiplied by alpha")]
                expected = reference.norm(w)
                variants = [(alpha * np.sqrt(expected / alpha), "alpha * ||w||_2 is the older editions' norm; the "
                                                                "current one is alpha * sum(w ** 2)")] \
                    if name == "L2_Regularizer" else []
                result.compare("norm", result.call("norm", student.norm, np.array(w)), expected,
                               factors=missing_alpha + [(0.5, "a factor 1/2: the exercise's norm has none")],
                               variants=variants)
                result.compare("calculate_gradient", result.call("calculate_gradient", student.calculate_gradient,
                                                                 np.array(w)),
                               reference.calculate_gradient(w), factors=missing_alpha)
    check.__doc__ = f"{name}: norm and calculate_gradient."
    return check


l1_regularizer = _regularizer("L1_Regularizer")
l2_regularizer = _regularizer("L2_Regularizer")

_loss_gradient = jax.jit(jax.grad(course_cross_entropy))


def cross_entropy_loss(cls, result):
    """forward (the summed loss) and backward (its gradient by `jax.grad`) on softmax outputs."""
    for seed, (batch, classes) in enumerate([(1, 3), (7, 4)]):
        rng = np.random.default_rng(seed)
        with result.case(f"prediction ({batch}, {classes})"):
            student = result.call("constructor", cls)
            logits = rng.normal(size=(batch, classes))
            prediction = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
            label = np.eye(classes)[rng.integers(0, classes, batch)]
            loss = result.call("forward", student.forward, prediction.copy(), label.copy())
            result.compare("forward", loss, float(course_cross_entropy(prediction, label)),
                           factors=[(1 / batch, "the mean over the batch: the exercise sums")] if batch > 1 else ())
            result.compare("backward", result.call("backward", student.backward, label.copy()),
                           np.asarray(_loss_gradient(prediction, label)))


# -- initializers ----------------------------------------------------------------------------
_SHAPE, _FAN_IN, _FAN_OUT = (300, 200), 100, 300
_SIGMAS = {
    "Xavier": core_initializers.Xavier().stddev(_FAN_IN, _FAN_OUT),
    "He": core_initializers.He().stddev(_FAN_IN, _FAN_OUT),
}
_OTHER_SIGMAS = {
    "sqrt(2 / (fan_in + fan_out)), Xavier's": _SIGMAS["Xavier"],
    "sqrt(2 / fan_in), He's": _SIGMAS["He"],
    "sqrt(2 / fan_out)": core_initializers.He().stddev(_FAN_OUT),
    "sqrt(1 / fan_in)": core_initializers.He().stddev(2 * _FAN_IN),
}


def _draw(result, cls, *args):
    np.random.seed(0)
    initializer = result.call("constructor", cls, *args)
    values = result.call("initialize", initializer.initialize, _SHAPE, _FAN_IN, _FAN_OUT)
    values = np.asarray(values, dtype=float)
    if values.shape != _SHAPE:
        result.fail("initialize", f"shape {values.shape}, expected {_SHAPE}")
        return None
    return values


def constant(cls, result):
    """Constant() fills 0.1, Constant(0.37) fills 0.37."""
    for args, value in (((), 0.1), ((0.37,), 0.37)):
        with result.case(f"Constant{args}.initialize({_SHAPE}, {_FAN_IN}, {_FAN_OUT})"):
            values = _draw(result, cls, *args)
            if values is not None:
                result.compare("initialize", values, np.full(_SHAPE, value))


def uniform_random(cls, result):
    """U[0, 1): the range, the mean 1/2 and the standard deviation sqrt(1/12)."""
    with result.case(f"UniformRandom().initialize({_SHAPE}, {_FAN_IN}, {_FAN_OUT})"):
        values = _draw(result, cls)
        if values is None:
            return
        bounds = core_initializers.UniformRandom()
        if values.min() < bounds.minval or values.max() >= bounds.maxval:
            result.fail("initialize", f"values in [{values.min():.3g}, {values.max():.3g}], expected "
                                      f"[{bounds.minval}, {bounds.maxval})")
        elif abs(values.mean() - 0.5) > 0.01 or abs(values.std() - np.sqrt(1 / 12)) > 0.01:
            result.fail("initialize", f"mean {values.mean():.4f} and standard deviation {values.std():.4f}, "
                                      f"expected 0.5 and {np.sqrt(1 / 12):.4f} (uniform on [0, 1))")
        else:
            result.record("initialize", None)


def _normal(name):
    def check(cls, result):
        with result.case(f"{name}().initialize({_SHAPE}, fan_in={_FAN_IN}, fan_out={_FAN_OUT})"):
            values = _draw(result, cls)
            if values is None:
                return
            sigma, std = _SIGMAS[name], values.std()
            if abs(values.mean()) > 0.05 * sigma or abs(std - sigma) > 0.02 * sigma:
                other = next((text for text, s in _OTHER_SIGMAS.items() if abs(std - s) <= 0.02 * s), None)
                result.fail("initialize", f"mean {values.mean():.4g} and standard deviation {std:.4g}, expected 0 "
                                          f"and {sigma:.4g} (jaxdl.{name})",
                            f"the standard deviation is {other}" if other else None)
            else:
                result.record("initialize", None)
    check.__doc__ = f"{name}: a normal distribution with jaxdl.{name}'s standard deviation."
    return check


xavier = _normal("Xavier")
he = _normal("He")
