"""The character-level language model: the bundled corpus, its batching, the recipe and the script
(`jaxdl.datasets.text`, `jaxdl.recipes.char_lm`, scripts/train_char_lm.py)."""

from __future__ import annotations

import dataclasses
import math
import re
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from plain_python import ROOT, described, run_plain

import jaxdl
from jaxdl.datasets import text
from jaxdl.layers.recurrent.stepping import initial_carry
from jaxdl.recipes import char_lm

SCRIPT = ROOT / "scripts" / "train_char_lm.py"
#: The script on a tiny slice of the corpus: a few seconds, most of it compiling.
TINY = ["--max-chars", "6000", "--hidden", "24", "--batch", "4", "--length", "16", "--eval-batch", "2",
        "--epochs", "2", "--max-batches", "30", "--sample-every", "1", "--sample-length", "30", "--test",
        "--learning-rate", "1e-2"]


def test_bundled_corpus_matches_its_recorded_sha256():
    corpus = text.load_text()
    assert len(corpus) == 684_768 and corpus.startswith("PRIDE AND PREJUDICE")
    assert text.file_sha256(text.BUNDLED_CORPUS) == text.recorded_sha256(text.BUNDLED_CORPUS)
    assert (ROOT / "data" / "pride_and_prejudice.LICENSE").read_text().count("public domain") >= 1


def test_a_damaged_corpus_is_named_with_both_sha256s(tmp_path):
    damaged = tmp_path / "pride_and_prejudice.txt"
    shutil.copy(text.BUNDLED_CORPUS, damaged)
    shutil.copy(text.BUNDLED_CORPUS.with_suffix(".SHA256"), tmp_path)
    with damaged.open("a") as file:
        file.write("x")
    with pytest.raises(text.TextChecksumError, match=re.escape(str(damaged)) + " has sha256 [0-9a-f]{64}, expected "
                       + text.recorded_sha256(text.BUNDLED_CORPUS)):
        text.load_text(damaged)
    with pytest.raises(FileNotFoundError, match="load_text: no text file at"):
        text.load_text(tmp_path / "missing.txt")
    other = tmp_path / "other.txt"
    other.write_text("abc")
    assert text.load_text(other) == "abc"                 # no .SHA256 beside it: not checked
    with pytest.raises(ValueError, match="other.txt has sha256"):
        text.load_text(other, sha256="0" * 64)


def test_vocabulary_round_trips_and_names_unknown_characters():
    vocabulary = text.CharVocabulary.from_text("hello world")
    assert vocabulary.chars == " dehlorw" and vocabulary.size == 8
    ids = vocabulary.encode("world hello")
    assert ids.dtype == np.int32 and vocabulary.decode(ids) == "world hello"
    with pytest.raises(ValueError, match=r"CharVocabulary.encode: character 'z' \(at position 2\) is not"):
        vocabulary.encode("hoz")
    with pytest.raises(ValueError, match=r"CharVocabulary.decode: ids must be in \[0, 8\), got 8"):
        vocabulary.decode([1, 8])
    with pytest.raises(ValueError, match="chars must be distinct"):
        text.CharVocabulary("aa")


def test_split_is_contiguous_and_sized():
    ids = np.arange(1000, dtype=np.int32)
    splits = text.split_text(ids, validation=0.1, test=0.05)
    assert [len(part) for part in splits] == [850, 100, 50]
    np.testing.assert_array_equal(np.concatenate(splits), ids)
    with pytest.raises(ValueError, match=r"split_text: validation \+ test must be < 1"):
        text.split_text(ids, 0.6, 0.4)
    with pytest.raises(ValueError, match=r"split_text: test must be in \[0, 1\), got 1.5"):
        text.split_text(ids, 0.1, 1.5)
    with pytest.raises(TypeError, match="split_text: validation must be a real number"):
        text.split_text(ids, "0.1")


def test_stream_batches_continue_each_row_in_the_next_batch():
    ids = np.arange(203, dtype=np.int32)
    source = text.StreamBatches(ids, batch=4, length=6)
    batches = list(source.epoch(0))
    assert len(batches) == source.steps_per_epoch == (50 - 1) // 6 == 8
    assert [b.reset for b in batches] == [True] + [False] * 7
    assert source.characters == 8 * 4 * 6
    for first, second in zip(batches, batches[1:]):
        np.testing.assert_array_equal(second.x[:, 0], first.x[:, -1] + 1)   # row b goes on where it stopped
    for batch in batches:
        np.testing.assert_array_equal(batch.labels, batch.x + 1)              # the next character
    np.testing.assert_array_equal(batches[0].x[:, 0], [0, 50, 100, 150])    # 4 contiguous streams of 50
    assert len(list(text.StreamBatches(ids, 4, 6, max_batches=3).epoch(1))) == 3
    with pytest.raises(ValueError, match="StreamBatches: 4 streams of windows of 60 characters need at least 244 "
                                         "characters, got 203"):
        text.StreamBatches(ids, 4, 60)
    with pytest.raises(TypeError, match="StreamBatches: batch must be a positive int"):
        text.StreamBatches(ids, 2.0, 6)


