import pytest
import torch
import torch.nn.functional as F
from torch import nn

from course_lib.blocks import FeedForward, layer_norm
from course_lib.checks.blocks import _reference_block, check_encoder_block, check_layer_norm, check_top_k_routing
from course_lib.checks.core import CORRECT, ERROR, NOT_DONE, WRONG
from course_lib.moe import top_k_routing
from course_lib.multihead import MultiHeadAttention


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


class Block(nn.Module):
    """A learner's pre-LN block; ``body(x, attn, ff, norm1, norm2)`` is its forward (default: right)."""

    body = None
    ignore_mask = False

    def __init__(self, d_model, h, d_ff):
        super().__init__()
        self.self_attn = MultiHeadAttention(d_model, h)
        self.ff = FeedForward(d_model, d_ff)
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)

    def forward(self, x, mask=None):
        attn = lambda t: self.self_attn(t, mask=None if self.ignore_mask else mask)[0]  # noqa: E731
        if self.body is None:
            x = x + attn(self.norm1(x))
            return x + self.ff(self.norm2(x))
        return type(self).body(x, attn, self.ff, self.norm1, self.norm2)


def block(body=None, **attributes):
    return type("LearnerBlock", (Block,), {"body": staticmethod(body) if body else None, **attributes})


def _pre(x, a, f, n1, n2):
    x = x + a(n1(x))
    return x + f(n2(x))


def test_block_check_accepts_a_correct_block_and_a_loop_written_one():
    assert check_encoder_block(block()).status == CORRECT

    def written_out(x, a, f, n1, n2):
        for sublayer, norm in ((a, n1), (f, n2)):
            x = x + sublayer(norm(x))
        return x

    assert check_encoder_block(block(written_out)).status == CORRECT


@pytest.mark.parametrize("body, fragment", [
    (lambda x, a, f, n1, n2: (lambda y: n2(y + f(y)))(n1(x + a(x))), "you built a post-LN block"),
    (lambda x, a, f, n1, n2: f(n2(a(n1(x)))), "residual connections are missing"),
    (lambda x, a, f, n1, n2: f(n2(x + a(n1(x)))), "around the feed-forward sublayer is missing"),
    (lambda x, a, f, n1, n2: (lambda y: y + f(n2(y)))(a(n1(x))), "around the self-attention sublayer is missing"),
    (lambda x, a, f, n1, n2: (lambda y: n2(y) + f(n2(y)))(n1(x) + a(n1(x))),
     "added the *normalised* input as the residual"),
    (lambda x, a, f, n1, n2: x + a(n1(x)) + f(n2(x)), "to the block's input x"),
    (lambda x, a, f, n1, n2: (lambda y: y + a(n2(y)))(x + f(n1(x))), "feed-forward sublayer before"),
    (lambda x, a, f, n1, n2: _pre(x, a, f, n2, n1), "swapped the two layer norms"),
    (lambda x, a, f, n1, n2: _pre(x, a, f, n1, n1), "used norm1 for both"),
    (lambda x, a, f, n1, n2: n2(_pre(x, a, f, n1, n2)), "also normalised the block's output"),
    (lambda x, a, f, n1, n2: x + a(n1(x)), "left out the feed-forward sublayer"),
    (lambda x, a, f, n1, n2: _pre(x, a, f, n1, n2)[:, :1], "expected shape"),
])
def test_block_check_names_each_mistake(body, fragment):
    result = check_encoder_block(block(body))
    assert result.status == WRONG and fragment in result.message, result


def test_a_block_that_ignores_the_mask_is_named_on_the_masked_case():
    result = check_encoder_block(block(ignore_mask=True))
    assert result.status == WRONG and "the mask is ignored" in result.message
    assert "padding mask" in result.message


def test_the_tuple_of_multi_head_attention_gets_a_hint():
    class AddsTheTuple(Block):
        def forward(self, x, mask=None):
            return x + self.self_attn(self.norm1(x), mask=mask)  # a tuple: TypeError

    result = check_encoder_block(AddsTheTuple)
    assert result.status == ERROR and "(output, weights)" in result.hint


def test_missing_or_renamed_sublayers_are_named():
    class NoSecondNorm(Block):
        def __init__(self, d_model, h, d_ff):
            super().__init__(d_model, h, d_ff)
            del self.norm2

    result = check_encoder_block(NoSecondNorm)
    assert result.status == WRONG and "no parameter norm2.weight (8,)" in result.message
    assert "nn.LayerNorm(d_model)" in result.hint


