"""A small residual CNN on MNIST (issue 22's second real model), on the LeNet recipe's machinery.

The model (`resnet_mnist`, registered in `jaxdl.models` as ``"resnet_mnist"``) is built from
jaxdl parts alone: `jaxdl.Residual` blocks of `jaxdl.Conv`, `jaxdl.BatchNormalization` and
`jaxdl.ReLU`, a projection shortcut (1x1 `Conv` + BatchNormalization) where the channels or
the stride change, `jaxdl.GlobalAveragePooling` and a `jaxdl.FullyConnected` classifier.

Everything else is `jaxdl.recipes.lenet`'s: MNIST loading and the validation split, random
translations, Adam with decoupled L2 and the warm-up + cosine schedule, `jaxdl.fit` with
validation every epoch, checkpoints (``best`` by validation accuracy), resume, and ONE test
evaluation of the best checkpoint at the end. `ResNetConfig` is a `LeNetConfig` with this
model and its own defaults, chosen on validation accuracy (benchmarks/RESULTS_models.md).

Example:
    >>> result = train_resnet(ResNetConfig(output_dir="runs/resnet"))
    >>> result.test["accuracy"]
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from jaxdl.combinators import Residual
from jaxdl.core import Layer, Serial
from jaxdl.initializers import Constant, He
from jaxdl.layers import BatchNormalization, Conv, FullyConnected, GlobalAveragePooling, ReLU, SoftMax
from jaxdl.models import register_model
from jaxdl.recipes.lenet import LeNetConfig, LeNetResult, train_lenet
from jaxdl.validation import positive_int

#: The default stage widths of `resnet_mnist` (output channels of each stage).
CHANNELS = (16, 32, 64)


def _conv(channels: int, size: int, stride: int = 1) -> Conv:
    # The CPU fast paths as the library chooses them from the shapes (`jaxdl.kernels.conv.cpu_path`:
    # the stem's one input channel at stride 1 only; the step equals plain lax.conv's speed,
    # benchmarks/RESULTS_models.md, 2026-12-07).
    return Conv(channels, (size, size), stride=stride, padding="same", weights_initializer=He(),
                bias_initializer=Constant(0.0))


def residual_block(in_channels: int, channels: int, stride: int = 1) -> Serial:
    """ReLU(BN(conv3x3(ReLU(BN(conv3x3(x))))) + shortcut(x)), the basic block of He et al. (2016).

    Args:
        in_channels: the input's channels.
        channels: the output's channels.
        stride: the first convolution's stride (2 halves the map, "same" padding: ceil(y / 2)).

    Returns:
        ``Serial(Residual(block, projection), ReLU())``; the projection (1x1 `Conv` with the
        stride, then BatchNormalization) is there only when the channels or the stride change.
    """
    block = Serial(_conv(channels, 3, stride), BatchNormalization(), ReLU(), _conv(channels, 3), BatchNormalization())
    projection = None
    if stride != 1 or in_channels != channels:
        projection = Serial(_conv(channels, 1, stride), BatchNormalization())
    return Serial(Residual(block, projection=projection), ReLU())


def resnet_mnist(num_classes: int = 10, channels: tuple[int, ...] | list[int] = CHANNELS, blocks: int = 1) -> Serial:
    """A small ResNet for (batch, 1, 28, 28) images: SoftMax probabilities (batch, num_classes).

    Stem: 3x3 `Conv` with stride 2 (28x28 -> 14x14; a quarter of the work of a full-resolution
    first stage), BatchNormalization, ReLU. Then one stage per entry of ``channels``, each of
    ``blocks`` `residual_block` s; every stage after the first halves the map with its first
    block (14 -> 7 -> 4). Then GlobalAveragePooling, FullyConnected(num_classes), SoftMax.
    He-normal conv and dense weights, zero biases. 78,090 parameters with the defaults.

    Args:
        num_classes: the number of classes (>= 2).
        channels: the channels of each stage (a list from a JSON model config works too).
        blocks: residual blocks per stage.

    Returns:
        The model, a `jaxdl.Serial`.

    Raises:
        TypeError: for a ``num_classes``, ``blocks`` or channel count that is not an int, or
            ``channels`` that is not a sequence.
        ValueError: for fewer than 2 classes, an empty ``channels`` or a count below 1.
    """
    positive_int("resnet_mnist", "num_classes", num_classes)
    if num_classes < 2:
        raise ValueError(f"resnet_mnist: num_classes must be an int >= 2, got {num_classes!r}.")
    if not isinstance(channels, (tuple, list)) or not channels:
        raise (ValueError if isinstance(channels, (tuple, list)) else TypeError)(
            f"resnet_mnist: channels must be a non-empty sequence of ints (one per stage), got {channels!r}.")
    channels = [positive_int("resnet_mnist", "each entry of channels", width) for width in channels]
    positive_int("resnet_mnist", "blocks", blocks)
    layers: list[Layer] = [_conv(channels[0], 3, 2), BatchNormalization(), ReLU()]
    in_channels = channels[0]
    for stage, width in enumerate(channels):
        for index in range(blocks):
            layers.append(residual_block(in_channels, width, 2 if stage > 0 and index == 0 else 1))
            in_channels = width
    layers += [GlobalAveragePooling(),
               FullyConnected(num_classes, weights_initializer=He(), bias_initializer=Constant(0.0)), SoftMax()]
    return Serial(*layers)


register_model("resnet_mnist", resnet_mnist)


@dataclasses.dataclass(frozen=True)
class ResNetConfig(LeNetConfig):
    """`LeNetConfig` for `resnet_mnist` (``model_name``), with the defaults chosen on validation."""

    model_name: ClassVar[str] = "resnet_mnist"
    model_title: ClassVar[str] = "ResNet"

    epochs: int = 6
    batch_size: int = 128
    learning_rate: float = 8e-3
    warmup_epochs: float = 0.25
    l2: float = 4e-4
    shift: int = 2
    output_dir: str = "runs/resnet"


def train_resnet(config: ResNetConfig, data=None, **options) -> LeNetResult:
    """Trains `resnet_mnist` as configured: `jaxdl.recipes.lenet.train_lenet` with a `ResNetConfig`.

    Args:
        config: the run's options.
        data: `jaxdl.datasets.MNISTSplits`; default the bundled MNIST (tests pass small splits).
        **options: `train_lenet`'s keyword options (``log``, ``resume_command``,
            ``evaluate_test``, ``mesh``).

    Returns:
        The `LeNetResult`: the fit and the one test evaluation of the best checkpoint.

    Raises:
        TypeError: for a ``config`` that is not a `ResNetConfig`.
        jaxdl.recipes.lenet.ConfigError: for invalid options (`train_lenet`).
    """
    if not isinstance(config, ResNetConfig):
        raise TypeError(f"train_resnet: config must be a ResNetConfig, got {type(config).__name__}.")
    return train_lenet(config, data, **options)
