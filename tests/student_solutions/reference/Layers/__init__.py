__all__ = ["FullyConnected", "SoftMax", "ReLU", "Flatten", "TanH", "Sigmoid", "RNN", "Conv", "Pooling",
           "Initializers", "Dropout", "BatchNormalization", "Base", "LSTM"]
