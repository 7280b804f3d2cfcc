"""The course's Exercise 3 checks of the basic layers (reference sections 5.1-5.11).

The course's module layout is scaffolded into a temporary directory and imported as the
course's NeuralNetworkTests.py does (`from Layers import *`), so these tests exercise exactly
what a student's run of the course file would. Numbers and thresholds are the course's.
"""

import numpy as np
import pytest
from scipy import stats
from scipy.ndimage import gaussian_filter

from exercise_course import L2Loss, RecordingInitializer, course_modules, random_one_hot

# Filled by the `course` fixture with the scaffolded modules (Layers/*, Optimization/*).
FullyConnected = ReLU = TanH = Sigmoid = SoftMax = Flatten = Conv = Pooling = None
Initializers = Helpers = Optimizers = Loss = None


@pytest.fixture(scope="module", autouse=True)
def course(tmp_path_factory):
    with course_modules(tmp_path_factory.mktemp("course")) as names:
        globals().update(names)
        yield names


def gradient_error(layers, input_tensor, label_tensor, seed=None):
    return np.sum(Helpers.gradient_check(layers, input_tensor, label_tensor, seed))


def weights_gradient_error(layers, input_tensor, label_tensor, bias):
    return np.sum(Helpers.gradient_check_weights(layers, input_tensor, label_tensor, bias))


def assert_update_grows(layer, input_tensor):
    """10 rounds of forward / error = -output / backward: the output's energy must grow."""
    for _ in range(10):
        output_tensor = layer.forward(input_tensor)
        layer.backward(-output_tensor)
        new_output_tensor = layer.forward(input_tensor)
        assert np.sum(np.power(output_tensor, 2)) < np.sum(np.power(new_output_tensor, 2))


# 5.1 -------------------------------------------------------------------------------------
class TestFullyConnected:
    batch_size, input_size, output_size, categories = 9, 4, 3, 4

    def setup_method(self):
        self.input_tensor = np.random.rand(self.batch_size, self.input_size)
        self.label_tensor = random_one_hot(self.batch_size, self.categories)

    def test_trainable(self):
        assert FullyConnected.FullyConnected(self.input_size, self.output_size).trainable

    def test_weights_size(self):
        layer = FullyConnected.FullyConnected(self.input_size, self.output_size)
        assert layer.weights.shape in ((self.input_size + 1, self.output_size), (self.output_size, self.input_size + 1))

    def test_forward_size(self):
        layer = FullyConnected.FullyConnected(self.input_size, self.output_size)
        assert layer.forward(self.input_tensor).shape == (self.batch_size, self.output_size)

    def test_backward_size(self):
        layer = FullyConnected.FullyConnected(self.input_size, self.output_size)
        output_tensor = layer.forward(self.input_tensor)
        assert layer.backward(output_tensor).shape == (self.batch_size, self.input_size)

    def test_update(self):
        layer = FullyConnected.FullyConnected(self.input_size, self.output_size)
        layer.optimizer = Optimizers.Sgd(1)
        assert_update_grows(layer, self.input_tensor)

    def test_update_bias(self):
        layer = FullyConnected.FullyConnected(self.input_size, self.output_size)
        layer.optimizer = Optimizers.Sgd(1)
        assert_update_grows(layer, np.zeros([self.batch_size, self.input_size]))

    def test_gradient(self):
        input_tensor = np.abs(np.random.random((self.batch_size, self.input_size)))
        layers = [FullyConnected.FullyConnected(self.input_size, self.categories), L2Loss()]
        assert gradient_error(layers, input_tensor, self.label_tensor) <= 1e-5

    def test_gradient_weights(self):
        input_tensor = np.abs(np.random.random((self.batch_size, self.input_size)))
        layers = [FullyConnected.FullyConnected(self.input_size, self.categories), L2Loss()]
        assert weights_gradient_error(layers, input_tensor, self.label_tensor, False) <= 1e-5

    def test_bias(self):
        layer = FullyConnected.FullyConnected(100000, 1)
        assert np.sum(layer.forward(np.zeros((1, 100000)))) > 0

    def test_initialization(self):
        initializer = RecordingInitializer()
        layer = FullyConnected.FullyConnected(self.input_size, 10)
        layer.initialize(initializer, Initializers.Constant(0.5))
        assert (initializer.fan_in, initializer.fan_out) == (self.input_size, 10)
        # The course's one-sided check: 35 = 3 * 10 + 0.5 * 10 for (input_size + 1, 10) storage.
        expected = 17 if layer.weights.shape[0] > layer.weights.shape[1] else 35
        assert np.sum(layer.weights) - expected <= 1e-5
        assert layer.weights.shape == (self.input_size + 1, 10)
        assert np.sum(layer.weights) == pytest.approx(35, abs=1e-12)

    def test_weights_setter_splits_the_bias_row_and_rejects_other_shapes(self):
        layer = FullyConnected.FullyConnected(self.input_size, self.output_size)
        weights = np.random.rand(self.input_size + 1, self.output_size)
        layer.weights = weights
        np.testing.assert_array_equal(layer.weights, weights)
        np.testing.assert_allclose(layer.forward(self.input_tensor),
                                   self.input_tensor @ weights[:-1] + weights[-1], rtol=1e-12)
        with pytest.raises(ValueError, match="bias as last row"):
            layer.weights = weights.T

    def test_no_update_without_optimizer(self):
        layer = FullyConnected.FullyConnected(self.input_size, self.output_size)
        weights = layer.weights
        layer.backward(layer.forward(self.input_tensor))
        np.testing.assert_array_equal(layer.weights, weights)

    def test_gradient_weights_is_augmented_input_times_error(self):
        layer = FullyConnected.FullyConnected(self.input_size, self.output_size)
        layer.forward(self.input_tensor)
        error = np.random.rand(self.batch_size, self.output_size)
        dx = layer.backward(error)
        augmented = np.hstack([self.input_tensor, np.ones((self.batch_size, 1))])
        np.testing.assert_allclose(layer.gradient_weights, augmented.T @ error, rtol=1e-12)
        np.testing.assert_allclose(dx, error @ layer.weights[:-1].T, rtol=1e-12)


