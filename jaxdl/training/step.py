"""The ONE training-step definition, and the evaluation step built on the same model.

Research code uses the functions directly::

    train_state = jaxdl.create_train_state(model, optimizer, jax.random.key(0), (128, 1, 28, 28))
    train_step = jaxdl.make_train_step(model, jaxdl.cross_entropy, optimizer)
    for x, y in batches:
        train_state, metrics = train_step(train_state, x, y)   # jitted, traced once per shape
    eval_step = jaxdl.make_eval_step(model)
    outputs, state = eval_step(train_state.params, state, x_test)

`jaxdl.fit` (the loop), `jaxdl.NeuralNetwork` and the exercise facade all run this step.

Label check. The jitted step is a thin Python wrapper (`CheckedStep`) around the compiled
function: before each call it checks concrete labels (NumPy arrays, jax Arrays, Python
lists) against the model's output shape on the host, so label -1 or 10 for 10 classes is a
ValueError before anything runs, not a wrapped-around class with a finite loss
(`jaxdl.validation.check_labels_for_outputs`). The output shape is learnt once per input
shape from the step's own trace (`jax.eval_shape` of the jitted function shares its trace,
so nothing is traced twice). Cost: a min/max over the batch's labels on the host (a few
microseconds for 128 labels); labels that are jax Arrays are fetched to the host first, which
waits for them to be ready (not for the previous step, which they do not depend on); labels
of a multi-process global array are checked shard by shard, this process's shards.
``check_labels=False`` skips it (e.g. for labels produced on the device by an earlier
computation, where the fetch would wait for it). Traced labels (the step called inside the
caller's own `jax.jit`) are left to the loss's checkify check: inside a JAX transformation, the
step runs the jitted function that keeps it; otherwise one without it
(`jaxdl.validation.without_value_checks`), so JAX dispatches it on its fast path (a check is a
JAX effect: with it, each call took ~0.4 ms more). That version also drops the
`checkify.check`s of a loss of your own (where a plain `jax.jit` would refuse them as not
functionalized); to have them reported, call the step under your own
``checkify.checkify(step)``.

Data parallelism: ``mesh=`` (a `jax.sharding.Mesh` with a ``"data"`` axis, e.g.
`jaxdl.data_mesh()`) jits the same step with the batch sharded over the devices and
everything else replicated (`jaxdl.training.parallel`); without a mesh the step is
``jax.jit(step)``, exactly as on one device.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxdl import kernels
from jaxdl.core import regularized_mask
from jaxdl.losses import is_classification_loss, per_example_losses
from jaxdl.optimizers import regularization_loss
from jaxdl.training.parallel import parallel_eval_step, parallel_train_step
from jaxdl.training.state import TrainState
from jaxdl.validation import as_labels, check_labels_for_outputs, without_value_checks


def make_train_step(model, loss_fn: Callable, optimizer, *, penalty=None, jit: bool = True,
                    mesh: jax.sharding.Mesh | None = None, check_labels: bool = True) -> Callable:
    """Builds ``step(train_state, x, labels) -> (train_state, metrics)``.

    The step differentiates ``loss_fn(model output, labels)`` (plus ``penalty.norm(params)``
    if a penalty regularizer is given; regularizers act on the params the model's layers
    declare, `jaxdl.regularized_mask`) with `jax.value_and_grad`, the layers' new state as
    aux, and applies ``optimizer``. ``metrics`` holds ``loss`` (data loss + regularization
    loss of the optimizer's regularizer + penalty, all at the params before the update, as the
    exercise's network reports it), ``data_loss`` (``loss_fn`` as it reduces the batch),
    ``regularization_loss`` and ``example_loss`` (the mean over the batch of ``loss_fn`` on
    each example alone, `jaxdl.losses.per_example_losses`: comparable across batch sizes and
    reductions; not differentiated).

    Args:
        model: a layer (usually `Serial`).
        loss_fn: ``loss_fn(outputs, labels) -> scalar``, e.g. `jaxdl.cross_entropy`.
        optimizer: a `jaxdl.Optimizer` or any optax gradient transformation.
        penalty: a regularizer whose norm is added to the differentiated loss.
        jit: compile the step with `jax.jit` (one trace per input shape and dtype).
        mesh: data parallelism over this mesh's ``"data"`` axis (`jaxdl.data_mesh`): ``x`` and
            ``labels`` are the global batch (in a multi-process run, this process's rows of
            it: `jaxdl.training.parallel.process_rows`), sharded over the devices; the train
            state is replicated, and donated (pass the returned state to the next call). The
            result equals the one-device step on the same global batch. Needs ``jit=True``.
            The step computes `jaxdl.Conv`'s weight gradient over the whole batch
            (`jaxdl.kernels.configure`), not in CPU row blocks.
        check_labels: check concrete labels on the host before each call of the jitted step
            (see the module docstring); without jit the loss checks them itself.

    Returns:
        The step; jitted, a `CheckedStep` with the jitted function's attributes (``lower``,
        ``trace``; ``jitted`` with a mesh). Jitted or not, it has the attributes ``model``,
        ``loss_fn`` and ``mesh`` (None without one), which `jaxdl.fit` reads.

    Raises:
        ValueError: before the call, for integer labels outside [0, classes) or labels of a
            one-column (binary) output other than 0 and 1; at trace time when
            ``train_state.opt_state`` does not have the tree structure and leaf shapes of
            ``optimizer.init(train_state.params)`` (an optimizer state of another model or
            optimizer); with a mesh, for a batch the devices cannot split evenly (naming its size
            and the device count); the model's and the loss's own errors otherwise.
    """
    _check_mesh_and_jit("make_train_step", mesh, jit)
    given = model
    if mesh is not None:  # a batch sharded over devices: no CPU row blocks across its shards
        model = kernels.configure(model, blocked_weight_gradient=False)
    output_shapes = {}

    def step(train_state: TrainState, x, labels):
        check_opt_state(optimizer, train_state.params, train_state.opt_state)
        key, step_key = jax.random.split(train_state.key)
        regularized = regularized_mask(model, train_state.params)  # what the layers declare (Layer.regularized)

        def objective(params):
            outputs, new_state = model.apply(params, train_state.state, x, key=step_key, train=True)
            output_shapes[_row_signature(x)] = tuple(outputs.shape)
            data_loss = loss_fn(outputs, labels)
            total = data_loss if penalty is None else data_loss + penalty.norm(params, regularized)
            return total, (new_state, data_loss, outputs)

        (objective_value, (new_state, data_loss, outputs)), grads = jax.value_and_grad(
            objective, has_aux=True)(train_state.params)
        decoupled = regularization_loss(optimizer, train_state.params, regularized)
        extra = {"regularized": regularized} if getattr(optimizer, "regularizer", None) is not None else {}
        updates, opt_state = optimizer.update(grads, train_state.opt_state, train_state.params, **extra)
        params = optax.apply_updates(train_state.params, updates)
        metrics = {
            "loss": objective_value + decoupled,
            "data_loss": data_loss,
            "regularization_loss": objective_value - data_loss + decoupled,
            "example_loss": per_example_losses(loss_fn, jax.lax.stop_gradient(outputs), labels).mean(),
        }
        return TrainState(params, new_state, opt_state, key, train_state.step + 1), metrics

    if jit:
        unchecked = without_value_checks(step)  # labels are checked on the host: JAX's fast dispatch
        compiled = parallel_train_step(unchecked, mesh) if mesh is not None else jax.jit(unchecked)
        step = CheckedStep(compiled, output_shapes, "make_train_step", enabled=check_labels,
                           float_binary=is_classification_loss(loss_fn), traced=jax.jit(step))
    step.model, step.loss_fn, step.mesh = given, loss_fn, mesh  # what jaxdl.fit reads
    return step


class CheckedStep:
    """A jitted ``step(train_state, x, labels)`` that checks concrete labels before each call.

    Calls ``function`` (the jitted step) after `jaxdl.validation.check_labels_for_outputs` of
    the labels against the model's output shape for inputs like ``x``. The shapes are recorded
    in ``output_shapes`` (keyed by `_row_signature`) while the step is traced; for a new input
    shape the wrapper traces it first with `jax.eval_shape`, which `jax.jit` caches for the call
    itself. Lists of numbers given as labels are passed on as NumPy arrays. Other attributes
    (``lower``, ``trace``, ``mesh``, ``jitted``) are the wrapped function's.

    Args:
        function: the jitted step.
        output_shapes: the dict the traced step records its output shapes in.
        where: the name in error messages.
        enabled: False to pass the labels on unchecked (lists are still converted).
        float_binary: also check float labels of a one-column output (0 or 1): the step's loss
            is a classifier's; with another loss they are a regression's targets.
        traced: the step called inside a JAX transformation (with traced arguments, under
            the caller's own `jax.jit`, or under ``checkify.checkify(step)``, which closes over
            concrete ones): the jitted step with the loss's `checkify` value checks, which the
            caller's ``checkify`` can report (``function`` runs without them,
            `jaxdl.validation.without_value_checks`); default ``function``. Concrete labels
            are checked on the host either way.
    """

    def __init__(self, function: Callable, output_shapes: dict, where: str, *, enabled: bool = True,
                 float_binary: bool = True, traced: Callable | None = None):
        self.__wrapped__ = function
        self._traced = function if traced is None else traced
        self._output_shapes = output_shapes
        self._where = where
        self._float_binary = bool(float_binary)
        self.check_labels = bool(enabled)
        functools.update_wrapper(self, function, updated=())

    def __call__(self, train_state, x, labels, *, where: str | None = None):
        """Checks ``labels`` (errors name ``where``, default the step's own name), then steps."""
        labels = as_labels(labels)
        if _traced(labels):  # left to the loss's checkify check
            return self._traced(train_state, x, labels)
        if self.check_labels and isinstance(labels, (np.ndarray, jax.Array)):
            check_labels_for_outputs(labels, self.output_shape(train_state, x, labels), where or self._where,
                                     float_binary=self._float_binary)
        if _traced(x) or _traced(getattr(train_state, "step", None)) or not _top_level():
            return self._traced(train_state, x, labels)  # the loss's checkify checks stay for the caller's checkify
        return self.__wrapped__(train_state, x, labels)

    def output_shape(self, train_state, x, labels) -> tuple:
        """The model's output shape in the step for inputs like ``x`` (traced once per input shape)."""
        signature = _row_signature(x)
        if signature not in self._output_shapes:
            jax.eval_shape(self.__wrapped__, train_state, x, labels)
        return self._output_shapes[signature]

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.__wrapped__, name)

    def __repr__(self):
        return f"CheckedStep({self.__wrapped__!r}, check_labels={self.check_labels})"


