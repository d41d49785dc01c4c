"""Masks for attention: which keys each query may look at.

Notebook 06 builds each of these step by step; this module holds the final, tested versions.

Convention (PyTorch's, as in :mod:`course_lib.attention` and
``torch.nn.functional.scaled_dot_product_attention``): a **bool** mask is ``True`` where a query
**may attend** to a key and ``False`` where the key is blocked. An **additive** mask is a float
tensor added to the scores: ``0.0`` to keep, ``-inf`` to block. (Beware: ``nn.MultiheadAttention``'s
``key_padding_mask`` and bool ``attn_mask`` use the opposite convention, True = ignore.)

Shapes, with ``B`` sentences of ``T`` tokens, ``h`` heads, ``T_q`` queries and ``T_k`` keys:

- :func:`padding_mask` / :func:`lengths_to_mask`: ``(B, T)``, True at real tokens;
  ``mask[:, None, :]`` is ``(B, 1, T_k)`` for scores ``(B, T_q, T_k)``, and
  ``mask[:, None, None, :]`` is ``(B, 1, 1, T_k)`` for scores with heads ``(B, h, T_q, T_k)``;
- :func:`causal_mask`: ``(T, T)``, True on and below the diagonal (no peeking at later tokens);
- :func:`combine_masks`: logical *and* of bool masks, or the sum of additive masks, broadcast;
- :func:`to_additive` and :func:`to_bool`: convert between the two kinds;
- :func:`masked_softmax`: softmax over the keys that a mask allows; a row with every key blocked
  comes out as **zeros** (not the NaN of a plain softmax over ``-inf``), with finite gradients;
- :func:`pad_sequences`: lists of token ids to one ``(B, T)`` tensor;
- :func:`plot_mask`: a mask drawn as a grid (query rows, key columns).
"""
from __future__ import annotations

from numbers import Integral
from typing import Sequence

import torch

from course_lib.attention import refuse_ambiguous_mask, resolve_labels
from course_lib.shapes import check_int, check_shape

NEG_INF = float("-inf")


# --- validation helpers ----------------------------------------------------------------------------

def _check_bool_mask(mask, name: str = "mask") -> torch.Tensor:
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"{name}: expected a bool tensor (True = may attend), got {type(mask).__name__}")
    if mask.dtype != torch.bool:
        if mask.is_floating_point():
            advice = ("an additive mask (0 = keep, -inf = block) converts with to_bool(mask); "
                      "a 0/1 mask with mask.bool()")
        else:
            advice = "if 1 means 'may attend', convert it with mask.bool(); if 1 means 'ignore', with mask == 0"
        raise TypeError(f"{name}: expected dtype torch.bool (True = may attend), got {mask.dtype}: {advice}")
    return mask


def _broadcast(a_shape, b_shape, a_name: str, b_name: str) -> torch.Size:
    try:
        return torch.broadcast_shapes(a_shape, b_shape)
    except RuntimeError:
        raise ValueError(f"{a_name} of shape {tuple(a_shape)} and {b_name} of shape {tuple(b_shape)} "
                         "do not broadcast: line the shapes up from the right; each pair of sizes must "
                         "be equal or contain a 1") from None


def _check_mask_fits(mask: torch.Tensor, scores: torch.Tensor, mask_name: str = "mask") -> None:
    shape = _broadcast(mask.shape, scores.shape, mask_name, "scores (..., T_q, T_k)")
    if shape != scores.shape:
        raise ValueError(f"{mask_name} of shape {tuple(mask.shape)} would enlarge scores of shape "
                         f"{tuple(scores.shape)} to {tuple(shape)}: a mask must broadcast to the scores' shape")
    refuse_ambiguous_mask(mask, scores.shape, mask_name)


# --- building masks ----------------------------------------------------------------------------------

