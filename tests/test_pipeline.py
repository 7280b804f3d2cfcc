"""jaxdl.datasets.pipeline (the grain input pipeline) and mid-epoch checkpoints in `jaxdl.fit`.

The pipeline is checked on small synthetic images whose pixel (0, 0) is the example's id, so
every batch says which examples it holds: order per seed and epoch, every example once per
epoch, the augmentation's semantics, sharding by process (simulated with
``grain.sharding.ShardOptions``), the checkpointable iterator, the tfds data-source path and
bad input. Then a tiny model (BatchNorm, Dropout) is trained by `jaxdl.fit` with mid-epoch
checkpoints, interrupted (Ctrl-C) after a mid-epoch checkpoint and resumed: the result equals
an unbroken run bit for bit.
"""

import grain
import jax
import numpy as np
import pytest

import jaxdl
from jaxdl import checkpoint
from jaxdl.datasets import pipeline
from jaxdl.training import Callback
from jaxdl.training.data import EpochSource
from jaxdl.training.run import resume_checkpoint_dir


def id_images(count, rows=8, cols=8, seed=0):
    """uint8 images whose pixel (0, 0) is the example's id (count <= 256), the rest random."""
    images = np.random.default_rng(seed).integers(1, 256, (count, rows, cols), dtype=np.uint8)
    images[:, 0, 0] = np.arange(count)
    return images


def ids(x):
    """The example ids of a batch built from `id_images` without augmentation."""
    return np.rint(x[:, 0, 0, 0] * 255).astype(int)


def epoch_arrays(source, epoch):
    """(x, labels) of every batch of ``epoch``, as lists."""
    with source.epoch(epoch) as batches:
        return [(x, y) for x, y in batches]


def assert_same_batches(a, b):
    assert len(a) == len(b)
    for (xa, ya), (xb, yb) in zip(a, b):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)


IMAGES = id_images(50)
LABELS = np.arange(50) % 10


# ----------------------------------------------------------------------------------------
# Pure functions.


def test_scale_images_layout_and_range():
    images = np.array([[[0, 255], [51, 102]]], np.uint8)
    x = pipeline.scale_images(images)
    assert x.dtype == np.float32 and x.shape == (1, 1, 2, 2)
    np.testing.assert_allclose(x[0, 0], [[0.0, 1.0], [0.2, 0.4]], rtol=1e-6)
    with pytest.raises(TypeError, match=r"scale_images: images must be uint8 \(n, rows, cols\), got float32"):
        pipeline.scale_images(images.astype(np.float32))
    with pytest.raises(ValueError, match=r"scale_images: images must be uint8 \(n, rows, cols\), got uint8 \(2, 2\)"):
        pipeline.scale_images(images[0])


def test_epoch_order_is_reproducible_per_seed_and_epoch():
    order = pipeline.epoch_order(100, seed=3, epoch=2)
    np.testing.assert_array_equal(order, pipeline.epoch_order(100, seed=3, epoch=2))
    assert sorted(order) == list(range(100))
    assert not np.array_equal(order, pipeline.epoch_order(100, seed=3, epoch=3))
    assert not np.array_equal(order, pipeline.epoch_order(100, seed=4, epoch=2))


def test_shift_images_equals_a_window_of_the_zero_padded_image():
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (30, 7, 9), dtype=np.uint8)
    dy, dx = rng.integers(0, 7, 30), rng.integers(0, 7, 30)
    shifted = pipeline.shift_images(images, dy, dx, 3)
    padded = np.pad(images, ((0, 0), (3, 3), (3, 3)))
    expected = np.stack([padded[i, dy[i]:dy[i] + 7, dx[i]:dx[i] + 9] for i in range(30)])
    np.testing.assert_array_equal(shifted, expected)
    assert shifted.dtype == np.uint8


