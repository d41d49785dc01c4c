"""Decoding with a key-value cache: the containers (course_lib/kv_cache.py), the model's own modules that
use them (MultiHeadAttention, EncoderBlock, DecoderBlock, Seq2SeqTransformer.decode) and the decoder that
drives them (course_lib.decoding.IncrementalDecoder).

The cached step is compared with the model's own full recompute, ``model.decode(prefix)[:, -1]``,
at every step (post-LN and pre-LN, padded sources, padding inside the prefix, reordered rows);
the cached searches with the uncached ones (``cached=False``); the work saved is counted with
forward hooks on the model's own modules, not timed.
"""
import pytest
import torch
from torch import nn

from course_lib.decoding import IncrementalDecoder, beam_search, greedy_search, sample
from course_lib.kv_cache import AttentionCache, KVCache, LayerCache, kv_cache_bytes
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


def greedy_search_cached(model, src, **kwargs):
    return greedy_search(model, src, cached=True, **kwargs)


def beam_search_cached(model, src, **kwargs):
    return beam_search(model, src, cached=True, **kwargs)


def sample_cached(model, src, **kwargs):
    return sample(model, src, cached=True, **kwargs)


def uncached(search):
    return lambda model, src, **kwargs: search(model, src, cached=False, **kwargs)


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
    assert all(isinstance(layer, LayerCache) for layer in cache.layers)
    assert (cache.batch_size, cache.length, cache.source_length) == (2, 0, 0)  # empty until the first step
    assert all(layer.self_attn.is_empty and layer.cross_attn.is_empty for layer in cache.layers)
    assert decoder.cache_bytes() == 0
    for t in range(1, 5):
        decoder.step(torch.tensor([BOS_ID, 7]))
        assert (cache.length, cache.source_length) == (t, 6)
        for layer in cache.layers:
            assert layer.self_attn.k.shape == layer.self_attn.v.shape == (2, 4, t, 4)  # (B, h, t, d_k)
            assert layer.cross_attn.k.shape == layer.cross_attn.v.shape == (2, 4, 6, 4)  # (B, h, S, d_k)
        assert decoder.cache_bytes("cross") == 2 * 3 * 2 * 6 * 16 * 4  # K and V, 3 layers, B, S, d_model, float32
        assert decoder.cache_bytes("self") == 2 * 3 * 2 * t * 16 * 4
        assert decoder.cache_bytes() == kv_cache_bytes(3, 2, 16, t, 6)
    assert kv_cache_bytes(6, 32, 512, 20, 25) == 2 * 6 * 32 * 45 * 512 * 4  # a base-sized model: 17.7 MB
    assert kv_cache_bytes(1, 1, 8, 1, 0, bytes_per_value=2) == 32
    with pytest.raises(ValueError, match="kind"):
        decoder.cache_bytes("keys")
    with pytest.raises(ValueError, match="num_layers"):
        kv_cache_bytes(-1, 1, 8, 1, 1)


def test_cross_keys_are_those_of_the_model_memory_projected_once():
    model = _model(seed=2)
    src = _batch(_random_sources(12, 3, 2))
    memory, _ = model.encode(src)
    decoder = IncrementalDecoder(model).start(src)
    decoder.step(torch.full((3,), BOS_ID))
    first = [layer.cross_attn.k for layer in decoder.cache.layers]
    decoder.step(torch.tensor([4, 5, 6]))
    for layer, kv, k_first in zip(model.transformer.decoder_layers, decoder.cache.layers, first):
        w_k = layer.cross_attn.w_k
        with torch.no_grad():
            expected = (memory @ w_k.weight.T + w_k.bias).reshape(3, -1, 2, 8).permute(0, 2, 1, 3)  # by hand
        assert torch.allclose(kv.cross_attn.k, expected, atol=ATOL)
        assert kv.cross_attn.k is k_first  # the second step reused the tensor: nothing projected again


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
            expected = uncached(greedy_search)(model, src, max_len=max_len)
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
            expected = uncached(beam_search)(model, src, beam_size=beam_size, alpha=alpha, max_len=8)
            assert beam_search_cached(model, src, beam_size=beam_size, alpha=alpha, max_len=8) == expected
            differs += expected != uncached(greedy_search)(model, src, max_len=8)
    assert differs  # the beams really searched: outputs other than greedy's
    model = _model(seed=5)
    src = _batch(_random_sources(12, 2, 9))
    assert beam_search_cached(model, src) == uncached(beam_search)(model, src)  # defaults, default max_len
    assert beam_search_cached(model, src, beam_size=2, max_len=0) == [[], []]


