"""The exercise's ``Layers/Base.py`` and the machinery every facade layer shares.

`BaseLayer` is the exercise's base class. `FunctionalLayer` turns a core layer into the
exercise's stateful object: it holds the params and state, ``forward`` runs the jitted core
``apply`` under `jax.vjp` (`jaxdl.exercise._engine`) and keeps the VJP, and ``backward``
applies it, stores the parameter gradients and, when an optimizer is set, steps the params
in the same compiled call. No layer math lives here.
"""

from __future__ import annotations

import copy
import enum

import jax
import numpy as np

from jaxdl.exercise import _checks, _engine
from jaxdl.exercise._engine import as_array, select_regularized, to_device
from jaxdl.exercise.initializers import UniformRandom
from jaxdl.exercise.optimizers import Optimizer

__all__ = ["BaseLayer", "FunctionalLayer", "Phase"]


class Phase(enum.Enum):
    """Older editions' phase of a layer (``Layers/Base.py``): ``layer.phase = Phase.test``.

    The current editions' ``testing_phase`` is the same switch: `Phase.test` and
    `Phase.validation` mean ``testing_phase = True``, `Phase.train` means False.
    """

    train = "train"
    test = "test"
    validation = "validation"


class BaseLayer:
    """The exercise's base layer.

    Attributes:
        trainable: True for layers with parameters (set by the subclass).
        testing_phase: False while training; True makes Dropout the identity and
            BatchNormalization use its running statistics.
        phase: older editions' view of ``testing_phase`` as a `Phase`.
    """

    def __init__(self):
        self.trainable = False
        self.testing_phase = False

    @property
    def phase(self) -> Phase:
        """`Phase.test` when ``testing_phase`` is set, else `Phase.train` (older editions)."""
        return Phase.test if self.testing_phase else Phase.train

    @phase.setter
    def phase(self, phase):
        if not isinstance(phase, Phase):
            raise TypeError(f"{type(self).__name__}.phase: expected Phase.train, Phase.test or Phase.validation "
                            f"(older editions; or set testing_phase), got {phase!r}.")
        self.testing_phase = phase is not Phase.train

    def forward(self, input_tensor):
        raise NotImplementedError(f"{type(self).__name__} does not implement forward")

    def backward(self, error_tensor):
        raise NotImplementedError(f"{type(self).__name__} does not implement backward")


def _reshaped(name, value, shape, strict=True) -> jax.Array:
    """``value`` as a float64 array of ``shape`` (any array of the same size is accepted).

    With ``strict=False`` an array of another size is kept as it is (the exercise's layers
    store whatever an initializer returns; a later forward reports the mismatch). The
    reshape happens in NumPy: no jax operation is compiled for a new shape.
    """
    array = np.asarray(value, dtype=np.float64)
    if array.size != int(np.prod(shape)):
        if not strict:
            return to_device(array)
        raise ValueError(f"{name} must have shape {tuple(shape)}, got shape {tuple(array.shape)}.")
    return to_device(array.reshape(shape))


