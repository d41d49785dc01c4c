import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from course_lib.checks.attention import (attention_numpy, batched_attention, check_attention_numpy,
                                         check_batched_attention)
from course_lib.checks.core import CORRECT, ERROR, NOT_DONE, WRONG


def stub(*args):
    raise NotImplementedError("Your turn")


def _softmax(s, axis=-1):
    e = np.exp(s - s.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _np_weights(q, k, scale=None, axis=-1):
    scale = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
    return _softmax(q @ k.T * scale, axis=axis)


# --- exercise 1: attention in NumPy ----------------------------------------------------------------------

def test_numpy_reference_matches_torch_and_validates():
    rng = np.random.default_rng(0)
    q, k, v = rng.normal(size=(2, 4)), rng.normal(size=(5, 4)), rng.normal(size=(5, 3))
    expected = F.scaled_dot_product_attention(*(torch.from_numpy(a) for a in (q, k, v))).numpy()
    out = attention_numpy(q, k, v)
    assert isinstance(out, np.ndarray) and out.shape == (2, 3)
    assert np.allclose(out, expected)
    big = np.array([[1000.0, 0.0], [0.0, 1.0]])
    assert np.isfinite(attention_numpy(big, big, big)).all()
    with pytest.raises(TypeError, match="q: expected a NumPy array, got Tensor"):
        attention_numpy(torch.zeros(2, 4), k, v)
    with pytest.raises(ValueError, match="k: expected d_k=4, got d_k=3"):
        attention_numpy(q, k[:, :3], v)
    with pytest.raises(ValueError, match="v: expected T_k=5, got T_k=4"):
        attention_numpy(q, k, v[:4])


@pytest.mark.parametrize("attempt", [
    lambda q, k, v: _np_weights(q, k) @ v,
    lambda q, k, v: F.scaled_dot_product_attention(*(torch.from_numpy(a) for a in (q, k, v))).numpy(),
    lambda q, k, v: np.einsum("qk,kd->qd", _softmax(np.einsum("qd,kd->qk", q, k) / np.sqrt(k.shape[1])), v),
])
def test_correct_numpy_attempts_pass(attempt):
    result = check_attention_numpy(attempt)
    assert result.status == CORRECT, result


def _no_keepdims_max(q, k, v):
    s = q @ k.T / np.sqrt(q.shape[-1])
    e = np.exp(s - s.max(axis=-1))
    return e / e.sum(axis=-1, keepdims=True) @ v


def _no_keepdims_sum(q, k, v):
    s = q @ k.T / np.sqrt(q.shape[-1])
    e = np.exp(s - s.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1) @ v


def _global_max(q, k, v):
    s = q @ k.T / np.sqrt(q.shape[-1])
    e = np.exp(s - s.max())
    return e / e.sum(axis=-1, keepdims=True) @ v


def _naive_exp(q, k, v):
    e = np.exp(q @ k.T / np.sqrt(q.shape[-1]))
    return e / e.sum(axis=-1, keepdims=True) @ v


@pytest.mark.parametrize("attempt, fragment", [
    (stub, "replace `raise NotImplementedError`"),
    (lambda q, k, v: _softmax(q @ k / np.sqrt(q.shape[-1])) @ v, "you forgot to transpose k"),
    (lambda q, k, v: _np_weights(q, k, axis=0) @ v, "softmax over axis 0"),
    (lambda q, k, v: _np_weights(q, k), "you returned the attention weights"),
    (lambda q, k, v: v @ _np_weights(q, k), "v @ weights instead of weights @ v"),
    (lambda q, k, v: _np_weights(q, k).T @ v, "weights.T @ v"),
    (lambda q, k, v: _np_weights(q, k, scale=1.0) @ v, "the scale is missing"),
    (lambda q, k, v: _np_weights(q, k, scale=1 / q.shape[1]) @ v, "by d_k instead of sqrt(d_k)"),
    (lambda q, k, v: _np_weights(q, k, scale=math.sqrt(q.shape[1])) @ v, "multiplied the scores by sqrt(d_k)"),
    (lambda q, k, v: _np_weights(q, k, scale=1 / math.sqrt(len(k))) @ v, "number of keys T_k"),
    (lambda q, k, v: _np_weights(q, k, scale=1 / math.sqrt(v.shape[1])) @ v, "sqrt(d_v)"),
    (lambda q, k, v: _np_weights(q, k, scale=1.0) @ v / math.sqrt(q.shape[1]), "after the softmax"),
    (lambda q, k, v: np.exp(q @ k.T / math.sqrt(q.shape[1])) @ v, "you did not normalise"),
    (_naive_exp, "overflow"),
    (_global_max, "maximum of the whole score matrix"),
    (_no_keepdims_max, "row maxima without keepdims=True"),
    (_no_keepdims_sum, "row sums without keepdims=True"),
    (lambda q, k, v: torch.from_numpy(_np_weights(q, k) @ v), "expected a NumPy array, got a tensor"),
    (lambda q, k, v: (_np_weights(q, k) @ v, _np_weights(q, k)), "expected a NumPy array, got a tuple"),
    (lambda q, k, v: (_np_weights(q, k) @ v).T, "the shape is right but the values differ"),
    (lambda q, k, v: (_np_weights(q, k) @ v)[:, :1], "expected shape (3, 3) = (T_q, d_v), got shape (3, 1)"),
])
def test_check_attention_numpy_names_each_mistake(attempt, fragment):
    with np.errstate(all="ignore"):
        result = check_attention_numpy(attempt)
    assert result.status in (WRONG, NOT_DONE), result
    assert fragment in result.message, result


def test_numpy_check_reports_errors_and_names_the_case():
    result = check_attention_numpy(lambda q, k, v: q.reshape(5, -1))
    assert result.status == ERROR and "ValueError" in result.message and "square inputs" in result.message
    with np.errstate(all="ignore"):
        result = check_attention_numpy(_naive_exp)
    assert "large scores" in result.message and "keepdims=True" in result.hint


def test_missing_transpose_is_named_on_square_inputs_not_reported_as_an_error():
    result = check_attention_numpy(lambda q, k, v: _softmax(q @ k / np.sqrt(q.shape[-1])) @ v)
    assert result.status == WRONG and "square inputs" in result.message


# --- exercise 2: batched attention in torch --------------------------------------------------------------

def _scores(q, k, scale=None):
    scale = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
    return q @ k.transpose(-2, -1) * scale


def test_batched_reference_matches_torch_and_validates():
    g = torch.Generator().manual_seed(0)
    q, k, v = torch.randn(2, 3, 4, generator=g), torch.randn(2, 5, 4, generator=g), torch.randn(2, 5, 2, generator=g)
    out = batched_attention(q, k, v)
    assert out.shape == (2, 3, 2)
    assert torch.allclose(out, F.scaled_dot_product_attention(q, k, v), atol=1e-6)
    for b in range(2):  # each sequence on its own
        assert torch.allclose(out[b], F.scaled_dot_product_attention(q[b], k[b], v[b]), atol=1e-6)
    with pytest.raises(ValueError, match="expected 3 axes"):
        batched_attention(q[0], k[0], v[0])
    with pytest.raises(ValueError, match="k: expected B=2, got B=1"):
        batched_attention(q, k[:1], v[:1])


@pytest.mark.parametrize("attempt", [
    lambda q, k, v: torch.softmax(_scores(q, k), dim=-1) @ v,
    lambda q, k, v: torch.bmm(torch.softmax(torch.bmm(q, k.mT) / math.sqrt(k.shape[-1]), dim=2), v),
    lambda q, k, v: F.scaled_dot_product_attention(q, k, v),
    lambda q, k, v: torch.stack([F.scaled_dot_product_attention(q[b], k[b], v[b]) for b in range(len(q))]),
])
def test_correct_batched_attempts_pass(attempt):
    result = check_batched_attention(attempt)
    assert result.status == CORRECT, result


def _flatten(q, k, v):
    B, T, d = q.shape
    w = torch.softmax(q.reshape(-1, d) @ k.reshape(-1, d).T / math.sqrt(d), dim=-1)
    return (w @ v.reshape(-1, v.shape[-1])).reshape(B, T, -1)


@pytest.mark.parametrize("attempt, fragment", [
    (stub, "replace `raise NotImplementedError`"),
    (lambda q, k, v: torch.softmax(q @ k.permute(2, 1, 0) / math.sqrt(q.shape[-1]), dim=-1) @ v, "k.T on a 3-D"),
    (lambda q, k, v: torch.softmax(_scores(q, k), dim=1) @ v, "dim=1, the query axis"),
    (lambda q, k, v: torch.softmax(_scores(q, k), dim=0) @ v, "dim=0, the batch axis"),
    (_flatten, "you mixed the sequences of the batch"),
    (lambda q, k, v: torch.softmax(_scores(q, k), dim=-1), "you returned the attention weights"),
    (lambda q, k, v: torch.softmax(_scores(q, k, 1.0), dim=-1) @ v, "the scale is missing"),
    (lambda q, k, v: torch.softmax(_scores(q, k, 1 / q.shape[-1]), dim=-1) @ v, "by d_k instead of sqrt(d_k)"),
    (lambda q, k, v: torch.softmax(_scores(q, k, 1 / math.sqrt(k.shape[1])), dim=-1) @ v, "k.shape[1]"),
    (lambda q, k, v: torch.softmax(_scores(q, k, 1 / math.sqrt(k.shape[0])), dim=-1) @ v, "k.shape[0]"),
    (lambda q, k, v: torch.softmax(_scores(q, k, 1 / math.sqrt(v.shape[-1])), dim=-1) @ v, "sqrt(d_v)"),
    (lambda q, k, v: (lambda e: e / e.sum(-1, keepdim=True))(torch.exp(_scores(q, k))) @ v, "overflow"),
    (lambda q, k, v: (torch.softmax(_scores(q, k), -1) @ v).numpy(), "expected a torch tensor"),
    (lambda q, k, v: torch.softmax(_scores(q, k), -1) @ v.transpose(-2, -1)
     if q.shape == v.shape else torch.zeros(1), "the shape is right but the values differ"),
])
def test_check_batched_attention_names_each_mistake(attempt, fragment):
    result = check_batched_attention(attempt)
    assert result.status in (WRONG, NOT_DONE), result
    assert fragment in result.message, result


def test_k_dot_T_itself_is_caught_as_the_named_mistake():
    always = torch._C._get_warnAlways()
    torch._C._set_warnAlways(True)  # torch warns about x.T once per process: an earlier test may have used it up
    try:
        with pytest.warns(UserWarning, match="x.T"):
            result = check_batched_attention(lambda q, k, v: torch.softmax(q @ k.T / math.sqrt(q.shape[-1]), -1) @ v)
    finally:
        torch._C._set_warnAlways(always)
    assert result.status == WRONG and "k.T on a 3-D tensor" in result.message and "transpose(-2, -1)" in result.hint


def test_mistake_functions_never_raise_or_warn():
    import warnings

    from course_lib.checks.attention import _BATCHED_MISTAKES, _NUMPY_MISTAKES, _batched_cases, _numpy_cases
    from course_lib.checks.core import _mistaken_answer

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for mistakes, cases in ((_NUMPY_MISTAKES, _numpy_cases()), (_BATCHED_MISTAKES, _batched_cases())):
            for mistake in mistakes:
                for case in cases:
                    _mistaken_answer(mistake, case)  # None where the shapes do not fit, never an exception
