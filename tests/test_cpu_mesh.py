"""CPU meshes never hang (issue 20, item 2): XLA:CPU's thread pools sized per device, a mesh
that would deadlock refused up front, and a stalled collective a clear error naming the step.

The device count and the pool size are fixed when JAX starts, so the meshes run in fresh
processes (tests/mesh_worker.py) with the user's default XLA flags, not the suite's.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import time
import types

import numpy as np
import pytest

from jaxdl import distributed
from jaxdl.mesh import cpu as cpu_mesh, watchdog
from test_data_parallel import worker_environment
from test_multiprocess import free_port

WORKER = os.path.join(os.path.dirname(__file__), "mesh_worker.py")


def user_environment(**extra: str) -> dict:
    """The environment a user runs in: no JAXDL_* settings, no suite XLA flags, no pool size."""
    environ = {name: value for name, value in worker_environment().items()
               if name not in ("XLA_FLAGS", "PJRT_NPROC", "NPROC")}
    return {**environ, **extra}


def run_worker(*arguments: str, timeout: float = 300, **environ: str) -> tuple[int, str, dict | None]:
    done = subprocess.run([sys.executable, WORKER, *arguments], capture_output=True, text=True, timeout=timeout,
                          env=user_environment(**environ))
    output = done.stdout + done.stderr
    results = [line[len("RESULT "):] for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    return done.returncode, output, json.loads(results[-1]) if results else None


# ------------------------------------------------------------------ in fresh processes, real sizes


@pytest.mark.parametrize("devices", [2, 4])
def test_many_steps_in_flight_on_host_devices_do_not_deadlock(devices):
    # Issue 20's reproducer: 300 data-parallel steps dispatched without waiting. With XLA's
    # default pools (2 threads on this machine) it aborted after 40 s every time.
    status, output, result = run_worker("inflight", str(devices), timeout=120)
    assert status == 0, output[-3000:]
    assert result == {"devices": devices, "sum": 262144.0}


@pytest.mark.parametrize("devices", [2, 4])
def test_the_readme_command_trains_and_validates_full_size_lenet_on_host_devices(devices, tmp_path):
    status, output, result = run_worker("lenet", str(devices), "--out", str(tmp_path / "run"))
    assert status == 0, output[-3000:]
    assert result["status"] == 0, result["printed"]
    assert f"{devices} cpu devices in 1 process (data parallel)" in result["printed"]
    assert "epoch 1/1: train loss" in result["printed"] and "validation accuracy" in result["printed"]
    assert "Test accuracy of the best-validation checkpoint" in result["printed"]


def test_a_pool_too_small_for_the_devices_is_refused_before_anything_runs():
    status, output, result = run_worker("inflight", "4", timeout=60, PJRT_NPROC="3")
    assert status != 0 and result is None
    assert "4 CPU devices in one process need XLA:CPU thread pools of at least 8 threads" in output
    assert "PJRT_NPROC=3 gives XLA:CPU's thread pools 3 threads" in output
    assert "Set PJRT_NPROC=8" in output


def test_a_stalled_collective_is_a_clear_error_naming_the_step_not_a_hang():
    # Both processes run a first step; then process 1 stays alive but skips the second, so
    # process 0's all-reduce waits forever (gloo has no timeout that would end it in minutes).
    coordinator = f"127.0.0.1:{free_port()}"
    environ = user_environment(JAXDL_STALL_TIMEOUT="3")
    processes = [subprocess.Popen([sys.executable, WORKER, "stall", "--process-id", str(index), "--coordinator",
                                   coordinator], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                  env=environ) for index in range(2)]
    try:
        started = time.monotonic()
        output, _ = processes[0].communicate(timeout=90)
        elapsed = time.monotonic() - started
    finally:
        for process in processes:
            process.kill()
            process.communicate()
    assert processes[0].returncode == watchdog.EXIT_STALLED, output[-3000:]
    assert "SECOND STEP DISPATCHED" in output
    assert "process 0 of 2: call 2 of the mesh train step (on 2 cpu devices) did not finish within 3 s" in output
    assert "JAXDL_STALL_TIMEOUT" in output
    assert elapsed < 60


# ------------------------------------------------------------------ the rules, in this process


def test_the_pool_size_is_what_xla_reads():
    assert cpu_mesh.cpu_thread_pool_size({"PJRT_NPROC": "6", "NPROC": "3"}) == 6
    assert cpu_mesh.cpu_thread_pool_size({"NPROC": "3"}) == 3
    assert cpu_mesh.cpu_thread_pool_size({}) == cpu_mesh.cores_available()
    assert cpu_mesh.cpu_threads_needed(4) == max(8, cpu_mesh.cores_available())
    assert cpu_mesh.cpu_threads_needed(1) == cpu_mesh.cores_available()


def test_preparing_devices_sizes_the_pools_and_keeps_the_users_settings(monkeypatch):
    for name in ("PJRT_NPROC", "NPROC", "XLA_FLAGS", "JAXDL_STALL_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)
    cpu_mesh.prepare_cpu_devices(1)
    assert "PJRT_NPROC" not in os.environ and "XLA_FLAGS" not in os.environ  # one device: untouched
    cpu_mesh.prepare_cpu_devices(4)
    assert os.environ["PJRT_NPROC"] == str(cpu_mesh.cpu_threads_needed(4))
    assert "--xla_cpu_collective_call_terminate_timeout_seconds=180" in os.environ["XLA_FLAGS"]

    monkeypatch.setenv("PJRT_NPROC", "16")
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_collective_call_terminate_timeout_seconds=7")
    cpu_mesh.prepare_cpu_devices(4)
    assert os.environ["PJRT_NPROC"] == "16"
    assert "terminate_timeout_seconds=7" in os.environ["XLA_FLAGS"]
    assert "terminate_timeout_seconds=180" not in os.environ["XLA_FLAGS"]

    monkeypatch.setenv("NPROC", "2")
    monkeypatch.delenv("PJRT_NPROC")
    with pytest.raises(ValueError, match=r"2 CPU devices in one process need .* at least 4 threads .* NPROC=2"):
        cpu_mesh.prepare_cpu_devices(2)


def test_set_cpu_device_count_reports_a_pool_too_small_as_a_distributed_error(monkeypatch):
    monkeypatch.setattr(distributed, "backend_started", lambda: False)
    monkeypatch.setenv("PJRT_NPROC", "1")
    with pytest.raises(distributed.DistributedError, match="need XLA:CPU thread pools of at least 4 threads"):
        distributed.set_cpu_device_count(2)


def fake_mesh(devices: int, platform: str = "cpu"):
    device = [types.SimpleNamespace(platform=platform, process_index=0) for _ in range(devices)]
    return types.SimpleNamespace(devices=np.array(device, dtype=object))


def test_a_mesh_step_on_too_small_pools_is_refused(monkeypatch):
    monkeypatch.setenv("PJRT_NPROC", "2")
    with pytest.raises(ValueError, match=r"make_train_step: 2 CPU devices .* at least 4 threads"):
        cpu_mesh.check_cpu_mesh(fake_mesh(2), "make_train_step")
    cpu_mesh.check_cpu_mesh(fake_mesh(1), "make_train_step")  # one device: no collective
    cpu_mesh.check_cpu_mesh(fake_mesh(4, "gpu"), "make_train_step")  # not XLA:CPU's pools
    monkeypatch.setenv("PJRT_NPROC", "8")
    cpu_mesh.check_cpu_mesh(fake_mesh(4), "make_train_step")


class FakeOutput:
    def __init__(self, ready=False, deleted=False):
        self.ready, self.deleted = ready, deleted

    def is_ready(self):
        if self.deleted:
            raise RuntimeError("Array has been deleted")
        return self.ready


def watched(timeout: float):
    reports = []
    dog = watchdog.StallWatchdog(timeout, report=reports.append)
    dog._thread = object()  # no polling thread: the test drives `check` with its own clock
    return dog, reports


def register(dog, what, output, mesh=None, compiles=False):
    call = dog.start(what, mesh or fake_mesh(2), compiles=compiles)
    if output is not None:
        call.outputs = [output]  # what `finish` keeps of a call's jax.Array outputs
    return call


def test_a_call_whose_dispatch_blocks_is_watched_and_its_first_call_may_compile():
    dog, reports = watched(10.0)
    first = register(dog, "train step", None, compiles=True)  # dispatching: no outputs yet
    dog.check(now=0.0)
    dog.check(now=49.0)  # the first call compiles: 5x the timeout
    assert reports == [] and dog.pending() == 1
    first.outputs = [FakeOutput(ready=True)]
    register(dog, "train step", None)  # the second call's dispatch blocks (a synchronous collective)
    dog.check(now=50.0)
    dog.check(now=60.5)
    assert len(reports) == 1 and "call 2 of the mesh train step" in reports[0]


def test_the_polling_thread_is_stopped_at_exit_before_the_interpreter_finalizes(monkeypatch):
    """A daemon thread caught in `is_ready` while the interpreter finalizes is unwound through C++
    frames, which aborted a completed two-process run at exit ("FATAL: exception not rethrown")."""
    registered = []
    monkeypatch.setattr(watchdog.atexit, "register", registered.append)
    dog = watchdog.StallWatchdog(60.0, report=lambda message: None)
    register(dog, "train step", FakeOutput(ready=True))
    assert dog._thread.is_alive() and registered == [dog.stop]  # the exit handler
    dog.stop()
    assert not dog._thread.is_alive()


def test_finish_keeps_arrays_and_an_exception_ends_the_watch(monkeypatch):
    import jax.numpy as jnp

    dog, reports = watched(1.0)
    monkeypatch.setattr(watchdog, "_watchdog", dog)
    with watchdog.watching("train step", fake_mesh(2)) as done:
        assert done({"loss": jnp.ones(())})["loss"] == 1.0
    with pytest.raises(KeyError):
        with watchdog.watching("eval step", fake_mesh(2)):
            raise KeyError("boom")
    with watchdog.watching("train step", fake_mesh(1)) as done:  # one device: nothing watched
        done(jnp.ones(()))
    dog.check(now=0.0)
    dog.check(now=10.0)
    assert reports == [] and dog.pending() == 0


def test_the_watchdog_reports_the_call_that_stays_oldest_too_long():
    dog, reports = watched(10.0)
    first, second = FakeOutput(), FakeOutput()
    register(dog, "train step", first)
    register(dog, "train step", second)
    dog.check(now=100.0)
    dog.check(now=109.0)
    assert reports == []
    first.ready = True  # call 1 finishes; call 2's clock starts now, not at its dispatch
    dog.check(now=109.5)
    dog.check(now=119.0)
    assert reports == [] and dog.pending() == 1
    dog.check(now=119.6)
    assert len(reports) == 1
    assert "call 2 of the mesh train step (on 2 cpu devices) did not finish within 10 s" in reports[0]
    assert dog.pending() == 0


def test_the_watchdog_takes_a_deleted_output_for_finished_and_ignores_fast_steps():
    dog, reports = watched(1.0)
    register(dog, "eval step", FakeOutput(deleted=True))
    for _ in range(100):
        register(dog, "train step", FakeOutput(ready=True))
    dog.check(now=0.0)
    dog.check(now=50.0)
    assert reports == [] and dog.pending() == 0


@pytest.mark.parametrize("text, value", [("", watchdog.DEFAULT_STALL_TIMEOUT), ("0", 0.0), ("2.5", 2.5)])
def test_the_stall_timeout_comes_from_the_environment(monkeypatch, text, value):
    monkeypatch.setenv("JAXDL_STALL_TIMEOUT", text)
    assert watchdog.stall_timeout() == value


@pytest.mark.parametrize("text", ["-1", "soon", "nan", "inf"])
def test_a_bad_stall_timeout_is_a_clear_error(monkeypatch, text):
    monkeypatch.setenv("JAXDL_STALL_TIMEOUT", text)
    with pytest.raises(ValueError, match=f"JAXDL_STALL_TIMEOUT must be a number of seconds >= 0.*got {text!r}"):
        watchdog.stall_timeout()


# ------------------------------------------------------------------ the coordinator (process 0)


def _address(hex_address: str) -> str:
    """An address of /proc/net/tcp{,6} (32-bit words in host byte order) as text."""
    import ipaddress
    import struct

    words = [int(hex_address[i:i + 8], 16) for i in range(0, len(hex_address), 8)]
    packed = b"".join(struct.pack("<I", word) for word in words)
    address = ipaddress.ip_address(packed)
    mapped = getattr(address, "ipv4_mapped", None)
    return str(mapped or address)


def listening_addresses(port: int) -> set[str]:
    """The local addresses with a TCP socket listening on ``port`` (from /proc/net/tcp and tcp6)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as rows:
            for row in list(rows)[1:]:
                local, state = row.split()[1], row.split()[3]
                address, hex_port = local.split(":")
                if state == "0A" and int(hex_port, 16) == port:
                    found.add(_address(address))
    return found


