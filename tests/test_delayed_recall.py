"""The truncated-BPTT demo (`jaxdl.recipes.delayed_recall`, scripts/train_sequence.py)."""

import numpy as np
import pytest

import jaxdl
from jaxdl.losses import per_example_losses
from jaxdl.recipes import delayed_recall as recall

SMALL = recall.RecallConfig(hidden=8, chunk=5, chunks=3, delay=2, batch=4, batches=3, test_batches=2)


def test_chunks_are_a_function_of_the_epoch_and_reset_each_group():
    source = recall.RecallChunks(SMALL, 2, stream=0)
    first, again, other = list(source.epoch(0)), list(source.epoch(0)), list(source.epoch(1))
    assert len(first) == source.steps_per_epoch == 6
    assert [batch.reset for batch in first] == [True, False, False] * 2
    np.testing.assert_array_equal(first[4].x, again[4].x)
    assert not np.array_equal(first[0].x, other[0].x)
    assert first[0].x.shape == (4, 5, 4) and first[0].labels[0].shape == (4, 5)


def test_validation_loss_carries_the_state_through_each_sequence():
    model, result = recall.train_recall(SMALL, memorize=True)
    assert result.status == "completed" and result.history[0]["step"] == 9
    params, state = result.train_state.params, result.train_state.state
    eval_step = jaxdl.make_eval_step(model)
    total, count = 0.0, 0
    for batch in recall.RecallChunks(SMALL, SMALL.test_batches, stream=1).epoch(0):
        if batch.reset:
            state = jaxdl.reset_memory(model, state)
        logits, state = eval_step(params, state, batch.x)
        total += float(per_example_losses(recall.recall_loss, logits, batch.labels).sum())
        count += batch.x.shape[0]
    assert result.history[0]["validation_loss"] == pytest.approx(total / count, rel=1e-6)
    scores = recall.evaluate_recall(model, result.train_state, SMALL)
    assert set(scores) == {"all", "boundary", "inside"} and all(0 <= v <= 1 for v in scores.values())


def test_config_errors_are_clear():
    with pytest.raises(ValueError, match="delay must be in"):
        recall.RecallConfig(delay=10, chunk=10)
    with pytest.raises(ValueError, match="cell must be one of"):
        recall.RecallConfig(cell="transformer")
    assert recall.reset_ceiling(recall.RecallConfig()) == pytest.approx(1 - 19 * 6 / 194 * 0.75)
