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

import copy
import dataclasses
import functools
import inspect
import re
from typing import Any, Sequence

import jax
import jax.numpy as jnp

from jaxdl.sequence_batch import SequenceBatch
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

    #: True when `apply` takes a `jaxdl.SequenceBatch` ``(x, lengths)`` (the recurrent layers,
    #: attention, and the composites, which hand the lengths on: `with_lengths`). Any other
    #: layer given one raises a TypeError naming it.
    takes_lengths: bool = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "apply" in cls.__dict__:
            cls.apply = _explaining_missing_entries(cls.__dict__["apply"])
        if "init" in cls.__dict__:
            cls.init = _checking_dtype(cls.__dict__["init"])

    def init(self, key: jax.Array, input_shape: Shape, dtype=jnp.float32, input_dtype=None) -> tuple[Params, State]:
        """Creates the parameters and state for an input of ``input_shape`` (batch included).

        Args:
            key: a `jax.random` key for the initializers.
            input_shape: the shape of the input, batch dimension first.
            dtype: the floating dtype of the parameters (float32 unless asked otherwise).
            input_dtype: the input's dtype when it differs from ``dtype`` (integer token ids);
                only a layer that traces or threads its input needs it (composites, this
                default); a layer with parameters may leave it out of its own ``init``.

        Returns:
            ``(params, state)``, two (possibly empty) dicts of arrays.

        Raises:
            ValueError: if the layer cannot take inputs of ``input_shape``. This default, for
                layers without params or state, checks by tracing `apply` abstractly.
        """
        del key
        x = input_struct(f"{type(self).__name__}.init", input_shape, dtype, input_dtype)
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
        if isinstance(x, SequenceBatch) and not self.takes_lengths:
            raise TypeError(
                f"{self!r}: x must be an array, got a SequenceBatch (lengths are for the layers that take them: "
                f"recurrent layers and attention); inside a Serial (or another combinator) the lengths reach those "
                f"layers and this one gets the array, or pass sequence_batch.x.")
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
        expected = jax.eval_shape(lambda k: init_layer(layer, k, tuple(jnp.shape(x)), dtype, jnp.result_type(x)),
                                  jax.random.key(0))
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
        {'fully_connected_0': {'weights': True, 'bias': False}}
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


#: A composite's child: a layer, or a ``(name, layer)`` pair that names its key.
Child = Any


def child_keys(owner: str, children: Sequence[Child]) -> tuple[tuple[str, ...], tuple[Layer, ...]]:
    """The keys and layers of a composite's children (`Serial`'s layers, `Parallel`'s branches).

    A ``(name, layer)`` pair is keyed by the user's ``name``; any other child by its
    `Layer.name` and a counter per name, as Flax does (``conv_0``, ``conv_1``,
    ``fully_connected_0``, ...). So inserting or removing a layer of another type (a Dropout, a
    ReLU) renames nothing.

    Args:
        owner: the composite's name, for the messages.
        children: the layers or ``(name, layer)`` pairs, in order.

    Returns:
        ``(keys, layers)``, two tuples as long as ``children``.

    Raises:
        TypeError: for a child that is neither a jaxdl layer nor a ``(str, layer)`` pair.
        ValueError: for an empty name or one containing ``/`` (the path separator of
            checkpoints and `jaxdl.Tie`), or for two children with the same key.
    """
    keys, layers, counts = [], [], {}
    for position, child in enumerate(children):
        name, layer = child if isinstance(child, tuple) and len(child) == 2 and isinstance(child[0], str) else (None, child)
        if not isinstance(layer, Layer):
            raise TypeError(f"{owner}: expects jaxdl layers or (name, layer) pairs, got {child!r} "
                            f"(type {type(child).__name__}) at position {position}.")
        if name is None:
            name = f"{layer.name}_{counts.get(layer.name, 0)}"
            counts[layer.name] = counts.get(layer.name, 0) + 1
        elif not name or "/" in name:
            raise ValueError(f"{owner}: a layer's name must be a non-empty string without '/', got {name!r} "
                             f"at position {position}.")
        keys.append(name)
        layers.append(layer)
    repeated = sorted({key for key in keys if keys.count(key) > 1})
    if repeated:
        raise ValueError(f"{owner}: the layers' keys must be unique, got {', '.join(map(repr, repeated))} more "
                         f"than once (keys {keys}); name the layers differently.")
    return tuple(keys), tuple(layers)


