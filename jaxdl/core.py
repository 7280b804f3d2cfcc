"""The layer contract, `Serial` composition and shape inference.

A layer is a small immutable value (a frozen dataclass holding only its configuration)
carrying two pure functions::

    params, state = layer.init(key, input_shape)            # input_shape includes the batch
    y, new_state = layer.apply(params, state, x, key=None, train=False)

* ``params`` are the trainable arrays, ``state`` the non-trainable ones (batch-norm running
  statistics, a memorized recurrent state). Both are nested dicts of arrays with readable
  string keys; a layer without them returns ``{}``.
* ``train`` is a static Python bool chosen at call time (training or evaluation behaviour).
* ``key`` is a `jax.random` key; only a layer that draws randomness while training needs it.
* Layers are hashable, so they can be static arguments of `jax.jit` and never cause
  recompilation by identity.

Example:
    >>> import jax, jax.numpy as jnp, jaxdl
    >>> model = jaxdl.Serial(jaxdl.Flatten(), jaxdl.FullyConnected(10), jaxdl.SoftMax())
    >>> params, state = model.init(jax.random.key(0), (32, 1, 8, 8))
    >>> probs, state = model.apply(params, state, jnp.ones((32, 1, 8, 8)))
    >>> probs.shape
    (32, 10)
"""

from __future__ import annotations

import dataclasses
import functools
import re
from typing import Any, Sequence

import jax
import jax.numpy as jnp

from jaxdl.validation import check_dtype_available

Params = dict[str, Any]
State = dict[str, Any]
Shape = tuple[int, ...]


class Layer:
    """Base class of every jaxdl layer.

    Subclasses are frozen dataclasses that override `init` and `apply`. A layer without
    parameters only needs `apply`; its `init` returns ``({}, {})``.
    """

    #: True when `apply` needs a `jax.random` key in training mode.
    needs_key_in_training: bool = False

    #: The keys of this layer's own params dict that L1/L2 regularizers penalize (its
    #: kernels; never biases or normalization scales and offsets). See `regularized_mask`.
    #: Set it as a plain class attribute (no annotation, so a dataclass does not make it a field).
    regularized: tuple[str, ...] = ()

    #: The keys of this layer's own state dict that hold recurrent memory: `jaxdl.reset_memory`
    #: zeroes exactly these and `memory_for_batch` resizes exactly these. See `memory_mask`.
    memory: tuple[str, ...] = ()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "apply" in cls.__dict__:
            cls.apply = _explaining_missing_entries(cls.__dict__["apply"])
        if "init" in cls.__dict__:
            cls.init = _checking_dtype(cls.__dict__["init"])

    def init(self, key: jax.Array, input_shape: Shape, dtype=jnp.float32) -> tuple[Params, State]:
        """Creates the parameters and state for an input of ``input_shape`` (batch included).

        Args:
            key: a `jax.random` key for the initializers.
            input_shape: the shape of the input, batch dimension first.
            dtype: the floating dtype of the parameters (float32 unless asked otherwise).

        Returns:
            ``(params, state)``, two (possibly empty) dicts of arrays.

        Raises:
            ValueError: if the layer cannot take inputs of ``input_shape``. This default, for
                layers without params or state, checks by tracing `apply` abstractly.
        """
        del key
        x = jax.ShapeDtypeStruct(tuple(input_shape), dtype)
        jax.eval_shape(lambda x: self.apply({}, {}, x, train=False), x)
        return {}, {}

    def apply(self, params: Params, state: State, x: jax.Array, *, key=None, train: bool = False):
        """Runs the layer; returns ``(y, new_state)``."""
        raise NotImplementedError(f"{type(self).__name__} does not implement apply")

    def __call__(self, params, state, x, *, key=None, train=False):
        """Same as `apply`."""
        return self.apply(params, state, x, key=key, train=train)

    def sublayers(self) -> dict[str, "Layer"]:
        """The child layers of a layer built of other layers, by their key in its params/state.

        A composite (`Serial`, `Residual`, `Parallel`, ...) stores each child's params and state
        under a key of its own dicts; this maps those keys to the children, so that the
        declaration walkers (`regularized_mask`, `memory_mask`) can recurse. A plain layer has
        none (the default).

        Returns:
            ``{key: child layer}``, empty for a layer without children.
        """
        return {}

    @property
    def name(self) -> str:
        """The snake_case class name, the stem of this layer's key in `Serial` (``conv_0``)."""
        return _snake_case(type(self).__name__)