# 5.2 -------------------------------------------------------------------------------------
class TestReLU:
    input_size, batch_size = 5, 10

    def setup_method(self):
        self.half_batch_size = self.batch_size // 2
        self.input_tensor = np.ones([self.batch_size, self.input_size])
        self.input_tensor[0:self.half_batch_size, :] -= 2
        self.label_tensor = random_one_hot(self.batch_size, self.input_size)

    def test_trainable(self):
        assert not ReLU.ReLU().trainable

    def test_forward(self):
        expected = np.zeros([self.batch_size, self.input_size])
        expected[self.half_batch_size:self.batch_size, :] = 1
        assert np.sum(np.power(ReLU.ReLU().forward(self.input_tensor) - expected, 2)) == 0

    def test_backward(self):
        expected = np.zeros([self.batch_size, self.input_size])
        expected[self.half_batch_size:self.batch_size, :] = 2
        layer = ReLU.ReLU()
        layer.forward(self.input_tensor)
        assert np.sum(np.power(layer.backward(self.input_tensor * 2) - expected, 2)) == 0

    def test_gradient(self):
        input_tensor = np.abs(np.random.random((self.batch_size, self.input_size))) * 2.0 - 1.0
        assert gradient_error([ReLU.ReLU(), L2Loss()], input_tensor, self.label_tensor) <= 1e-5


# 5.3 / 5.4 -------------------------------------------------------------------------------
class _Activation:
    input_size, batch_size = 5, 10

    def setup_method(self):
        self.input_tensor = np.abs(np.random.random((self.input_size, self.batch_size))).T * 2 - 1
        self.label_tensor = random_one_hot(self.batch_size, self.input_size)


class TestTanH(_Activation):
    def test_trainable(self):
        assert not TanH.TanH().trainable

    def test_forward(self):
        expected = 1. - 2. / (np.exp(2 * self.input_tensor) + 1.)
        output = TanH.TanH().forward(self.input_tensor)
        assert np.sum(np.power(output - expected, 2)) == pytest.approx(0, abs=0.5e-7)

    def test_range(self):
        output = TanH.TanH().forward(self.input_tensor * 2)
        assert np.max(output) <= 1 and np.min(output) >= -1

    def test_gradient(self):
        assert gradient_error([TanH.TanH(), L2Loss()], self.input_tensor, self.label_tensor) <= 1e-5


