"""What the check of one class found, method by method (runs in the worker process).

A check function runs the student's methods through `ClassResult.call` (an exception in the
student's code becomes that method's finding, with the file and line, and ends the current
case) and compares their results with `ClassResult.compare`. Each method keeps its first
finding; a method that ran and matched everywhere is OK.
"""

from __future__ import annotations

import contextlib
import os
import traceback

from jaxdl.exercise.check._compare import compare

#: The student's directory: frames inside it locate an exception in the student's code.
STUDENT_DIR = {"path": None}


class _Skip(Exception):
    """Ends the current case after a student's method raised."""


def describe(error: BaseException) -> str:
    """``Type: message (file:line)`` with the last frame of the student's code, if any."""
    text = f"{type(error).__name__}: {error}"
    root = STUDENT_DIR["path"]
    frames = [f for f in traceback.extract_tb(error.__traceback__)
              if root is not None and os.path.abspath(f.filename).startswith(root + os.sep)]
    if frames:
        text += f" ({os.path.relpath(frames[-1].filename, root)}:{frames[-1].lineno})"
    return text


class ClassResult:
    """The findings of one class: method -> None (OK) or its first finding (a dict).

    Failing methods are kept in the order they failed: the first one is where to look first.
    """

    def __init__(self, name: str):
        self.name = name
        self.methods: dict[str, dict | None] = {}
        self._case = ""

    @contextlib.contextmanager
    def case(self, description: str):
        """Runs one case (e.g. ``"input (7, 4)"``); a student's exception ends it, not the check."""
        self._case = description
        try:
            yield
        except _Skip:
            pass

    def record(self, method: str, finding: dict | None) -> None:
        """Keeps the first finding of ``method``; None marks it as run and OK so far."""
        if self.methods.get(method) is not None:
            return
        if finding is None:
            self.methods.setdefault(method, None)
            return
        self.methods.pop(method, None)  # failing methods are kept in the order they failed
        self.methods[method] = {**finding, "case": self._case}

    def call(self, method: str, function, *args):
        """``function(*args)``; an exception is recorded as ``method``'s finding and ends the case."""
        try:
            return function(*args)
        except (Exception, SystemExit) as error:  # the student's code may raise anything
            self.record(method, {"message": describe(error), "error": True})
            raise _Skip from error

    def compare(self, method: str, student, reference, **hints) -> bool:
        """Compares and records; True when they agree (`jaxdl.exercise.check._compare.compare`)."""
        finding = compare(student, reference, **hints)
        self.record(method, finding)
        return finding is None

    def fail(self, method: str, message: str, hint: str | None = None) -> None:
        """Records a finding that is not an array comparison (a statistic, a missing member)."""
        self.record(method, {"message": message, **({"hint": hint} if hint else {})})

    def as_dict(self) -> dict:
        """``{"name", "status", "methods"}``: the failing methods first, in the order they failed."""
        failing = [{"name": m, "status": "fail", **f} for m, f in self.methods.items() if f is not None]
        passing = [{"name": m, "status": "ok"} for m, f in self.methods.items() if f is None]
        return {"name": self.name, "status": "fail" if failing else "ok", "methods": failing + passing}
