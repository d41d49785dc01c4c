"""Greedy decoding, beam search and translate (course_lib/decoding.py).

Every search is checked against an independent computation on tiny random models: greedy against
an argmax taken step by step through ``model(src, tgt_in)``, beam search against an exhaustive
search over every output sequence up to a small length, batches against one sentence at a time.
"""
import itertools
import math
import random
import warnings

import pytest
import torch
from torch import nn

from course_lib.decoding import (beam_search, beam_search_loop, default_max_len, filter_logits, greedy_search,
                                 length_budget, length_penalty, output_budget, sample, sample_next_token, sentence_budgets,
                                 translate)
from course_lib.tokenizer import BOS_ID, EOS_ID, PAD_ID, train_sentencepiece
from course_lib.transformer import Seq2SeqTransformer, greedy_decode
from decoding_helpers import batch as _batch, random_sources as _random_sources

NEVER_GENERATED = (PAD_ID, BOS_ID)


pytestmark = pytest.mark.usefixtures("one_thread")


def _model(vocab=8, seed=0, eos_bias=0.0, scale=2.0, shared=False, suppress_pad_bos=False, dropout=0.0):
    """A tiny random Seq2SeqTransformer (d_model 16, 1 + 1 layers) in eval mode.

    Unless ``shared``, the output layer gets a bias: ``eos_bias`` makes EOS more or less likely, and
    ``suppress_pad_bos`` makes PAD and BOS (which a search must never produce) lose every argmax.
    ``scale`` sharpens the output distributions so that the searches disagree.
    """
    torch.manual_seed(seed)
    model = Seq2SeqTransformer(vocab, vocab, d_model=16, h=2, num_encoder_layers=1, num_decoder_layers=1,
                               d_ff=32, dropout=dropout, share_embeddings=shared)
    if not shared:
        out = nn.Linear(16, vocab)
        with torch.no_grad():
            out.weight.copy_(model.out.weight * scale)
            out.bias.zero_()
            out.bias[EOS_ID] = eos_bias
            if suppress_pad_bos:
                out.bias[PAD_ID] = out.bias[BOS_ID] = -100.0
        model.out = out
    return model.eval()






@torch.no_grad()
def _stepwise_greedy(model, src_row, max_len):
    """One sentence, the whole forward pass at every step, argmax over the tokens a search may produce."""
    src = torch.tensor([src_row])
    tokens = [BOS_ID]
    for _ in range(max_len):
        logits = model(src, torch.tensor([tokens]))[0, -1].clone()
        logits[list(NEVER_GENERATED)] = -math.inf
        tokens.append(int(logits.argmax()))
        if tokens[-1] == EOS_ID:
            break
    return tokens[1:]


@torch.no_grad()
def _exhaustive_best(model, src_row, vocab, max_len, alpha):
    """The best output over ALL sequences a search can produce, scored like beam search.

    Candidates: y_1..y_L with y_L = EOS and no earlier EOS (L <= max_len), or max_len tokens
    without EOS (cut off). Score: sum of log p(y_t | y_<t) from model.decode, over length_penalty(L, alpha).
    """
    words = [t for t in range(vocab) if t not in NEVER_GENERATED + (EOS_ID,)]
    candidates = [list(p) + [EOS_ID] for n in range(max_len) for p in itertools.product(words, repeat=n)]
    candidates += [list(p) for p in itertools.product(words, repeat=max_len)]
    tgt_in = _batch([[BOS_ID] + c[:-1] for c in candidates], width=max_len)  # PAD after each prefix
    memory, src_mask = model.encode(torch.tensor([src_row]))
    logp = torch.log_softmax(model.decode(tgt_in, memory.expand(len(candidates), -1, -1), src_mask).double(), -1)
    best_score, best = -math.inf, None
    for i, c in enumerate(candidates):
        total = sum(float(logp[i, t, token]) for t, token in enumerate(c))
        score = total / ((5 + len(c)) / 6) ** alpha
        if score > best_score:
            best_score, best = score, c
    return best