class TestSigmoid(_Activation):
    def test_trainable(self):
        assert not Sigmoid.Sigmoid().trainable

    def test_forward(self):
        expected = 0.5 * (1. + np.tanh(self.input_tensor / 2.))
        output = Sigmoid.Sigmoid().forward(self.input_tensor)
        assert np.sum(np.power(output - expected, 2)) == pytest.approx(0, abs=0.5e-7)

    def test_range(self):
        output = Sigmoid.Sigmoid().forward(self.input_tensor * 2)
        assert np.max(output) <= 1 and np.min(output) >= 0

    def test_gradient(self):
        assert gradient_error([Sigmoid.Sigmoid(), L2Loss()], self.input_tensor, self.label_tensor) <= 1e-5


# 5.5 -------------------------------------------------------------------------------------
class TestSoftMax:
    batch_size, categories = 9, 4

    def setup_method(self):
        self.label_tensor = random_one_hot(self.batch_size, self.categories)

    def test_trainable(self):
        assert not SoftMax.SoftMax().trainable

    def test_forward_shift(self):
        prediction = SoftMax.SoftMax().forward(np.zeros(self.label_tensor.shape) + 10000.)
        assert not np.isnan(np.sum(prediction))

    def test_forward_zero_loss(self):
        prediction = SoftMax.SoftMax().forward(self.label_tensor * 100.)
        assert L2Loss().forward(prediction, self.label_tensor) < 1e-10

    def test_backward_zero_loss(self):
        layer = SoftMax.SoftMax()
        prediction = layer.forward(self.label_tensor * 100.)
        loss_layer = Loss.CrossEntropyLoss()
        loss_layer.forward(prediction, self.label_tensor)
        error = layer.backward(loss_layer.backward(self.label_tensor))
        assert np.sum(error) == pytest.approx(0, abs=0.5e-7)

    def test_regression_high_loss(self):
        prediction = SoftMax.SoftMax().forward(-100. * (self.label_tensor - 1.))
        assert L2Loss().forward(prediction, self.label_tensor) == pytest.approx(12, abs=0.5e-7)

    def high_loss_error(self, scale):
        """SoftMax -> CrossEntropyLoss on input scale * (label - 1), back-propagated."""
        layer, loss_layer = SoftMax.SoftMax(), Loss.CrossEntropyLoss()
        prediction = layer.forward(scale * (self.label_tensor - 1.))
        loss_layer.forward(prediction, self.label_tensor)
        return layer.backward(loss_layer.backward(self.label_tensor))

    def test_regression_backward_high_loss_w_CrossEntropy(self):  # noqa: N802 (the course's name)
        error = self.high_loss_error(-10.)  # 2023+ edition
        for element in error[self.label_tensor == 0]:
            assert element == pytest.approx(1 / 3, abs=0.5e-3)
        for element in error[self.label_tensor == 1]:
            assert element == pytest.approx(-1, abs=0.5e-3)

    def test_regression_backward_high_loss_w_CrossEntropy_2022(self):  # noqa: N802 (the course's name)
        # The true class's probability is e^-100 / 3 ~ 1e-44, far below eps: the loss's
        # backward must be -label / y_hat there, not -label / (y_hat + eps).
        error = self.high_loss_error(-100.)
        for element in error[self.label_tensor == 0]:
            assert element >= 1 / 3
        for element in error[self.label_tensor == 1]:
            assert element == pytest.approx(-1, abs=0.5e-7)

    def test_regression_forward(self):
        np.random.seed(1337)
        prediction = SoftMax.SoftMax().forward(np.abs(np.random.random(self.label_tensor.shape)))
        assert L2Loss().forward(prediction, self.label_tensor) > 0.

    def test_regression_backward(self):
        layer = SoftMax.SoftMax()
        layer.forward(np.abs(np.random.random(self.label_tensor.shape)))
        error = layer.backward(self.label_tensor)
        assert np.all(error[self.label_tensor == 0] <= 0)
        assert np.all(error[self.label_tensor == 1] >= 0)

    def test_gradient(self):
        input_tensor = np.abs(np.random.random(self.label_tensor.shape))
        assert gradient_error([SoftMax.SoftMax(), L2Loss()], input_tensor, self.label_tensor) <= 1e-5

    def test_predict(self):
        input_tensor = np.arange(self.categories * self.batch_size).reshape((self.categories, self.batch_size)).T / 100.
        prediction = SoftMax.SoftMax().forward(input_tensor)
        expected = np.array([0.21732724, 0.23779387, 0.26018794, 0.28469095])
        for row in prediction:
            np.testing.assert_almost_equal(row, expected, decimal=7)


