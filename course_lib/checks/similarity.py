"""Notebook 02's exercises: the cosine score and the additive score of one query against n keys."""
from __future__ import annotations

from typing import Any, Callable

import torch

from course_lib.checks.core import Case, CheckResult, Mistake, check_function
from course_lib.similarity import additive_score, cosine_score


def _safe(make: Callable[..., Any]) -> Callable[..., Any]:
    """A mistake that cannot be made on some input (shapes that do not fit) gives None, never raises."""

    def wrapped(*args, **kwargs):
        try:
            return make(*args, **kwargs)
        except Exception:
            return None

    return wrapped


# --------------------------------------------------------------------------- exercise 1: cosine
def cosine_against_keys(query: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """Reference: cosine similarity of one query against every key.

    Args:
        query: (d,).
        keys: (n, d).

    Returns:
        (n,): entry j is q · k_j / (|q| |k_j|).
    """
    return cosine_score(query, keys)


def _cosine_cases() -> list[Case]:
    gen = torch.Generator().manual_seed(2024)
    lengths = torch.tensor([0.5, 2.0, 3.0])[:, None]
    return [
        # n = d: normalising along the wrong axis, or without keepdim, still gives the right shape
        Case((torch.tensor([3.0, 1.0, -2.0]), torch.randn(3, 3, generator=gen) * lengths),
             "a query of shape (d=3,) and keys of shape (n=3, d=3) of different lengths"),
        Case((torch.tensor([2.0, 2.0]), torch.tensor([[1.0, 0.0], [0.0, 3.0], [-2.0, -2.0], [4.0, 4.0]])),
             "query [2, 2] and 4 keys in 2-D"),
        Case((torch.randn(5, generator=gen) * 4, torch.randn(4, 5, generator=gen) * 10),
             "a query of shape (d=5,) and keys of shape (n=4, d=5)"),
        Case((torch.tensor([1e3, -2e3, 5e2]), torch.tensor([[1e3, 1e3, 0.0], [-3e3, 1e3, 2e3]])),
             "long vectors (entries in the thousands)"),
    ]


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True)


_COSINE_MISTAKES = [
    Mistake("you returned the plain dot products q · k: cosine similarity divides them by |q| |k|",
            _safe(lambda q, k: k @ q), "divide each q · k_j by q.norm() * k_j.norm()"),
    Mistake("you normalised the keys but not the query: every score is |q| times too large",
            _safe(lambda q, k: _unit(k) @ q), "divide by the query's length too"),
    Mistake("you normalised the query but not the keys: each score is still multiplied by |k_j|",
            _safe(lambda q, k: k @ _unit(q)), "divide each key by its own length: keys.norm(dim=1, keepdim=True)"),
    Mistake("you took the key lengths over the wrong axis (dim=0, down the columns) instead of "
            "one length per key (dim=1, along each row)",
            _safe(lambda q, k: (k / k.norm(dim=0)) @ q / q.norm()), "keys.norm(dim=1, keepdim=True)"),
    Mistake("you divided by the key lengths without keepdim=True: the (n,) lengths were broadcast "
            "across the columns, so column i was divided by the length of key i",
            _safe(lambda q, k: (k / k.norm(dim=1)) @ q / q.norm()),
            "keep the axis: keys.norm(dim=1, keepdim=True) has shape (n, 1) and divides each row"),
    Mistake("you divided by the squared lengths |q|² |k|² instead of the lengths |q| |k|",
            _safe(lambda q, k: (k @ q) / (q @ q) / (k * k).sum(dim=1)),
            "use .norm() (a square root of the sum of squares), not the sum of squares"),
    Mistake("you returned the cosine distance 1 - cos instead of the cosine similarity",
            _safe(lambda q, k: 1 - cosine_score(q, k)), "return cos itself: the larger, the more similar"),
    Mistake("you returned the angle (arccos of the cosine) instead of the cosine",
            _safe(lambda q, k: torch.arccos(cosine_score(q, k).clamp(-1, 1))), "drop the arccos"),
    Mistake("you divided by the sum of the key lengths instead of each key's own length",
            _safe(lambda q, k: (k @ q) / (q.norm() * k.norm(dim=1).sum())),
            "divide score j by k_j's length only"),
    Mistake("your answer has shape (n, 1): the query was used as a column and the axis was kept",
            _safe(lambda q, k: cosine_score(q, k)[:, None]), "return a 1-D tensor of shape (n,)"),
    Mistake("your answer has shape (1, n): drop the extra axis",
            _safe(lambda q, k: cosine_score(q, k)[None, :]), "return a 1-D tensor of shape (n,)"),
]


def check_cosine_against_keys(fn) -> CheckResult:
    """Check a learner's ``cosine_against_keys(query (d,), keys (n, d)) -> (n,)``."""
    return check_function(fn, exercise="cosine_against_keys", reference=cosine_against_keys,
                          cases=_cosine_cases(), mistakes=_COSINE_MISTAKES, shape_names="(n,)")


