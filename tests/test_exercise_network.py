"""The course's network checks: Exercise 3 (reference 5.17) and the Exercise 1 and 2 editions
(reference 8) through the same scaffold, plus save/load, phases and the core training step.

Imported through a scaffolded course directory, as the course's NeuralNetworkTests.py does.
Iterations, batch sizes and accuracy thresholds are the course's. The course reseeds with
``np.random.seed(None)``; these tests seed NumPy and Python's ``random`` with fixed values so
a failure can be reproduced.
"""

import random
from pathlib import Path

import numpy as np
import pytest

from exercise_course import course_modules, random_one_hot

# Filled by the `course` fixture with the scaffolded modules.
FullyConnected = ReLU = SoftMax = Flatten = Conv = Pooling = RNN = Dropout = BatchNormalization = None
Initializers = Helpers = Optimizers = Constraints = Loss = NeuralNetwork = None


@pytest.fixture(scope="module", autouse=True)
def course(tmp_path_factory):
    with course_modules(tmp_path_factory.mktemp("course")) as names:
        globals().update(names)
        yield names


@pytest.fixture(autouse=True)
def seeded():
    np.random.seed(1234)
    random.seed(1234)


def iris_net(optimizer, batch_size, *, batch_norm=False, dropout=False, random_batches=True):
    """The course's iris net: [BN(4)] FC(4,3) ReLU FC(3,3) [Dropout(0.3)] SoftMax, CE loss."""
    net = NeuralNetwork.NeuralNetwork(optimizer, Initializers.UniformRandom(), Initializers.Constant(0.1))
    net.data_layer = Helpers.IrisData(batch_size, random=random_batches)
    net.loss_layer = Loss.CrossEntropyLoss()
    if batch_norm:
        net.append_layer(BatchNormalization.BatchNormalization(4))
    net.append_layer(FullyConnected.FullyConnected(4, 3))
    net.append_layer(ReLU.ReLU())
    net.append_layer(FullyConnected.FullyConnected(3, 3))
    if dropout:
        net.append_layer(Dropout.Dropout(0.3))
    net.append_layer(SoftMax.SoftMax())
    return net


class Doubling:
    """A layer written by the user (pickled by reference to this module)."""

    def forward(self, input_tensor):
        return 2 * input_tensor

    def backward(self, error_tensor):
        return 2 * error_tensor


class FixedBatch:
    """A data layer whose ``next()`` always returns the same batch."""

    def __init__(self, input_tensor, label_tensor):
        self.input_tensor, self.label_tensor = input_tensor, label_tensor

    def next(self):
        return self.input_tensor, self.label_tensor


def measured_accuracy(net):
    data, labels = net.data_layer.get_test_set()
    return Helpers.calculate_accuracy(net.test(data), labels)


