"""The course's Exercise 3 checks of constraints, dropout and batch norm (reference 5.12-5.14).

Imported through a scaffolded course directory, as the course's NeuralNetworkTests.py does.
Numbers and thresholds are the course's.
"""

import numpy as np
import pytest

from exercise_course import L2Loss, course_modules, random_one_hot

# Filled by the `course` fixture with the scaffolded modules.
FullyConnected = Flatten = Dropout = BatchNormalization = Helpers = None
Optimizers = Constraints = Loss = None


@pytest.fixture(scope="module", autouse=True)
def course(tmp_path_factory):
    with course_modules(tmp_path_factory.mktemp("course")) as names:
        globals().update(names)
        yield names


# 5.12 ------------------------------------------------------------------------------------
class TestConstraints:
    regularizer_strength = 1337
    shape = (4, 5)

    def test_L1(self):  # noqa: N802 (the course's names)
        regularizer = Constraints.L1_Regularizer(self.regularizer_strength)
        weights_tensor = np.ones(self.shape)
        weights_tensor[1:3, 2:4] *= -2
        weights_tensor = regularizer.calculate_gradient(weights_tensor)
        expected = np.ones(self.shape) * self.regularizer_strength
        expected[1:3, 2:4] *= -1
        assert np.sum(np.abs(weights_tensor - expected)) <= 1e-10

    def test_L1_norm(self):  # noqa: N802
        regularizer = Constraints.L1_Regularizer(self.regularizer_strength)
        weights_tensor = np.ones(self.shape)
        weights_tensor[1:3, 2:4] *= -2
        norm = regularizer.norm(weights_tensor)
        assert norm == pytest.approx(24 * self.regularizer_strength, abs=0.5e-7)

    def test_L2(self):  # noqa: N802
        regularizer = Constraints.L2_Regularizer(self.regularizer_strength)
        weights_tensor = regularizer.calculate_gradient(np.ones(self.shape))
        assert np.sum(np.abs(weights_tensor - np.ones(self.shape) * self.regularizer_strength)) <= 1e-10

    def test_L2_norm(self):  # noqa: N802
        regularizer = Constraints.L2_Regularizer(self.regularizer_strength)
        weights_tensor = np.ones(self.shape)
        weights_tensor[1:3, 2:4] += 1
        norm = regularizer.norm(weights_tensor)
        assert norm == pytest.approx(32 * self.regularizer_strength, abs=0.5e-7)

    @pytest.mark.parametrize("make_optimizer, make_regularizer, expected, places", [
        (lambda: Optimizers.Sgd(2), lambda: Constraints.L1_Regularizer(2), -116, 2),
        (lambda: Optimizers.Sgd(2), lambda: Constraints.L2_Regularizer(2), 268, 2),
        (lambda: Optimizers.SgdWithMomentum(2, 0.9), lambda: Constraints.L1_Regularizer(2), -188, 1),
        (lambda: Optimizers.SgdWithMomentum(2, 0.9), lambda: Constraints.L2_Regularizer(2), 196, 1),
        (lambda: Optimizers.Adam(2, 0.9, 0.999), lambda: Constraints.L1_Regularizer(2), -68, 2),
        (lambda: Optimizers.Adam(2, 0.9, 0.999), lambda: Constraints.L2_Regularizer(2), 188, 2),
    ], ids=["L1_with_sgd", "L2_with_sgd", "L1_with_sgd_w_momentum", "L2_with_sgd_w_momentum",
            "L1_with_adam", "L2_with_adam"])
    def test_regularizer_with_optimizer(self, make_optimizer, make_regularizer, expected, places):
        weights_tensor = np.ones(self.shape)
        weights_tensor[1:3, 2:4] *= -1
        optimizer = make_optimizer()
        optimizer.add_regularizer(make_regularizer())
        result = optimizer.calculate_update(weights_tensor, np.ones(self.shape) * 2)
        result = optimizer.calculate_update(result, np.ones(self.shape) * 2)
        np.testing.assert_almost_equal(np.sum(result), expected, places)

    def test_optimizers_inherit_the_base_class(self):
        for optimizer in (Optimizers.Sgd(1), Optimizers.SgdWithMomentum(1, 0.9), Optimizers.Adam(1, 0.9, 0.999)):
            assert isinstance(optimizer, Optimizers.Optimizer)
            assert optimizer.regularizer is None


