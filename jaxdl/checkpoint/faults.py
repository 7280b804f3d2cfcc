"""Fault injection: tests stop a save (raise, or SIGKILL the process) at a named point between two writes.

Set ``jaxdl.checkpoint.faults.hook`` to a function of the point's name (``"arrays written"``,
``"files hashed"``, ``"manifest written"``, ``"link created"``, ``"directory moved aside"``,
``"epoch renamed"``, ``"head written"``, ``"committed"``, and `jaxdl.fit`'s ``"metrics written"``
after an epoch's ``metrics.csv`` and ``metrics.png``); None (the default) does nothing.
"""

from __future__ import annotations

from typing import Callable

hook: Callable[[str], None] | None = None


def fault_point(name: str) -> None:
    """Calls `hook` with ``name`` when a test has set one."""
    if hook is not None:
        hook(name)
