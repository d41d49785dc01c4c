"""The pieces of a transformer block: normalisation, the feed-forward network, the encoder block.

Shapes: every module maps (B, T, d_model) -> (B, T, d_model).

``norm_first=False`` is the original "post-LN" block of Vaswani et al. (2017),
``x = norm(x + sublayer(x))``; ``norm_first=True`` is "pre-LN", ``x = x + sublayer(norm(x))``,
which trains more stably in deep stacks (Xiong et al., 2020).
"""
from __future__ import annotations

import torch
from torch import nn

from course_lib.multihead import MultiHeadAttention
from course_lib.shapes import check_shape

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU}


class RMSNorm(nn.Module):
    """Root-mean-square normalisation (Zhang & Sennrich, 2019): x / rms(x) * gain, no centring, no bias."""

    def __init__(self, d_model: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d_model))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_shape(x, "... d_model", name="x", d_model=self.weight.shape[0])
        rms = torch.sqrt(x.pow(2).mean(dim=-1, keepdim=True) + self.eps)
        return x / rms * self.weight


class FeedForward(nn.Module):
    """Position-wise feed-forward network: Linear(d_model, d_ff) -> activation -> dropout -> Linear(d_ff, d_model)."""

    def __init__(self, d_model: int, d_ff: int, dropout: float = 0.0, activation: str = "relu"):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        self.linear1 = nn.Linear(d_model, d_ff)
        self.activation = ACTIVATIONS[activation]()
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(d_ff, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear2(self.dropout(self.activation(self.linear1(x))))


class EncoderBlock(nn.Module):
    """Self-attention and feed-forward, each with a residual connection and layer norm.

    ``forward(x (B, T, d_model), mask=None) -> (B, T, d_model)``; the mask (bool, True = may
    attend) is typically a padding mask of shape (B, 1, 1, T).
    """

    def __init__(self, d_model: int, h: int, d_ff: int, dropout: float = 0.1, activation: str = "relu",
                 norm_first: bool = False, eps: float = 1e-5):
        super().__init__()
        self.norm_first = norm_first
        self.self_attn = MultiHeadAttention(d_model, h, dropout)
        self.ff = FeedForward(d_model, d_ff, dropout, activation)
        self.norm1 = nn.LayerNorm(d_model, eps=eps)
        self.norm2 = nn.LayerNorm(d_model, eps=eps)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.attention_weights: torch.Tensor | None = None  # (B, h, T, T) of the last call

    def _sa(self, x, mask):
        out, self.attention_weights = self.self_attn(x, mask=mask)
        return self.dropout1(out)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        check_shape(x, "B T d_model", name="x", d_model=self.norm1.normalized_shape[0])
        if self.norm_first:
            x = x + self._sa(self.norm1(x), mask)
            return x + self.dropout2(self.ff(self.norm2(x)))
        x = self.norm1(x + self._sa(x, mask))
        return self.norm2(x + self.dropout2(self.ff(x)))

    @torch.no_grad()
    def load_from_torch(self, layer: nn.TransformerEncoderLayer) -> "EncoderBlock":
        """Copy the weights of a ``torch.nn.TransformerEncoderLayer`` with the same sizes."""
        self.self_attn.load_from_torch(layer.self_attn)
        _copy_linear_norms(self, layer, ("norm1", "norm2"))
        return self


def _copy_linear_norms(ours: nn.Module, theirs: nn.Module, norms: tuple[str, ...]) -> None:
    ours.ff.linear1.load_state_dict(theirs.linear1.state_dict())
    ours.ff.linear2.load_state_dict(theirs.linear2.state_dict())
    for name in norms:
        getattr(ours, name).load_state_dict(getattr(theirs, name).state_dict())