def start_process_zero(coordinator: str, **environ: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "scripts/train_lenet.py", "--num-processes", "2", "--process-id", "0",
                             "--coordinator", coordinator, "--no-progress"],
                            cwd=os.path.dirname(os.path.dirname(WORKER)), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=user_environment(**environ))


def test_the_coordinator_listens_on_the_address_given_not_every_interface():
    port = free_port()
    process = start_process_zero(f"127.0.0.1:{port}", JAXDL_INITIALIZATION_TIMEOUT="20")
    try:
        deadline, seen = time.monotonic() + 60, set()
        while time.monotonic() < deadline and not seen and process.poll() is None:
            time.sleep(0.2)
            seen = listening_addresses(port)
    finally:
        process.kill()
        output, _ = process.communicate()
    assert seen == {"127.0.0.1"}, output[-3000:]


def test_a_coordinator_port_in_use_is_a_clear_error_not_a_crash():
    import socket

    with socket.socket() as other:  # another program (or a second process 0) holds the port
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        process = start_process_zero(f"127.0.0.1:{port}")
        output, _ = process.communicate(timeout=120)
    assert process.returncode == distributed.EXIT_NOT_JOINED, output[-3000:]
    assert f"cannot serve the coordinator at 127.0.0.1:{port}: port {port} is already in use" in output
    assert "each process needs its own process id" in output
    assert "Segmentation fault" not in output and "Check failure" not in output