# 5.6 -------------------------------------------------------------------------------------
class TestCrossEntropyLoss:
    batch_size, categories = 9, 4

    def setup_method(self):
        self.label_tensor = random_one_hot(self.batch_size, self.categories)

    def test_gradient(self):
        input_tensor = np.abs(np.random.random(self.label_tensor.shape))
        assert gradient_error([Loss.CrossEntropyLoss()], input_tensor, self.label_tensor) <= 1e-4

    def test_zero_loss(self):
        loss = Loss.CrossEntropyLoss().forward(self.label_tensor, self.label_tensor)
        assert loss == pytest.approx(0, abs=0.5e-7)

    def test_high_loss(self):
        label_tensor = np.zeros((self.batch_size, self.categories))
        label_tensor[:, 2] = 1
        input_tensor = np.zeros_like(label_tensor)
        input_tensor[:, 1] = 1
        loss = Loss.CrossEntropyLoss().forward(input_tensor, label_tensor)
        assert isinstance(loss, float)
        assert loss == pytest.approx(324.3928805, abs=0.5e-4)

    def test_backward_is_minus_label_over_prediction(self):
        loss_layer = Loss.CrossEntropyLoss()
        prediction = np.random.rand(self.batch_size, self.categories)
        prediction[0] = 1e-300  # far below eps: still -label / prediction
        loss_layer.forward(prediction, self.label_tensor)
        expected = -self.label_tensor / prediction
        np.testing.assert_allclose(loss_layer.backward(self.label_tensor), expected, rtol=1e-15)

    def test_backward_is_finite_at_zero_prediction(self):
        loss_layer = Loss.CrossEntropyLoss()
        loss = loss_layer.forward(np.zeros((self.batch_size, self.categories)), self.label_tensor)
        assert loss == pytest.approx(-self.batch_size * np.log(np.finfo(float).eps))
        error = loss_layer.backward(self.label_tensor)
        np.testing.assert_array_equal(error, -self.label_tensor / np.finfo(float).tiny)


# 5.7 -------------------------------------------------------------------------------------
class TestOptimizers:
    def test_sgd(self):
        optimizer = Optimizers.Sgd(1.)
        result = optimizer.calculate_update(1., 1.)
        np.testing.assert_almost_equal(result, np.array([0.]))
        result = optimizer.calculate_update(result, 1.)
        np.testing.assert_almost_equal(result, np.array([-1.]))

    def test_sgd_with_momentum(self):
        optimizer = Optimizers.SgdWithMomentum(1., 0.9)
        result = optimizer.calculate_update(1., 1.)
        np.testing.assert_almost_equal(result, np.array([0.]))
        result = optimizer.calculate_update(result, 1.)
        np.testing.assert_almost_equal(result, np.array([-1.9]))

    def test_adam(self):
        optimizer = Optimizers.Adam(1., 0.01, 0.02)
        result = optimizer.calculate_update(1., 1.)
        np.testing.assert_almost_equal(result, np.array([0.]))
        result = optimizer.calculate_update(result, .5)
        np.testing.assert_almost_equal(result, np.array([-0.9814473195614205]))

    def test_arrays_keep_their_shape(self):
        result = Optimizers.Sgd(0.5).calculate_update(np.ones((2, 3)), np.ones((2, 3)))
        assert isinstance(result, np.ndarray) and result.shape == (2, 3)
        np.testing.assert_array_equal(result, 0.5)

    def test_invalid_hyperparameters_fail_at_construction(self):
        with pytest.raises(ValueError, match="learning_rate"):
            Optimizers.Sgd(0)
        with pytest.raises(ValueError, match="momentum"):
            Optimizers.SgdWithMomentum(1e-3, 1.5)
        with pytest.raises(ValueError, match="beta2"):
            Optimizers.Adam(1e-3, 0.9, 1.0)

    def test_state_is_per_instance(self):
        first, second = Optimizers.SgdWithMomentum(1., 0.9), Optimizers.SgdWithMomentum(1., 0.9)
        first.calculate_update(1., 1.)
        assert second.calculate_update(1., 1.) == pytest.approx(0.)


