"""Decoding with a key-value cache: one new position per step instead of the whole prefix.

:func:`course_lib.decoding.greedy_search` calls ``model.decode(prefix, ...)`` at every step, so
step t runs all t positions of the prefix through every decoder layer again, although only the
last position's logits are used. Two things make that wasteful:

- in self-attention, the keys and values of the earlier positions do not change when a token is
  appended (the causal mask stops them from looking ahead), so they can be kept;
- in cross-attention, the keys and values come from the encoder's memory, which does not change
  at all, so they can be computed once per sentence.

:class:`IncrementalDecoder` keeps both in a :class:`KVCache` and runs one position per step: its
logits equal ``model.decode(prefix, memory, src_mask)[:, -1]`` (to float rounding), with the
model in eval mode. Shapes, with B sentences (or hypotheses), h heads, d_k = d_model / h, t tokens
fed so far and S source positions:

    per decoder layer:  self_k, self_v: (B, h, t, d_k)   grown by one position per step
                        cross_k, cross_v: (B, h, S, d_k) computed once, in ``start``

:func:`greedy_search_cached` and :func:`beam_search_cached` run the very loops of
:mod:`course_lib.decoding` with the cached decoder, so they return the same outputs as
:func:`~course_lib.decoding.greedy_search` and :func:`~course_lib.decoding.beam_search`;
:func:`sample_cached` does the same for :func:`~course_lib.decoding.sample`.
:func:`kv_cache_bytes` gives the cache's size from the model's sizes (notebook 13).
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from course_lib.attention import attention_weights
from course_lib.decoding import (beam_search_loop, check_beam_size, check_sampling, generate,
                                 sample_next_token, sentence_budgets)
from course_lib.multihead import MultiHeadAttention, merge_heads, split_heads
from course_lib.shapes import check_int, check_shape
from course_lib.transformer import DecoderBlock, Seq2SeqTransformer


@dataclass
class LayerKV:
    """The cached keys and values of one decoder layer (heads already split).

    Attributes:
        self_k, self_v: (B, h, t, d_k): self-attention keys/values of the t positions fed so far.
        cross_k, cross_v: (B, h, S, d_k): cross-attention keys/values of the encoder memory.
    """

    self_k: torch.Tensor
    self_v: torch.Tensor
    cross_k: torch.Tensor
    cross_v: torch.Tensor

    def tensors(self) -> tuple[torch.Tensor, ...]:
        return self.self_k, self.self_v, self.cross_k, self.cross_v


class KVCache:
    """Everything a decoder step needs from earlier steps and from the source, for every layer.

    Attributes:
        layers: one :class:`LayerKV` per decoder layer.
        src_mask: (B, 1, 1, S) bool, True at real source tokens (the cross-attention mask).
        tgt_keep: (B, t) bool, True where the token fed at that position is not PAD: padded
            positions are blocked as keys, as ``Seq2SeqTransformer.target_mask`` blocks them.
    """

    def __init__(self, layers: list[LayerKV], src_mask: torch.Tensor, tgt_keep: torch.Tensor):
        self.layers, self.src_mask, self.tgt_keep = layers, src_mask, tgt_keep

    @property
    def batch_size(self) -> int:
        """B: the number of rows (sentences or hypotheses)."""
        return self.src_mask.shape[0]

    @property
    def length(self) -> int:
        """t: the number of target positions cached so far."""
        return self.tgt_keep.shape[1]

    @property
    def source_length(self) -> int:
        """S: the number of source positions."""
        return self.src_mask.shape[-1]

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Add one position's self-attention keys/values ``(B, h, 1, d_k)`` to layer ``layer``.

        Returns the layer's grown keys and values, (B, h, t + 1, d_k) each.
        """
        cache = self.layers[layer]
        cache.self_k = torch.cat([cache.self_k, k], dim=2)
        cache.self_v = torch.cat([cache.self_v, v], dim=2)
        return cache.self_k, cache.self_v

    def reorder(self, indices: torch.Tensor) -> None:
        """Keep rows ``indices`` (N,) of everything, in that order (N may differ from B; rows may repeat)."""
        check_shape(indices, "N", name="indices", dtype="int")
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= self.batch_size):
            raise IndexError(f"indices must lie in [0, {self.batch_size}) (the cache holds {self.batch_size} "
                             f"rows), got values from {int(indices.min())} to {int(indices.max())}")
        indices = indices.to(self.src_mask.device)
        for cache in self.layers:
            cache.self_k, cache.self_v, cache.cross_k, cache.cross_v = (x[indices] for x in cache.tensors())
        self.src_mask, self.tgt_keep = self.src_mask[indices], self.tgt_keep[indices]

    def nbytes(self, kind: str = "all") -> int:
        """Bytes held by the cached keys and values: ``kind`` "self", "cross" or "all" (the masks not counted)."""
        if kind not in ("self", "cross", "all"):
            raise ValueError(f"kind must be 'self', 'cross' or 'all', got {kind!r}")
        total = 0
        for cache in self.layers:
            if kind in ("self", "all"):
                total += cache.self_k.nbytes + cache.self_v.nbytes
            if kind in ("cross", "all"):
                total += cache.cross_k.nbytes + cache.cross_v.nbytes
        return total


