"""Data-parallel scaling of the LeNet train step: 1, 2, 4 CPU devices in one process, and 1-2 processes.

For each configuration fresh worker processes (device counts and `jax.distributed` are fixed
when JAX starts) train the exercise's LeNet (`jaxdl.models.lenet`, cross-entropy, Adam) with
`jaxdl.make_train_step(..., mesh=...)` on one global batch of ``--batch`` examples split over
the devices, and measure:

* samples/s: global batch x steps / wall time, median over ``--repeats`` blocks of
  ``--steps`` steps (each block ends in ``jax.block_until_ready``), after warm-up;
* all-reduce ms: the time of one all-reduce over the mesh's ``"data"`` axis (``jax.shard_map``
  + ``lax.psum``) of the gradient as the step holds it: a pytree shaped like LeNet's params
  (10 arrays; XLA combines them into one tuple all-reduce, as in the step), and, for
  comparison, of one flat float32 vector of the same size; medians over ``--repeats`` blocks
  of 20 calls;
* all-reduce share: the pytree all-reduce / the step (the communication in the step, unless
  XLA overlaps it with the backward pass).

CPU note: on one device, `jaxdl.kernels.conv.fast_conv` computes the weight gradient in blocks
of `jaxdl.kernels.conv.WEIGHT_GRAD_BLOCK` batch rows (1.3-1.5x faster). A mesh step builds its
model with ``jaxdl.kernels.configure(model, blocked_weight_gradient=False)``, because XLA's
partitioner would move those blocks of the batch-sharded activations between the devices (48
collective-permutes per LeNet step, through gloo between processes): the mesh step holds one
all-reduce and no other collective.

Configurations: ``1 dev`` is the one-device step without a mesh (the baseline); ``N dev`` one
process with N host devices (``jax_num_cpu_devices``); ``P proc x D dev`` P processes on
127.0.0.1 (gloo collectives) with D devices each, each process feeding its B/P rows
(`jaxdl.training.parallel.shard_batch`). Host devices of one machine share its cores, so the
CPU figures measure the machinery (sharding, collectives, processes), not a speed-up: on the
2-core test VM one device already uses both cores.

Usage:
    python benchmarks/bench_scaling.py                     # batch 128: 1, 2, 4 devices; 1x1, 2x1, 2x2 processes
    python benchmarks/bench_scaling.py --batch 256 --steps 10 --repeats 5
    python benchmarks/bench_scaling.py --device gpu        # a GPU machine: 1..all local GPUs, one process
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import socket
import statistics
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def timed_blocks(function, calls: int, repeats: int) -> list[float]:
    """Wall seconds of each block of ``calls`` calls (each block ends when the device is done)."""
    import jax

    blocks = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            result = function()
        jax.block_until_ready(result)
        blocks.append(time.perf_counter() - start)
    return blocks


def all_reduce_seconds(mesh, like, repeats: int) -> float:
    """Median seconds of one all-reduce (psum over "data") of a pytree of float32 arrays shaped
    like ``like`` (one copy per device, as each device holds its gradient)."""
    import jax
    import numpy as np
    from jax.sharding import PartitionSpec

    from jaxdl.training import parallel

    devices, local = parallel.data_size(mesh), parallel.local_shards(mesh)
    gradients = jax.tree.map(lambda leaf: jax.make_array_from_process_local_data(
        parallel.batch_sharding(mesh), np.ones((local, *np.shape(leaf)), np.float32), (devices, *np.shape(leaf))),
        like)
    reduce = jax.jit(jax.shard_map(lambda g: jax.lax.psum(g, parallel.DATA_AXIS), mesh=mesh,
                                   in_specs=PartitionSpec(parallel.DATA_AXIS), out_specs=PartitionSpec()))
    jax.block_until_ready(reduce(gradients))
    return statistics.median(timed_blocks(lambda: reduce(gradients), 20, repeats)) / 20


def worker(args) -> None:
    """Runs one configuration in this process; process 0 prints its figures as JSON."""
    import jax

    if args.device == "cpu":
        jax.config.update("jax_num_cpu_devices", args.devices)
    from jaxdl import distributed

    config = distributed.cluster_config(devices=args.devices, num_processes=args.num_processes,
                                        process_id=args.process_id, coordinator=args.coordinator)
    mesh = distributed.start(config)
    import numpy as np

    import jaxdl
    import jaxdl.models
    from jaxdl.training import parallel

    model, optimizer = jaxdl.models.lenet(), jaxdl.Adam(5e-4)
    train_state = jaxdl.create_train_state(model, optimizer, jax.random.key(0), (args.batch, 1, 28, 28))
    step = jaxdl.make_train_step(model, jaxdl.cross_entropy, optimizer, mesh=mesh)
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(args.batch, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, args.batch).astype(np.int32)
    if mesh is not None:  # this process's rows, on the mesh once (as a prefetching pipeline would)
        rows = parallel.process_rows(mesh, args.batch)
        x, y = parallel.shard_batch(mesh, x[rows]), parallel.shard_batch(mesh, y[rows])
    else:
        x, y = jax.device_put(x), jax.device_put(y)
    holder = [train_state]

    def train():
        holder[0], metrics = step(holder[0], x, y)
        return metrics

    start = time.perf_counter()
    jax.block_until_ready(train())
    first = time.perf_counter() - start
    for _ in range(3):
        train()
    blocks = timed_blocks(train, args.steps, args.repeats)
    step_seconds = statistics.median(blocks) / args.steps
    parameters = jaxdl.count_params(train_state.params)
    reduce_seconds = flat_seconds = None
    if mesh is not None:
        reduce_seconds = all_reduce_seconds(mesh, train_state.params, args.repeats)
        flat_seconds = all_reduce_seconds(mesh, np.zeros(parameters, np.float32), args.repeats)
    if distributed.is_main_process():
        print(json.dumps({"samples_per_s": args.batch / step_seconds, "step_ms": 1e3 * step_seconds,
                          "all_reduce_ms": None if reduce_seconds is None else 1e3 * reduce_seconds,
                          "flat_all_reduce_ms": None if flat_seconds is None else 1e3 * flat_seconds,
                          "first_step_s": first, "parameters": parameters,
                          "devices": len(jax.devices()) if mesh is None else parallel.data_size(mesh),
                          "device_kind": jax.devices()[0].device_kind}), flush=True)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def measure(processes: int, devices: int, args) -> dict:
    """Runs one configuration in ``processes`` worker processes; returns process 0's figures."""
    coordinator = f"127.0.0.1:{free_port()}"
    environment = {name: value for name, value in os.environ.items() if not name.startswith("JAXDL_")}
    workers = [subprocess.Popen([sys.executable, __file__, "--worker", "--devices", str(devices),
                                 "--num-processes", str(processes), "--process-id", str(index),
                                 "--coordinator", coordinator, "--batch", str(args.batch), "--steps", str(args.steps),
                                 "--repeats", str(args.repeats), "--device", args.device],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment)
               for index in range(processes)]
    outputs = [worker.communicate(timeout=1800) for worker in workers]
    for worker, (out, err) in zip(workers, outputs):
        if worker.returncode != 0:
            raise SystemExit(f"worker failed ({processes} processes x {devices} devices):\n{out}\n{err[-3000:]}")
    return json.loads(outputs[0][0].strip().splitlines()[-1])


