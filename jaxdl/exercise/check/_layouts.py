"""The ways a student may store a weight matrix that the course's tests all accept.

A FullyConnected's ``weights`` may be (input + 1, output) or its transpose, with the bias row
last or first; an RNN's hidden map stacks [x, h, 1] or [h, x, 1]; an LSTM's gate columns come
in any order. A `Layout` maps the student's matrix to jaxdl's facade layout (bias last, rows
[x, h, 1], gates i, f, g, o) and back, so the reference runs on the student's own numbers and
its gradients are compared in the student's layout. The checker picks the layout under which
the reference reproduces the student's forward; these are conventions, not bugs.
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np


@dataclasses.dataclass(frozen=True)
class Layout:
    """Row blocks ``rows`` (facade order) stored in ``row_order``, ``cols`` column blocks in
    ``col_order``, the whole matrix possibly ``transposed``."""

    rows: tuple[int, ...]
    row_order: tuple[int, ...]
    cols: int
    col_order: tuple[int, ...]
    transposed: bool

    def from_canonical(self, a) -> np.ndarray:
        """The facade-layout matrix ``a`` in this layout."""
        blocks = np.split(np.asarray(a), np.cumsum(self.rows)[:-1], axis=0)
        a = np.concatenate([blocks[i] for i in self.row_order], axis=0)
        columns = np.split(a, self.cols, axis=1)
        a = np.concatenate([columns[i] for i in self.col_order], axis=1)
        return a.T if self.transposed else a

    def to_canonical(self, a) -> np.ndarray:
        """The matrix ``a`` stored in this layout, in the facade layout."""
        a = np.asarray(a)
        a = a.T if self.transposed else a
        columns = np.split(a, self.cols, axis=1)
        a = np.concatenate([columns[self.col_order.index(i)] for i in range(self.cols)], axis=1)
        sizes = [self.rows[i] for i in self.row_order]
        blocks = np.split(a, np.cumsum(sizes)[:-1], axis=0)
        return np.concatenate([blocks[self.row_order.index(i)] for i in range(len(self.rows))], axis=0)

    def shape(self) -> tuple[int, int]:
        shape = (sum(self.rows), self.cols * self.width)
        return shape[::-1] if self.transposed else shape

    width: int = 1


def layouts(rows, width, row_orders, gates=1) -> list[Layout]:
    """Every layout of a (sum(rows), gates * width) matrix: row orders x gate orders x transposed.

    The first one is the facade's own (rows in order, gates i, f, g, o, not transposed).
    """
    return [Layout(tuple(rows), tuple(order), gates, tuple(perm), transposed, width)
            for transposed in (False, True)
            for order in row_orders
            for perm in itertools.permutations(range(gates))]


def matching(candidates, shape) -> list[Layout]:
    """The candidates whose stored shape is ``shape``."""
    return [layout for layout in candidates if layout.shape() == tuple(shape)]
