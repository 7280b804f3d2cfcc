"""The worker process of the check: imports the student's classes and checks them one by one.

Run by `jaxdl.exercise.check._runner` as ``python -m jaxdl.exercise.check._worker DIR NAMES``
(NAMES comma-separated), in a temporary working directory, with bytecode writing off so the
student's directory is never written to. Each class is announced (``{"event": "start"}``) and
reported (``{"event": "result"}``) as one JSON line on the process's original standard
output; whatever the student's code prints goes to standard error instead. The parent
enforces the time limit per class and restarts the worker after a hang or a crash. JAX's
persistent compilation cache is on (`jaxdl.compilation_cache`), so a second check of the same
shapes loads the compiled references instead of compiling them again.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import time


def _channel():
    """The protocol stream; file descriptor 1 is redirected to standard error for everything else."""
    channel = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    return channel


def _check_class(name, directory):
    from jaxdl.exercise.check import _classes
    from jaxdl.exercise.check._result import ClassResult, describe

    result = ClassResult(name)
    try:
        module = importlib.import_module(_classes.module_name(name))
    except (Exception, SystemExit) as error:
        return {"name": name, "status": "error", "message": f"{_classes.FILES[name]} does not import: "
                                                            f"{describe(error)}"}
    cls = getattr(module, name, None)
    if cls is None:
        return {"name": name, "status": "error", "message": f"{_classes.FILES[name]} has no class {name}"}
    try:
        _classes.check_function(name)(cls, result)
    except (Exception, SystemExit) as error:  # a student's object broke the check somewhere unexpected
        return {"name": name, "status": "error", "message": f"could not be checked: {describe(error)}",
                "methods": result.as_dict()["methods"]}
    return result.as_dict()


def main(argv=None) -> int:
    directory, names = (argv or sys.argv[1:])[:2]
    channel = _channel()
    sys.dont_write_bytecode = True
    directory = os.path.realpath(directory)
    sys.path.insert(0, directory)
    from jaxdl.compilation_cache import enable_compilation_cache
    enable_compilation_cache()  # as jaxdl's command lines do: a rerun loads the references' programs
    import jaxdl.exercise  # noqa: F401  (x64 on, before any reference runs)
    from jaxdl.exercise.check._result import STUDENT_DIR
    STUDENT_DIR["path"] = directory
    for name in names.split(","):
        channel.write(json.dumps({"event": "start", "class": name}) + "\n")
        start = time.perf_counter()
        report = _check_class(name, directory)
        report["seconds"] = round(time.perf_counter() - start, 3)
        channel.write(json.dumps({"event": "result", "class": name, "report": report}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