def test_bits_per_char_is_the_mean_cross_entropy_over_ln2():
    rng = np.random.default_rng(0)
    logits, targets = rng.normal(size=(3, 5, 7)), rng.integers(0, 7, size=(3, 5))
    shifted = logits - logits.max(-1, keepdims=True)
    nats = -(np.take_along_axis(shifted, targets[..., None], -1)[..., 0] - np.log(np.exp(shifted).sum(-1)))
    np.testing.assert_allclose(char_lm.char_bits(jnp.asarray(logits), jnp.asarray(targets)),
                               nats.mean(-1) / math.log(2), rtol=1e-6)
    assert float(char_lm.char_cross_entropy(jnp.asarray(logits), jnp.asarray(targets))) == pytest.approx(nats.mean())
    assert text.bits_per_char(math.log(2)) == pytest.approx(1.0)


@pytest.fixture(scope="module")
def small_lstm():
    config = char_lm.CharLMConfig(hidden=8, embed=4, sample_length=12, temperature=1e-6)
    vocabulary = text.CharVocabulary("abcde")
    model = char_lm.build_model(config, vocabulary.size)
    params, state = model.init(jax.random.key(0), (2, 7), input_dtype=jnp.int32)   # trained at batch 2
    return config, vocabulary, model, params, state


def fresh_state(model, length: int = 1):
    """The model's state for a batch of one with zeroed memory (what a one-pass reference starts from)."""
    return model.init(jax.random.key(0), (1, length), input_dtype=jnp.int32)[1]


@pytest.fixture(scope="module")
def small_transformer():
    config = char_lm.CharLMConfig.for_model("transformer", width=8, layers=2, heads=2, length=6, sample_length=9,
                                            temperature=1e-6)
    vocabulary = text.CharVocabulary("abcde")
    model = char_lm.build_model(config, vocabulary.size)
    params, state = model.init(jax.random.key(1), (1, 6), input_dtype=jnp.int32)
    return config, vocabulary, model, params, state


def test_one_character_at_a_time_from_a_carried_carry_equals_one_pass(small_lstm):
    """What `char_lm.sample` relies on for the LSTM: the per-step API fed one character at a
    time gives the logits of one pass over the whole sequence."""
    config, vocabulary, model, params, state = small_lstm
    ids = jnp.array([[0, 3, 1, 4, 2, 2, 0]], jnp.int32)
    whole, _ = jax.jit(model.apply)(params, fresh_state(model), ids)
    step_fn = char_lm.sampling_step(model, config)
    carry, pieces = initial_carry(model, params, 1), []
    for t in range(7):
        out, carry = step_fn(params, state, carry, ids[:, t])
        pieces.append(out)
    np.testing.assert_allclose(np.stack(pieces, axis=1), whole, rtol=1e-5, atol=1e-6)


def test_the_transformer_is_causal(small_transformer):
    """What `char_lm.sample` relies on for the Transformer: the logits at position t do not
    depend on the characters after t (so right padding changes nothing before it)."""
    config, vocabulary, model, params, state = small_transformer
    ids = jnp.array([[0, 3, 1, 4, 2, 2]], jnp.int32)
    changed = ids.at[0, 3:].set(jnp.array([1, 0, 4], jnp.int32))
    logits, _ = model.apply(params, state, ids)
    other, _ = model.apply(params, state, changed)
    np.testing.assert_allclose(other[0, :3], logits[0, :3], rtol=1e-5, atol=1e-6)
    assert not np.allclose(other[0, 3:], logits[0, 3:])


@pytest.mark.parametrize("which", ["small_lstm", "small_transformer"])
def test_sampling_at_a_tiny_temperature_is_greedy_decoding(which, request):
    config, vocabulary, model, params, state = request.getfixturevalue(which)
    drawn = char_lm.sample(model, params, state, vocabulary, config, jax.random.key(3), prompt="ab")
    assert len(drawn) == config.sample_length and set(drawn) <= set(vocabulary.chars)
    full = vocabulary.encode("ab" + drawn)
    apply = jax.jit(model.apply)
    if which == "small_lstm":                               # one pass: the prediction after every prefix
        logits, _ = apply(params, fresh_state(model), jnp.asarray(full[None, :-1]))
        greedy = np.argmax(logits[0, 1:], axis=-1)
    else:                                                   # the prediction from each prefix's last T characters
        greedy = [int(np.argmax(apply(params, state, jnp.asarray(full[None, max(0, end - config.length):end]))[0][0, -1]))
                  for end in range(2, len(full))]
    assert drawn == vocabulary.decode(greedy)               # each drawn character is the argmax after its prefix
    hot = dataclasses.replace(config, temperature=1.0)
    assert char_lm.sample(model, params, state, vocabulary, hot, jax.random.key(1), prompt="e") == \
        char_lm.sample(model, params, state, vocabulary, hot, jax.random.key(1), prompt="e")
    with pytest.raises(ValueError, match="CharVocabulary.encode: character 'z'"):
        char_lm.sample(model, params, state, vocabulary, config, jax.random.key(0), prompt="z")