def children_repr(keys: Sequence[str], layers: Sequence[Layer]) -> str:
    """The children as a composite's constructor takes them: ``(name, layer)`` where the key
    is the user's, the bare layer where it is the automatic one (`child_keys`)."""
    counts, parts = {}, []
    for key, layer in zip(keys, layers):
        if key == f"{layer.name}_{counts.get(layer.name, 0)}":
            counts[layer.name] = counts.get(layer.name, 0) + 1
            parts.append(repr(layer))
        else:
            parts.append(f"({key!r}, {layer!r})")
    return ", ".join(parts)


def child_apply_keys(owner: Layer, layers: Sequence[Layer], key, train: bool) -> list:
    """One key per child for `apply`: split from ``key`` when training and a child needs one
    (`require_key` tells the call to make when ``key`` is None), else Nones."""
    if train and any(layer.needs_key_in_training for layer in layers):
        return list(jax.random.split(require_key(owner, key), len(layers)))
    return [None] * len(layers)


def init_child(owner: str, place: str, layer: Layer, key, x: jax.ShapeDtypeStruct, dtype):
    """``layer.init`` for an input like ``x`` and the output it gives, abstractly.

    The one way composites initialize a child: the child is told the input's dtype when its
    ``init`` takes ``input_dtype`` (`init_layer`), and a ValueError or TypeError it raises is
    raised again with ``owner`` and ``place`` (`placed_error`).

    Args:
        owner: the composite's name.
        place: where the child sits, e.g. ``"layer 'conv_0' (position 0)"``.
        layer: the child.
        key: its `jax.random` key.
        x: the input's shape and dtype (a `jax.ShapeDtypeStruct`).
        dtype: the parameter dtype.

    Returns:
        ``(params, state, output)``, ``output`` a `jax.ShapeDtypeStruct`.
    """
    try:
        params, state = init_layer(layer, key, tuple(x.shape), dtype, x.dtype)
        return params, state, apply_output(layer, params, state, x)
    except (ValueError, TypeError) as error:
        raise placed_error(f"{owner}: {place}: ", error) from error


def apply_child(owner: str, place: str, layer: Layer, params, state, x, key, train: bool):
    """``layer.apply`` for a composite, its ValueError or TypeError raised again with ``owner``
    and ``place`` (`placed_error`)."""
    try:
        return layer.apply(params, state, x, key=key, train=train)
    except (ValueError, TypeError) as error:
        raise placed_error(f"{owner}: {place}: ", error) from error


def split_lengths(x) -> tuple[Any, Any]:
    """``(x, lengths)`` of a composite's input: a `SequenceBatch`, or an array (lengths None)."""
    return (x.x, x.lengths) if isinstance(x, SequenceBatch) else (x, None)


def with_lengths(layer: Layer, x, lengths, batch_time: tuple[int, ...]):
    """The input of a composite's child: ``SequenceBatch(x, lengths)`` for a child that takes
    lengths (`Layer.takes_lengths`) while ``x`` keeps the composite input's leading (batch,
    time) axes ``batch_time``; else ``x``."""
    if lengths is None or not layer.takes_lengths or tuple(jnp.shape(x)[:2]) != tuple(batch_time):
        return x
    return SequenceBatch(x, lengths)


def placed_error(prefix: str, error: Exception) -> Exception:
    """``error`` with ``prefix`` before its message: the same type and attributes when it can be
    copied, else a plain ValueError or TypeError."""
    message = f"{prefix}{error}"
    try:
        placed = copy.copy(error)
        placed.args = (message,)
        if str(placed) != message:
            raise TypeError("the error's type formats its own message")
    except Exception:  # noqa: BLE001  (an error type that cannot be copied: keep its base type)
        placed = (ValueError if isinstance(error, ValueError) else TypeError)(message)
        placed.__dict__.update(getattr(error, "__dict__", {}))
    return placed


@functools.lru_cache(maxsize=None)
def takes_input_dtype(cls: type) -> bool:
    """True when ``cls.init`` takes ``input_dtype`` (composites, and `Layer`'s default init)."""
    return "input_dtype" in inspect.signature(cls.init).parameters


def init_layer(layer: Layer, key, input_shape: Shape, dtype=jnp.float32, input_dtype=None):
    """``layer.init(key, input_shape, dtype)``, with ``input_dtype`` when the layer takes it.

    A layer's own ``dtype`` is its parameter dtype; a composite (or a parameter-free layer,
    which traces its `apply`) also needs the dtype of its input, e.g. int32 token ids.
    """
    if input_dtype is not None and takes_input_dtype(type(layer)):
        return layer.init(key, input_shape, dtype, input_dtype=input_dtype)
    return layer.init(key, input_shape, dtype)


