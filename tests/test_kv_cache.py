"""The key-value-cached decoder (course_lib/kv_cache.py).

The cached step is compared with the model's own full recompute, ``model.decode(prefix)[:, -1]``,
at every step (post-LN and pre-LN, padded sources, padding inside the prefix, reordered rows);
the cached searches with the uncached ones of course_lib.decoding; the work saved is counted
with forward hooks on the model's own modules, not timed.
"""
import pytest
import torch
from torch import nn

from course_lib.decoding import beam_search, greedy_search, sample
from course_lib.kv_cache import (IncrementalDecoder, KVCache, beam_search_cached, greedy_search_cached,
                                 kv_cache_bytes, sample_cached)
from course_lib.tokenizer import BOS_ID, EOS_ID, PAD_ID
from course_lib.transformer import Seq2SeqTransformer
from decoding_helpers import batch as _batch, random_sources

ATOL = 1e-5


def _random_sources(vocab, count, seed, lengths=(1, 7)):
    """Sources of 1 to 7 ids plus EOS (the shared helper's default is 1 to 6)."""
    return random_sources(vocab, count, seed, lengths)


pytestmark = pytest.mark.usefixtures("one_thread")


def _model(vocab=12, seed=0, norm_first=False, layers=2, d_model=16, h=2, eos_bias=0.0, scale=2.0,
           shared=False, dropout=0.0):
    """A tiny random Seq2SeqTransformer in eval mode; unless ``shared``, an output layer with an EOS bias."""
    torch.manual_seed(seed)
    model = Seq2SeqTransformer(vocab, vocab, d_model=d_model, h=h, num_encoder_layers=layers,
                               num_decoder_layers=layers, d_ff=2 * d_model, dropout=dropout,
                               norm_first=norm_first, share_embeddings=shared)
    if not shared:
        out = nn.Linear(d_model, vocab)
        with torch.no_grad():
            out.weight.copy_(model.out.weight * scale)
            out.bias.zero_()
            out.bias[EOS_ID] = eos_bias
        model.out = out
    return model.eval()






# --- one step equals the full recompute -------------------------------------------------------------

@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("shared", [False, True])
def test_step_equals_full_recompute_at_every_step(norm_first, shared):
    vocab = 12
    for seed in range(2):
        model = _model(vocab, seed=seed, norm_first=norm_first, shared=shared)
        src = _batch(_random_sources(vocab, 4, seed), width=9)  # padded sources, extra PAD columns too
        memory, src_mask = model.encode(src)
        decoder = IncrementalDecoder(model).start(src)
        gen = torch.Generator().manual_seed(seed)
        prefix = torch.full((4, 1), BOS_ID)
        for t in range(10):
            assert decoder.length == t
            cached = decoder.step(prefix[:, -1])
            with torch.no_grad():
                full = model.decode(prefix, memory, src_mask)[:, -1]
            assert cached.shape == (4, vocab)
            assert torch.allclose(cached, full, atol=ATOL), (seed, t, (cached - full).abs().max())
            nxt = torch.randint(3, vocab, (4, 1), generator=gen)
            if t == 3:
                nxt[1] = PAD_ID  # a padded position inside a prefix is blocked as a key, as in target_mask
            prefix = torch.cat([prefix, nxt], dim=1)


def test_a_wrong_position_or_layer_order_would_be_caught():
    # The comparison above can fail: the logits at step t really depend on the position and the history.
    model = _model(seed=3, norm_first=False)
    src = _batch([[4, 5, 6, EOS_ID]])
    memory, src_mask = model.encode(src)
    with torch.no_grad():
        a = model.decode(torch.tensor([[BOS_ID, 4, 4]]), memory, src_mask)[:, -1]
        b = model.decode(torch.tensor([[BOS_ID, 4]]), memory, src_mask)[:, -1]  # same last token, one position earlier
        c = model.decode(torch.tensor([[BOS_ID, 7, 4]]), memory, src_mask)[:, -1]  # other history
    assert not torch.allclose(a, b, atol=1e-3) and not torch.allclose(a, c, atol=1e-3)
    swapped = _model(seed=3, norm_first=True)
    swapped.load_state_dict(model.state_dict())  # same weights, pre-LN blocks
    cached = IncrementalDecoder(swapped).start(src)
    cached.step(torch.tensor([BOS_ID]))
    cached.step(torch.tensor([4]))
    assert not torch.allclose(cached.step(torch.tensor([4])), a, atol=1e-3)


