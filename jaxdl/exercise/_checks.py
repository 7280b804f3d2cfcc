"""Argument checks of the facade's public methods: a clear TypeError for a wrong kind of object.

The exercise is duck-typed (a layer is anything with ``forward`` and ``backward``, an
initializer anything with ``initialize``), so the checks ask for the methods, not for
jaxdl's classes, and user-written layers, losses and optimizers keep working. What they
catch is the wrong kind of object passed (``append_layer("relu")``, a class instead of an
instance, an optimizer where an initializer belongs) at the call, naming the method, what it
expects and what came, instead of an AttributeError deep inside a later ``train``.
"""

from __future__ import annotations


def _shown(value) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 60 else text[:57] + '...'}"


def require_methods(caller: str, value, methods: tuple[str, ...], expected: str, *, allow_none: bool = False) -> None:
    """Raises TypeError unless ``value`` is an object with the callable ``methods``.

    Args:
        caller: the method to name, e.g. ``"NeuralNetwork.append_layer"``.
        value: what came.
        methods: the methods it must have, e.g. ``("forward", "backward")``.
        expected: what it expects in words, e.g. ``"a layer object such as ReLU() or FullyConnected(4, 3)"``.
        allow_none: whether None is accepted.

    Raises:
        TypeError: naming ``caller``, ``expected`` and what came (a class gets "create one: Name()").
    """
    if value is None and allow_none:
        return
    needs = " and ".join(f"{name}()" for name in methods)
    if isinstance(value, type):
        raise TypeError(f"{caller}: expected {expected} (an object with {needs}), got the class {value.__name__} "
                        f"itself; create one, e.g. {value.__name__}(...).")
    missing = [name for name in methods if not callable(getattr(value, name, None))]
    if missing:
        none = " or None" if allow_none else ""
        raise TypeError(f"{caller}: expected {expected} (an object with {needs}){none}, got {_shown(value)}, "
                        f"which has no {' or '.join(f'{name}()' for name in missing)}.")


LAYER = ("forward", "backward")
LAYER_WORDS = "a layer object such as ReLU() or FullyConnected(4, 3)"
INITIALIZER = ("initialize",)
INITIALIZER_WORDS = "an initializer such as Xavier(), He(), UniformRandom() or Constant(0.1)"
OPTIMIZER = ("calculate_update",)
OPTIMIZER_WORDS = "an optimizer such as Sgd(1e-3), SgdWithMomentum(1e-3, 0.9) or Adam(1e-3, 0.9, 0.999)"
LOSS = ("forward", "backward")
LOSS_WORDS = "a loss layer such as CrossEntropyLoss()"
DATA = ("next",)
DATA_WORDS = "a data layer whose next() returns (input, label)"
#: Older editions' ``Helpers.py`` data layers name their batch method ``forward()``.
DATA_OLDER = ("forward",)


def check_data_layer(caller: str, data_layer) -> None:
    """Raises TypeError unless ``data_layer`` is None or has ``next()`` (or an older edition's ``forward()``).

    Raises:
        TypeError: naming ``caller``, what it expects and what came.
    """
    older = not isinstance(data_layer, type) and callable(getattr(data_layer, DATA_OLDER[0], None))
    if data_layer is None or older:
        return
    require_methods(caller, data_layer, DATA, DATA_WORDS + " (older editions: forward())", allow_none=True)


def next_batch(data_layer):
    """``data_layer.next()``, or ``data_layer.forward()`` for an older edition's data layer without ``next``."""
    method = getattr(data_layer, "next", None)
    if not callable(method):
        method = data_layer.forward
    return method()


def check_initializers(caller: str, weights_initializer, bias_initializer, *, allow_none: bool = False) -> None:
    """Raises TypeError unless both are initializers (or None, with ``allow_none``)."""
    require_methods(f"{caller} (weights_initializer)", weights_initializer, INITIALIZER, INITIALIZER_WORDS,
                    allow_none=allow_none)
    require_methods(f"{caller} (bias_initializer)", bias_initializer, INITIALIZER, INITIALIZER_WORDS,
                    allow_none=allow_none)