def _snake_case(name: str) -> str:
    name = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", name)
    return re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).lower()


def _checking_dtype(init):
    """``init`` refusing a float64 ``dtype`` while JAX's 64-bit mode is off (it would silently
    create float32 arrays): `jaxdl.validation.check_dtype_available`."""

    @functools.wraps(init)
    def checked_init(self, key, input_shape, *args, **kwargs):
        dtype = args[0] if args else kwargs.get("dtype")
        if dtype is not None:
            check_dtype_available(f"{type(self).__name__}.init", "dtype", dtype)
        return init(self, key, input_shape, *args, **kwargs)

    return checked_init


Layer.init = _checking_dtype(Layer.init)


def _explaining_missing_entries(apply):
    """``apply`` with a KeyError for a missing params or state entry turned into a ValueError
    that names the layer, the missing key and the params and state the layer expected
    (`missing_entries_error`)."""

    @functools.wraps(apply)
    def checked_apply(self, params, state, x, *args, **kwargs):
        try:
            return apply(self, params, state, x, *args, **kwargs)
        except KeyError as error:
            raise missing_entries_error(self, params, state, x, error) from error

    checked_apply.explains_missing_entries = True
    return checked_apply


def missing_entries_error(layer: Layer, params, state, x, error: KeyError) -> Exception:
    """The error for a KeyError raised by ``layer.apply``: a ValueError naming the layer, the
    missing key and the params and state ``layer.init`` creates for an input like ``x``, when
    the given trees lack entries of those; else the KeyError itself."""
    try:
        dtype = jnp.result_type(x) if jnp.issubdtype(jnp.result_type(x), jnp.floating) else jnp.float32
        expected = jax.eval_shape(lambda k: layer.init(k, tuple(jnp.shape(x)), dtype), jax.random.key(0))
    except Exception:  # noqa: BLE001  (no expectation to tell: the input itself does not fit)
        return error
    missing = [f"{what} entries {', '.join(paths)}" for what, want, got in
               zip(("params", "state"), expected, (params, state)) if (paths := _missing_paths(want, got))]
    if not missing:
        return error
    explained = ValueError(
        f"{layer!r}: missing {' and '.join(missing)} (KeyError {error.args[0]!r}); expected params "
        f"{_layout(expected[0])} "
        f"and state {_layout(expected[1])} as {type(layer).__name__}.init(key, {tuple(jnp.shape(x))}) creates "
        f"them, got params {_layout(params)} and state {_layout(state)}. Pass this model's own params and state "
        f"(from its init, or a checkpoint of this model).")
    explained.missing_entries = True
    return explained


def _missing_paths(expected, given, prefix: str = "") -> list[str]:
    """The key paths of the nested dict ``expected`` that ``given`` lacks."""
    if not isinstance(expected, dict) or not expected:
        return []
    if not isinstance(given, dict):
        return [repr(prefix or "{}")]
    missing = []
    for name, value in expected.items():
        path = f"{prefix}/{name}" if prefix else str(name)
        missing += [repr(path)] if name not in given else _missing_paths(value, given[name], path)
    return missing


def _layout(tree) -> str:
    """A nested dict's keys (and its leaves' shapes), e.g. ``{'mean': (4,), 'var': (4,)}``."""
    if isinstance(tree, dict):
        return "{" + ", ".join(f"{name!r}: {_layout(value)}" for name, value in tree.items()) + "}"
    shape = getattr(tree, "shape", None)
    return str(tuple(shape)) if shape is not None else type(tree).__name__