def test_dropout_is_off_and_the_model_mode_is_kept():
    model = _model(seed=1, dropout=0.5, norm_first=True).train()
    src = _batch(_random_sources(12, 3, 5))
    decoder = IncrementalDecoder(model).start(src)
    first = [decoder.step(torch.full((3,), BOS_ID)), decoder.step(torch.tensor([4, 5, 6]))]
    assert model.training and all(m.training for m in model.modules())  # the mode was given back
    decoder.start(src)  # again: no dropout noise in the encoder or the decoder
    again = [decoder.step(torch.full((3,), BOS_ID)), decoder.step(torch.tensor([4, 5, 6]))]
    model.eval()
    memory, src_mask = model.encode(src)
    with torch.no_grad():
        full = model.decode(torch.tensor([[BOS_ID, 4], [BOS_ID, 5], [BOS_ID, 6]]), memory, src_mask)
    for t in range(2):
        assert torch.equal(first[t], again[t])
        assert torch.allclose(first[t], full[:, t], atol=ATOL)


def test_cache_shapes_and_sizes():
    model = _model(seed=0, layers=3, d_model=16, h=4)
    src = _batch(_random_sources(12, 2, 1), width=6)  # B = 2, S = 6
    decoder = IncrementalDecoder(model).start(src)
    cache = decoder.cache
    assert isinstance(cache, KVCache) and len(cache.layers) == 3
    assert (cache.batch_size, cache.length, cache.source_length) == (2, 0, 6)
    for layer in cache.layers:
        assert layer.self_k.shape == layer.self_v.shape == (2, 4, 0, 4)  # (B, h, t, d_k)
        assert layer.cross_k.shape == layer.cross_v.shape == (2, 4, 6, 4)  # (B, h, S, d_k)
    assert decoder.cache_bytes("self") == 0
    assert decoder.cache_bytes("cross") == 2 * 3 * 2 * 6 * 16 * 4  # K and V, 3 layers, B, S, d_model, float32
    for t in range(1, 5):
        decoder.step(torch.tensor([BOS_ID, 7]))
        assert all(layer.self_k.shape == (2, 4, t, 4) for layer in cache.layers)
        assert decoder.cache_bytes("self") == 2 * 3 * 2 * t * 16 * 4
        assert decoder.cache_bytes() == kv_cache_bytes(3, 2, 16, t, 6)
    assert kv_cache_bytes(6, 32, 512, 20, 25) == 2 * 6 * 32 * 45 * 512 * 4  # a base-sized model: 17.7 MB
    assert kv_cache_bytes(1, 1, 8, 1, 0, bytes_per_value=2) == 32
    with pytest.raises(ValueError, match="kind"):
        decoder.cache_bytes("keys")
    with pytest.raises(ValueError, match="num_layers"):
        kv_cache_bytes(-1, 1, 8, 1, 1)


def test_cross_keys_are_those_of_the_model_memory():
    model = _model(seed=2)
    src = _batch(_random_sources(12, 3, 2))
    memory, _ = model.encode(src)
    decoder = IncrementalDecoder(model).start(src)
    for layer, kv in zip(model.transformer.decoder_layers, decoder.cache.layers):
        w_k = layer.cross_attn.w_k
        with torch.no_grad():
            expected = (memory @ w_k.weight.T + w_k.bias).reshape(3, -1, 2, 8).permute(0, 2, 1, 3)  # by hand
        assert torch.allclose(kv.cross_k, expected, atol=ATOL)


# --- reorder -------------------------------------------------------------------------------------

@pytest.mark.parametrize("norm_first", [False, True])
def test_reorder_then_step_equals_recompute_of_the_reordered_prefixes(norm_first):
    model = _model(seed=4, norm_first=norm_first)
    src = _batch(_random_sources(12, 3, 4))
    decoder = IncrementalDecoder(model).start(src)
    prefix = torch.tensor([[BOS_ID, 4, 5], [BOS_ID, 6, 7], [BOS_ID, 8, 9]])
    for t in range(3):
        decoder.step(prefix[:, t])
    for index in (torch.tensor([2, 0, 0]), torch.arange(3).repeat_interleave(2), torch.tensor([1])):
        step_src, step_prefix = src[index], prefix[index]
        branch = IncrementalDecoder(model).start(src)
        for t in range(3):
            branch.step(prefix[:, t])
        branch.reorder(index)
        assert branch.cache.batch_size == len(index)
        nxt = torch.arange(len(index)) + 3
        memory, src_mask = model.encode(step_src)
        with torch.no_grad():
            full = model.decode(torch.cat([step_prefix, nxt[:, None]], 1), memory, src_mask)[:, -1]
        assert torch.allclose(branch.step(nxt), full, atol=ATOL)


