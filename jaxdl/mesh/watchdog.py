"""A stalled mesh step becomes a clear error naming the step, within a bounded time.

A collective (the all-reduce of a data-parallel step, or a cross-process one) that never
completes blocks the host in C++: no Python exception can reach it, and without this the
process hangs (gloo across processes) or XLA aborts (in-process, after 40 s, with a C++ stack).
The mesh steps of `jaxdl.training.parallel` register each call's outputs here. A daemon thread
polls the oldest unfinished call with ``jax.Array.is_ready()`` (which never blocks) and, when
one has been the oldest for `stall_timeout` seconds without finishing, prints which step
stalled, on which devices, and what to check, then ends the process with `EXIT_STALLED`
(`os._exit`: the blocked main thread cannot be interrupted; in a multi-process run the others
then stop through `jax.distributed`'s heartbeat).

Conventions:

* A call is watched from before its dispatch (a collective may block the dispatch itself) until
  its outputs are ready. Its clock starts when it becomes the oldest unfinished call, so calls
  queued behind a slow one are not charged for it. A step's first call for new input shapes
  also compiles it and gets `FIRST_CALL_FACTOR` times the timeout.
* ``JAXDL_STALL_TIMEOUT`` (seconds, default `DEFAULT_STALL_TIMEOUT`) sets the timeout; 0 turns
  the watchdog off. One step of a real model must finish well within it.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import dataclasses
import os
import sys
import threading
import time
from typing import Any, Callable, Iterator

import jax

#: Seconds a mesh step may take before it counts as stalled (``JAXDL_STALL_TIMEOUT``).
DEFAULT_STALL_TIMEOUT = 120.0
#: The exit status of a process whose mesh step stalled.
EXIT_STALLED = 75
#: A step's first call compiles it: it may take this many times the timeout.
FIRST_CALL_FACTOR = 5
#: Seconds between two looks at the oldest unfinished call.
POLL_SECONDS = 0.25


def stall_timeout() -> float:
    """``JAXDL_STALL_TIMEOUT`` in seconds (default `DEFAULT_STALL_TIMEOUT`; 0: no watchdog).

    Raises:
        ValueError: for a value that is not a number >= 0.
    """
    text = os.environ.get("JAXDL_STALL_TIMEOUT", "").strip()
    if not text:
        return DEFAULT_STALL_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value >= 0 or value == float("inf"):
        raise ValueError(f"jaxdl: JAXDL_STALL_TIMEOUT must be a number of seconds >= 0 (0 turns the stall watchdog "
                         f"off), got {text!r}.")
    return value


@dataclasses.dataclass
class _Call:
    what: str
    number: int
    devices: str
    outputs: list | None  # None while the call is being dispatched
    oldest_since: float | None = None
    compiles: bool = False  # the first call for its inputs' shapes: it compiles the step


def _finished(call: _Call) -> bool:
    if call.outputs is None:
        return False
    for leaf in call.outputs:
        try:
            if not leaf.is_ready():
                return False
        except RuntimeError:  # deleted (donated) since: it was computed
            continue
    return True


class StallWatchdog:
    """Watches registered mesh-step calls; see the module docstring.

    Args:
        timeout: seconds a call may stay the oldest unfinished one.
        report: called with the message of a stall (default: print it and exit the process).
    """

    def __init__(self, timeout: float, report=None):
        self.timeout = timeout
        self._report = report or _report_and_exit
        self._calls: collections.deque[_Call] = collections.deque()
        self._lock = threading.Lock()
        self._counts: collections.Counter = collections.Counter()
        self._thread: threading.Thread | None = None
        self._stopped = threading.Event()

    def start(self, what: str, mesh, *, compiles: bool = False) -> _Call:
        """Registers a call of the step ``what`` on ``mesh`` that is about to be dispatched.

        The call counts as unfinished until `finish` gives it outputs that are ready: a
        dispatch that blocks (a synchronous collective) is watched too.
        """
        with self._lock:
            self._counts[what] += 1
            devices = f"{mesh.devices.size} {mesh.devices.flat[0].platform} devices"
            call = _Call(what, self._counts[what], devices, None, compiles=compiles)
            self._calls.append(call)
            if self._thread is None:
                self._thread = threading.Thread(target=self._watch, name="jaxdl-stall-watchdog", daemon=True)
                self._thread.start()
                # Stopped before the interpreter finalizes (and before jax.distributed's own exit
                # handler, registered earlier, shuts the client down): a daemon thread caught in
                # is_ready() there is unwound through C++ frames, which aborts the process
                # ("terminate called ... FATAL: exception not rethrown", seen after a completed
                # two-process run, 2026-12-07).
                atexit.register(self.stop)
        return call

    def finish(self, call: _Call, outputs) -> None:
        """Gives a dispatched ``call`` its outputs (a pytree); it is done when they are ready."""
        leaves = [leaf for leaf in jax.tree.leaves(outputs)
                  if isinstance(leaf, jax.Array) and not isinstance(leaf, jax.core.Tracer)]
        with self._lock:
            call.outputs = leaves[:1]

    def pending(self) -> int:
        """How many registered calls have not been seen finished yet."""
        with self._lock:
            return len(self._calls)

    def check(self, now: float | None = None) -> None:
        """One look: drops finished calls; reports the oldest if it stalled."""
        now = time.monotonic() if now is None else now
        with self._lock:
            while self._calls and _finished(self._calls[0]):
                self._calls.popleft()
            if not self._calls:
                return
            oldest = self._calls[0]
            if oldest.oldest_since is None:
                oldest.oldest_since = now
            if now - oldest.oldest_since < self.timeout * (FIRST_CALL_FACTOR if oldest.compiles else 1):
                return
            self._calls.clear()
        self._report(_message(oldest, self.timeout))

    def stop(self, timeout: float = 5.0) -> None:
        """Ends the polling thread and waits up to ``timeout`` seconds for it (run at exit)."""
        self._stopped.set()
        thread = self._thread
        if isinstance(thread, threading.Thread) and thread is not threading.current_thread():
            thread.join(timeout)

    def _watch(self) -> None:
        while not self._stopped.wait(POLL_SECONDS):
            self.check()


def _message(call: _Call, timeout: float) -> str:
    process = f"process {jax.process_index()} of {jax.process_count()}: " if jax.process_count() > 1 else ""
    return (f"jaxdl: error: {process}call {call.number} of the mesh {call.what} (on {call.devices}) did not finish "
            f"within {timeout:g} s: a collective operation across the devices stalled (a device or process that "
            f"never reached it). Stopping instead of hanging. On CPU devices, let jaxdl.distributed create them "
            f"(it sizes XLA's thread pools: PJRT_NPROC); across processes, check that every process runs the same "
            f"program on the same batch sizes. If one step legitimately takes longer, raise JAXDL_STALL_TIMEOUT "
            f"(seconds; 0 turns this check off).")


def _report_and_exit(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(EXIT_STALLED)


_watchdog: StallWatchdog | None = None
_watchdog_lock = threading.Lock()


@contextlib.contextmanager
def watching(what: str, mesh, *, inputs=None, compiles: bool = False) -> Iterator[Callable[[Any], Any]]:
    """Watches one call of the mesh step ``what``: yields ``done(outputs)``, to be called with
    the call's outputs once it returns (it returns them).

    The outputs must not be donated to a later call (a donated array reads as deleted, which
    the watchdog takes for finished): pass a train step's metrics, not its train state.
    Nothing is watched when ``JAXDL_STALL_TIMEOUT`` is 0, for a mesh of one device, or when
    ``inputs`` (the call's arguments) hold tracers: a call inside `jax.eval_shape` or a
    transformation computes nothing. ``compiles``: the call is the step's first for its
    inputs' shapes (it compiles first: `FIRST_CALL_FACTOR`). An exception in the block ends the
    watch.
    """
    traced = any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(inputs))
    dog = _process_watchdog() if mesh.devices.size > 1 and not traced else None
    if dog is None or dog.timeout <= 0:
        yield lambda outputs: outputs
        return
    call = dog.start(what, mesh, compiles=compiles)

    def done(outputs):
        dog.finish(call, outputs)
        return outputs

    try:
        yield done
    except BaseException:
        dog.finish(call, [])  # nothing to wait for
        raise


def first_for_shapes(seen: set, tree) -> bool:
    """Whether ``tree``'s leaf shapes and dtypes are new to ``seen`` (which then holds them):
    a jitted step's first call for them compiles it."""
    signature = tuple((tuple(getattr(leaf, "shape", ())), str(getattr(leaf, "dtype", "")))
                      for leaf in jax.tree.leaves(tree))
    new = signature not in seen
    seen.add(signature)
    return new


def _process_watchdog() -> StallWatchdog:
    global _watchdog
    if _watchdog is None:
        with _watchdog_lock:
            if _watchdog is None:
                _watchdog = StallWatchdog(stall_timeout())
    return _watchdog