def input_struct(owner: str, input_shape, dtype, input_dtype) -> jax.ShapeDtypeStruct:
    """The abstract input of ``init``: ``input_shape`` of ``input_dtype`` (``dtype`` when None).

    Raises:
        TypeError: for an ``input_dtype`` that is not a dtype.
    """
    try:
        return jax.ShapeDtypeStruct(tuple(input_shape), jnp.dtype(dtype if input_dtype is None else input_dtype))
    except TypeError as error:
        raise TypeError(f"{owner}: input_dtype must be a dtype such as jnp.int32, got {input_dtype!r}.") from error


@dataclasses.dataclass(frozen=True, init=False)
class Serial(Layer):
    """Applies ``layers`` one after the other.

    Params and state are dicts keyed by each layer's `Layer.name` and a counter per name, as
    Flax does (``"conv_0"``, ``"conv_1"``, ``"fully_connected_0"``), or by the name the user
    gives in a ``(name, layer)`` pair (`child_keys`); layers without params or state get no
    entry. Inserting or removing a layer of another type (a Dropout, an activation) renames no
    parameter, so a trained model's params still fit. Input shapes and dtypes are threaded
    through `init` with `jax.eval_shape`, so no layer needs a hand-computed input size and
    integer inputs (token ids) reach the layer that takes them. In training mode the key is
    split across the layers. A ValueError or TypeError of a layer's ``init`` or ``apply`` is
    raised again (same type, original message) prefixed with the layer's key and position.
    Given a `jaxdl.SequenceBatch` ``(x, lengths)``, it hands the lengths to every layer that
    takes them (`Layer.takes_lengths`: recurrent layers, attention) until a layer's output loses
    the input's leading (batch, time) axes or an axis (a recurrent layer's last state, a
    `Flatten`), and the plain arrays to the others; its output is an array.

    Args:
        *layers: the layers, first applied first; a ``(name, layer)`` pair keys that layer
            ``name``.

    Raises:
        TypeError: for an argument that is neither a layer nor a ``(str, layer)`` pair.
        ValueError: for two layers with the same key, or a bad name (see `child_keys`).

    Example:
        >>> model = jaxdl.Serial(("encoder", jaxdl.FullyConnected(4)), jaxdl.ReLU(), jaxdl.FullyConnected(2))
        >>> model.names
        ('encoder', 're_lu_0', 'fully_connected_0')
    """

    layers: tuple[Layer, ...]
    names: tuple[str, ...]
    takes_lengths = True

    def __init__(self, *layers: Child):
        names, layers = child_keys("Serial", layers)
        object.__setattr__(self, "layers", layers)
        object.__setattr__(self, "names", names)

    @property
    def needs_key_in_training(self) -> bool:  # type: ignore[override]
        return any(layer.needs_key_in_training for layer in self.layers)

    def sublayers(self) -> dict[str, Layer]:
        """``{key: layer}`` for every layer (`names`)."""
        return dict(zip(self.names, self.layers))

    def init(self, key, input_shape, dtype=jnp.float32, input_dtype=None):
        """Initializes every layer for the output of the one before.

        Args:
            key: a `jax.random` key, split across the layers.
            input_shape: the input's shape, batch first.
            dtype: the parameter dtype.
            input_dtype: the input's dtype when it is not ``dtype`` (e.g. jnp.int32 token ids).

        Returns:
            ``(params, state)`` keyed by `names`.
        """
        params, state = {}, {}
        x = input_struct("Serial.init", input_shape, dtype, input_dtype)
        keys = jax.random.split(key, max(len(self.layers), 1))
        for position, (name, layer, layer_key) in enumerate(zip(self.names, self.layers, keys)):
            layer_params, layer_state, x = init_child(
                "Serial", f"layer {name!r} (position {position})", layer, layer_key, x, dtype)
            if layer_params:
                params[name] = layer_params
            if layer_state:
                state[name] = layer_state
        return params, state

    def apply(self, params, state, x, *, key=None, train=False):
        new_state = {}
        keys = child_apply_keys(self, self.layers, key, train)
        x, lengths = split_lengths(x)
        batch_time = tuple(jnp.shape(x)[:2])
        for position, (name, layer, layer_key) in enumerate(zip(self.names, self.layers, keys)):
            rank = jnp.ndim(x)
            try:
                x, layer_state = apply_child("Serial", f"layer {name!r} (position {position})", layer,
                                             params.get(name, {}), state.get(name, {}),
                                             with_lengths(layer, x, lengths, batch_time), layer_key, train)
            except ValueError as error:
                if not getattr(error, "missing_entries", False):
                    raise
                raise self._missing_entries(name, params, state, error.__cause__ or error) from error
            if layer_state:
                new_state[name] = layer_state
            if lengths is not None and (jnp.ndim(x) < rank or tuple(jnp.shape(x)[:2]) != batch_time):
                lengths = None  # the time axis is gone (e.g. a recurrent layer's last state): for good
        return x, new_state

    def _missing_entries(self, name: str, params, state, error: Exception) -> ValueError:
        """The error for a layer given params or state without entries it needs, naming the old
        positional keys when ``params`` has them."""
        legacy = ""
        positional = {f"{layer.name}_{i}" for i, layer in enumerate(self.layers)}
        if isinstance(params, dict) and params and set(params) <= positional and not set(params) <= set(self.names):
            legacy = (f" These params use the positional keys of jaxdl before 0.2 ('<layer>_<position>', e.g. "
                      f"{sorted(set(params) - set(self.names))[0]!r}), not this Serial's keys per layer type; convert "
                      f"them with jaxdl.core.from_positional_keys(model, params).")
        explained = ValueError(
            f"Serial: the layer at {name!r} was given params or state without entries it needs: {error} "
            f"The Serial's params have the keys {sorted(params)} and its state {sorted(state)}; this "
            f"model's layers are {list(self.names)}.{legacy}")
        explained.missing_entries = True
        return explained

    def __repr__(self):
        return f"Serial({children_repr(self.names, self.layers)})"


