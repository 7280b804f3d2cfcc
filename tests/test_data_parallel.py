"""Data parallelism on a mesh (`jaxdl.training.parallel`) and the run settings (`jaxdl.distributed`).

The mesh checks need 4 host devices, fixed when JAX starts its backend, so they run once in a
subprocess (tests/parallel_worker.py mesh: 4 forced CPU devices through
``scripts/train_lenet.py --devices 4``, which is its first JAX use) whose results the tests
below read. Tolerances: the mesh and one device sum the same numbers in another order, so
float32 results agree to ~1e-7 relative, not bit for bit.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

import jaxdl
from jaxdl import distributed
from jaxdl.training import parallel

WORKER = pathlib.Path(__file__).with_name("parallel_worker.py")


def worker_environment() -> dict:
    """This environment without the JAXDL_* run settings (the workers choose their own)."""
    return {name: value for name, value in os.environ.items() if not name.startswith("JAXDL_")}


@pytest.fixture(scope="module")
def four_devices(tmp_path_factory):
    out = tmp_path_factory.mktemp("mesh")
    done = subprocess.run([sys.executable, str(WORKER), "mesh", "--out", str(out)], env=worker_environment(),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads((out / "mesh.json").read_text())


# ---------------------------------------------------------------- 4 forced host devices (subprocess)


def test_the_command_line_trains_lenet_on_four_host_devices(four_devices):
    assert four_devices["devices"] == 4  # --devices 4 set the host device count before JAX started
    assert four_devices["cli_status"] == 0
    assert "4 cpu devices in 1 process (data parallel)" in four_devices["cli_printed"]
    assert "Test accuracy of the best-validation checkpoint" in four_devices["cli_printed"]
    assert four_devices["cli_outputs"] == ["checkpoints", "metrics.csv", "metrics.png"]


def test_three_lenet_steps_with_batch_norm_and_dropout_equal_one_device(four_devices):
    assert four_devices["lenet_steps"] == 3
    assert four_devices["lenet_params_difference"] < 1e-5
    for one, mesh in four_devices["lenet_losses"]:
        assert mesh == pytest.approx(one, rel=1e-6)
    assert four_devices["params_replicated"]


def test_batch_statistics_are_over_the_global_batch(four_devices):
    # Per-device statistics would differ from the global batch's by this much (each device's
    # quarter of the batch has its own brightness); the running statistics agree 1000x closer.
    assert four_devices["per_device_variance_gap"] > 1e-2
    assert four_devices["lenet_batch_norm_state_difference"] < 1e-5


def test_dropout_masks_are_per_example_not_per_device(four_devices):
    assert four_devices["dropout_equals_one_device"]
    assert four_devices["dropout_rows_differ_across_devices"]


def test_the_mesh_step_moves_no_activations_between_devices(four_devices):
    assert four_devices["lenet_mesh_step_collective_permutes"] == 0


def test_the_step_donates_its_state_and_spares_a_state_not_yet_on_the_mesh(four_devices):
    assert four_devices["compiled_with_donation"]
    assert four_devices["donated_state_deleted"]
    assert four_devices["start_state_survives"]


def test_evaluation_on_the_mesh_equals_one_device(four_devices):
    assert four_devices["eval_outputs_difference"] < 1e-5
    one, mesh = four_devices["evaluate_one"], four_devices["evaluate_mesh"]
    assert mesh["count"] == one["count"] == 48
    assert mesh["accuracy"] == one["accuracy"]
    assert mesh["loss"] == pytest.approx(one["loss"], rel=1e-6)
    assert four_devices["predict_sharding_is_batch"]


def test_a_batch_the_devices_cannot_split_is_a_clear_error(four_devices):
    assert four_devices["indivisible_error"] == (
        "make_train_step: x has a batch of 10 examples, which the mesh's 4 devices on axis 'data' cannot split "
        "evenly; expected a multiple of 4 (e.g. 8 or 12).")


def test_fit_and_neural_network_on_the_mesh_equal_one_device(four_devices):
    assert four_devices["fit_params_difference"] < 1e-5
    assert four_devices["fit_history_difference"] < 1e-5
    assert four_devices["resumed_on_mesh_difference"] < 1e-5
    assert four_devices["network_loss_difference"] < 1e-4
    assert four_devices["network_test_difference"] < 1e-5


# ---------------------------------------------------------------- in this process (one device)


def test_without_a_mesh_the_step_is_the_plain_jitted_step():
    model = jaxdl.Serial(jaxdl.Flatten(), jaxdl.FullyConnected(3), jaxdl.SoftMax())
    step = jaxdl.make_train_step(model, jaxdl.cross_entropy, jaxdl.Sgd(0.1))
    assert step.mesh is None and not hasattr(step, "jitted") and hasattr(step, "lower")  # jax.jit(step)
    text = step.lower(jaxdl.create_train_state(model, jaxdl.Sgd(0.1), 0, (4, 2)), np.ones((4, 2), np.float32),
                      np.zeros(4, np.int32)).as_text()
    assert "tf.aliasing_output" not in text and '"data"' not in text  # no donation, no mesh axis


def test_a_one_device_mesh_trains_like_no_mesh():
    model = jaxdl.Serial(jaxdl.FullyConnected(3), jaxdl.SoftMax())
    optimizer = jaxdl.Sgd(0.1)
    state = jaxdl.create_train_state(model, optimizer, 0, (4, 2), dtype=np.float32)
    x, y = np.ones((4, 2), np.float32), np.array([0, 1, 2, 0], np.int32)
    plain, _ = jaxdl.make_train_step(model, jaxdl.cross_entropy, optimizer)(state, x, y)
    meshed, _ = jaxdl.make_train_step(model, jaxdl.cross_entropy, optimizer, mesh=jaxdl.data_mesh())(state, x, y)
    for a, b in zip(jax.tree.leaves(plain.params), jax.tree.leaves(meshed.params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6)


def test_fit_on_a_mesh_leaves_the_callers_state_usable():
    """The mesh step donates its state: fit trains from a copy, so a state already on the mesh
    (a previous fit's result) can be passed again and read afterwards."""
    model = jaxdl.Serial(jaxdl.FullyConnected(3), jaxdl.SoftMax())
    optimizer, mesh = jaxdl.Sgd(0.1), jaxdl.data_mesh()
    x, y = np.ones((8, 2), np.float32), np.array([0, 1, 2, 0, 1, 2, 0, 1], np.int32)
    start = jaxdl.create_train_state(model, optimizer, 0, (4, 2), dtype=np.float32)
    step = jaxdl.make_train_step(model, jaxdl.cross_entropy, optimizer, mesh=mesh)
    first = jaxdl.fit(step, start, [(x[:4], y[:4]), (x[4:], y[4:])], epochs=1, callbacks=[]).train_state
    again = [jaxdl.fit(step, first, [(x[:4], y[:4]), (x[4:], y[4:])], epochs=1, callbacks=[]).train_state
             for _ in range(2)]
    assert not any(leaf.is_deleted() for leaf in jax.tree.leaves(first.params))
    for a, b in zip(jax.tree.leaves(again[0].params), jax.tree.leaves(again[1].params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_mesh_arguments_are_checked():
    model = jaxdl.Serial(jaxdl.FullyConnected(3))
    with pytest.raises(ValueError, match="expected a mesh with an axis named 'data'"):
        jaxdl.make_train_step(model, jaxdl.cross_entropy, jaxdl.Sgd(0.1),
                              mesh=jax.sharding.Mesh(np.array(jax.devices()), ("batch",)))
    with pytest.raises(TypeError, match="mesh must be a jax.sharding.Mesh"):
        jaxdl.make_eval_step(model, mesh="data")
    with pytest.raises(ValueError, match="a mesh needs jit=True"):
        jaxdl.make_predict(model, jit=False, mesh=jaxdl.data_mesh())
    with pytest.raises(ValueError, match="expected at least one device"):
        jaxdl.data_mesh([])


def test_process_rows_in_one_process_are_the_whole_batch():
    mesh = jaxdl.data_mesh()
    np.testing.assert_array_equal(jaxdl.process_rows(mesh, 6), np.arange(6))
    assert jaxdl.process_batches([(1, 2)], mesh) == [(1, 2)]  # nothing to cut in one process
    assert parallel.global_rows(mesh, 6) == 6 and not parallel.spans_processes(mesh)
    with pytest.raises(ValueError, match="positive multiple"):
        jaxdl.process_rows(mesh, 0)


def test_cluster_settings_come_from_options_then_environment():
    environ = {"JAXDL_NUM_PROCESSES": "2", "JAXDL_PROCESS_ID": "1", "JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234",
               "JAXDL_DEVICES": "4", "JAXDL_HEARTBEAT_TIMEOUT": "15"}
    config = distributed.cluster_config(environ=environ)
    assert (config.num_processes, config.process_id, config.coordinator, config.devices) == (2, 1, "10.0.0.1:1234", 4)
    assert config.heartbeat_timeout == 15 and config.multi_process
    config = distributed.cluster_config(process_id=0, coordinator="127.0.0.1:9", environ=environ)
    assert (config.process_id, config.coordinator) == (0, "127.0.0.1:9")
    assert distributed.cluster_config(environ={}) == distributed.ClusterConfig()


@pytest.mark.parametrize("arguments, message", [
    (dict(num_processes=2, coordinator="h:1"), "needs this process's id"),
    (dict(num_processes=2, process_id=0), "needs the coordinator address"),
    (dict(num_processes=2, process_id=2, coordinator="h:1"), r"process id must be in \[0, 2\)"),
    (dict(coordinator="no-port"), "must be HOST:PORT"),
    (dict(devices=0), "devices must be an int >= 1, got 0"),
    (dict(environ={"JAXDL_NUM_PROCESSES": "two"}), "JAXDL_NUM_PROCESSES must be an int >= 1, got 'two'"),
])
def test_bad_cluster_settings_are_clear(arguments, message):
    arguments.setdefault("environ", {})
    with pytest.raises(distributed.DistributedError, match=message):
        distributed.cluster_config(**arguments)


@pytest.mark.parametrize("options, message", [
    (["--num-processes", "2", "--coordinator", "127.0.0.1:1"], "needs this process's id"),
    (["--devices", "0"], "devices must be an int >= 1, got 0"),
])
def test_bad_process_options_fail_before_joining(options, message, tmp_path, capsys):
    script = WORKER.parents[1] / "scripts" / "train_lenet.py"
    spec = importlib.util.spec_from_file_location("train_lenet_script", script)
    train_script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train_script)
    assert train_script.main([*options, "--output-dir", str(tmp_path / "run")]) == 2
    assert message in capsys.readouterr().err


def test_one_process_on_one_device_needs_no_mesh():
    assert distributed.start(distributed.ClusterConfig()) is None
    assert distributed.is_main_process() and not distributed.is_multi_process()
    distributed.barrier("nothing to wait for")
    with distributed.main_process_writes("alone") as writes:
        assert writes
    assert distributed.exit_status(2) == 2


def test_the_device_count_cannot_change_after_jax_started():
    jax.devices()
    with pytest.raises(distributed.DistributedError, match="already started its backend"):
        distributed.set_cpu_device_count(len(jax.devices("cpu")) + 1)
    distributed.set_cpu_device_count(len(jax.devices("cpu")))  # what it is already: fine
