"""Multi-process runs: which devices and processes a run uses, joining them, and failing fast.

A run on several hosts (or several processes on one host) is P copies of the same program,
process 0 to P-1, that meet at a coordinator (``HOST:PORT``, served by process 0) through
`jax.distributed.initialize`. After that `jax.devices()` lists every process's devices and a
`jaxdl.data_mesh` over them trains on one global batch (`jaxdl.training.parallel`): each
process feeds its rows of each batch, XLA all-reduces the gradients (gloo on CPU, NCCL on
GPU: the same code), every process holds the same replicated params.

Conventions:

* Where the settings come from (`cluster_config`): explicit arguments (the command line's
  ``--devices``, ``--num-processes``, ``--process-id``, ``--coordinator``), else the
  environment: ``JAXDL_DEVICES`` (devices per process), ``JAXDL_NUM_PROCESSES``,
  ``JAXDL_PROCESS_ID``, ``JAXDL_COORDINATOR`` (or JAX's own ``JAX_COORDINATOR_ADDRESS``), and
  the timeouts ``JAXDL_INITIALIZATION_TIMEOUT``, ``JAXDL_HEARTBEAT_TIMEOUT``,
  ``JAXDL_SHUTDOWN_TIMEOUT`` (seconds). A cluster launcher sets them per process, e.g. in a
  Slurm script ``JAXDL_NUM_PROCESSES=$SLURM_NTASKS JAXDL_PROCESS_ID=$SLURM_PROCID``.
* Devices (`start`): ``devices=N`` uses the first N local devices of each process; on the
  CPU it also makes the host platform offer N devices (``jax_num_cpu_devices``), which must
  happen before JAX starts its backend (the first computation or `jax.devices` call).
* Process 0 is the main process (`is_main_process`): only it prints, writes metrics, plots
  and checkpoints (`jaxdl.fit`); the checkpoint writes are collective (every process calls
  them, `jaxdl.checkpoint`) and end with a `barrier`.
* Failures never hang. `jax.distributed` runs a heartbeat: when a process dies (killed, out
  of memory, a crash), the coordinator notices within ``heartbeat_timeout`` seconds and
  terminates the others, whose last line names the dead process ("The following tasks are
  unhealthy (stopped sending heartbeats): 1"); when process 0 (the coordinator) dies, the
  others stop at once ("the leader task was preempted/died"). A Python exception that ends
  one process would otherwise leave the others waiting in JAX's shutdown barrier for
  ``shutdown_timeout``: after `initialize` an uncaught exception exits the process at once
  (status 1) so the others stop within the heartbeat timeout, and `exit_status` does the same
  for a command line's failure status. A coordinator that cannot be reached, or processes
  that do not all arrive, are a clear error after ``initialization_timeout`` (not JAX's
  "another task died" abort). Restarting all processes with ``--resume`` continues from the
  last committed checkpoint.

Example (two processes on one machine, one CPU device each; see docs/guides/multi-device.md)::

    config = cluster_config(num_processes=2, process_id=0, coordinator="127.0.0.1:12355")
    mesh = start(config)          # before any other JAX call
    train_step = jaxdl.make_train_step(model, loss_fn, optimizer, mesh=mesh)
    result = jaxdl.fit(train_step, train_state, jaxdl.process_batches(train_batches, mesh), epochs=2)
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import socket
import sys
import threading
import time
from typing import Callable, Iterator, Mapping

import jax

from jaxdl.mesh.cpu import prepare_cpu_devices
from jaxdl.mesh.sharding import data_mesh

#: Environment variables read by `cluster_config`, by field, in order of precedence.
ENVIRONMENT = {
    "devices": ("JAXDL_DEVICES",),
    "num_processes": ("JAXDL_NUM_PROCESSES",),
    "process_id": ("JAXDL_PROCESS_ID",),
    "coordinator": ("JAXDL_COORDINATOR", "JAX_COORDINATOR_ADDRESS"),
    "coordinator_bind": ("JAXDL_COORDINATOR_BIND", "JAX_COORDINATOR_BIND_ADDRESS"),
    "initialization_timeout": ("JAXDL_INITIALIZATION_TIMEOUT",),
    "heartbeat_timeout": ("JAXDL_HEARTBEAT_TIMEOUT",),
    "shutdown_timeout": ("JAXDL_SHUTDOWN_TIMEOUT",),
}
#: The exit status of a process that could not join its run (unreachable coordinator, missing
#: processes), and of one that stops after an uncaught exception.
EXIT_NOT_JOINED = 3
EXIT_EXCEPTION = 1
#: Words in the error of a collective operation (all-reduce, barrier) whose peer process died.
COLLECTIVE_FAILURE_WORDS = ("gloo", "nccl", "connection reset", "closed by peer", "socket closed",
                            "coordination service")
#: The settings of the run this process joined (`initialize`), or None.
_joined: "ClusterConfig | None" = None


class DistributedError(RuntimeError):
    """A multi-process run cannot start: bad settings, an unreachable coordinator, missing processes."""


@dataclasses.dataclass(frozen=True)
class ClusterConfig:
    """The devices and processes of a run (`cluster_config` builds and checks one).

    Attributes:
        devices: local devices per process to use; None for one (the one-device default).
        num_processes: P, the number of processes of the run.
        process_id: this process's index in ``[0, P)``; process 0 serves the coordinator.
        coordinator: ``HOST:PORT`` of process 0 (needed when P > 1).
        coordinator_bind: ``HOST:PORT`` that process 0's coordinator listens on; None for the
            coordinator address itself (so ``127.0.0.1:P`` is reachable from this machine
            only). The coordinator's gRPC service has no authentication: listen on every
            interface (``0.0.0.0:P`` or ``[::]:P``) only on a trusted network.
        initialization_timeout: seconds to wait for the coordinator and all processes.
        heartbeat_timeout: seconds without a heartbeat after which a process counts as dead.
        shutdown_timeout: seconds a finishing process waits for the others at exit.
    """

    devices: int | None = None
    num_processes: int = 1
    process_id: int = 0
    coordinator: str | None = None
    coordinator_bind: str | None = None
    initialization_timeout: int = 120
    heartbeat_timeout: int = 60
    shutdown_timeout: int = 120

    @property
    def multi_process(self) -> bool:
        """Whether the run has more than one process."""
        return self.num_processes > 1


def _from_environment(field: str, environ: Mapping[str, str]) -> tuple[str | None, str | None]:
    for name in ENVIRONMENT[field]:
        if environ.get(name, "").strip():
            return environ[name].strip(), name
    return None, None


def _integer(value, what: str, minimum: int) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise DistributedError(f"cluster_config: {what} must be an int >= {minimum}, got {value!r}.") from None
    if isinstance(value, bool) or number < minimum or (isinstance(value, float) and value != number):
        raise DistributedError(f"cluster_config: {what} must be an int >= {minimum}, got {value!r}.")
    return number


def _check_coordinator(address: str, what: str) -> str:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise DistributedError(f"cluster_config: {what} must be HOST:PORT (e.g. 127.0.0.1:12355 or "
                               f"node0.cluster:12355), got {address!r}.")
    return address


def cluster_config(*, devices: int | None = None, num_processes: int | None = None, process_id: int | None = None,
                   coordinator: str | None = None, coordinator_bind: str | None = None,
                   initialization_timeout: int | None = None,
                   heartbeat_timeout: int | None = None, shutdown_timeout: int | None = None,
                   environ: Mapping[str, str] | None = None) -> ClusterConfig:
    """The run's devices and processes: the arguments given, else the environment (`ENVIRONMENT`).

    Args:
        devices: local devices per process (None: ``JAXDL_DEVICES``, else one).
        num_processes: processes of the run (None: ``JAXDL_NUM_PROCESSES``, else 1).
        process_id: this process's index (None: ``JAXDL_PROCESS_ID``; required when P > 1).
        coordinator: ``HOST:PORT`` of process 0 (None: ``JAXDL_COORDINATOR`` or
            ``JAX_COORDINATOR_ADDRESS``; required when P > 1).
        coordinator_bind: ``HOST:PORT`` the coordinator listens on (None:
            ``JAXDL_COORDINATOR_BIND`` or ``JAX_COORDINATOR_BIND_ADDRESS``, else the
            coordinator address itself, never every interface by default).
        initialization_timeout, heartbeat_timeout, shutdown_timeout: seconds (None: the
            ``JAXDL_*_TIMEOUT`` variables, else 120, 60 and 120).
        environ: the environment to read (default `os.environ`).

    Raises:
        DistributedError: naming the option or variable, for a value that is not a valid
            count, index or address, or a multi-process run without a process id or coordinator.
    """
    environ = os.environ if environ is None else environ
    given = {"devices": devices, "num_processes": num_processes, "process_id": process_id,
             "coordinator": coordinator, "coordinator_bind": coordinator_bind,
             "initialization_timeout": initialization_timeout,
             "heartbeat_timeout": heartbeat_timeout, "shutdown_timeout": shutdown_timeout}
    values, sources = {}, {}
    for field, value in given.items():
        source = field
        if value is None:
            value, source = _from_environment(field, environ)
        if value is not None:
            values[field], sources[field] = value, source
    minimums = {"devices": 1, "num_processes": 1, "process_id": 0, "initialization_timeout": 1,
                "heartbeat_timeout": 1, "shutdown_timeout": 1}
    for field, minimum in minimums.items():
        if field in values:
            values[field] = _integer(values[field], sources[field], minimum)
    config = ClusterConfig(**values)
    for field in ("coordinator", "coordinator_bind"):
        if field in values:
            _check_coordinator(values[field], sources[field])
    if config.multi_process:
        if "process_id" not in values:
            raise DistributedError(f"cluster_config: a run of {config.num_processes} processes needs this process's "
                                   f"id (process_id, or JAXDL_PROCESS_ID), got none.")
        if config.coordinator is None:
            raise DistributedError(f"cluster_config: a run of {config.num_processes} processes needs the coordinator "
                                   f"address HOST:PORT of process 0 (coordinator, or JAXDL_COORDINATOR), got none.")
    if config.process_id >= config.num_processes:
        raise DistributedError(f"cluster_config: the process id must be in [0, {config.num_processes}) for "
                               f"{config.num_processes} processes, got {config.process_id}.")
    return config


def backend_started() -> bool:
    """Whether JAX has started its backend (after which device counts and processes are fixed)."""
    from jax._src import xla_bridge  # no public accessor in jax 0.10

    return xla_bridge.backends_are_initialized()


def set_cpu_device_count(count: int) -> None:
    """Makes the CPU platform offer ``count`` devices (``jax_num_cpu_devices``).

    Harmless on a GPU machine (it concerns the CPU platform only). Must run before JAX starts
    its backend. It also sizes XLA:CPU's thread pools for ``count`` devices (``PJRT_NPROC``,
    `jaxdl.mesh.cpu.prepare_cpu_devices`), without which their collectives deadlock.

    Raises:
        DistributedError: when the backend already started with another CPU device count, or
            the user's ``PJRT_NPROC`` is too small for ``count`` devices.
    """
    count = _integer(count, "devices", 1)
    if backend_started():
        if count == len(jax.devices("cpu")):
            return
        raise DistributedError(
            f"set_cpu_device_count: JAX already started its backend with {len(jax.devices('cpu'))} CPU devices, so "
            f"{count} cannot be set any more; call it (or jaxdl.distributed.start) before any JAX computation or "
            f"jax.devices() call.")
    try:
        prepare_cpu_devices(count)
    except ValueError as error:
        raise DistributedError(str(error)) from None
    jax.config.update("jax_num_cpu_devices", count)


def _wait_for_coordinator(address: str, timeout: float, process_id: int, num_processes: int) -> None:
    """Waits until ``address`` accepts a TCP connection; DistributedError after ``timeout`` seconds."""
    host, _, port = address.rpartition(":")
    deadline, error = time.monotonic() + timeout, None
    while True:
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=min(2.0, timeout)):
                return
        except OSError as caught:
            error = caught
        if time.monotonic() >= deadline:
            raise DistributedError(
                f"jaxdl.distributed: process {process_id} of {num_processes} cannot reach the coordinator at {address} "
                f"within {timeout:g} s ({error.strerror or error}). Process 0 serves it: start process 0 with the same "
                f"coordinator address and number of processes, or check the address, the port and the firewall.")
        time.sleep(0.2)


#: Lock files held by this process (`_claim_process_id`), kept open for its lifetime.
_claims: list = []


def _claim_process_id(config: ClusterConfig) -> None:
    """Raises a DistributedError when another process on this machine already joined the same run
    (same coordinator) with the same process id: XLA's coordinator would abort every process.

    The claim is an ``flock`` on a file in the temporary directory, named after the coordinator
    address and the process id; the OS releases it when the process ends (a killed process
    leaves nothing stuck). Processes on other machines cannot be seen this way.
    """
    import fcntl
    import tempfile

    name = "".join(char if char.isalnum() else "_" for char in config.coordinator)
    path = os.path.join(tempfile.gettempdir(), f"jaxdl-run-{name}-process-{config.process_id}.lock")
    try:
        handle = open(path, "a+")
    except OSError:
        return  # no claim possible here (e.g. a read-only /tmp): XLA's own check remains
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise DistributedError(
            f"jaxdl.distributed: another process on this machine (pid {holder}) already is process "
            f"{config.process_id} of the run at the coordinator {config.coordinator}; each process of a run needs its "
            f"own process id in [0, {config.num_processes}).") from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    _claims.append(handle)


def _check_port_free(address: str, config: ClusterConfig) -> None:
    """Raises a DistributedError when process 0 cannot listen on ``address`` (XLA would crash).

    The port is in use by another run, a stale process of an earlier one, or a second
    process 0 of this run; or the host is not an address of this machine.
    """
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    try:
        infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        raise DistributedError(f"jaxdl.distributed: process 0 cannot serve the coordinator at {address}: the host "
                               f"{host!r} does not resolve ({error.strerror or error}).") from None
    family, kind, protocol, _, where = infos[0]
    with socket.socket(family, kind, protocol) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC does: TIME_WAIT is no conflict
        try:
            probe.bind(where)
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                raise DistributedError(
                    f"jaxdl.distributed: process 0 of {config.num_processes} cannot serve the coordinator at {address}: "
                    f"port {port} is already in use, by another process 0 of this run (each process needs its own "
                    f"process id), a stale process of an earlier run, or another program. Stop that process or "
                    f"choose another port.") from None
            raise DistributedError(
                f"jaxdl.distributed: process 0 of {config.num_processes} cannot serve the coordinator at {address} "
                f"({error.strerror or error}): the host must be an address of process 0's machine (or set a listen "
                f"address with JAXDL_COORDINATOR_BIND).") from None


def _watchdog(timeout: float, message: str) -> Callable[[], None]:
    """Exits the process with `EXIT_NOT_JOINED` and ``message`` unless the returned function is
    called within ``timeout`` seconds."""
    done = threading.Event()

    def watch():
        if not done.wait(timeout):
            print(message, file=sys.stderr, flush=True)
            exit_now(EXIT_NOT_JOINED)

    threading.Thread(target=watch, name="jaxdl-join-watchdog", daemon=True).start()
    return done.set


def initialize(config: ClusterConfig, *, log: Callable[[str], None] | None = None) -> None:
    """Joins the multi-process run of ``config`` (`jax.distributed.initialize`); nothing for one process.

    CPU collectives go through gloo (``jax_cpu_collectives_implementation``); GPUs use NCCL
    with the same code. A process other than 0 first waits for the coordinator's port, so an
    unreachable coordinator is a `DistributedError` after ``initialization_timeout``. If not
    all processes arrive in that time, a watchdog prints which process waited for how many and
    exits with status `EXIT_NOT_JOINED` (JAX itself would abort with a misleading "another
    task died"). After joining, an uncaught exception exits the process at once (status
    `EXIT_EXCEPTION`, after the traceback) instead of waiting in JAX's shutdown barrier.

    Must run before JAX starts its backend.

    Raises:
        DistributedError: for an unreachable coordinator, or a backend that already started.
    """
    if not config.multi_process:
        return
    if jax.distributed.is_initialized():
        return
    if backend_started():
        raise DistributedError("jaxdl.distributed.initialize: JAX already started its backend; join the run (or "
                               "call jaxdl.distributed.start) before any JAX computation or jax.devices() call.")
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    who = f"process {config.process_id} of {config.num_processes}"
    log and log(f"jaxdl.distributed: {who} joining the coordinator at {config.coordinator} (waiting up to "
                f"{config.initialization_timeout} s; heartbeat timeout {config.heartbeat_timeout} s).")
    started = time.monotonic()
    bind = config.coordinator_bind or config.coordinator
    _claim_process_id(config)
    if config.process_id == 0:
        _check_port_free(bind, config)
    if config.process_id != 0:
        _wait_for_coordinator(config.coordinator, config.initialization_timeout, config.process_id,
                              config.num_processes)
    remaining = max(1.0, config.initialization_timeout - (time.monotonic() - started))
    joined = _watchdog(remaining, (
        f"jaxdl.distributed: error: {who} waited {config.initialization_timeout} s at the coordinator "
        f"{config.coordinator}, but not all {config.num_processes} processes joined. Start all "
        f"{config.num_processes} processes with that number of processes, each its own process id and the same "
        f"coordinator address; a stale process "
        f"of an earlier run on that port also prevents it."))
    jax.distributed.initialize(config.coordinator, config.num_processes, config.process_id,
                               initialization_timeout=int(remaining) + 10,
                               heartbeat_timeout_seconds=config.heartbeat_timeout,
                               shutdown_timeout_seconds=config.shutdown_timeout,
                               coordinator_bind_address=bind)
    joined()
    global _joined
    _joined = config
    _exit_on_uncaught_exceptions()


def start(config: ClusterConfig, *, log: Callable[[str], None] | None = None) -> jax.sharding.Mesh | None:
    """Sets up this process's devices, joins the run, and returns the mesh to train on.

    In order: the CPU device count (``config.devices``, `set_cpu_device_count`), `initialize`
    (several processes), then a `jaxdl.data_mesh` over the first ``config.devices`` local
    devices of every process (one when None).

    Returns:
        The mesh, or None for a run on one device in one process (train without a mesh: the
        one-device step, unchanged).

    Raises:
        DistributedError: as `initialize` and `set_cpu_device_count`, or when a process has
            fewer devices than ``config.devices``.
    """
    if config.devices is not None:
        set_cpu_device_count(config.devices)
    initialize(config, log=log)
    local = jax.local_devices()
    wanted = 1 if config.devices is None else config.devices
    if wanted > len(local):
        raise DistributedError(f"jaxdl.distributed.start: {wanted} devices per process were asked for, but process "
                               f"{jax.process_index()} has {len(local)} ({local[0].platform}: "
                               f"{', '.join(str(d) for d in local)}).")
    by_process: dict[int, list] = {}
    for device in jax.devices():
        by_process.setdefault(device.process_index, []).append(device)
    devices = [device for index in sorted(by_process) for device in by_process[index][:wanted]]
    if len(devices) == 1:
        return None
    return data_mesh(devices)


def is_multi_process() -> bool:
    """Whether this process is one of several of a run (`jax.distributed` joined, P > 1)."""
    return jax.distributed.is_initialized() and jax.process_count() > 1


def is_main_process() -> bool:
    """Whether this process is process 0 (always true in a one-process run)."""
    return not is_multi_process() or jax.process_index() == 0


def barrier(name: str) -> None:
    """Waits until every process of the run reaches ``barrier(name)``; nothing in one process.

    All processes must pass the same ``name`` (a mismatch is an error naming it).
    """
    if is_multi_process():
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


@contextlib.contextmanager
def main_process_first(name: str) -> Iterator[bool]:
    """Runs the block on process 0 first, then (after a `barrier`) on the other processes.

    Yields whether this is the main process. For set-up that process 0 must finish before the
    others look (e.g. cleaning a run directory before they read it). An exception on process 0
    propagates without the barrier (its process then ends, and the others stop with it).
    """
    main = is_main_process()
    if not main:
        barrier(name)
    yield main
    if main:
        barrier(name)


@contextlib.contextmanager
def main_process_writes(name: str) -> Iterator[bool]:
    """A collective write: yields whether this process writes (process 0), then every process
    waits at a `barrier`, so that after the block the write is complete for everyone."""
    yield is_main_process()
    barrier(name)


def exit_now(status: int) -> None:
    """Flushes stdout and stderr and ends the process with ``status`` at once (`os._exit`):
    without JAX's shutdown barrier, so that the other processes of a run notice within the
    heartbeat timeout."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(status)


