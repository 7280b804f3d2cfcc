"""Fault injection: tests stop a save (raise, or SIGKILL the process) at a named point between two writes.

Set ``jaxdl.checkpoint.faults.hook`` to a function of the point's name; None (the default)
does nothing. The points of one save, in order (`jaxdl.checkpoint.digest.DigestedRename`,
`jaxdl.checkpoint.run.RunCheckpoints.save`): ``"items written"`` (orbax wrote every item into
its temporary directory), ``"digest written"``, ``"committed"`` (orbax renamed the temporary
directory to the step's), ``"old steps removed"`` (orbax's preservation policy ran); and
`jaxdl.fit`'s ``"metrics written"`` after an epoch's ``metrics.csv`` and ``metrics.png``.
"""

from __future__ import annotations

from typing import Callable

hook: Callable[[str], None] | None = None


def fault_point(name: str) -> None:
    """Calls `hook` with ``name`` when a test has set one."""
    if hook is not None:
        hook(name)
