import copy


class NeuralNetwork:
    def __init__(self, optimizer, weights_initializer, bias_initializer):
        self.optimizer = optimizer
        self.weights_initializer, self.bias_initializer = weights_initializer, bias_initializer
        self.loss, self.layers = [], []
        self.data_layer = self.loss_layer = None

    @property
    def phase(self):
        return self.layers[0].testing_phase if self.layers else False

    @phase.setter
    def phase(self, testing):
        for layer in self.layers:
            layer.testing_phase = testing

    def append_layer(self, layer):
        if layer.trainable:
            layer.optimizer = copy.deepcopy(self.optimizer)
            layer.initialize(self.weights_initializer, self.bias_initializer)
        self.layers.append(layer)

    def forward(self):
        x, self.label_tensor = self.data_layer.next()
        regularization = 0.0
        for layer in self.layers:
            x = layer.forward(x)
            if layer.trainable and hasattr(layer, "calculate_regularization_loss"):
                regularization += layer.calculate_regularization_loss()
        return self.loss_layer.forward(x, self.label_tensor) + regularization

    def backward(self):
        error = self.loss_layer.backward(self.label_tensor)
        for layer in reversed(self.layers):
            error = layer.backward(error)

    def train(self, iterations):
        self.phase = False
        for _ in range(iterations):
            self.loss.append(self.forward())
            self.backward()

    def test(self, input_tensor):
        self.phase = True
        for layer in self.layers:
            input_tensor = layer.forward(input_tensor)
        return input_tensor
