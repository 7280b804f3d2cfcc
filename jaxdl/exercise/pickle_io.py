"""The exercise's pickle API: `save` / `load` (``NeuralNetwork.save``/``load``), one object in one file.

`load` unpickles with an allow-list (`SafeUnpickler`): a pickle can only name (and so only
construct or call) what the exercise's networks are made of:

* plain Python data: ``int``, ``float``, ``complex``, ``bool``, ``str``, ``bytes``,
  ``bytearray``, ``list``, ``tuple``, ``dict``, ``set``, ``frozenset``, ``slice``, ``range``,
  ``object`` (no ``eval``, ``exec``, ``getattr``, ``__import__``, ``open``, ...), and
  ``collections.OrderedDict``, ``copyreg._reconstructor``, ``_codecs.encode`` (older protocols);
* NumPy arrays, dtypes and scalars (the array reconstruction functions of ``numpy.core`` and
  ``numpy._core``) and JAX arrays (``jax._src.array._reconstruct_array``, which rebuilds one
  from a NumPy array);
* classes defined in the exercise facade (``jaxdl.exercise.*``, not its command-line modules)
  and in the core modules they hold (``jaxdl.core``, ``jaxdl.layers.*``,
  ``jaxdl.initializers``, ``jaxdl.regularizers``, ``jaxdl.optimizers``), and optax's optimizer
  states (NamedTuple classes of ``optax``);
* the classes the caller adds (``allowed_classes=``, e.g. a layer written for the exercise).

Anything else (``os.system``, ``subprocess.Popen``, ``builtins.eval``, a function of jaxdl
such as one that writes files, a module whose import has side effects) is refused with
`UnsafePickleError` when the pickle names it, before the module is imported: since every
call a pickle makes goes through a name it loaded, nothing the file asks for has run when the
error is raised. A damaged or truncated file is an `UnsafePickleError` too, naming the file.

`save` writes any picklable object atomically; the exercise's objects drop what must not be
pickled (the data layer) in ``__getstate__``. For checkpoints you share, prefer the safe
format (`jaxdl.checkpoint.save_checkpoint`: no pickle at all).
"""

from __future__ import annotations

import builtins
import importlib
import io
import os
import pathlib
import pickle
from typing import Iterable

from jaxdl.checkpoint.errors import CheckpointError
from jaxdl.checkpoint.files import write_bytes_atomic

#: The builtins a pickle may name: data types only (no eval, exec, getattr, __import__, open, ...).
SAFE_BUILTINS = frozenset({
    "int", "float", "complex", "bool", "str", "bytes", "bytearray", "list", "tuple", "dict", "set",
    "frozenset", "slice", "range", "object",
})

#: (module, name) pairs a pickle may name besides `SAFE_BUILTINS` and the allowed classes.
SAFE_GLOBALS = frozenset({
    ("collections", "OrderedDict"),
    ("copyreg", "_reconstructor"), ("copy_reg", "_reconstructor"),  # protocols 0-1 (copy_reg: Python 2 name)
    ("_codecs", "encode"),  # bytes in protocols 0-2
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("jax._src.array", "_reconstruct_array"),
})

#: Modules (and their submodules) whose own classes a pickle may name; `_REFUSED_MODULES` excepted.
CLASS_MODULES = ("jaxdl.exercise", "jaxdl.core", "jaxdl.layers", "jaxdl.initializers", "jaxdl.regularizers",
                 "jaxdl.optimizers", "jaxdl.kernels")
_REFUSED_MODULES = ("jaxdl.exercise.scaffold", "jaxdl.exercise.__main__", "jaxdl.exercise.pickle_io")


class UnsafePickleError(CheckpointError, pickle.UnpicklingError):
    """A pickle names something outside `load`'s allow-list (nothing of it ran), or is damaged."""


def _in_package(module: str, packages: Iterable[str]) -> bool:
    return any(module == package or module.startswith(package + ".") for package in packages)


def _builtins_module(module: str) -> bool:
    return module in ("builtins", "__builtin__")


