"""Subprocess side of test_data_parallel.py and test_multiprocess.py (forced device counts, several processes).

    python tests/parallel_worker.py mesh OUT_JSON                  # 4 host devices, one process
    python tests/parallel_worker.py train --process-id I --num-processes P --coordinator HOST:PORT --out DIR
                                    [--devices N] [--epochs E] [--die-at-epoch K] [--resume]
    python tests/parallel_worker.py reference --out DIR           # one process, one device

JAX's device count and `jax.distributed` are fixed when its backend starts, so each
configuration runs in a fresh process; results go to JSON/npz files the tests read. Float32
throughout (the test session's float64 does not reach these processes).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import pathlib
import signal
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


# ------------------------------------------------------------------------ the small problem

GLOBAL_BATCH, EXAMPLES, FEATURES, CLASSES = 16, 64, 8, 4


def small_model():
    import jaxdl

    return jaxdl.Serial(jaxdl.FullyConnected(16), jaxdl.BatchNormalization(), jaxdl.ReLU(), jaxdl.Dropout(0.25),
                        jaxdl.FullyConnected(CLASSES), jaxdl.SoftMax())


@functools.lru_cache(maxsize=1)
def small_optimizer():
    """One optimizer object for every run: `jaxdl.fit` reuses its compiled steps per optimizer object."""
    import jaxdl

    # SGD with momentum, not Adam: Adam divides by the gradient's running RMS, which turns the
    # float rounding of a gradient that is zero in exact arithmetic (a bias before batch norm)
    # into steps of the full learning rate, so one-device and mesh runs would differ by ~lr.
    return jaxdl.SgdWithMomentum(0.05, 0.9)


def small_data():
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.normal(size=(EXAMPLES, FEATURES)).astype(np.float32)
    return x, x[:, :CLASSES].argmax(axis=1).astype(np.int32)


class GlobalBatches:
    """Epoch-indexed global batches of the small problem (shuffled by seed and epoch)."""

    def __init__(self, x, y, shuffle=True):
        self.x, self.y, self.shuffle = x, y, shuffle

    @property
    def steps_per_epoch(self):
        return len(self.y) // GLOBAL_BATCH

    def epoch(self, epoch):
        import numpy as np

        order = np.random.default_rng([0, epoch]).permutation(len(self.y)) if self.shuffle else np.arange(len(self.y))
        for b in range(self.steps_per_epoch):
            index = order[b * GLOBAL_BATCH:(b + 1) * GLOBAL_BATCH]
            yield self.x[index], self.y[index]


def fit_small(train_state, output_dir, epochs, *, mesh=None, resume=False, callbacks=()):
    import jaxdl

    x, y = small_data()
    train, validation = GlobalBatches(x, y), GlobalBatches(x[:32], y[:32], shuffle=False)
    if mesh is not None:
        train, validation = jaxdl.process_batches(train, mesh), jaxdl.process_batches(validation, mesh)
    run = jaxdl.Run(output_dir, resume=resume)
    train_step = jaxdl.make_train_step(small_model(), jaxdl.cross_entropy, small_optimizer(), mesh=mesh)
    return jaxdl.fit(train_step, train_state, train, epochs=epochs, validation_data=validation, run=run,
                     callbacks=[*callbacks, *jaxdl.default_callbacks(run, log=lambda line: print(line, flush=True),
                                                                     plot=False)], log_every=2)


def small_state():
    import jaxdl

    return jaxdl.create_train_state(small_model(), small_optimizer(), 7, (GLOBAL_BATCH, FEATURES))


def host_tree(tree):
    import jax
    import numpy as np

    def host(leaf):
        if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            leaf = jax.random.key_data(leaf)
        return np.asarray(leaf)

    return jax.tree.map(host, tree)


def max_difference(a, b) -> float:
    import jax
    import numpy as np

    return max(float(np.max(np.abs(np.asarray(u, np.float64) - np.asarray(v, np.float64))))
               for u, v in zip(jax.tree.leaves(host_tree(a)), jax.tree.leaves(host_tree(b))))


def save_tree(path, tree):
    import jax
    import numpy as np

    leaves = jax.tree.leaves(host_tree(tree))
    np.savez(path, *leaves)


def load_leaves(path):
    import numpy as np

    with np.load(path) as stored:
        return [stored[f"arr_{i}"] for i in range(len(stored.files))]


# ------------------------------------------------------------------------ mode: mesh (4 devices)


def lenet_with_batch_norm_and_dropout():
    import jaxdl

    conv = lambda kernels: jaxdl.Conv(kernels, (5, 5), padding="same")
    return jaxdl.Serial(conv(6), jaxdl.BatchNormalization(), jaxdl.ReLU(), jaxdl.Pooling(2),
                        conv(16), jaxdl.ReLU(), jaxdl.Pooling(2), jaxdl.Flatten(),
                        jaxdl.FullyConnected(120), jaxdl.ReLU(), jaxdl.Dropout(0.5),
                        jaxdl.FullyConnected(84), jaxdl.ReLU(), jaxdl.FullyConnected(10), jaxdl.SoftMax())


def tiny_mnist():
    """Tiny MNIST-like splits with a learnable bright bar per class (tests/synthetic_digits.py)."""
    from synthetic_digits import tiny_mnist as splits

    return splits()


def command_line_on_four_devices(out: pathlib.Path) -> dict:
    """scripts/train_lenet.py --devices 4, as the first JAX use of this process (it sets the device count)."""
    import contextlib
    import importlib.util
    import io

    from jaxdl.datasets import mnist

    spec = importlib.util.spec_from_file_location("train_lenet", ROOT / "scripts" / "train_lenet.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    mnist.load_mnist = lambda *args, **kwargs: tiny_mnist()
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        status = script.main(["--devices", "4", "--epochs", "1", "--batch-size", "16", "--validation-size", "20",
                              "--output-dir", str(out / "cli"), "--no-progress"])
    return {"cli_status": status, "cli_printed": printed.getvalue(),
            "cli_outputs": sorted(path.name for path in (out / "cli").iterdir())}


def mesh_checks(out: pathlib.Path) -> None:
    results = command_line_on_four_devices(out)
    import jax
    import jax.numpy as jnp
    import numpy as np

    import jaxdl
    from jaxdl.training import parallel

    results["devices"] = len(jax.devices())
    mesh = jaxdl.data_mesh()

    # Three LeNet steps (batch norm, dropout) on the mesh vs one device, same global batches.
    model, optimizer = lenet_with_batch_norm_and_dropout(), jaxdl.SgdWithMomentum(0.01, 0.9)
    rng = np.random.default_rng(0)
    # Each device's quarter of a batch has its own brightness, so statistics per device would
    # differ clearly from the global batch's (per_device_variance_gap).
    brightness = np.repeat(np.arange(1, 5, dtype=np.float32), 4)[:, None, None, None]
    batches = [((rng.uniform(size=(16, 1, 28, 28)) * brightness).astype(np.float32),
                rng.integers(0, 10, 16).astype(np.int32)) for _ in range(3)]
    start = jaxdl.create_train_state(model, optimizer, 0, (16, 1, 28, 28))
    one_step = jaxdl.make_train_step(model, jaxdl.cross_entropy, optimizer)
    mesh_step = jaxdl.make_train_step(model, jaxdl.cross_entropy, optimizer, mesh=mesh)
    one, on_mesh, losses = start, start, []
    for x, y in batches:
        one, one_metrics = one_step(one, x, y)
        on_mesh, mesh_metrics = mesh_step(on_mesh, x, y)
        losses.append([float(one_metrics["loss"]), float(mesh_metrics["loss"])])
    results["lenet_params_difference"] = max_difference(one.params, on_mesh.params)
    results["lenet_batch_norm_state_difference"] = max_difference(one.state, on_mesh.state)
    results["lenet_losses"] = losses
    results["lenet_steps"] = int(on_mesh.step)
    results["params_replicated"] = all(leaf.sharding.is_fully_replicated and len(leaf.sharding.device_set) == 4
                                       for leaf in jax.tree.leaves(on_mesh.params))
    results["start_state_survives"] = not any(leaf.is_deleted() for leaf in jax.tree.leaves(start))
    # What per-device statistics would have been: the variance of the batch-norm input of the
    # first batch, per quarter of the batch, against the whole batch's.
    conv_out = jax.jit(lambda p, x: model.layers[0].apply(p["conv_0"], {}, x)[0])(start.params, batches[0][0])
    whole = np.var(np.asarray(conv_out), axis=(0, 2, 3))
    quarters = np.mean([np.var(np.asarray(part), axis=(0, 2, 3)) for part in np.split(np.asarray(conv_out), 4)],
                       axis=0)
    results["per_device_variance_gap"] = float(np.max(np.abs(whole - quarters)))

    # The donated state: a state already on the mesh is consumed by the step.
    before = parallel.keep(on_mesh)
    after, _ = mesh_step(before, *batches[0])
    results["donated_state_deleted"] = all(leaf.is_deleted() for leaf in jax.tree.leaves(before.params))
    results["compiled_with_donation"] = "tf.aliasing_output" in mesh_step.jitted.lower(
        after, *[parallel.shard_batch(mesh, a) for a in batches[0]]).as_text()

    # Conv's CPU weight gradient in blocks of 32 rows would cut across the batch's shards and
    # move activations between devices: the mesh step computes it over the whole batch.
    lenet = jaxdl.models.lenet()
    images, labels = np.zeros((64, 1, 28, 28), np.float32), np.zeros((64,), np.int32)
    lenet_state = parallel.replicate(mesh, jaxdl.create_train_state(lenet, optimizer, 0, images.shape))
    lenet_step = jaxdl.make_train_step(lenet, jaxdl.cross_entropy, optimizer, mesh=mesh)
    compiled = lenet_step.jitted.lower(lenet_state, parallel.shard_batch(mesh, images),
                                       parallel.shard_batch(mesh, labels)).compile().as_text()
    results["lenet_mesh_step_collective_permutes"] = compiled.count("collective-permute")

    # Dropout: one mask per example (not per device copy), the same as on one device.
    dropout = jaxdl.Dropout(0.5)
    ones = jnp.ones((8, 64), jnp.float32)
    key = jax.random.key(3)
    single = dropout.apply({}, {}, ones, key=key, train=True)[0]
    sharded = jax.jit(lambda x, k: dropout.apply({}, {}, x, key=k, train=True)[0],
                      in_shardings=(parallel.batch_sharding(mesh), parallel.replicated(mesh)),
                      out_shardings=parallel.batch_sharding(mesh))(parallel.shard_batch(mesh, ones), key)
    masks = np.asarray(sharded) != 0
    results["dropout_equals_one_device"] = bool(np.array_equal(np.asarray(single), np.asarray(sharded)))
    results["dropout_rows_differ_across_devices"] = bool(not np.array_equal(masks[0], masks[2])
                                                         and not np.array_equal(masks[0], masks[4]))

    # Evaluation on the mesh.
    eval_one, eval_mesh = jaxdl.make_eval_step(model), jaxdl.make_eval_step(model, mesh=mesh)
    results["eval_outputs_difference"] = float(np.max(np.abs(
        np.asarray(eval_one(one.params, one.state, batches[0][0])[0])
        - np.asarray(eval_mesh(on_mesh.params, on_mesh.state, batches[0][0])[0]))))
    results["evaluate_one"] = jaxdl.evaluate(eval_one, one.params, one.state, batches, jaxdl.cross_entropy)
    results["evaluate_mesh"] = jaxdl.evaluate(eval_mesh, on_mesh.params, on_mesh.state, batches,
                                              jaxdl.cross_entropy)
    predict = jaxdl.make_predict(model, mesh=mesh)
    results["predict_sharding_is_batch"] = predict(on_mesh.params, on_mesh.state, batches[0][0]).sharding \
        .is_equivalent_to(parallel.batch_sharding(mesh), 2)

    # A batch the devices cannot split.
    try:
        mesh_step(jaxdl.create_train_state(model, optimizer, 0, (16, 1, 28, 28)), batches[0][0][:10],
                  batches[0][1][:10])
        results["indivisible_error"] = None
    except ValueError as error:
        results["indivisible_error"] = str(error)

    # fit and NeuralNetwork on the mesh equal their one-device runs (small model, checkpoints, resume).
    after_two = ParamsAfterEpoch(2)
    plain = fit_small(small_state(), out / "plain", 3, callbacks=[after_two])
    parallel_run = fit_small(small_state(), out / "mesh", 2, mesh=mesh)
    results["fit_params_difference"] = max_difference(after_two.params, parallel_run.train_state.params)
    results["fit_history_difference"] = max(abs(a[key] - b[key]) for a, b in zip(plain.history, parallel_run.history)
                                            for key in ("train_loss", "validation_loss", "validation_accuracy"))
    resumed = fit_small(small_state(), out / "mesh", 3, mesh=mesh, resume=True)
    results["resumed_on_mesh_difference"] = max_difference(resumed.train_state.params, plain.train_state.params)
    x, y = small_data()
    net = jaxdl.NeuralNetwork(small_model(), jaxdl.cross_entropy, small_optimizer(), input_shape=(16, FEATURES),
                              seed=7, mesh=mesh)
    losses = net.train([(x[:16], y[:16]), (x[16:32], y[16:32])], epochs=2)
    reference = jaxdl.NeuralNetwork(small_model(), jaxdl.cross_entropy, small_optimizer(),
                                    input_shape=(16, FEATURES), seed=7)
    reference_losses = reference.train([(x[:16], y[:16]), (x[16:32], y[16:32])], epochs=2)
    results["network_loss_difference"] = float(np.max(np.abs(np.array(losses) - np.array(reference_losses))))
    results["network_test_difference"] = float(np.max(np.abs(np.asarray(net.test(x[:8]))
                                                             - np.asarray(reference.test(x[:8])))))
    out.joinpath("mesh.json").write_text(json.dumps(results))


def ParamsAfterEpoch(epoch_wanted):
    """A callback keeping a host copy of the params at the end of that epoch (1-based)."""
    from jaxdl.training.callbacks import Callback

    class Keeper(Callback):
        params = None

        def on_epoch_end(self, row, train_state):
            if row["epoch"] == epoch_wanted:
                self.params = host_tree(train_state.params)

    return Keeper()


# ------------------------------------------------------------------------ mode: train (one of P processes)


def die_at_epoch(epoch_to_die):
    """A callback that kills this process (SIGKILL: no cleanup, like a crash) when that epoch starts."""
    from jaxdl.training.callbacks import Callback

    class DieAtEpoch(Callback):
        def on_epoch_start(self, epoch, steps):
            if epoch == epoch_to_die:
                print(f"process dies at epoch {epoch + 1}", flush=True)
                os.kill(os.getpid(), signal.SIGKILL)

    return DieAtEpoch()


def train_process(args) -> None:
    from jaxdl import distributed

    config = distributed.cluster_config(devices=args.devices, num_processes=args.num_processes,
                                        process_id=args.process_id, coordinator=args.coordinator,
                                        initialization_timeout=60, heartbeat_timeout=args.heartbeat_timeout,
                                        shutdown_timeout=30)
    mesh = distributed.start(config, log=lambda line: print(line, flush=True))
    callbacks = []
    if args.die_at_epoch is not None and args.process_id == args.num_processes - 1:
        callbacks = [die_at_epoch(args.die_at_epoch)]
    result = fit_small(small_state(), args.out / "run", args.epochs, mesh=mesh, resume=args.resume,
                       callbacks=callbacks)
    save_tree(args.out / f"params_{args.process_id}.npz", result.train_state.params)
    print(f"DONE status={result.status} step={int(result.train_state.step)} epochs={len(result.history)}", flush=True)


# ------------------------------------------------------------------------ mode: reference (one process)


def reference(out: pathlib.Path) -> None:
    import jax
    import numpy as np

    import jaxdl

    results = {}
    after_two = ParamsAfterEpoch(2)
    unbroken = fit_small(small_state(), out / "reference", 3, callbacks=[after_two])
    own = jax.tree.leaves(after_two.params)
    from_processes = load_leaves(out / "params_0.npz")
    results["params_difference"] = max(float(np.max(np.abs(a - b))) for a, b in zip(own, from_processes))
    results["processes_agree"] = all(np.array_equal(a, b) for a, b in zip(from_processes,
                                                                          load_leaves(out / "params_1.npz")))
    last = jaxdl.checkpoint.find_step_dir(out / "run" / "checkpoints", "last")
    restored, manifest = jaxdl.checkpoint.load_checkpoint(last, small_state())
    results["restored_difference"] = max_difference(restored.params, after_two.params)
    results["restored_step"] = int(restored.step)
    continued = fit_small(small_state(), out / "run", 3, resume=True)  # the 2-process run, now on 1 device
    results["continued_difference"] = max_difference(continued.train_state.params, unbroken.train_state.params)
    results["continued_epochs"] = len(continued.history)
    out.joinpath("reference.json").write_text(json.dumps(results))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=("mesh", "train", "reference"))
    parser.add_argument("--out", type=pathlib.Path, required=True)
    parser.add_argument("--process-id", type=int)
    parser.add_argument("--num-processes", type=int)
    parser.add_argument("--coordinator")
    parser.add_argument("--devices", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--die-at-epoch", type=int, default=None)
    parser.add_argument("--heartbeat-timeout", type=int, default=10)
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args(argv)
    if args.mode == "mesh":
        mesh_checks(args.out)
    elif args.mode == "train":
        train_process(args)
    else:
        reference(args.out)


if __name__ == "__main__":
    main()
