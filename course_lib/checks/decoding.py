"""Notebook 12's exercises: one step of beam search, and top-p (nucleus) filtering."""
from __future__ import annotations

import dataclasses
import math
import warnings

import numpy as np
import torch

from course_lib.checks.core import Case, CheckResult, Mistake, check_function
from course_lib.decoding import filter_logits


# --- exercise 1: one step of beam search ---------------------------------------------------------

def beam_step(log_probs: torch.Tensor, beam_scores: torch.Tensor):
    """Reference: the K best one-token extensions of K live hypotheses, best first.

    Args:
        log_probs: (K, n_vocab) next-token log-probabilities of each live hypothesis (beam).
        beam_scores: (K,) total log-probability of each beam so far (``-inf`` for an empty slot).

    Returns:
        ``(scores, beams, tokens)``, three (K,) tensors: the new total log-probabilities, which beam
        each extension grows, and the token it appends; sorted from the best score down.
    """
    K, n_vocab = log_probs.shape
    total = beam_scores[:, None] + log_probs  # (K, n_vocab): every one-token extension
    scores, index = total.reshape(-1).topk(K)  # over all K * n_vocab candidates at once
    return scores, index // n_vocab, index % n_vocab


def _table(result, K: int) -> torch.Tensor:
    """``(scores, beams, tokens)`` -> a (3, K) float64 table, with a clear error for any other form."""
    if not isinstance(result, (tuple, list)) or len(result) != 3:
        kind = f"a {type(result).__name__}" + (f" of length {len(result)}" if isinstance(result, (tuple, list)) else "")
        raise TypeError(f"beam_step must return three things, (scores, beams, tokens), got {kind}")
    rows = []
    for name, value in zip(("scores", "beams", "tokens"), result):
        value = torch.as_tensor(value)
        if value.shape != (K,):
            raise ValueError(f"{name} should have shape (K,) = ({K},), got {tuple(value.shape)}")
        rows.append(value.detach().double())
    return torch.stack(rows)  # (3, K)


def _reference_table(log_probs, beam_scores):
    return _table(beam_step(log_probs, beam_scores), log_probs.shape[0])


def _flat_top(total: torch.Tensor, K: int, largest: bool = True):
    return total.reshape(-1).topk(K, largest=largest)


