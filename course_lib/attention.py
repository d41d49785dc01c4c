"""Scaled dot-product attention, the final version that notebooks 04-13 build on.

Shapes (any number of leading batch axes ``...``, e.g. ``B`` or ``B, h``):

    q: (..., T_q, d_k)    k: (..., T_k, d_k)    v: (..., T_k, d_v)
    mask: broadcastable to (..., T_q, T_k)
    weights: (..., T_q, T_k)   output: (..., T_q, d_v)

Masks follow PyTorch's ``scaled_dot_product_attention``: a **bool** mask is True where a
query *may* attend to a key; a **float** mask is *added* to the scores (0 to keep, -inf to
block). A query whose keys are all blocked gets zero weights and a zero output, as in
PyTorch, instead of the NaN that a plain softmax over a row of -inf would give.

:class:`SingleHeadAttention` (notebook 04) adds the learned projections: queries, keys and
values computed from token vectors by ``W_Q``, ``W_K`` and ``W_V``, for self-attention or, with a
``context``, cross-attention.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

from course_lib.shapes import check_shape


def check_attention_inputs(**tensors) -> None:
    """Refuse what matrix products would turn into a raw torch error or a wrong answer.

    Each keyword names one input, e.g. ``check_attention_inputs(q=q, k=k)``. Every input must be
    a floating ``torch.Tensor`` (a NumPy array is refused with the conversion to use), and all of
    them must share one dtype and one device. Under ``torch.autocast`` mixed dtypes are allowed,
    since autocast casts them itself.

    Raises:
        TypeError: an input is not a tensor, not floating point, or the dtypes differ.
        ValueError: the inputs lie on different devices.
    """
    for name, x in tensors.items():
        if isinstance(x, np.ndarray):
            raise TypeError(f"{name}: expected a torch.Tensor, got a NumPy array of shape {x.shape} and dtype "
                            f"{x.dtype}; convert it with torch.from_numpy({name}) (or torch.as_tensor)")
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name}: expected a float torch.Tensor, got {type(x).__name__}")
        if not x.is_floating_point():
            advice = (" (token ids go through an nn.Embedding first)" if not x.is_complex() and x.dtype != torch.bool
                      else "")
            raise TypeError(f"{name}: expected a float dtype (such as torch.float32), got {x.dtype}{advice}")
    items = list(tensors.items())
    (first, x0), rest = items[0], items[1:]
    for name, x in rest:
        if x.device != x0.device:
            raise ValueError(f"{first} is on {x0.device} but {name} is on {x.device}: move them to one device, "
                             f"e.g. {name}.to({first}.device)")
    if torch.is_autocast_enabled(x0.device.type):
        return
    for name, x in rest:
        if x.dtype != x0.dtype:
            raise TypeError(f"{first} has dtype {x0.dtype} but {name} has {x.dtype}: attention needs one dtype, "
                            f"e.g. {name}.to({first}.dtype)")


def check_module_input(module: torch.nn.Module, **tensors) -> None:
    """Each input must be a float tensor of the module's own dtype and device, named in the error.

    Without this, integer token ids or a float16 input meet float32 weights inside ``nn.Linear`` and
    fail with torch's "mat1 and mat2 must have the same dtype".
    """
    weight = next(module.parameters())
    check_attention_inputs(**tensors)
    for name, x in tensors.items():
        if x.dtype != weight.dtype and not torch.is_autocast_enabled(x.device.type):
            raise TypeError(f"{name}: expected {weight.dtype}, the dtype of {type(module).__name__}'s weights, "
                            f"got {x.dtype}; convert the input with {name}.to({weight.dtype}) or the module "
                            f"with .to({x.dtype})")
        if x.device != weight.device:
            raise ValueError(f"{name} is on {x.device} but {type(module).__name__}'s weights are on "
                             f"{weight.device}: move one of them, e.g. {name}.to({str(weight.device)!r})")


def refuse_ambiguous_mask(mask: torch.Tensor, scores_shape, mask_name: str = "mask") -> None:
    """Refuse a mask whose first axis could be the batch axis but would broadcast onto another one.

    Broadcasting lines shapes up from the right. A padding mask ``(B, T_k)`` given with scores
    ``(B, T_q, T_k)`` lines ``B`` up with ``T_q``: when ``B == T_q`` no error comes and every
    query of sentence ``b`` gets the padding of sentence ``b``'s *query position* instead. The
    same shape could be a real ``(T_q, T_k)`` mask, so the shape alone cannot tell: this raises
    a ValueError that shows both shapes to use instead.
    """
    scores_shape = tuple(scores_shape)
    if mask.dim() >= len(scores_shape) or len(scores_shape) < 3 or mask.dim() < 2:
        return
    B, lead = scores_shape[0], mask.shape[0]
    if lead > 1 and lead == B:
        axis = len(scores_shape) - mask.dim()  # the scores axis that mask's first axis lines up with
        rest = tuple(mask.shape[1:])
        per_batch = (lead,) + (1,) * axis + rest
        shared = (1,) * axis + tuple(mask.shape)
        raise ValueError(
            f"{mask_name} of shape {tuple(mask.shape)} is ambiguous with scores of shape {scores_shape}: "
            f"broadcasting lines its first axis ({lead}) up with scores axis {axis} (size {scores_shape[axis]}), "
            f"not with the batch axis (size {B}). If it holds one row per sentence (a padding mask (B, T_k)), "
            f"pass {mask_name}[:{', None' * axis}] of shape {per_batch}; if the whole batch shares it, pass "
            f"{mask_name}[{', '.join(['None'] * axis)}] of shape {shared}")


def check_mask(mask: torch.Tensor, scores_shape, device) -> torch.Tensor:
    """A bool or float mask that fits scores of ``scores_shape`` (..., T_q, T_k) on ``device``.

    It must broadcast to the scores' shape without enlarging it, lie on the same device, and not be
    ambiguous (:func:`refuse_ambiguous_mask`); otherwise a clear error says what came.
    """
    scores_shape = tuple(scores_shape)
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"mask: expected a bool or float tensor broadcastable to {scores_shape}, "
                        f"got {type(mask).__name__}")
    if mask.dtype != torch.bool and not mask.is_floating_point():
        raise TypeError(f"mask: expected dtype bool (True = may attend) or a float additive mask, got {mask.dtype}; "
                        "convert a 0/1 mask with mask.bool()")
    if mask.device != torch.device(device):
        raise ValueError(f"mask is on {mask.device} but q and k are on {device}: "
                         f"use mask.to({str(device)!r})")
    try:
        torch.broadcast_shapes(mask.shape, scores_shape)
    except RuntimeError:
        raise ValueError(f"mask of shape {tuple(mask.shape)} does not broadcast to the scores' shape "
                         f"{scores_shape} = (..., T_q, T_k)") from None
    if torch.broadcast_shapes(mask.shape, scores_shape) != scores_shape:
        raise ValueError(f"mask of shape {tuple(mask.shape)} would enlarge the scores' shape {scores_shape}")
    refuse_ambiguous_mask(mask, scores_shape)
    return mask


def attention_scores(q: torch.Tensor, k: torch.Tensor, scale: float | None = None) -> torch.Tensor:
    """Scores ``(q * scale) @ k^T``; ``scale`` defaults to 1/sqrt(d_k).

    The scale is applied to ``q`` *before* the product, as PyTorch's
    ``scaled_dot_product_attention`` does: the product of large queries and keys may overflow
    in half precision (float16 ends at 65504) although the scaled scores are finite.

    Args:
        q: (..., T_q, d_k). k: (..., T_k, d_k).

    Returns:
        (..., T_q, T_k): row i holds query i's score against every key.
    """
    check_attention_inputs(q=q, k=k)
    sizes = check_shape(q, "... T_q d_k", name="q", dtype="float")
    check_shape(k, "... T_k d_k", name="k", dtype="float", d_k=sizes["d_k"])
    if scale is None:
        scale = 1.0 / math.sqrt(sizes["d_k"])
    return (q * scale) @ k.transpose(-2, -1)


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
        mask = check_mask(mask, scores.shape, scores.device)
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
    check_attention_inputs(q=q, k=k, v=v)
    sizes = check_shape(k, "... T_k d_k", name="k", dtype="float")
    check_shape(v, "... T_k d_v", name="v", dtype="float", T_k=sizes["T_k"])
    weights = attention_weights(q, k, mask, scale)
    try:
        torch.broadcast_shapes(weights.shape[:-2], v.shape[:-2])
    except RuntimeError:
        raise ValueError(f"batch axes of q/k {tuple(weights.shape[:-2])} and v {tuple(v.shape[:-2])} "
                         "do not broadcast") from None
    return weights @ v, weights


def resolve_labels(sizes: dict[str, int], query_labels: Sequence[str] | None,
                   key_labels: Sequence[str] | None) -> Sequence[str] | None:
    """Check row/column labels of a (T_q, T_k) matrix; keys default to the queries' labels when square.

    Returns the key labels to use. Raises ValueError naming the axis whose label count is wrong.
    """
    if key_labels is None and query_labels is not None and sizes["T_q"] == sizes["T_k"]:
        key_labels = query_labels
    for labels, axis in ((query_labels, "T_q"), (key_labels, "T_k")):
        if labels is not None and len(labels) != sizes[axis]:
            raise ValueError(f"expected {sizes[axis]} labels for {axis}, got {len(labels)}")
    return key_labels


def plot_attention(weights: torch.Tensor, query_labels: Sequence[str] | None = None,
                   key_labels: Sequence[str] | None = None, ax=None, title: str | None = None,
                   annotate: bool | None = None, cmap: str = "Blues", colorbar: bool = True,
                   xlabel: str = "key (attended to)", ylabel: str = "query (attending)"):
    """Heatmap of one attention matrix: a row per query, a column per key.

    Args:
        weights: (T_q, T_k), e.g. ``weights[0]`` or ``weights[b, head]`` of a batch.
        query_labels: T_q tokens for the rows; key_labels: T_k tokens for the columns
            (defaults to ``query_labels`` for self-attention when the sizes match).
        annotate: write each weight in its cell; by default when the matrix is at most 12 × 12.
        colorbar: draw the colour scale next to the map (leave it out in a row of small maps).
        xlabel, ylabel: axis labels, e.g. ``"German word (key)"`` for cross-attention.

    Returns:
        The matplotlib Axes.
    """
    import matplotlib.pyplot as plt

    sizes = check_shape(weights, "T_q T_k", name="weights")
    w = weights.detach().float().cpu()
    key_labels = resolve_labels(sizes, query_labels, key_labels)
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
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
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
    if colorbar:
        ax.figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="weight")
    return ax


# --- learned projections (notebook 04) ----------------------------------------------------------------

class SingleHeadAttention(torch.nn.Module):
    """One attention head with learned projections W_Q, W_K and W_V (no bias, no output projection).

    Each token vector of width ``d_model`` is projected three ways: its query ``x W_Q`` (what it
    looks for), its key ``x W_K`` (what it offers to be found by) and its value ``x W_V`` (what it
    hands over). Then :func:`scaled_dot_product_attention` combines them.

    Args:
        d_model: width of the input token vectors.
        d_k: width of queries and keys.
        d_v: width of values, and of the output (default ``d_k``).
        share_qk: use one projection for queries and keys (``W_K = W_Q``); the score matrix
            is then symmetric. Notebook 04 shows what this cannot learn.
        bias: give each projection a bias (the course's heads have none).

    The projections are ``nn.Linear`` layers ``w_q``, ``w_k`` (None when ``share_qk``) and
    ``w_v``. ``nn.Linear`` stores its weight as ``(d_out, d_in)`` and computes ``x @ weight.T``;
    the properties :attr:`W_Q`, :attr:`W_K`, :attr:`W_V` give the matrices the course's way
    round, ``(d_model, d_k)``, so that ``q = x @ W_Q``.
    """

    def __init__(self, d_model: int, d_k: int, d_v: int | None = None, share_qk: bool = False,
                 bias: bool = False):
        super().__init__()
        d_v = d_k if d_v is None else d_v
        for name, value in (("d_model", d_model), ("d_k", d_k), ("d_v", d_v)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        self.d_model, self.d_k, self.d_v, self.share_qk = d_model, d_k, d_v, bool(share_qk)
        self.w_q = torch.nn.Linear(d_model, d_k, bias=bias)
        self.w_k = None if self.share_qk else torch.nn.Linear(d_model, d_k, bias=bias)
        self.w_v = torch.nn.Linear(d_model, d_v, bias=bias)

    @property
    def W_Q(self) -> torch.Tensor:
        """The query projection as a ``(d_model, d_k)`` matrix: ``q = x @ W_Q`` (plus the bias, if any)."""
        return self.w_q.weight.T

    @property
    def W_K(self) -> torch.Tensor:
        """The key projection, ``(d_model, d_k)``; the same tensor as :attr:`W_Q` when ``share_qk``."""
        return self.w_q.weight.T if self.share_qk else self.w_k.weight.T

    @property
    def W_V(self) -> torch.Tensor:
        """The value projection, ``(d_model, d_v)``."""
        return self.w_v.weight.T

    def project(self, x: torch.Tensor, context: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries from ``x``, keys and values from ``context`` (``x`` itself when None).

        Args:
            x: (..., T_q, d_model). context: (..., T_k, d_model) or None.

        Returns:
            ``(q, k, v)``: (..., T_q, d_k), (..., T_k, d_k), (..., T_k, d_v).
        """
        check_module_input(self, x=x) if context is None else check_module_input(self, x=x, context=context)
        check_shape(x, "... T_q d_model", name="x", dtype="float", d_model=self.d_model)
        if context is None:
            context = x
        else:
            check_shape(context, "... T_k d_model", name="context", dtype="float", d_model=self.d_model)
        q = self.w_q(x)
        k = self.w_q(context) if self.share_qk else self.w_k(context)
        return q, k, self.w_v(context)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None,
                mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Self-attention (``context=None``) or cross-attention (queries from ``x``, keys and values from ``context``).

        Args:
            x: (..., T_q, d_model), the tokens that ask.
            context: (..., T_k, d_model), the tokens that are read; None means ``x`` (self-attention).
            mask: see :func:`attention_weights`, broadcastable to (..., T_q, T_k).

        Returns:
            ``(output, weights)``: output (..., T_q, d_v) and weights (..., T_q, T_k).
        """
        q, k, v = self.project(x, context)
        return scaled_dot_product_attention(q, k, v, mask=mask)

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, d_k={self.d_k}, d_v={self.d_v}, share_qk={self.share_qk}"
