"""Multi-process runs on 127.0.0.1 (`jaxdl.distributed`, gloo collectives): equal results,
collective checkpoints, a dead process, an unreachable coordinator.

Each process is a subprocess (tests/parallel_worker.py train: 2 CPU devices each, a small
model with batch norm and dropout, `jaxdl.fit` on a 4-device mesh over both processes).
Timeouts are short here (heartbeat 10 s, joining 2-3 s) to keep the suite fast; the defaults
are longer (`jaxdl.distributed.ClusterConfig`).
"""

from __future__ import annotations

import json
import pathlib
import socket
import subprocess
import sys
import time

from test_data_parallel import WORKER, worker_environment

ROOT = pathlib.Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_processes(out: pathlib.Path, *extra: str, processes: int = 2) -> list[subprocess.Popen]:
    coordinator = f"127.0.0.1:{free_port()}"
    return [subprocess.Popen([sys.executable, str(WORKER), "train", "--process-id", str(index), "--num-processes",
                              str(processes), "--coordinator", coordinator, "--devices", "2", "--out", str(out),
                              *extra],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=worker_environment())
            for index in range(processes)]


def finish(process: subprocess.Popen, timeout: float = 300) -> tuple[int, str]:
    output, _ = process.communicate(timeout=timeout)
    return process.returncode, output


def test_two_processes_equal_one_process_and_their_checkpoint_restores_in_one(tmp_path):
    results = [finish(process) for process in start_processes(tmp_path)]
    for status, output in results:
        assert status == 0, output[-3000:]
        assert "DONE status=completed step=8 epochs=2" in output
    assert "epoch 2/2" in results[0][1] and "epoch 2/2" not in results[1][1]  # process 0 speaks for the run
    assert (tmp_path / "run" / "metrics.csv").is_file()

    done = subprocess.run([sys.executable, str(WORKER), "reference", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=300, env=worker_environment())
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    reference = json.loads((tmp_path / "reference.json").read_text())
    assert reference["processes_agree"]  # both processes hold the same replicated params
    assert reference["params_difference"] < 1e-5  # two processes == one process over the same global batches
    assert reference["restored_step"] == 8 and reference["restored_difference"] < 1e-5
    assert reference["continued_epochs"] == 3 and reference["continued_difference"] < 1e-5  # resumed in 1 process


def test_a_killed_process_stops_the_other_naming_it_and_a_restart_resumes(tmp_path):
    first, second = start_processes(tmp_path, "--epochs", "3", "--die-at-epoch", "1")
    status, output = finish(second)
    died = time.monotonic()
    assert status == -9 and "process dies at epoch 2" in output  # SIGKILL, like a crash
    status, output = finish(first)
    stopped_after = time.monotonic() - died
    assert status != 0
    assert stopped_after < 60, output[-3000:]
    assert ("process 1 of the run stopped sending heartbeats" in output  # jaxdl's message, or JAX's own:
            or "The following tasks are unhealthy (stopped sending heartbeats):\n1\n" in output), output[-3000:]

    results = [finish(process) for process in start_processes(tmp_path, "--epochs", "3", "--resume")]
    for status, output in results:
        assert status == 0, output[-3000:]
        assert "DONE status=completed step=12 epochs=3" in output
    assert "Resuming" in results[0][1] and "after epoch 1 of 3 (step 4)" in results[0][1]


def test_an_unreachable_coordinator_and_missing_processes_are_clear_errors(tmp_path):
    script = str(ROOT / "scripts" / "train_lenet.py")
    environment = {**worker_environment(), "JAXDL_INITIALIZATION_TIMEOUT": "2"}
    alone = [subprocess.Popen([sys.executable, script, "--num-processes", "2", "--process-id", str(index),
                               "--coordinator", f"127.0.0.1:{free_port()}", "--output-dir", str(tmp_path / "run")],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=environment)
             for index in (1, 0)]
    (unreachable_status, unreachable), (missing_status, missing) = [finish(process, 120) for process in alone]
    assert unreachable_status == 3, unreachable
    assert "process 1 of 2 cannot reach the coordinator at 127.0.0.1:" in unreachable
    assert "within 2 s (Connection refused)" in unreachable
    assert missing_status == 3, missing
    assert "process 0 of 2 waited 2 s at the coordinator" in missing and "not all 2 processes joined" in missing