def _no_beam_score(lp, bs):
    K, n_vocab = lp.shape
    scores, index = _flat_top(lp, K)
    return _table((scores, index // n_vocab, index % n_vocab), K)


def _best_token_per_beam(lp, bs):
    K, _ = lp.shape
    best, tokens = (bs[:, None] + lp).max(dim=1)  # (K,): each beam's single best extension
    order = best.argsort(descending=True)
    return _table((best[order], order, tokens[order]), K)


def _first_beam_only(lp, bs):
    K, _ = lp.shape
    scores, tokens = (bs[0] + lp[0]).topk(K)
    return _table((scores, torch.zeros(K, dtype=torch.long), tokens), K)


def _decoded_with_k(lp, bs):
    K, _ = lp.shape
    scores, index = _flat_top(bs[:, None] + lp, K)
    return _table((scores, index // K, index % K), K)


def _transposed(lp, bs):
    K, n_vocab = lp.shape
    scores, index = _flat_top((bs[:, None] + lp).T, K)  # (n_vocab, K) flattened ...
    return _table((scores, index // n_vocab, index % n_vocab), K)  # ... but read as if it were (K, n_vocab)


def _multiplied(lp, bs):
    K, n_vocab = lp.shape
    scores, index = _flat_top(bs[:, None] * lp, K)
    return _table((scores, index // n_vocab, index % n_vocab), K)


def _lowest(lp, bs):
    K, n_vocab = lp.shape
    scores, index = _flat_top(bs[:, None] + lp, K, largest=False)
    return _table((scores, index // n_vocab, index % n_vocab), K)


def _token_score_only(lp, bs):
    K, n_vocab = lp.shape
    _, index = _flat_top(bs[:, None] + lp, K)
    beams, tokens = index // n_vocab, index % n_vocab
    return _table((lp[beams, tokens], beams, tokens), K)


def _swapped(lp, bs):
    K, n_vocab = lp.shape
    scores, index = _flat_top(bs[:, None] + lp, K)
    return _table((scores, index % n_vocab, index // n_vocab), K)


_BEAM_MISTAKES = [
    Mistake("you ranked the extensions by the new token's log-probability alone: add each beam's score "
            "first, since a hypothesis's log-probability is the sum over all its tokens",
            _no_beam_score, "total = beam_scores[:, None] + log_probs  # (K, n_vocab)"),
    Mistake("your scores are the new token's log-probability only; the score you return must be the whole "
            "hypothesis's (beam score + token log-probability)",
            _token_score_only, "return the values of the top-K of beam_scores[:, None] + log_probs"),
    Mistake("you multiplied the beam's score by the log-probability: in log space probabilities multiply by "
            "ADDING their logs", _multiplied, "total = beam_scores[:, None] + log_probs"),
    Mistake("you kept only the single best token of each beam; the K best extensions may come several from one "
            "beam and none from another: take the top K over all K * n_vocab candidates at once",
            _best_token_per_beam, "flatten the (K, n_vocab) totals to (K * n_vocab,) and call .topk(K) once"),
    Mistake("all your candidates come from the first beam: take the top K over all K * n_vocab candidates, not "
            "within one beam", _first_beam_only, "flatten the (K, n_vocab) totals to (K * n_vocab,) and call .topk(K)"),
    Mistake("you decoded the flat index with K: in a (K, n_vocab) table flattened row by row, "
            "beam = index // n_vocab and token = index % n_vocab", _decoded_with_k,
            "each row (beam) holds n_vocab candidates"),
    Mistake("you flattened the (n_vocab, K) transpose but read the index as if it came from the (K, n_vocab) table",
            _transposed, "flatten total (K, n_vocab) itself with total.reshape(-1), then beam = index // n_vocab"),
    Mistake("you kept the K lowest scores: log-probabilities are higher (closer to 0) for likelier hypotheses",
            _lowest, "topk keeps the largest values by default"),
    Mistake("you returned beams and tokens in swapped places: the order is (scores, beams, tokens)",
            _swapped, "beam = index // n_vocab, token = index % n_vocab"),
]


def _log_probs(K: int, n_vocab: int, gen: torch.Generator, scale: float = 2.0) -> torch.Tensor:
    return torch.log_softmax(scale * torch.randn(K, n_vocab, generator=gen), dim=-1)


def _beam_cases() -> list[Case]:
    gen = torch.Generator().manual_seed(1201)
    return [
        Case((_log_probs(3, 7, gen), torch.tensor([-1.1, -1.6, -3.4])),
             "K = 3 beams, n_vocab = 7 tokens, beam scores (-1.1, -1.6, -3.4)"),
        Case((_log_probs(4, 4, gen), torch.tensor([-0.7, -0.9, -2.0, -2.2])),
             "K = 4 beams, n_vocab = 4 tokens (a square table)"),
        Case((_log_probs(3, 6, gen, scale=1.0), torch.tensor([0.0, -math.inf, -math.inf])),
             "the first step: one live beam (score 0) and two empty slots (score -inf), n_vocab = 6"),
        Case((_log_probs(2, 9, gen, scale=3.0), torch.tensor([-5.0, -5.5])),
             "K = 2 beams, n_vocab = 9 tokens, beam scores (-5.0, -5.5)"),
    ]


def check_beam_step(fn) -> CheckResult:
    """Check a learner's ``beam_step(log_probs (K, n_vocab), beam_scores (K,)) -> (scores, beams, tokens)``.

    The three (K,) results are compared as one (3, K) table: row 0 the scores, row 1 the beams,
    row 2 the tokens.
    """
    if not callable(fn):
        return check_function(fn, exercise="beam_step", reference=_reference_table, cases=_beam_cases())

    def as_table(log_probs, beam_scores):
        return _table(fn(log_probs, beam_scores), log_probs.shape[0])

    cases = _beam_cases()
    result = check_function(as_table, exercise="beam_step", reference=_reference_table, cases=cases,
                            mistakes=_BEAM_MISTAKES, shape_names="(3, K): rows scores, beams, tokens",
                            rtol=1e-5, atol=1e-5)
    if result.status == "wrong" and not any(result.message.startswith(m.message) for m in _BEAM_MISTAKES):
        better = _beam_difference(as_table, cases)
        if better:
            result = dataclasses.replace(result, message=better)
    return result


def _beam_difference(as_table, cases) -> str | None:
    """For a wrong answer no known mistake explains: which of scores, beams, tokens differ, and how."""
    for case in cases:
        try:
            answer = as_table(*(a.clone() for a in case.args))
        except Exception:  # noqa: BLE001 - check_function has reported errors already
            return None
        expected = _reference_table(*case.args)
        for row, name in enumerate(("scores", "beams", "tokens")):
            if not torch.allclose(answer[row], expected[row], rtol=1e-5, atol=1e-5):
                def show(values):
                    return "[" + ", ".join(f"{v:.4g}" if row == 0 else f"{v:.0f}" for v in values.tolist()) + "]"
                return (f"your {name} differ (on {case.description}): expected {show(expected[row])}, "
                        f"got {show(answer[row])}; the order is (scores, beams, tokens), best first")
    return None


# --- exercise 2: top-p (nucleus) filtering -------------------------------------------------------

def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Reference: keep the smallest set of most likely tokens whose probabilities add up to at least p.

    Args:
        logits: (B, n_vocab). p: 0 < p < 1.

    Returns:
        (B, n_vocab): the same logits on the kept tokens, ``-inf`` on the others
        (``course_lib.decoding.filter_logits(logits, top_p=p)``).
    """
    return filter_logits(logits, top_p=p)


def _sorted_parts(logits, dim=-1, descending=True):
    sorted_logits, order = logits.sort(dim=-1, descending=descending)
    probs = torch.softmax(sorted_logits.double(), dim=dim)
    return sorted_logits, order, probs


def _unsort(sorted_values, order):
    return torch.empty_like(sorted_values).scatter(-1, order, sorted_values)


def _masked(logits, keep_sorted, order, fill=-math.inf):
    keep = _unsort(keep_sorted.to(torch.uint8), order).bool()
    return logits.masked_fill(~keep, fill)


def _reference_keep(logits, p):
    return torch.isfinite(filter_logits(logits, top_p=p))


def _excluded_crossing(logits, p):
    _, order, probs = _sorted_parts(logits)
    return _masked(logits, probs.cumsum(-1) < p, order)


def _one_extra(logits, p):
    _, order, probs = _sorted_parts(logits)
    before = probs.cumsum(-1) - probs
    keep = before < p
    keep[:, 1:] |= keep[:, :-1].clone()  # one more token than the nucleus
    return _masked(logits, keep, order)


def _ascending(logits, p):
    _, order, probs = _sorted_parts(logits, descending=False)
    return _masked(logits, probs.cumsum(-1) - probs < p, order)


def _probabilities(logits, p):
    return torch.softmax(logits, dim=-1) * _reference_keep(logits, p)


def _renormalised(logits, p):
    return torch.softmax(filter_logits(logits, top_p=p), dim=-1)


def _zero_not_inf(logits, p):
    return logits.masked_fill(~_reference_keep(logits, p), 0.0)


def _still_sorted(logits, p):
    sorted_logits, _ = logits.sort(dim=-1, descending=True)
    return filter_logits(sorted_logits, top_p=p)


def _summed_logits(logits, p):
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    return _masked(logits, sorted_logits.cumsum(-1) - sorted_logits < p, order)


def _wrong_axis(logits, p):
    sorted_logits, order, _ = _sorted_parts(logits)
    probs = torch.softmax(sorted_logits.double(), dim=0)
    return _masked(logits, probs.cumsum(-1) - probs < p, order)


_TOP_P_MISTAKES = [
    Mistake("you dropped the token that takes the total past p: the nucleus is the smallest set whose "
            "probabilities REACH p, so it includes that token (and always at least the top token)",
            _excluded_crossing, "keep a token when the mass of the tokens BEFORE it is < p: "
            "cumsum(probs) - probs < p"),
    Mistake("you kept one token more than the nucleus", _one_extra,
            "keep a token when the mass of the tokens before it (cumsum - probs) is < p"),
    Mistake("you sorted from least to most likely: the nucleus is made of the MOST likely tokens",
            _ascending, "logits.sort(dim=-1, descending=True)"),
    Mistake("you returned probabilities (with zeros) instead of logits with -inf: sampling applies softmax "
            "to what you return", _probabilities,
            "return logits.masked_fill(~keep, float('-inf'))"),
    Mistake("you returned the renormalised probabilities; the function should return logits, with -inf "
            "where a token is cut (softmax then renormalises by itself)", _renormalised,
            "return logits.masked_fill(~keep, float('-inf'))"),
    Mistake("you set the cut tokens to 0 instead of -inf: a logit of 0 still has a probability after softmax",
            _zero_not_inf, "masked_fill(~keep, float('-inf'))"),
    Mistake("your result is still in sorted order: put each kept logit back at its token's position",
            _still_sorted, "scatter the sorted keep-mask back with the sort's indices, then mask the original logits"),
    Mistake("you added up logits instead of probabilities: take the softmax of the sorted logits first",
            _summed_logits, "probs = torch.softmax(sorted_logits, dim=-1); then cumsum"),
    Mistake("your softmax normalised over the batch (dim 0) instead of the vocabulary (dim -1)",
            _wrong_axis, "torch.softmax(sorted_logits, dim=-1)"),
]


def _top_p_cases() -> list[Case]:
    gen = torch.Generator().manual_seed(1202)
    peaked = torch.tensor([[6.0, 2.0, 1.0, 0.5, 0.0, -1.0],
                           [0.3, 0.2, 0.1, 0.0, -0.1, -0.2]])  # one very sure row, one nearly flat row
    return [
        Case((2.0 * torch.randn(3, 8, generator=gen), 0.9), "logits (B=3, n_vocab=8), p = 0.9"),
        Case((1.5 * torch.randn(5, 5, generator=gen), 0.6), "logits (B=5, n_vocab=5), p = 0.6 (a square input)"),
        Case((peaked, 0.5), "a peaked row (top token 0.97) and a nearly flat row, p = 0.5"),
    ]


def _kept_difference(fn, cases) -> str | None:
    """For a wrong answer no known mistake explains: which tokens were kept, against which should be."""
    for case in cases:
        logits, p = case.args
        try:
            answer = torch.as_tensor(fn(logits.clone(), p))
        except Exception:  # noqa: BLE001 - check_function has reported errors already
            return None
        if answer.shape != logits.shape:
            return None
        expected = top_p_filter(logits, p)
        kept, should = torch.isfinite(answer), torch.isfinite(expected)
        for row in range(logits.shape[0]):
            if not torch.equal(kept[row], should[row]):
                return (f"row {row} of {case.description}: the nucleus is tokens "
                        f"{should[row].nonzero()[:, 0].tolist()}, you kept tokens {kept[row].nonzero()[:, 0].tolist()}")
            if should[row].any() and not torch.allclose(answer[row][should[row]].float(),
                                                        expected[row][should[row]].float(), rtol=1e-5, atol=1e-6):
                return (f"row {row} of {case.description}: you kept the right tokens, but changed their logits; "
                        "return the kept logits unchanged")
    return None


def check_top_p_filter(fn) -> CheckResult:
    """Check a learner's ``top_p_filter(logits (B, n_vocab), p) -> (B, n_vocab)`` against ``filter_logits(logits, top_p=p)``."""
    cases = _top_p_cases()
    with warnings.catch_warnings(), np.errstate(all="ignore"):  # -inf - -inf in the difference report
        warnings.simplefilter("ignore", RuntimeWarning)
        result = check_function(fn, exercise="top_p_filter", reference=top_p_filter, cases=cases,
                                mistakes=_TOP_P_MISTAKES, shape_names="(B, n_vocab)", rtol=1e-5, atol=1e-6)
        if result.status == "wrong" and not any(result.message.startswith(m.message) for m in _TOP_P_MISTAKES):
            better = _kept_difference(fn, cases)
            if better:
                result = dataclasses.replace(result, message=better,
                                             hint="sort descending, softmax, keep a token while the mass before "
                                                  "it is < p, then put the mask back in vocabulary order")
    return result