@torch.no_grad()
def _reference_beam(model, src_row, beam_size, alpha, max_len):
    """The documented algorithm for one sentence, in plain Python with a full forward pass per hypothesis.

    Rank the extensions of the live hypotheses by total log-probability; of the best 2K, those ending
    in EOS within the top K finish (score / length_penalty(length, alpha)), the best K others stay
    live; stop at K finished; at max_len the live ones finish too. Return the best finished one.
    """
    src = torch.tensor([src_row])
    live, finished = [(0.0, [])], []
    for step in range(1, max_len + 1):
        candidates = []
        for score, tokens in live:
            logp = torch.log_softmax(model(src, torch.tensor([[BOS_ID] + tokens]))[0, -1].float(), -1)
            candidates += [(score + float(logp[t]), tokens + [t]) for t in range(logp.shape[0])
                           if t not in NEVER_GENERATED]
        candidates.sort(key=lambda c: -c[0])
        live = []
        for rank, (score, tokens) in enumerate(candidates[:2 * beam_size]):
            if len(live) == beam_size:
                break
            if tokens[-1] == EOS_ID:
                if rank < beam_size:
                    finished.append((score / ((5 + step) / 6) ** alpha, tokens))
            else:
                live.append((score, tokens))
        if len(finished) >= beam_size:
            break
    else:
        finished += [(score / ((5 + max_len) / 6) ** alpha, tokens) for score, tokens in live]
    return max(finished, key=lambda f: f[0])[1]


def _assert_well_formed(output, max_len):
    assert all(isinstance(t, int) for t in output)
    assert len(output) <= max_len
    assert not set(output) & set(NEVER_GENERATED), f"PAD or BOS in {output}"
    assert EOS_ID not in output[:-1], f"EOS before the end of {output}"
    if not output or output[-1] != EOS_ID:
        assert len(output) == max_len, f"{output} stops before max_len without EOS"


# --- length penalty and the output limit -----------------------------------------------------------

def test_length_penalty_values():
    for length in (1, 2, 7, 50):
        assert length_penalty(length, 0.0) == 1.0  # alpha = 0: raw log-probabilities
    for alpha in (0.0, 0.6, 1.0, 2.0):
        assert length_penalty(1, alpha) == pytest.approx(1.0)  # (5 + 1) / 6 = 1
    assert length_penalty(7, 1.0) == pytest.approx(2.0)  # (5 + 7) / 6
    assert length_penalty(7, 0.5) == pytest.approx(math.sqrt(2))
    assert length_penalty(13, 0.6) == pytest.approx(3 ** 0.6)
    values = [length_penalty(n, 0.6) for n in range(1, 30)]
    assert all(a < b for a, b in zip(values, values[1:]))  # longer outputs are divided by more


def test_default_max_len():
    src = torch.tensor([[5, 6, 7, EOS_ID, PAD_ID, PAD_ID], [5, EOS_ID, PAD_ID, PAD_ID, PAD_ID, PAD_ID]])
    assert default_max_len(src) == 16  # longest real length 4: 1.5 * 4 + 10
    assert default_max_len(torch.tensor([[5, 6, 7, 8, EOS_ID]])) == 17  # int(7.5) + 10
    assert default_max_len(torch.tensor([[9, 9, 5, EOS_ID]]), pad_id=9) == 13  # only 2 real tokens
    assert default_max_len(torch.zeros(0, 4, dtype=torch.long)) == 10
    assert default_max_len(torch.full((2, 3), PAD_ID)) == 10  # all padding


# --- greedy --------------------------------------------------------------------------------------

def test_greedy_search_is_the_stepwise_argmax():
    max_len = 7
    ended = cut = 0
    for seed in range(4):
        model = _model(seed=seed, eos_bias=1.5)
        rows = _random_sources(8, 5, seed)
        outputs = greedy_search(model, _batch(rows), max_len=max_len)
        assert len(outputs) == len(rows)
        for row, output in zip(rows, outputs):
            assert output == _stepwise_greedy(model, row, max_len)
            _assert_well_formed(output, max_len)
            ended += bool(output) and output[-1] == EOS_ID
            cut += not output or output[-1] != EOS_ID
    assert ended and cut  # both endings were exercised


def test_greedy_search_equals_transformer_greedy_decode_after_stripping():
    max_len = 9
    for seed in range(3):
        model = _model(seed=seed, eos_bias=1.0, suppress_pad_bos=True)
        src = _batch(_random_sources(8, 6, seed + 10))
        raw = greedy_decode(model, src, BOS_ID, EOS_ID, max_len).tolist()
        stripped = []
        for row in raw:
            if EOS_ID in row:
                after = row[row.index(EOS_ID) + 1:]
                assert all(t == PAD_ID for t in after)  # greedy_decode pads after EOS
                row = row[:row.index(EOS_ID) + 1]
            stripped.append(row)
        assert greedy_search(model, src, max_len=max_len) == stripped


def test_searches_never_produce_pad_or_bos():
    # With a shared embedding a random decoder tends to repeat its input, BOS; an unrestricted
    # argmax does produce BOS here (checked), the searches must not.
    model = _model(seed=0, shared=True)
    src = _batch(_random_sources(8, 4, 3))
    raw = greedy_decode(model, src, BOS_ID, EOS_ID, 6)
    assert (raw == BOS_ID).any(), "the test model no longer tempts the search with BOS"
    for outputs in (greedy_search(model, src, max_len=6), beam_search(model, src, beam_size=3, max_len=6)):
        for output in outputs:
            _assert_well_formed(output, 6)


