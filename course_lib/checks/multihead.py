"""Notebook 07's build exercise: the learner's own MultiHeadAttention, checked against course_lib's."""
from __future__ import annotations

import math

import torch

from course_lib.checks.core import ERROR, Case, CheckResult, ModuleMistake, check_module, seeded_module
from course_lib.multihead import MultiHeadAttention

_VIEW_HINT = ("after a transpose the tensor is no longer stored row by row, so .view cannot merge or split "
              "its axes: use .reshape(...) instead (or .contiguous().view(...))")


def _explain_view_error(result: CheckResult) -> CheckResult:
    """Add the reason and the fix to torch's terse error for .view on a transposed tensor."""
    if result.status == ERROR and "view size is not compatible" in result.message:
        return CheckResult(result.exercise, ERROR, result.message, _VIEW_HINT)
    return result


def _split(x: torch.Tensor, h: int, how: str = "right") -> torch.Tensor:
    """(B, T, d_model) -> (B, h, T, d_k), the right way or one of the wrong ones."""
    B, T, d_model = x.shape
    if how == "no transpose":  # reshape straight to the final shape
        return x.reshape(B, h, T, d_model // h)
    if how == "strided":  # head i takes features i, i + h, i + 2h, ...
        return x.reshape(B, T, d_model // h, h).permute(0, 3, 1, 2)
    return x.reshape(B, T, h, d_model // h).transpose(1, 2)


def _merge(x: torch.Tensor, how: str = "right") -> torch.Tensor:
    """(B, h, T, d_k) -> (B, T, h * d_k), the right way or without the transpose back."""
    B, h, T, d_k = x.shape
    if how == "no transpose":
        return x.reshape(B, T, h * d_k)
    return x.transpose(1, 2).reshape(B, T, h * d_k)


def _multi_head(ref, query, key=None, value=None, mask=None, *, split="right", merge="right", scale=None,
                dim=-1, output_projection=True, head_axis_for_mask=True, ignore_memory=False,
                values_with=None, average_weights=False):
    """One multi-head attention, correct by default, each keyword one known slip."""
    key = query if key is None or ignore_memory else key
    value = key if value is None or ignore_memory else value
    q = _split(ref.w_q(query), ref.h, split)  # (B, h, T_q, d_k)
    k = _split(ref.w_k(key), ref.h, split)  # (B, h, T_k, d_k)
    v = _split((values_with or ref.w_v)(value), ref.h, split)  # (B, h, T_k, d_k)
    scale = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = q @ k.transpose(-2, -1) * scale  # (B, h, T_q, T_k)
    if mask is not None:
        if mask.dim() == 3 and head_axis_for_mask:
            mask = mask[:, None]  # (B, 1, T_q or 1, T_k)
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=dim)
    out = _merge(weights @ v, merge)  # (B, T_q, d_model)
    if output_projection:
        out = ref.w_o(out)
    return out, (weights.mean(dim=1) if average_weights else weights)


def _slip(**wrong):
    return lambda ref, query, key=None, value=None, mask=None: _multi_head(ref, query, key, value, mask, **wrong)


_MHA_MISTAKES = [
    ModuleMistake("you split into heads with a reshape straight to (B, h, T, d_k), without a transpose: the shape "
                  "is right, but each head's 'rows' are chunks of consecutive features, pieces of different "
                  "tokens (section 3)",
                  _slip(split="no transpose"),
                  "reshape to (B, T, h, d_k), then .transpose(1, 2): split_heads does both"),
    ModuleMistake("your heads take strided features (head i gets features i, i + h, i + 2h, ...): head i must get "
                  "the contiguous block i*d_k ... (i+1)*d_k - 1, as split_heads does",
                  _slip(split="strided"), "reshape to (B, T, h, d_k), with h before d_k, then .transpose(1, 2)"),
    ModuleMistake("you merged the heads with a reshape of (B, h, T, d_k) to (B, T, d_model) without transposing "
                  "back: tokens and heads are mixed",
                  _slip(merge="no transpose"), "transpose(1, 2) first, then reshape: merge_heads does both"),
    ModuleMistake("you divided the scores by sqrt(d_model) instead of sqrt(d_k): each head's dot products have "
                  "d_k = d_model // h terms",
                  lambda ref, query, key=None, value=None, mask=None: _multi_head(
                      ref, query, key, value, mask, scale=1 / math.sqrt(query.shape[-1])),
                  "scale by 1 / sqrt(d_k), with d_k = d_model // h"),
    ModuleMistake("the scale is missing: the scores were not divided by sqrt(d_k)",
                  _slip(scale=1.0), "divide the scores by math.sqrt(d_k)"),
    ModuleMistake("the output projection is missing: you returned the merged heads without w_o, so each output "
                  "feature comes from one head only",
                  _slip(output_projection=False), "return self.w_o(merged), weights"),
    ModuleMistake("the padding mask has no head axis: a (B, 1, T_k) mask against scores (B, h, T_q, T_k) lines its "
                  "batch axis up with the HEAD axis, so head i used the mask of sentence i",
                  _slip(head_axis_for_mask=False), "mask[:, None] makes it (B, 1, 1, T_k)"),
    ModuleMistake("key and value are ignored: in cross-attention the keys and values must come from `key` and "
                  "`value`, but yours came from `query`",
                  _slip(ignore_memory=True), "key = query if key is None else key; the same for value"),
    ModuleMistake("your values went through w_k (a copy-paste slip?): they must be self.w_v(value)",
                  lambda ref, query, key=None, value=None, mask=None: _multi_head(
                      ref, query, key, value, mask, values_with=ref.w_k), "v = self.w_v(value)"),
    ModuleMistake("you took the softmax over the queries (dim=-2) instead of the keys",
                  _slip(dim=-2), "torch.softmax(scores, dim=-1)"),
    ModuleMistake("you averaged the weights over the heads, (B, T_q, T_k): return one map per head, (B, h, T_q, T_k)",
                  _slip(average_weights=True), "return the weights as attention computed them"),
]

MHA_SIZES = {"d_model": 8, "h": 2}


def _reference_mha() -> torch.nn.Module:
    return seeded_module(lambda: MultiHeadAttention(**MHA_SIZES), seed=707, weight_scale=2.0)


def _mha_cases() -> list[Case]:
    gen = torch.Generator().manual_seed(708)
    x3, x4, m5 = (torch.randn(2, t, MHA_SIZES["d_model"], generator=gen) for t in (3, 4, 5))
    causal = torch.ones(4, 4, dtype=torch.bool).tril()
    padding = torch.tensor([[True] * 5, [True, True, False, False, False]])[:, None, :]  # (B, 1, T_k)
    return [
        Case((x4,), "self-attention, query of shape (B=2, T=4, d_model=8), h=2"),
        Case((x3,), "cross-attention, query (2, 3, 8) reading key = value of shape (2, 5, 8)",
             kwargs={"key": m5, "value": m5}),
        Case((x4,), "self-attention with a causal mask (4, 4)", kwargs={"mask": causal}),
        Case((x3,), "cross-attention with a padding mask (B=2, 1, T_k=5): the 2nd sentence has 3 pads",
             kwargs={"key": m5, "value": m5, "mask": padding}),
    ]


def check_multi_head_attention(cls) -> CheckResult:
    """Check a learner's ``MultiHeadAttention``-like class, built as ``cls(d_model=8, h=2)``.

    Its parameters must be ``w_q``, ``w_k``, ``w_v``, ``w_o``: ``nn.Linear(d_model, d_model)`` with
    bias. ``forward(query, key=None, value=None, mask=None)`` takes query (B, T_q, d_model), key and
    value (B, T_k, d_model) and a bool mask (T_q, T_k) or (B, 1, T_k), and returns
    (output (B, T_q, d_model), weights (B, h, T_q, T_k)).
    """
    result = check_module(cls, exercise="MultiHeadAttention", init_kwargs=dict(MHA_SIZES),
                          make_reference=_reference_mha, cases=_mha_cases(), mistakes=_MHA_MISTAKES,
                          output_names=("output", "weights"),
                          parameter_hint="four projections with bias: nn.Linear(d_model, d_model) for w_q, w_k, "
                                         "w_v and w_o",
                          success="your module matches course_lib's MultiHeadAttention with the same weights: "
                                  "self- and cross-attention, causal and padding masks, outputs, weights and "
                                  "gradients.", rtol=1e-4, atol=1e-5)
    return _explain_view_error(result)
