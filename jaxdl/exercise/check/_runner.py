"""Runs the worker processes of the check, with a time limit per class (parent side).

One worker checks all the classes in turn. When a class does not report within the limit (an
infinite loop) or the worker dies (a crash, ``os._exit``), that class is reported so, the
worker is killed and a fresh one checks the classes that remain. The workers run in a
temporary working directory with ``PYTHONDONTWRITEBYTECODE=1``: the student's files are
imported, never written.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import jaxdl

#: Time for a worker to start (Python, JAX and jaxdl's imports) before its first class.
STARTUP_SECONDS = 120.0


def _environment() -> dict:
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", PYTHONUNBUFFERED="1")
    source = str(Path(jaxdl.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (source, env.get("PYTHONPATH")) if p)
    return env


def _lines(stream, lines: queue.Queue) -> None:
    for line in stream:
        lines.put(line)
    lines.put(None)


def _tail(path: Path, characters: int = 600) -> str:
    text = path.read_text(errors="replace").strip()
    return text[-characters:]


def _worker(directory, names, workdir, stderr):
    command = [sys.executable, "-m", "jaxdl.exercise.check._worker", str(directory), ",".join(names)]
    process = subprocess.Popen(command, cwd=workdir, env=_environment(), stdout=subprocess.PIPE, stderr=stderr,
                               stdin=subprocess.DEVNULL, text=True)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=_lines, args=(process.stdout, lines), daemon=True).start()
    return process, lines


def _stopped(process) -> int:
    if process.poll() is None:
        process.kill()
    return process.wait()


def run(directory, names, timeout: float) -> dict[str, dict]:
    """The report of every class in ``names`` (see `jaxdl.exercise.check.check`)."""
    pending, reports = list(names), {}
    with tempfile.TemporaryDirectory(prefix="jaxdl-check-") as workdir:
        log = Path(workdir) / "worker-stderr.txt"
        while pending:
            with open(log, "w") as stderr:
                process, lines = _worker(directory, pending, workdir, stderr)
                current, deadline = None, time.monotonic() + STARTUP_SECONDS
                while True:
                    try:
                        line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
                    except queue.Empty:
                        _stopped(process)
                        if current is None:
                            message = f"the checker's worker did not start within {STARTUP_SECONDS:g} s"
                            reports.update({n: {"name": n, "status": "error", "message": message} for n in pending})
                            pending = []
                        else:
                            reports[current] = {"name": current, "status": "timeout", "message": (
                                f"no result within {timeout:g} s: an infinite loop or a very slow method "
                                "(the other classes are still checked)")}
                            pending.remove(current)
                        break
                    if line is None:
                        code = _stopped(process)
                        stderr.flush()
                        message = f"the process ended (exit code {code}) while checking it: {_tail(log)}"
                        lost = [current] if current is not None else list(pending)
                        reports.update({n: {"name": n, "status": "crash", "message": message} for n in lost})
                        pending = [n for n in pending if n not in lost]
                        break
                    try:
                        event = json.loads(line)
                    except json.JSONDecodeError:
                        continue
                    if event["event"] == "start":
                        current, deadline = event["class"], time.monotonic() + timeout
                    else:
                        reports[event["class"]] = event["report"]
                        pending.remove(event["class"])
                        current = None
                        if not pending:
                            _stopped(process)
                            break
    return reports
