"""Combinators beyond `jaxdl.Serial`: `Residual`, `Parallel` and `Tied` (shared parameters).

Each is a layer built of layers, so it nests anywhere a layer goes (inside a `Serial`, in a
`MixedPrecision`, in a data-parallel step) and works under `jax.jit`, `jax.grad`, `jax.jvp`,
`jax.vmap` and `jax.hessian` like any other. They share `Serial`'s helpers from `jaxdl.core`:
`child_keys` names the children (a counter per layer type, or the user's ``(name, layer)``),
`init_child` threads the input's shape and dtype and `child_apply_keys` splits the key, and
a child's ValueError or TypeError comes back naming where it sits. Each declares its children
(`Layer.sublayers`), so L1/L2 regularization and `jaxdl.reset_memory` see through it.

Example:
    >>> block = jaxdl.Residual(jaxdl.Serial(jaxdl.FullyConnected(4), jaxdl.ReLU(), jaxdl.FullyConnected(4)))
    >>> branches = jaxdl.Parallel(jaxdl.FullyConnected(3), jaxdl.Serial(jaxdl.FullyConnected(3), jaxdl.TanH()))
    >>> model = jaxdl.Serial(jaxdl.FullyConnected(4), block, branches)
    >>> params, _ = model.init(jax.random.key(0), (2, 5))
    >>> sorted(params["parallel_0"])
    ['fully_connected_0', 'serial_0']
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from jaxdl.core import (
    Child, Layer, apply_child, child_apply_keys, child_keys, children_repr, init_child, init_layer, input_struct,
    split_lengths, with_lengths,
)

#: How `Parallel` merges its branches' outputs.
MERGES = ("sum", "concat")


def _require_layer(owner: str, what: str, value) -> Layer:
    if not isinstance(value, Layer):
        raise TypeError(f"{owner}: {what} must be a jaxdl layer, got {value!r} (type {type(value).__name__}).")
    return value


@dataclasses.dataclass(frozen=True)
class Residual(Layer):
    """y = block(x) + projection(x), or block(x) + x without a projection (a skip connection).

    Params and state are keyed ``"block"`` and ``"projection"`` (either left out when it has
    none). The block's output must have the shape of the input (or of the projection's output):
    give a ``projection`` (e.g. a 1x1 `Conv` or a `FullyConnected`) where the block changes the
    shape. The sum is in the block's output dtype.

    Args:
        block: the layer (usually a `Serial`) on the residual branch.
        projection: None for the identity, or the layer on the skip branch.

    Raises:
        TypeError: for a ``block`` or ``projection`` that is not a jaxdl layer.
        ValueError: at ``init`` (and trace time) when the block's output shape differs from the
            skip branch's, naming both shapes.

    Example:
        >>> block = jaxdl.Residual(jaxdl.Conv(8, (3, 3)), projection=jaxdl.Conv(8, (1, 1)))
        >>> jaxdl.output_shape(block, (2, 3, 6, 6))
        (2, 8, 6, 6)
    """

    block: Layer
    projection: Layer | None = None
    takes_lengths = True  # hands a SequenceBatch's lengths to the children that take them

    def __post_init__(self):
        _require_layer("Residual", "block", self.block)
        if self.projection is not None:
            _require_layer("Residual", "projection", self.projection)

    def sublayers(self) -> dict[str, Layer]:
        """``{"block": block}``, plus ``"projection"`` when given."""
        children = {"block": self.block}
        if self.projection is not None:
            children["projection"] = self.projection
        return children

    @property
    def needs_key_in_training(self) -> bool:  # type: ignore[override]
        return any(layer.needs_key_in_training for layer in self.sublayers().values())

    def init(self, key, input_shape, dtype=jnp.float32, input_dtype=None):
        x = input_struct("Residual.init", input_shape, dtype, input_dtype)
        params, state, outputs = {}, {}, {}
        for (name, layer), layer_key in zip(self.sublayers().items(), jax.random.split(key, 2)):
            layer_params, layer_state, outputs[name] = init_child("Residual", f"the {name}", layer, layer_key, x, dtype)
            if layer_params:
                params[name] = layer_params
            if layer_state:
                state[name] = layer_state
        self._check_shapes(outputs["block"].shape, outputs.get("projection", x).shape)
        return params, state

    def apply(self, params, state, x, *, key=None, train=False):
        children = self.sublayers()
        keys = dict(zip(children, child_apply_keys(self, list(children.values()), key, train)))
        outputs, new_state = {}, {}
        x, lengths = split_lengths(x)
        for name, layer in children.items():
            outputs[name], layer_state = apply_child("Residual", f"the {name}", layer, params.get(name, {}),
                                                     state.get(name, {}), with_lengths(layer, x, lengths, jnp.shape(x)[:2]),
                                                     keys[name], train)
            if layer_state:
                new_state[name] = layer_state
        skip = outputs.get("projection", x)
        self._check_shapes(jnp.shape(outputs["block"]), jnp.shape(skip))
        y = outputs["block"]
        return y + skip.astype(jnp.result_type(y)), new_state

    def _check_shapes(self, block_shape, skip_shape) -> None:
        if tuple(block_shape) != tuple(skip_shape):
            skip = "the projection's output" if self.projection is not None else "the input (the identity skip)"
            advice = "" if self.projection is not None else "; give a projection that maps the input to that shape"
            raise ValueError(f"Residual: the block's output shape {tuple(block_shape)} must equal the shape of "
                             f"{skip}, got {tuple(skip_shape)}{advice}.")


@dataclasses.dataclass(frozen=True, init=False)
class Parallel(Layer):
    """Runs every branch on the same input and merges their outputs: summed or concatenated.

    Params and state are keyed like `Serial`'s: a counter per layer type (``fully_connected_0``,
    ``serial_0``, ...) or the name of a ``(name, layer)`` pair. ``merge="sum"`` needs outputs of
    one shape; ``merge="concat"`` joins them on ``axis`` (outputs of one shape but for that
    axis), the stax ``FanOut`` + ``FanInSum``/``FanInConcat`` in one layer.

    Args:
        *branches: two or more layers or ``(name, layer)`` pairs.
        merge: ``"sum"`` (default) or ``"concat"``.
        axis: the axis of ``"concat"`` (default the last, the features); not the batch axis 0.

    Raises:
        TypeError: for a branch that is not a layer (or pair), or an ``axis`` that is not an int.
        ValueError: for fewer than two branches, an unknown ``merge``; at ``init`` (and trace
            time) for outputs that cannot be merged (naming each branch's shape) or an ``axis``
            that is the batch axis or out of range.

    Example:
        >>> both = jaxdl.Parallel(jaxdl.FullyConnected(3), jaxdl.FullyConnected(2), merge="concat")
        >>> jaxdl.output_shape(both, (4, 5))
        (4, 5)
    """

    branches: tuple[Layer, ...]
    names: tuple[str, ...]
    merge: str = "sum"
    axis: int = -1
    takes_lengths = True  # hands a SequenceBatch's lengths to the children that take them

    def __init__(self, *branches: Child, merge: str = "sum", axis: int = -1):
        names, layers = child_keys("Parallel", branches)
        if len(layers) < 2:
            raise ValueError(f"Parallel: needs at least 2 branches, got {len(layers)}.")
        if merge not in MERGES:
            raise ValueError(f"Parallel: merge must be one of {', '.join(map(repr, MERGES))}, got {merge!r}.")
        if isinstance(axis, bool) or not isinstance(axis, int):
            raise TypeError(f"Parallel: axis must be an int, got {axis!r} (type {type(axis).__name__}).")
        for field, value in (("branches", layers), ("names", names), ("merge", merge), ("axis", axis)):
            object.__setattr__(self, field, value)

    def sublayers(self) -> dict[str, Layer]:
        """``{key: branch}`` for every branch (`names`)."""
        return dict(zip(self.names, self.branches))

    @property
    def needs_key_in_training(self) -> bool:  # type: ignore[override]
        return any(layer.needs_key_in_training for layer in self.branches)

    def init(self, key, input_shape, dtype=jnp.float32, input_dtype=None):
        x = input_struct("Parallel.init", input_shape, dtype, input_dtype)
        params, state, outputs = {}, {}, []
        keys = jax.random.split(key, len(self.branches))
        for position, (name, layer, layer_key) in enumerate(zip(self.names, self.branches, keys)):
            layer_params, layer_state, out = init_child(
                "Parallel", f"branch {name!r} (position {position})", layer, layer_key, x, dtype)
            outputs.append(out)
            if layer_params:
                params[name] = layer_params
            if layer_state:
                state[name] = layer_state
        self._merged_shape([out.shape for out in outputs])
        return params, state

    def apply(self, params, state, x, *, key=None, train=False):
        outputs, new_state = [], {}
        keys = child_apply_keys(self, self.branches, key, train)
        x, lengths = split_lengths(x)
        for position, (name, layer, layer_key) in enumerate(zip(self.names, self.branches, keys)):
            y, layer_state = apply_child("Parallel", f"branch {name!r} (position {position})", layer,
                                         params.get(name, {}), state.get(name, {}),
                                         with_lengths(layer, x, lengths, jnp.shape(x)[:2]), layer_key, train)
            outputs.append(y)
            if layer_state:
                new_state[name] = layer_state
        self._merged_shape([jnp.shape(y) for y in outputs])
        dtype = jnp.result_type(*outputs)
        outputs = [y.astype(dtype) for y in outputs]
        if self.merge == "sum":
            return sum(outputs[1:], outputs[0]), new_state
        return jnp.concatenate(outputs, axis=self.axis), new_state

    def _merged_shape(self, shapes) -> None:
        """Raises a ValueError naming every branch's shape when the outputs cannot be merged."""
        shapes = [tuple(shape) for shape in shapes]
        listed = ", ".join(f"{name!r} {shape}" for name, shape in zip(self.names, shapes))
        if self.merge == "sum":
            if len(set(shapes)) > 1:
                raise ValueError(f"Parallel: merge='sum' needs branch outputs of one shape, got {listed}.")
            return
        ranks = {len(shape) for shape in shapes}
        rank = ranks.pop() if len(ranks) == 1 else None
        if rank is None:
            raise ValueError(f"Parallel: merge='concat' needs branch outputs of one rank, got {listed}.")
        if not -rank <= self.axis < rank or self.axis % rank == 0:
            raise ValueError(f"Parallel: axis must be a non-batch axis of the branch outputs (1 to {rank - 1} or "
                             f"{-rank + 1} to -1), got {self.axis} for outputs {listed}.")
        axis = self.axis % rank
        if len({shape[:axis] + shape[axis + 1:] for shape in shapes}) > 1:
            raise ValueError(f"Parallel: merge='concat' on axis {self.axis} needs branch outputs equal in every "
                             f"other axis, got {listed}.")

    def __repr__(self):
        return f"Parallel({children_repr(self.names, self.branches)}, merge={self.merge!r}, axis={self.axis})"


@dataclasses.dataclass(frozen=True)
class Tie:
    """One tie of `Tied`: the params entry at ``target`` is the one at ``source``.

    Paths are the keys from the model's params down to the entry, joined by ``/``: e.g.
    ``"output/weights"`` in ``Serial(("embed", Embedding(...)), ..., ("output", FullyConnected(...)))``,
    or a whole layer's params (``"fully_connected_1"``).

    Args:
        target: the path of the entry that is not stored but taken from ``source``.
        source: the path of the stored entry.
        transpose: use the source array transposed (its last two axes swapped), as an output
            projection (features, vocabulary) tied to an embedding table (vocabulary, features).

    Raises:
        TypeError: for a path that is not a string or a ``transpose`` that is not a bool.
        ValueError: for an empty path or a target equal to, inside or around the source.
    """

    target: str
    source: str
    transpose: bool = False

    def __post_init__(self):
        for what in ("target", "source"):
            path = getattr(self, what)
            if not isinstance(path, str):
                raise TypeError(f"Tie: {what} must be a '/'-separated params path (a str), got {path!r}.")
            if not path or any(not part for part in path.split("/")):
                raise ValueError(f"Tie: {what} must be a '/'-separated params path such as 'output/weights', "
                                 f"got {path!r}.")
        if not isinstance(self.transpose, bool):
            raise TypeError(f"Tie: transpose must be a bool, got {self.transpose!r}.")
        if _nested(self.target, self.source):
            raise ValueError(f"Tie: target and source must be separate entries, got target {self.target!r} and "
                             f"source {self.source!r}.")

    def value(self, params):
        """The source entry of ``params`` as the target uses it (transposed if asked).

        Raises:
            ValueError: for ``transpose`` of an entry that is not an array of rank >= 2.
        """
        value = _lookup(params, self.source)
        if not self.transpose:
            return value
        if isinstance(value, dict) or jnp.ndim(value) < 2:
            raise ValueError(f"Tie: transpose needs an array of rank >= 2 at the source {self.source!r}, got "
                             f"{jax.tree.map(jnp.shape, value)}.")
        return jnp.swapaxes(value, -1, -2)


def _nested(a: str, b: str) -> bool:
    """True when one path is the other or lies inside it."""
    a, b = a.split("/"), b.split("/")
    return a[:len(b)] == b or b[:len(a)] == a


def _lookup(params, path: str):
    for part in path.split("/"):
        params = params[part]
    return params


def _without(params: dict, path: list[str]) -> dict:
    """``params`` without the entry at ``path`` (and without dicts that it leaves empty)."""
    head, rest = path[0], path[1:]
    out = dict(params)
    if rest:
        inner = _without(params[head], rest)
        if inner:
            out[head] = inner
        else:
            del out[head]
    else:
        del out[head]
    return out


def _with(params: dict, path: list[str], value) -> dict:
    """``params`` with ``value`` at ``path`` (creating the dicts on the way)."""
    head, rest = path[0], path[1:]
    out = dict(params)
    out[head] = _with(params.get(head, {}), rest, value) if rest else value
    return out


@dataclasses.dataclass(frozen=True, init=False)
class Tied(Layer):
    """Runs ``layer`` with some of its params shared: each `Tie`'s target is its source.

    The shared entry is stored once (the target is absent from the params, so an optimizer,
    a regularizer and a checkpoint see it once) and used at every place: `apply` puts the
    source (transposed if asked) at each target before running ``layer``, so the gradient
    of the source sums the gradients of all its uses. The wrapper adds no nesting: its params
    are ``layer``'s without the targets, its state ``layer``'s, its `name` and declarations
    (`Layer.sublayers`, `Layer.regularized`, `Layer.memory`) ``layer``'s.

    Args:
        layer: the model (usually a `Serial`).
        *ties: one or more `Tie`.

    Raises:
        TypeError: for a ``layer`` that is not a jaxdl layer or a tie that is not a `Tie`.
        ValueError: for no ties, a target tied twice or one that is another tie's source; at
            ``init`` for a path missing from the params (naming the params' keys) or a source
            whose shape (transposed if asked) differs from the target's, naming both shapes.

    Example (tied input and output embeddings of a language model):
        >>> lm = jaxdl.Tied(jaxdl.Serial(("embed", Embedding(65, 32)), jaxdl.LSTM(32), ("output", jaxdl.FullyConnected(65))),
        ...                 jaxdl.Tie("output/weights", "embed/embedding", transpose=True))
    """

    layer: Layer
    takes_lengths = True  # hands a SequenceBatch's lengths to the children that take them
    ties: tuple[Tie, ...]

    def __init__(self, layer: Layer, *ties: Tie):
        _require_layer("Tied", "layer", layer)
        if not ties:
            raise ValueError("Tied: needs at least one Tie(target, source), got none.")
        for tie in ties:
            if not isinstance(tie, Tie):
                raise TypeError(f"Tied: ties must be jaxdl.Tie(target, source), got {tie!r} (type {type(tie).__name__}).")
        for i, tie in enumerate(ties):
            for other in ties[i + 1:]:
                if _nested(tie.target, other.target):
                    raise ValueError(f"Tied: the targets {tie.target!r} and {other.target!r} overlap; tie each entry once.")
            for other in ties:
                if _nested(tie.target, other.source):
                    raise ValueError(f"Tied: the target {tie.target!r} overlaps the source {other.source!r} of "
                                     f"another tie; a source must be stored.")
        object.__setattr__(self, "layer", layer)
        object.__setattr__(self, "ties", tuple(ties))

    @property
    def name(self) -> str:
        """The inner layer's name."""
        return self.layer.name

    @property
    def regularized(self) -> tuple[str, ...]:  # type: ignore[override]
        return self.layer.regularized

    @property
    def memory(self) -> tuple[str, ...]:  # type: ignore[override]
        return self.layer.memory

    def sublayers(self) -> dict[str, Layer]:
        """The inner layer's children (the params are the inner layer's, without the targets)."""
        return self.layer.sublayers()

    @property
    def needs_key_in_training(self) -> bool:  # type: ignore[override]
        return self.layer.needs_key_in_training

    def init(self, key, input_shape, dtype=jnp.float32, input_dtype=None):
        x = input_struct("Tied.init", input_shape, dtype, input_dtype)
        params, state = init_layer(self.layer, key, tuple(x.shape), dtype, x.dtype)
        for tie in self.ties:
            target, source = (self._entry(params, path) for path in (tie.target, tie.source))
            used = jax.eval_shape(lambda p, tie=tie: tie.value(p), params)
            if jax.tree.map(jnp.shape, used) != jax.tree.map(jnp.shape, target):
                shown = "transposed " if tie.transpose else ""
                raise ValueError(f"Tied: the target {tie.target!r} has shape {_shapes(target)} but the {shown}source "
                                 f"{tie.source!r} has shape {_shapes(used)} (stored {_shapes(source)}).")
        for tie in self.ties:
            params = _without(params, tie.target.split("/"))
        return params, state

    def apply(self, params, state, x, *, key=None, train=False):
        x, lengths = split_lengths(x)
        x = with_lengths(self.layer, x, lengths, jnp.shape(x)[:2])
        return self.layer.apply(self.full_params(params), state, x, key=key, train=train)

    def full_params(self, params):
        """``layer``'s params: ``params`` with every target filled in from its source."""
        for tie in self.ties:
            try:
                value = tie.value(params)
            except (KeyError, TypeError):
                raise ValueError(f"Tied: the source {tie.source!r} is missing from the params, whose entries are "
                                 f"{sorted(_paths(params))}; pass this model's own params (from its init).") from None
            params = _with(params, tie.target.split("/"), value)
        return params

    def _entry(self, params, path: str):
        try:
            return _lookup(params, path)
        except (KeyError, TypeError):
            raise ValueError(f"Tied: {path!r} is not an entry of {type(self.layer).__name__}'s params, whose "
                             f"entries are {sorted(_paths(params))}.") from None

    def __repr__(self):
        return f"Tied({self.layer!r}, {', '.join(map(repr, self.ties))})"


def _shapes(tree) -> Any:
    return jax.tree.map(lambda leaf: tuple(jnp.shape(leaf)), tree)


def _paths(params, prefix: str = "") -> list[str]:
    if not isinstance(params, dict):
        return [prefix]
    paths = [prefix] if prefix else []
    for name, value in params.items():
        paths += _paths(value, f"{prefix}/{name}" if prefix else str(name))
    return paths