# --------------------------------------------------------------------------- exercise 2: additive
def additive_against_keys(query: torch.Tensor, keys: torch.Tensor, W_q: torch.Tensor, W_k: torch.Tensor,
                          v: torch.Tensor) -> torch.Tensor:
    """Reference: the additive score v^T tanh(W_q q + W_k k_j) of one query against every key.

    Args:
        query: (d_q,).
        keys: (n, d_k).
        W_q: (d_q, d_hidden).
        W_k: (d_k, d_hidden).
        v: (d_hidden,).

    Returns:
        (n,): ``tanh(query @ W_q + keys @ W_k) @ v``.
    """
    return additive_score(query, keys, W_q, W_k, v)


def _additive_case(gen: torch.Generator, d_q: int, d_k: int, d_hidden: int, n: int, scale: float = 1.0) -> tuple:
    return (torch.randn(d_q, generator=gen) * scale, torch.randn(n, d_k, generator=gen) * scale,
            torch.randn(d_q, d_hidden, generator=gen), torch.randn(d_k, d_hidden, generator=gen),
            torch.randn(d_hidden, generator=gen))


def _additive_cases() -> list[Case]:
    gen = torch.Generator().manual_seed(2)  # case 1: pre-activations of both signs, not saturated
    return [
        # everything square: swapped or transposed weights still give the right shape
        Case(_additive_case(gen, 3, 3, 3, 3), "d_q = d_k = d_hidden = n = 3"),
        Case(_additive_case(gen, 2, 4, 5, 3), "d_q=2, d_k=4, d_hidden=5 and n=3 keys"),
        Case(_additive_case(gen, 4, 4, 6, 5, scale=3.0), "long queries and keys, where tanh saturates"),
    ]


def _hidden(q, k, W_q, W_k):
    return q @ W_q + k @ W_k  # (n, d_hidden)


_ADDITIVE_MISTAKES = [
    Mistake("you forgot the tanh: without it the score is linear, v^T W_q q + v^T W_k k",
            _safe(lambda q, k, W_q, W_k, v: _hidden(q, k, W_q, W_k) @ v),
            "apply torch.tanh to q @ W_q + keys @ W_k, then multiply by v"),
    Mistake("you applied tanh after multiplying by v: the tanh belongs inside, on the (n, d_hidden) hidden vectors",
            _safe(lambda q, k, W_q, W_k, v: torch.tanh(_hidden(q, k, W_q, W_k) @ v)),
            "torch.tanh(q @ W_q + keys @ W_k) @ v"),
    Mistake("you applied tanh to the two projections separately, tanh(W_q q) + tanh(W_k k): add first, then tanh",
            _safe(lambda q, k, W_q, W_k, v: (torch.tanh(q @ W_q) + torch.tanh(k @ W_k)) @ v),
            "torch.tanh(q @ W_q + keys @ W_k) @ v"),
    Mistake("you swapped the weights: W_q projects the query and W_k the keys",
            _safe(lambda q, k, W_q, W_k, v: torch.tanh(q @ W_k + k @ W_q) @ v), "query @ W_q + keys @ W_k"),
    Mistake("you projected the keys with W_q too: the keys have their own matrix W_k",
            _safe(lambda q, k, W_q, W_k, v: torch.tanh(q @ W_q + k @ W_q) @ v), "keys @ W_k"),
    Mistake("you projected the query with W_k too: the query has its own matrix W_q",
            _safe(lambda q, k, W_q, W_k, v: torch.tanh(q @ W_k + k @ W_k) @ v), "query @ W_q"),
    Mistake("you summed the hidden vector instead of taking its dot product with v",
            _safe(lambda q, k, W_q, W_k, v: torch.tanh(_hidden(q, k, W_q, W_k)).sum(dim=-1)),
            "multiply by v: (...) @ v"),
    Mistake("you multiplied by the transposed weights (W_q.T, W_k.T): with row vectors, "
            "write query @ W_q, with W_q of shape (d_q, d_hidden)",
            _safe(lambda q, k, W_q, W_k, v: torch.tanh(q @ W_q.T + k @ W_k.T) @ v), "query @ W_q + keys @ W_k"),
    Mistake("you returned the (n, d_hidden) hidden vectors tanh(W_q q + W_k k) without reducing them with v",
            _safe(lambda q, k, W_q, W_k, v: torch.tanh(_hidden(q, k, W_q, W_k))), "finish with @ v"),
    Mistake("you used a sigmoid instead of tanh",
            _safe(lambda q, k, W_q, W_k, v: torch.sigmoid(_hidden(q, k, W_q, W_k)) @ v), "torch.tanh"),
    Mistake("you used ReLU instead of tanh", _safe(lambda q, k, W_q, W_k, v: torch.relu(_hidden(q, k, W_q, W_k)) @ v),
            "torch.tanh"),
    Mistake("you multiplied the two projections instead of adding them: the additive score adds",
            _safe(lambda q, k, W_q, W_k, v: torch.tanh((q @ W_q) * (k @ W_k)) @ v), "query @ W_q + keys @ W_k"),
]


def check_additive_against_keys(fn) -> CheckResult:
    """Check a learner's ``additive_against_keys(query (d_q,), keys (n, d_k), W_q (d_q, d_hidden), W_k (d_k, d_hidden),
    v (d_hidden,)) -> (n,)``."""
    return check_function(fn, exercise="additive_against_keys", reference=additive_against_keys,
                          cases=_additive_cases(), mistakes=_ADDITIVE_MISTAKES, shape_names="(n,)",
                          rtol=1e-5, atol=1e-5)