class TestNeuralNetwork3:
    def test_append_layer(self):
        net = NeuralNetwork.NeuralNetwork(Optimizers.Sgd(1), Initializers.Constant(0.123), Initializers.Constant(0.123))
        net.append_layer(FullyConnected.FullyConnected(1, 1))
        net.append_layer(FullyConnected.FullyConnected(1, 1))
        assert len(net.layers) == 2
        assert net.layers[0].optimizer is not net.layers[1].optimizer
        assert np.all(net.layers[0].weights == 0.123)

    def test_data_access(self):
        net = iris_net(Optimizers.Sgd(1e-4), 50)
        out = net.forward()
        out2 = net.forward()
        assert isinstance(out, float)
        assert out != out2

    def test_iris_data(self):
        net = iris_net(Optimizers.Sgd(1e-3), 100)
        net.train(4000)
        assert len(net.loss) == 4000
        assert measured_accuracy(net) > 0.9

    def test_regularization_loss(self):
        for make_layer in (lambda: FullyConnected.FullyConnected(4, 3), lambda: RNN.RNN(4, 4, 3)):
            layer = make_layer()
            losses = []
            for regularized in (False, True):
                optimizer = Optimizers.Sgd(1e-3)
                if regularized:
                    optimizer.add_regularizer(Constraints.L1_Regularizer(8e-2))
                net = NeuralNetwork.NeuralNetwork(optimizer, Initializers.Constant(0.5), Initializers.Constant(0.1))
                net.data_layer = Helpers.IrisData(100, random=False)
                net.loss_layer = Loss.CrossEntropyLoss()
                net.append_layer(layer)
                net.append_layer(SoftMax.SoftMax())
                net.train(1)
                losses.append(np.sum(net.loss))
            assert losses[0] != losses[1], f"regularization loss not calculated and added for {type(layer)}"

    def test_iris_data_with_momentum(self):
        net = iris_net(Optimizers.SgdWithMomentum(1e-3, 0.8), 100)
        net.train(2000)
        assert measured_accuracy(net) > 0.9

    def test_iris_data_with_adam(self):
        net = iris_net(Optimizers.Adam(1e-3, 0.9, 0.999), 100)
        net.train(3000)
        assert measured_accuracy(net) > 0.9

    def test_iris_data_with_batchnorm(self):
        net = iris_net(Optimizers.Adam(1e-2, 0.9, 0.999), 50, batch_norm=True)
        net.train(2000)
        assert measured_accuracy(net) > 0.8
        data, _ = net.data_layer.get_test_set()
        results = net.test(data)
        results_next_run = net.test(data)
        assert np.mean(np.square(results - results_next_run)) == 0

    def test_iris_data_with_dropout(self):
        net = iris_net(Optimizers.Adam(1e-2, 0.9, 0.999), 50, dropout=True)
        net.train(2000)
        data, _ = net.data_layer.get_test_set()
        results = net.test(data)
        results_next_run = net.test(data)
        assert np.mean(np.square(results - results_next_run)) == 0

    def test_layer_phases(self):
        net = iris_net(Optimizers.Adam(1e-2, 0.9, 0.999), 50, batch_norm=True, dropout=True)
        net.train(100)
        data, _ = net.data_layer.get_test_set()
        net.test(data)
        assert net.layers[0].testing_phase
        assert net.layers[4].testing_phase

    @staticmethod
    def _perform_test(optimizer, iterations, dropout, batch_norm):
        net = NeuralNetwork.NeuralNetwork(optimizer, Initializers.He(), Initializers.Constant(0.1))
        input_image_shape, num_kernels, categories = (1, 8, 8), 4, 10
        net.data_layer = Helpers.DigitData(150)
        net.loss_layer = Loss.CrossEntropyLoss()
        if batch_norm:
            net.append_layer(BatchNormalization.BatchNormalization(1))
        net.append_layer(Conv.Conv((1, 1), (1, 3, 3), num_kernels))
        if batch_norm:
            net.append_layer(BatchNormalization.BatchNormalization(num_kernels))
        net.append_layer(ReLU.ReLU())
        fcl_1_input_size = np.prod((num_kernels, *input_image_shape[1:]))
        net.append_layer(Flatten.Flatten())
        net.append_layer(FullyConnected.FullyConnected(fcl_1_input_size, int(fcl_1_input_size / 2.)))
        if batch_norm:
            net.append_layer(BatchNormalization.BatchNormalization(fcl_1_input_size // 2))
        if dropout:
            net.append_layer(Dropout.Dropout(0.3))
        net.append_layer(ReLU.ReLU())
        net.append_layer(FullyConnected.FullyConnected(int(fcl_1_input_size / 2), int(fcl_1_input_size / 3)))
        net.append_layer(ReLU.ReLU())
        net.append_layer(FullyConnected.FullyConnected(int(fcl_1_input_size / 3), categories))
        net.append_layer(SoftMax.SoftMax())
        net.train(iterations)
        accuracy = measured_accuracy(net)
        assert accuracy > 0.3, accuracy
        return net

    @pytest.mark.parametrize("name, learning_rate, regularizer, dropout, batch_norm", [
        ("digit_data", 5e-3, None, False, False),
        ("digit_data_L2_Regularizer", 5e-3, ("L2_Regularizer", 8e-2), False, False),
        ("digit_data_L1_Regularizer", 5e-3, ("L1_Regularizer", 8e-2), False, False),
        ("digit_data_dropout", 5e-3, ("L2_Regularizer", 4e-4), True, False),
        ("digit_batch_norm", 1e-2, None, False, True),
        ("all", 1e-2, ("L2_Regularizer", 8e-2), False, True),
    ], ids=lambda v: v if isinstance(v, str) else None)
    def test_digits(self, name, learning_rate, regularizer, dropout, batch_norm):
        optimizer = Optimizers.Adam(learning_rate, 0.98, 0.999)
        if regularizer is not None:
            kind, alpha = regularizer
            optimizer.add_regularizer(getattr(Constraints, kind)(alpha))
        self._perform_test(optimizer, 100, dropout, batch_norm)


class TestNeuralNetwork1:
    """The Exercise 1 edition: ``NeuralNetwork(optimizer)`` without initializers."""

    @staticmethod
    def iris_net(optimizer):
        net = NeuralNetwork.NeuralNetwork(optimizer)
        net.data_layer = Helpers.IrisData(50)
        net.loss_layer = Loss.CrossEntropyLoss()
        for layer in (FullyConnected.FullyConnected(4, 3), ReLU.ReLU(), FullyConnected.FullyConnected(3, 3),
                      SoftMax.SoftMax()):
            net.append_layer(layer)
        return net

    def test_append_layer(self):
        net = NeuralNetwork.NeuralNetwork(Optimizers.Sgd(1))
        fcl_1 = FullyConnected.FullyConnected(1, 1)
        weights = fcl_1.weights
        net.append_layer(fcl_1)
        net.append_layer(FullyConnected.FullyConnected(1, 1))
        assert len(net.layers) == 2
        assert net.layers[0].optimizer is not net.layers[1].optimizer
        np.testing.assert_array_equal(net.layers[0].weights, weights)  # the constructor's initialization

    def test_data_access(self):
        net = self.iris_net(Optimizers.Sgd(1))
        assert net.forward() != net.forward()

    def test_iris_data(self):
        net = self.iris_net(Optimizers.Sgd(1e-3))
        net.train(4000)
        assert measured_accuracy(net) > 0.8

    def test_one_initializer_is_completed_by_uniform_random(self):
        net = NeuralNetwork.NeuralNetwork(Optimizers.Sgd(1), Initializers.Constant(0.5))
        net.append_layer(FullyConnected.FullyConnected(3, 2))
        weights = net.layers[0].weights
        assert np.all(weights[:-1] == 0.5)
        assert np.all((weights[-1] >= 0) & (weights[-1] < 1)) and len(np.unique(weights[-1])) == 2


class TestNeuralNetwork2:
    """The Exercise 2 edition's network check that Exercise 3 does not repeat."""

    def test_digit_data(self):
        net = NeuralNetwork.NeuralNetwork(Optimizers.Adam(5e-3, 0.98, 0.999), Initializers.He(),
                                          Initializers.Constant(0.1))
        net.data_layer = Helpers.DigitData(200)
        net.loss_layer = Loss.CrossEntropyLoss()
        for layer in (Conv.Conv((1, 1), (1, 3, 3), 4), ReLU.ReLU(), Pooling.Pooling((2, 2), (2, 2)),
                      Flatten.Flatten(), FullyConnected.FullyConnected(64, 32), ReLU.ReLU(),
                      FullyConnected.FullyConnected(32, 10), SoftMax.SoftMax()):
            net.append_layer(layer)
        net.train(200)
        assert measured_accuracy(net) > 0.5


# jaxdl's own checks of the network facade ---------------------------------------------------
class TestNetworkFacade:
    def test_phase_property(self):
        net = iris_net(Optimizers.Sgd(1e-3), 50, batch_norm=True, dropout=True)
        assert net.phase == "train"
        net.phase = "test"
        assert all(layer.testing_phase for layer in net.layers) and net.phase == "test"
        net.phase = False
        assert not any(layer.testing_phase for layer in net.layers) and net.phase == "train"
        net.test(net.data_layer.get_test_set()[0])
        net.train(1)
        assert not any(layer.testing_phase for layer in net.layers)
        with pytest.raises(ValueError, match="'train' or 'test'"):
            net.phase = "validation"

    def test_forward_adds_the_regularization_loss_of_trainable_layers(self):
        optimizer = Optimizers.Sgd(1e-3)
        optimizer.add_regularizer(Constraints.L2_Regularizer(0.5))
        net = iris_net(optimizer, 50, batch_norm=True)
        expected = sum(0.5 * np.sum(np.square(layer.weights))
                       for layer in net.layers if isinstance(layer, FullyConnected.FullyConnected))
        assert net.regularization_loss() == pytest.approx(expected, rel=1e-12)
        data_loss_net = iris_net(Optimizers.Sgd(1e-3), 50, batch_norm=True)
        assert isinstance(net.forward(), float)
        assert data_loss_net.regularization_loss() == 0.0

    def test_training_reduces_the_loss(self):
        net = iris_net(Optimizers.Adam(1e-2, 0.9, 0.999), 50)
        net.train(200)
        assert np.mean(net.loss[-20:]) < np.mean(net.loss[:20])

    def test_user_layers_mix_with_facade_layers(self):
        class Scale:  # a student's own NumPy layer
            trainable = False
            testing_phase = False

            def forward(self, input_tensor):
                assert isinstance(input_tensor, np.ndarray)
                return 2 * input_tensor

            def backward(self, error_tensor):
                assert isinstance(error_tensor, np.ndarray)
                return 2 * error_tensor

        net = iris_net(Optimizers.Adam(1e-2, 0.9, 0.999), 50)
        net.layers.insert(1, Scale())
        net.train(20)
        assert len(net.loss) == 20 and np.all(np.isfinite(net.loss))

    def test_save_and_load(self, tmp_path):
        net = iris_net(Optimizers.Adam(1e-2, 0.9, 0.999), 50, batch_norm=True, dropout=True)
        net.train(20)
        data, _ = net.data_layer.get_test_set()
        expected = net.test(data)
        path = tmp_path / "net"
        NeuralNetwork.save(path, net)
        data_layer = Helpers.IrisData(50)
        loaded = NeuralNetwork.load(path, data_layer)
        assert loaded.data_layer is data_layer
        assert net.data_layer is not None  # saving does not strip the live network
        np.testing.assert_array_equal(loaded.test(data), expected)
        assert loaded.loss == net.loss
        loaded.train(5)  # optimizer state and layers survive the round trip
        assert len(loaded.loss) == 25

    def test_load_refuses_a_hostile_pickle_and_takes_allowed_classes(self, tmp_path):
        import os
        import pickle

        from jaxdl.exercise.pickle_io import UnsafePickleError

        marker = tmp_path / "marker"

        class Hostile:
            def __reduce__(self):
                return os.system, (f"touch {marker}",)

        net = iris_net(Optimizers.Sgd(1e-3), 50)
        net.layers.append(Hostile())
        path = tmp_path / "net"
        path.write_bytes(pickle.dumps(net))
        with pytest.raises(UnsafePickleError, match="system, which is not on the allow-list"):
            NeuralNetwork.load(path, Helpers.IrisData(50))
        assert not marker.exists()
        net.layers[-1] = Doubling()  # a layer of the user's own: loads once allowed
        NeuralNetwork.save(path, net)
        with pytest.raises(UnsafePickleError, match="Doubling, which is not on the allow-list.*allowed_classes="):
            NeuralNetwork.load(path, None)
        loaded = NeuralNetwork.load(path, None, allowed_classes=[Doubling])
        assert type(loaded.layers[-1]) is Doubling and loaded.data_layer is None

    def test_getstate_drops_the_data_layer(self):
        net = iris_net(Optimizers.Sgd(1e-3), 50)
        assert net.__getstate__()["data_layer"] is None
        clone = NeuralNetwork.NeuralNetwork.__new__(NeuralNetwork.NeuralNetwork)
        clone.__setstate__(net.__getstate__())
        assert clone.data_layer is None and len(clone.layers) == len(net.layers)


class TestCoreStepTraining:
    """`NeuralNetwork.train` runs each iteration through the core training step
    (`jaxdl.training.make_train_step`); it must equal forward + backward."""

    @staticmethod
    def build(seed):
        np.random.seed(seed)
        random.seed(seed)
        optimizer = Optimizers.Adam(5e-3, 0.9, 0.999)
        optimizer.add_regularizer(Constraints.L2_Regularizer(1e-2))
        net = NeuralNetwork.NeuralNetwork(optimizer, Initializers.He(), Initializers.Constant(0.1))
        net.data_layer = Helpers.IrisData(30)
        net.loss_layer = Loss.CrossEntropyLoss()
        for layer in (BatchNormalization.BatchNormalization(4), FullyConnected.FullyConnected(4, 20),
                      Dropout.Dropout(0.7), ReLU.ReLU(), FullyConnected.FullyConnected(20, 3),
                      SoftMax.SoftMax()):
            net.append_layer(layer)
        return net

    def test_train_equals_forward_backward(self):
        trained, stepwise = self.build(5), self.build(5)
        np.random.seed(11)
        trained.train(6)
        np.random.seed(11)
        stepwise.phase = "train"
        for _ in range(6):
            stepwise.loss.append(stepwise.forward())
            stepwise.backward()
        np.testing.assert_allclose(trained.loss, stepwise.loss, rtol=1e-10)
        for a, b in zip(trained.layers, stepwise.layers):
            if a.trainable:
                np.testing.assert_allclose(a.weights, b.weights, rtol=1e-9, atol=1e-12)
                np.testing.assert_allclose(a.gradient_weights, b.gradient_weights, rtol=1e-8, atol=1e-12)
        np.testing.assert_allclose(trained.layers[0].running_mean, stepwise.layers[0].running_mean, rtol=1e-12)
        np.testing.assert_allclose(trained.layers[0].running_var, stepwise.layers[0].running_var, rtol=1e-12)

    def test_runs_the_core_training_step(self, monkeypatch):
        from jaxdl.exercise import _network_step
        built = []
        make_train_step = _network_step.make_train_step
        monkeypatch.setattr(_network_step, "make_train_step",
                            lambda *args, **kwargs: built.append(args) or make_train_step(*args, **kwargs))
        _network_step.compiled_step.cache_clear()
        net = iris_net(Optimizers.Sgd(1e-3), 50)
        net.train(2)
        assert len(built) == 1
        model, loss_fn, optimizer = built[0]
        assert isinstance(model, _network_step.LayerChain) and len(model.fns) == len(net.layers)
        assert loss_fn is _network_step.course_cross_entropy
        assert optimizer.regularizer is None  # no layer's optimizer has one

    def test_one_compilation_per_network_configuration(self, monkeypatch):
        from jaxdl.exercise import _network_step
        traces = []
        apply = _network_step.LayerChain.apply
        monkeypatch.setattr(_network_step.LayerChain, "apply",
                            lambda self, *args, **kwargs: traces.append(1) or apply(self, *args, **kwargs))
        net = iris_net(Optimizers.Adam(1e-2, 0.9, 0.999), 50, batch_norm=True, dropout=True)
        net.train(3)
        traced = len(traces)
        net.train(5)
        iris_net(Optimizers.Adam(1e-2, 0.9, 0.999), 50, batch_norm=True, dropout=True).train(2)
        assert len(traces) == traced

    def test_regularization_loss_is_reported_per_layer(self):
        optimizer = Optimizers.Sgd(1e-3)
        optimizer.add_regularizer(Constraints.L1_Regularizer(0.5))
        net = iris_net(optimizer, 50, batch_norm=True)
        net.data_layer = FixedBatch(*Helpers.IrisData(50).get_test_set())
        net.layers[1].optimizer = Optimizers.Sgd(1e-3)  # the first FullyConnected: no regularizer
        regularization = net.regularization_loss()
        assert regularization == net.layers[3].calculate_regularization_loss() > 0
        expected = net.forward()  # data loss + regularization loss at the params before the step
        net.train(1)
        assert net.loss == [pytest.approx(expected, rel=1e-12)]

    def test_gradient_is_the_course_gradient_at_high_loss(self):
        # The 2022 high-loss case inside a network: logits 100 on the wrong classes, 0 on the
        # true one (probability ~1e-44). The weights' gradient is x^T (softmax - label).
        labels = random_one_hot(9, 4)
        nets = []
        for _ in range(2):
            net = NeuralNetwork.NeuralNetwork(Optimizers.Sgd(1e-3), Initializers.Constant(0.), Initializers.Constant(0.))
            net.data_layer, net.loss_layer = FixedBatch(1. - labels, labels), Loss.CrossEntropyLoss()
            net.append_layer(FullyConnected.FullyConnected(4, 4))
            net.append_layer(SoftMax.SoftMax())
            net.layers[0].weights = np.vstack([100. * np.eye(4), np.zeros((1, 4))])
            nets.append(net)
        nets[0].train(1)
        nets[1].forward()
        nets[1].backward()
        logits = 100. * (1. - labels)
        probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
        probabilities /= probabilities.sum(axis=1, keepdims=True)
        expected = np.hstack([1. - labels, np.ones((9, 1))]).T @ (probabilities - labels)
        for net in nets:
            np.testing.assert_allclose(net.layers[0].gradient_weights, expected, rtol=1e-12, atol=1e-12)

    def test_the_facade_defines_no_training_step_of_its_own(self):
        import jaxdl.exercise
        for path in Path(jaxdl.exercise.__file__).parent.glob("*.py"):
            text = path.read_text()
            assert "value_and_grad" not in text, path
            # jax.grad only for CrossEntropyLoss.backward (the loss's own gradient)
            assert "jax.grad(" not in text or path.name == "loss.py", path

    def test_layer_backward_after_training_asks_for_a_forward(self):
        net = iris_net(Optimizers.Sgd(1e-3), 50)
        net.train(2)
        with pytest.raises(RuntimeError, match="call forward first"):
            net.layers[0].backward(np.ones((50, 3)))


# The facade's public methods given the wrong kind of object: (id, call, message regex).
MISUSE = [
    ("append_layer of a string", lambda: NeuralNetwork.NeuralNetwork(Optimizers.Sgd(1)).append_layer("relu"),
     r"NeuralNetwork\.append_layer: expected a layer object such as ReLU\(\) .* got str 'relu', which has no "
     r"forward\(\) or backward\(\)"),
    ("append_layer of a class", lambda: NeuralNetwork.NeuralNetwork(Optimizers.Sgd(1)).append_layer(ReLU.ReLU),
     r"NeuralNetwork\.append_layer: .* got the class ReLU itself; create one"),
    ("optimizer a string", lambda: NeuralNetwork.NeuralNetwork("sgd"),
     r"NeuralNetwork \(optimizer\): expected an optimizer such as Sgd\(1e-3\).* got str 'sgd'"),
    ("initializer a string", lambda: NeuralNetwork.NeuralNetwork(Optimizers.Sgd(1), "he"),
     r"NeuralNetwork \(weights_initializer\): expected an initializer .* got str 'he'"),
    ("initializer a class", lambda: NeuralNetwork.NeuralNetwork(Optimizers.Sgd(1), Initializers.He(),
                                                                Initializers.Constant),
     r"NeuralNetwork \(bias_initializer\): .* got the class Constant itself"),
    ("loss_layer a string", lambda: setattr(NeuralNetwork.NeuralNetwork(Optimizers.Sgd(1)), "loss_layer", "ce"),
     r"NeuralNetwork\.loss_layer: expected a loss layer such as CrossEntropyLoss\(\) .* got str 'ce'"),
    ("data_layer a list", lambda: setattr(NeuralNetwork.NeuralNetwork(Optimizers.Sgd(1)), "data_layer", [1, 2]),
     r"NeuralNetwork\.data_layer: expected a data layer whose next\(\) returns \(input, label\) .* got list"),
    ("layer optimizer a number", lambda: setattr(FullyConnected.FullyConnected(2, 3), "optimizer", 0.1),
     r"FullyConnected\.optimizer: expected an optimizer .* got float 0\.1"),
    ("initialize with strings", lambda: FullyConnected.FullyConnected(2, 3).initialize("he", "zeros"),
     r"FullyConnected\.initialize \(weights_initializer\): expected an initializer .* got str 'he'"),
    ("conv initialize with an optimizer", lambda: Conv.Conv((1, 1), (1, 3, 3), 2).initialize(
        Optimizers.Sgd(1), Initializers.Constant()), r"Conv\.initialize \(weights_initializer\): .* got Sgd"),
    ("rnn initialize with None", lambda: RNN.RNN(2, 3, 2).initialize(None, Initializers.Constant()),
     r"RNN\.initialize \(weights_initializer\): expected an initializer .* got NoneType"),
    ("add_regularizer of a number", lambda: Optimizers.Sgd(1).add_regularizer(4e-4),
     r"Sgd\.add_regularizer: expected a regularizer such as L2_Regularizer\(4e-4\) .* got float"),
]


@pytest.mark.parametrize("call, pattern", [case[1:] for case in MISUSE], ids=[case[0] for case in MISUSE])
def test_facade_misuse_is_a_type_error_naming_the_method(call, pattern):
    with pytest.raises(TypeError, match=pattern):
        call()