def test_default_limit_and_zero_length():
    model = _model(seed=1, eos_bias=-20.0)  # EOS never wins: the outputs run to the limit
    src = _batch([[5, 6, EOS_ID], [4, 4, 4, 4, EOS_ID]])
    budgets = output_budget(src)
    assert budgets == [int(1.5 * 3) + 10, int(1.5 * 5) + 10] and default_max_len(src) == max(budgets)
    assert [len(o) for o in greedy_search(model, src)] == budgets  # each sentence its own budget
    assert [len(o) for o in beam_search(model, src, beam_size=2)] == budgets
    assert [len(o) for o in greedy_search(model, src, max_len=7)] == [7, 7]
    assert [len(o) for o in greedy_search(model, src, max_len=[3, 0])] == [3, 0]
    assert greedy_search(model, src, max_len=0) == [[], []]
    assert beam_search(model, src, beam_size=2, max_len=0) == [[], []]


# --- beam search ---------------------------------------------------------------------------------

@pytest.mark.parametrize("alpha", [0.0, 0.6])
def test_beam_of_one_is_greedy(alpha):
    for seed in range(4):
        model = _model(seed=seed, eos_bias=1.0)
        src = _batch(_random_sources(8, 5, seed + 20))
        assert beam_search(model, src, beam_size=1, alpha=alpha, max_len=8) == greedy_search(model, src, max_len=8)


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_wide_beam_finds_the_exhaustive_best(alpha):
    vocab, max_len = 6, 4  # words 3, 4, 5 and EOS: 3**4 + 3**3 + 3**2 + 3 + 1 = 121 candidates
    words = vocab - 3
    beam = words ** (max_len - 1) * (words + 1)  # every extension of every live prefix fits in the beam
    greedy_was_wrong = 0
    for seed in range(3):
        model = _model(vocab, seed=seed, eos_bias=-1.0)
        rows = [[3, 4, 5, EOS_ID], [5, 3, EOS_ID]]
        found = beam_search(model, _batch(rows), beam_size=beam, alpha=alpha, max_len=max_len)
        greedy = greedy_search(model, _batch(rows), max_len=max_len)
        for row, output, greedy_output in zip(rows, found, greedy):
            best = _exhaustive_best(model, row, vocab, max_len, alpha)
            assert output == best
            greedy_was_wrong += greedy_output != best
    assert greedy_was_wrong, "greedy found the best sequence every time: the test cannot tell the searches apart"


@pytest.mark.parametrize("beam_size", [2, 3])
def test_beam_search_follows_the_documented_algorithm(beam_size):
    differs_from_greedy = 0
    # Models from rare to frequent EOS; (1, 1.5) with K = 3 ranks an EOS just below the top K,
    # which must not finish, and several cases need the right length in the penalty to pass.
    for seed, eos_bias in [(0, 2.5), (1, 1.5), (4, -0.5), (7, 0.5)]:
        model = _model(seed=seed, eos_bias=eos_bias)
        rows = _random_sources(8, 3, seed + 40)
        for alpha in (0.0, 0.6, 1.5):
            found = beam_search(model, _batch(rows), beam_size=beam_size, alpha=alpha, max_len=6)
            for row, output in zip(rows, found):
                assert output == _reference_beam(model, row, beam_size, alpha, 6), (seed, alpha, row)
                differs_from_greedy += output != _stepwise_greedy(model, row, 6)
    assert differs_from_greedy


def test_beam_output_is_well_formed():
    for seed in range(3):
        model = _model(seed=seed, eos_bias=0.5)
        for output in beam_search(model, _batch(_random_sources(8, 6, seed)), beam_size=4, max_len=6):
            _assert_well_formed(output, 6)


@pytest.mark.parametrize("search", ["greedy", "beam"])
def test_a_batch_gives_the_same_answers_as_one_sentence_at_a_time(search):
    decode = (lambda m, s: greedy_search(m, s, max_len=8)) if search == "greedy" else \
        (lambda m, s: beam_search(m, s, beam_size=3, alpha=0.6, max_len=8))
    for seed in range(2):
        model = _model(seed=seed, eos_bias=1.0)
        rows = _random_sources(8, 6, seed + 30, lengths=(1, 8))
        together = decode(model, _batch(rows, width=12))  # extra padding columns too
        alone = [decode(model, _batch([row]))[0] for row in rows]
        assert together == alone