# --- the cached searches return what the uncached ones return ----------------------------------------

@pytest.mark.parametrize("norm_first", [False, True])
def test_greedy_search_cached_equals_greedy_search(norm_first):
    ended = cut = 0
    for seed, eos_bias in [(0, 1.5), (1, 0.0), (2, 1.0), (3, -1.0)]:
        model = _model(seed=seed, norm_first=norm_first, eos_bias=eos_bias)
        src = _batch(_random_sources(12, 6, seed + 10, lengths=(1, 9)), width=12)
        for max_len in (None, 0, 1, 7):  # 7 last: its outputs are counted below
            expected = greedy_search(model, src, max_len=max_len)
            assert greedy_search_cached(model, src, max_len=max_len) == expected
        ended += sum(bool(o) and o[-1] == EOS_ID for o in expected)
        cut += sum(not o or o[-1] != EOS_ID for o in expected)
    assert ended and cut


@pytest.mark.parametrize("norm_first", [False, True])
def test_beam_search_cached_equals_beam_search(norm_first):
    differs = 0
    for seed, eos_bias in [(0, 2.5), (1, 1.5), (2, -0.5), (3, 0.5)]:
        model = _model(seed=seed, norm_first=norm_first, eos_bias=eos_bias)
        src = _batch(_random_sources(12, 4, seed + 20, lengths=(1, 8)))
        for beam_size, alpha in [(1, 0.6), (2, 0.0), (3, 0.6), (4, 1.0)]:
            expected = beam_search(model, src, beam_size=beam_size, alpha=alpha, max_len=8)
            assert beam_search_cached(model, src, beam_size=beam_size, alpha=alpha, max_len=8) == expected
            differs += expected != greedy_search(model, src, max_len=8)
    assert differs  # the beams really searched: outputs other than greedy's
    model = _model(seed=5)
    src = _batch(_random_sources(12, 2, 9))
    assert beam_search_cached(model, src) == beam_search(model, src)  # defaults, default max_len
    assert beam_search_cached(model, src, beam_size=2, max_len=0) == [[], []]


@pytest.mark.parametrize("norm_first", [False, True])
def test_beam_search_cached_logits_equal_the_recompute_of_every_hypothesis(norm_first, monkeypatch):
    """Inside beam_search_cached, every step's logits (reordered cache) equal model.decode on the hypotheses."""
    import course_lib.kv_cache as kv_cache

    model = _model(seed=7, norm_first=norm_first, eos_bias=0.5)
    src = _batch(_random_sources(12, 3, 8, lengths=(2, 8)))
    K = 3
    memory, src_mask = model.encode(src)
    memory, src_mask = memory.repeat_interleave(K, 0), src_mask.repeat_interleave(K, 0)
    checked, reordered = [], []
    loop = kv_cache.beam_search_loop

    def checking_loop(next_logits, *args, **kwargs):
        def wrapped(tokens, parents):
            logits = next_logits(tokens, parents)
            with torch.no_grad():
                full = model.decode(tokens, memory, src_mask)[:, -1]
            assert torch.allclose(logits, full, atol=ATOL), (tokens.shape, (logits - full).abs().max())
            checked.append(tokens.shape[1])
            reordered.append(parents is not None and not torch.equal(parents, torch.arange(len(parents))))
            return logits

        return loop(wrapped, *args, **kwargs)

    monkeypatch.setattr(kv_cache, "beam_search_loop", checking_loop)
    beam_search_cached(model, src, beam_size=K, max_len=8)
    assert len(checked) >= 4 and any(reordered)  # several steps, and the hypotheses really moved rows


def test_sample_cached_equals_sample_with_the_same_generator():
    model = _model(seed=6, eos_bias=0.5)
    src = _batch(_random_sources(12, 5, 6))
    for settings in ({}, {"temperature": 0.7, "top_k": 4}, {"temperature": 1.3, "top_p": 0.8}):
        expected = sample(model, src, generator=torch.Generator().manual_seed(11), max_len=9, **settings)
        found = sample_cached(model, src, generator=torch.Generator().manual_seed(11), max_len=9, **settings)
        assert found == expected
    with pytest.raises(ValueError, match="temperature"):
        sample_cached(model, src, temperature=0.0)


# --- the work saved, counted ---------------------------------------------------------------------