def kv_cache_bytes(num_layers: int, batch_size: int, d_model: int, target_length: int, source_length: int,
                   bytes_per_value: int = 4) -> int:
    """The size of a full :class:`KVCache`: 2 (keys and values) x layers x B x (t + S) x d_model values.

    The heads split d_model (h x d_k = d_model), so the number of heads does not change the size.

    Args:
        num_layers: decoder layers. batch_size: B (sentences x beams). d_model: the model width.
        target_length: t, positions fed so far. source_length: S. bytes_per_value: 4 for float32.

    Returns:
        The number of bytes.
    """
    sizes = [check_int(num_layers, "num_layers", 0), check_int(batch_size, "batch_size", 0),
             check_int(d_model, "d_model", 1), check_int(target_length, "target_length", 0),
             check_int(source_length, "source_length", 0), check_int(bytes_per_value, "bytes_per_value", 1)]
    L, B, d, t, S, size = sizes
    return 2 * L * B * (t + S) * d * size


@contextmanager
def _eval_mode(module: nn.Module):
    """Put ``module`` in eval mode for a while, then give every submodule its own mode back."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for m, mode in modes:
            m.training = mode


def _attend(attn: MultiHeadAttention, q_in: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
            mask: torch.Tensor) -> torch.Tensor:
    """One query position against cached keys/values: q_in (B, 1, d_model), k/v (B, h, T_k, d_k) -> (B, 1, d_model)."""
    q = split_heads(attn.w_q(q_in), attn.h)  # (B, h, 1, d_k)
    weights = attention_weights(q, k, mask=mask)  # (B, h, 1, T_k)
    return attn.w_o(merge_heads(weights @ v))  # (B, 1, d_model)


class IncrementalDecoder:
    """Run a :class:`~course_lib.transformer.Seq2SeqTransformer`'s decoder one token at a time with a KV cache.

    Usage::

        decoder = IncrementalDecoder(model).start(src)   # encode; cross K/V computed once
        logits = decoder.step(torch.full((B,), BOS_ID))  # (B, n_vocab): the first output token's logits
        logits = decoder.step(next_tokens)               # (B, n_vocab): the one after, and so on
        decoder.reorder(indices)                         # keep/reorder rows (beam search)

    ``step`` gives the logits that ``model.decode(prefix, memory, src_mask)[:, -1]`` gives for the
    prefix of every token fed so far, with the model's own weights (post-LN or pre-LN blocks),
    always with eval-mode semantics: no dropout, whatever ``model.training`` says (the model's
    mode is left as it was). It runs under ``torch.no_grad()``.

    Attributes:
        model: the wrapped model. cache: the :class:`KVCache` (None before ``start``).
    """

    def __init__(self, model: Seq2SeqTransformer):
        if not isinstance(model, Seq2SeqTransformer):
            raise TypeError(f"expected a Seq2SeqTransformer, got {type(model).__name__}")
        for i, layer in enumerate(model.transformer.decoder_layers):
            if not isinstance(layer, DecoderBlock):
                raise TypeError(f"decoder layer {i}: expected a DecoderBlock, got {type(layer).__name__}")
        self.model = model
        self.cache: KVCache | None = None

    @property
    def length(self) -> int:
        """The number of tokens fed so far (the position of the next one)."""
        return self._cache().length

    def _cache(self) -> KVCache:
        if self.cache is None:
            raise RuntimeError("call start(src) before step() or reorder()")
        return self.cache

    @torch.no_grad()
    def start(self, src: torch.Tensor) -> "IncrementalDecoder":
        """Encode ``src (B, S)`` (PAD = model.pad_id) and cache every layer's cross-attention keys/values.

        Starts a new, empty self-attention cache (t = 0). Returns ``self``.
        """
        check_shape(src, "B S", name="src", dtype="int")
        model = self.model
        with _eval_mode(model):
            memory, src_mask = model.encode(src)  # (B, S, d_model), (B, 1, 1, S)
        B = src.shape[0]
        layers = []
        for layer in model.transformer.decoder_layers:
            attn = layer.self_attn
            empty = memory.new_zeros(B, attn.h, 0, attn.d_k)  # (B, h, 0, d_k)
            cross = layer.cross_attn
            layers.append(LayerKV(empty, empty, split_heads(cross.w_k(memory), cross.h),  # (B, h, S, d_k)
                                  split_heads(cross.w_v(memory), cross.h)))
        self.cache = KVCache(layers, src_mask, torch.zeros(B, 0, dtype=torch.bool, device=src.device))
        return self

    @torch.no_grad()
    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """Feed one token per row (at position t = :attr:`length`) and return the next-token logits.

        Args:
            tokens: (B,) ids; the first step feeds BOS.

        Returns:
            (B, n_vocab) logits of the token at position t + 1.
        """
        cache = self._cache()
        check_shape(tokens, "B", name="tokens", dtype="int", B=cache.batch_size)
        model, t = self.model, cache.length
        tokens = tokens.to(cache.src_mask.device)
        model.check_ids(tokens, "tokens", model.tgt_embed)
        x = model.tgt_embed(tokens[:, None]) * math.sqrt(model.d_model)  # (B, 1, d_model)
        x = x + model.positions.encoding(1, start=t, dtype=x.dtype, device=x.device)  # position t only
        cache.tgt_keep = torch.cat([cache.tgt_keep, (tokens != model.pad_id)[:, None]], dim=1)  # (B, t + 1)
        self_mask = cache.tgt_keep[:, None, None, :]  # (B, 1, 1, t + 1): causal by construction
        for i, layer in enumerate(model.transformer.decoder_layers):
            x = self._layer_step(i, layer, x, self_mask)
        x = model.transformer.decoder_norm(x)
        return model.out(x)[:, 0]  # (B, n_vocab)

    def _layer_step(self, i: int, layer: DecoderBlock, x: torch.Tensor, self_mask: torch.Tensor) -> torch.Tensor:
        """One DecoderBlock for one new position: x (B, 1, d_model) -> (B, 1, d_model), without dropout."""
        cache = self.cache
        kv = cache.layers[i]
        attn = layer.self_attn

        def self_attention(y):  # y: (B, 1, d_model)
            k, v = cache.append(i, split_heads(attn.w_k(y), attn.h), split_heads(attn.w_v(y), attn.h))
            return _attend(attn, y, k, v, self_mask)  # k, v: (B, h, t + 1, d_k)

        def cross_attention(y):
            return _attend(layer.cross_attn, y, kv.cross_k, kv.cross_v, cache.src_mask)

        def feed_forward(y):
            ff = layer.ff
            return ff.linear2(ff.activation(ff.linear1(y)))

        if layer.norm_first:
            x = x + self_attention(layer.norm1(x))
            x = x + cross_attention(layer.norm2(x))
            return x + feed_forward(layer.norm3(x))
        x = layer.norm1(x + self_attention(x))
        x = layer.norm2(x + cross_attention(x))
        return layer.norm3(x + feed_forward(x))

    def reorder(self, indices: torch.Tensor) -> None:
        """Keep rows ``indices (N,)`` of the cache, in that order; e.g. the parents of beam search's hypotheses.

        Rows may repeat (``torch.arange(B).repeat_interleave(K)`` makes K copies of each sentence).
        """
        self._cache().reorder(indices)

    def cache_bytes(self, kind: str = "all") -> int:
        """Bytes held by the cached keys/values now: ``kind`` "self", "cross" or "all"."""
        return self._cache().nbytes(kind)


@torch.no_grad()
def greedy_search_cached(model: Seq2SeqTransformer, src: torch.Tensor, max_len: int | None = None) -> list[list[int]]:
    """:func:`course_lib.decoding.greedy_search` with a KV cache: the same outputs (model in eval mode), less work.

    Args:
        model: a Seq2SeqTransformer. src: (B, S) source ids.
        max_len: the most tokens per sentence: None (each its own ``output_budget``), an int, or B ints.

    Returns:
        One id list per sentence, without BOS, EOS included when produced.
    """
    check_shape(src, "B S", name="src", dtype="int")
    max_len = sentence_budgets(src, max_len, model.pad_id)
    decoder = IncrementalDecoder(model).start(src)
    return generate(lambda out: decoder.step(out[:, -1]), src.shape[0], max_len,
                    lambda logits: logits.argmax(dim=-1), device=src.device)


@torch.no_grad()
def beam_search_cached(model: Seq2SeqTransformer, src: torch.Tensor, beam_size: int = 4, alpha: float = 0.6,
                       max_len: int | None = None) -> list[list[int]]:
    """:func:`course_lib.decoding.beam_search` with a KV cache: the same bookkeeping and outputs.

    The cache holds B*K rows (K copies of each sentence's cross K/V, made by :meth:`IncrementalDecoder.reorder`);
    after every step it is reordered by the parents of the surviving hypotheses.

    Returns:
        The best hypothesis of each sentence (ids without BOS).
    """
    check_shape(src, "B S", name="src", dtype="int")
    K = check_beam_size(beam_size)
    max_len = sentence_budgets(src, max_len, model.pad_id)
    B = src.shape[0]
    decoder = IncrementalDecoder(model).start(src)
    decoder.reorder(torch.arange(B, device=src.device).repeat_interleave(K))  # (B*K,) K copies of each sentence

    def next_logits(tokens, parents):
        if parents is not None:
            decoder.reorder(parents)
        return decoder.step(tokens[:, -1])

    return beam_search_loop(next_logits, B, K, alpha, max_len, device=src.device)


@torch.no_grad()
def sample_cached(model: Seq2SeqTransformer, src: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                  top_p: float | None = None, generator: torch.Generator | None = None,
                  max_len: int | None = None) -> list[list[int]]:
    """:func:`course_lib.decoding.sample` with a KV cache: the same draws for the same generator state."""
    check_shape(src, "B S", name="src", dtype="int")
    settings = check_sampling(temperature, top_k, top_p)
    max_len = sentence_budgets(src, max_len, model.pad_id)
    decoder = IncrementalDecoder(model).start(src)
    return generate(lambda out: decoder.step(out[:, -1]), src.shape[0], max_len,
                    lambda logits: sample_next_token(logits, *settings, generator=generator), device=src.device)
