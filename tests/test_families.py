"""The decoder-only and encoder-only families (course_lib/families.py): the model, its two objectives,
its cache, training and the fill-in-the-blank measurements."""
import math

import pytest
import torch
import torch.nn.functional as F

from course_lib import families
from course_lib.families import (IGNORE, LanguageModel, Vocabulary, blank_accuracy, blank_logits, choose_blanks,
                                 encode_blank, encode_captions, fill_in, generate_text, language_model_loss,
                                 mask_tokens, next_token_targets, perplexity, sequence_batches,
                                 train_language_model, training_pair)
from course_lib.kv_cache import KVCache
from course_lib.tokenizer import BOS_ID, EOS_ID, PAD_ID, UNK_ID
from decoding_helpers import batch

pytestmark = pytest.mark.usefixtures("one_thread")

VOCAB = Vocabulary(30)  # ids 0..29 from the "tokenizer", 30 = [MASK], 31 = [SEP]


class WordTokenizer:
    """A stand-in for the course tokenizer: one id per known word, ids from 4."""

    words = ["a", "dog", "is", "barking", "at", "cat", "the", "man", "runs", "."]
    vocab_size = 30

    def encode(self, text):
        return [4 + self.words.index(w) for w in text.lower().replace(".", " .").split()]

    def encode_batch(self, texts):
        return [self.encode(t) for t in texts]

    def id_to_piece(self, i):
        return "▁" + self.words[i - 4] if 4 <= i < 4 + len(self.words) else f"<{i}>"

    def decode(self, ids):
        ids = list(ids)
        ids = ids[:ids.index(EOS_ID)] if EOS_ID in ids else ids
        return " ".join(self.words[i - 4] if 4 <= i < 4 + len(self.words) else f"<{i}>" for i in ids if i > EOS_ID)


def model_of(causal=True, seed=0, **sizes):
    torch.manual_seed(seed)
    options = dict(d_model=16, h=2, num_layers=2, d_ff=32, dropout=0.0, max_len=24)
    options.update(sizes)
    return LanguageModel(VOCAB.size, causal=causal, **options).eval()