# 5.13 ------------------------------------------------------------------------------------
class TestDropout:
    batch_size, input_size = 10000, 10

    def setup_method(self):
        self.input_tensor = np.ones((self.batch_size, self.input_size))

    def test_trainable(self):
        assert not Dropout.Dropout(0.25).trainable

    def test_default_phase(self):
        assert not Dropout.Dropout(0.25).testing_phase

    def test_forward_trainTime(self):  # noqa: N802 (the course's names)
        output = Dropout.Dropout(0.25).forward(self.input_tensor)
        assert np.max(output) == 4
        assert np.min(output) == 0
        sum_over_mean = np.sum(np.mean(output, axis=0))
        assert sum_over_mean / self.input_size == pytest.approx(1., abs=0.05)

    def test_position_preservation(self):
        layer = Dropout.Dropout(0.5)
        output = layer.forward(self.input_tensor)
        error_prev = layer.backward(self.input_tensor)
        use_same_positions = np.logical_and(output == 0, error_prev == 0)
        assert np.sum(use_same_positions) == np.sum(output == 0)

    def test_forward_testTime(self):  # noqa: N802
        layer = Dropout.Dropout(0.5)
        layer.testing_phase = True
        output = layer.forward(self.input_tensor)
        assert np.max(output) == 1.
        assert np.min(output) == 1.
        assert np.sum(np.mean(output, axis=0)) == 1. * self.input_size

    def test_backward(self):
        layer = Dropout.Dropout(0.5)
        layer.forward(self.input_tensor)
        output = layer.backward(self.input_tensor)
        assert np.max(output) == 2
        assert np.min(output) == 0

    def test_gradient(self):
        batch_size = 10
        input_tensor = np.ones((batch_size, self.input_size))
        label_tensor = random_one_hot(batch_size, self.input_size)
        layers = [Dropout.Dropout(0.5), L2Loss()]
        difference = Helpers.gradient_check(layers, input_tensor, label_tensor, seed=1337)
        assert np.sum(difference) <= 1e-5

    def test_mask_comes_from_numpy_global_generator(self):
        layer = Dropout.Dropout(0.5)
        np.random.seed(3)
        first = layer.forward(self.input_tensor[:20])
        np.random.seed(3)
        np.testing.assert_array_equal(layer.forward(self.input_tensor[:20]), first)
        np.random.seed(3)
        np.testing.assert_array_equal(first != 0, np.random.rand(20, self.input_size) < 0.5)


# 5.14 ------------------------------------------------------------------------------------
def channel_moments(tensor, channels):
    tensor = np.transpose(tensor, (0, *range(2, tensor.ndim), 1))
    tensor = tensor.reshape(-1, channels)
    return np.mean(tensor, axis=0), np.var(tensor, axis=0)


