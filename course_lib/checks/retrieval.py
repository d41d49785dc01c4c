"""Notebook 01's exercises: a lookup as a matrix product, and a soft lookup."""
from __future__ import annotations

import torch

from course_lib.checks.core import Case, CheckResult, Mistake, check_function
from course_lib.retrieval import one_hot, soft_lookup
from course_lib.shapes import check_shape

# --- exercise 1: lookup as a matrix product ----------------------------------------------------------


def lookup_by_matmul(query: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """The reference: ``query @ values``; (n,) and (n, d) -> (d,).

    With a one-hot query this is the row of ``values`` where the 1 sits; with any other
    weights it is the weighted sum of the rows.
    """
    check_shape(query, "n", name="query")
    check_shape(values, "n d", name="values", n=query.shape[0])
    return query @ values


def _lookup_cases() -> list[Case]:
    gen = torch.Generator().manual_seed(101)
    return [
        Case((one_hot(2, 4), torch.randn(4, 3, generator=gen)), "a one-hot query for key 2 of n=4, values (4, 3)"),
        # n == d: the transposed matrix and an elementwise product still give a plausible shape.
        Case((one_hot(0, 3), torch.randn(3, 3, generator=gen)), "a one-hot query for key 0 of n=3, values (3, 3)"),
        Case((one_hot(4, 5), torch.randn(5, 2, generator=gen)), "a one-hot query for the last key, values (5, 2)"),
        Case((torch.tensor([0.2, 0.5, 0.3]), torch.randn(3, 4, generator=gen)),
             "a query that is not one-hot: weights (0.2, 0.5, 0.3), values (3, 4)"),
    ]


def _elementwise(query, values):
    """What ``*`` gives instead of ``@``: the rows scaled, never added up: (n, d)."""
    return query[:, None] * values


def _elementwise_broadcast(query, values):
    """``query * values`` when n == d broadcasts along the columns: column j scaled by query[j]."""
    return query * values if values.shape[-1] == query.shape[0] else query[:, None] * values


def _transposed(query, values):
    """``values @ query`` (or ``query @ values.T``): only defined when n == d; mixes columns, not rows."""
    return values @ query if values.shape[0] == values.shape[1] else torch.zeros(0)


_LOOKUP_MISTAKES = [
    Mistake("you returned the index of the 1, not the row of values it points to",
            lambda q, v: torch.argmax(q), "multiply: query @ values gives the whole row"),
    Mistake("you multiplied elementwise (`*`): that scales the rows but never adds them up, so the result "
            "keeps shape (n, d)", _elementwise, "use the matrix product `@`: query @ values has shape (d,)"),
    Mistake("you multiplied elementwise (`*`): with n == d it broadcasts along the columns instead of adding up "
            "the rows", _elementwise_broadcast, "use the matrix product `@`: query @ values has shape (d,)"),
    Mistake("you multiplied the other way round (values @ query, or query @ values.T): that picks column i "
            "instead of row i",
            _transposed, "each row of values belongs to one key: query @ values, with values of shape (n, d)"),
    Mistake("you indexed the row at the largest entry of the query (values[query.argmax()]): right for a "
            "one-hot query, but a matrix product also mixes the rows when the query is not one-hot",
            lambda q, v: v[torch.argmax(q)], "write it as a matrix product: query @ values"),
    Mistake("you summed all the rows of values, ignoring the query", lambda q, v: v.sum(dim=0),
            "let the query choose: query @ values"),
]


def check_lookup_by_matmul(fn) -> CheckResult:
    """Check a learner's ``lookup_by_matmul(query, values)``; (n,), (n, d) -> (d,)."""
    return check_function(fn, exercise="lookup_by_matmul", reference=lookup_by_matmul, cases=_lookup_cases(),
                          mistakes=_LOOKUP_MISTAKES, shape_names="(d,)")


# --- exercise 2: soft lookup --------------------------------------------------------------------------


def soft_lookup_reference(query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """The reference: ``softmax(query @ keys.T, dim=-1) @ values``; (d,) or (m, d) -> (d_v,) or (m, d_v)."""
    return soft_lookup(query, keys, values)


def _soft_cases() -> list[Case]:
    gen = torch.Generator().manual_seed(202)
    # scores 900, 899, -305 and 0: exp(900) overflows float32, a stable softmax does not
    big_query = torch.tensor([10.0, 0.0, -5.0])
    big_keys = torch.tensor([[90.0, 1.0, 0.0], [89.9, 0.0, 0.0], [-30.0, 5.0, 1.0], [0.0, 0.0, 0.0]])
    return [
        Case((torch.tensor([1.0, -0.5]), torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 1.0]]),
              torch.tensor([[1.0, 2.0, 0.0], [0.0, 1.0, 1.0], [3.0, 0.0, 1.0]])),
             "query (2,), keys (3, 2), values (3, 3)"),
        Case((torch.randn(4, generator=gen), torch.randn(5, 4, generator=gen), torch.randn(5, 2, generator=gen)),
             "query (d=4,), keys (n=5, 4), values (5, d_v=2)"),
        # keys and values of the same shape but different: scoring against the values shows.
        Case((torch.randn(3, generator=gen), torch.randn(4, 3, generator=gen), torch.randn(4, 3, generator=gen)),
             "query (3,), keys (4, 3) and different values (4, 3)"),
        # a batch with m == n: a softmax over the wrong axis keeps the right shape.
        Case((torch.randn(3, 2, generator=gen), torch.randn(3, 2, generator=gen), torch.randn(3, 4, generator=gen)),
             "a batch of m=3 queries (3, 2), keys (3, 2), values (3, 4)"),
        Case((torch.randn(2, 3, generator=gen), torch.randn(5, 3, generator=gen), torch.randn(5, 2, generator=gen)),
             "a batch of m=2 queries (2, 3), keys (5, 3), values (5, 2)"),
        Case((big_query, big_keys, torch.randn(4, 2, generator=gen)),
             "large scores (900, 899, -305 and 0)"),
    ]