def random_rows(count, seed, lengths=(2, 9)):
    """``[BOS, words..., EOS]`` rows of word ids 4..29."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(count):
        n = int(torch.randint(lengths[0], lengths[1] + 1, (1,), generator=g))
        rows.append([BOS_ID, *torch.randint(4, 30, (n,), generator=g).tolist(), EOS_ID])
    return rows


# --- the vocabulary --------------------------------------------------------------------------------

def test_vocabulary_appends_mask_and_sep_after_the_tokenizer():
    assert (VOCAB.mask_id, VOCAB.sep_id, VOCAB.size) == (30, 31, 32)
    assert VOCAB.first_word_id == UNK_ID + 1
    assert set(VOCAB.special_ids) == {PAD_ID, BOS_ID, EOS_ID, 30, 31}
    assert Vocabulary.of(WordTokenizer()) == VOCAB
    with pytest.raises(ValueError, match="tokenizer_size"):
        Vocabulary(4)


# --- the model ------------------------------------------------------------------------------------

def test_shapes_and_tied_output_layer():
    model = model_of()
    ids = batch(random_rows(3, 0))
    assert model(ids).shape == (3, ids.shape[1], VOCAB.size)
    assert model.out.weight is model.embed.weight
    assert len(model.attention_weights) == 2 and model.attention_weights[0].shape == (3, 2, ids.shape[1], ids.shape[1])
    assert "GPT" in model.family and "BERT" in model_of(causal=False).family


@pytest.mark.parametrize("causal", [True, False])
def test_a_later_token_reaches_earlier_positions_only_without_the_causal_mask(causal):
    model = model_of(causal)
    ids = torch.tensor([[BOS_ID, 5, 6, 7, 8, EOS_ID]])
    changed = ids.clone()
    changed[0, 4] = 20
    before, after = model(ids), model(changed)
    earlier_moved = not torch.allclose(before[0, :4], after[0, :4], atol=1e-6)
    assert earlier_moved is not causal
    assert not torch.allclose(before[0, 4:], after[0, 4:], atol=1e-6)


@pytest.mark.parametrize("causal", [True, False])
def test_padding_changes_nothing_at_real_positions(causal):
    model = model_of(causal)
    row = [BOS_ID, 5, 9, 12, EOS_ID]
    alone = model(torch.tensor([row]))
    padded = model(batch([row, row + [7, 8, 9]]))
    torch.testing.assert_close(padded[0, :5], alone[0], atol=1e-5, rtol=1e-5)


def test_the_model_refuses_bad_input():
    model = model_of()
    with pytest.raises(ValueError, match="token ids must lie in 0..31"):
        model(torch.tensor([[BOS_ID, 32]]))
    with pytest.raises(ValueError, match="max_len"):
        model(torch.ones(1, 25, dtype=torch.long))
    with pytest.raises(TypeError, match="int dtype"):
        model(torch.ones(1, 3))
    with pytest.raises(ValueError, match="no tokens"):
        model(torch.ones(1, 0, dtype=torch.long))
    with pytest.raises(TypeError, match="causal must be True"):
        LanguageModel(VOCAB.size, causal="yes")
    with pytest.raises(TypeError, match="expected a KVCache"):
        model(torch.ones(1, 2, dtype=torch.long), cache=[])
    with pytest.raises(ValueError, match="nothing to cache"):
        model_of(causal=False).new_cache(2)
    with pytest.raises(ValueError, match="nothing to cache"):
        model_of(causal=False)(torch.ones(1, 2, dtype=torch.long), cache=KVCache(2, 1))


# --- the cache ------------------------------------------------------------------------------------

def test_a_cached_prefill_then_single_tokens_equals_the_full_pass():
    model = model_of()
    ids = batch(random_rows(3, 1, lengths=(8, 8)))  # (3, 10)
    full = model(ids)
    cache = model.new_cache(3)
    pieces = [model(ids[:, :4], cache)] + [model(ids[:, t:t + 1], cache) for t in range(4, ids.shape[1])]
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-5, rtol=1e-5)
    assert cache.length == ids.shape[1] and cache.nbytes("cross") == 0
    assert cache.nbytes("self") == 2 * 2 * 3 * ids.shape[1] * 16 * 4  # K and V, 2 layers, B, t, d_model, fp32


@pytest.mark.parametrize("settings", [dict(temperature=1.0), dict(temperature=0.8, top_p=0.9), dict(top_k=3)])
def test_generation_with_and_without_the_cache_gives_the_same_tokens(settings):
    model = model_of()
    outputs = [generate_text(model, [BOS_ID, 5, 6], num_samples=4, max_new_tokens=12,
                             generator=torch.Generator().manual_seed(3), cached=cached, **settings)
               for cached in (True, False)]
    assert outputs[0] == outputs[1]
    assert all(len(row) <= 12 for row in outputs[0])
    assert all(PAD_ID not in row and BOS_ID not in row for row in outputs[0])


def test_top_k_1_generation_is_the_argmax_continuation():
    model = model_of(seed=4)
    out = generate_text(model, [BOS_ID, 7], max_new_tokens=6, top_k=1)[0]
    text = [BOS_ID, 7]
    for _ in range(6):
        logits = model(torch.tensor([text]))[0, -1]
        logits[[PAD_ID, BOS_ID]] = -math.inf
        text.append(int(logits.argmax()))
        if text[-1] == EOS_ID:
            break
    assert out == text[2:]


def test_generation_refuses_bad_settings():
    model = model_of()
    with pytest.raises(ValueError, match="start with BOS"):
        generate_text(model, [5, 6])
    with pytest.raises(ValueError, match="start with BOS"):
        generate_text(model, [])
    with pytest.raises(ValueError, match="max_len"):
        generate_text(model, [BOS_ID, 5], max_new_tokens=30)
    with pytest.raises(ValueError, match="decoder-only"):
        generate_text(model_of(causal=False), [BOS_ID])
    with pytest.raises(TypeError, match="cached"):
        generate_text(model, [BOS_ID], cached="yes")


def test_generation_keeps_the_models_mode():
    model = model_of().train()
    generate_text(model, [BOS_ID], max_new_tokens=2)
    assert model.training


# --- the objectives ------------------------------------------------------------------------------

def test_next_token_targets_shift_left_and_ignore_padding():
    ids = torch.tensor([[BOS_ID, 5, 6, EOS_ID], [BOS_ID, 7, EOS_ID, PAD_ID]])
    inputs, targets = next_token_targets(ids)
    assert inputs.tolist() == [[BOS_ID, 5, 6], [BOS_ID, 7, EOS_ID]]
    assert targets.tolist() == [[5, 6, EOS_ID], [7, EOS_ID, IGNORE]]
    with pytest.raises(ValueError, match="at least 2"):
        next_token_targets(torch.tensor([[BOS_ID]]))


def test_mask_tokens_chooses_words_only_and_labels_only_the_chosen():
    ids = batch(random_rows(400, 5, lengths=(3, 20)))
    inputs, labels = mask_tokens(ids, VOCAB, torch.Generator().manual_seed(0))
    chosen = labels != IGNORE
    special = torch.isin(ids, torch.tensor(VOCAB.special_ids))
    assert not (chosen & special).any()
    assert torch.equal(labels[chosen], ids[chosen])
    assert torch.equal(inputs[~chosen], ids[~chosen])
    words = (~special).sum(dim=1)
    assert torch.equal(chosen.sum(dim=1), torch.clamp((words * 0.15).round().long(), min=1))


def test_mask_tokens_splits_80_10_10():
    ids = batch(random_rows(2000, 6, lengths=(10, 20)))
    inputs, labels = mask_tokens(ids, VOCAB, torch.Generator().manual_seed(1))
    chosen = labels != IGNORE
    n = int(chosen.sum())
    to_mask = int((inputs[chosen] == VOCAB.mask_id).sum()) / n
    kept = int((inputs[chosen] == ids[chosen]).sum()) / n
    assert abs(to_mask - 0.8) < 0.02 and abs(kept - 0.1 - 0.1 / 26) < 0.02  # a random word may equal the original
    replaced = inputs[chosen & (inputs != VOCAB.mask_id)]
    assert bool(((replaced >= VOCAB.first_word_id) & (replaced < VOCAB.tokenizer_size)).all())


def test_mask_tokens_is_reproducible_from_its_generator_alone():
    ids = batch(random_rows(50, 7))
    first = mask_tokens(ids, VOCAB, torch.Generator().manual_seed(2))
    torch.manual_seed(123)  # the global generator plays no part
    second = mask_tokens(ids, VOCAB, torch.Generator().manual_seed(2))
    other = mask_tokens(ids, VOCAB, torch.Generator().manual_seed(3))
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    assert not torch.equal(first[1], other[1])


def test_mask_tokens_edge_cases_and_refusals():
    only_special = torch.tensor([[BOS_ID, EOS_ID, PAD_ID]])
    inputs, labels = mask_tokens(only_special, VOCAB, torch.Generator().manual_seed(0))
    assert torch.equal(inputs, only_special) and bool((labels == IGNORE).all())
    one_word = torch.tensor([[BOS_ID, 9, EOS_ID]])
    assert int((mask_tokens(one_word, VOCAB, torch.Generator().manual_seed(0))[1] != IGNORE).sum()) == 1
    with pytest.raises(TypeError, match="seeded torch.Generator"):
        mask_tokens(one_word, VOCAB, None)
    with pytest.raises(ValueError, match="rate"):
        mask_tokens(one_word, VOCAB, torch.Generator(), rate=0)
    with pytest.raises(ValueError, match="split"):
        mask_tokens(one_word, VOCAB, torch.Generator(), split=(0.8, 0.1, 0.2))


def test_the_loss_averages_over_the_targets_it_does_not_ignore():
    logits = torch.randn(2, 3, 5, generator=torch.Generator().manual_seed(0))
    targets = torch.tensor([[1, IGNORE, 4], [IGNORE, 0, IGNORE]])
    keep = targets != IGNORE
    expected = F.cross_entropy(logits[keep], targets[keep])
    torch.testing.assert_close(language_model_loss(logits, targets), expected)
    with pytest.raises(ValueError, match="nothing to learn"):
        language_model_loss(logits, torch.full((2, 3), IGNORE))
    with pytest.raises(ValueError, match="targets"):
        language_model_loss(logits, targets[:, :2])


def test_training_pair_follows_the_family():
    ids = batch(random_rows(4, 8))
    assert torch.equal(training_pair(model_of(), ids)[1], next_token_targets(ids)[1])
    g = torch.Generator().manual_seed(0)
    assert torch.equal(training_pair(model_of(causal=False), ids, VOCAB, g)[1],
                       mask_tokens(ids, VOCAB, torch.Generator().manual_seed(0))[1])
    with pytest.raises(ValueError, match="Vocabulary"):
        training_pair(model_of(causal=False), ids)


# --- data and training ---------------------------------------------------------------------------

def test_encode_captions_adds_bos_and_eos_and_drops_long_ones():
    out = encode_captions(WordTokenizer(), ["a dog", "the man runs at a cat"], max_len=5)
    assert out == [[BOS_ID, 4, 5, EOS_ID]]


def test_sequence_batches_hold_every_sequence_once_within_the_budget():
    rows = random_rows(60, 9)
    batches = sequence_batches(rows, max_tokens=40, seed=1)
    seen = sorted(tuple(r[r != PAD_ID].tolist()) for b in batches for r in b)
    assert seen == sorted(map(tuple, rows))
    assert all(b.numel() <= 40 for b in batches)


@pytest.mark.parametrize("causal", [True, False])
def test_training_learns_a_pattern_and_is_reproducible(causal):
    rows = [[BOS_ID, 4, 5, 6, 7, 8, 9, EOS_ID], [BOS_ID, 10, 11, 12, 13, 14, 15, EOS_ID]] * 16
    runs = []
    for _ in range(2):
        model = model_of(causal, seed=1)
        runs.append(train_language_model(model, rows, steps=60, vocab=VOCAB, max_tokens=64, lr=1e-2, warmup_steps=5))
    assert runs[0].losses == runs[1].losses
    assert sum(runs[0].losses[-5:]) / 5 < 0.5 * sum(runs[0].losses[:5]) / 5
    assert runs[0].predicted_tokens > 0 and runs[0].tokens_per_second > 0
    assert not model.training


def test_perplexity_is_exp_of_the_mean_next_token_loss():
    model = model_of(seed=2)
    rows = random_rows(10, 10)
    ids = batch(rows)
    inputs, targets = next_token_targets(ids)
    expected = math.exp(float(language_model_loss(model(inputs), targets).detach()))
    assert perplexity(model, rows) == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="causal"):
        perplexity(model_of(causal=False), rows)


# --- filling in blanks -----------------------------------------------------------------------------

def test_choose_blanks_picks_one_word_per_sequence_reproducibly():
    rows = random_rows(30, 11)
    positions = choose_blanks(rows, VOCAB, seed=4)
    assert positions == choose_blanks(rows, VOCAB, seed=4)
    assert all(0 < p < len(r) - 1 for p, r in zip(positions, rows))
    with pytest.raises(ValueError, match="no word"):
        choose_blanks([[BOS_ID, EOS_ID]], VOCAB)


def test_a_causal_model_guesses_a_blank_from_the_left_side_only():
    model = model_of(seed=3)
    ids = torch.tensor([[BOS_ID, 5, 6, 7, EOS_ID]])
    guess = blank_logits(model, ids, torch.tensor([2]), VOCAB)
    torch.testing.assert_close(guess, model(ids[:, :2])[:, -1], atol=1e-5, rtol=1e-5)


def test_a_bidirectional_model_reads_the_mask_in_place():
    model = model_of(causal=False, seed=3)
    ids = torch.tensor([[BOS_ID, 5, 6, 7, EOS_ID]])
    hidden = ids.clone()
    hidden[0, 2] = VOCAB.mask_id
    torch.testing.assert_close(blank_logits(model, ids, torch.tensor([2]), VOCAB), model(hidden)[:, 2])
    with pytest.raises(ValueError, match="positions must lie"):
        blank_logits(model, ids, torch.tensor([0]), VOCAB)


def test_blank_accuracy_counts_right_top_guesses():
    model = model_of(causal=False, seed=5)
    rows = random_rows(12, 12)
    positions = choose_blanks(rows, VOCAB)
    right = 0
    for row, p in zip(rows, positions):
        guess = blank_logits(model, torch.tensor([row]), torch.tensor([p]), VOCAB).argmax()
        right += int(guess) == row[p]
    assert blank_accuracy(model, rows, positions, VOCAB, batch_size=5) == right / 12
    with pytest.raises(ValueError, match="one position per sequence"):
        blank_accuracy(model, rows, positions[:3], VOCAB)


def test_encode_blank_and_fill_in():
    tokenizer = WordTokenizer()
    ids, position = encode_blank(tokenizer, VOCAB, "A [MASK] is barking at a cat.")
    assert ids == [BOS_ID, 4, VOCAB.mask_id, 6, 7, 8, 4, 9, 13, EOS_ID] and position == 2
    with pytest.raises(ValueError, match="exactly one"):
        encode_blank(tokenizer, VOCAB, "a dog")
    top = fill_in(model_of(causal=False), tokenizer, VOCAB, "A [MASK] is barking.", k=3)
    assert len(top) == 3 and all(0 < p <= 1 for _, p in top)
    assert [p for _, p in top] == sorted((p for _, p in top), reverse=True)



@pytest.mark.parametrize("causal", [True, False])
def test_the_loss_on_predicted_positions_only_equals_the_full_loss(causal):
    model = model_of(causal, seed=6).train()
    ids = batch(random_rows(6, 13))
    inputs, targets = training_pair(model, ids, VOCAB, torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    full = language_model_loss(model(inputs), targets)
    torch.manual_seed(0)  # the same dropout masks
    torch.testing.assert_close(families.predicted_loss(model, inputs, targets), full)
    with pytest.raises(ValueError, match="nothing to learn"):
        families.predicted_loss(model, inputs, torch.full_like(targets, IGNORE))


# --- the shipped pair ---------------------------------------------------------------------------------

def test_export_and_load_give_the_same_model_in_fp16(tmp_path):
    from course_lib.tokenizer import train_sentencepiece

    tokenizer = train_sentencepiece(["a dog is barking at a cat", "the man runs"] * 20, vocab_size=26)
    model = LanguageModel(Vocabulary.of(tokenizer).size, d_model=16, h=2, num_layers=1, d_ff=32, max_len=12)
    families.export_language_model(model, tokenizer, tmp_path, {"note": "test"})
    loaded, loaded_tokenizer, provenance = families.load_language_model(folder=tmp_path)
    assert provenance["note"] == "test" and set(provenance["files"]) == {"model.pt", "tokenizer.model"}
    assert loaded.config == model.config and loaded_tokenizer.sha256 == tokenizer.sha256
    assert loaded.out.weight is loaded.embed.weight and not loaded.training
    ids = torch.tensor([[BOS_ID, 5, 6, EOS_ID]])
    torch.testing.assert_close(loaded(ids), model.eval()(ids), atol=2e-3, rtol=1e-2)
    (tmp_path / "model.pt").write_bytes((tmp_path / "model.pt").read_bytes() + b"x")
    with pytest.raises(ValueError, match="SHA-256"):
        families.load_language_model(folder=tmp_path)


def test_load_language_model_refuses_unknown_families_and_empty_folders(tmp_path):
    with pytest.raises(ValueError, match="family must be one of"):
        families.load_language_model("t5")
    with pytest.raises(FileNotFoundError, match="no trained language model"):
        families.load_language_model(folder=tmp_path)


def test_next_token_targets_after_a_separator_predict_the_second_text_only():
    sep = VOCAB.sep_id
    ids = torch.tensor([[BOS_ID, 5, 6, sep, 7, 8, EOS_ID], [BOS_ID, 9, sep, 10, EOS_ID, PAD_ID, PAD_ID]])
    inputs, targets = next_token_targets(ids, sep_id=sep)
    assert torch.equal(inputs, ids[:, :-1])
    assert targets.tolist() == [[IGNORE, IGNORE, IGNORE, 7, 8, EOS_ID],
                                [IGNORE, IGNORE, 10, EOS_ID, IGNORE, IGNORE]]
    with pytest.raises(ValueError, match="separator"):
        next_token_targets(torch.tensor([[BOS_ID, 5, EOS_ID]]), sep_id=sep)


def test_a_batch_of_prompts_of_one_length_is_continued_row_by_row():
    model = model_of(seed=7)
    prompts = [[BOS_ID, 5, 6], [BOS_ID, 9, 4]]
    together = generate_text(model, prompts, max_new_tokens=8, top_k=1)
    alone = [generate_text(model, p, max_new_tokens=8, top_k=1)[0] for p in prompts]
    assert together == alone
    assert generate_text(model, torch.tensor(prompts), max_new_tokens=8, top_k=1, cached=False) == alone
    with pytest.raises(ValueError, match="num_samples must be 1"):
        generate_text(model, prompts, num_samples=2)
    with pytest.raises(ValueError, match="one length"):
        generate_text(model, [[BOS_ID, 5], [BOS_ID]])
    with pytest.raises(ValueError, match="start with BOS"):
        generate_text(model, [[BOS_ID, 5], [5, 6]])


# --- translation as one sequence ------------------------------------------------------------------

def test_encode_translation_pairs_joins_the_two_sides_with_the_separator():
    pairs = [("a dog", "the man runs"), ("a dog is barking at the cat", "a cat"), ("man", "dog")]
    out = families.encode_translation_pairs(WordTokenizer(), pairs, VOCAB, max_len=4)
    assert out == [[BOS_ID, 4, 5, VOCAB.sep_id, 10, 11, 12, EOS_ID], [BOS_ID, 11, VOCAB.sep_id, 5, EOS_ID]]
    assert len(families.encode_translation_pairs(WordTokenizer(), pairs, VOCAB, max_len=None)) == 3


def test_one_sequence_budget_is_the_translators():
    from course_lib.decoding import output_budget

    for n in (1, 7, 30):
        assert families.one_sequence_budget(n) == output_budget(torch.ones(1, n + 1, dtype=torch.long))[0]


def test_translate_in_one_sequence_continues_each_source_after_the_separator():
    model, tok = model_of(seed=3, max_len=32), WordTokenizer()
    sentences = ["a dog is barking", "the man runs", "  ", "a cat", "the dog is at the cat"]
    out = families.translate_in_one_sequence(model, tok, VOCAB, sentences, batch_size=2)
    assert out[2] == ""
    for sentence, text in zip(sentences, out):
        if sentence.strip():
            ids = tok.encode(sentence)
            budget = min(families.one_sequence_budget(len(ids)), model.max_len - len(ids) - 2)
            new = generate_text(model, [BOS_ID, *ids, VOCAB.sep_id], max_new_tokens=budget, top_k=1)[0]
            assert text == tok.decode([t for t in new if t < VOCAB.tokenizer_size])
    assert families.translate_in_one_sequence(model, tok, VOCAB, sentences[::-1]) == out[::-1]
    with pytest.raises(TypeError, match="list of sentences"):
        families.translate_in_one_sequence(model, tok, VOCAB, "a dog")
    with pytest.raises(ValueError, match="max_len"):
        families.translate_in_one_sequence(model_of(max_len=6), tok, VOCAB, ["a dog is barking"])


def test_label_smoothing_in_the_predicted_loss():
    model = model_of(seed=4)
    inputs, targets = next_token_targets(batch(random_rows(5, 12)))
    logits = model(inputs)
    expected = F.cross_entropy(logits.reshape(-1, VOCAB.size), targets.reshape(-1), ignore_index=IGNORE,
                               label_smoothing=0.1)
    torch.testing.assert_close(families.predicted_loss(model, inputs, targets, label_smoothing=0.1), expected)
    torch.testing.assert_close(families.predicted_loss(model, inputs, targets, 0.0),
                               language_model_loss(logits, targets))


def test_training_a_translation_trains_on_the_target_side_only():
    sep = VOCAB.sep_id
    rows = [[BOS_ID, 4, 5, sep, 14, 15, EOS_ID], [BOS_ID, 6, 7, 8, sep, 16, 17, 18, EOS_ID]] * 8
    model = model_of(seed=5)
    run = train_language_model(model, rows, steps=40, max_tokens=64, lr=1e-2, warmup_steps=5, sep_id=sep,
                               label_smoothing=0.1, betas=(0.9, 0.98), final_lr_fraction=0.1)
    assert sum(run.losses[-5:]) < 0.5 * sum(run.losses[:5])
    whole = perplexity(model, rows)
    target_side = perplexity(model, rows, sep_id=sep)
    assert target_side < whole  # it never learned to predict the source
    with pytest.raises(ValueError, match="encoder-only model sees the target"):
        training_pair(model_of(causal=False), batch(rows[:2]), VOCAB, torch.Generator(), sep_id=sep)
    with pytest.raises(ValueError, match="label_smoothing"):
        train_language_model(model, rows, steps=1, label_smoothing=1.0)


def test_quantize_rows_keeps_every_value_within_half_a_step():
    weight = torch.randn(6, 10) * torch.tensor([1e-3, 0.1, 1.0, 5.0, 0.0, 2.0])[:, None]
    quantized, scale = families.quantize_rows(weight)
    assert quantized.dtype == torch.int8 and scale.shape == (6,)
    back = families.dequantize_rows(quantized, scale)
    assert bool(((back - weight).abs() <= scale[:, None] / 2 + 1e-7).all())
    assert int(quantized.abs().max()) == 127 and bool((back[4] == 0).all())
    with pytest.raises(ValueError, match="weight"):
        families.quantize_rows(torch.randn(5))
    with pytest.raises(ValueError, match="scale"):
        families.dequantize_rows(quantized, scale[:3])


def test_an_int8_export_is_smaller_and_close(tmp_path):
    from course_lib.tokenizer import train_sentencepiece

    tokenizer = train_sentencepiece(["a dog is barking at a cat", "the man runs"] * 20, vocab_size=26)
    model = LanguageModel(Vocabulary.of(tokenizer).size, d_model=64, h=2, num_layers=2, d_ff=128, max_len=12).eval()
    families.export_language_model(model, tokenizer, tmp_path / "fp16", {})
    families.export_language_model(model, tokenizer, tmp_path / "int8", {}, int8=True)
    assert (tmp_path / "int8" / "model.pt").stat().st_size < 0.75 * (tmp_path / "fp16" / "model.pt").stat().st_size
    loaded, _, _ = families.load_language_model(folder=tmp_path / "int8")
    ids = torch.tensor([[BOS_ID, 5, 6, EOS_ID]])
    torch.testing.assert_close(torch.softmax(loaded(ids), -1), torch.softmax(model(ids), -1), atol=2e-2, rtol=0.1)


def test_attention_by_region_splits_the_targets_attention_three_ways():
    sep = VOCAB.sep_id
    ids = batch([[BOS_ID, 4, 5, 6, sep, 7, 8, EOS_ID], [BOS_ID, 9, sep, 10, EOS_ID]])
    model = model_of(seed=6)
    share = families.attention_by_region(model, ids, sep)
    assert share.shape == (2, 3)
    torch.testing.assert_close(share.sum(dim=1), torch.ones(2))
    maps = families.attention_maps(model, ids).mean(dim=2)  # (L, B, T, T)
    by_hand = []
    for layer in range(2):
        rows = [maps[layer, 0, q] for q in (4, 5, 6)] + [maps[layer, 1, q] for q in (2, 3)]
        sources = [slice(1, 4)] * 3 + [slice(1, 2)] * 2
        by_hand.append(sum(float(r[s].sum()) for r, s in zip(rows, sources)) / 5)
    torch.testing.assert_close(share[:, 1], torch.tensor(by_hand))
    even = families.attention_by_region(model, ids, sep, even=True)  # each query spread over what it may see
    assert even.shape == (1, 3)
    torch.testing.assert_close(even[0, 1], torch.tensor((3 / 5 + 3 / 6 + 3 / 7 + 1 / 3 + 1 / 4) / 5))
    torch.testing.assert_close(even[0, 0], torch.tensor((1 / 5 + 1 / 6 + 1 / 7 + 1 / 3 + 1 / 4) / 5))
    with pytest.raises(ValueError, match="exactly one separator"):
        families.attention_by_region(model, batch([[BOS_ID, 4, EOS_ID]]), sep)