def exit_status(status: int, agreed: tuple[int, ...] = (0,)) -> int:
    """A command line's exit: returns ``status`` for `sys.exit`, except that in a multi-process
    run a status not in ``agreed`` ends the process at once (`exit_now`).

    ``agreed`` are the outcomes every process reaches together (0: done; e.g. also "diverged",
    computed from the same replicated loss everywhere): those pass JAX's shutdown barrier, where
    all processes finish together. Any other failure is one process's: it must not wait there.
    """
    if status not in agreed and is_multi_process():
        exit_now(status)
    return status


def is_collective_failure(error: BaseException) -> bool:
    """Whether ``error`` looks like a collective operation that failed because a peer process died."""
    text = f"{type(error).__name__}: {error}".lower()
    return "jaxruntimeerror" in text and any(word in text for word in COLLECTIVE_FAILURE_WORDS)


def _live_processes() -> set[int] | None:
    """The processes the coordinator still hears from (None where JAX does not tell)."""
    try:
        from jax._src import distributed as jax_distributed  # no public accessor in jax 0.10

        return set(jax_distributed.global_state.client.get_live_nodes(list(range(_joined.num_processes))))
    except Exception:  # noqa: BLE001  (private API: any failure means "unknown")
        return None


def name_dead_processes(timeout: float) -> list[int] | None:
    """After a failed collective: waits up to ``timeout`` seconds for the coordinator to miss a
    process's heartbeats, prints which process(es) died and returns them (None if it cannot tell).

    JAX itself may end this process first with its own message naming them ("The following
    tasks are unhealthy"); either way the dead process is named.
    """
    if _joined is None:
        return None
    me = f"process {jax.process_index()} of {_joined.num_processes}"
    print(f"jaxdl.distributed: {me}: a collective operation failed, so another process of the run has probably "
          f"died; waiting up to {timeout:g} s for the coordinator to tell which.", file=sys.stderr, flush=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        live = _live_processes()
        if live is None:
            time.sleep(0.5)
            continue
        dead = sorted(set(range(_joined.num_processes)) - live - {jax.process_index()})  # not this one: it runs
        if dead:
            print(f"jaxdl.distributed: error: process{'es' if len(dead) > 1 else ''} "
                  f"{', '.join(map(str, dead))} of the run stopped sending heartbeats (died); {me} stops too. "
                  f"Restarting every process to resume continues from the last committed checkpoint.",
                  file=sys.stderr, flush=True)
            return dead
        time.sleep(0.5)
    print(f"jaxdl.distributed: error: {me} stops; no process was reported dead within {timeout:g} s (see the other "
          f"processes' logs).", file=sys.stderr, flush=True)
    return None


def _exit_on_uncaught_exceptions() -> None:
    previous = sys.excepthook

    def hook(kind, value, traceback):
        previous(kind, value, traceback)
        if is_collective_failure(value) and _joined is not None:
            name_dead_processes(_joined.heartbeat_timeout + 5)
        exit_now(EXIT_EXCEPTION if not issubclass(kind, KeyboardInterrupt) else 130)

    if not getattr(sys.excepthook, "jaxdl_exits", False):
        hook.jaxdl_exits = True
        sys.excepthook = hook