def test_cache_runs_one_position_per_step_and_projects_the_memory_once():
    model = _model(seed=1, layers=2, eos_bias=-30.0)  # EOS never wins: every search runs max_len steps
    src = _batch(_random_sources(12, 3, 7))
    max_len = 6
    calls: dict[str, list[int]] = {"ff": [], "cross_k": []}
    hooks = []
    for layer in model.transformer.decoder_layers:
        hooks.append(layer.ff.linear1.register_forward_hook(lambda m, i, o: calls["ff"].append(i[0].shape[1])))
        hooks.append(layer.cross_attn.w_k.register_forward_hook(lambda m, i, o: calls["cross_k"].append(1)))
    try:
        full = greedy_search(model, src, max_len=max_len)
        full_ff, full_cross = list(calls["ff"]), len(calls["cross_k"])
        calls["ff"].clear(), calls["cross_k"].clear()
        cached = greedy_search_cached(model, src, max_len=max_len)
        cached_ff, cached_cross = list(calls["ff"]), len(calls["cross_k"])
    finally:
        for hook in hooks:
            hook.remove()
    assert full == cached and all(len(o) == max_len for o in full)
    # decoder positions through the feed-forward network, per call (two layers per step):
    assert full_ff == [t for t in range(1, max_len + 1) for _ in range(2)]  # t positions at step t
    assert cached_ff == [1] * (2 * max_len)  # one position per step
    assert sum(full_ff) == 2 * max_len * (max_len + 1) // 2 and sum(cached_ff) == 2 * max_len
    # the memory's cross-attention keys: every step without the cache, once per layer with it
    assert full_cross == 2 * max_len and cached_cross == 2


# --- errors --------------------------------------------------------------------------------------

def test_errors_name_what_was_expected():
    model = _model()
    src = _batch([[4, 5, EOS_ID], [6, EOS_ID]])
    with pytest.raises(TypeError, match="Seq2SeqTransformer"):
        IncrementalDecoder(nn.Linear(4, 4))
    decoder = IncrementalDecoder(model)
    with pytest.raises(RuntimeError, match="start"):
        decoder.step(torch.tensor([BOS_ID, BOS_ID]))
    with pytest.raises(RuntimeError, match="start"):
        decoder.reorder(torch.tensor([0]))
    with pytest.raises(TypeError, match="src"):
        decoder.start(src.float())
    decoder.start(src)
    with pytest.raises(ValueError, match="tokens: expected B=2"):
        decoder.step(torch.tensor([BOS_ID, BOS_ID, BOS_ID]))
    with pytest.raises(ValueError, match="tokens"):
        decoder.step(torch.tensor([[BOS_ID], [BOS_ID]]))
    with pytest.raises(TypeError, match="tokens"):
        decoder.step(torch.tensor([1.0, 1.0]))
    with pytest.raises(IndexError, match=r"\[0, 2\)"):
        decoder.reorder(torch.tensor([0, 2]))
    with pytest.raises(IndexError, match=r"\[0, 2\)"):
        decoder.reorder(torch.tensor([-1]))
    with pytest.raises(TypeError, match="indices"):
        decoder.reorder(torch.tensor([0.0]))
    for search in (greedy_search_cached, beam_search_cached, sample_cached):
        with pytest.raises(TypeError, match="src"):
            search(model, src.float())
        with pytest.raises(ValueError, match="src"):
            search(model, src[0])
    for bad in (0, 2.5, None):
        with pytest.raises(ValueError, match="beam_size must be a positive int"):
            beam_search_cached(model, src, beam_size=bad)


def test_translate_gives_the_same_text_with_and_without_the_cache():
    from course_lib.decoding import translate
    from course_lib.tokenizer import train_sentencepiece

    words = ["ein", "hund", "eine", "katze", "läuft", "springt", "schläft", "im", "park", "garten", "a", "dog",
             "cat", "runs", "jumps", "sleeps", "in", "the", "park", "garden"]
    sentences = [" ".join(words[(i * 7 + j * 3) % len(words)] for j in range(3 + i % 4)) for i in range(60)]
    tokenizer = train_sentencepiece(sentences, vocab_size=40)
    torch.manual_seed(5)
    model = Seq2SeqTransformer(40, 40, d_model=16, h=2, num_encoder_layers=1, num_decoder_layers=1, d_ff=32,
                               share_embeddings=True)
    for beam in (1, 3):
        plain = translate(model, tokenizer, sentences[:7], beam_size=beam, batch_size=3, cached=False, warn=False)
        assert translate(model, tokenizer, sentences[:7], beam_size=beam, batch_size=3, warn=False) == plain