# 5.8 -------------------------------------------------------------------------------------
class TestInitializers:
    class DummyLayer:
        def __init__(self, input_size, output_size):
            self.weights = []
            self.shape = (output_size, input_size)

        def initialize(self, initializer):
            self.weights = initializer.initialize(self.shape, self.shape[1], self.shape[0])

    batch_size, input_size, output_size = 9, 400, 400

    def _performInitialization(self, initializer):  # noqa: N802 (the course's name)
        np.random.seed(1337)
        layer = self.DummyLayer(self.input_size, self.output_size)
        layer.initialize(initializer)
        return layer.weights, layer.shape

    def test_uniform_shape(self):
        weights, shape = self._performInitialization(Initializers.UniformRandom())
        assert weights.shape == shape

    def test_uniform_distribution(self):
        weights, _ = self._performInitialization(Initializers.UniformRandom())
        assert stats.kstest(weights.flat, "uniform").pvalue > 0.01

    def test_xavier_shape(self):
        weights, shape = self._performInitialization(Initializers.Xavier())
        assert weights.shape == shape

    def test_xavier_distribution(self):
        weights, shape = self._performInitialization(Initializers.Xavier())
        scale = np.sqrt(2) / np.sqrt(shape[0] + shape[1])
        assert stats.kstest(weights.flat, "norm", args=(0, scale)).pvalue > 0.01

    def test_he_shape(self):
        weights, shape = self._performInitialization(Initializers.He())
        assert weights.shape == shape

    def test_he_distribution(self):
        weights, shape = self._performInitialization(Initializers.He())
        scale = np.sqrt(2) / np.sqrt(shape[1])
        assert stats.kstest(weights.flat, "norm", args=(0, scale)).pvalue > 0.01

    def test_constant(self):
        np.testing.assert_array_equal(Initializers.Constant().initialize((2, 3), 3, 2), np.full((2, 3), 0.1))

    def test_core_stddev_is_the_drawn_scale(self):
        import jax
        from jaxdl import initializers
        assert initializers.He().stddev(400, 300) == pytest.approx(np.sqrt(2 / 400), rel=1e-15)
        assert initializers.Xavier().stddev(400, 300) == pytest.approx(np.sqrt(2 / 700), rel=1e-15)
        draws = initializers.He()(jax.random.key(0), (400, 400), 400, 400, np.float64)
        assert np.std(np.asarray(draws)) == pytest.approx(initializers.He().stddev(400), rel=0.01)

    def test_seeded_numpy_generator_reproduces(self):
        np.random.seed(7)
        first = Initializers.He().initialize((5, 5), 5, 5)
        np.random.seed(7)
        np.testing.assert_array_equal(Initializers.He().initialize((5, 5), 5, 5), first)


# 5.9 -------------------------------------------------------------------------------------
class TestFlatten:
    batch_size, input_shape = 9, (3, 4, 11)

    def setup_method(self):
        self.input_tensor = np.array(range(int(np.prod(self.input_shape) * self.batch_size)), dtype=float)
        self.input_tensor = self.input_tensor.reshape(self.batch_size, *self.input_shape)

    def test_trainable(self):
        assert not Flatten.Flatten().trainable

    def test_flatten_forward(self):
        output = Flatten.Flatten().forward(self.input_tensor)
        expected = self.input_tensor.reshape(self.batch_size, int(np.prod(self.input_shape)))
        assert np.sum(np.abs(output - expected)) <= 1e-9

    def test_flatten_backward(self):
        layer = Flatten.Flatten()
        output = layer.backward(layer.forward(self.input_tensor))
        assert np.sum(np.abs(output - self.input_tensor)) <= 1e-9


# 5.10 ------------------------------------------------------------------------------------
SMOOTHING = np.array([[1, 2, 1], [2, 3, 2], [1, 2, 1]]) / 15.


def smoothed(image):
    return gaussian_filter(image, 0.85, mode="constant", cval=0.0, truncate=1.0)


class CentreTapInitializer:
    """The course's Conv TestInitializer: a (1, 3, 3, 3) kernel copying channel 1."""

    def __init__(self):
        self.fan_in = self.fan_out = None

    def initialize(self, shape, fan_in, fan_out):
        self.fan_in, self.fan_out = fan_in, fan_out
        weights = np.zeros((1, 3, 3, 3))
        weights[0, 1, 1, 1] = 1
        return weights