def test_search_errors():
    model = _model()
    src = _batch([[4, 5, EOS_ID]])
    for bad in (0, -1, 2.5, "3", None):
        with pytest.raises(ValueError, match="beam_size must be a positive int"):
            beam_search(model, src, beam_size=bad)
    for search in (greedy_search, beam_search):
        with pytest.raises(TypeError, match="src"):
            search(model, src.float())
        with pytest.raises(ValueError, match="src"):
            search(model, torch.tensor([4, 5, EOS_ID]))  # (S,) instead of (B, S)
        with pytest.raises(ValueError, match="src"):
            search(model, src[None])


# --- translate -----------------------------------------------------------------------------------

WORDS = ["rot", "blau", "hund", "katze", "haus", "baum", "groß", "klein", "läuft", "schläft"]


@pytest.fixture(scope="module")
def tokenizer():
    rng = random.Random(0)
    sentences = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 6))) for _ in range(40)]
    return train_sentencepiece(sentences, vocab_size=60)


def test_translate_keeps_order_and_matches_the_searches(tokenizer):
    model = _model(tokenizer.vocab_size, seed=3, eos_bias=1.0, suppress_pad_bos=True)
    sentences = ["rot hund läuft", "katze", "groß klein baum haus rot blau", "blau", "hund schläft"]
    src = _batch([tokenizer.encode(s) + [EOS_ID] for s in sentences])
    for beam_size in (1, 3):
        results = translate(model, tokenizer, sentences, beam_size=beam_size, batch_size=2, warn=False)
        assert isinstance(results, list) and all(isinstance(r, str) for r in results)
        alone = [translate(model, tokenizer, [s], beam_size=beam_size, warn=False)[0] for s in sentences]
        assert results == alone
        ids = greedy_search(model, src) if beam_size == 1 else beam_search(model, src, beam_size, 0.6)
        assert results == [tokenizer.decode(i) for i in ids]
    assert len(set(results)) > 1  # the inputs lead to different outputs: the order is visible
    assert translate(model, tokenizer, []) == []


def test_translate_puts_the_model_in_eval_mode(tokenizer):
    model = _model(tokenizer.vocab_size, seed=4, eos_bias=1.0, dropout=0.5).train()
    first = translate(model, tokenizer, ["rot hund", "katze läuft"], warn=False)  # a random model: it loops
    assert not model.training
    assert translate(model, tokenizer, ["rot hund", "katze läuft"], warn=False) == first  # no dropout noise


def test_translate_errors(tokenizer):
    model = _model(tokenizer.vocab_size)
    with pytest.raises(TypeError, match="list of sentences"):
        translate(model, tokenizer, "rot hund")
    with pytest.raises(ValueError, match="beam_size"):
        translate(model, tokenizer, ["rot hund"], beam_size=0)
    with pytest.raises(TypeError, match="sentences\\[1\\]: expected a str, got int"):
        translate(model, tokenizer, ["rot hund", 3])
    with pytest.raises(ValueError, match="batch_size must be a positive int, got 0"):
        translate(model, tokenizer, ["rot hund"], batch_size=0)


def test_translate_gives_blank_sentences_an_empty_translation(tokenizer):
    model = _model(tokenizer.vocab_size, seed=3, eos_bias=1.0, suppress_pad_bos=True)
    for beam_size in (1, 3):
        results = translate(model, tokenizer, ["", "rot hund", "   ", "\t\n"], beam_size=beam_size)
        assert results[0] == results[2] == results[3] == "", "a blank sentence must translate to ''"
        assert results[1] == translate(model, tokenizer, ["rot hund"], beam_size=beam_size)[0]


LONG_GERMAN = " ".join(["rot hund läuft katze"] * 44)  # 176 words


@pytest.mark.parametrize("beam_size", [1, 2])
def test_translate_gives_a_looping_sentence_the_same_output_in_any_batch(tokenizer, beam_size):
    model = _model(tokenizer.vocab_size, seed=1, eos_bias=-50.0, suppress_pad_bos=True)  # never ends
    sentences = ["katze", "rot hund läuft", " ".join(["rot hund läuft katze"] * 6)]
    with pytest.warns(UserWarning, match="reached its length budget"):
        together = translate(model, tokenizer, sentences, beam_size=beam_size)
    alone = [translate(model, tokenizer, [s], beam_size=beam_size, warn=False)[0] for s in sentences]
    assert together == alone, "a sentence's translation changed with the other sentences of its batch"


