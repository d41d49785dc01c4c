"""Multi-head attention: h scaled dot-product attentions side by side, then mixed by W_O.

Shapes, with d_k = d_model / h:

    x: (B, T, d_model)  --W_Q-->  (B, T, d_model)  --split_heads-->  (B, h, T, d_k)
    attention per head: (B, h, T_q, d_k) x (B, h, T_k, d_k) -> (B, h, T_q, d_k)
    merge_heads: (B, h, T_q, d_k) -> (B, T_q, d_model)  --W_O-->  (B, T_q, d_model)

Masks follow course_lib.attention: bool True = may attend (or float, added to the
scores), broadcastable to (B, h, T_q, T_k); a padding mask (B, 1, 1, T_k) or a causal mask
(T_q, T_k) both broadcast.
"""
from __future__ import annotations

import torch
from torch import nn

from course_lib.attention import attention_weights
from course_lib.shapes import check_shape


def split_heads(x: torch.Tensor, h: int) -> torch.Tensor:
    """(B, T, d_model) -> (B, h, T, d_k): head i gets columns i*d_k ... (i+1)*d_k - 1."""
    sizes = check_shape(x, "B T d_model", name="x")
    if not isinstance(h, int) or h < 1 or sizes["d_model"] % h:
        raise ValueError(f"h must be a positive int that divides d_model={sizes['d_model']}, got h={h!r}")
    B, T, d_model = x.shape
    return x.reshape(B, T, h, d_model // h).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, h, T, d_k) -> (B, T, h * d_k): the inverse of :func:`split_heads`."""
    check_shape(x, "B h T d_k", name="x")
    B, h, T, d_k = x.shape
    return x.transpose(1, 2).reshape(B, T, h * d_k)


class MultiHeadAttention(nn.Module):
    """Multi-head attention with projections W_Q, W_K, W_V, W_O (each d_model x d_model, with bias).

    Same parameters and FLOPs as one full-width head: the heads split d_model, they do
    not multiply it. ``forward(query, key=None, value=None, mask=None)`` returns
    ``(output (B, T_q, d_model), weights (B, h, T_q, T_k))``; ``key``/``value`` default to
    ``query`` (self-attention); pass the encoder output as both for cross-attention.
    """

    def __init__(self, d_model: int, h: int, dropout: float = 0.0, bias: bool = True):
        super().__init__()
        if not isinstance(d_model, int) or not isinstance(h, int) or d_model < 1 or h < 1 or d_model % h:
            raise ValueError(f"d_model must be divisible by h (both positive ints), got d_model={d_model!r}, h={h!r}")
        self.d_model, self.h, self.d_k = d_model, h, d_model // h
        self.w_q = nn.Linear(d_model, d_model, bias=bias)
        self.w_k = nn.Linear(d_model, d_model, bias=bias)
        self.w_v = nn.Linear(d_model, d_model, bias=bias)
        self.w_o = nn.Linear(d_model, d_model, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, query: torch.Tensor, key: torch.Tensor | None = None, value: torch.Tensor | None = None,
                mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        key = query if key is None else key
        value = key if value is None else value
        sizes = check_shape(query, "B T_q d_model", name="query", d_model=self.d_model)
        check_shape(key, "B T_k d_model", name="key", B=sizes["B"], d_model=self.d_model)
        check_shape(value, "B T_k d_model", name="value", B=sizes["B"], d_model=self.d_model, T_k=key.shape[1])
        q = split_heads(self.w_q(query), self.h)  # (B, h, T_q, d_k)
        k = split_heads(self.w_k(key), self.h)  # (B, h, T_k, d_k)
        v = split_heads(self.w_v(value), self.h)  # (B, h, T_k, d_k)
        if mask is not None and mask.dim() == 3:  # (B, T_q or 1, T_k): add the head axis
            mask = mask.unsqueeze(1)
        weights = attention_weights(q, k, mask=mask)  # (B, h, T_q, T_k)
        out = self.dropout(weights) @ v  # (B, h, T_q, d_k)
        return self.w_o(merge_heads(out)), weights

    @torch.no_grad()
    def load_from_torch(self, mha: nn.MultiheadAttention) -> "MultiHeadAttention":
        """Copy the weights of a ``torch.nn.MultiheadAttention`` (same d_model and heads)."""
        if mha.embed_dim != self.d_model or mha.num_heads != self.h:
            raise ValueError(f"expected nn.MultiheadAttention({self.d_model}, {self.h}), "
                             f"got ({mha.embed_dim}, {mha.num_heads})")
        if not mha._qkv_same_embed_dim:
            raise ValueError("only nn.MultiheadAttention with kdim = vdim = embed_dim is supported")
        for i, linear in enumerate((self.w_q, self.w_k, self.w_v)):
            linear.weight.copy_(mha.in_proj_weight[i * self.d_model:(i + 1) * self.d_model])
            if linear.bias is not None:
                linear.bias.copy_(mha.in_proj_bias[i * self.d_model:(i + 1) * self.d_model])
        self.w_o.weight.copy_(mha.out_proj.weight)
        if self.w_o.bias is not None:
            self.w_o.bias.copy_(mha.out_proj.bias)
        return self
