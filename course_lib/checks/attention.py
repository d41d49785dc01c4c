"""Notebook 04's exercises: attention in NumPy for one sequence, and batched attention in torch."""
from __future__ import annotations

import math

import numpy as np
import torch

from course_lib.attention import SingleHeadAttention, scaled_dot_product_attention
from course_lib.checks.core import (Case, CheckResult, Mistake, ModuleMistake, check_function, check_module,
                                   seeded_module)
from course_lib.shapes import check_shape


# --- exercise 1: attention in NumPy --------------------------------------------------------------------

def _np_softmax(scores: np.ndarray, axis: int = -1) -> np.ndarray:
    e = np.exp(scores - scores.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def attention_numpy(q: np.ndarray, k: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Scaled dot-product attention of one sequence, in NumPy: ``softmax(q k^T / sqrt(d_k)) v``.

    Args:
        q: (T_q, d_k). k: (T_k, d_k). v: (T_k, d_v). NumPy float arrays.

    Returns:
        (T_q, d_v): row i is the average of the rows of ``v``, weighted by query i's weights.
    """
    for name, array in (("q", q), ("k", k), ("v", v)):
        if not isinstance(array, np.ndarray):
            raise TypeError(f"{name}: expected a NumPy array, got {type(array).__name__}")
    sizes = check_shape(q, "T_q d_k", name="q", dtype="float")
    sizes = check_shape(k, "T_k d_k", name="k", dtype="float", **sizes)
    check_shape(v, "T_k d_v", name="v", dtype="float", T_k=sizes["T_k"])
    scores = q @ k.T / np.sqrt(sizes["d_k"])  # (T_q, T_k)
    return _np_softmax(scores, axis=-1) @ v  # (T_q, d_v)


def _np_attention(q, k, v, scale=None, axis=-1):
    scale = 1 / np.sqrt(q.shape[-1]) if scale is None else scale
    return _np_softmax(q @ k.T * scale, axis=axis) @ v


def _np_weights(q, k):
    return _np_softmax(q @ k.T / np.sqrt(q.shape[-1]))


def _numpy_cases() -> list[Case]:
    rng = np.random.default_rng(404)
    square = [rng.normal(size=(3, 3)) for _ in range(3)]
    general = (rng.normal(size=(2, 4)), rng.normal(size=(5, 4)), rng.normal(size=(5, 3)))
    # Row 0 scores reach about 1800 (exp overflows); row 1 scores are small, so subtracting the
    # maximum of the whole matrix instead of each row's own underflows row 1 to 0 / 0.
    big_q = np.array([[30.0, 30.0, -30.0, 30.0], [0.1, -0.2, 0.3, 0.0]])
    big_k = np.array([[30.0, 30.0, -30.0, 30.0], [-30.0, 30.0, 30.0, 0.0], [20.0, 25.0, -30.0, 30.0]])
    big_v = np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])
    return [
        # every size 3: a wrong axis, a missing transpose or the weights still have the right shape
        Case(tuple(square), "square inputs: q, k, v all of shape (3, 3)"),
        Case(general, "q (T_q=2, d_k=4), k (T_k=5, d_k=4), v (T_k=5, d_v=3)"),
        Case((big_q, big_k, big_v), "large scores (up to about 1800) in row 0, small ones in row 1"),
        Case((rng.normal(size=(1, 2)), rng.normal(size=(6, 2)), rng.normal(size=(6, 1))),
             "a single query: q (1, 2), k (6, 2), v (6, 1)"),
    ]


_NUMPY_MISTAKES = [
    Mistake("you forgot to transpose k: q @ k multiplies each query with the columns of k, not with the keys",
            lambda q, k, v: _np_softmax(q @ k / np.sqrt(q.shape[-1])) @ v,
            "the scores are q @ k.T, shape (T_q, T_k)"),
    Mistake("you took the softmax over axis 0, down the columns: each key's weights sum to 1 instead of "
            "each query's",
            lambda q, k, v: _np_attention(q, k, v, axis=0),
            "row i holds query i's scores: use axis=-1 for the max and the sum"),
    Mistake("you returned the attention weights (T_q, T_k), not the output weights @ v (T_q, d_v)",
            lambda q, k, v: _np_weights(q, k), "finish with weights @ v"),
    Mistake("you multiplied in the wrong order: v @ weights instead of weights @ v",
            lambda q, k, v: v @ _np_weights(q, k), "each output row mixes rows of v: weights @ v"),
    Mistake("you multiplied in the wrong order: weights.T @ v mixes the values with the weights of the keys "
            "instead of the queries",
            lambda q, k, v: _np_weights(q, k).T @ v, "weights @ v, with weights of shape (T_q, T_k)"),
    Mistake("the scale is missing: you did not divide the scores by sqrt(d_k)",
            lambda q, k, v: _np_attention(q, k, v, scale=1.0), "scores = q @ k.T / np.sqrt(d_k)"),
    Mistake("you divided the scores by d_k instead of sqrt(d_k)",
            lambda q, k, v: _np_attention(q, k, v, scale=1 / q.shape[-1]),
            "divide by np.sqrt(d_k), where d_k = q.shape[-1]"),
    Mistake("you multiplied the scores by sqrt(d_k) instead of dividing by it",
            lambda q, k, v: _np_attention(q, k, v, scale=np.sqrt(q.shape[-1])),
            "divide: scores = q @ k.T / np.sqrt(d_k)"),
    Mistake("you divided by the square root of the number of keys T_k (len(k) or k.shape[0]), not of d_k",
            lambda q, k, v: _np_attention(q, k, v, scale=1 / np.sqrt(k.shape[0])),
            "d_k is the width of a key: k.shape[-1] (or q.shape[-1])"),
    Mistake("you divided by sqrt(d_v), the width of the values, instead of sqrt(d_k)",
            lambda q, k, v: _np_attention(q, k, v, scale=1 / np.sqrt(v.shape[-1])),
            "d_k is the width of the queries and keys: q.shape[-1]"),
    Mistake("you applied the scale after the softmax: the weights must come from the scaled scores",
            lambda q, k, v: _np_attention(q, k, v, scale=1.0) / np.sqrt(q.shape[-1]),
            "divide the scores by sqrt(d_k), then take the softmax"),
    Mistake("you did not normalise: exp(scores) are not weights until each row is divided by its sum",
            lambda q, k, v: np.exp(q @ k.T / np.sqrt(q.shape[-1])) @ v,
            "weights = e / e.sum(axis=-1, keepdims=True)"),
    Mistake("overflow: np.exp of scores in the hundreds is inf, and inf / inf = nan",
            lambda q, k, v: (lambda e: e / e.sum(axis=-1, keepdims=True))(
                np.exp(q @ k.T / np.sqrt(q.shape[-1]))) @ v,
            "subtract each row's maximum before np.exp: scores - scores.max(axis=-1, keepdims=True)"),
    Mistake("you subtracted the maximum of the whole score matrix: a row whose scores are far below it "
            "underflows to exp(...) = 0 everywhere, and then 0 / 0 = nan",
            lambda q, k, v: (lambda s: (lambda e: e / e.sum(axis=-1, keepdims=True))(
                np.exp(s - s.max())))(q @ k.T / np.sqrt(q.shape[-1])) @ v,
            "subtract each row's own maximum: scores.max(axis=-1, keepdims=True)"),
    Mistake("you subtracted the row maxima without keepdims=True: the (T_q,) vector broadcast along the "
            "keys, so column j got row j's maximum",
            lambda q, k, v: (lambda s: (lambda e: e / e.sum(axis=-1, keepdims=True))(
                np.exp(s - s.max(axis=-1))))(q @ k.T / np.sqrt(q.shape[-1])) @ v,
            "use scores.max(axis=-1, keepdims=True), shape (T_q, 1)"),
    Mistake("you divided by the row sums without keepdims=True: the (T_q,) vector broadcast along the keys",
            lambda q, k, v: (lambda e: e / e.sum(axis=-1))(
                np.exp((lambda s: s - s.max(axis=-1, keepdims=True))(q @ k.T / np.sqrt(q.shape[-1])))) @ v,
            "use e.sum(axis=-1, keepdims=True), shape (T_q, 1)"),
]


def check_attention_numpy(fn) -> CheckResult:
    """Check a learner's ``attention_numpy(q, k, v)``: NumPy (T_q, d_k), (T_k, d_k), (T_k, d_v) -> (T_q, d_v)."""
    return check_function(fn, exercise="attention_numpy", reference=attention_numpy, cases=_numpy_cases(),
                          mistakes=_NUMPY_MISTAKES, shape_names="(T_q, d_v)")


# --- exercise 2: batched attention in torch ------------------------------------------------------------

def batched_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Scaled dot-product attention for a batch of B sequences, each on its own.

    Args:
        q: (B, T_q, d_k). k: (B, T_k, d_k). v: (B, T_k, d_v). Float tensors.

    Returns:
        (B, T_q, d_v): ``softmax(q k^T / sqrt(d_k)) v`` for every sequence of the batch.
    """
    sizes = check_shape(q, "B T_q d_k", name="q", dtype="float")
    sizes = check_shape(k, "B T_k d_k", name="k", dtype="float", **sizes)
    check_shape(v, "B T_k d_v", name="v", dtype="float", B=sizes["B"], T_k=sizes["T_k"])
    return scaled_dot_product_attention(q, k, v)[0]


def _torch_attention(q, k, v, scale=None, dim=-1):
    scale = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
    return torch.softmax(q @ k.transpose(-2, -1) * scale, dim=dim) @ v


def _flattened(q, k, v):
    """Every token of the batch attends to every token of every sequence."""
    B, T_q, d_k = q.shape
    out = _torch_attention(q.reshape(-1, d_k), k.reshape(-1, d_k), v.reshape(-1, v.shape[-1]))
    return out.reshape(B, T_q, -1)


def _batched_cases() -> list[Case]:
    gen = torch.Generator().manual_seed(405)
    cube = [torch.randn(3, 3, 3, generator=gen) for _ in range(3)]
    general = (torch.randn(2, 3, 4, generator=gen), torch.randn(2, 5, 4, generator=gen),
               torch.randn(2, 5, 3, generator=gen))
    big = (torch.randn(2, 2, 4, generator=gen) * 30, torch.randn(2, 3, 4, generator=gen) * 30,
           torch.randn(2, 3, 2, generator=gen))
    return [
        # B = T_q = T_k = d_k = d_v = 3: every wrong axis still gives the right shape
        Case(tuple(cube), "q, k, v all of shape (B=3, T=3, d=3)"),
        Case(general, "q (B=2, T_q=3, d_k=4), k (B=2, T_k=5, d_k=4), v (B=2, T_k=5, d_v=3)"),
        Case(big, "large scores (q and k with entries of size about 30)"),
    ]


_BATCHED_MISTAKES = [
    Mistake("you used k.T on a 3-D tensor: .T reverses ALL axes, (B, T_k, d_k) -> (d_k, T_k, B), so the "
            "batch axis was swapped with the features",
            lambda q, k, v: torch.softmax(q @ k.permute(2, 1, 0) / math.sqrt(q.shape[-1]), dim=-1) @ v,
            "swap only the last two axes: k.transpose(-2, -1) (or k.mT)"),
    Mistake("you swapped the wrong axes of k: k.transpose(0, 2) turns (B, T_k, d_k) into (d_k, T_k, B)",
            lambda q, k, v: torch.softmax(q @ k.transpose(0, 2) / math.sqrt(q.shape[-1]), dim=-1) @ v,
            "swap the last two axes: k.transpose(-2, -1)"),
    Mistake("you took the softmax over dim=1, the query axis: for each key, the weights over the queries "
            "sum to 1, instead of each query's weights over the keys",
            lambda q, k, v: _torch_attention(q, k, v, dim=1), "use dim=-1, the key axis"),
    Mistake("you took the softmax over dim=0, the batch axis: the weights were shared out between "
            "different sequences",
            lambda q, k, v: _torch_attention(q, k, v, dim=0), "use dim=-1, the key axis"),
    Mistake("you mixed the sequences of the batch: every query attended to the keys of ALL B sequences "
            "(did you flatten the batch into one long sequence?)",
            _flattened, "keep the batch axis: q @ k.transpose(-2, -1) is (B, T_q, T_k)"),
    Mistake("you returned the attention weights (B, T_q, T_k), not the output weights @ v (B, T_q, d_v)",
            lambda q, k, v: torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1),
            "finish with weights @ v"),
    Mistake("the scale is missing: you did not divide the scores by sqrt(d_k)",
            lambda q, k, v: _torch_attention(q, k, v, scale=1.0), "divide the scores by math.sqrt(d_k)"),
    Mistake("you divided the scores by d_k instead of sqrt(d_k)",
            lambda q, k, v: _torch_attention(q, k, v, scale=1 / q.shape[-1]),
            "divide by math.sqrt(d_k)"),
    Mistake("you read d_k as k.shape[1], which is T_k for a (B, T_k, d_k) tensor: you divided by sqrt(T_k)",
            lambda q, k, v: _torch_attention(q, k, v, scale=1 / math.sqrt(k.shape[1])),
            "d_k = q.shape[-1]: count axes from the end, so the code works with or without a batch axis"),
    Mistake("you read d_k as k.shape[0], which is the batch size B: you divided by sqrt(B)",
            lambda q, k, v: _torch_attention(q, k, v, scale=1 / math.sqrt(k.shape[0])),
            "d_k = q.shape[-1]"),
    Mistake("you divided by sqrt(d_v), the width of the values, instead of sqrt(d_k)",
            lambda q, k, v: _torch_attention(q, k, v, scale=1 / math.sqrt(v.shape[-1])),
            "d_k = q.shape[-1]"),
    Mistake("overflow: torch.exp of scores in the hundreds is inf, and inf / inf = nan",
            lambda q, k, v: (lambda e: e / e.sum(dim=-1, keepdim=True))(
                torch.exp(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]))) @ v,
            "use torch.softmax(scores, dim=-1), or subtract each row's maximum before exp"),
]


def check_batched_attention(fn) -> CheckResult:
    """Check a learner's ``batched_attention(q, k, v)``.

    Shapes: (B, T_q, d_k), (B, T_k, d_k), (B, T_k, d_v) -> (B, T_q, d_v).
    """
    return check_function(fn, exercise="batched_attention", reference=batched_attention, cases=_batched_cases(),
                          mistakes=_BATCHED_MISTAKES, shape_names="(B, T_q, d_v)", rtol=1e-4, atol=1e-5)


# --- exercise 2: build SingleHeadAttention ---------------------------------------------------------

def _heads_inputs(reference, x, context, queries_from=None, kv_from=None, values_with=None):
    """q, k, v as some (possibly mistaken) wiring of the reference's projections computes them."""
    source = x if context is None else context
    q = reference.w_q(x if queries_from is None else queries_from)
    k = reference.w_k(source if kv_from is None else kv_from)
    v = (values_with or reference.w_v)(source if kv_from is None else kv_from)
    return q, k, v


def _single_head(reference, x, context=None, mask=None, *, scale=None, dim=-1, mask_mode="before",
                 wiring=None, scores_out=False):
    """The output and weights of one head, correct by default, each keyword one known slip."""
    q, k, v = _heads_inputs(reference, x, context, **(wiring or {}))
    scale = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = q @ k.transpose(-2, -1) * scale
    if mask is not None and mask_mode == "before":
        scores = scores.masked_fill(~mask, float("-inf"))
    elif mask is not None and mask_mode == "inverted":
        scores = scores.masked_fill(mask, float("-inf"))
    elif mask is not None and mask_mode == "zero":
        scores = scores.masked_fill(~mask, 0.0)
    weights = torch.softmax(scores, dim=dim)
    if mask is not None and mask_mode == "after":
        weights = weights * mask
    return weights @ v, (scores if scores_out else weights)


_HEAD_MISTAKES = [
    ModuleMistake("the scale is missing: the scores were not divided by sqrt(d_k)",
                  lambda ref, x, context=None, mask=None: _single_head(ref, x, context, mask, scale=1.0),
                  "divide the scores by math.sqrt(d_k), with d_k = q.shape[-1]"),
    ModuleMistake("you divided the scores by d_k instead of sqrt(d_k)",
                  lambda ref, x, context=None, mask=None: _single_head(ref, x, context, mask,
                                                                       scale=1 / ref.w_q.out_features),
                  "divide by math.sqrt(d_k)"),
    ModuleMistake("you divided the scores by sqrt(d_model), the width of the tokens, instead of sqrt(d_k), "
                  "the width of the queries and keys",
                  lambda ref, x, context=None, mask=None: _single_head(ref, x, context, mask,
                                                                       scale=1 / math.sqrt(x.shape[-1])),
                  "d_k = q.shape[-1], read after the projection"),
    ModuleMistake("you took the softmax over the queries (dim=-2): each key's weights sum to 1, instead of "
                  "each query's weights over the keys",
                  lambda ref, x, context=None, mask=None: _single_head(ref, x, context, mask, dim=-2),
                  "torch.softmax(scores, dim=-1): the keys are the last axis"),
    ModuleMistake("the context is ignored: in cross-attention the keys and values must come from `context`, "
                  "but yours came from x (self-attention)",
                  lambda ref, x, context=None, mask=None: _single_head(ref, x, None, mask),
                  "source = x if context is None else context; k = self.w_k(source); v = self.w_v(source)"),
    ModuleMistake("your queries came from `context` too: in cross-attention the queries come from x (the "
                  "tokens that ask) and only the keys and values from `context`",
                  lambda ref, x, context=None, mask=None: _single_head(
                      ref, x, context, mask, wiring={"queries_from": x if context is None else context}),
                  "q = self.w_q(x)"),
    ModuleMistake("your values went through w_k (a copy-paste slip?): v must be self.w_v(...)",
                  lambda ref, x, context=None, mask=None: _single_head(
                      ref, x, context, mask, wiring={"values_with": ref.w_k}),
                  "v = self.w_v(source)"),
    ModuleMistake("the mask is ignored: blocked keys still get weight",
                  lambda ref, x, context=None, mask=None: _single_head(ref, x, context, None),
                  'when mask is not None: scores = scores.masked_fill(~mask, float("-inf")), before the softmax'),
    ModuleMistake("your mask is inverted: you blocked the keys where the mask is True; True means 'may attend'",
                  lambda ref, x, context=None, mask=None: _single_head(ref, x, context, mask, mask_mode="inverted"),
                  'fill where the mask is False: scores.masked_fill(~mask, float("-inf"))'),
    ModuleMistake("you applied the mask AFTER the softmax: the blocked weights are 0, but each row no longer "
                  "sums to 1 (the blocked keys took their share before you zeroed it)",
                  lambda ref, x, context=None, mask=None: _single_head(ref, x, context, mask, mask_mode="after"),
                  "mask the scores, then take the softmax"),
    ModuleMistake("you set the blocked scores to 0 instead of -inf: a score of 0 still gets weight e^0 = 1 "
                  "before normalising, so blocked keys keep some weight",
                  lambda ref, x, context=None, mask=None: _single_head(ref, x, context, mask, mask_mode="zero"),
                  'fill with float("-inf")'),
    ModuleMistake("your second output is the scores (before the softmax), not the weights",
                  lambda ref, x, context=None, mask=None: _single_head(ref, x, context, mask, scores_out=True),
                  "return output, weights, with weights = torch.softmax(scores, dim=-1)"),
    ModuleMistake("you returned (weights, output): the order is (output, weights)",
                  lambda ref, x, context=None, mask=None: _single_head(ref, x, context, mask)[::-1],
                  "return output, weights"),
]

HEAD_SIZES = {"d_model": 6, "d_k": 4}  # d_v is left out: it must default to d_k


def _reference_head() -> torch.nn.Module:
    return seeded_module(lambda: SingleHeadAttention(**HEAD_SIZES), seed=404, weight_scale=2.0)


def _head_cases() -> list[Case]:
    gen = torch.Generator().manual_seed(406)
    d = HEAD_SIZES["d_model"]
    x5, x3, x4, c5, c4 = (torch.randn(2, t, d, generator=gen) for t in (5, 3, 4, 5, 4))
    causal = torch.ones(5, 5, dtype=torch.bool).tril()
    padding = torch.tensor([[True] * 5, [True, True, True, False, False]])[:, None, :]  # (B, 1, T_k)
    return [
        Case((x5,), "self-attention, x of shape (B=2, T=5, d_model=6)"),
        Case((x3,), "cross-attention, x (2, 3, 6) reading a context (2, 5, 6)", kwargs={"context": c5}),
        Case((x4,), "cross-attention with T_q = T_k = 4: x and context are different sequences",
             kwargs={"context": c4}),
        Case((x5,), "self-attention with a causal mask (5, 5), True on and below the diagonal",
             kwargs={"mask": causal}),
        Case((x3,), "cross-attention with a padding mask (B=2, 1, T_k=5): the 2nd context has 2 pads",
             kwargs={"context": c5, "mask": padding}),
    ]


def check_single_head_attention(cls) -> CheckResult:
    """Check a learner's ``SingleHeadAttention``-like class, built as ``cls(d_model=6, d_k=4)``.

    Its parameters must be ``w_q``, ``w_k``, ``w_v``: ``nn.Linear`` layers without bias, weights
    ``(d_k, d_model)``, ``(d_k, d_model)``, ``(d_v, d_model)``. ``forward(x, context=None,
    mask=None)`` takes x (B, T_q, d_model), context (B, T_k, d_model) and a bool mask
    broadcastable to (B, T_q, T_k), and returns (output (B, T_q, d_v), weights (B, T_q, T_k)).
    """
    return check_module(cls, exercise="SingleHeadAttention", init_kwargs=dict(HEAD_SIZES),
                        make_reference=_reference_head, cases=_head_cases(), mistakes=_HEAD_MISTAKES,
                        output_names=("output", "weights"),
                        parameter_hint="three projections without bias: nn.Linear(d_model, d_k, bias=False) for w_q "
                                       "and w_k, nn.Linear(d_model, d_v, bias=False) for w_v, with d_v = d_k when "
                                       "d_v is None",
                        success="your module matches course_lib's SingleHeadAttention with the same weights: "
                                "self- and cross-attention, with and without masks, outputs, weights and gradients.",
                        rtol=1e-4, atol=1e-5)