def pad_sequences(sequences: Sequence[Sequence[int]], pad_id: int = 0, length: int | None = None,
                  side: str = "right") -> torch.Tensor:
    """Put token-id lists of different lengths into one tensor, filling with ``pad_id``.

    Args:
        sequences: B lists (or 1-d int tensors) of token ids.
        pad_id: the id that fills the empty places.
        length: T, the padded length; None means the longest sequence.
        side: ``"right"`` (pads after the tokens, the usual choice) or ``"left"`` (pads before).

    Returns:
        (B, T) int64 tensor.
    """
    pad_id = check_int(pad_id, "pad_id", minimum=None)
    if side not in ("right", "left"):
        raise ValueError(f"side must be 'right' or 'left', got {side!r}")
    if isinstance(sequences, torch.Tensor) or not isinstance(sequences, Sequence) or len(sequences) == 0:
        raise TypeError("sequences: expected a non-empty list of token-id lists")
    rows = []
    for i, seq in enumerate(sequences):
        if isinstance(seq, torch.Tensor):
            ids = seq
        elif isinstance(seq, (str, bytes)):
            raise TypeError(f"sequences[{i}]: expected a list of int token ids, got the text {seq[:30]!r}: "
                            "encode text with a tokenizer first")
        else:
            ids = torch.as_tensor(seq) if len(seq) else torch.zeros(0, dtype=torch.long)
        if ids.dim() != 1 or ids.is_floating_point() or ids.dtype == torch.bool:
            raise TypeError(f"sequences[{i}]: expected a flat list of int token ids, got {ids.dtype} "
                            f"of shape {tuple(ids.shape)}")
        rows.append(ids.long())
    longest = max(len(r) for r in rows)
    T = longest if length is None else check_int(length, "length", minimum=0)
    if longest > T:
        i = max(range(len(rows)), key=lambda j: len(rows[j]))
        raise ValueError(f"sequences[{i}] has {longest} tokens, more than length = {T}")
    out = torch.full((len(rows), T), pad_id, dtype=torch.long)
    for b, r in enumerate(rows):
        if side == "right":
            out[b, :len(r)] = r
        elif len(r):
            out[b, T - len(r):] = r
    return out


def padding_mask(token_ids: torch.Tensor, pad_id: int = 0) -> torch.Tensor:
    """True at real tokens, False at padding.

    Args:
        token_ids: (B, T) integer token ids (any leading axes are allowed: (..., T)).
        pad_id: the id used for padding.

    Returns:
        (B, T) bool. Use ``mask[:, None, :]`` (B, 1, T_k) with scores (B, T_q, T_k), or
        ``mask[:, None, None, :]`` (B, 1, 1, T_k) with scores (B, h, T_q, T_k).
    """
    check_shape(token_ids, "... T", name="token_ids", dtype="int")
    pad_id = check_int(pad_id, "pad_id", minimum=None)
    return token_ids != pad_id


def lengths_to_mask(lengths, T: int | None = None) -> torch.Tensor:
    """A right-padding mask from sentence lengths: row b is True at positions 0 ... lengths[b] - 1.

    Args:
        lengths: (B,) non-negative ints (a tensor or a list).
        T: the padded length, at least ``max(lengths)``; None means ``max(lengths)``.

    Returns:
        (B, T) bool, on the device of ``lengths``.
    """
    if not isinstance(lengths, torch.Tensor):
        if isinstance(lengths, Sequence) and all(isinstance(n, Integral) and not isinstance(n, bool)
                                                 for n in lengths):
            lengths = torch.tensor(list(lengths), dtype=torch.long)
        else:
            raise TypeError(f"lengths: expected a 1-d int tensor or a list of ints, got {lengths!r}")
    check_shape(lengths, "B", name="lengths", dtype="int")
    if (lengths < 0).any():
        b = int((lengths < 0).nonzero()[0, 0])
        raise ValueError(f"lengths must be non-negative, got lengths[{b}] = {int(lengths[b])}")
    longest = int(lengths.max()) if lengths.numel() else 0
    if T is None:
        T = longest
    T = check_int(T, "T", minimum=0)
    if longest > T:
        b = int(lengths.argmax())
        raise ValueError(f"lengths[{b}] = {longest} is longer than T = {T}: T must be at least max(lengths)")
    return torch.arange(T, device=lengths.device) < lengths[:, None]


