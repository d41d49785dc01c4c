"""Notebook 12's checks: the right answers pass, stubs are "not done", each known mistake is named."""
import itertools
import math

import pytest
import torch

from course_lib.checks.decoding import (_BEAM_MISTAKES, _TOP_P_MISTAKES, _beam_cases, _top_p_cases, beam_step,
                                        check_beam_step, check_top_p_filter, top_p_filter)
from course_lib.decoding import filter_logits


def _stub(*_):
    raise NotImplementedError


# --- beam_step ------------------------------------------------------------------------------------

def _beam_step_by_loops(log_probs, beam_scores):
    """An independent answer: list every (score, beam, token), sort, keep the first K."""
    K, n_vocab = log_probs.shape
    candidates = [(float(beam_scores[b] + log_probs[b, v]), b, v) for b, v in itertools.product(range(K), range(n_vocab))]
    best = sorted(candidates, key=lambda c: -c[0])[:K]
    return (torch.tensor([c[0] for c in best]), torch.tensor([c[1] for c in best]),
            torch.tensor([c[2] for c in best]))


def test_the_reference_beam_step_agrees_with_an_exhaustive_listing():
    for case in _beam_cases():
        ours, theirs = beam_step(*case.args), _beam_step_by_loops(*case.args)
        assert torch.allclose(ours[0], theirs[0].to(ours[0].dtype))
        assert torch.equal(ours[1], theirs[1]) and torch.equal(ours[2], theirs[2])


def test_a_correct_beam_step_passes_and_a_stub_is_not_done():
    assert check_beam_step(beam_step).passed
    assert check_beam_step(_beam_step_by_loops).passed
    assert check_beam_step(lambda lp, bs: list(beam_step(lp, bs))).passed  # a list is fine too
    assert check_beam_step(_stub).status == "not done"


def test_beam_step_cases_have_no_ties():
    for case in _beam_cases():
        log_probs, beam_scores = case.args
        total = (beam_scores[:, None] + log_probs).reshape(-1)
        finite = total[torch.isfinite(total)].sort(descending=True).values
        K = log_probs.shape[0]
        assert (finite[:K] - finite[1:K + 1]).min() > 1e-3, case.description


@pytest.mark.parametrize("mistake", _BEAM_MISTAKES, ids=lambda m: m.message[:40])
def test_each_beam_mistake_is_named(mistake):
    def learner(log_probs, beam_scores):
        table = mistake.make(log_probs, beam_scores)  # (3, K) as the check compares it
        return table[0].float(), table[1].long(), table[2].long()

    result = check_beam_step(learner)
    assert result.status == "wrong" and result.message.startswith(mistake.message), result


def test_beam_step_answers_of_the_wrong_form_are_explained():
    result = check_beam_step(lambda lp, bs: beam_step(lp, bs)[:2])
    assert result.status == "error" and "three things" in result.message
    result = check_beam_step(lambda lp, bs: tuple(x[:, None] for x in beam_step(lp, bs)))
    assert result.status == "error" and "shape (K,)" in result.message
    assert check_beam_step("beam_step").status == "error"


def test_an_unknown_wrong_beam_step_is_still_wrong():
    result = check_beam_step(lambda lp, bs: (beam_step(lp, bs)[0] - 0.5, *beam_step(lp, bs)[1:]))
    assert result.status == "wrong" and "scores, beams, tokens" in result.message


# --- top_p_filter ---------------------------------------------------------------------------------

def _top_p_by_loops(logits, p):
    """An independent answer: walk each row's tokens from the most likely, until the mass reaches p."""
    out = torch.full_like(logits, -math.inf)
    for row in range(logits.shape[0]):
        probs = torch.softmax(logits[row].double(), dim=-1).tolist()
        mass = 0.0
        for token in sorted(range(len(probs)), key=lambda v: -probs[v]):
            out[row, token] = logits[row, token]
            mass += probs[token]
            if mass >= p:
                break
    return out


def test_the_reference_top_p_is_filter_logits_and_agrees_with_a_loop():
    for case in _top_p_cases():
        logits, p = case.args
        assert torch.equal(top_p_filter(logits, p), filter_logits(logits, top_p=p))
        assert torch.equal(top_p_filter(logits, p), _top_p_by_loops(logits, p))


def test_top_p_cases_stay_clear_of_the_boundary():
    """No cumulative probability lies within 1e-3 of p, so float32 and float64 answers agree."""
    for case in _top_p_cases():
        logits, p = case.args
        cum = torch.softmax(logits.double(), -1).sort(-1, descending=True).values.cumsum(-1)
        assert (cum - p).abs().min() > 1e-3, case.description


def test_a_correct_top_p_passes_and_a_stub_is_not_done():
    assert check_top_p_filter(top_p_filter).passed
    assert check_top_p_filter(_top_p_by_loops).passed
    assert check_top_p_filter(_stub).status == "not done"


@pytest.mark.parametrize("mistake", _TOP_P_MISTAKES, ids=lambda m: m.message[:40])
def test_each_top_p_mistake_is_named(mistake):
    result = check_top_p_filter(mistake.make)
    assert result.status == "wrong" and result.message.startswith(mistake.message), result


def test_an_unknown_wrong_top_p_names_the_tokens(recwarn):
    result = check_top_p_filter(lambda lg, p: filter_logits(lg, top_p=min(0.99, p + 0.2)))
    assert result.status == "wrong" and "the nucleus is tokens" in result.message
    result = check_top_p_filter(lambda lg, p: filter_logits(lg, top_p=p) * 1.1)
    assert result.status == "wrong" and "changed their logits" in result.message
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]  # nothing leaks to stderr
