"""What a key–value cache keeps between decoding steps, and how big it is (notebook 12).

Generating one token at a time, step t needs the logits of the last position only. Without a
cache the decoder runs the whole prefix again at every step, although two things do not change:

- in self-attention, the keys and values of the earlier positions (the causal mask stops them from
  looking ahead, so appending a token leaves them as they were);
- in cross-attention, the keys and values of the encoder's memory (the source does not change).

The cache keeps both, and the model's own modules use it: :class:`AttentionCache` is passed to
:meth:`course_lib.multihead.MultiHeadAttention.forward`, a :class:`LayerCache` to
:meth:`course_lib.transformer.DecoderBlock.forward`, and a :class:`KVCache` (one
:class:`LayerCache` per decoder layer) to :meth:`course_lib.transformer.Seq2SeqTransformer.decode`,
which then takes only the new tokens. This module holds the containers and no model code, so
decoding with a cache runs the very ``forward`` that training runs. Shapes, with B rows
(sentences, or sentences x beams), h heads, d_k = d_model / h, t positions fed so far and S source
positions:

    per decoder layer:  self-attention keys, values  (B, h, t, d_k)   one position more per step
                        cross-attention keys, values (B, h, S, d_k)   computed at the first step

:func:`kv_cache_bytes` gives a full cache's size from the model's sizes (notebooks 12 and 14).
:class:`course_lib.decoding.IncrementalDecoder` drives a model one token at a time with a cache.
"""
from __future__ import annotations

import torch

from course_lib.masking import causal_mask
from course_lib.shapes import check_int, check_shape

KINDS = ("self", "cross", "all")


def _check_indices(indices: torch.Tensor, rows: int) -> None:
    check_shape(indices, "N", name="indices", dtype="int")
    if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= rows):
        raise IndexError(f"indices must lie in [0, {rows}) (the cache holds {rows} rows), got values "
                         f"from {int(indices.min())} to {int(indices.max())}")


class AttentionCache:
    """The keys and values one attention module keeps between calls, heads already split.

    Two kinds:

    - ``fixed=False`` (self-attention): every call appends the keys and values of its new positions,
      so ``k`` and ``v`` grow along the position axis, one position per decoding step;
    - ``fixed=True`` (cross-attention): the first call stores the keys and values of the encoder's
      memory; later calls reuse them without projecting the memory again.

    Attributes:
        k, v: (B, h, t, d_k) each; None until the first call.
        fixed: which of the two kinds.
    """

    def __init__(self, fixed: bool = False):
        if not isinstance(fixed, bool):
            raise TypeError(f"fixed must be True (cross-attention) or False (self-attention), got {fixed!r}")
        self.fixed = fixed
        self.k: torch.Tensor | None = None
        self.v: torch.Tensor | None = None

    @property
    def is_empty(self) -> bool:
        """True before the first call."""
        return self.k is None

    @property
    def length(self) -> int:
        """t: the number of positions held (0 before the first call)."""
        return 0 if self.k is None else self.k.shape[2]

    def add(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keep new keys and values ``(B, h, T_new, d_k)``; return everything held, ``(B, h, t + T_new, d_k)`` each.

        A fixed cache that holds keys already refuses: its keys are the memory's, computed once.
        """
        sizes = check_shape(k, "B h T_new d_k", name="k", dtype="float")
        check_shape(v, "B h T_new d_k", name="v", dtype="float", **sizes)
        if self.k is None:
            self.k, self.v = k, v
        elif self.fixed:
            raise RuntimeError("this cross-attention cache holds the memory's keys and values already; "
                               "they are reused, not added to")
        else:
            check_shape(k, "B h T_new d_k", name="k", B=self.k.shape[0], h=self.k.shape[1], d_k=self.k.shape[3])
            self.k = torch.cat([self.k, k], dim=2)
            self.v = torch.cat([self.v, v], dim=2)
        return self.k, self.v

    def reorder(self, indices: torch.Tensor) -> None:
        """Keep rows ``indices (N,)``, in that order (N may differ from B; rows may repeat)."""
        if self.k is not None:
            _check_indices(indices, self.k.shape[0])
            indices = indices.to(self.k.device)
            self.k, self.v = self.k[indices], self.v[indices]

    @property
    def nbytes(self) -> int:
        """Bytes held by the keys and values."""
        return 0 if self.k is None else self.k.nbytes + self.v.nbytes


class LayerCache:
    """What one decoder layer keeps: its self-attention's and its cross-attention's :class:`AttentionCache`."""

    def __init__(self):
        self.self_attn = AttentionCache(fixed=False)
        self.cross_attn = AttentionCache(fixed=True)

    def reorder(self, indices: torch.Tensor) -> None:
        self.self_attn.reorder(indices)
        self.cross_attn.reorder(indices)


class KVCache:
    """A decoder's whole cache: one :class:`LayerCache` per layer, and which fed positions are real tokens.

    Attributes:
        layers: one :class:`LayerCache` per decoder layer.
        keep: (B, t) bool, True where the token fed at that position is not padding: padded
            positions are blocked as keys, as ``Seq2SeqTransformer.target_mask`` blocks them.
    """

    def __init__(self, num_layers: int, batch_size: int, device: torch.device | str | None = None):
        num_layers, batch_size = check_int(num_layers, "num_layers", 1), check_int(batch_size, "batch_size", 0)
        self.layers = [LayerCache() for _ in range(num_layers)]
        self.keep = torch.zeros(batch_size, 0, dtype=torch.bool, device=device)

    @property
    def batch_size(self) -> int:
        """B: the number of rows (sentences or hypotheses)."""
        return self.keep.shape[0]

    @property
    def length(self) -> int:
        """t: the number of target positions fed so far (the position of the next one)."""
        return self.keep.shape[1]

    @property
    def source_length(self) -> int:
        """S: the number of source positions whose keys are held (0 before the first step)."""
        return self.layers[0].cross_attn.length

    def add_positions(self, keep: torch.Tensor) -> torch.Tensor:
        """Record T new positions (``keep (B, T)``: True at real tokens); return their self-attention mask.

        Returns:
            (B, 1, T, t + T) bool: new position i (at t + i) may attend to every position up to its
            own that holds a real token (``causal_mask(T, start=t)`` and the padding mask).
        """
        check_shape(keep, "B T", name="keep", dtype="bool", B=self.batch_size)
        t, T = self.length, keep.shape[1]
        self.keep = torch.cat([self.keep, keep.to(self.keep.device)], dim=1)  # (B, t + T)
        return causal_mask(T, device=self.keep.device, start=t) & self.keep[:, None, None, :]

    def reorder(self, indices: torch.Tensor) -> None:
        """Keep rows ``indices (N,)`` of everything, in that order, e.g. the parents of beam search's hypotheses.

        Rows may repeat (``torch.arange(B).repeat_interleave(K)`` makes K copies of each sentence).
        """
        _check_indices(indices, self.batch_size)
        indices = indices.to(self.keep.device)
        for layer in self.layers:
            layer.reorder(indices)
        self.keep = self.keep[indices]

    def nbytes(self, kind: str = "all") -> int:
        """Bytes held by the cached keys and values: ``kind`` "self", "cross" or "all" (the mask not counted)."""
        if kind not in KINDS:
            raise ValueError(f"kind must be 'self', 'cross' or 'all', got {kind!r}")
        total = 0
        for layer in self.layers:
            if kind in ("self", "all"):
                total += layer.self_attn.nbytes
            if kind in ("cross", "all"):
                total += layer.cross_attn.nbytes
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