class FunctionalLayer(BaseLayer):
    """A facade layer over the core layer ``core`` with params ``_params`` and state ``_state``.

    Subclasses set ``trainable``, create the params (or pass ``params=None`` to draw them
    with ``initialize(UniformRandom(), UniformRandom())`` on first use), and may override
    `_call` (what function to run and with which extra argument) and `_after_forward`.
    """

    def __init__(self, core, params=None, state=None):
        super().__init__()
        self._core = core
        self._params = params
        self._state = state if state is not None else {}
        self._optimizer = None
        self._gradients = None
        self._vjp = None
        self._saved = None

    # -- params, drawn lazily when the constructor deferred them ----------------------------
    @property
    def _params(self):
        params = self.__dict__["_param_values"]
        if params is None:
            # The exercise's constructors draw U[0, 1) weights; drawing them on first use
            # saves a large layer that is initialized right away (the usual case) one draw.
            self.initialize(UniformRandom(), UniformRandom())
            params = self.__dict__["_param_values"]
        return params

    @_params.setter
    def _params(self, value):
        self.__dict__["_param_values"] = value

    # -- the two calls of the exercise ------------------------------------------------------
    def _call(self, x):
        """(fn, extra): ``fn(params, x, extra) -> (y, new_state)`` is what forward runs."""
        del x
        return _engine.LayerFn(self._core, not self.testing_phase), self._state

    def _after_forward(self, new_state) -> None:
        self._state = new_state

    def _forward_array(self, input_tensor) -> jax.Array:
        x = as_array(input_tensor)
        fn, extra = self._call(x)
        if self.testing_phase:
            # Evaluation: no residuals; a backward (rare) recomputes them from what is saved.
            y, new_state = _engine.forward(fn, self._params, x, extra)
            self._vjp, self._saved = None, (fn, self._params, x, extra)
        else:
            y, new_state, self._vjp = _engine.forward_with_vjp(fn, self._params, x, extra)
            self._saved = None
        self._after_forward(new_state)
        return y

    def _backward_array(self, error_tensor) -> jax.Array:
        vjp = self._vjp
        if vjp is None:
            if self._saved is None:
                raise RuntimeError(f"{type(self).__name__}.backward: call forward first.")
            vjp = _engine.forward_with_vjp(*self._saved)[2]
        error = as_array(error_tensor)
        optimizer = self._optimizer if self.trainable else None
        if optimizer is None:
            self._gradients, dx = _engine.backward(vjp, error)
        elif isinstance(optimizer, Optimizer):
            core, opt_state = optimizer._prepared_state(self._params)
            self._gradients, dx, self._params, optimizer._opt_state = _engine.backward_and_update(
                vjp, error, core, opt_state, self._params)
        else:
            self._gradients, dx = _engine.backward(vjp, error)
            self._params = self._update_with_foreign_optimizer(optimizer, self._gradients)
        return dx

    def forward(self, input_tensor) -> np.ndarray:
        """The layer's output for ``input_tensor`` (a NumPy float64 array)."""
        return np.array(self._forward_array(input_tensor))

    def backward(self, error_tensor) -> np.ndarray:
        """The error for the previous layer; stores the gradients and updates the params
        when an optimizer is set (trainable layers)."""
        return np.array(self._backward_array(error_tensor))

    # -- optimizer and regularization -------------------------------------------------------
    @property
    def optimizer(self):
        """The optimizer stepping this layer's params in backward (None: no update)."""
        return self._optimizer

    @optimizer.setter
    def optimizer(self, optimizer):
        _checks.require_methods(f"{type(self).__name__}.optimizer", optimizer, _checks.OPTIMIZER,
                                _checks.OPTIMIZER_WORDS, allow_none=True)
        self._optimizer = optimizer

    def set_optimizer(self, optimizer) -> None:
        """Older editions' way of setting `optimizer` (same code).

        Raises:
            TypeError: for an object without ``calculate_update``.
        """
        self.optimizer = optimizer

    def _update_with_foreign_optimizer(self, optimizer, grads):
        """An optimizer with only ``calculate_update``: one deep copy of it per tensor."""
        copies = self.__dict__.setdefault("_foreign_copies", {})
        if copies.get("source") is not optimizer:
            copies.clear()
            copies["source"] = optimizer
        leaves, treedef = jax.tree_util.tree_flatten_with_path(self._params)
        grad_leaves = jax.tree.leaves(grads)
        updated = []
        for (path, w), g in zip(leaves, grad_leaves):
            key = jax.tree_util.keystr(path)
            step = copies.setdefault(key, copy.deepcopy(optimizer))
            updated.append(to_device(np.reshape(step.calculate_update(np.array(w), np.array(g)), w.shape)))
        return jax.tree.unflatten(treedef, updated)

    #: What the regularization loss covers (the exercise's ``weights``): None (nothing),
    #: "all" (every param) or the key of one param.
    _regularized = None

    def _regularized_params(self):
        return select_regularized(self._regularized, self._params)

    def _regularization_loss_array(self):
        params = self._regularized_params()
        regularizer = getattr(self._optimizer, "regularizer", None)
        if regularizer is None or params is None:
            return 0.0
        if hasattr(regularizer, "_norm_array"):
            return regularizer._norm_array(params)
        return regularizer.norm(jax.tree.map(np.asarray, params))

    def calculate_regularization_loss(self) -> float:
        """optimizer.regularizer.norm of the layer's weights; 0 without a regularizer."""
        return float(self._regularization_loss_array())

    # -- views of the gradients -------------------------------------------------------------
    def _gradient(self, name) -> np.ndarray:
        if self._gradients is None:
            raise RuntimeError(f"{type(self).__name__}: no gradient yet, call forward and backward first.")
        return np.array(self._gradients[name])

    # -- pickling (the exercise's save/load) ------------------------------------------------
    def __getstate__(self):
        state = self.__dict__.copy()
        state["_vjp"] = state["_saved"] = None  # compiled closures; recomputed by forward
        state.pop("_foreign_copies", None)
        return state
