"""The encoder–decoder Transformer (Vaswani et al., 2017), the model notebook 11 trains.

Two levels:

- :class:`Transformer` works on vectors, exactly like ``torch.nn.Transformer``
  (``load_from_torch`` copies one's weights): ``src (B, S, d_model)``, ``tgt (B, T, d_model)``
  -> ``(B, T, d_model)``. Like PyTorch's, each stack ends with a LayerNorm.
- :class:`Seq2SeqTransformer` works on token ids: embeddings × sqrt(d_model) + sinusoidal
  positions, the :class:`Transformer`, and the unembedding to logits ``(B, T, n_vocab)``; source,
  target and output embeddings can be shared (one matrix for a joint vocabulary).

Masks are bool, True = may attend (course_lib.attention's convention), broadcastable to
(B, h, T_q, T_k).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from course_lib.attention import check_module_input
from course_lib.blocks import EncoderBlock, FeedForward, _copy_linear_norms
from course_lib.kv_cache import KVCache, LayerCache
from course_lib.masking import causal_mask
from course_lib.multihead import MultiHeadAttention
from course_lib.positional import SinusoidalPositionalEncoding
from course_lib.shapes import check_shape


class DecoderBlock(nn.Module):
    """Masked self-attention, cross-attention over the encoder output, feed-forward; each with residual + norm.

    ``forward(x (B, T, d_model), memory (B, S, d_model), tgt_mask=None, memory_mask=None, cache=None)``.
    With a :class:`~course_lib.kv_cache.LayerCache` (decoding one token at a time) ``x`` holds only
    the new positions, ``tgt_mask`` covers every position cached so far, and the memory is projected
    to keys and values at the first call only.
    """

    def __init__(self, d_model: int, h: int, d_ff: int, dropout: float = 0.1, activation: str = "relu",
                 norm_first: bool = False, eps: float = 1e-5):
        super().__init__()
        self.norm_first = norm_first
        self.self_attn = MultiHeadAttention(d_model, h, dropout)
        self.cross_attn = MultiHeadAttention(d_model, h, dropout)
        self.ff = FeedForward(d_model, d_ff, dropout, activation)
        self.norm1, self.norm2, self.norm3 = (nn.LayerNorm(d_model, eps=eps) for _ in range(3))
        self.dropout1, self.dropout2, self.dropout3 = (nn.Dropout(dropout) for _ in range(3))
        self.self_weights: torch.Tensor | None = None  # (B, h, T, T) of the last call
        self.cross_weights: torch.Tensor | None = None  # (B, h, T, S) of the last call

    def _sa(self, x, mask, cache):
        out, self.self_weights = self.self_attn(x, mask=mask, cache=None if cache is None else cache.self_attn)
        return self.dropout1(out)

    def _ca(self, x, memory, mask, cache):
        out, self.cross_weights = self.cross_attn(x, memory, memory, mask=mask,
                                                  cache=None if cache is None else cache.cross_attn)
        return self.dropout2(out)

    def forward(self, x: torch.Tensor, memory: torch.Tensor, tgt_mask: torch.Tensor | None = None,
                memory_mask: torch.Tensor | None = None, cache: LayerCache | None = None) -> torch.Tensor:
        check_module_input(self, x=x, memory=memory)
        sizes = check_shape(x, "B T d_model", name="x", d_model=self.norm1.normalized_shape[0])
        check_shape(memory, "B S d_model", name="memory", B=sizes["B"], d_model=sizes["d_model"])
        if cache is not None and not isinstance(cache, LayerCache):
            raise TypeError(f"cache: expected a LayerCache (course_lib.kv_cache), got {type(cache).__name__}")
        if self.norm_first:
            x = x + self._sa(self.norm1(x), tgt_mask, cache)
            x = x + self._ca(self.norm2(x), memory, memory_mask, cache)
            return x + self.dropout3(self.ff(self.norm3(x)))
        x = self.norm1(x + self._sa(x, tgt_mask, cache))
        x = self.norm2(x + self._ca(x, memory, memory_mask, cache))
        return self.norm3(x + self.dropout3(self.ff(x)))

    @torch.no_grad()
    def load_from_torch(self, layer: nn.TransformerDecoderLayer) -> "DecoderBlock":
        """Copy the weights of a ``torch.nn.TransformerDecoderLayer`` with the same sizes."""
        self.self_attn.load_from_torch(layer.self_attn)
        self.cross_attn.load_from_torch(layer.multihead_attn)
        _copy_linear_norms(self, layer, ("norm1", "norm2", "norm3"))
        return self


class Transformer(nn.Module):
    """Encoder stack + decoder stack on d_model-wide vectors, each stack ending in a LayerNorm."""

    def __init__(self, d_model: int = 512, h: int = 8, num_encoder_layers: int = 6, num_decoder_layers: int = 6,
                 d_ff: int = 2048, dropout: float = 0.1, activation: str = "relu", norm_first: bool = False,
                 eps: float = 1e-5):
        super().__init__()
        self.d_model, self.h = d_model, h
        self.encoder_layers = nn.ModuleList(EncoderBlock(d_model, h, d_ff, dropout, activation, norm_first, eps)
                                            for _ in range(num_encoder_layers))
        self.decoder_layers = nn.ModuleList(DecoderBlock(d_model, h, d_ff, dropout, activation, norm_first, eps)
                                            for _ in range(num_decoder_layers))
        self.encoder_norm = nn.LayerNorm(d_model, eps=eps)
        self.decoder_norm = nn.LayerNorm(d_model, eps=eps)

    def encode(self, src: torch.Tensor, src_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, S, d_model) -> memory (B, S, d_model); ``src_mask`` e.g. a padding mask (B, 1, 1, S)."""
        check_shape(src, "B S d_model", name="src", d_model=self.d_model)
        for layer in self.encoder_layers:
            src = layer(src, src_mask)
        return self.encoder_norm(src)

    def decode(self, tgt: torch.Tensor, memory: torch.Tensor, tgt_mask: torch.Tensor | None = None,
               memory_mask: torch.Tensor | None = None, cache: KVCache | None = None) -> torch.Tensor:
        """(B, T, d_model) attending to memory (B, S, d_model) -> (B, T, d_model).

        With a :class:`~course_lib.kv_cache.KVCache`, layer i uses ``cache.layers[i]``: ``tgt`` holds
        the new positions only and ``tgt_mask`` covers every position cached so far.
        """
        check_shape(tgt, "B T d_model", name="tgt", d_model=self.d_model)
        if cache is not None:
            if not isinstance(cache, KVCache):
                raise TypeError(f"cache: expected a KVCache (course_lib.kv_cache), got {type(cache).__name__}")
            if len(cache.layers) != len(self.decoder_layers):
                raise ValueError(f"cache holds {len(cache.layers)} layers, the decoder has {len(self.decoder_layers)}")
        for i, layer in enumerate(self.decoder_layers):
            tgt = layer(tgt, memory, tgt_mask, memory_mask, None if cache is None else cache.layers[i])
        return self.decoder_norm(tgt)

    def forward(self, src: torch.Tensor, tgt: torch.Tensor, src_mask: torch.Tensor | None = None,
                tgt_mask: torch.Tensor | None = None, memory_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.decode(tgt, self.encode(src, src_mask), tgt_mask, memory_mask)

    @torch.no_grad()
    def load_from_torch(self, model: nn.Transformer) -> "Transformer":
        """Copy every weight of a ``torch.nn.Transformer`` with the same sizes and layer counts."""
        theirs_enc, theirs_dec = model.encoder.layers, model.decoder.layers
        if len(theirs_enc) != len(self.encoder_layers) or len(theirs_dec) != len(self.decoder_layers):
            raise ValueError(f"layer counts differ: ours {len(self.encoder_layers)}+{len(self.decoder_layers)}, "
                             f"theirs {len(theirs_enc)}+{len(theirs_dec)}")
        for ours, theirs in zip(self.encoder_layers, theirs_enc):
            ours.load_from_torch(theirs)
        for ours, theirs in zip(self.decoder_layers, theirs_dec):
            ours.load_from_torch(theirs)
        self.encoder_norm.load_state_dict(model.encoder.norm.state_dict())
        self.decoder_norm.load_state_dict(model.decoder.norm.state_dict())
        return self


def check_token_ids(ids: torch.Tensor, embedding: nn.Embedding, name: str = "ids") -> None:
    """Token ids must lie in ``embedding``'s vocabulary and on its device: a clear error, not torch's IndexError."""
    weight = embedding.weight
    if ids.device != weight.device:
        raise ValueError(f"{name} is on {ids.device} but the model is on {weight.device}: "
                         f"use {name}.to({str(weight.device)!r})")
    if ids.numel():
        low, high, n_vocab = int(ids.min()), int(ids.max()), embedding.num_embeddings
        if low < 0 or high >= n_vocab:
            raise ValueError(f"{name}: token ids must lie in 0..{n_vocab - 1} (the vocabulary has {n_vocab} entries), got ids "
                             f"from {low} to {high}: were they made by another tokenizer?")


def shift_right(tgt: torch.Tensor, bos_id: int) -> torch.Tensor:
    """Teacher forcing's decoder input: ``[BOS, y_0, ..., y_{T-2}]`` for targets ``(B, T)`` of token ids."""
    check_shape(tgt, "B T", name="tgt", dtype="int")
    bos = torch.full_like(tgt[:, :1], bos_id)
    return torch.cat([bos, tgt[:, :-1]], dim=1)


class Seq2SeqTransformer(nn.Module):
    """A translation model on token ids: embed, add positions, :class:`Transformer`, unembed.

    ``forward(src (B, S), tgt_in (B, T)) -> logits (B, T, tgt_vocab)``; padding (``pad_id``)
    and causal masks are built inside. With ``share_embeddings`` one matrix serves as
    source, target and output embedding (the vocabularies must then be the same).
    Embeddings start with std d_model^-0.5 and are multiplied by sqrt(d_model), so token
    vectors and sinusoidal positions have comparable sizes. ``trained_max_len`` records the
    longest source the model is trained on (the recipe's ``max_len``); sinusoidal positions have
    no hard limit, but :func:`~course_lib.decoding.translate` warns about longer sources.
    """

    def __init__(self, src_vocab: int, tgt_vocab: int, d_model: int = 256, h: int = 4,
                 num_encoder_layers: int = 3, num_decoder_layers: int = 3, d_ff: int = 1024,
                 dropout: float = 0.1, activation: str = "relu", norm_first: bool = True,
                 share_embeddings: bool = False, pad_id: int = 0, trained_max_len: int | None = None):
        super().__init__()
        if share_embeddings and src_vocab != tgt_vocab:
            raise ValueError(f"share_embeddings needs one vocabulary, got src_vocab={src_vocab}, tgt_vocab={tgt_vocab}")
        self.d_model, self.pad_id = d_model, pad_id
        #: the longest source (tokens, EOS included) in the training data, when known: translate() warns beyond it
        self.trained_max_len = trained_max_len
        self.src_embed = nn.Embedding(src_vocab, d_model)
        self.tgt_embed = self.src_embed if share_embeddings else nn.Embedding(tgt_vocab, d_model)
        for embedding in dict.fromkeys([self.src_embed, self.tgt_embed]):  # fixed order, each table once
            nn.init.normal_(embedding.weight, std=d_model ** -0.5)
        self.positions = SinusoidalPositionalEncoding(d_model)
        self.dropout = nn.Dropout(dropout)
        self.transformer = Transformer(d_model, h, num_encoder_layers, num_decoder_layers, d_ff, dropout,
                                       activation, norm_first)
        self.out = nn.Linear(d_model, tgt_vocab, bias=False)
        if share_embeddings:
            self.out.weight = self.tgt_embed.weight

    def _embed(self, tokens: torch.Tensor, embedding: nn.Embedding, start: int = 0) -> torch.Tensor:
        return self.dropout(self.positions(embedding(tokens) * math.sqrt(self.d_model), start))

    def check_ids(self, ids: torch.Tensor, name: str, embedding: nn.Embedding) -> None:
        """Token ids must lie in the vocabulary and on the model's device (:func:`check_token_ids`)."""
        check_token_ids(ids, embedding, name)

    def source_mask(self, src: torch.Tensor) -> torch.Tensor:
        """(B, S) ids -> (B, 1, 1, S) bool, True at real tokens."""
        return (src != self.pad_id)[:, None, None, :]

    def target_mask(self, tgt_in: torch.Tensor) -> torch.Tensor:
        """(B, T) ids -> (B, 1, T, T): causal and not padding."""
        T = tgt_in.shape[1]
        return causal_mask(T, device=tgt_in.device) & (tgt_in != self.pad_id)[:, None, None, :]

    def encode(self, src: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, S) ids -> (memory (B, S, d_model), source mask (B, 1, 1, S))."""
        check_shape(src, "B S", name="src", dtype="int")
        if src.shape[1] == 0:
            raise ValueError(f"src of shape {tuple(src.shape)} has no tokens: every source needs at least its EOS")
        self.check_ids(src, "src", self.src_embed)
        mask = self.source_mask(src)
        return self.transformer.encode(self._embed(src, self.src_embed), mask), mask

    def new_cache(self, batch_size: int) -> KVCache:
        """An empty :class:`~course_lib.kv_cache.KVCache` for ``batch_size`` rows, one layer cache per decoder layer."""
        return KVCache(len(self.transformer.decoder_layers), batch_size, device=self.out.weight.device)

    def decode(self, tgt_in: torch.Tensor, memory: torch.Tensor, src_mask: torch.Tensor,
               cache: KVCache | None = None) -> torch.Tensor:
        """(B, T) ids and the encoder's memory -> logits (B, T, tgt_vocab).

        With a ``cache`` (from :meth:`new_cache`; notebook 12) ``tgt_in`` holds only the tokens that
        follow those fed before, at positions t ... t + T - 1 (t = ``cache.length``): the logits are
        those the whole prefix would give at these positions, and the cache grows by T positions.
        """
        check_shape(tgt_in, "B T", name="tgt_in", dtype="int")
        if tgt_in.shape[1] == 0:
            raise ValueError(f"tgt_in of shape {tuple(tgt_in.shape)} has no tokens: the decoder input starts with BOS")
        self.check_ids(tgt_in, "tgt_in", self.tgt_embed)
        if cache is None:
            start, mask = 0, self.target_mask(tgt_in)  # (B, 1, T, T)
        else:
            if not isinstance(cache, KVCache):
                raise TypeError(f"cache: expected a KVCache (from model.new_cache), got {type(cache).__name__}")
            check_shape(tgt_in, "B T", name="tgt_in", B=cache.batch_size)
            start, mask = cache.length, cache.add_positions(tgt_in != self.pad_id)  # (B, 1, T, t + T)
        x = self._embed(tgt_in, self.tgt_embed, start)
        return self.out(self.transformer.decode(x, memory, mask, src_mask, cache))

    def forward(self, src: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        memory, src_mask = self.encode(src)
        return self.decode(tgt_in, memory, src_mask)


@torch.no_grad()
def greedy_decode(model: Seq2SeqTransformer, src: torch.Tensor, bos_id: int, eos_id: int,
                  max_len: int) -> torch.Tensor:
    """Translate a batch ``src (B, S)`` token by token, always taking the most likely next token.

    Returns ``(B, L)`` ids without the leading BOS, L <= max_len; after a sequence's EOS every
    further position is ``model.pad_id``.
    """
    memory, src_mask = model.encode(src)
    B = src.shape[0]
    out = torch.full((B, 1), bos_id, dtype=torch.long, device=src.device)
    done = torch.zeros(B, dtype=torch.bool, device=src.device)
    for _ in range(max_len):
        next_token = model.decode(out, memory, src_mask)[:, -1].argmax(dim=-1)
        next_token = next_token.masked_fill(done, model.pad_id)
        out = torch.cat([out, next_token[:, None]], dim=1)
        done |= next_token == eos_id
        if done.all():
            break
    return out[:, 1:]


def count_parameters(module: nn.Module) -> int:
    """Number of distinct trainable parameters (a shared matrix counts once)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


# --- pictures and read-outs (notebook 09) ----------------------------------------------------------------

@torch.no_grad()
def cross_attention_weights(model: Seq2SeqTransformer, src: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
    """Every decoder layer's cross-attention weights for a teacher-forced pass.

    Args:
        model: a :class:`Seq2SeqTransformer` (put it in ``eval()`` mode for dropout-free weights).
        src: (B, S) source ids. tgt_in: (B, T) decoder input ids (BOS first).

    Returns:
        (L, B, h, T, S): layer l, sequence b, head i, row t = where decoder position t looked in the source.
    """
    check_shape(src, "B S", name="src", dtype="int")
    check_shape(tgt_in, "B T", name="tgt_in", dtype="int", B=src.shape[0])
    model(src, tgt_in)
    return torch.stack([layer.cross_weights for layer in model.transformer.decoder_layers])


def plot_cross_attention(weights: torch.Tensor, src_labels, tgt_labels, title: str | None = None,
                         layer_names=None, head_names=None):
    """A grid of cross-attention heatmaps for one example: a row of panels per layer, a column per head.

    Args:
        weights: (L, h, T, S), e.g. ``cross_attention_weights(...)[:, b]``; (T, S) draws one panel.
        src_labels: S source tokens (columns). tgt_labels: T labels for the decoder positions (rows).
        title: the figure's title.

    Returns:
        The matplotlib Figure.
    """
    import matplotlib.pyplot as plt

    from course_lib.attention import plot_attention

    if weights.dim() == 2:
        weights = weights[None, None]
    sizes = check_shape(weights, "L h T S", name="weights")
    L, h, T, S = (sizes[k] for k in ("L", "h", "T", "S"))
    if len(src_labels) != S or len(tgt_labels) != T:
        raise ValueError(f"expected {S} source labels and {T} target labels, got {len(src_labels)} and {len(tgt_labels)}")
    layer_names = layer_names or [f"layer {i + 1}" for i in range(L)]
    head_names = head_names or [f"head {j + 1}" for j in range(h)]
    panel_w, panel_h = 0.32 * S + 1.1, 0.3 * T + 1.0
    fig, axes = plt.subplots(L, h, figsize=(panel_w * h + 0.6, panel_h * L + 0.6), squeeze=False)
    for i in range(L):
        for j in range(h):
            ax = axes[i, j]
            plot_attention(weights[i, j], list(tgt_labels), list(src_labels), ax=ax, colorbar=False,
                           annotate=False, title=f"{layer_names[i]}, {head_names[j]}",
                           xlabel="source" if i == L - 1 else "", ylabel="output" if j == 0 else "")
            if j:
                ax.set_yticklabels([])
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


#: From sequence-to-sequence models to pre-trained Transformers: (year as a decimal of its first public
#: version, authors, title, what it brought). Used by :func:`plot_timeline`.
MILESTONES: tuple[tuple[float, str, str, str], ...] = (
    (2014.69, "Sutskever, Vinyals & Le 2014", "Sequence to sequence learning with neural networks",
     "encoder–decoder LSTMs: the whole source\nsqueezed into one vector"),
    (2014.67, "Bahdanau, Cho & Bengio 2014/15", "Neural machine translation by jointly learning to align and translate",
     "additive attention: the decoder looks\nback at every source position"),
    (2015.60, "Luong, Pham & Manning 2015", "Effective approaches to attention-based neural machine translation",
     "dot-product (multiplicative)\nand local attention"),
    (2017.45, "Vaswani et al. 2017", "Attention is all you need",
     "the Transformer: attention only,\nno recurrence; encoder–decoder"),
    (2018.45, "Radford et al. 2018", "Improving language understanding by generative pre-training",
     "GPT: a decoder-only Transformer,\npre-trained to predict the next token"),
    (2018.78, "Devlin et al. 2018", "BERT: pre-training of deep bidirectional transformers",
     "BERT: an encoder-only Transformer,\npre-trained to fill in masked words"),
)


def plot_timeline(ax=None):
    """The milestones from sequence-to-sequence learning (2014) to GPT and BERT (2018) on a time axis.

    Returns:
        The matplotlib Axes.
    """
    import matplotlib.pyplot as plt

    from course_lib.plotting import PALETTE

    if ax is None:
        _, ax = plt.subplots(figsize=(13, 4.2))
    levels = (2.2, -2.3, 2.2, -2.3, 2.2, -2.3)
    shifts = (-0.5, -0.1, 0.45, 0.0, -0.2, 0.25)  # keep neighbouring labels apart
    ax.axhline(0, color="#444444", lw=1.5, zorder=1)
    for (year, who, title, what), level, shift, colour in zip(sorted(MILESTONES), levels, shifts, PALETTE):
        ax.plot([year, year + shift], [0, level * 0.8], color=colour, lw=1.2, zorder=1)
        ax.scatter([year], [0], s=60, color=colour, zorder=2)
        va = "bottom" if level > 0 else "top"
        ax.text(year + shift, level * 0.8 + (0.08 if level > 0 else -0.08), f"{who}\n{what}", ha="center", va=va,
                fontsize=8.8, color="#222222",
                bbox=dict(boxstyle="round,pad=0.3", facecolor="white", edgecolor=colour, linewidth=1.2))
    for year in range(2014, 2020):
        ax.text(year, -0.12, str(year), ha="center", va="top", fontsize=9, color="#555555")
        ax.plot([year, year], [-0.06, 0.06], color="#444444", lw=1)
    ax.set_xlim(2013.6, 2019.4)
    ax.set_ylim(-3.3, 3.3)
    ax.axis("off")
    ax.set_title("From sequence-to-sequence learning to pre-trained Transformers (first public versions)",
                 fontsize=12)
    return ax