def test_the_output_budget_grows_with_the_source_and_a_cut_is_announced(tokenizer):
    model = _model(tokenizer.vocab_size, seed=1, eos_bias=-50.0, suppress_pad_bos=True)  # never ends
    src = _batch([tokenizer.encode(LONG_GERMAN) + [EOS_ID]])
    n = src.shape[1]
    assert n > 176 and output_budget(src) == [int(1.5 * n) + 10]
    assert [len(o) for o in greedy_search(model, src)] == output_budget(src)  # not cut at a fixed length
    with pytest.warns(UserWarning, match=rf"sentence 0 \(budget {int(1.5 * n) + 10} tokens\).*length budget"):
        translate(model, tokenizer, [LONG_GERMAN])


def test_translate_warns_about_a_source_longer_than_the_training_data(tokenizer):
    model = _model(tokenizer.vocab_size, seed=3, eos_bias=5.0, suppress_pad_bos=True)  # ends at once
    model.trained_max_len = 8
    n = len(tokenizer.encode(LONG_GERMAN)) + 1
    with pytest.warns(UserWarning, match=rf"sentence 1 \({n} tokens\): longer than any source the model was "
                                         r"trained on \(at most 8 tokens"):
        translate(model, tokenizer, ["katze", LONG_GERMAN])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        translate(model, tokenizer, ["katze", "rot hund"])  # short sources: no warning
        translate(model, tokenizer, ["katze", LONG_GERMAN], warn=False)  # an evaluation silences it