# `_top_level()`: whether no JAX transformation is tracing the caller. `checkify.checkify` traces
# a function with its concrete arguments closed over, so the arguments alone cannot tell (0.2 us
# a call). No public accessor in jax 0.10; on another jax, traced arguments alone choose.
try:
    from jax._src.core import trace_ctx as _trace_ctx

    _top_level = _trace_ctx.is_top_level
except (ImportError, AttributeError):
    def _top_level() -> bool:
        return True


def _traced(value) -> bool:
    """Whether ``value`` (an array or a tree of them) is being traced (the step called inside a ``jax.jit``)."""
    if isinstance(value, (np.ndarray, jax.Array)) and not isinstance(value, jax.core.Tracer):
        return False  # the usual case, without the tree walk
    return any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(value))


def _row_signature(x) -> tuple:
    """The shapes after the batch axis and the dtypes of the leaves of ``x`` (what the output shape
    per row depends on; the batch size is left out, so a process's rows and the global batch of a
    mesh step share it)."""
    if isinstance(x, (np.ndarray, jax.Array)):  # the usual case, without the tree walk (microseconds count here)
        return ((x.shape[1:], x.dtype),)
    return tuple((tuple(np.shape(leaf)[1:]), np.result_type(leaf)) for leaf in jax.tree.leaves(x))