def test_random_shift_translates_with_zero_fill_reproducibly():
    images = np.zeros((50, 28, 28), np.uint8)
    images[:, 10:18, 12:16] = 200  # a block far from the border
    shifted = pipeline.random_shift(images, 2, np.random.default_rng(1))
    np.testing.assert_array_equal(shifted, pipeline.random_shift(images, 2, np.random.default_rng(1)))
    assert shifted.dtype == np.uint8 and shifted.shape == images.shape
    offsets = set()
    for image in shifted:
        rows, cols = np.nonzero(image)
        assert image.sum() == images[0].sum()  # the block moved whole
        offsets.add((rows.min() - 10, cols.min() - 12))
    assert offsets <= {(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)} and len(offsets) > 5
    assert pipeline.random_shift(images, 0, np.random.default_rng(0)) is images
    edge = np.zeros((1, 28, 28), np.uint8)
    edge[0, 0, :] = 255
    moved = pipeline.random_shift(np.repeat(edge, 40, axis=0), 2, np.random.default_rng(3))
    assert {int(m.sum()) // 255 for m in moved} <= {0, 26, 27, 28}  # pixels leave, zeros come in


# ----------------------------------------------------------------------------------------
# EpochBatches.


def test_batches_layout_order_and_remainder():
    kept = pipeline.EpochBatches(IMAGES, LABELS, 8, seed=5, shuffle=True)
    batches = epoch_arrays(kept, 2)
    assert [x.shape for x, _ in batches] == [(8, 1, 8, 8)] * 6 + [(2, 1, 8, 8)]
    assert all(x.dtype == np.float32 and y.dtype == np.int32 for x, y in batches)
    order = pipeline.epoch_order(50, seed=5, epoch=2)
    np.testing.assert_array_equal(np.concatenate([ids(x) for x, _ in batches]), order)
    np.testing.assert_array_equal(np.concatenate([y for _, y in batches]), LABELS[order])
    np.testing.assert_allclose(batches[0][0][:, 0], IMAGES[order[:8]] / np.float32(255), rtol=1e-6)
    dropped = pipeline.EpochBatches(IMAGES, LABELS, 8, seed=5, shuffle=True, drop_remainder=True)
    assert len(dropped) == dropped.steps_per_epoch == 6 and len(kept) == 7
    assert_same_batches(epoch_arrays(dropped, 2), batches[:6])
    in_order = epoch_arrays(pipeline.EpochBatches(IMAGES, LABELS, 8), 3)
    np.testing.assert_array_equal(np.concatenate([ids(x) for x, _ in in_order]), np.arange(50))


@pytest.mark.parametrize("threads, prefetch", [(0, 0), (1, 1), (2, 4)])
def test_every_example_exactly_once_per_epoch(threads, prefetch):
    source = pipeline.EpochBatches(IMAGES, LABELS, 7, seed=1, shuffle=True, num_threads=threads,
                                   prefetch_size=prefetch)
    for epoch in range(3):
        seen = np.concatenate([ids(x) for x, _ in epoch_arrays(source, epoch)])
        assert sorted(seen) == list(range(50))


def test_batches_are_a_function_of_seed_and_epoch_only():
    def make(seed, threads=2):
        return pipeline.EpochBatches(IMAGES, LABELS, 8, seed=seed, shuffle=True, max_shift=2, drop_remainder=True,
                                     num_threads=threads)

    first = epoch_arrays(make(3), 1)
    assert_same_batches(first, epoch_arrays(make(3), 1))
    assert_same_batches(first, epoch_arrays(make(3, threads=0), 1))  # threads change nothing
    assert_same_batches(first, [make(3).dataset(1)[k] for k in range(6)])  # random access too
    for other in (epoch_arrays(make(3), 2), epoch_arrays(make(4), 1)):
        assert not np.array_equal(first[0][0], other[0][0])
    assert_same_batches(epoch_arrays(make(3), 0), list(make(3)))  # iterating = epoch 0


def test_augmentation_shifts_each_image_whole_within_max_shift():
    images = np.zeros((64, 12, 12), np.uint8)
    images[:, 4:8, 5:7] = np.arange(1, 65, dtype=np.uint8)[:, None, None]  # block value = id + 1
    source = pipeline.EpochBatches(images, np.zeros(64, int), 16, seed=0, shuffle=True, max_shift=2)
    offsets = set()
    for x, _ in epoch_arrays(source, 0):
        for image in np.rint(x[:, 0] * 255).astype(np.uint8):
            rows, cols = np.nonzero(image)
            example = int(image.max()) - 1
            np.testing.assert_array_equal(np.roll(image, (4 - rows.min(), 5 - cols.min()), (0, 1)), images[example])
            offsets.add((rows.min() - 4, cols.min() - 5))
    assert offsets <= {(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)} and len(offsets) >= 20
    plain = pipeline.EpochBatches(images, np.zeros(64, int), 16, seed=0, shuffle=True)
    np.testing.assert_array_equal(np.rint(epoch_arrays(plain, 0)[0][0][:, 0] * 255),
                                  images[pipeline.epoch_order(64, seed=0, epoch=0)[:16]])


@pytest.mark.parametrize("drop_remainder", [True, False])
def test_two_shards_are_disjoint_halves_of_every_global_batch(drop_remainder):
    options = dict(seed=2, shuffle=True, max_shift=1, drop_remainder=drop_remainder)
    labels = np.arange(50)  # the ids (the augmentation moves pixel (0, 0))
    whole = pipeline.EpochBatches(IMAGES, labels, 12, **options)  # 50 = 4 x 12 + 2
    shards = [pipeline.EpochBatches(IMAGES, labels, 12, shard=grain.sharding.ShardOptions(i, 2), **options)
              for i in range(2)]
    assert shards[0].local_batch_size == 6 and len(shards[0]) == len(shards[1]) == len(whole)
    for epoch in range(2):
        pieces = [epoch_arrays(shard, epoch) for shard in shards]
        for (x, y), (x0, y0), (x1, y1) in zip(epoch_arrays(whole, epoch), *pieces):
            np.testing.assert_array_equal(np.concatenate([x0, x1]), x)  # augmentation included
            np.testing.assert_array_equal(np.concatenate([y0, y1]), y)
            assert len(y0) == len(y1) and not set(y0) & set(y1)


def test_process_shard_is_this_jax_process():
    shard = pipeline.process_shard()
    assert (shard.shard_index, shard.shard_count) == (jax.process_index(), jax.process_count())


def test_iterator_state_continues_where_it_stopped():
    source = pipeline.EpochBatches(IMAGES, LABELS, 8, seed=0, shuffle=True, max_shift=2, drop_remainder=True)
    unbroken = epoch_arrays(source, 4)
    batches = source.epoch(4)
    next(batches), next(batches)
    state = batches.get_state()
    assert state == {"next_index": 2}
    batches.close()
    assert next(batches, None) is None  # closed: nothing more
    restarted = source.epoch(4)
    restarted.set_state(state)
    assert_same_batches(list(restarted), unbroken[2:])
    with pytest.raises(ValueError, match="closed"):
        restarted.set_state(state)  # exhausted, so closed
    fresh = source.epoch(4)
    with pytest.raises(ValueError, match="out of range"):
        fresh.set_state({"next_index": 7})
    with pytest.raises(ValueError, match="next_index"):
        fresh.set_state({"position": 1})
    fresh.close()


class FakeTfdsSource:
    """What ``tfds.data_source("jaxdl_mnist", ...)`` returns: records of uint8 (rows, cols, 1) tensors."""

    def __init__(self, images, labels):
        self.records = [{"image": image[..., None], "label": int(label)} for image, label in zip(images, labels)]

    def __len__(self):
        return len(self.records)

    def __getitems__(self, indices):
        return [self.records[i] for i in indices]


def test_tfds_source_reads_the_same_batches_as_the_arrays():
    data = FakeTfdsSource(IMAGES, LABELS)
    options = dict(seed=1, shuffle=True, max_shift=2, drop_remainder=True)
    tfds_source = pipeline.TfdsSource(data, start=10, stop=50)
    assert len(tfds_source) == 40
    image, label = tfds_source[0]
    np.testing.assert_array_equal(image, IMAGES[10])
    assert label == LABELS[10]
    assert_same_batches(epoch_arrays(pipeline.EpochBatches.from_source(tfds_source, 8, **options), 1),
                        epoch_arrays(pipeline.EpochBatches(IMAGES[10:], LABELS[10:], 8, **options), 1))
    plain = FakeTfdsSource(IMAGES, LABELS)
    plain.records = [{"image": image, "label": label} for image, label in zip(IMAGES, LABELS)]  # (rows, cols)
    np.testing.assert_array_equal(pipeline.TfdsSource(plain).read(np.array([3, 1]))[0], IMAGES[[3, 1]])


def test_tfds_source_refuses_bad_ranges_and_undecoded_images():
    data = FakeTfdsSource(IMAGES, LABELS)
    for start, stop in ((40, 20), (0, 51), (5, 5)):
        with pytest.raises(ValueError, match=rf"TfdsSource: start and stop must satisfy 0 <= start < stop <= 50 \(the "
                                             rf"data source's length\), got start={start}, stop={stop}\."):
            pipeline.TfdsSource(data, start=start, stop=stop)
    with pytest.raises(ValueError, match=r"TfdsSource: start must be an int >= 0, got -1\."):
        pipeline.TfdsSource(data, start=-1)
    with pytest.raises(TypeError, match=r"TfdsSource: stop must be an int >= 0, got 2.0 of type float\."):
        pipeline.TfdsSource(data, stop=2.0)
    encoded = FakeTfdsSource(IMAGES, LABELS)
    encoded.records = [{"image": b"\x89PNG...", "label": 0}] * 2
    with pytest.raises(TypeError, match=r"TfdsSource: images must be uint8 arrays \(stored decoded, e.g. as a "
                                        r"tfds.features.Tensor\), got bytes\."):
        pipeline.TfdsSource(encoded).read(np.array([0, 1]))
    floats = FakeTfdsSource(IMAGES.astype(np.float32), LABELS)
    with pytest.raises(TypeError, match=r"TfdsSource: images must be uint8 \(n, rows, cols\), got float32"):
        pipeline.TfdsSource(floats).read(np.array([0]))


@pytest.mark.parametrize("call, message", [
    (lambda: pipeline.EpochBatches(IMAGES.astype(np.float32), LABELS, 8), "uint8"),
    (lambda: pipeline.EpochBatches(IMAGES[:, None], LABELS, 8), "uint8 \\(n, rows, cols\\)"),
    (lambda: pipeline.EpochBatches(IMAGES, LABELS[:-1], 8), "50 images but 49 labels"),
    (lambda: pipeline.EpochBatches(IMAGES, LABELS.astype(float), 8), "integer class indices"),
    (lambda: pipeline.EpochBatches(IMAGES, LABELS, 0), "batch_size must be a positive int"),
    (lambda: pipeline.EpochBatches(IMAGES, LABELS, True), "batch_size must be a positive int"),
    (lambda: pipeline.EpochBatches(IMAGES, LABELS, 64, drop_remainder=True), "every batch would be dropped"),
    (lambda: pipeline.EpochBatches(IMAGES, LABELS, 8, max_shift=-1), "max_shift must be an int >= 0"),
    (lambda: pipeline.EpochBatches(IMAGES, LABELS, 8, shard=grain.sharding.ShardOptions(0, 3)),
     "not divisible by the 3 shards"),
    (lambda: pipeline.EpochBatches(IMAGES, LABELS, 8, shard=grain.sharding.ShardOptions(2, 2)),
     "shard_index must be in"),
    (lambda: pipeline.EpochBatches(IMAGES[:49], LABELS[:49], 8, shard=grain.sharding.ShardOptions(0, 2)),
     "last batch \\(1 of the 49"),
    (lambda: pipeline.EpochBatches(IMAGES, LABELS, 8).epoch(-1), "epoch must be an int >= 0"),
    (lambda: pipeline.EpochBatches.from_source([1, 2, 3], 8), "needs __len__ and read"),
])
def test_bad_input_is_a_clear_error(call, message):
    with pytest.raises((ValueError, TypeError), match=message):
        call()


@pytest.mark.parametrize("argument, minimum", [
    ("batch_size", 1), ("seed", 0), ("max_shift", 0), ("num_threads", 0), ("prefetch_size", 0), ("epoch", 0)])
def test_counts_are_checked_with_one_convention(argument, minimum):
    """jaxdl.validation's rule: not an int (a bool, a float, a string) is a TypeError, an int
    below the minimum a ValueError; the message names the function, the argument and the value."""
    owner = "EpochBatches.epoch" if argument == "epoch" else "EpochBatches"
    expected = "a positive int" if minimum == 1 else "an int >= 0"

    def call(value):
        if argument == "epoch":
            return pipeline.EpochBatches(IMAGES, LABELS, 8).epoch(value)
        return pipeline.EpochBatches(IMAGES, LABELS, **{"batch_size": 8, argument: value})

    for value in (True, 2.0, "2", None):
        with pytest.raises(TypeError, match=rf"^{owner}: {argument} must be {expected}, got {value!r} of type "
                                            rf"{type(value).__name__}\.$"):
            call(value)
    with pytest.raises(ValueError, match=rf"^{owner}: {argument} must be {expected}, got {minimum - 1}\.$"):
        call(minimum - 1)
    call(np.int64(minimum + 1))  # NumPy integers are ints


@pytest.mark.parametrize("call, error, message", [
    (lambda: pipeline.EpochBatches(IMAGES.astype(np.float32), LABELS, 8), TypeError,
     r"EpochBatches: images must be uint8 \(n, rows, cols\), got float32 \(50, 8, 8\)\."),
    (lambda: pipeline.EpochBatches(IMAGES[:, None], LABELS, 8), ValueError,
     r"EpochBatches: images must be uint8 \(n, rows, cols\), got uint8 \(50, 1, 8, 8\)\."),
    (lambda: pipeline.EpochBatches(IMAGES, LABELS.astype(float), 8), TypeError,
     r"EpochBatches: labels must be integer class indices of shape \(n,\), got float64 \(50,\)\."),
    (lambda: pipeline.EpochBatches(IMAGES, LABELS[:, None], 8), ValueError,
     r"EpochBatches: labels must be integer class indices of shape \(n,\), got int64 \(50, 1\)\."),
    (lambda: pipeline.EpochBatches(IMAGES, LABELS, 8, shard=(0, 2)), TypeError,
     r"EpochBatches: shard must be a grain.sharding.ShardOptions \(e.g. process_shard\(\)\) or None, got \(0, 2\)"),
    (lambda: pipeline.ArraySource(IMAGES.astype(np.int32), LABELS), TypeError, r"ArraySource: images must be uint8"),
])
def test_wrong_types_are_type_errors_and_wrong_values_value_errors(call, error, message):
    with pytest.raises(error, match=message):
        call()


# ----------------------------------------------------------------------------------------
# Positions in jaxdl.training.data: grain's state, or skipping batches of a plain source.


def test_epoch_source_positions_for_grain_and_plain_sources():
    grain_source = EpochSource(pipeline.EpochBatches(IMAGES, LABELS, 8, seed=0, shuffle=True), "train")
    batches = grain_source.epoch(1)
    next(batches), next(batches), next(batches)
    position = batches.position()
    assert position == {"epoch": 1, "batches": 3, "iterator": {"next_index": 3}}
    rest = [batch.x for batch in batches]
    np.testing.assert_array_equal(next(grain_source.epoch(1, position)).x, rest[0])
    plain = EpochSource([(np.full((2, 1), i), np.zeros(2, int)) for i in range(5)], "plain")
    batches = plain.epoch(0)
    next(batches), next(batches)
    assert batches.position() == {"epoch": 0, "batches": 2, "iterator": None}
    assert [int(batch.x[0, 0]) for batch in plain.epoch(0, batches.position())] == [2, 3, 4]
    with pytest.raises(ValueError, match="position in epoch 0 cannot start epoch 1"):
        plain.epoch(1, batches.position())
    with pytest.raises(ValueError, match="fewer than the 9"):
        plain.epoch(0, {"epoch": 0, "batches": 9, "iterator": None})


# ----------------------------------------------------------------------------------------
# Mid-epoch checkpoints and resume in jaxdl.fit, on a tiny model.

TRAIN_IMAGES = id_images(48, 6, 6, seed=1)
TRAIN_LABELS = (TRAIN_IMAGES[:, :3].mean((1, 2)) > TRAIN_IMAGES[:, 3:].mean((1, 2))).astype(np.int32)
MODEL = jaxdl.Serial(jaxdl.Flatten(), jaxdl.FullyConnected(8), jaxdl.BatchNormalization(), jaxdl.ReLU(),
                     jaxdl.Dropout(0.3), jaxdl.FullyConnected(2), jaxdl.SoftMax())
OPTIMIZER = jaxdl.Adam(3e-2)
EPOCHS, STEPS, EVERY = 3, 6, 4  # mid-epoch checkpoints after global steps 4, 8, 16 (12 ends epoch 2)


class InterruptAfter(Callback):
    """Raises KeyboardInterrupt (as Ctrl-C would) once ``steps`` steps were reported (log_every=1)."""

    def __init__(self, steps):
        self.steps, self.seen = steps, 0

    def on_steps(self, epoch, metrics):
        self.seen += len(metrics)
        if self.seen == self.steps:
            raise KeyboardInterrupt


TRAIN_STEP = jaxdl.make_train_step(MODEL, jaxdl.cross_entropy, OPTIMIZER)  # shared by the runs: compiled once
EVAL_STEP = jaxdl.make_eval_step(MODEL)


def run_fit(output_dir, *, resume=False, callbacks=(), every=EVERY, log=None, batch_size=8):
    train = pipeline.EpochBatches(TRAIN_IMAGES, TRAIN_LABELS, batch_size, seed=7, shuffle=True, max_shift=1,
                                  drop_remainder=True)
    validation = pipeline.EpochBatches(TRAIN_IMAGES[:16], TRAIN_LABELS[:16], 8)
    state = jaxdl.create_train_state(MODEL, OPTIMIZER, 0, (8, 1, 6, 6))
    run = jaxdl.Run(output_dir, resume=resume, checkpoint_every_steps=every)
    return jaxdl.fit(TRAIN_STEP, state, train, epochs=EPOCHS, eval_step=EVAL_STEP, validation_data=validation,
                     run=run, log_every=1,
                     callbacks=[*callbacks, *jaxdl.default_callbacks(run, log=log, plot=False,
                                                                     resume_command="train --resume")])


def assert_same_tree(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def without_timings(history):
    return [{k: v for k, v in row.items() if not k.endswith("seconds")} for row in history]


@pytest.fixture(scope="module")
def unbroken(tmp_path_factory):
    return run_fit(tmp_path_factory.mktemp("unbroken") / "run")


def kept_steps(output_dir):
    return sorted(int(path.name.removeprefix("step_")) for path in (output_dir / "checkpoints").iterdir())


def test_mid_epoch_checkpoints_change_nothing(unbroken, tmp_path):
    plain = run_fit(tmp_path / "plain", every=None)
    assert_same_tree(plain.train_state, unbroken.train_state)
    assert without_timings(plain.history) == without_timings(unbroken.history)
    # Mid-epoch steps are unranked: orbax dropped each once a newer step was committed.
    assert all(step % STEPS == 0 for step in kept_steps(unbroken.output_dir))
    assert kept_steps(unbroken.output_dir) == kept_steps(plain.output_dir)


@pytest.mark.parametrize("interrupt_after, epoch, batch", [(6, 1, 4), (11, 2, 2)])
def test_resume_mid_epoch_equals_an_unbroken_run(unbroken, tmp_path, interrupt_after, epoch, batch):
    output_dir, logs = tmp_path / "run", []
    with pytest.raises(KeyboardInterrupt):
        run_fit(output_dir, callbacks=[InterruptAfter(interrupt_after)], log=logs.append)
    step = (epoch - 1) * STEPS + batch
    mid = output_dir / "checkpoints" / f"step_{step:08d}"
    assert f"{mid} (epoch {epoch}, after batch {batch})" in logs[-1] and logs[-1].endswith("train --resume")
    assert resume_checkpoint_dir(output_dir) == mid
    position = checkpoint.read_manifest(mid)["metadata"]["position"]
    assert position["epoch"] == epoch - 1 and position["batches"] == batch
    assert position["iterator"] == {"next_index": batch} and position["examples"] == 8 * batch
    with pytest.raises(ValueError, match=f"already holds a run \\(checkpoints/{mid.name}\\)"):
        run_fit(output_dir)
    logs.clear()
    resumed = run_fit(output_dir, resume=True, log=logs.append)
    assert f"in epoch {epoch} of {EPOCHS} after batch {batch} (step {step})" in logs[0]
    assert_same_tree(resumed.train_state, unbroken.train_state)
    assert without_timings(resumed.history) == without_timings(unbroken.history)
    last, _ = checkpoint.load_checkpoint(resumed.checkpoint_dir("last"), resumed.train_state)
    assert_same_tree(last, unbroken.train_state)
    assert not mid.exists() and resume_checkpoint_dir(output_dir).name == f"step_{EPOCHS * STEPS:08d}"


def test_a_mid_epoch_resume_with_another_epoch_length_is_an_error(tmp_path):
    output_dir = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        run_fit(output_dir, callbacks=[InterruptAfter(6)])
    assert checkpoint.read_manifest(resume_checkpoint_dir(output_dir))["metadata"]["position"]["steps"] == STEPS
    with pytest.raises(ValueError, match=f"saved in an epoch of {STEPS} steps, but epoch 1 .* now has 4"):
        run_fit(output_dir, resume=True, batch_size=12)  # 48 examples in 4 batches: examples would be skipped


def test_an_epoch_step_and_a_newer_mid_epoch_step_resume_from_the_newer(unbroken, tmp_path):
    output_dir = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        run_fit(output_dir, callbacks=[InterruptAfter(STEPS + 3)])  # epoch 1 committed at 6, a mid-epoch step at 8
    assert kept_steps(output_dir) == [STEPS, 8]
    resumed = run_fit(output_dir, resume=True)
    assert_same_tree(resumed.train_state, unbroken.train_state)
    assert all(step % STEPS == 0 for step in kept_steps(output_dir))


def test_checkpoint_every_steps_is_a_run_option_and_a_positive_int(tmp_path):
    state = jaxdl.create_train_state(MODEL, OPTIMIZER, 0, (8, 1, 6, 6))
    batches = [(np.zeros((8, 1, 6, 6), np.float32), np.zeros(8, np.int32))]
    step = jaxdl.make_train_step(MODEL, jaxdl.cross_entropy, OPTIMIZER)
    with pytest.raises(TypeError, match="unexpected keyword argument 'checkpoint_every_steps'"):
        jaxdl.fit(step, state, batches, epochs=1, checkpoint_every_steps=2)  # it belongs to the Run
    with pytest.raises(ValueError, match="Run: checkpoint_every_steps must be >= 1, got 0"):
        jaxdl.Run(tmp_path, checkpoint_every_steps=0)