def causal_mask(T: int, device: torch.device | str | None = None, start: int = 0) -> torch.Tensor:
    """True on and below the diagonal: query t may attend to keys 0 ... t, never to a later key.

    Args:
        T: sequence length (a positive int): the number of queries.
        device: where to create the mask (default: the CPU).
        start: positions that come before the T queries, e.g. those a key-value cache holds
            already (notebook 12): query i sits at position ``start + i`` and may attend to keys
            ``0 ... start + i``.

    Returns:
        (T, start + T) bool, (T, T) by default; broadcasts against scores (..., T, start + T) of any
        batch and head axes.
    """
    T, start = check_int(T, "T", minimum=1), check_int(start, "start", minimum=0)
    return torch.ones(T, start + T, dtype=torch.bool, device=device).tril(diagonal=start)


def combine_masks(*masks: torch.Tensor | None) -> torch.Tensor:
    """Combine masks so that a key is allowed only when every mask allows it.

    Args:
        *masks: all bool (combined with logical *and*) or all float additive (added up), in
            shapes that broadcast, e.g. a causal (T, T) and a padding (B, 1, T) mask. ``None``
            entries are skipped.

    Returns:
        The broadcast shape of the inputs, e.g. (B, T, T); bool or float like the inputs.
    """
    given = [(i, m) for i, m in enumerate(masks) if m is not None]
    if not given:
        raise ValueError("combine_masks needs at least one mask that is not None")
    for i, m in given:
        if not isinstance(m, torch.Tensor):
            raise TypeError(f"masks[{i}]: expected a tensor, got {type(m).__name__}")
        if m.dtype != torch.bool and not m.is_floating_point():
            raise TypeError(f"masks[{i}]: expected a bool or float (additive) mask, got {m.dtype}; "
                            "convert a 0/1 mask with mask.bool()")
    kinds = {m.dtype == torch.bool for _, m in given}
    if len(kinds) > 1:
        raise TypeError("cannot combine bool and additive (float) masks: convert the bool ones with "
                        "to_additive(mask, dtype) first, or the float ones with to_bool(mask)")
    (i0, result), rest = given[0], given[1:]
    name = f"masks[{i0}]"
    for i, m in rest:
        _broadcast(result.shape, m.shape, name, f"masks[{i}]")
        result = result & m if m.dtype == torch.bool else result + m
        name = f"masks[{i0}..{i}] combined"
    return result


