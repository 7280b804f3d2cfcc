"""The ResNet recipe (`jaxdl.recipes.resnet`): its model, and scripts/train_resnet.py on tiny data.

The script runs as a user runs it (a subprocess of a plain interpreter, `plain_python`) on the
tiny MNIST-format set that tests/test_scripts.py prepares under the canonical files' key
(`seed_tiny_mnist`); the bad options run in this process through the script's ``main``. The
model's output and gradients are checked against the same network written in PyTorch.
"""

from __future__ import annotations

import csv
import importlib.util

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from plain_python import ROOT, described, run_plain
from test_scripts import seed_tiny_mnist

import jaxdl
from jaxdl import checkpoint, models
from jaxdl.recipes.resnet import ResNetConfig, resnet_mnist, train_resnet

SCRIPT = ROOT / "scripts" / "train_resnet.py"
#: The tiny set (400 training images) in batches of 50, 100 held out for validation.
SMALL = ("--batch-size", "50", "--validation-size", "100", "--no-progress")


def load_script():
    spec = importlib.util.spec_from_file_location("train_resnet_script_under_test", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------------ the model


def test_the_default_model_and_its_registry_entry():
    model = models.build_model(models.model_config("resnet_mnist"))
    params, state = model.init(jax.random.key(0), (2, 1, 28, 28))
    assert jaxdl.count_params(params) == 78_090
    assert jaxdl.output_shape(model, (3, 1, 28, 28)) == (3, 10)
    # A projection shortcut exactly where the channels and the stride change (stages 2 and 3).
    blocks = [layer.layers[0] for layer in model.layers if isinstance(layer, jaxdl.Serial)]
    assert [block.projection is not None for block in blocks] == [False, True, True]
    # BatchNormalization statistics are state; the regularizer sees the kernels only.
    mask = jax.tree_util.tree_leaves_with_path(jaxdl.regularized_mask(model, params))
    regularized = {jax.tree_util.keystr(path).split("'")[-2] for path, flag in mask if flag}
    assert regularized == {"weights"}
    assert any("mean" in jax.tree_util.keystr(path) for path, _ in jax.tree_util.tree_leaves_with_path(state))


def test_a_json_config_builds_other_widths_and_depths():
    model = models.build_model({"name": "resnet_mnist", "channels": [4, 8], "blocks": 2, "num_classes": 3})
    assert jaxdl.output_shape(model, (2, 1, 28, 28)) == (2, 3)
    assert sum(isinstance(layer, jaxdl.Serial) for layer in model.layers) == 4


@pytest.mark.parametrize("kwargs, error, message", [
    ({"num_classes": 1}, ValueError, "resnet_mnist: num_classes must be an int >= 2, got 1"),
    ({"num_classes": 2.0}, TypeError, "resnet_mnist: num_classes must be a positive int, got 2.0"),
    ({"channels": ()}, ValueError, "resnet_mnist: channels must be a non-empty sequence of ints"),
    ({"channels": 16}, TypeError, "resnet_mnist: channels must be a non-empty sequence of ints (one per stage), got 16"),
    ({"channels": [16, 0]}, ValueError, "resnet_mnist: each entry of channels must be a positive int, got 0"),
    ({"blocks": 0}, ValueError, "resnet_mnist: blocks must be a positive int, got 0"),
])
def test_bad_model_arguments_are_named(kwargs, error, message):
    with pytest.raises(error) as caught:
        resnet_mnist(**kwargs)
    assert message in str(caught.value)


def test_train_resnet_takes_only_its_config(tmp_path):
    with pytest.raises(TypeError, match="train_resnet: config must be a ResNetConfig, got LeNetConfig"):
        train_resnet(jaxdl.recipes.lenet.LeNetConfig(output_dir=str(tmp_path)))


class TorchResNet(torch.nn.Module):
    """`resnet_mnist(channels=(3, 4), blocks=1)` in PyTorch, from the jaxdl params."""

    def __init__(self, params):
        super().__init__()
        self.params = params

    @staticmethod
    def conv(x, p, stride=1):
        weight = torch.tensor(np.asarray(p["weights"]))
        size = weight.shape[-1]
        if stride == 1:
            return torch.nn.functional.conv2d(x, weight, torch.tensor(np.asarray(p["bias"])), padding="same")
        # "same" at stride 2: (k-1)//2 zeros before and k//2 after, then the stride (jaxdl.Conv, PyTorch's rule).
        x = torch.nn.functional.pad(x, ((size - 1) // 2, size // 2, (size - 1) // 2, size // 2))
        return torch.nn.functional.conv2d(x, weight, torch.tensor(np.asarray(p["bias"])), stride=stride)

    @staticmethod
    def norm(x, p):
        return torch.nn.functional.batch_norm(x, None, None, torch.tensor(np.asarray(p["gamma"])),
                                              torch.tensor(np.asarray(p["beta"])), training=True, eps=1e-5)

    def block(self, x, p, stride):
        body = p["residual_0"]["block"]
        y = torch.relu(self.norm(self.conv(x, body["conv_0"], stride), body["batch_normalization_0"]))
        y = self.norm(self.conv(y, body["conv_1"]), body["batch_normalization_1"])
        skip = x
        if "projection" in p["residual_0"]:
            projection = p["residual_0"]["projection"]
            skip = self.norm(self.conv(x, projection["conv_0"], stride), projection["batch_normalization_0"])
        return torch.relu(y + skip)

    def forward(self, x):
        p = self.params
        x = torch.relu(self.norm(self.conv(x, p["conv_0"], 2), p["batch_normalization_0"]))
        x = self.block(x, p["serial_0"], 1)
        x = self.block(x, p["serial_1"], 2)
        x = x.mean(dim=(2, 3))
        weights = p["fully_connected_0"]
        x = x @ torch.tensor(np.asarray(weights["weights"])) + torch.tensor(np.asarray(weights["bias"]))
        return torch.softmax(x, dim=1)


def test_the_model_equals_pytorch_in_training_mode_with_its_gradient():
    """Outputs and the input gradient of the training-mode forward pass, float64, against PyTorch."""
    model = resnet_mnist(channels=(3, 4), blocks=1)
    x = np.random.default_rng(0).normal(size=(4, 1, 12, 12))  # any size: the pooling is global
    params, state = model.init(jax.random.key(1), x.shape, jnp.float64)
    assert sorted(params["serial_0"]["residual_0"]["block"]) == [
        "batch_normalization_0", "batch_normalization_1", "conv_0", "conv_1"]

    def loss(inputs):
        out, _ = model.apply(params, state, inputs, train=True)
        return jnp.sum(out[:, 0] * jnp.arange(1.0, 5.0)), out

    (_, out), grad = jax.value_and_grad(loss, has_aux=True)(jnp.asarray(x))
    reference_net = TorchResNet(jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), params))
    torch_x = torch.tensor(x, requires_grad=True)
    torch_out = reference_net(torch_x)
    (torch_out[:, 0] * torch.arange(1.0, 5.0, dtype=torch.float64)).sum().backward()
    np.testing.assert_allclose(out, torch_out.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(grad, torch_x.grad.numpy(), rtol=1e-8, atol=1e-12)


# ------------------------------------------------------------------ the script, as a user runs it


@pytest.fixture(scope="module")
def user_dir(tmp_path_factory):
    """(a working directory, its JAXDL_CACHE_DIR holding the tiny MNIST)."""
    root = tmp_path_factory.mktemp("resnet_user")
    cache = root / "jaxdl_cache"
    seed_tiny_mnist(cache / "tensorflow_datasets", root / "tiny_mnist_files")
    (root / "work").mkdir()
    return root / "work", cache


def test_the_script_trains_reports_test_once_and_resumes(user_dir):
    work, cache = user_dir
    result = run_plain([SCRIPT, "--epochs", "2", *SMALL], cwd=work, cache_dir=cache, timeout=300)
    assert result.returncode == 0, described(result)
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("ResNet (78,090 parameters) on 300 training and 100 validation images"), described(result)
    assert "Done: 2 epochs" in result.stdout
    assert lines[-2].startswith("Outputs: runs/resnet/metrics.csv, metrics.png; checkpoints: last "), described(result)
    assert "runs/resnet/checkpoints/step_" in lines[-2], described(result)
    assert lines[-1].startswith("Test accuracy of the best-validation checkpoint (epoch "), described(result)
    assert sum("Test accuracy" in line for line in lines) == 1
    run = work / "runs" / "resnet"
    with open(run / "metrics.csv") as file:
        rows = list(csv.DictReader(file))
    assert [row["epoch"] for row in rows] == ["1", "2"]
    assert not any("test" in column for column in rows[0])
    manifest = checkpoint.read_manifest(checkpoint.find_step_dir(run / "checkpoints", "best"))
    assert manifest["model_config"] == {"name": "resnet_mnist"}
    assert manifest["metadata"]["config"]["batch_size"] == 50
    assert manifest["metadata"]["config"]["learning_rate"] == ResNetConfig.learning_rate

    again = run_plain([SCRIPT, *SMALL], cwd=work, cache_dir=cache, timeout=300)
    assert again.returncode == 2, described(again)
    assert "train_resnet.py: error:" in again.stderr and "resume" in again.stderr, described(again)

    resumed = run_plain([SCRIPT, "--resume", "--epochs", "3", "--no-progress"], cwd=work, cache_dir=cache,
                        timeout=300)
    assert resumed.returncode == 2, described(resumed)
    assert "epochs: run has 2, now 3" in resumed.stderr, described(resumed)


# ------------------------------------------------------------------ bad options


@pytest.fixture(scope="module")
def script():
    return load_script()


@pytest.mark.parametrize("argv, message", [
    (["--epochs", "0"], "argument --epochs: expected an integer >= 1, got '0'"),
    (["--learning-rate", "nan"], "argument --learning-rate: expected a finite number > 0, got 'nan'"),
    (["--l2", "-1"], "argument --l2: expected a finite number >= 0, got '-1'"),
    (["--seed", "-1"], "argument --seed: expected a seed in [0, 4294967295], got '-1'"),
    (["--output-dir", ""], "argument --output-dir: expected a path, got ''"),
    (["--warmup-epochs", "9"], "train_resnet.py: error: warmup_epochs must be in [0, epochs), got 9.0"),
    (["--shift", "14"], "train_resnet.py: error: shift must be an int in [0, 14), got 14"),
    (["--batch-size", "100000"], "batch_size 100,000 is larger than the 55,000 training images"),
    (["--resume", "--overwrite"], "train_resnet.py: error: resume continues the run in output_dir and overwrite"),
])
def test_bad_options_are_refused_clearly(argv, message, script, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    try:
        status = script.main(argv)
    except SystemExit as exit:  # argparse
        status = exit.code
    captured = capsys.readouterr()
    assert status == 2, captured
    assert message in captured.err, captured.err
    assert "Traceback" not in captured.err
    assert not (tmp_path / "runs").exists()


def test_a_data_dir_without_mnist_is_named(script, tmp_path, capsys):
    status = script.main(["--data-dir", str(tmp_path), "--output-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert status == 2
    assert err.startswith("train_resnet.py: error: ") and str(tmp_path) in err
    assert "Point --data-dir at a directory with the four canonical files" in err
