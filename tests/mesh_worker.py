"""Subprocess side of tests/test_cpu_mesh.py: CPU meshes as users run them, each in a fresh process.

    python tests/mesh_worker.py inflight N      # issue 20's reproducer through jaxdl: 300 steps in flight
    python tests/mesh_worker.py lenet N --out DIR   # train_lenet.py --devices N --batch-size 256: 24 steps, validation
    python tests/mesh_worker.py script ARGUMENTS...  # scripts/train_lenet.py ARGUMENTS on synthetic digits
    python tests/mesh_worker.py stall --process-id I --coordinator HOST:PORT
                                                # process 1 skips a step: process 0's watchdog stops it

The device count is fixed when JAX starts, so every configuration is a fresh process started
with the user's default XLA flags (not the suite's). Prints one ``RESULT {json}`` line.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def inflight(devices: int) -> dict:
    """The 20-line program of issue 20 that deadlocked XLA:CPU, with the devices jaxdl makes."""
    from jaxdl import distributed

    distributed.set_cpu_device_count(devices)
    import jax
    import jax.numpy as jnp
    from jax.sharding import NamedSharding, PartitionSpec

    import jaxdl

    mesh = jaxdl.data_mesh()
    w = jax.device_put(jnp.ones((512, 512)), NamedSharding(mesh, PartitionSpec()))
    x = jax.device_put(jnp.ones((240, 512)), NamedSharding(mesh, PartitionSpec("data")))
    step = jax.jit(lambda w, x: w - 1e-3 * jax.grad(lambda w: jnp.tanh(x @ w).sum())(w))
    for _ in range(300):
        w = step(w, x)  # no wait: many steps in flight, as asynchronous dispatch queues them
    return {"devices": len(mesh.devices.flat), "sum": float(w.block_until_ready().sum())}


def lenet(devices: int, out: str) -> dict:
    """``scripts/train_lenet.py --devices N --batch-size 256`` (the README's command, the recipe's own
    grain pipeline and full-size LeNet) on 24 steps of synthetic digits, validation and test included."""
    import contextlib
    import importlib.util
    import io

    sys.path.insert(0, str(ROOT / "tests"))
    from synthetic_digits import tiny_mnist

    from jaxdl.datasets import mnist

    spec = importlib.util.spec_from_file_location("train_lenet", ROOT / "scripts" / "train_lenet.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    mnist.load_mnist = lambda *args, **kwargs: tiny_mnist(train=24 * 256, validation=1000, test=1000)
    printed, started = io.StringIO(), time.monotonic()
    with contextlib.redirect_stdout(printed):
        status = script.main(["--devices", str(devices), "--batch-size", "256", "--epochs", "1", "--validation-size",
                              "1000", "--output-dir", out, "--no-progress"])
    return {"status": status, "printed": printed.getvalue(), "seconds": time.monotonic() - started}


def script(arguments: list[str]) -> None:
    """``python scripts/train_lenet.py ARGUMENTS`` as its own ``__main__`` (its real exit path), on
    the synthetic digits of `lenet`."""
    import runpy

    sys.path.insert(0, str(ROOT / "tests"))
    from synthetic_digits import tiny_mnist

    from jaxdl.datasets import mnist

    mnist.load_mnist = lambda *args, **kwargs: tiny_mnist(train=512, validation=64, test=64)
    sys.argv = ["train_lenet.py", *arguments]
    runpy.run_path(str(ROOT / "scripts" / "train_lenet.py"), run_name="__main__")


def stall(process_id: int, coordinator: str) -> dict:
    """Two processes, one device each; process 1 skips the second step, so process 0's all-reduce waits."""
    from jaxdl import distributed

    mesh = distributed.start(distributed.cluster_config(num_processes=2, process_id=process_id,
                                                        coordinator=coordinator, heartbeat_timeout=30))
    import jax
    import numpy as np

    import jaxdl

    model, optimizer = jaxdl.Serial(jaxdl.FullyConnected(4), jaxdl.SoftMax()), jaxdl.Sgd(0.1)
    train_state = jaxdl.create_train_state(model, optimizer, jax.random.key(0), (8, 3))
    step = jaxdl.make_train_step(model, jaxdl.cross_entropy, optimizer, mesh=mesh)
    x, labels = np.ones((4, 3), np.float32), np.zeros(4, np.int32)
    train_state, metrics = step(train_state, x, labels)  # both processes: gloo's connections are made
    jax.block_until_ready(metrics)
    if process_id == 1:
        time.sleep(120)  # alive (heartbeats go on) but never reaches the second step's all-reduce
        return {"process": 1}
    print("SECOND STEP DISPATCHED", flush=True)
    train_state, metrics = step(train_state, x, labels)
    jax.block_until_ready(metrics)
    return {"process": 0, "finished": True}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["inflight", "lenet", "stall", "script"])
    parser.add_argument("devices", type=int, nargs="?", default=1)
    parser.add_argument("--process-id", type=int, default=0)
    parser.add_argument("--coordinator", default=None)
    parser.add_argument("--out", default="runs/mesh_worker")
    if sys.argv[1:2] == ["script"]:
        script(sys.argv[2:])  # exits as the script does
    args = parser.parse_args()
    if args.mode == "inflight":
        result = inflight(args.devices)
    elif args.mode == "lenet":
        result = lenet(args.devices, args.out)
    else:
        result = stall(args.process_id, args.coordinator)
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
