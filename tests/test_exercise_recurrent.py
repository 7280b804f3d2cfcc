"""The course's Exercise 3 checks of RNN and the optional LSTM (reference 5.15, 5.16).

Imported through a scaffolded course directory, as the course's NeuralNetworkTests.py does.
Numbers and thresholds are the course's.
"""

import numpy as np
import pytest

from exercise_course import L2Loss, RecordingInitializer, course_modules, random_one_hot

# Filled by the `course` fixture with the scaffolded modules.
FullyConnected = RNN = LSTM = Initializers = Helpers = Optimizers = Constraints = None


@pytest.fixture(scope="module", autouse=True)
def course(tmp_path_factory):
    with course_modules(tmp_path_factory.mktemp("course")) as names:
        globals().update(names)
        yield names


def rnn(*sizes):
    return RNN.RNN(*sizes)


def lstm(*sizes):
    return LSTM.LSTM(*sizes)


class _RecurrentChecks:
    """Checks the course runs on both RNN and LSTM (TestRNN, TestLSTM)."""

    make = None
    gates = 1
    gradient_weights_threshold = None
    stateful_repeats = None
    batch_size, input_size, output_size, hidden_size, categories = 9, 13, 5, 7, 4

    def setup_method(self):
        self.input_tensor = np.random.rand(self.input_size, self.batch_size).T
        self.label_tensor = random_one_hot(self.batch_size, self.categories)

    def layer(self, *sizes):
        return type(self).make(*sizes)

    def test_trainable(self):
        assert self.layer(self.input_size, self.hidden_size, self.output_size).trainable

    def test_forward_size(self):
        layer = self.layer(self.input_size, self.hidden_size, self.output_size)
        assert layer.forward(self.input_tensor).shape == (self.batch_size, self.output_size)

    def test_forward_stateful(self):
        layer = self.layer(self.input_size, self.hidden_size, self.output_size)
        input_vector = np.random.rand(self.input_size, 1).T
        input_tensor = np.tile(input_vector, (self.stateful_repeats, 1))
        output_tensor = layer.forward(input_tensor)
        assert np.sum(np.square(output_tensor[0, :] - output_tensor[1, :])) != 0

    def test_forward_stateful_TBPTT(self):  # noqa: N802 (the course's name)
        layer = self.layer(self.input_size, self.hidden_size, self.output_size)
        assert layer.memorize is False
        layer.memorize = True
        output_tensor_first = layer.forward(self.input_tensor)
        output_tensor_second = layer.forward(self.input_tensor)
        assert np.sum(np.square(output_tensor_first - output_tensor_second)) != 0

    def test_backward_size(self):
        layer = self.layer(self.input_size, self.hidden_size, self.output_size)
        output_tensor = layer.forward(self.input_tensor)
        assert layer.backward(output_tensor).shape == (self.batch_size, self.input_size)

    def test_update(self):
        layer = self.layer(self.input_size, self.hidden_size, self.output_size)
        layer.optimizer = Optimizers.Sgd(1)
        for _ in range(10):
            output_tensor = layer.forward(self.input_tensor)
            layer.backward(-output_tensor)
            new_output_tensor = layer.forward(self.input_tensor)
            assert np.sum(np.power(output_tensor, 2)) < np.sum(np.power(new_output_tensor, 2))

    def test_gradient(self):
        input_tensor = np.abs(np.random.random((self.batch_size, self.input_size)))
        layer = self.layer(self.input_size, self.hidden_size, self.categories)
        layer.initialize(Initializers.He(), Initializers.He())
        difference = Helpers.gradient_check([layer, L2Loss()], input_tensor, self.label_tensor)
        assert np.sum(difference) <= 1e-4

    def test_gradient_weights(self):
        input_tensor = np.abs(np.random.random((self.batch_size, self.input_size)))
        layer = self.layer(self.input_size, self.hidden_size, self.categories)
        layer.initialize(Initializers.He(), Initializers.He())
        difference = Helpers.gradient_check_weights([layer, L2Loss()], input_tensor, self.label_tensor, False)
        assert np.sum(difference) <= self.gradient_weights_threshold

    def test_weights_shape(self):
        layer = self.layer(self.input_size, self.hidden_size, self.categories)
        layer.initialize(Initializers.He(), Initializers.He())
        assert hasattr(layer, "weights")
        reference = FullyConnected.FullyConnected(self.input_size + self.hidden_size, self.gates * self.hidden_size)
        assert layer.weights.shape in (reference.weights.shape, reference.weights.T.shape)

    def test_bias(self):
        input_tensor = np.zeros((1, 100000))
        layer = self.layer(100000, 100, 1)
        layer.initialize(Initializers.UniformRandom(), Initializers.UniformRandom())
        assert np.sum(layer.forward(input_tensor)) > 0

    # jaxdl's own checks of the facade ------------------------------------------------------
    def test_weights_rows_are_x_then_h_then_bias(self):
        layer = self.layer(self.input_size, self.hidden_size, self.output_size)
        weights = np.random.rand(self.input_size + self.hidden_size + 1, self.gates * self.hidden_size)
        layer.weights = weights
        np.testing.assert_array_equal(layer.weights, weights)
        hidden = layer._params[layer._names[0]]
        np.testing.assert_array_equal(hidden["w_ih"], weights[:self.input_size])
        np.testing.assert_array_equal(hidden["w_hh"], weights[self.input_size:-1])
        np.testing.assert_array_equal(hidden["b"], weights[-1])

    def test_no_update_without_optimizer_and_memorize_off_restarts(self):
        layer = self.layer(self.input_size, self.hidden_size, self.output_size)
        weights = layer.weights
        first = layer.forward(self.input_tensor)
        layer.backward(first)
        np.testing.assert_array_equal(layer.weights, weights)
        np.testing.assert_array_equal(layer.forward(self.input_tensor), first)

    def test_memorize_continues_the_sequence(self):
        layer = self.layer(self.input_size, self.hidden_size, self.output_size)
        whole = layer.forward(self.input_tensor)
        layer.memorize = True
        first = layer.forward(self.input_tensor[:4])
        second = layer.forward(self.input_tensor[4:])
        np.testing.assert_allclose(np.vstack([first, second]), whole, rtol=1e-12)

    def test_pickles_with_its_memory(self):
        import pickle
        layer = self.layer(self.input_size, self.hidden_size, self.output_size)
        layer.memorize = True
        layer.forward(self.input_tensor)
        clone = pickle.loads(pickle.dumps(layer))
        assert clone.memorize
        np.testing.assert_array_equal(clone.forward(self.input_tensor), layer.forward(self.input_tensor))

    def test_regularization_loss_covers_both_maps(self):
        layer = self.layer(self.input_size, self.hidden_size, self.output_size)
        optimizer = Optimizers.Sgd(1)
        optimizer.add_regularizer(Constraints.L2_Regularizer(0.5))
        layer.optimizer = optimizer
        expected = 0.5 * sum(np.sum(np.square(np.asarray(leaf)))
                             for maps in layer._params.values() for leaf in maps.values())
        assert layer.calculate_regularization_loss() == pytest.approx(expected, rel=1e-12)


class TestRNN(_RecurrentChecks):
    make = staticmethod(rnn)
    gates = 1
    gradient_weights_threshold = 1e-4
    stateful_repeats = 2

    def test_initialization(self):
        layer = RNN.RNN(self.input_size, self.hidden_size, self.output_size)
        layer.initialize(RecordingInitializer(), Initializers.Constant(0.0))
        expected = 21.0 if layer.weights.shape[0] > layer.weights.shape[1] else 60.0
        assert np.sum(layer.weights) == expected


class TestLSTM(_RecurrentChecks):
    make = staticmethod(lstm)
    gates = 4
    gradient_weights_threshold = 1e-3
    stateful_repeats = 13
