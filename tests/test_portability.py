"""The compiled programs lower for GPU and TPU, and the CPU-only fast paths stay on CPU.

`jax.export` lowers a function for platforms this machine does not have. The LeNet train
step, its eval step and each recurrent layer's forward + backward must lower for cpu, cuda
and tpu together (one module that picks its branch at run time), and, lowered for one
platform at a time, show the CPU fast paths only in the CPU module:

* `fast_conv`: LeNet's first layer (one input channel) is shifted slices on CPU, so its
  forward pass has no convolution; the second layer's 16 kernels are padded to 32; the weight
  gradients are summed over blocks of 32 batch rows (2 convolutions per layer at batch 64).
* `tiled_max_pool`: the forward pass records each window's arg-max as an int8, on CPU only.
"""

import re

import jax
import jax.numpy as jnp
import pytest

import jaxdl

PLATFORMS = ("cpu", "cuda", "tpu")
BATCH = 64


@pytest.fixture(scope="module")
def lenet_step():
    model = jaxdl.models.lenet()
    optimizer = jaxdl.Adam(1e-3)
    train_state = jaxdl.create_train_state(model, optimizer, 0, (BATCH, 1, 28, 28))
    step = jaxdl.make_train_step(model, jaxdl.cross_entropy, optimizer)
    args = (train_state, jnp.zeros((BATCH, 1, 28, 28), jnp.float32), jnp.zeros((BATCH,), jnp.int32))
    return model, train_state, step, args


def _module(fn, args, platforms) -> str:
    exported = jax.export.export(fn, platforms=platforms)(*args)
    assert exported.platforms == tuple(platforms)
    return exported.mlir_module()


def _convolutions(module: str) -> list[str]:
    return re.findall(r"stablehlo\.convolution.*", module)


def test_lenet_steps_lower_for_every_platform_at_once(lenet_step):
    model, train_state, step, args = lenet_step
    assert "stablehlo.case" in _module(step, args, PLATFORMS)  # the platform switch
    eval_step = jaxdl.make_eval_step(model)
    _module(eval_step, (train_state.params, train_state.state, args[1]), PLATFORMS)


@pytest.mark.parametrize("platform", PLATFORMS)
def test_cpu_fast_paths_appear_only_in_the_cpu_lowering(lenet_step, platform):
    *_, step, args = lenet_step
    module = _module(step, args, (platform,))
    convolutions = _convolutions(module)
    padded = [c for c in convolutions if f"tensor<{BATCH}x32x" in c]
    positions = "xi8>" in module  # the pooling windows' arg-max positions
    if platform == "cpu":
        # conv2 forward (padded), conv2 input gradient, 2 + 2 block-wise weight gradients
        assert len(convolutions) == 6, convolutions
        assert padded and positions
    else:
        # conv1 and conv2 forward, conv2 input gradient, 2 whole-batch weight gradients
        assert len(convolutions) == 5, convolutions
        assert not padded and not positions


@pytest.mark.parametrize("layer_type", [jaxdl.RNN, jaxdl.LSTM, jaxdl.GRU], ids=["rnn", "lstm", "gru"])
def test_recurrent_forward_and_backward_lower_for_every_platform(layer_type):
    layer = layer_type(8)
    params, state = layer.init(jax.random.key(0), (4, 5, 3))

    def loss_and_grads(params, x):
        return jax.value_and_grad(lambda p, x: jnp.sum(layer.apply(p, state, x)[0] ** 2), argnums=(0, 1))(params, x)

    module = _module(jax.jit(loss_and_grads), (params, jnp.ones((4, 5, 3), jnp.float32)), PLATFORMS)
    assert module.count("stablehlo.while") >= 2  # the forward scan and the reverse scan
