"""``python -m jaxdl.exercise check DIR``: which method of which class of a NumPy solution is wrong.

DIR is a student's ``src_to_implement`` folder in the course layout (``Layers/*.py``,
``Optimization/*.py``). For every class found there (`jaxdl.exercise.check._classes.CLASSES`)
the check runs the student's ``forward``, ``backward``, weight gradients, optimizer updates,
regularizers, loss and initializers on seeded random inputs of several shapes (batch sizes 1
and odd; training and testing phase; memorize on and off) and compares each result with
jaxdl's reference: the `jaxdl.exercise` class loaded with the student's own parameters, whose
forward is the functional core's ``apply`` and whose gradients come from `jax.vjp` /
`jax.grad`, in float64. Per class and method it reports OK, or the first mismatch: the case
(input shape), the largest absolute error and where it is, the largest relative error and,
when the result matches a known bug, a one-line hint.

The student's code runs in a worker process (`jaxdl.exercise.check._runner`) with a time
limit per class: an import error, an infinite loop or a crash in one class is reported and the
other classes are still checked. The student's files are never written to (no bytecode, a
temporary working directory).

Example:
    $ python -m jaxdl.exercise check src_to_implement --only Conv,LSTM
"""

from __future__ import annotations

import time
from pathlib import Path

from jaxdl.exercise.check import _classes, _report, _runner

__all__ = ["check", "main", "CLASSES"]

CLASSES = tuple(name for name, _, _ in _classes.CLASSES)

#: Seconds a class may take (its references compile within it) before it counts as hanging.
DEFAULT_TIMEOUT = 60.0


def check(directory, only=None, timeout: float = DEFAULT_TIMEOUT) -> dict:
    """Checks the classes of a student's solution in ``directory``.

    Args:
        directory: the student's ``src_to_implement`` folder.
        only: class names (or file stems such as "Optimizers") to restrict the check to.
        timeout: seconds per class before it is reported as hanging.

    Returns:
        ``{"directory", "ok", "seconds", "classes": [...], "not_found": [...]}``: each class has
        ``name``, ``status`` ("ok", "fail", "error", "timeout" or "crash"), ``message`` for the
        last three and ``methods``: ``name``, ``status`` and, when failing, ``case``,
        ``message``, ``hint`` and the numbers (``max_abs_error``, ``max_rel_error``,
        ``index``, ``student``, ``reference``, ``shape``, ``expected_shape``).
        ``ok`` is True when every class found is OK.

    Raises:
        FileNotFoundError: when ``directory`` is not a directory.
        ValueError: when ``only`` names an unknown class.
    """
    root = Path(directory)
    if not root.is_dir():
        raise FileNotFoundError(f"jaxdl.exercise check: {directory} is not a directory (expected the course's "
                                "src_to_implement folder with Layers/ and Optimization/)")
    start = time.perf_counter()
    found, missing = _classes.present(root, _classes.select(only))
    reports = _runner.run(root.resolve(), found, timeout) if found else {}
    classes = [reports[name] for name in found]
    return {"directory": str(root), "ok": bool(classes) and all(c["status"] == "ok" for c in classes),
            "seconds": round(time.perf_counter() - start, 2), "classes": classes, "not_found": missing}


def main(directory, only=None, as_json=False, timeout=DEFAULT_TIMEOUT, echo=print) -> int:
    """Runs `check` and prints its report; 0 when everything found is OK, 1 otherwise, 2 for bad arguments."""
    try:
        report = check(directory, only, timeout)
    except (FileNotFoundError, ValueError) as error:
        echo(str(error))
        return 2
    echo(_report.as_json(report) if as_json else _report.text(report))
    return 0 if report["ok"] else 1