def regularized_mask(layer: Layer, params) -> Any:
    """Which leaves of ``params`` L1/L2 regularizers penalize, from the layers' declarations.

    Walks ``layer`` and its `Layer.sublayers`: a leaf is True when it lies under one of the
    keys its own layer lists in `Layer.regularized` (the kernels), False otherwise (biases,
    normalization parameters, any key a layer does not declare). A bare array (not a dict)
    is regularized.

    Args:
        layer: the model whose params these are.
        params: its params (as its ``init`` created them).

    Returns:
        A pytree of Python bools with the structure of ``params``.

    Example:
        >>> model = jaxdl.Serial(jaxdl.FullyConnected(2))
        >>> params, _ = model.init(jax.random.key(0), (1, 3))
        >>> jaxdl.regularized_mask(model, params)
        {'fully_connected_0': {'bias': False, 'weights': True}}
    """
    return _declared_mask(layer, params, "regularized")


def memory_mask(layer: Layer, state) -> Any:
    """Which leaves of ``state`` are recurrent memory, from the layers' declarations.

    Walks ``layer`` and its `Layer.sublayers`: a leaf is True when it lies under one of the
    keys its own layer lists in `Layer.memory` (RNN/GRU ``h``, LSTM ``h`` and ``c``), False
    otherwise (batch-norm statistics, a custom layer's running statistic, ...).

    Args:
        layer: the model whose state this is.
        state: its state.

    Returns:
        A pytree of Python bools with the structure of ``state``.
    """
    return _declared_mask(layer, state, "memory")


def _declared_mask(layer: Layer, tree, declaration: str):
    """``tree`` with each leaf replaced by whether its layer declares it in ``declaration``."""
    if not isinstance(layer, Layer):
        raise TypeError(f"{declaration}_mask: layer must be a jaxdl Layer, got {type(layer).__name__} {layer!r}.")
    if not isinstance(tree, dict):
        return jax.tree.map(lambda _: declaration == "regularized", tree)
    children = layer.sublayers()
    declared = set(getattr(layer, declaration))
    mask = {}
    for key, value in tree.items():
        if key in children:
            mask[key] = _declared_mask(children[key], value, declaration)
        else:
            mask[key] = jax.tree.map(lambda _, flag=key in declared: flag, value)
    return mask


def require_key(layer: Layer, key) -> jax.Array:
    """Returns ``key`` or raises the error that shows the call to make."""
    if key is None:
        raise ValueError(
            f"{layer!r} draws randomness in training mode and needs a key: call "
            f"apply(params, state, x, key=jax.random.key(seed), train=True), or train=False "
            f"for evaluation (no key needed)."
        )
    return key


def check_rank(layer: Layer, x, ranks: Sequence[int], layout: str) -> None:
    """Raises a ValueError naming ``layer`` if ``x.ndim`` is not one of ``ranks``."""
    if x.ndim not in ranks:
        raise ValueError(
            f"{layer!r} expects input of layout {layout} (rank {' or '.join(map(str, ranks))}), "
            f"got shape {tuple(x.shape)}."
        )


def check_floating(layer: Layer, x) -> None:
    """Raises a TypeError naming ``layer`` if ``x`` is not a floating-point array."""
    if not jnp.issubdtype(jnp.result_type(x), jnp.floating):
        raise TypeError(
            f"{layer!r} expects a floating-point input, got dtype {jnp.result_type(x)}; "
            f"convert it with x.astype(jnp.float32)."
        )


