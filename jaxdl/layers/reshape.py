"""Flatten: (batch, ...) -> (batch, prod(...)) in C order."""

from __future__ import annotations

import dataclasses
import math

from jaxdl.core import Layer


@dataclasses.dataclass(frozen=True)
class Flatten(Layer):
    """Reshapes (batch, d1, d2, ...) to (batch, d1*d2*...) in C (row-major) order."""

    def apply(self, params, state, x, *, key=None, train=False):
        if x.ndim < 1:
            raise ValueError(f"{self!r} expects input with a batch axis, got a scalar.")
        return x.reshape(x.shape[0], math.prod(x.shape[1:])), state
