import pytest
import torch
import torch.nn.functional as F

from course_lib.blocks import encoder_block_forward, layer_norm
from course_lib.checks.blocks import _block_cases, check_encoder_block_forward, check_layer_norm
from course_lib.checks.core import CORRECT, ERROR, NOT_DONE, WRONG


def _not_done(*args, **kwargs):
    raise NotImplementedError("Your turn")


def _c(x):
    return x - x.mean(-1, keepdim=True)


def _v(x):
    return ((x - x.mean(-1, keepdim=True)) ** 2).mean(-1, keepdim=True)


def _over(dims, unbiased=False):
    def attempt(x, w, b, eps=1e-5):
        m = x.mean(dim=dims, keepdim=True)
        return (x - m) / torch.sqrt(x.var(dim=dims, keepdim=True, unbiased=unbiased) + eps) * w + b
    return attempt


def test_layer_norm_check_accepts_correct_answers():
    assert check_layer_norm(layer_norm).status == CORRECT
    assert check_layer_norm(lambda x, w, b, eps=1e-5: F.layer_norm(x, x.shape[-1:], w, b, eps)).status == CORRECT
    # a different but correct formula: divide by the standard deviation computed with correction=0
    assert check_layer_norm(lambda x, w, b, eps=1e-5: _c(x) * torch.rsqrt(x.var(-1, keepdim=True, correction=0)
                                                                          + eps) * w + b).status == CORRECT


@pytest.mark.parametrize("attempt, fragment", [
    (_not_done, "replace `raise NotImplementedError`"),
    (_over(0), "batch axis B (dim 0)"),
    (_over(1), "time axis T (dim 1)"),
    (_over((0, 1)), "that is batch normalisation"),
    (_over((0, 1, 2)), "over every axis at once"),
    (_over(-1, unbiased=True), "unbiased variance"),
    (lambda x, w, b, eps=1e-5: _c(x) / (torch.sqrt(_v(x)) + eps) * w + b, "eps outside the square root"),
    (lambda x, w, b, eps=1e-5: _c(x) / x.std(-1, keepdim=True, unbiased=False) * w + b, "without eps"),
    (lambda x, w, b, eps=1e-5: _c(x) / (_v(x) + eps) * w + b, "by the variance instead"),
    (lambda x, w, b, eps=1e-5: x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps) * w + b, "RMSNorm"),
    (lambda x, w, b, eps=1e-5: x / torch.sqrt(_v(x) + eps) * w + b, "did not subtract the mean first"),
    (lambda x, w, b, eps=1e-5: _c(x) / torch.sqrt((x * x).mean(-1, keepdim=True) - x.mean(-1, keepdim=True) ** 2
                                                  + eps) * w + b, "E[x²] - E[x]²"),
    (lambda x, w, b, eps=1e-5: F.layer_norm(x, x.shape[-1:], eps=eps), "forgot the gain and the bias"),
    (lambda x, w, b, eps=1e-5: F.layer_norm(x, x.shape[-1:], eps=eps) * w, "forgot the bias"),
    (lambda x, w, b, eps=1e-5: F.layer_norm(x, x.shape[-1:], eps=eps) + b, "forgot the weight"),
    (lambda x, w, b, eps=1e-5: (F.layer_norm(x, x.shape[-1:], eps=eps) + b) * w, "bias before multiplying"),
    (lambda x, w, b, eps=1e-5: F.layer_norm(x, x.shape[-1:], eps=eps) * b + w, "swapped weight and bias"),
    (lambda x, w, b, eps=1e-5: F.layer_norm(x, x.shape[-1:], w, b, 1e-5), "ignored the eps argument"),
    (lambda x, w, b, eps=1e-5: (x - x.mean(-1)) / torch.sqrt(x.var(-1, unbiased=False) + eps) * w + b,
     "without keepdim=True"),
    (lambda x, w, b, eps=1e-5: layer_norm(x, w, b, eps).numpy(), "expected a torch tensor"),
    (lambda x, w, b, eps=1e-5: layer_norm(x, w, b, eps)[..., :-1], "expected shape"),
    (lambda x, w, b, eps=1e-5: x.sub_(x.mean(-1, keepdim=True)), "changed its input in place"),
])
def test_layer_norm_check_names_each_mistake(attempt, fragment):
    result = check_layer_norm(attempt)
    assert result.status in (WRONG, NOT_DONE) and fragment in result.message, result


def test_eps_placement_is_caught_on_tiny_features_and_the_case_is_named():
    result = check_layer_norm(lambda x, w, b, eps=1e-5: _c(x) / (torch.sqrt(_v(x)) + eps) * w + b)
    assert result.status == WRONG and "tiny features" in result.message  # the first case where it shows
    result = check_layer_norm(lambda x, w, b, eps=1e-5: F.layer_norm(x, x.shape[-1:], w, b, 1e-5))
    assert "ignored the eps argument" in result.message and "eps=0.1" in result.message