def from_positional_keys(model: Serial, tree: dict) -> dict:
    """A params or state tree keyed the old way (``"<layer>_<position>"``, jaxdl before 0.2)
    keyed by ``model``'s keys (`Serial.names`), recursively for nested `Serial` layers.

    Args:
        model: the `Serial` the tree belongs to.
        tree: its params or state with positional keys (e.g. ``conv_3``, ``fully_connected_7``).

    Returns:
        The same arrays under ``model``'s keys.

    Raises:
        ValueError: for a key that is not one of ``model``'s positional keys.
    """
    positional = {f"{layer.name}_{i}": (name, layer) for i, (name, layer) in enumerate(zip(model.names, model.layers))}
    unknown = sorted(set(tree) - set(positional))
    if unknown:
        raise ValueError(f"from_positional_keys: the keys {unknown} are not positional keys of this model "
                         f"({sorted(positional)}).")
    converted = {}
    for old, value in tree.items():
        name, layer = positional[old]
        converted[name] = from_positional_keys(layer, value) if isinstance(layer, Serial) else value
    return converted


def apply_output(layer: Layer, params, state, x: jax.ShapeDtypeStruct):
    """The evaluation-mode output of ``layer`` (shape and dtype) for an input like ``x``, traced abstractly."""
    return jax.eval_shape(lambda p, s, x: layer.apply(p, s, x, train=False)[0], params, state, x)


def apply_shape(layer, params, state, input_shape, dtype) -> Shape:
    """The evaluation-mode output shape of ``layer`` with the given params, traced abstractly."""
    return tuple(apply_output(layer, params, state, jax.ShapeDtypeStruct(tuple(input_shape), dtype)).shape)


def output_shape(layer: Layer, input_shape: Shape, dtype=jnp.float32, input_dtype=None) -> Shape:
    """The output shape of ``layer`` for an input of ``input_shape``, without computing it.

    Args:
        layer: the layer or model.
        input_shape: the input's shape, batch first.
        dtype: the parameter dtype.
        input_dtype: the input's dtype when it is not ``dtype`` (e.g. jnp.int32 token ids).

    Returns:
        The output shape.

    Example:
        >>> jaxdl.output_shape(jaxdl.Conv(6, (5, 5), stride=2), (8, 1, 28, 28))
        (8, 6, 14, 14)
    """
    x = input_struct("output_shape", input_shape, dtype, input_dtype)
    params, state = jax.eval_shape(lambda k: init_layer(layer, k, tuple(input_shape), dtype, x.dtype),
                                   jax.random.key(0))
    return tuple(apply_output(layer, params, state, x).shape)


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
