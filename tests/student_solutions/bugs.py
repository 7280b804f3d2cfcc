"""Broken copies of the reference NumPy solution (``reference/``), one classic bug per class.

Each bug is a small textual patch of one file of the reference: (class, file, old text, new
text (or tuples of them), the method the checker must name, a piece of the hint it must give). `write_broken`
copies the reference and applies patches; since every class's check touches only its own
class (the reference's RNN and LSTM share no patched code, and the optimizer checks use
jaxdl's regularizers, not the student's), one copy can hold every bug at once and one checker
run names each. `write_bad` writes the three files the checker must survive: one that does not
import, one with an infinite loop, one with a wrong constructor signature, plus one that kills
its process.
"""

import shutil
from pathlib import Path

REFERENCE = Path(__file__).with_name("reference")

# class, file, old, new, method, hint (a piece of it)
BUGS = [
    ("FullyConnected", "Layers/FullyConnected.py",
     "self.gradient_weights = self.input_tensor.T @ error_tensor",
     "self.gradient_weights = error_tensor.T @ self.input_tensor",
     "gradient_weights", "transpose"),
    ("ReLU", "Layers/ReLU.py",
     "return error_tensor * (self.input_tensor > 0)", "return np.maximum(0, error_tensor)",
     "backward", "the error's sign"),
    ("TanH", "Layers/TanH.py",
     "return error_tensor * (1 - self.activation ** 2)", "return 1 - self.activation ** 2",
     "backward", "multiply it by error_tensor"),
    ("Sigmoid", "Layers/Sigmoid.py",
     "1 / (1 + np.exp(-input_tensor))", "1 / (1 + np.exp(input_tensor))",
     "forward", "sign of the exponent"),
    ("SoftMax", "Layers/SoftMax.py",
     "np.exp(input_tensor - np.max(input_tensor, axis=1, keepdims=True))", "np.exp(input_tensor)",
     "forward", "subtract each row's maximum"),
    ("Flatten", "Layers/Flatten.py",
     "return error_tensor.reshape(self.input_shape)", "return error_tensor",
     "backward", "wrong shape"),
    ("Conv", "Layers/Conv.py",
     "else input_tensor\n        kernel = self._kernel()", "else input_tensor\n        kernel = self._kernel()[:, :, ::-1, ::-1]",
     "forward", "kernel is flipped"),
    ("Pooling", "Layers/Pooling.py",
     "dx[i, k, r, s] += error_tensor[i, k, y, x]", "dx[i, k, r, s] = error_tensor[i, k, y, x]",
     "backward", "windows overlap"),
    ("Dropout", "Layers/Dropout.py",
     "< self.probability) / self.probability", "< self.probability) * 1.0",
     "forward", "not scaled by 1/p"),
    ("BatchNormalization", "Layers/BatchNormalization.py",
     "x.var(axis=0)", "x.var(axis=0, ddof=1)",
     "forward", "n - 1"),
    ("RNN", "Layers/RNN.py",
     "            return self.state\n        return (np.zeros(self.hidden_size),)",
     "            return (np.zeros(self.hidden_size),)\n        return (np.zeros(self.hidden_size),)",
     "forward (memorize=True)", "not carried over when memorize is True"),
    ("LSTM", "Layers/LSTM.py",
     "if self.memorize and self.state is not None:", "if self.state is not None:",
     "forward", "carried over although memorize is False"),
    ("CrossEntropyLoss", "Optimization/Loss.py",
     "return np.sum(-np.log(", "return np.mean(-np.log(",
     "forward", "mean over the batch"),
    ("Sgd", "Optimization/Optimizers.py",
     "return self._shrunk(weight_tensor) - self.learning_rate * gradient_tensor",
     "return self._shrunk(weight_tensor) + self.learning_rate * gradient_tensor",
     "calculate_update", "wrong way"),
    ("SgdWithMomentum", "Optimization/Optimizers.py",
     "self.velocity = self.momentum_rate * self.velocity - self.learning_rate * gradient_tensor\n"
     "        return self._shrunk(weight_tensor) + self.velocity",
     "velocity = self.momentum_rate * self.velocity - self.learning_rate * gradient_tensor\n"
     "        return self._shrunk(weight_tensor) + velocity",
     "calculate_update", "state is not kept"),
    ("Adam", "Optimization/Optimizers.py",
     ("        self.k += 1\n", "return self._shrunk(weight_tensor) - self.learning_rate * v_hat"),
     ("        self.k += 1\n        if self.regularizer is not None:\n"
      "            gradient_tensor = gradient_tensor + self.regularizer.calculate_gradient(weight_tensor)\n",
      "return weight_tensor - self.learning_rate * v_hat"),
     "calculate_update", "regularizer's gradient goes into the step"),
    ("L1_Regularizer", "Optimization/Constraints.py",
     "return self.alpha * np.sign(weights)", "return np.sign(weights)",
     "calculate_gradient", "not multiplied by alpha"),
    ("L2_Regularizer", "Optimization/Constraints.py",
     "return self.alpha * np.sum(np.square(weights))", "return self.alpha * np.sqrt(np.sum(np.square(weights)))",
     "norm", "older editions' norm"),
    ("Xavier", "Layers/Initializers.py",
     "np.sqrt(2 / (fan_in + fan_out))", "np.sqrt(2 / fan_in)",
     "initialize", "He's"),
]

# class, file, old, new, expected status, a piece of the message
BAD = [
    ("ReLU", "Layers/ReLU.py", "return np.maximum(0, input_tensor)", "return np.maximum(0, input_tensor",
     "error", "does not import"),
    ("TanH", "Layers/TanH.py", "self.activation = np.tanh(input_tensor)",
     "while True:\n            pass", "timeout", "infinite loop"),
    ("Sigmoid", "Layers/Sigmoid.py", "class Sigmoid(BaseLayer):\n",
     "class Sigmoid(BaseLayer):\n    def __init__(self, slope):\n        super().__init__()\n\n", "fail",
     "TypeError"),
    ("SoftMax", "Layers/SoftMax.py", "        shifted = np.exp(", "        import os\n        os._exit(3)\n        shifted = np.exp(",
     "crash", "exit code 3"),
]


def _patched(root: Path, patches) -> Path:
    shutil.copytree(REFERENCE, root)
    for _, file, olds, news, *_ in patches:
        path = root / file
        text = path.read_text()
        pairs = zip(olds, news) if isinstance(olds, tuple) else [(olds, news)]
        for old, new in pairs:
            assert text.count(old) == 1, f"{file}: the patch's old text must occur once: {old!r}"
            text = text.replace(old, new)
        path.write_text(text)
    return root


def write_broken(root) -> Path:
    """A copy of the reference with every bug of `BUGS` applied (one per class)."""
    return _patched(Path(root), BUGS)


def write_bad(root) -> Path:
    """A copy of the reference with the files of `BAD` (the rest of the solution intact)."""
    return _patched(Path(root), BAD)