def test_translate_names_text_the_tokenizer_has_never_seen(tokenizer):
    model = _model(tokenizer.vocab_size, seed=3, eos_bias=5.0, suppress_pad_bos=True)
    with pytest.warns(UserWarning, match=r"text the tokenizer has never seen \(sentence 1: '你好'.*<unk>"):
        translate(model, tokenizer, ["katze", "katze 你好"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        translate(model, tokenizer, ["katze 你好"], warn=False)


def test_sentence_budgets_validates_limits():
    src = _batch([[5, EOS_ID], [4, 4, 4, EOS_ID]])
    assert sentence_budgets(src) == output_budget(src) == [13, 16]
    assert sentence_budgets(src, 5) == [5, 5]
    assert sentence_budgets(src, torch.tensor([2, 3])) == [2, 3]
    with pytest.raises(ValueError, match="max_len must be a non-negative int, got -1"):
        sentence_budgets(src, -1)
    with pytest.raises(TypeError, match="max_len must be an int"):
        sentence_budgets(src, 2.5)
    with pytest.raises(ValueError, match=r"max_len: expected one limit per sentence \(2\), got 3"):
        sentence_budgets(src, [1, 2, 3])


# --- the shared beam loop: the parents contract the cached decoder relies on ----------------------

def test_beam_search_loop_reports_the_parent_of_every_row():
    B, K, n_vocab = 2, 3, 7
    gen = torch.Generator().manual_seed(0)
    table = torch.randn(50, n_vocab, generator=gen) * 3
    seen = []

    def next_logits(tokens, parents):
        if parents is None:
            assert tokens.shape == (B * K, 1) and (tokens == BOS_ID).all()
        else:
            previous = seen[-1]
            assert parents.dtype == torch.long and parents.shape == (B * K,)
            assert torch.equal(tokens[:, :-1], previous[parents])  # row i extends row parents[i]
            assert (parents // K == torch.arange(B * K) // K).all()  # hypotheses stay with their sentence
        seen.append(tokens)
        return table[(tokens * torch.arange(1, tokens.shape[1] + 1)).sum(1) % 50]  # depends on the whole prefix

    outputs = beam_search_loop(next_logits, B, K, alpha=0.6, max_len=6)
    assert len(outputs) == B and len(seen) >= 3
    assert any(not torch.equal(seen[i + 1][:, :-1], seen[i]) for i in range(len(seen) - 1))  # rows moved


# --- sampling: filter_logits on hand-made examples -----------------------------------------------

def _kept(logits, **settings):
    """The set of token ids that filter_logits keeps in each row."""
    out = filter_logits(torch.tensor(logits, dtype=torch.float32), **settings)
    return [set(torch.nonzero(torch.isfinite(row)).flatten().tolist()) for row in out]


def test_filter_logits_top_k():
    logits = [[3.0, 1.0, 2.0, 0.0], [0.0, 5.0, -1.0, 4.0]]
    assert _kept(logits, top_k=1) == [{0}, {1}]
    assert _kept(logits, top_k=2) == [{0, 2}, {1, 3}]
    assert _kept(logits, top_k=3) == [{0, 1, 2}, {0, 1, 3}]
    assert _kept(logits, top_k=4) == _kept(logits, top_k=100) == _kept(logits) == [{0, 1, 2, 3}] * 2


def test_filter_logits_top_k_keeps_ties_together():
    assert _kept([[2.0, 2.0, 1.0, 0.0]], top_k=1) == [{0, 1}]
    assert _kept([[1.0, 3.0, 3.0, 3.0, 0.0]], top_k=2) == [{1, 2, 3}]
    assert _kept([[1.0, 1.0, 1.0]], top_k=1) == [{0, 1, 2}]


def test_filter_logits_top_p():
    probs = [0.15, 0.5, 0.05, 0.3]  # sorted: 0.5 (id 1), 0.3 (id 3), 0.15 (id 0), 0.05 (id 2)
    logits = [[math.log(p) for p in probs]]
    assert _kept(logits, top_p=1e-9) == [{1}]  # a tiny p keeps the top token
    assert _kept(logits, top_p=0.4) == [{1}]  # 0.5 >= 0.4
    assert _kept(logits, top_p=0.6) == [{1, 3}]  # 0.5 < 0.6 <= 0.8
    assert _kept(logits, top_p=0.7) == [{1, 3}]
    assert _kept(logits, top_p=0.9) == [{0, 1, 3}]  # 0.8 < 0.9 <= 0.95
    assert _kept(logits, top_p=0.97) == [{0, 1, 2, 3}]
    assert _kept(logits, top_p=1.0) == [{0, 1, 2, 3}]  # p = 1 keeps every token
    # ties with the last token kept are kept too
    tied = [[math.log(p) for p in (0.4, 0.2, 0.2, 0.2)]]
    assert _kept(tied, top_p=0.3) == [{0}]
    assert _kept(tied, top_p=0.5) == [{0, 1, 2, 3}]


def test_filter_logits_values_temperature_and_order():
    logits = torch.tensor([[math.log(p) for p in (0.5, 0.3, 0.15, 0.05)]])
    out = filter_logits(logits, temperature=0.5)
    assert torch.allclose(out, logits * 2)  # logits / temperature, nothing removed
    # the nucleus is taken after the temperature: at T = 0.5 the top token holds 0.25/0.365 = 0.68
    assert _kept(logits.tolist(), top_p=0.6) == [{0, 1}]
    assert _kept(logits.tolist(), temperature=0.5, top_p=0.6) == [{0}]
    assert _kept(logits.tolist(), top_p=0.7) == [{0, 1}]  # 0.5 < 0.7 <= 0.8
    assert _kept(logits.tolist(), temperature=3.0, top_p=0.7) == [{0, 1, 2}]  # flatter: 0.336, 0.283, 0.225, 0.156
    # top-k first, then the nucleus of what is left (renormalised): 0.5/0.8 = 0.625 >= 0.6
    assert _kept(logits.tolist(), top_k=2, top_p=0.6) == [{0}]
    out = filter_logits(logits, temperature=2.0, top_k=3)
    assert torch.allclose(out[0, :3], logits[0, :3] / 2) and out[0, 3] == -math.inf


def test_filter_logits_keeps_blocked_tokens_blocked_and_does_not_modify_its_input():
    logits = torch.tensor([[-math.inf, 2.0, -math.inf, 1.0, 0.5]])
    before = logits.clone()
    assert _kept(logits.tolist(), top_k=4) == [{1, 3, 4}]
    assert _kept(logits.tolist(), top_p=1.0) == [{1, 3, 4}]
    assert _kept(logits.tolist(), top_p=0.999) == [{1, 3, 4}]
    filter_logits(logits, temperature=0.3, top_k=2, top_p=0.5)
    assert torch.equal(logits, before)


def test_filter_logits_errors():
    good = torch.zeros(2, 5)
    for bad in (0, 0.0, -1.0, float("nan"), float("inf"), True, "1", None):
        with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
            filter_logits(good, temperature=bad)
    for bad in (0, -2, 1.5, True, "3"):
        with pytest.raises(ValueError, match="top_k must be None .* or an int >= 1"):
            filter_logits(good, top_k=bad)
    for bad in (0, 0.0, -0.1, 1.01, float("nan"), True, "0.9"):
        with pytest.raises(ValueError, match="top_p must be None .* 0 < top_p <= 1"):
            filter_logits(good, top_p=bad)
    with pytest.raises(ValueError, match="logits"):
        filter_logits(torch.zeros(5))  # (n_vocab,) instead of (B, n_vocab)
    with pytest.raises(TypeError, match="logits"):
        filter_logits(torch.zeros(2, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="at least one finite"):
        filter_logits(torch.tensor([[0.0, 1.0], [-math.inf, -math.inf]]))
    with pytest.raises(ValueError, match="nan or \\+inf"):
        filter_logits(torch.tensor([[0.0, float("nan")]]))
    with pytest.raises(ValueError, match="too small"):
        filter_logits(torch.tensor([[1e30, 0.0]]), temperature=1e-10)


# --- sampling: the draws ------------------------------------------------------------------------

def _filtered_reference(logits, temperature=1.0, top_k=None, top_p=None):
    """The distribution to sample from, computed in plain Python: temperature, then top-k, then top-p."""
    weights = {i: math.exp(x / temperature) for i, x in enumerate(logits) if x > -math.inf}
    order = sorted(weights, key=lambda i: -weights[i])
    if top_k is not None:
        order = order[:top_k]
    if top_p is not None:
        total, kept, mass = sum(weights[i] for i in order), [], 0.0
        for i in order:
            if mass >= top_p:
                break
            kept.append(i)
            mass += weights[i] / total
        order = kept
    total = sum(weights[i] for i in order)
    return [weights[i] / total if i in order else 0.0 for i in range(len(logits))]


def _chi_square(counts, probs, n):
    assert all(c == 0 for c, p in zip(counts, probs) if p == 0), "a token outside the kept set was drawn"
    return sum((c - n * p) ** 2 / (n * p) for c, p in zip(counts, probs) if p > 0)


def test_sample_next_token_frequencies_match_the_filtered_softmax():
    logits = [1.2, -0.3, 0.4, 2.0, -1.5, 0.9]
    n = 20000
    batch = torch.tensor([logits] * n)
    for seed, settings in enumerate([{}, {"temperature": 0.6}, {"temperature": 2.0, "top_k": 3},
                                     {"top_p": 0.8}, {"temperature": 1.5, "top_k": 4, "top_p": 0.7}]):
        drawn = sample_next_token(batch, generator=torch.Generator().manual_seed(seed), **settings)
        assert drawn.shape == (n,) and drawn.dtype == torch.long
        probs = _filtered_reference(logits, **settings)
        counts = torch.bincount(drawn, minlength=len(logits)).tolist()
        df = sum(p > 0 for p in probs) - 1
        assert _chi_square(counts, probs, n) < df + 6 * math.sqrt(2 * max(df, 1)), (settings, counts, probs)


def test_sample_first_token_frequencies_match_the_model():
    model = _model(seed=2, eos_bias=0.5)
    n = 3000
    src = _batch([[4, 5, 6, EOS_ID]] * n)
    with torch.no_grad():
        first = model(src[:1], torch.tensor([[BOS_ID]]))[0, -1].clone()
    first[list(NEVER_GENERATED)] = -math.inf
    for seed, settings in enumerate([{}, {"temperature": 0.7, "top_k": 4}, {"temperature": 1.5, "top_p": 0.9}]):
        outputs = sample(model, src, max_len=1, generator=torch.Generator().manual_seed(seed), **settings)
        counts = torch.bincount(torch.tensor([o[0] for o in outputs]), minlength=8).tolist()
        probs = _filtered_reference(first.tolist(), **settings)
        df = sum(p > 0 for p in probs) - 1
        assert _chi_square(counts, probs, n) < df + 6 * math.sqrt(2 * max(df, 1)), (settings, counts, probs)


def test_sampling_that_keeps_only_the_top_token_is_greedy():
    for seed in range(3):
        model = _model(seed=seed, eos_bias=1.0)
        src = _batch(_random_sources(8, 5, seed + 50))
        greedy = greedy_search(model, src, max_len=8)
        assert sample(model, src, top_k=1, max_len=8) == greedy
        assert sample(model, src, temperature=1e-4, max_len=8) == greedy
        assert sample(model, src, top_p=1e-6, max_len=8) == greedy
        assert sample(model, src, temperature=3.0, top_k=1, top_p=0.9, max_len=8) == greedy


def test_samples_are_reproducible_and_vary_with_the_seed():
    model = _model(seed=1, eos_bias=0.0)
    src = _batch(_random_sources(8, 4, 60))
    draws = [sample(model, src, temperature=1.5, generator=torch.Generator().manual_seed(s), max_len=8)
             for s in (0, 0, 1)]
    assert draws[0] == draws[1]
    assert draws[0] != draws[2]
    torch.manual_seed(5)
    first = sample(model, src, max_len=8)  # the global generator when none is given
    torch.manual_seed(5)
    assert sample(model, src, max_len=8) == first


def test_samples_are_well_formed_and_never_pad_or_bos():
    # A shared embedding tempts the decoder with BOS (see test_searches_never_produce_pad_or_bos); a high
    # temperature spreads the draws over every token, so an unblocked PAD or BOS would come up.
    model = _model(seed=0, shared=True)
    src = _batch(_random_sources(8, 50, 70))
    ended = cut = 0
    for temperature in (1.0, 5.0):
        outputs = sample(model, src, temperature=temperature, max_len=6, generator=torch.Generator().manual_seed(3))
        for output in outputs:
            _assert_well_formed(output, 6)
            ended += bool(output) and output[-1] == EOS_ID
            cut += not output or output[-1] != EOS_ID
    assert ended and cut
    assert sample(model, src[:2], max_len=0) == [[], []]
    never_ends = _model(seed=1, eos_bias=-50.0)
    assert [len(o) for o in sample(never_ends, src[:3], generator=torch.Generator().manual_seed(0))] == \
        output_budget(src[:3])


def test_sample_errors():
    model = _model()
    src = _batch([[4, 5, EOS_ID]])
    with pytest.raises(ValueError, match="temperature"):
        sample(model, src, temperature=0)
    with pytest.raises(ValueError, match="top_k"):
        sample(model, src, top_k=0)
    with pytest.raises(ValueError, match="top_p"):
        sample(model, src, top_p=1.5)
    with pytest.raises(TypeError, match="src"):
        sample(model, src.float())
    with pytest.raises(ValueError, match="src"):
        sample(model, src[0])


def test_plot_beams_draws_the_hypotheses_and_the_map():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from course_lib.decoding import plot_beams

    weights = torch.softmax(torch.randn(3, 4, generator=torch.Generator().manual_seed(0)), dim=-1)  # (T, S)
    hypotheses = [(-1.25, "a dog runs ."), (-2.5, "a dog is running .")]
    fig = plot_beams(hypotheses, weights, ["ein", "Hund", "rennt", "."], ["a", "dog", "runs"], title="K = 2",
                     score_name="log P")
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert any("a dog is running ." in t and "-1.250" in t and "log P" in t for t in texts)
    image = fig.axes[1].images[0].get_array()
    assert image.shape == (3, 4) and abs(float(image.sum()) - 3.0) < 1e-5
    assert fig._suptitle.get_text() == "K = 2"
    plt.close(fig)
    with pytest.raises(ValueError, match="source labels"):
        plot_beams(hypotheses, weights, ["ein", "Hund"], ["a", "dog", "runs"])
    with pytest.raises(ValueError, match="empty"):
        plot_beams([], weights, ["ein", "Hund", "rennt", "."], ["a", "dog", "runs"])
    with pytest.raises(ValueError, match="weights"):
        plot_beams(hypotheses, weights[None], ["ein", "Hund", "rennt", "."], ["a", "dog", "runs"])


def test_eval_mode_switches_dropout_off_and_gives_every_module_its_own_mode_back():
    from course_lib.decoding import eval_mode

    model = _model(dropout=0.5).train()
    model.transformer.encoder_layers[0].eval()  # a mixed model: one submodule already in eval mode
    before = {name: m.training for name, m in model.named_modules()}
    with eval_mode(model):
        assert not any(m.training for m in model.modules())
    assert {name: m.training for name, m in model.named_modules()} == before
    with pytest.raises(RuntimeError, match="inside"):
        with eval_mode(model):
            raise RuntimeError("inside")
    assert {name: m.training for name, m in model.named_modules()} == before  # given back after an error too


def test_generate_continues_a_prefix_and_returns_only_the_new_tokens():
    from course_lib.decoding import generate

    seen = []

    def next_logits(out):  # (B, t) -> (B, 8): the next token is the last one + 1, EOS after 6
        seen.append(out.shape[1])
        logits = torch.full((out.shape[0], 8), -5.0)
        nxt = torch.where(out[:, -1] >= 6, EOS_ID, out[:, -1] + 1)
        logits[torch.arange(out.shape[0]), nxt] = 5.0
        return logits

    prefix = torch.tensor([[BOS_ID, 4], [BOS_ID, 5]])
    out = generate(next_logits, 2, 5, lambda logits: logits.argmax(dim=-1), prefix=prefix)
    assert out == [[5, 6, EOS_ID], [6, EOS_ID]]
    assert seen[0] == 2  # the first call sees the whole prefix
    with pytest.raises(ValueError, match="prefix"):
        generate(next_logits, 2, 5, lambda logits: logits.argmax(dim=-1), prefix=torch.tensor([[BOS_ID]]))
    with pytest.raises(ValueError, match="no tokens"):
        generate(next_logits, 1, 5, lambda logits: logits.argmax(dim=-1), prefix=torch.zeros(1, 0, dtype=torch.long))


def test_length_budget_is_one_and_a_half_times_the_source_plus_ten():
    assert [length_budget(n) for n in (0, 1, 7, 20)] == [10, 11, 20, 40]
    src = torch.tensor([[5, 6, 7, EOS_ID], [5, EOS_ID, PAD_ID, PAD_ID]])
    assert output_budget(src) == [length_budget(4), length_budget(2)]