def configurations(args) -> list[tuple[str, int, int]]:
    if args.device == "gpu":
        import jax

        count = len(jax.devices())
        counts = [n for n in (1, 2, 4, 8) if n <= count] or [1]
        return [(f"{n} dev", 1, n) for n in counts]
    return [(f"{n} dev", 1, n) for n in args.devices_list] + [
        (f"{p} proc x {d} dev", p, d) for p, d in ((2, 1), (2, 2))]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=128, help="global batch size (default 128)")
    parser.add_argument("--steps", type=int, default=10, help="steps per timed block (default 10)")
    parser.add_argument("--repeats", type=int, default=5, help="timed blocks (default 5)")
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--devices-list", type=int, nargs="+", default=[1, 2, 4],
                        help="device counts of the one-process rows (default 1 2 4)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--devices", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--num-processes", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--process-id", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--coordinator", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args)
        return
    rows, baseline = [], None
    for name, processes, devices in configurations(args):
        figures = measure(processes, devices, args)
        baseline = baseline or figures["samples_per_s"]
        reduce_ms, step_ms = figures["all_reduce_ms"], figures["step_ms"]
        reduce_text = "-" if reduce_ms is None else f"{reduce_ms:.3f} ({figures['flat_all_reduce_ms']:.3f})"
        share_text = "-" if reduce_ms is None else f"{100 * reduce_ms / step_ms:.0f}%"
        rows.append(f"| {name} | {figures['devices']} | {figures['samples_per_s']:,.0f} | "
                    f"{figures['samples_per_s'] / baseline:.2f}x | {step_ms:.2f} | {reduce_text} | {share_text} | "
                    f"{figures['first_step_s']:.1f} |")
        print(rows[-1], file=sys.stderr, flush=True)
    parameters = figures["parameters"]
    print(f"LeNet ({parameters:,} parameters = {4 * parameters:,} bytes of float32 gradient per all-reduce), "
          f"global batch {args.batch}, {figures['device_kind']}"
          "; "
          f"load average {os.getloadavg()[0]:.1f}.\n")
    print("| configuration | devices | samples/s | vs 1 dev | step ms | all-reduce ms: params pytree (flat) | "
          "all-reduce / step | first step s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
