"""Recipes: complete, configured training runs built on `jaxdl.fit` (the scripts' engines).

* `jaxdl.recipes.lenet`: the exercise's LeNet on MNIST (`scripts/train_lenet.py`).
* `jaxdl.recipes.delayed_recall`: truncated BPTT with memorized states (`scripts/train_sequence.py`).
* `jaxdl.recipes.char_lm`: character-level LSTM and Transformer language models on the bundled text
  (`scripts/train_char_lm.py`).
* `jaxdl.recipes.resnet`: a small residual CNN on MNIST on the LeNet recipe's machinery
  (`scripts/train_resnet.py`).
* `jaxdl.recipes.cli`: the option types the scripts' command lines share (ranges checked by argparse).
"""