class TestConv:
    batch_size = 2
    input_shape = (3, 10, 14)
    uneven_input_shape = (3, 11, 15)
    kernel_shape = (3, 5, 8)
    num_kernels = 4
    hidden_channels = 3
    categories = 105

    def setup_method(self):
        self.label_tensor = random_one_hot(self.batch_size, self.categories)

    def test_trainable(self):
        assert Conv.Conv((1, 1), self.kernel_shape, self.num_kernels).trainable

    def test_forward_size(self):
        conv = Conv.Conv((1, 1), self.kernel_shape, self.num_kernels)
        input_tensor = np.array(range(int(np.prod(self.input_shape) * self.batch_size)), dtype=float)
        output = conv.forward(input_tensor.reshape(self.batch_size, *self.input_shape))
        assert output.shape == (self.batch_size, self.num_kernels, *self.input_shape[1:])

    def test_forward_size_stride(self):
        conv = Conv.Conv((3, 2), self.kernel_shape, self.num_kernels)
        input_tensor = np.array(range(int(np.prod(self.input_shape) * self.batch_size)), dtype=float)
        output = conv.forward(input_tensor.reshape(self.batch_size, *self.input_shape))
        assert output.shape == (self.batch_size, self.num_kernels, 4, 7)

    def test_forward_size_stride_uneven_image(self):
        conv = Conv.Conv((3, 2), self.kernel_shape, self.num_kernels + 1)
        input_tensor = np.array(range(int(np.prod(self.uneven_input_shape) * (self.batch_size + 1))), dtype=float)
        output = conv.forward(input_tensor.reshape(self.batch_size + 1, *self.uneven_input_shape))
        assert output.shape == (self.batch_size + 1, self.num_kernels + 1, 4, 8)

    def test_forward(self):
        np.random.seed(1337)
        conv = Conv.Conv((1, 1), (1, 3, 3), 1)
        conv.weights = SMOOTHING[None, None]
        conv.bias = np.array([0])
        input_tensor = np.random.random((1, 1, 10, 14))
        difference = np.max(np.abs(np.squeeze(conv.forward(input_tensor)) - smoothed(input_tensor[0, 0])))
        assert difference == pytest.approx(0., abs=0.05)

    def test_forward_multi_channel(self):
        np.random.seed(1337)
        maps_in, bias = 2, 1
        conv = Conv.Conv((1, 1), (maps_in, 3, 3), 1)
        conv.weights = np.repeat(SMOOTHING[None, None], maps_in, axis=1)
        conv.bias = np.array([bias])
        input_tensor = np.random.random((1, maps_in, 10, 14))
        expected = bias + sum(smoothed(input_tensor[0, i]) for i in range(maps_in))
        difference = np.max(np.abs(np.squeeze(conv.forward(input_tensor)) - expected) / maps_in)
        assert difference == pytest.approx(0., abs=0.05)

    def test_forward_fully_connected_channels(self):
        np.random.seed(1337)
        conv = Conv.Conv((1, 1), (3, 3, 3), 1)
        conv.weights = np.repeat(SMOOTHING[None, None], 3, axis=1)
        conv.bias = np.array([0])
        channel = np.random.random((1, 1, 10, 14))
        input_tensor = np.concatenate([channel] * 3, axis=1)
        expected = 3 * smoothed(channel[0, 0])
        assert np.max(np.abs(np.squeeze(conv.forward(input_tensor)) - expected)) < 0.2

    def test_1D_forward_size(self):  # noqa: N802
        conv = Conv.Conv([2], (3, 3), self.num_kernels)
        output = conv.forward(np.array(range(3 * 15 * self.batch_size), dtype=float).reshape((self.batch_size, 3, 15)))
        assert output.shape == (self.batch_size, self.num_kernels, 8)

    def test_1D_with_a_2D_stride_uses_its_first_entry(self):  # noqa: N802
        input_tensor = np.random.rand(self.batch_size, 3, 15)
        reference = Conv.Conv([2], (3, 3), self.num_kernels)
        conv = Conv.Conv((2, 2), (3, 3), self.num_kernels)
        conv.weights, conv.bias = reference.weights, reference.bias
        np.testing.assert_array_equal(conv.forward(input_tensor), reference.forward(input_tensor))

    def test_backward_size(self):
        conv = Conv.Conv((1, 1), self.kernel_shape, self.num_kernels)
        input_tensor = np.array(range(int(np.prod(self.input_shape) * self.batch_size)), dtype=float)
        output = conv.forward(input_tensor.reshape(self.batch_size, *self.input_shape))
        assert conv.backward(output).shape == (self.batch_size, *self.input_shape)

    def test_backward_size_stride(self):
        conv = Conv.Conv((3, 2), self.kernel_shape, self.num_kernels)
        input_tensor = np.array(range(int(np.prod(self.input_shape) * self.batch_size)), dtype=float)
        output = conv.forward(input_tensor.reshape(self.batch_size, *self.input_shape))
        assert conv.backward(output).shape == (self.batch_size, *self.input_shape)

    def test_1D_backward_size(self):  # noqa: N802
        conv = Conv.Conv([2], (3, 3), self.num_kernels)
        input_tensor = np.array(range(45 * self.batch_size), dtype=float).reshape((self.batch_size, 3, 15))
        assert conv.backward(conv.forward(input_tensor)).shape == (self.batch_size, 3, 15)

    def test_1x1_convolution(self):
        conv = Conv.Conv((1, 1), (3, 1, 1), self.num_kernels)
        input_tensor = np.array(range(int(np.prod(self.input_shape) * self.batch_size)), dtype=float)
        output = conv.forward(input_tensor.reshape(self.batch_size, *self.input_shape))
        assert output.shape == (self.batch_size, self.num_kernels, *self.input_shape[1:])
        assert conv.backward(output).shape == (self.batch_size, *self.input_shape)

    def test_layout_preservation(self):
        conv = Conv.Conv((1, 1), (3, 3, 3), 1)
        conv.initialize(CentreTapInitializer(), Initializers.Constant(0.0))
        input_tensor = np.random.random((self.batch_size, *self.input_shape))
        output = conv.forward(input_tensor)
        assert np.sum(np.abs(np.squeeze(output) - input_tensor[:, 1, :, :])) == pytest.approx(0., abs=0.5e-7)

    def test_gradient(self):
        np.random.seed(1337)
        input_tensor = np.abs(np.random.random((2, 3, 5, 7)))
        layers = [Conv.Conv((1, 1), (3, 3, 3), self.hidden_channels), Flatten.Flatten(), L2Loss()]
        assert gradient_error(layers, input_tensor, self.label_tensor) <= 5e-2

    def test_gradient_weights(self):
        np.random.seed(1337)
        input_tensor = np.abs(np.random.random((2, 3, 5, 7)))
        layers = [Conv.Conv((1, 1), (3, 3, 3), self.hidden_channels), Flatten.Flatten(), L2Loss()]
        assert weights_gradient_error(layers, input_tensor, self.label_tensor, False) <= 1e-5

    def test_gradient_weights_strided(self):
        np.random.seed(1337)
        label_tensor = np.random.random([self.batch_size, 36])
        input_tensor = np.abs(np.random.random((2, 3, 5, 7)))
        layers = [Conv.Conv((2, 2), (3, 3, 3), self.hidden_channels), Flatten.Flatten(), L2Loss()]
        assert weights_gradient_error(layers, input_tensor, label_tensor, False) <= 1e-5

    def test_gradient_bias(self):
        np.random.seed(1337)
        input_tensor = np.abs(np.random.random((2, 3, 5, 7)))
        layers = [Conv.Conv((1, 1), (3, 3, 3), self.hidden_channels), Flatten.Flatten(), L2Loss()]
        assert weights_gradient_error(layers, input_tensor, self.label_tensor, True) <= 1e-5

    def test_weights_init(self):
        conv = Conv.Conv((1, 1), (100, 10, 10), 150)
        assert np.mean(np.abs(conv.weights)) > 1e-3

    def test_bias_init(self):
        conv = Conv.Conv((1, 1), (1, 1, 1), 150 * 100 * 10 * 10)
        assert np.mean(np.abs(conv.bias)) > 1e-3

    def test_gradient_stride(self):
        np.random.seed(1337)
        label_tensor = np.random.random([self.batch_size, 35])
        input_tensor = np.abs(np.random.random((2, 6, 5, 14)))
        layers = [Conv.Conv((1, 2), (6, 3, 3), 1), Flatten.Flatten(), L2Loss()]
        assert gradient_error(layers, input_tensor, label_tensor) <= 1e-4

    def test_update(self):
        input_tensor = np.random.uniform(-1, 1, (self.batch_size, *self.input_shape))
        conv = Conv.Conv((3, 2), self.kernel_shape, self.num_kernels)
        conv.optimizer = Optimizers.Sgd(1)
        conv.initialize(Initializers.He(), Initializers.Constant(0.1))
        assert_update_grows(conv, input_tensor)

    def test_initialization(self):
        initializer = CentreTapInitializer()
        conv = Conv.Conv((1, 1), self.kernel_shape, self.num_kernels)
        conv.initialize(initializer, Initializers.Constant(0.1))
        assert initializer.fan_in == np.prod(self.kernel_shape)
        assert initializer.fan_out == np.prod(self.kernel_shape[1:]) * self.num_kernels