@pytest.mark.parametrize("norm_first", [False, True])
def test_beam_search_cached_logits_equal_the_recompute_of_every_hypothesis(norm_first, monkeypatch):
    """Inside beam_search_cached, every step's logits (reordered cache) equal model.decode on the hypotheses."""
    import course_lib.decoding as decoding

    model = _model(seed=7, norm_first=norm_first, eos_bias=0.5)
    src = _batch(_random_sources(12, 3, 8, lengths=(2, 8)))
    K = 3
    memory, src_mask = model.encode(src)
    memory, src_mask = memory.repeat_interleave(K, 0), src_mask.repeat_interleave(K, 0)
    checked, reordered = [], []
    loop = decoding.beam_search_loop

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

    monkeypatch.setattr(decoding, "beam_search_loop", checking_loop)
    beam_search_cached(model, src, beam_size=K, max_len=8)
    assert len(checked) >= 4 and any(reordered)  # several steps, and the hypotheses really moved rows


def test_sample_cached_equals_sample_with_the_same_generator():
    model = _model(seed=6, eos_bias=0.5)
    src = _batch(_random_sources(12, 5, 6))
    for settings in ({}, {"temperature": 0.7, "top_k": 4}, {"temperature": 1.3, "top_p": 0.8}):
        expected = uncached(sample)(model, src, generator=torch.Generator().manual_seed(11), max_len=9, **settings)
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
        full = uncached(greedy_search)(model, src, max_len=max_len)
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


# --- the cache inside the model's own modules ------------------------------------------------------

def test_multihead_attention_with_a_cache_equals_the_causal_full_pass_in_any_chunks():
    from course_lib.masking import causal_mask
    from course_lib.multihead import MultiHeadAttention

    torch.manual_seed(0)
    attn = MultiHeadAttention(16, 4).eval()
    x = torch.randn(2, 7, 16)  # (B, T, d_model)
    with torch.no_grad():
        full, _ = attn(x, mask=causal_mask(7))
        for chunks in ([1] * 7, [3, 1, 3], [7]):
            cache, outputs, t = AttentionCache(), [], 0
            for size in chunks:
                out, weights = attn(x[:, t:t + size], mask=causal_mask(size, start=t), cache=cache)
                assert weights.shape == (2, 4, size, t + size) and cache.k.shape == (2, 4, t + size, 4)
                outputs.append(out)
                t += size
            assert torch.allclose(torch.cat(outputs, dim=1), full, atol=ATOL), chunks
        # without the mask, a chunk of several positions would see the later ones among them
        out, _ = attn(x[:, :3], cache=AttentionCache())
        assert not torch.allclose(out, full[:, :3], atol=1e-3)


def test_a_fixed_cache_projects_the_memory_once_and_then_reuses_it():
    from course_lib.multihead import MultiHeadAttention

    torch.manual_seed(1)
    attn = MultiHeadAttention(8, 2).eval()
    x, memory = torch.randn(2, 3, 8), torch.randn(2, 5, 8)
    cache, projected = AttentionCache(fixed=True), []
    hook = attn.w_k.register_forward_hook(lambda m, i, o: projected.append(i[0].shape))
    try:
        with torch.no_grad():
            full, _ = attn(x, memory, memory)
            parts = [attn(x[:, t:t + 1], memory, memory, cache=cache)[0] for t in range(3)]
    finally:
        hook.remove()
    assert torch.allclose(torch.cat(parts, dim=1), full, atol=ATOL)
    assert projected == [(2, 5, 8), (2, 5, 8)]  # the full pass, then the cache's first call only
    assert cache.length == 5 and cache.k.shape == (2, 2, 5, 4)


@pytest.mark.parametrize("norm_first", [False, True])
def test_an_encoder_block_with_a_causal_mask_and_a_cache_generates_like_a_gpt_block(norm_first):
    """A decoder-only model's block is self-attention + feed-forward with a causal mask: the same cache works."""
    from course_lib.blocks import EncoderBlock
    from course_lib.masking import causal_mask

    torch.manual_seed(2)
    block = EncoderBlock(16, 2, 32, dropout=0.0, norm_first=norm_first).eval()
    x = torch.randn(2, 6, 16)
    with torch.no_grad():
        full = block(x, causal_mask(6))
        cache = AttentionCache()
        steps = [block(x[:, t:t + 1], causal_mask(1, start=t), cache=cache) for t in range(6)]
    assert torch.allclose(torch.cat(steps, dim=1), full, atol=ATOL)