def _check_mesh_and_jit(where: str, mesh, jit: bool) -> None:
    if mesh is not None and not jit:
        raise ValueError(f"{where}: a mesh needs jit=True (its shardings are jax.jit's in/out shardings), got "
                         f"jit=False.")


def check_opt_state(optimizer, params, opt_state) -> None:
    """Raises a ValueError if ``opt_state`` is not a state of ``optimizer`` for ``params``.

    Compares the tree structure and leaf shapes with ``optimizer.init(params)``'s, abstractly
    (`jax.eval_shape`: nothing is computed). A state that differs only where the optimizer
    does not read it (e.g. None for a part its update only writes) passes if
    ``optimizer.update`` accepts it, again abstractly.
    """
    expected = jax.eval_shape(optimizer.init, params)
    if jax.tree.structure(opt_state) != jax.tree.structure(expected):
        problem = f"tree structure {jax.tree.structure(expected)}, got {jax.tree.structure(opt_state)}"
    else:
        mismatched = [(tuple(e.shape), tuple(jnp.shape(g))) for e, g in
                      zip(jax.tree.leaves(expected), jax.tree.leaves(opt_state)) if tuple(e.shape) != jnp.shape(g)]
        if not mismatched:
            return
        problem = f"leaf shape {mismatched[0][0]}, got {mismatched[0][1]}"
    try:
        jax.eval_shape(optimizer.update, params, opt_state, params)
    except Exception as error:  # noqa: BLE001  (whatever the optimizer raises, the cause is told)
        raise ValueError(
            f"make_train_step: expected an opt_state matching optimizer.init(params) (the optimizer's "
            f"state for these params, not another model's or optimizer's): expected {problem}."
        ) from error


