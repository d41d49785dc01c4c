"""Scaled dot-product attention, the final version that notebooks 04-13 build on.

Shapes (any number of leading batch axes ``...``, e.g. ``B`` or ``B, h``):

    q: (..., T_q, d_k)    k: (..., T_k, d_k)    v: (..., T_k, d_v)
    mask: broadcastable to (..., T_q, T_k)
    weights: (..., T_q, T_k)   output: (..., T_q, d_v)

Masks follow PyTorch's ``scaled_dot_product_attention``: a **bool** mask is True where a
query *may* attend to a key; a **float** mask is *added* to the scores (0 to keep, -inf to
block). A query whose keys are all blocked gets zero weights and a zero output, as in
PyTorch, instead of the NaN that a plain softmax over a row of -inf would give.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

from course_lib.shapes import check_shape


def _check_mask(mask: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"mask: expected a bool or float tensor broadcastable to {tuple(scores.shape)}, "
                        f"got {type(mask).__name__}")
    if mask.dtype != torch.bool and not mask.is_floating_point():
        raise TypeError(f"mask: expected dtype bool (True = may attend) or a float additive mask, got {mask.dtype}; "
                        "convert a 0/1 mask with mask.bool()")
    try:
        torch.broadcast_shapes(mask.shape, scores.shape)
    except RuntimeError:
        raise ValueError(f"mask of shape {tuple(mask.shape)} does not broadcast to the scores' shape "
                         f"{tuple(scores.shape)} = (..., T_q, T_k)") from None
    if torch.broadcast_shapes(mask.shape, scores.shape) != scores.shape:
        raise ValueError(f"mask of shape {tuple(mask.shape)} would enlarge the scores' shape {tuple(scores.shape)}")
    return mask


def attention_scores(q: torch.Tensor, k: torch.Tensor, scale: float | None = None) -> torch.Tensor:
    """Scores ``q @ k^T * scale``; ``scale`` defaults to 1/sqrt(d_k).

    Args:
        q: (..., T_q, d_k). k: (..., T_k, d_k).

    Returns:
        (..., T_q, T_k): row i holds query i's score against every key.
    """
    sizes = check_shape(q, "... T_q d_k", name="q", dtype="float")
    check_shape(k, "... T_k d_k", name="k", dtype="float", d_k=sizes["d_k"])
    if scale is None:
        scale = 1.0 / math.sqrt(sizes["d_k"])
    return (q @ k.transpose(-2, -1)) * scale


def attention_weights(q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor | None = None,
                      scale: float | None = None) -> torch.Tensor:
    """Softmax of the (masked) scores over the keys.

    Args:
        q: (..., T_q, d_k). k: (..., T_k, d_k).
        mask: None, bool (True = may attend) or float (added to the scores), broadcastable
            to (..., T_q, T_k).
        scale: multiplies the scores; None means 1/sqrt(d_k).

    Returns:
        (..., T_q, T_k), each row summing to 1, or to 0 for a query with every key blocked.
    """
    scores = attention_scores(q, k, scale)
    if mask is not None:
        mask = _check_mask(mask, scores)
        if mask.dtype == torch.bool:
            scores = scores.masked_fill(~mask, float("-inf"))
        else:
            scores = scores + mask.to(scores.dtype)
    blocked = torch.isneginf(scores).all(dim=-1, keepdim=True)  # rows with nothing to attend to
    weights = torch.softmax(scores.masked_fill(blocked, 0.0), dim=-1)
    return weights.masked_fill(blocked, 0.0)


def scaled_dot_product_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                                 mask: torch.Tensor | None = None,
                                 scale: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``softmax(q k^T / sqrt(d_k) + mask) v`` (Vaswani et al., 2017).

    Args:
        q: (..., T_q, d_k). k: (..., T_k, d_k). v: (..., T_k, d_v).
        mask: see :func:`attention_weights`.
        scale: None means 1/sqrt(d_k).

    Returns:
        ``(output, weights)``: output (..., T_q, d_v) and weights (..., T_q, T_k).
    """
    sizes = check_shape(k, "... T_k d_k", name="k", dtype="float")
    check_shape(v, "... T_k d_v", name="v", dtype="float", T_k=sizes["T_k"])
    weights = attention_weights(q, k, mask, scale)
    try:
        torch.broadcast_shapes(weights.shape[:-2], v.shape[:-2])
    except RuntimeError:
        raise ValueError(f"batch axes of q/k {tuple(weights.shape[:-2])} and v {tuple(v.shape[:-2])} "
                         "do not broadcast") from None
    return weights @ v, weights


def plot_attention(weights: torch.Tensor, query_labels: Sequence[str] | None = None,
                   key_labels: Sequence[str] | None = None, ax=None, title: str | None = None,
                   annotate: bool | None = None, cmap: str = "Blues"):
    """Heatmap of one attention matrix: a row per query, a column per key.

    Args:
        weights: (T_q, T_k), e.g. ``weights[0]`` or ``weights[b, head]`` of a batch.
        query_labels: T_q tokens for the rows; key_labels: T_k tokens for the columns
            (defaults to ``query_labels`` for self-attention when the sizes match).
        annotate: write each weight in its cell; by default when the matrix is at most 12 × 12.

    Returns:
        The matplotlib Axes.
    """
    import matplotlib.pyplot as plt

    sizes = check_shape(weights, "T_q T_k", name="weights")
    w = weights.detach().float().cpu()
    if key_labels is None and query_labels is not None and sizes["T_q"] == sizes["T_k"]:
        key_labels = query_labels
    for labels, axis in ((query_labels, "T_q"), (key_labels, "T_k")):
        if labels is not None and len(labels) != sizes[axis]:
            raise ValueError(f"expected {sizes[axis]} labels for {axis}, got {len(labels)}")
    if ax is None:
        size = (max(3.0, 0.55 * sizes["T_k"] + 1.6), max(2.5, 0.5 * sizes["T_q"] + 1.0))
        _, ax = plt.subplots(figsize=size)
    image = ax.imshow(w.numpy(), cmap=cmap, vmin=0.0, vmax=1.0, aspect="auto")
    ax.grid(False)
    ax.set_xticks(range(sizes["T_k"]))
    ax.set_yticks(range(sizes["T_q"]))
    if key_labels is not None:
        ax.set_xticklabels(key_labels, rotation=45 if max(map(len, key_labels), default=0) > 3 else 0,
                           ha="right" if max(map(len, key_labels), default=0) > 3 else "center")
    if query_labels is not None:
        ax.set_yticklabels(query_labels)
    ax.set_xlabel("key (attended to)")
    ax.set_ylabel("query (attending)")
    if annotate is None:
        annotate = sizes["T_q"] <= 12 and sizes["T_k"] <= 12
    if annotate:
        for i in range(sizes["T_q"]):
            for j in range(sizes["T_k"]):
                value = float(w[i, j])
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=8,
                        color="white" if value > 0.6 else "black")
    if title:
        ax.set_title(title)
    ax.figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="weight")
    return ax