def to_additive(mask: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A bool mask as an additive one: 0.0 where True (may attend), -inf where False (blocked).

    Args:
        mask: any shape, bool.
        dtype: a floating dtype for the result.

    Returns:
        Same shape as ``mask``, ``dtype``; add it to the scores before the softmax.
    """
    _check_bool_mask(mask)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating torch dtype such as torch.float32, got {dtype!r}")
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, NEG_INF)


def to_bool(mask: torch.Tensor) -> torch.Tensor:
    """An additive mask as a bool one: True where the value is above -inf.

    Only ``-inf`` counts as blocked: a mask built with a large finite value such as -1e9 comes
    out all True, because for the softmax such a key is *almost*, not exactly, blocked.

    Args:
        mask: any shape, float.

    Returns:
        Same shape, bool.
    """
    if not isinstance(mask, torch.Tensor) or not mask.is_floating_point():
        got = mask.dtype if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise TypeError(f"mask: expected a float additive mask (0 = keep, -inf = block), got {got}")
    if torch.isnan(mask).any():
        raise ValueError("mask contains NaN: an additive mask holds 0 (or a finite bias) and -inf only")
    return ~torch.isneginf(mask)


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Softmax over the last axis that gives blocked keys exactly zero weight.

    Blocked scores are set to -inf *before* the softmax, so the allowed weights of every row sum
    to 1. A row whose keys are all blocked (e.g. a sentence of length 0) has no sensible
    weights: it comes out as **zeros**, not as the NaN of ``torch.softmax`` over all -inf, and
    its gradients are finite (zero), the same choice as PyTorch's ``scaled_dot_product_attention``.

    Args:
        scores: (..., T_q, T_k) float, e.g. (B, T_q, T_k) or (B, h, T_q, T_k).
        mask: None or bool, True = may attend, broadcastable to ``scores`` (e.g. (T_q, T_k),
            (B, 1, T_k), (B, 1, 1, T_k)).

    Returns:
        (..., T_q, T_k): each row sums to 1, or to 0 when every key of the row is blocked.
    """
    check_shape(scores, "... T_q T_k", name="scores", dtype="float")
    if mask is not None:
        _check_bool_mask(mask)
        _check_mask_fits(mask, scores)
        scores = scores.masked_fill(~mask, NEG_INF)
    empty = torch.isneginf(scores).all(dim=-1, keepdim=True)  # rows with nothing to attend to
    weights = torch.softmax(scores.masked_fill(empty, 0.0), dim=-1)  # no -inf - (-inf) = NaN
    return weights.masked_fill(empty, 0.0)


# --- drawing -----------------------------------------------------------------------------------------

def plot_mask(mask: torch.Tensor, query_labels: Sequence[str] | None = None,
              key_labels: Sequence[str] | None = None, ax=None, title: str | None = None,
              annotate: bool | None = None, legend: bool = True):
    """Draw a bool mask as a grid: a row per query, a column per key; coloured = may attend.

    Args:
        mask: (T_q, T_k) bool, or (T_k,) for a single row (a padding mask before broadcasting).
        query_labels: T_q names for the rows; key_labels: T_k names for the columns (defaults to
            ``query_labels`` when the mask is square).
        annotate: write ✓ / ✗ in the cells; by default when the grid is at most 12 × 12.
        legend: add a legend (allowed / blocked) to the right of the grid.

    Returns:
        The matplotlib Axes.
    """
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    _check_bool_mask(mask)
    if mask.dim() == 1:
        mask = mask[None, :]
    sizes = check_shape(mask, "T_q T_k", name="mask")
    key_labels = resolve_labels(sizes, query_labels, key_labels)
    if ax is None:
        _, ax = plt.subplots(figsize=(max(2.5, 0.5 * sizes["T_k"] + 1.5), max(1.5, 0.5 * sizes["T_q"] + 1.0)))
    grid = mask.detach().cpu().numpy().astype(float)
    allowed, blocked = "#009E73", "#E5E5E5"
    ax.imshow(grid, cmap=ListedColormap([blocked, allowed]), vmin=0, vmax=1, aspect="equal",
              interpolation="nearest")
    ax.grid(False)
    ax.set_xticks([x - 0.5 for x in range(1, sizes["T_k"])], minor=True)
    ax.set_yticks([y - 0.5 for y in range(1, sizes["T_q"])], minor=True)
    ax.grid(which="minor", color="white", linewidth=1.5)
    ax.tick_params(which="minor", length=0)
    ax.set_xticks(range(sizes["T_k"]))
    ax.set_yticks(range(sizes["T_q"]))
    if key_labels is not None:
        long = max(map(len, key_labels), default=0) > 3
        ax.set_xticklabels(key_labels, rotation=45 if long else 0, ha="right" if long else "center")
    if query_labels is not None:
        ax.set_yticklabels(query_labels)
    ax.set_xlabel("key (attended to)")
    ax.set_ylabel("query (attending)")
    if annotate is None:
        annotate = sizes["T_q"] <= 12 and sizes["T_k"] <= 12
    if annotate:
        for i in range(sizes["T_q"]):
            for j in range(sizes["T_k"]):
                ok = bool(grid[i, j])
                ax.text(j, i, "✓" if ok else "✗", ha="center", va="center", fontsize=9,
                        color="white" if ok else "#888888")
    if title:
        ax.set_title(title)
    if legend:
        handles = [Patch(color=allowed, label="may attend (True)"), Patch(color=blocked, label="blocked (False)")]
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, borderaxespad=0)
    return ax