class SafeUnpickler(pickle.Unpickler):
    """A `pickle.Unpickler` whose ``find_class`` resolves only the allow-list of the module docstring.

    Args:
        file: the binary file to read.
        source: how the file is named in errors.
        allowed_classes: further classes the pickle may name (e.g. your own layers).
    """

    def __init__(self, file, *, source: str, allowed_classes: Iterable[type] = ()):
        super().__init__(file)
        self.source = source
        self.extra = {(cls.__module__, cls.__qualname__): cls for cls in _checked_classes(allowed_classes)}

    def find_class(self, module: str, name: str):
        """The object ``module.name`` if the allow-list has it; else `UnsafePickleError` (nothing imported)."""
        if (module, name) in self.extra:
            return self.extra[(module, name)]
        if _builtins_module(module) and name in SAFE_BUILTINS:
            return getattr(builtins, name)
        if (module, name) in SAFE_GLOBALS or module == "numpy.dtypes":
            return super().find_class(module, name)
        if _in_package(module, CLASS_MODULES) and not _in_package(module, _REFUSED_MODULES):
            return self._own_class(module, name, lambda cls: True)
        if _in_package(module, ("optax",)):
            return self._own_class(module, name, lambda cls: issubclass(cls, tuple) and hasattr(cls, "_fields"))
        raise self._refused(module, name)

    def _own_class(self, module: str, name: str, accepts):
        """A class defined in ``module`` itself (not a function, not an imported name) that ``accepts``."""
        if "." in name:  # a nested qualname could walk to anything the class references
            raise self._refused(module, name)
        value = getattr(importlib.import_module(module), name, None)
        if isinstance(value, type) and value.__module__ == module and accepts(value):
            return value
        raise self._refused(module, name)

    def _refused(self, module: str, name: str) -> UnsafePickleError:
        return UnsafePickleError(
            f"load: {self.source} asks to load {module}.{name}, which is not on the allow-list of what the "
            f"exercise's pickles hold (NumPy/JAX arrays, plain Python data, jaxdl.exercise classes and what "
            f"they reference); nothing of the file was run. Load only files you wrote yourself; if you did and "
            f"it holds a class of your own, pass it: load(..., allowed_classes=[YourClass]).")


def _checked_classes(allowed_classes: Iterable[type]) -> list[type]:
    classes = list(allowed_classes)
    for cls in classes:
        if not isinstance(cls, type):
            raise TypeError(f"load: allowed_classes must hold classes, got {type(cls).__name__} {cls!r}.")
    return classes


def save(filename: str | os.PathLike, obj) -> None:
    """Pickles ``obj`` into ``filename`` atomically (the exercise's ``NeuralNetwork.save``).

    Objects that must not be pickled (the exercise's data layer) should be dropped by the
    object's ``__getstate__``. Prefer `save_checkpoint` for anything you share.

    Raises:
        StorageError: (an OSError) when the file cannot be written, naming its directory and the cause.
    """
    write_bytes_atomic(pathlib.Path(filename), pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))


def load(filename: str | os.PathLike, *, allowed_classes: Iterable[type] = ()):
    """Unpickles the object in ``filename`` with the allow-list of the module docstring.

    Args:
        filename: a file written by `save` (or by ``pickle.dump`` of allowed objects).
        allowed_classes: further classes the file may hold (your own layers, loss or data
            classes); only list classes you trust.

    Raises:
        UnsafePickleError: (a CheckpointError) when the file names anything outside the
            allow-list (refused before it runs), or is damaged or truncated.
        FileNotFoundError: when ``filename`` does not exist.
        TypeError: when ``allowed_classes`` holds something that is not a class.
    """
    source = os.fspath(filename)
    with open(filename, "rb") as file:
        data = file.read()
    unpickler = SafeUnpickler(io.BytesIO(data), source=source, allowed_classes=allowed_classes)
    try:
        return unpickler.load()
    except UnsafePickleError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, IndexError, KeyError, AttributeError) as error:
        raise UnsafePickleError(f"load: {source} cannot be read back ({type(error).__name__}: {error}); it is "
                                f"damaged, truncated, or was written by another version.") from error