@dataclasses.dataclass(frozen=True, init=False)
class Serial(Layer):
    """Applies ``layers`` one after the other.

    Params and state are dicts keyed ``"<layer name>_<position>"`` (for example
    ``"conv_0"``, ``"fully_connected_3"``); layers without params or state get no entry.
    Input shapes are threaded through `init` with `jax.eval_shape`, so no layer needs a
    hand-computed input size. In training mode the key is split across the layers that need
    one.

    Args:
        *layers: the layers, first applied first.
    """

    layers: tuple[Layer, ...]

    def __init__(self, *layers: Layer):
        for position, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise TypeError(
                    f"Serial expects jaxdl layers, got {layer!r} (type {type(layer).__name__}) "
                    f"at position {position}."
                )
        object.__setattr__(self, "layers", tuple(layers))

    @property
    def names(self) -> tuple[str, ...]:
        """The key of each layer in the params/state dicts."""
        return tuple(f"{layer.name}_{i}" for i, layer in enumerate(self.layers))

    @property
    def needs_key_in_training(self) -> bool:  # type: ignore[override]
        return any(layer.needs_key_in_training for layer in self.layers)

    def init(self, key, input_shape, dtype=jnp.float32):
        params, state = {}, {}
        shape = tuple(input_shape)
        keys = jax.random.split(key, max(len(self.layers), 1))
        for name, layer, layer_key in zip(self.names, self.layers, keys):
            layer_params, layer_state = layer.init(layer_key, shape, dtype)
            if layer_params:
                params[name] = layer_params
            if layer_state:
                state[name] = layer_state
            shape = apply_shape(layer, layer_params, layer_state, shape, dtype)
        return params, state

    def apply(self, params, state, x, *, key=None, train=False):
        new_state = {}
        needs_key = [train and layer.needs_key_in_training for layer in self.layers]
        if any(needs_key):
            keys = list(jax.random.split(require_key(self, key), len(self.layers)))
        else:
            keys = [None] * len(self.layers)
        for name, layer, layer_key in zip(self.names, self.layers, keys):
            try:
                x, layer_state = layer.apply(
                    params.get(name, {}), state.get(name, {}), x, key=layer_key, train=train
                )
            except ValueError as error:
                if not getattr(error, "missing_entries", False):
                    raise
                explained = ValueError(
                    f"Serial: the layer at {name!r} was given params or state without entries it needs: {error} "
                    f"The Serial's params have the keys {sorted(params)} and its state {sorted(state)}; this "
                    f"model's layers are {list(self.names)}.")
                explained.missing_entries = True
                raise explained from error
            if layer_state:
                new_state[name] = layer_state
        return x, new_state

    def sublayers(self) -> dict[str, Layer]:
        """``{key: layer}`` for every layer (`names`)."""
        return dict(zip(self.names, self.layers))

    def __repr__(self):
        inner = ", ".join(repr(layer) for layer in self.layers)
        return f"Serial({inner})"


def apply_shape(layer, params, state, input_shape, dtype) -> Shape:
    """The evaluation-mode output shape of ``layer`` with the given params, traced abstractly."""
    x = jax.ShapeDtypeStruct(tuple(input_shape), dtype)
    out = jax.eval_shape(lambda p, s, x: layer.apply(p, s, x, train=False)[0], params, state, x)
    return tuple(out.shape)


def output_shape(layer: Layer, input_shape: Shape, dtype=jnp.float32) -> Shape:
    """The output shape of ``layer`` for an input of ``input_shape``, without computing it.

    Example:
        >>> jaxdl.output_shape(jaxdl.Conv(6, (5, 5), stride=2), (8, 1, 28, 28))
        (8, 6, 14, 14)
    """
    params, state = jax.eval_shape(lambda k: layer.init(k, tuple(input_shape), dtype), jax.random.key(0))
    return apply_shape(layer, params, state, input_shape, dtype)


def tree_float_dtype(tree) -> jnp.dtype:
    """The result dtype of the tree's floating leaves (float32 when it has none).

    For zeros that must not promote a sum: a bare ``jnp.zeros(())`` is float64 under
    ``jax_enable_x64`` and would turn a float32 model's loss into float64.
    """
    floats = [leaf for leaf in jax.tree.leaves(tree) if jnp.issubdtype(jnp.result_type(leaf), jnp.floating)]
    return jnp.result_type(*floats) if floats else jnp.dtype(jnp.float32)


def path_names(path) -> tuple[str, ...]:
    """A jax key path as a tuple of strings."""
    names = []
    for entry in path:
        for attr in ("key", "name", "idx"):
            if hasattr(entry, attr):
                names.append(str(getattr(entry, attr)))
                break
        else:
            names.append(str(entry))
    return tuple(names)


def count_params(params: Params) -> int:
    """The number of scalars in a parameter tree."""
    return sum(int(leaf.size) for leaf in jax.tree.leaves(params))