# 5.11 ------------------------------------------------------------------------------------
class TestPooling:
    batch_size, input_shape, categories = 2, (2, 4, 7), 12

    def setup_method(self):
        np.random.seed(1337)
        self.input_tensor = np.random.uniform(-1, 1, (self.batch_size, *self.input_shape))
        self.label_tensor = random_one_hot(self.batch_size, self.categories)

    def test_trainable(self):
        assert not Pooling.Pooling((2, 2), (2, 2)).trainable

    @pytest.mark.parametrize("stride, expected", [((2, 2), (2, 2, 2, 3)), ((2, 1), (2, 2, 2, 6)), ((3, 2), (2, 2, 1, 3))])
    def test_shapes(self, stride, expected):  # the course's test_shape / _overlapping_ / _subsampling_shape
        assert Pooling.Pooling(stride, (2, 2)).forward(self.input_tensor).shape == expected

    def test_gradient_stride(self):
        layers = [Pooling.Pooling((2, 2), (2, 2)), Flatten.Flatten(), L2Loss()]
        assert gradient_error(layers, self.input_tensor, self.label_tensor) <= 1e-6

    def test_gradient_overlapping_stride(self):
        label_tensor = np.random.random((self.batch_size, 24))
        layers = [Pooling.Pooling((2, 1), (2, 2)), Flatten.Flatten(), L2Loss()]
        assert gradient_error(layers, self.input_tensor, label_tensor) <= 1e-6

    def test_gradient_subsampling_stride(self):
        label_tensor = np.random.random((self.batch_size, 6))
        layers = [Pooling.Pooling((3, 2), (2, 2)), Flatten.Flatten(), L2Loss()]
        assert gradient_error(layers, self.input_tensor, label_tensor) <= 1e-6

    def test_layout_preservation(self):
        output = Pooling.Pooling((1, 1), (1, 1)).forward(self.input_tensor)
        assert np.sum(np.abs(output - self.input_tensor)) == pytest.approx(0., abs=0.5e-7)

    def test_expected_output_valid_edgecase(self):
        input_tensor = np.array(range(18)).reshape((2, 1, 3, 3))
        result = Pooling.Pooling((2, 2), (2, 2)).forward(input_tensor)
        assert np.sum(np.abs(result - np.array([[[[4]]], [[[13]]]]))) == 0

    def test_expected_output(self):
        input_tensor = np.array(range(32)).reshape((2, 1, 4, 4))
        result = Pooling.Pooling((2, 2), (2, 2)).forward(input_tensor)
        expected = np.array([[[[5, 7], [13, 15]]], [[[21, 23], [29, 31]]]])
        assert np.sum(np.abs(result - expected)) == 0

    def test_backward_routes_to_argmax(self):
        layer = Pooling.Pooling((2, 2), (2, 2))
        input_tensor = np.array(range(32), dtype=float).reshape((2, 1, 4, 4))
        layer.forward(input_tensor)
        error = layer.backward(np.ones((2, 1, 2, 2)))
        expected = np.zeros_like(input_tensor)
        expected[:, :, 1::2, 1::2] = 1
        np.testing.assert_array_equal(error, expected)


# Compilation: once per layer configuration and shape, never per call or per instance ------
def test_no_recompilation_per_call_or_instance():
    from jaxdl.exercise import _engine
    if not hasattr(_engine.forward_with_vjp, "_cache_size"):
        pytest.skip("this jax version does not expose jit cache sizes")
    jitted = (_engine.forward_with_vjp, _engine.forward, _engine.backward, _engine.backward_and_update)
    x = np.random.rand(6, 5)

    def run():
        fc = FullyConnected.FullyConnected(5, 4)
        fc.optimizer = Optimizers.Adam(1e-3, 0.9, 0.999)
        layers = [fc, ReLU.ReLU(), SoftMax.SoftMax()]
        h = x
        for layer in layers:
            h = layer.forward(h)
        error = np.random.rand(*h.shape)
        for layer in reversed(layers):
            error = layer.backward(error)
        layers[0].testing_phase = True
        layers[0].forward(np.random.rand(6, 5))

    run()
    run()
    sizes = [f._cache_size() for f in jitted]
    for _ in range(3):
        run()
    assert [f._cache_size() for f in jitted] == sizes
