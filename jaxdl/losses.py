"""Losses: the exercise's cross-entropy on probabilities and a stable one on logits.

Both accept one-hot labels of the prediction's shape (batch, classes) or integer class
labels of shape (batch,). ``reduction`` is "sum" over the batch (the exercise's convention,
the default) or "mean".

Label values. Integer labels must lie in [0, classes): an out-of-range label would read a
clamped or wrapped-around class (a NaN loss, or -1 silently meaning the last class). Concrete
labels are checked on the host (a ValueError naming the function, the class count and the bad
values). Under `jax.jit` the values are not known at trace time; the losses then carry a
`jax.experimental.checkify` check that costs nothing unless the function is checkified::

    from jax.experimental import checkify
    error, loss = checkify.checkify(jax.jit(jaxdl.cross_entropy))(probabilities, labels)
    error.throw()   # raises checkify.JaxRuntimeError naming the first bad label, if any

One-hot labels are not range-checked.

Precision. Both losses compute in float32 or wider (`jaxdl.precision.upcast`): bfloat16 or
float16 predictions give a float32 loss, float32 and float64 ones a loss of their own dtype.
cross_entropy's default eps is the machine epsilon of that dtype: bfloat16's own (2^-7) would
cap one example's loss at -ln(2^-7) ~ 4.85, float32's caps it at ~15.9 (float64's at ~36.0).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxdl.precision import upcast
from jaxdl.validation import check_labels


def _true_class_values(name: str, values: jax.Array, labels) -> jax.Array:
    """values[..., true class] for one-hot or integer labels, with shape checks."""
    labels = jnp.asarray(labels)
    if values.ndim < 1:
        raise ValueError(f"{name}: expected predictions of shape (batch, classes), got a scalar.")
    if labels.shape == values.shape:
        return jnp.sum(values * labels.astype(values.dtype), axis=-1)
    if labels.shape == values.shape[:-1]:
        if not jnp.issubdtype(labels.dtype, jnp.integer):
            raise TypeError(
                f"{name}: labels of shape {labels.shape} must be integer class indices, got dtype {labels.dtype}."
            )
        check_labels(labels, values.shape[-1], name)
        return jnp.take_along_axis(values, labels[..., None].astype(jnp.int32), axis=-1)[..., 0]
    raise ValueError(
        f"{name}: labels must be one-hot with the predictions' shape {tuple(values.shape)} or integer "
        f"classes of shape {tuple(values.shape[:-1])}, got shape {tuple(labels.shape)}."
    )


def _reduce(name: str, per_example: jax.Array, reduction: str) -> jax.Array:
    if reduction == "sum":
        return jnp.sum(per_example)
    if reduction == "mean":
        return jnp.mean(per_example)
    raise ValueError(f"{name}: reduction must be 'sum' or 'mean', got {reduction!r}.")


def cross_entropy(probabilities, labels, *, eps=None, reduction: str = "sum") -> jax.Array:
    """The exercise's loss: sum over the batch of -ln(p_true + eps).

    Args:
        probabilities: (batch, classes), for example a SoftMax output.
        labels: one-hot (batch, classes) or integer (batch,).
        eps: added inside the log; default the machine epsilon of the dtype the loss is
            computed in (the exercise's np.finfo(float).eps in float64, float32's for float32,
            bfloat16 and float16 probabilities).
        reduction: "sum" (default) or "mean" over the batch.

    Errors: ValueError for labels of a wrong shape or (concrete) integer labels outside
    [0, classes); TypeError for non-integer labels of shape (batch,). Under jit, see the module
    docstring for the checkify check of the label values.
    """
    probabilities = upcast(probabilities)
    if eps is None:
        eps = jnp.finfo(probabilities.dtype).eps
    true = _true_class_values("cross_entropy", probabilities, labels)
    return _reduce("cross_entropy", -jnp.log(true + eps), reduction)


def softmax_cross_entropy(logits, labels, *, reduction: str = "sum") -> jax.Array:
    """Cross-entropy of softmax(logits), computed stably as logsumexp(logits) - logit_true.

    Use it on the model's pre-softmax output instead of SoftMax + `cross_entropy`.
    Same label and reduction conventions as `cross_entropy`, and the same errors (integer labels
    outside [0, classes) included; under jit, use checkify as the module docstring shows).
    """
    logits = upcast(logits)
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    return _reduce("softmax_cross_entropy", -_true_class_values("softmax_cross_entropy", log_probs, labels), reduction)


def accuracy(predictions, labels) -> jax.Array:
    """Fraction of rows whose arg-max equals the true class (one-hot or integer labels).

    Errors: as `correct_predictions`.
    """
    return jnp.mean(correct_predictions(predictions, labels))


def correct_predictions(predictions, labels) -> jax.Array:
    """A boolean per row: does the arg-max equal the true class (one-hot or integer labels)?

    Errors: ValueError for labels of a wrong shape or (concrete) integer labels outside
    [0, classes), as for the losses (under jit: the checkify check of the module docstring).
    """
    predictions = jnp.asarray(predictions)
    labels = jnp.asarray(labels)
    if labels.shape == predictions.shape:
        labels = jnp.argmax(labels, axis=-1)
    elif labels.shape != predictions.shape[:-1]:
        raise ValueError(
            f"accuracy: labels must be one-hot {tuple(predictions.shape)} or integer "
            f"{tuple(predictions.shape[:-1])}, got shape {tuple(labels.shape)}."
        )
    else:
        check_labels(labels, predictions.shape[-1], "accuracy")
    return jnp.argmax(predictions, axis=-1) == labels


def per_example_losses(loss_fn, outputs, labels) -> jax.Array:
    """``loss_fn`` applied to each example alone (a batch of one): shape (batch,).

    Whatever ``loss_fn`` reduces over the batch (a sum, a mean, a weighted mean over the
    batch's time steps), a batch of one gives that example's own loss, so the mean of the
    result is the mean loss per example for any reduction. ``labels`` may be a pytree
    (e.g. ``(targets, weights)``) whose leaves have the batch first.
    """
    def one(output, label):
        return loss_fn(output[None], jax.tree.map(lambda leaf: leaf[None], label))

    return jax.vmap(one)(outputs, labels)