def test_the_reference_block_has_two_different_norms_and_is_pre_ln():
    ref = _reference_block()
    assert ref.norm_first and not torch.allclose(ref.norm1.weight, ref.norm2.weight)
    assert not torch.allclose(ref.norm1.weight, torch.ones(8))


# --- exercise 3: top_k_routing ----------------------------------------------------------------------------------

def _routing_from(probs_fn=lambda l: torch.softmax(l, dim=-1), renormalize=True, largest=True):
    def attempt(router_logits, k):
        probs = probs_fn(router_logits)
        top, experts = probs.topk(k, dim=-1, largest=largest)
        return (top / top.sum(-1, keepdim=True) if renormalize else top), experts
    return attempt


def _softmax_of_chosen_logits(router_logits, k):
    top, experts = router_logits.topk(k, dim=-1)
    return torch.softmax(top, dim=-1), experts


def _ascending_experts(router_logits, k):
    weights, experts = top_k_routing(router_logits, k)
    order = experts.argsort(dim=-1)
    return weights.gather(-1, order), experts.gather(-1, order)


def test_top_k_routing_check_accepts_correct_answers():
    assert check_top_k_routing(top_k_routing).status == CORRECT
    assert check_top_k_routing(_routing_from()).status == CORRECT
    assert check_top_k_routing(_softmax_of_chosen_logits).status == CORRECT  # Mixtral's way, the same weights
    assert check_top_k_routing(_ascending_experts).status == CORRECT  # any order, each weight beside its expert


def _no_grad_routing(router_logits, k):
    with torch.no_grad():
        return top_k_routing(router_logits, k)


def _rebuilt_from_numbers(router_logits, k):
    weights, experts = top_k_routing(router_logits, k)
    return torch.tensor(weights.tolist()), experts


def _denominator_detached_attempt(router_logits, k):
    top, experts = torch.softmax(router_logits, dim=-1).topk(k, dim=-1)
    return top / top.sum(-1, keepdim=True).detach(), experts


def _experts_as_float(router_logits, k):
    weights, experts = top_k_routing(router_logits, k)
    return weights, experts.float()


def _mismatched_order(router_logits, k):
    weights, experts = top_k_routing(router_logits, k)
    return weights, experts.flip(-1)


@pytest.mark.parametrize("attempt, fragment", [
    (_not_done, "replace `raise NotImplementedError`"),
    (_routing_from(lambda l: torch.softmax(l, dim=0)), "softmax over dim=0 (the tokens"),
    (_routing_from(lambda l: torch.softmax(l, dim=-2)), "instead of over the experts, dim=-1"),
    (_routing_from(lambda l: torch.softmax(l, dim=1) if l.ndim == 3 else torch.softmax(l, dim=-1)),
     "softmax over dim=-2 (the positions)"),
    (_routing_from(renormalize=False), "not renormalised over the k chosen experts"),
    (_routing_from(lambda l: l), "renormalised the raw logits"),
    (_routing_from(largest=False), "*lowest*-scoring experts"),
    (lambda l, k: (torch.full(l.shape[:-1] + (k,), 1.0 / k), l.topk(k, -1).indices), "the same weight 1/k"),
    (_no_grad_routing, "the gradient is cut"),
    (lambda l, k: tuple(t.detach() for t in top_k_routing(l, k)), "the gradient is cut"),
    (_rebuilt_from_numbers, "the gradient is cut"),
    (_denominator_detached_attempt, "detached the sum you divide by"),
    (lambda l, k: top_k_routing(l, k)[::-1], "you returned (experts, weights)"),
    (_experts_as_float, "integer indices"),
    (lambda l, k: top_k_routing(l, k)[0], "expected a pair (weights, experts)"),
    (lambda l, k: top_k_routing(l, min(k + 1, l.shape[-1])), "expected shape"),
    (_mismatched_order, "the values differ"),
    (lambda l, k: 1 / 0, "raised ZeroDivisionError"),
])
def test_top_k_routing_check_names_the_mistake(attempt, fragment):
    result = check_top_k_routing(attempt)
    assert not result.passed
    assert fragment in result.message, result.message


def test_top_k_routing_check_refuses_a_non_function():
    result = check_top_k_routing(top_k_routing(torch.randn(3, 4), 2))
    assert result.status == ERROR and "expected a function" in result.message