def _scores(q, k):
    return q @ k.T


def _naive_softmax(s):
    e = torch.exp(s)
    return e / e.sum(dim=-1, keepdim=True)


_SOFT_HINT = "scores = query @ keys.T; weights = torch.softmax(scores, dim=-1); return weights @ values"

_SOFT_MISTAKES = [
    Mistake("you used the raw scores as weights: without a softmax they can be negative and do not sum to 1",
            lambda q, k, v: _scores(q, k) @ v, _SOFT_HINT),
    Mistake("you divided the scores by their sum without exponentiating first: negative scores give negative "
            "weights (and a sum near 0 blows up)",
            lambda q, k, v: (_scores(q, k) / _scores(q, k).sum(dim=-1, keepdim=True)) @ v,
            "exponentiate, then normalise: torch.softmax(scores, dim=-1)"),
    Mistake("you took the softmax over the wrong axis (dim=0, across the queries of the batch): each query's "
            "weights must sum to 1 over the keys",
            lambda q, k, v: torch.softmax(_scores(q, k), dim=0) @ v, "use dim=-1: the keys are the last axis"),
    Mistake("you returned the weights, not the weighted average of the values",
            lambda q, k, v: torch.softmax(_scores(q, k), dim=-1), "finish with weights @ values"),
    Mistake("you weighted each value row but did not add them up (an elementwise product keeps one row per key)",
            lambda q, k, v: torch.softmax(_scores(q, k), dim=-1)[..., None] * v,
            "use the matrix product: weights @ values"),
    Mistake("you did a hard lookup (argmax): that returns the single best value, not a weighted average",
            lambda q, k, v: v[torch.argmax(_scores(q, k), dim=-1)], _SOFT_HINT),
    Mistake("you scored the query against the values instead of the keys",
            lambda q, k, v: torch.softmax(q @ v.T, dim=-1) @ v if v.shape == k.shape else torch.zeros(0),
            "the keys decide the weights, the values are what gets averaged: scores = query @ keys.T"),
    Mistake("you averaged every value equally, whatever the query",
            lambda q, k, v: torch.softmax(torch.zeros_like(_scores(q, k)), dim=-1) @ v, _SOFT_HINT),
    Mistake("your softmax overflowed: exp of a score in the hundreds is inf, and inf / inf is NaN",
            lambda q, k, v: _naive_softmax(_scores(q, k)) @ v,
            "use torch.softmax, which subtracts the largest score before exponentiating (notebook 03 shows why)"),
]


def check_soft_lookup(fn) -> CheckResult:
    """Check a learner's ``soft_lookup(query, keys, values)``; (d,) or (m, d) -> (d_v,) or (m, d_v)."""
    return check_function(fn, exercise="soft_lookup", reference=soft_lookup_reference, cases=_soft_cases(),
                          mistakes=_SOFT_MISTAKES, shape_names="(d_v,) for one query, (m, d_v) for a batch",
                          rtol=1e-4, atol=1e-5)