class TestBatchNorm:
    batch_size, channels, input_shape, categories = 200, 2, (2, 3, 3), 5

    def setup_method(self):
        self.input_size = int(np.prod(self.input_shape))
        np.random.seed(0)
        self.input_tensor = np.abs(np.random.random((self.batch_size, self.input_size)))
        self.input_tensor_conv = np.random.uniform(-1, 1, (self.batch_size, *self.input_shape))
        self.label_tensor = random_one_hot(self.batch_size, self.categories)
        self.layers = [None, Flatten.Flatten(), FullyConnected.FullyConnected(self.input_size, self.categories), L2Loss()]

    def test_trainable(self):
        assert BatchNormalization.BatchNormalization(self.input_size).trainable

    def test_default_phase(self):
        assert not BatchNormalization.BatchNormalization(self.input_size).testing_phase

    def test_forward_shape(self):
        output = BatchNormalization.BatchNormalization(self.input_size).forward(self.input_tensor)
        assert output.shape == self.input_tensor.shape

    def test_forward_shape_convolutional(self):
        output = BatchNormalization.BatchNormalization(self.channels).forward(self.input_tensor_conv)
        assert output.shape == self.input_tensor_conv.shape

    def test_forward(self):
        output = BatchNormalization.BatchNormalization(self.input_tensor.shape[-1]).forward(self.input_tensor)
        mean, var = np.mean(output, axis=0), np.var(output, axis=0)
        assert np.sum(np.square(mean - np.zeros(mean.shape[0]))) == pytest.approx(0, abs=0.5e-7)
        assert np.sum(np.square(var - np.ones(var.shape[0]))) == pytest.approx(0, abs=0.5e-7)

    def test_reformat_image2vec(self):
        layer = BatchNormalization.BatchNormalization(3)
        vec_tensor = layer.reformat(np.arange(0, 5 * 3 * 6 * 4).reshape(5, 3, 6, 4))
        assert vec_tensor.shape == (120, 3)
        assert np.sum(vec_tensor, 1)[0] == 72
        assert np.sum(vec_tensor, 0)[0] == 18660

    def test_reformat_vec2image(self):
        layer = BatchNormalization.BatchNormalization(3)
        layer.forward(np.arange(0, 5 * 3 * 6 * 4).reshape(5, 3, 6, 4))
        image_tensor = layer.reformat(np.arange(0, 5 * 3 * 6 * 4).reshape(120, 3))
        assert image_tensor.shape == (5, 3, 6, 4)
        assert np.sum(image_tensor, (0, 1, 2))[0] == 15750
        assert np.sum(image_tensor, (0, 2, 3))[0] == 21420

    def test_reformat(self):
        layer = BatchNormalization.BatchNormalization(3)
        image_tensor = np.arange(0, 5 * 3 * 6 * 4).reshape(5, 3, 6, 4)
        np.testing.assert_allclose(layer.reformat(layer.reformat(image_tensor)), image_tensor)

    def test_forward_convolutional(self):
        output = BatchNormalization.BatchNormalization(self.channels).forward(self.input_tensor_conv)
        mean, var = channel_moments(output, self.channels)
        assert np.sum(np.square(mean)) == pytest.approx(0, abs=0.5e-7)
        assert np.sum(np.square(var - np.ones_like(var))) == pytest.approx(0, abs=0.5e-7)

    def test_forward_train_phase(self):
        layer = BatchNormalization.BatchNormalization(self.input_tensor.shape[-1])
        layer.forward(self.input_tensor)
        output = layer.forward(np.zeros_like(self.input_tensor))
        mean, var = np.mean(self.input_tensor, axis=0), np.var(self.input_tensor, axis=0)
        assert np.sum(np.square(np.mean(output, axis=0) - (-mean / np.sqrt(var)))) != 0

    def test_forward_train_phase_convolutional(self):
        layer = BatchNormalization.BatchNormalization(self.channels)
        layer.forward(self.input_tensor_conv)
        output = layer.forward(np.zeros_like(self.input_tensor_conv))
        mean, var = channel_moments(self.input_tensor_conv, self.channels)
        mean_out, _ = channel_moments(output, self.channels)
        assert np.sum(np.square(mean_out - (-mean / np.sqrt(var)))) != 0

    def test_forward_test_phase(self):
        layer = BatchNormalization.BatchNormalization(self.input_tensor.shape[-1])
        layer.forward(self.input_tensor)
        layer.testing_phase = True
        output = layer.forward(np.zeros_like(self.input_tensor))
        mean, var = np.mean(self.input_tensor, axis=0), np.var(self.input_tensor, axis=0)
        mean_out, var_out = np.mean(output, axis=0), np.var(output, axis=0)
        assert np.sum(np.square(mean_out - (-mean / np.sqrt(var)))) == pytest.approx(0, abs=0.5e-7)
        assert np.sum(np.square(var_out)) == pytest.approx(0, abs=0.5e-7)

    def test_forward_test_phase_convolutional(self):
        layer = BatchNormalization.BatchNormalization(self.channels)
        layer.forward(self.input_tensor_conv)
        layer.testing_phase = True
        output = layer.forward(np.zeros_like(self.input_tensor_conv))
        mean, var = channel_moments(self.input_tensor_conv, self.channels)
        mean_out, var_out = channel_moments(output, self.channels)
        assert np.sum(np.square(mean_out + (mean / np.sqrt(var)))) == pytest.approx(0, abs=0.5e-7)
        assert np.sum(np.square(var_out)) == pytest.approx(0, abs=0.5e-7)

    def test_gradient(self):
        self.layers[0] = BatchNormalization.BatchNormalization(self.input_tensor.shape[-1])
        difference = Helpers.gradient_check(self.layers, self.input_tensor, self.label_tensor)
        assert np.sum(np.abs(difference)) <= 1e-4

    def test_gradient_weights(self):
        self.layers[0] = BatchNormalization.BatchNormalization(self.input_tensor.shape[-1])
        self.layers[0].forward(self.input_tensor)
        difference = Helpers.gradient_check_weights(self.layers, self.input_tensor, self.label_tensor, False)
        assert np.sum(np.abs(difference)) <= 1e-6

    def test_gradient_bias(self):
        self.layers[0] = BatchNormalization.BatchNormalization(self.input_tensor.shape[-1])
        self.layers[0].forward(self.input_tensor)
        difference = Helpers.gradient_check_weights(self.layers, self.input_tensor, self.label_tensor, True)
        assert np.sum(np.abs(difference)) <= 1e-6

    def test_gradient_convolutional(self):
        self.layers[0] = BatchNormalization.BatchNormalization(self.channels)
        difference = Helpers.gradient_check(self.layers, self.input_tensor_conv, self.label_tensor)
        assert np.sum(np.abs(difference)) <= 1e-3

    def test_gradient_weights_convolutional(self):
        self.layers[0] = BatchNormalization.BatchNormalization(self.channels)
        self.layers[0].forward(self.input_tensor_conv)
        difference = Helpers.gradient_check_weights(self.layers, self.input_tensor_conv, self.label_tensor, False)
        assert np.sum(np.abs(difference)) <= 1e-6

    def test_gradient_bias_convolutional(self):
        self.layers[0] = BatchNormalization.BatchNormalization(self.channels)
        self.layers[0].forward(self.input_tensor_conv)
        difference = Helpers.gradient_check_weights(self.layers, self.input_tensor_conv, self.label_tensor, True)
        assert np.sum(np.abs(difference)) <= 1e-6

    def test_update(self):
        layer = BatchNormalization.BatchNormalization(self.input_tensor.shape[-1])
        layer.optimizer = Optimizers.Sgd(1)
        for _ in range(10):
            output_tensor = layer.forward(self.input_tensor)
            layer.backward(-output_tensor)
            new_output_tensor = layer.forward(self.input_tensor)
            assert np.sum(np.power(output_tensor, 2)) < np.sum(np.power(new_output_tensor, 2))

    def test_backward_matches_the_course_formula(self):
        layer = BatchNormalization.BatchNormalization(self.input_size)
        layer.weights = np.random.rand(self.input_size) + 0.5
        layer.forward(self.input_tensor)
        error = np.random.rand(self.batch_size, self.input_size)
        mean, var = np.mean(self.input_tensor, axis=0), np.var(self.input_tensor, axis=0)
        expected = Helpers.compute_bn_gradients(error, self.input_tensor, layer.weights, mean, var)
        np.testing.assert_allclose(layer.backward(error), expected, rtol=1e-6, atol=1e-9)
        normalized = (self.input_tensor - mean) / np.sqrt(var + np.finfo(float).eps)
        np.testing.assert_allclose(layer.gradient_weights, np.sum(error * normalized, axis=0), rtol=1e-10)
        np.testing.assert_allclose(layer.gradient_bias, np.sum(error, axis=0), rtol=1e-12)

    def test_initialize_ignores_the_initializers_and_eps_is_tiny(self):
        layer = BatchNormalization.BatchNormalization(4)
        layer.initialize(None, None)
        np.testing.assert_array_equal(layer.weights, np.ones(4))
        np.testing.assert_array_equal(layer.bias, np.zeros(4))
        assert layer.eps < 1e-10