def test_layer_norm_check_reports_errors():
    result = check_layer_norm(lambda x, w, b: x)  # no eps parameter: the eps=0.1 case passes one
    assert result.status in (WRONG, ERROR)
    result = check_layer_norm(lambda x, w, b, eps=1e-5: x.mean(dim=5))
    assert result.status == ERROR and "IndexError" in result.message


def _post(x, a, f, n1, n2):
    return encoder_block_forward(x, a, f, n1, n2, False)


def _pre(x, a, f, n1, n2):
    return encoder_block_forward(x, a, f, n1, n2, True)


def _split(post, pre):
    return lambda x, a, f, n1, n2, nf: pre(x, a, f, n1, n2) if nf else post(x, a, f, n1, n2)


def test_block_check_accepts_the_reference_and_a_loop_written_solution():
    assert check_encoder_block_forward(encoder_block_forward).status == CORRECT

    def written_out(x, self_attn, ff, norm1, norm2, norm_first):
        for sublayer, norm in ((self_attn, norm1), (ff, norm2)):
            x = x + sublayer(norm(x)) if norm_first else norm(x + sublayer(x))
        return x

    assert check_encoder_block_forward(written_out).status == CORRECT


@pytest.mark.parametrize("attempt, fragment", [
    (_not_done, "replace `raise NotImplementedError`"),
    (lambda x, a, f, n1, n2, nf: encoder_block_forward(x, a, f, n1, n2, not nf), "swapped post-LN and pre-LN"),
    (_split(lambda x, a, f, n1, n2: n2(f(n1(a(x)))), lambda x, a, f, n1, n2: f(n2(a(n1(x))))),
     "residual connections are missing"),
    (_split(lambda x, a, f, n1, n2: n2(f(n1(x + a(x)))), _pre), "around the feed-forward sublayer is missing"),
    (_split(_post, lambda x, a, f, n1, n2: (lambda y: y + f(n2(y)))(x + a(n1(x)))) if False else
     _split(_post, lambda x, a, f, n1, n2: (lambda y: y + f(n2(y)))(a(n1(x)))),
     "around the self-attention sublayer is missing"),
    (_split(_post, lambda x, a, f, n1, n2: (lambda y: n2(y) + f(n2(y)))(n1(x) + a(n1(x)))),
     "added the *normalised* input as the residual"),
    (_split(lambda x, a, f, n1, n2: n2(n1(x + a(x)) + f(x)), _pre), "to the block's input x"),
    (_split(_post, lambda x, a, f, n1, n2: x + a(n1(x)) + f(n2(x))), "to the block's input x"),
    (_split(lambda x, a, f, n1, n2: (lambda y: n2(y + a(y)))(n1(x + f(x))), _pre), "feed-forward sublayer before"),
    (lambda x, a, f, n1, n2, nf: encoder_block_forward(x, a, f, n2, n1, nf), "swapped the two layer norms"),
    (lambda x, a, f, n1, n2, nf: encoder_block_forward(x, a, f, n1, n1, nf), "used norm1 for both"),
    (_split(_post, lambda x, a, f, n1, n2: n2(_pre(x, a, f, n1, n2))), "also normalised the block's output"),
    (_split(lambda x, a, f, n1, n2: (lambda y: y + n2(f(y)))(x + n1(a(x))), _pre),
     "normalised before adding the residual"),
    (_split(lambda x, a, f, n1, n2: n1(x + a(x)), lambda x, a, f, n1, n2: x + a(n1(x))),
     "left out the feed-forward sublayer"),
    (lambda x, a, f, n1, n2, nf: encoder_block_forward(x, a, f, n1, n2, nf)[:, :1], "expected shape"),
])
def test_block_check_names_each_mistake(attempt, fragment):
    result = check_encoder_block_forward(attempt)
    assert result.status in (WRONG, NOT_DONE) and fragment in result.message, result


def test_block_mistakes_only_in_pre_ln_are_reported_on_a_pre_ln_case():
    result = check_encoder_block_forward(_split(_post, lambda x, a, f, n1, n2: x + a(n1(x)) + f(n2(x))))
    assert "pre-LN (norm_first=True)" in result.message


def test_block_cases_have_distinct_norms_and_cover_both_settings():
    cases = _block_cases()
    assert {case.args[-1] for case in cases} == {False, True}
    for case in cases:
        n1, n2 = case.args[3], case.args[4]
        assert not torch.allclose(n1.weight, n2.weight)