def test_the_transformer_recipe_learns_on_a_tiny_slice():
    config = char_lm.CharLMConfig.for_model("transformer", width=16, layers=1, heads=2, length=16, batch=8,
                                            eval_batch=2, epochs=1, max_batches=30, max_chars=6000,
                                            sample_every=1, sample_length=20)
    lines = []
    result = char_lm.train_char_lm(config, test=True, log=lines.append)
    uniform = char_lm.uniform_bits(result.vocabulary)
    assert result.steps == 30 and math.isfinite(result.validation_bits) and math.isfinite(result.test_bits)
    assert result.validation_bits < uniform - 1 and result.test_bits < uniform - 1
    assert len(result.samples) == 1 and len(result.samples[0]) == 20
    assert any(line.startswith("sample after epoch 1:") for line in lines)


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match=r"CharLMConfig: model must be one of \['lstm'"):
        char_lm.CharLMConfig(model="gru")
    with pytest.raises(ValueError, match="CharLMConfig: hidden must be a positive int, got 0"):
        char_lm.CharLMConfig(hidden=0)
    with pytest.raises(TypeError, match="CharLMConfig: batch must be a positive int, got True"):
        char_lm.CharLMConfig(batch=True)
    with pytest.raises(ValueError, match="CharLMConfig: sample_every must be an int >= 0"):
        char_lm.CharLMConfig(sample_every=-1)
    with pytest.raises(ValueError, match="CharLMConfig: temperature must be a finite number > 0"):
        char_lm.CharLMConfig(temperature=0.0)
    with pytest.raises(ValueError, match="CharLMConfig: heads must divide width, got width 10 and heads 4"):
        char_lm.CharLMConfig(model="transformer", width=10)
    with pytest.raises(ValueError, match=r"CharLMConfig.for_model: model must be one of \['lstm', 'transformer'\]"):
        char_lm.CharLMConfig.for_model("gpt")
    assert char_lm.CharLMConfig.for_model("transformer", learning_rate=None, batch=4).learning_rate == \
        char_lm.MODEL_DEFAULTS["transformer"]["learning_rate"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("char_lm")
    result = run_plain([SCRIPT, *TINY, "--output-dir", "run"], cwd=work, cache_dir=work / "cache", timeout=300)
    assert result.returncode == 0, described(result)
    return work, result.stdout


def test_the_script_learns_on_a_tiny_slice_and_prints_samples(tiny_run):
    work, output = tiny_run
    uniform = math.log2(len(set(text.load_text()[:6000])))
    final = re.search(r"lstm: validation ([0-9.]+) bits/char, test ([0-9.]+) bits/char \(uniform ([0-9.]+), "
                      r"(\d+) characters\); 60 steps in", output)
    assert final, output
    validation, test, printed_uniform = map(float, final.groups()[:3])
    assert printed_uniform == pytest.approx(uniform, abs=1e-3)
    assert math.isfinite(validation) and math.isfinite(test)
    assert validation < uniform - 1 and test < uniform - 1            # learned more than the alphabet
    epochs = re.findall(r"validation bits_per_char ([0-9.]+)", output)
    assert len(epochs) == 2 and float(epochs[-1]) == pytest.approx(validation, abs=1e-3)
    samples = re.findall(r"sample after epoch (\d):\n(.*?)\n-{40}", output, flags=re.S)
    assert [epoch for epoch, _ in samples] == ["1", "2"] and all(len(sample) == 30 for _, sample in samples)
    assert (work / "run" / "metrics.csv").read_text().splitlines()[0].count("validation_bits_per_char") == 1


@pytest.mark.parametrize("argv, message", [
    (["--batch", "0"], "argument --batch: expected an integer >= 1, got '0'"),
    (["--model", "gru"], "argument --model: invalid choice: 'gru'"),
    (["--model", "transformer", "--width", "10"], "train_char_lm.py: error: CharLMConfig: heads must divide width"),
    (["--learning-rate", "nan"], "argument --learning-rate: expected a finite number > 0, got 'nan'"),
    (["--sample-every", "-1"], "argument --sample-every: expected an integer >= 0, got '-1'"),
    (["--corpus", ""], "argument --corpus: expected a path, got ''"),
    (["--max-chars", "300", "--batch", "32", "--length", "64"],
     "train_char_lm.py: error: StreamBatches: 32 streams of windows of 64 characters need at least 2080 characters, "
     "got 270"),
    (["--corpus", "missing.txt"], "train_char_lm.py: error: load_text: no text file at missing.txt"),
])
def test_bad_options_are_refused_clearly(argv, message, tmp_path, monkeypatch, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("train_char_lm", SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        script.main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
