"""Several CPU devices in one process: sizing XLA:CPU's thread pools so that collectives cannot deadlock.

``jax_num_cpu_devices = N`` makes the host offer N devices. A mesh program runs one part per
device, and its all-reduces meet in XLA:CPU's in-process rendezvous: a part that reaches an
all-reduce holds its thread until every other part arrives. XLA:CPU runs those parts on its
thread pools, sized by the environment variable ``PJRT_NPROC`` (else ``NPROC``, else the cores
this process may use) when the CPU client starts. With fewer than two threads per device, the
parts that wait hold every thread while the others find none, so the all-reduce never completes
and XLA aborts after 40 s ("only 3 of 4 arrived", a C++ abort, no checkpoint). On a 2-core
machine that is every mesh of 2 or more CPU devices, once several steps are in flight.

Measured with jaxlib 0.10.2 on AMD EPYC (family 25 model 17) and Intel Xeon (family 6 model
207), 2 cores, 2026-12-07, with a 20-line data-parallel program (1,000 steps in flight): pools of
``2 N`` threads never stalled for N = 2, 3, 4; ``2 N - 1`` stalled every time
(benchmarks/RESULTS.md, "CPU meshes"). Hence `CPU_THREADS_PER_DEVICE`.

Conventions:

* `prepare_cpu_devices` runs before JAX starts its backend (`jaxdl.distributed.start` and
  `jaxdl.distributed.set_cpu_device_count` call it): it sets ``PJRT_NPROC`` to
  ``max(cores, 2 N)`` unless the user set ``PJRT_NPROC`` or ``NPROC``, and raises XLA's
  collective abort timeout above `jaxdl.mesh.watchdog`'s stall timeout, so that a stalled
  collective ends with jaxdl's message naming the step instead of XLA's abort.
* `check_cpu_mesh` runs when a mesh step is built: a mesh of several CPU devices of this
  process on pools too small for them is a ValueError that says what to set, before anything
  can hang.
* Extra threads cost nothing measurable: the devices' parts share the cores either way.
"""

from __future__ import annotations

import os
from typing import Mapping

import jax
from jax.sharding import Mesh

from jaxdl.mesh import watchdog

#: Threads XLA:CPU's pools need per CPU device of one process (module docstring).
CPU_THREADS_PER_DEVICE = 2
#: The environment variables XLA:CPU reads for its pool size, in its order of precedence.
POOL_SIZE_VARIABLES = ("PJRT_NPROC", "NPROC")


def cores_available() -> int:
    """The cores this process may run on (XLA's default pool size)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def cpu_thread_pool_size(environ: Mapping[str, str] | None = None) -> int:
    """The size of XLA:CPU's thread pools: ``PJRT_NPROC``, else ``NPROC``, else `cores_available`.

    This is the size a CPU client gets when it starts with ``environ`` (default `os.environ`);
    a client that already started keeps the size it started with.
    """
    environ = os.environ if environ is None else environ
    for name in POOL_SIZE_VARIABLES:
        value = environ.get(name, "").strip()
        if value.lstrip("-").isdigit():
            return max(0, int(value))
    return cores_available()


def cpu_threads_needed(devices: int) -> int:
    """The pool size that N CPU devices of one process need (at least the cores, for speed)."""
    return max(cores_available(), CPU_THREADS_PER_DEVICE * devices) if devices > 1 else cores_available()


def _pool_words(environ: Mapping[str, str]) -> str:
    for name in POOL_SIZE_VARIABLES:
        if environ.get(name, "").strip():
            return f"{name}={environ[name].strip()} gives XLA:CPU's thread pools {cpu_thread_pool_size(environ)} threads"
    return f"XLA:CPU's thread pools have {cores_available()} threads (one per core)"


def _collective_timeout_flags(stall_timeout: float) -> list[str]:
    """XLA flags that make XLA wait longer than jaxdl's watchdog before it aborts a stalled collective."""
    terminate = int(stall_timeout) + 60
    return [f"--xla_cpu_collective_call_terminate_timeout_seconds={terminate}",
            f"--xla_cpu_collective_timeout_seconds={terminate}"]


def prepare_cpu_devices(devices: int, *, stall_timeout: float | None = None) -> None:
    """Sizes XLA:CPU's thread pools for ``devices`` CPU devices; call before JAX starts its backend.

    Sets ``PJRT_NPROC`` to `cpu_threads_needed` unless ``PJRT_NPROC`` or ``NPROC`` is set, and
    adds to ``XLA_FLAGS`` the collective timeouts that let `jaxdl.mesh.watchdog` report a
    stall first (unless the user's ``XLA_FLAGS`` sets them). Nothing for one device.

    Args:
        devices: the CPU devices this process will offer.
        stall_timeout: the watchdog's timeout in seconds (default `watchdog.stall_timeout`).

    Raises:
        ValueError: when the user's ``PJRT_NPROC``/``NPROC`` gives fewer threads than
            ``devices`` need (the mesh would deadlock).
    """
    if devices <= 1:
        return
    needed = CPU_THREADS_PER_DEVICE * devices
    if any(os.environ.get(name, "").strip() for name in POOL_SIZE_VARIABLES):
        if cpu_thread_pool_size() < needed:
            raise ValueError(_too_few_threads("jaxdl.distributed", devices, os.environ))
    else:
        os.environ["PJRT_NPROC"] = str(cpu_threads_needed(devices))
    timeout = watchdog.stall_timeout() if stall_timeout is None else stall_timeout
    flags = os.environ.get("XLA_FLAGS", "")
    added = [flag for flag in _collective_timeout_flags(timeout) if flag.split("=")[0] not in flags]
    if timeout > 0 and added:
        os.environ["XLA_FLAGS"] = " ".join(filter(None, [flags, *added]))


def _too_few_threads(where: str, devices: int, environ: Mapping[str, str]) -> str:
    needed = CPU_THREADS_PER_DEVICE * devices
    return (f"{where}: {devices} CPU devices in one process need XLA:CPU thread pools of at least {needed} threads "
            f"({CPU_THREADS_PER_DEVICE} per device), but {_pool_words(environ)}: the devices' all-reduces would "
            f"deadlock. Set PJRT_NPROC={cpu_threads_needed(devices)} (or unset it) before JAX starts, or let "
            f"jaxdl.distributed.start / set_cpu_device_count create the devices: they size the pools.")


def check_cpu_mesh(mesh: Mesh, where: str) -> None:
    """Refuses a mesh of several CPU devices of this process whose thread pools are too small.

    Raises:
        ValueError: naming ``where``, the device count, the pool size and what to set.
    """
    local = [device for device in mesh.devices.flat
             if device.platform == "cpu" and device.process_index == jax.process_index()]
    if len(local) > 1 and cpu_thread_pool_size() < CPU_THREADS_PER_DEVICE * len(local):
        raise ValueError(_too_few_threads(where, len(local), os.environ))
