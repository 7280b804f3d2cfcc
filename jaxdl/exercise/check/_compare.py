"""Comparing a student's array with jaxdl's reference, and naming the usual cause of a mismatch.

`compare` returns None when the two agree (relative tolerance `RTOL`, absolute `ATOL`), else a
finding: the shapes, the largest absolute error and where it is (with both values there), the
largest relative error and a one-line hint. Hints come from two kinds of patterns:

* generic ones checked on every mismatch: the transpose of the reference, the right values in
  another shape, an extra leading axis that should have been summed, the opposite sign, a
  constant factor (named when the caller knows what that factor means, e.g. 1/p);
* the caller's variants: arrays a known bug would have produced, computed from jaxdl's own
  reference with other inputs or parameters (a flipped kernel, the state of a fresh optimizer),
  each with its hint.
"""

from __future__ import annotations

import numpy as np

RTOL = 1e-5
ATOL = 1e-8


def close(student, reference) -> bool:
    """Whether two arrays have the same shape and agree within the tolerances."""
    student, reference = np.asarray(student, dtype=float), np.asarray(reference, dtype=float)
    return student.shape == reference.shape and bool(
        np.all(np.abs(student - reference) <= ATOL + RTOL * np.abs(reference)))


def _factor(student, reference):
    """c with student = c * reference, or None when no constant factor fits."""
    norm = float(np.sum(reference * reference))
    if norm == 0.0 or student.shape != reference.shape:
        return None
    c = float(np.sum(student * reference)) / norm
    return c if close(student, c * reference) else None


def _generic_hint(student, reference, factors):
    if student.ndim == 2 and student.shape == reference.T.shape and close(student.T, reference):
        return "the result is the transpose of the expected one (a transposed weight matrix or gradient?)"
    if student.shape != reference.shape and student.size == reference.size and close(
            student.reshape(reference.shape), reference):
        return (f"the right values in the wrong shape {student.shape} (expected {reference.shape}): "
                "reshape to the input's shape / keep the batch axis first")
    if student.ndim == reference.ndim + 1 and close(student.sum(axis=0), reference):
        return "not summed over the batch: sum the gradient over axis 0 (every sample contributes)"
    if student.shape != reference.shape:
        return None
    c = _factor(student, reference)
    if c is None or abs(c - 1.0) < 1e-9:
        return None
    if abs(c + 1.0) < 1e-6:
        return "the sign is flipped"
    for value, hint in factors:
        if abs(c - value) <= 1e-6 * max(1.0, abs(value)):
            return hint
    return f"every value is {c:.6g} times the expected one (a missing or extra constant factor)"


def _index(flat_index, shape):
    return [int(i) for i in np.unravel_index(flat_index, shape)] if shape else []


def compare(student, reference, *, variants=(), factors=(), nonfinite_hint=None):
    """None when ``student`` matches ``reference``, else a finding (a dict, see the module docstring).

    Args:
        student: what the student's method returned.
        reference: jaxdl's result.
        variants: (array, hint) pairs: what a known bug gives; the first one the student's
            result matches gives the hint.
        factors: (c, hint) pairs: the hint when the student's result is c times the reference.
        nonfinite_hint: the hint when the student's result has NaN or inf and the reference has none.
    """
    reference = np.asarray(reference, dtype=float)
    try:
        student = np.asarray(student, dtype=float)
    except (TypeError, ValueError):
        return {"message": f"returned {type(student).__name__}, expected an array of shape {reference.shape}"}
    if close(student, reference):
        return None
    finding = {"shape": list(student.shape), "expected_shape": list(reference.shape)}
    hint = next((text for array, text in variants if array is not None and close(student, array)), None)
    if student.shape != reference.shape:
        finding["message"] = f"shape {student.shape}, expected {reference.shape}"
    elif not np.all(np.isfinite(student)) and np.all(np.isfinite(reference)):
        where = int(np.flatnonzero(~np.isfinite(student))[0])
        finding["index"] = _index(where, student.shape)
        finding["message"] = f"{student.flat[where]} at {finding['index']} (reference {reference.flat[where]:.6g})"
        hint = hint or nonfinite_hint
    else:
        error = np.abs(student - reference)
        where = int(np.argmax(error))
        nonzero = np.abs(reference) > ATOL  # a relative error where the reference is 0 says nothing
        relative = float(np.max(error[nonzero] / np.abs(reference[nonzero]))) if nonzero.any() else None
        finding.update(
            index=_index(where, student.shape), max_abs_error=float(error.flat[where]),
            max_rel_error=relative, student=float(student.flat[where]),
            reference=float(reference.flat[where]))
        finding["message"] = (
            f"largest absolute error {finding['max_abs_error']:.3g} at {finding['index']} "
            f"(yours {finding['student']:.6g}, reference {finding['reference']:.6g})"
            + ("" if relative is None else f"; largest relative error {relative:.3g}"))
    hint = hint or _generic_hint(student, reference, factors)
    if hint:
        finding["hint"] = hint
    return finding