@pytest.mark.parametrize("norm_first", [False, True])
def test_decode_with_a_cache_takes_the_new_tokens_only_in_any_chunks(norm_first):
    model = _model(seed=8, norm_first=norm_first)
    src = _batch(_random_sources(12, 3, 3), width=8)
    memory, src_mask = model.encode(src)
    tgt_in = torch.tensor([[BOS_ID, 4, 5, PAD_ID, 7, 8], [BOS_ID, 9, 10, 11, 4, 5], [BOS_ID, 6, 6, 6, 6, 6]])
    with torch.no_grad():
        full = model.decode(tgt_in, memory, src_mask)  # (3, 6, n_vocab)
        cache = model.new_cache(3)
        prefill = model.decode(tgt_in[:, :4], memory, src_mask, cache)  # a prompt of 4 tokens at once
        rest = [model.decode(tgt_in[:, t:t + 1], memory, src_mask, cache) for t in range(4, 6)]
    assert cache.length == 6 and cache.keep[0].tolist() == [True, True, True, False, True, True]
    assert torch.allclose(torch.cat([prefill] + rest, dim=1), full, atol=ATOL)


def test_causal_mask_with_earlier_positions():
    from course_lib.masking import causal_mask

    assert causal_mask(2, start=3).tolist() == [[True, True, True, True, False], [True, True, True, True, True]]
    assert torch.equal(causal_mask(4, start=0), causal_mask(4))
    assert torch.equal(causal_mask(3, start=2), causal_mask(5)[2:])  # the last rows of the full mask
    with pytest.raises(ValueError, match="start"):
        causal_mask(2, start=-1)


def test_the_cache_classes_refuse_what_does_not_fit():
    from course_lib.blocks import EncoderBlock
    from course_lib.multihead import MultiHeadAttention

    torch.manual_seed(3)
    attn = MultiHeadAttention(8, 2)
    x = torch.randn(2, 1, 8)
    with pytest.raises(TypeError, match="AttentionCache"):
        attn(x, cache=KVCache(1, 2))
    with pytest.raises(TypeError, match="AttentionCache"):
        EncoderBlock(8, 2, 16)(x, cache=LayerCache())
    cache = AttentionCache()
    attn(x, cache=cache)
    with pytest.raises(ValueError, match="B=3"):  # made for a batch of 2
        attn(torch.randn(3, 1, 8), cache=cache)
    with pytest.raises(ValueError, match="h=4"):
        MultiHeadAttention(8, 4)(x, cache=cache)
    fixed = AttentionCache(fixed=True)
    fixed.add(torch.randn(2, 2, 5, 4), torch.randn(2, 2, 5, 4))
    with pytest.raises(RuntimeError, match="reused"):
        fixed.add(torch.randn(2, 2, 1, 4), torch.randn(2, 2, 1, 4))
    with pytest.raises(ValueError, match="v"):
        AttentionCache().add(torch.randn(2, 2, 1, 4), torch.randn(2, 2, 2, 4))
    with pytest.raises(TypeError, match="fixed"):
        AttentionCache(fixed="yes")
    with pytest.raises(IndexError, match=r"\[0, 2\)"):
        cache.reorder(torch.tensor([2]))
    with pytest.raises(ValueError, match="num_layers"):
        KVCache(0, 2)
    model = _model(layers=2)
    src = _batch([[4, 5, EOS_ID], [6, EOS_ID]])
    memory, src_mask = model.encode(src)
    tokens = torch.tensor([[BOS_ID], [BOS_ID]])
    with pytest.raises(ValueError, match="3 layers, the decoder has 2"):
        model.decode(tokens, memory, src_mask, KVCache(3, 2))
    with pytest.raises(ValueError, match="tgt_in: expected B=5"):
        model.decode(tokens, memory, src_mask, model.new_cache(5))
    with pytest.raises(TypeError, match="KVCache"):
        model.decode(tokens, memory, src_mask, AttentionCache())
    with pytest.raises(TypeError, match="LayerCache"):
        model.transformer.decoder_layers[0](torch.randn(2, 1, 16), memory, cache=AttentionCache())
    for search in (greedy_search, beam_search, sample):
        with pytest.raises(TypeError, match="cached must be True"):
            search(model, src, cached="yes")


def test_one_forward_path_and_no_import_circle():
    """The cache module holds containers only; decoding and it do not import each other; no module outside
    the attention and block modules runs a layer's projections or feed-forward network itself."""
    import ast
    import pathlib

    root = pathlib.Path(__file__).resolve().parent.parent / "course_lib"

    def imports(name):
        tree = ast.parse((root / name).read_text())
        return {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}

    assert imports("kv_cache.py") <= {"__future__", "course_lib.masking", "course_lib.shapes"}
    assert "course_lib.kv_cache" not in imports("decoding.py")
    layer_parts = (".w_q(", ".w_k(", ".w_v(", ".w_o(", ".linear1(", ".linear2(", ".self_attn(", ".cross_attn(")
    homes = {"attention.py", "multihead.py", "blocks.py", "transformer.py"}
    for path in root.glob("*.py"):
        if path.name not in homes:
            text = path.read_text()
            assert not [part for part in layer_parts if part in text], path.name
