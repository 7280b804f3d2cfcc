"""Older editions' API names in the scaffold, each with the older call shape (issue 23).

The course's test files changed between editions; these are jaxdl's own copies of the older
call shapes (not the course's files), run through a scaffolded directory as a student of
those years runs them: ``append_trainable_layer``, data layers whose batch method is
``forward()``, ``set_optimizer``, ``Base.Phase`` with ``layer.phase = Phase.test`` and
BatchNormalization's ``reformat`` after setting ``input_shape`` by hand.
"""

import numpy as np
import pytest

from exercise_course import course_modules


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    with course_modules(tmp_path_factory.mktemp("older") / "src") as names:
        yield names


class OlderData:
    """An older ``Helpers.py`` data layer: the batch method is ``forward()``, not ``next()``."""

    def __init__(self, batch_size=20, seed=0):
        self.rng, self.batch_size = np.random.default_rng(seed), batch_size

    def forward(self):
        x = self.rng.normal(size=(self.batch_size, 4))
        return x, np.eye(3)[(x[:, 0] > 0).astype(int) + (x[:, 1] > 0)]

    def get_test_set(self):
        return OlderData(200, seed=1).forward()


def test_append_trainable_layer_and_a_forward_data_layer(course):
    NeuralNetwork, FullyConnected, ReLU, SoftMax = (course[n] for n in ("NeuralNetwork", "FullyConnected",
                                                                         "ReLU", "SoftMax"))
    np.random.seed(0)
    net = NeuralNetwork.NeuralNetwork(course["Optimizers"].Sgd(1e-2))
    net.data_layer = OlderData()
    net.loss_layer = course["Loss"].CrossEntropyLoss()
    net.append_trainable_layer(FullyConnected.FullyConnected(4, 8))
    net.layers.append(ReLU.ReLU())
    net.append_trainable_layer(FullyConnected.FullyConnected(8, 3))
    net.layers.append(SoftMax.SoftMax())
    assert net.layers[0].optimizer is not net.layers[2].optimizer  # a copy per trainable layer
    assert net.forward() != net.forward()  # two batches from forward()
    net.train(300)
    assert len(net.loss) == 300 and np.mean(net.loss[-20:]) < np.mean(net.loss[:20])
    data, labels = net.data_layer.get_test_set()
    accuracy = np.mean(net.test(data).argmax(1) == labels.argmax(1))
    assert accuracy > 0.7


def test_set_optimizer_updates_in_backward(course):
    layer = course["FullyConnected"].FullyConnected(4, 3)
    layer.set_optimizer(course["Optimizers"].Sgd(1))
    assert isinstance(layer.optimizer, course["Optimizers"].Sgd)
    x = np.random.rand(9, 4)
    for _ in range(3):
        output = layer.forward(x)
        layer.backward(-output)
        assert np.sum(np.square(layer.forward(x))) > np.sum(np.square(output))
    with pytest.raises(TypeError, match="calculate_update"):
        layer.set_optimizer("sgd")


def test_phase_enum_of_base(course):
    Base = course["Base"]
    assert {phase.name for phase in Base.Phase} == {"train", "test", "validation"}
    dropout = course["Dropout"].Dropout(0.5)
    assert dropout.phase is Base.Phase.train
    dropout.phase = Base.Phase.test
    assert dropout.testing_phase and dropout.phase is Base.Phase.test
    np.testing.assert_array_equal(dropout.forward(np.ones((4, 5))), np.ones((4, 5)))
    dropout.phase = Base.Phase.train
    assert not dropout.testing_phase and dropout.forward(np.ones((200, 50))).max() == 2
    with pytest.raises(TypeError, match="Phase.test"):
        dropout.phase = "test"

    norm = course["BatchNormalization"].BatchNormalization(3)
    x = np.random.rand(50, 3)
    norm.forward(x)
    norm.phase = Base.Phase.validation  # validation behaves as testing
    np.testing.assert_allclose(norm.forward(np.zeros((4, 3))).mean(0), -x.mean(0) / x.std(0), rtol=1e-7)


def test_network_phase_takes_the_enum(course):
    net = course["NeuralNetwork"].NeuralNetwork(course["Optimizers"].Sgd(1e-3))
    net.layers.append(course["Dropout"].Dropout(0.5))
    net.phase = course["Base"].Phase.test
    assert net.layers[0].testing_phase and net.phase == "test"
    net.phase = course["Base"].Phase.train
    assert not net.layers[0].testing_phase


@pytest.mark.parametrize("shape", [(5, 3, 6, 4), (3, 6, 4)])
def test_batch_norm_reformat_with_input_shape_set_by_hand(course, shape):
    layer = course["BatchNormalization"].BatchNormalization(3)
    with pytest.raises(ValueError, match="input_shape"):
        layer.reformat(np.arange(360).reshape(120, 3))
    layer.input_shape = shape
    image = layer.reformat(np.arange(360).reshape(120, 3))
    assert image.shape == (5, 3, 6, 4)
    assert np.sum(image, axis=(0, 1, 2))[0] == 15750  # the current editions' numbers
    assert np.sum(image, axis=(0, 2, 3))[0] == 21420
    np.testing.assert_array_equal(layer.reformat(image), np.arange(360).reshape(120, 3))
    with pytest.raises(ValueError, match="input_shape"):
        layer.input_shape = (120, 3)
