"""Mixed precision: float32 parameters, bfloat16 (or float16) compute, float32 where it matters.

Two pieces, in the style of Flax's ``param_dtype``/``dtype`` and jmp's ``Policy``:

**The layer rule** (every jaxdl layer follows it, in float64 and float32 as in bfloat16):

1. A layer computes in its input's floating dtype. Its floating parameters are cast to that
   dtype inside `apply` (a no-op when they already have it) and the output has it. A float32
   model fed bfloat16 inputs computes in bfloat16; the usual float32-in, float32-params case
   casts nothing.
2. Numerically sensitive parts compute in at least float32 (`at_least_float32`) and return to
   the input's dtype: SoftMax (the exponentials and their sum), BatchNormalization (batch
   statistics and the normalization itself; its running statistics are stored in float32 or
   wider) and the losses: `jaxdl.cross_entropy` and `jaxdl.softmax_cross_entropy` upcast
   their input and return a float32 loss (float64 for float64 input), and cross_entropy's
   default eps is the machine epsilon of that upcast dtype (bfloat16's own, 2^-7, would cap
   the loss of one example at -ln(2^-7) ~ 4.85).
3. State keeps its stored dtype: the new state a layer returns has the dtypes of the state it
   got (a memorized recurrent state computed in bfloat16 is cast back).

**The policy**: `MixedPrecision(model, compute_dtype="bfloat16", output_dtype="float32")` wraps
a model (any layer, usually a `jaxdl.Serial`):

* ``init`` is the model's own: parameters and state in the ``dtype`` passed to ``init``
  (float32 by default: the parameter dtype). The parameter tree is exactly the model's, with no
  extra nesting, so a checkpoint written by a bfloat16-compute run and one written by a
  float32 run are interchangeable.
* ``apply`` casts the floating parameters and the input to ``compute_dtype``, runs the model
  (which computes in that dtype by rule 1), casts the output to ``output_dtype`` and the new
  state back to the stored dtypes.
* Gradients therefore arrive in the parameters' dtype (the transpose of a cast is the cast
  back), and optimizer moments (Adam's) stay float32 with no optimizer change.

bfloat16 has float32's exponent range, so no loss scaling is needed. float16 (5 exponent
bits, largest value 65504) can underflow small gradients and overflow large ones: with
SoftMax followed by `jaxdl.cross_entropy`, a true-class probability below ~1.5e-5 makes the
loss gradient -1/p overflow on its way back through the float16 probabilities (NaN
gradients). This module does no loss scaling; train in bfloat16, or use float16 for inference.

Example:
    >>> import jax, jax.numpy as jnp, jaxdl
    >>> model = jaxdl.MixedPrecision(jaxdl.models.lenet(), compute_dtype="bfloat16")
    >>> params, state = model.init(jax.random.key(0), (2, 1, 28, 28))  # float32 params
    >>> y, _ = model.apply(params, state, jnp.ones((2, 1, 28, 28)))
    >>> y.dtype
    dtype('float32')
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from jaxdl.core import Layer, init_layer
from jaxdl.validation import check_dtype_available

#: The compute dtypes by name. float64 needs ``jax_enable_x64``.
COMPUTE_DTYPES = ("float32", "bfloat16", "float16", "float64")


def dtype_name(owner: str, what: str, value, *, allow_none: bool = False) -> str | None:
    """The canonical name (one of `COMPUTE_DTYPES`) of a floating dtype given by name or dtype.

    Accepts ``"bfloat16"``, ``jnp.bfloat16``, ``jnp.dtype("bfloat16")``, ``np.float32``...

    Raises:
        ValueError: naming ``owner`` and ``what``, the accepted dtypes and the value given, for
            an unknown name, a non-floating dtype (an integer dtype, bool, complex) or anything
            else.
    """
    if value is None and allow_none:
        return None
    expected = f"one of {', '.join(repr(name) for name in COMPUTE_DTYPES)} (a name or a jnp dtype)"
    if allow_none:
        expected += " or None"
    try:
        resolved = jnp.dtype(value)
    except TypeError:
        raise ValueError(f"{owner}: {what} must be {expected}; got {value!r}, which is not a dtype.") from None
    if resolved.name not in COMPUTE_DTYPES:
        kind = "a floating dtype" if jnp.issubdtype(resolved, jnp.floating) else "not a floating dtype"
        raise ValueError(f"{owner}: {what} must be {expected}; got {value!r} ({resolved.name}, {kind}).")
    return resolved.name


def is_floating(leaf) -> bool:
    """True for an array (or scalar) of a floating dtype; False for integers, bools, keys."""
    dtype = getattr(leaf, "dtype", None)
    if dtype is None:
        return isinstance(leaf, float)
    return jnp.issubdtype(dtype, jnp.floating)


def cast_floating(tree, dtype):
    """``tree`` with its floating leaves cast to ``dtype``; other leaves (and leaves that
    already have ``dtype``) returned as they are."""
    dtype = jnp.dtype(dtype)

    def cast(leaf):
        if not is_floating(leaf) or getattr(leaf, "dtype", None) == dtype:
            return leaf
        return jnp.asarray(leaf).astype(dtype)

    return jax.tree.map(cast, tree)


def at_least_float32(dtype) -> jnp.dtype:
    """The dtype numerically sensitive parts compute in: float32 for bfloat16, float16 and
    float32; float64 for float64."""
    return jnp.promote_types(dtype, jnp.float32)


def upcast(x):
    """``x`` as a jax array of `at_least_float32` of its dtype (no-op for float32/float64)."""
    x = jnp.asarray(x)
    return x.astype(at_least_float32(x.dtype))


def restore_dtypes(new_state, state):
    """``new_state`` with each floating leaf cast to the dtype of the same leaf of ``state``.

    Layers return their state with the structure they got it in; when the structures differ
    (nothing to compare with), ``new_state`` is returned unchanged.
    """
    if jax.tree.structure(new_state) != jax.tree.structure(state):
        return new_state

    def restore(new, old):
        if is_floating(new) and is_floating(old) and new.dtype != jnp.result_type(old):
            return new.astype(jnp.result_type(old))
        return new

    return jax.tree.map(restore, new_state, state)


@dataclasses.dataclass(frozen=True)
class MixedPrecision(Layer):
    """Runs ``layer`` in ``compute_dtype`` with parameters and state kept in their own dtype.

    See the module docstring for the conventions. ``init`` is ``layer.init`` (its ``dtype`` is
    the parameter dtype, float32 by default); ``apply`` casts the floating params and the input
    to ``compute_dtype``, runs ``layer`` and casts the output to ``output_dtype`` and the new
    state to the dtypes of the state passed in. Non-floating inputs (integer labels, token ids)
    are passed through uncast. The wrapper adds no nesting: its params and state are the
    inner layer's, and its `name` is the inner layer's, so ``Serial(MixedPrecision(Conv(...)),
    ...)`` keys its params ``"conv_0"`` as without the wrapper.

    Args:
        layer: the model or layer to run.
        compute_dtype: ``"bfloat16"`` (default), ``"float16"``, ``"float32"`` or ``"float64"``,
            a name or a jnp dtype.
        output_dtype: the dtype of the output (default ``"float32"``, so losses and metrics
            see float32), or None to return the compute dtype.

    Raises:
        TypeError: for a ``layer`` that is not a jaxdl layer.
        ValueError: for a dtype that is not one of `COMPUTE_DTYPES` (an integer dtype, an
            unknown name), naming the wrapper, the accepted dtypes and the value given; at
            ``init`` and ``apply``, for a float64 compute or output dtype while JAX's 64-bit
            mode is off (float64 arrays would silently be float32): enable ``jax_enable_x64``
            first.

    Example:
        >>> model = MixedPrecision(jaxdl.FullyConnected(3), compute_dtype=jnp.bfloat16)
        >>> params, _ = model.init(jax.random.key(0), (4, 5))
        >>> params["weights"].dtype, model.apply(params, {}, jnp.ones((4, 5)))[0].dtype
        (dtype('float32'), dtype('float32'))
    """

    layer: Layer
    compute_dtype: str = "bfloat16"
    output_dtype: str | None = "float32"

    def __post_init__(self):
        if not isinstance(self.layer, Layer):
            raise TypeError(
                f"MixedPrecision: layer must be a jaxdl layer, got {self.layer!r} (type {type(self.layer).__name__}).")
        object.__setattr__(self, "compute_dtype", dtype_name("MixedPrecision", "compute_dtype", self.compute_dtype))
        object.__setattr__(self, "output_dtype",
                           dtype_name("MixedPrecision", "output_dtype", self.output_dtype, allow_none=True))

    @property
    def name(self) -> str:
        """The inner layer's name: wrapping a layer in a `jaxdl.Serial` keeps its params' key."""
        return self.layer.name

    @property
    def needs_key_in_training(self) -> bool:  # type: ignore[override]
        return self.layer.needs_key_in_training

    @property
    def regularized(self) -> tuple[str, ...]:  # type: ignore[override]
        """The inner layer's declaration (the params are the inner layer's)."""
        return self.layer.regularized

    @property
    def memory(self) -> tuple[str, ...]:  # type: ignore[override]
        """The inner layer's declaration (the state is the inner layer's)."""
        return self.layer.memory

    @property
    def takes_lengths(self) -> bool:  # type: ignore[override]
        """The inner layer's (it is given the `jaxdl.SequenceBatch` as it comes)."""
        return self.layer.takes_lengths

    def sublayers(self) -> dict[str, Layer]:
        """The inner layer's children (the wrapper adds no nesting)."""
        return self.layer.sublayers()

    def init(self, key, input_shape, dtype=jnp.float32, input_dtype=None):
        self._check_x64()
        return init_layer(self.layer, key, input_shape, dtype, input_dtype)

    def apply(self, params, state, x, *, key=None, train=False):
        self._check_x64()
        compute = jnp.dtype(self.compute_dtype)
        y, new_state = self.layer.apply(cast_floating(params, compute), state, cast_floating(x, compute),
                                        key=key, train=train)
        if self.output_dtype is not None:
            y = cast_floating(y, jnp.dtype(self.output_dtype))
        return y, restore_dtypes(new_state, state)

    def _check_x64(self) -> None:
        """Raises a ValueError if a float64 dtype is asked for while JAX computes float64 as float32."""
        for what in ("compute_dtype", "output_dtype"):
            check_dtype_available("MixedPrecision", what, getattr(self, what))