def test_the_listen_address_comes_from_the_options_or_the_environment():
    config = distributed.cluster_config(num_processes=2, process_id=0, coordinator="10.0.0.1:1234",
                                        environ={"JAX_COORDINATOR_BIND_ADDRESS": "0.0.0.0:1234"})
    assert config.coordinator_bind == "0.0.0.0:1234"
    assert distributed.cluster_config(num_processes=2, process_id=0, coordinator="h:1", environ={}).coordinator_bind \
        is None  # the coordinator address itself
    with pytest.raises(distributed.DistributedError, match="JAXDL_COORDINATOR_BIND must be HOST:PORT"):
        distributed.cluster_config(environ={"JAXDL_COORDINATOR_BIND": "everywhere"})


def test_a_second_process_with_the_same_id_is_refused_before_joining(tmp_path):
    # Two processes 1 of one run: XLA's coordinator would abort all three processes.
    port = free_port()
    first = subprocess.Popen([sys.executable, WORKER, "stall", "--process-id", "1", "--coordinator",
                              f"127.0.0.1:{port}"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             env=user_environment(JAXDL_INITIALIZATION_TIMEOUT="30"))
    try:
        import tempfile  # the first process 1 claims its id, then waits for the coordinator

        claim = pathlib.Path(tempfile.gettempdir()) / f"jaxdl-run-127_0_0_1_{port}-process-1.lock"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (claim.is_file() and claim.read_text() == str(first.pid)):
            time.sleep(0.1)
        second = subprocess.run([sys.executable, WORKER, "stall", "--process-id", "1", "--coordinator",
                                 f"127.0.0.1:{port}"], capture_output=True, text=True, timeout=60,
                                env=user_environment())
    finally:
        first.kill()
        first.communicate()
    output = second.stdout + second.stderr
    assert second.returncode != 0 and "Check failure" not in output
    assert f"(pid {first.pid}) already is process 1 of the run at the coordinator 127.0.0.1:{port}" in output


def test_an_error_every_process_reaches_ends_them_all_cleanly(tmp_path):
    # The "restart with --resume" advice followed when no epoch was committed: every process
    # finds no checkpoint. Process 0 used to exit at once and the others died in a C++ abort.
    (tmp_path / "run").mkdir()
    coordinator = f"127.0.0.1:{free_port()}"
    processes = [subprocess.Popen([sys.executable, WORKER, "script", "--num-processes", "2", "--process-id",
                                   str(index), "--coordinator", coordinator, "--resume", "--output-dir",
                                   str(tmp_path / "run"), "--no-progress"], stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True, env=user_environment())
                 for index in range(2)]
    outputs = [process.communicate(timeout=180)[0] for process in processes]
    for process, output in zip(processes, outputs):
        assert process.returncode == 2, output[-3000:]
        assert "resume=True but" in output and "holds no checkpoint" in output
        assert "Check failure" not in output and "Terminating process" not in output


def test_a_call_compiles_once_per_input_shapes():
    seen = set()
    assert watchdog.first_for_shapes(seen, (np.ones((8, 3)), np.zeros(8, np.int32))) is True
    assert watchdog.first_for_shapes(seen, (np.ones((8, 3)), np.zeros(8, np.int32))) is False
    assert watchdog.first_for_shapes(seen, (np.ones((4, 3)), np.zeros(4, np.int32))) is True  # a partial batch