def make_eval_step(model, *, jit: bool = True, mesh: jax.sharding.Mesh | None = None) -> Callable:
    """Builds ``eval_step(params, state, x) -> (outputs, new_state)`` in evaluation mode.

    Evaluation mode: no dropout (no key needed), batch-norm running statistics used and left
    unchanged. The returned state carries what evaluation changes: a recurrent layer with
    ``memorize=True`` returns its final hidden state, so a long sequence can be evaluated chunk
    by chunk (start from `jaxdl.reset_memory` of the training state, then pass each chunk's
    new state to the next call). `jaxdl.evaluate` does exactly that. The returned function's
    ``model`` attribute is ``model`` (`jaxdl.evaluate` reads the layers' memory declarations).

    With ``mesh`` (as for `make_train_step`): ``x`` and the outputs are batch-sharded over the
    mesh's ``"data"`` axis, params and state replicated; the function's ``mesh`` attribute
    tells `jaxdl.evaluate` to shard the labels the same way.
    """
    _check_mesh_and_jit("make_eval_step", mesh, jit)

    def eval_step(params, state, x):
        return model.apply(params, state, x, train=False)

    if mesh is not None:
        compiled = parallel_eval_step(eval_step, mesh, returns_state=True, where="make_eval_step")
    else:
        compiled = jax.jit(eval_step) if jit else eval_step
    compiled.model = model  # for jaxdl.evaluate: which state is memory (Layer.memory)
    return compiled


def make_predict(model, *, jit: bool = True, mesh: jax.sharding.Mesh | None = None) -> Callable:
    """Builds ``predict(params, state, x) -> outputs``: `make_eval_step` without the new state.

    The stateless convenience: every call starts from ``state`` as given. Use
    `make_eval_step` to carry a memorized state from chunk to chunk. ``mesh`` as for
    `make_eval_step`.
    """
    _check_mesh_and_jit("make_predict", mesh, jit)

    def predict(params, state, x):
        return model.apply(params, state, x, train=False)[0]

    if mesh is not None:
        return parallel_eval_step(predict, mesh, returns_state=False, where="make_predict")
    return jax.jit(predict) if jit else predict
