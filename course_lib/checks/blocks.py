"""Notebook 08's exercises: layer normalisation by hand, and the forward pass of an encoder block."""
from __future__ import annotations

import torch
from torch import nn

from course_lib.blocks import FeedForward, encoder_block_forward, layer_norm
from course_lib.checks.core import Case, CheckResult, Mistake, check_function
from course_lib.multihead import MultiHeadAttention

# --- exercise 1: layer_norm -------------------------------------------------------------------------------------

# Float32 sums over d features are rounded differently by different correct formulas: on tokens with a
# mean of ~1000, torch.nn.LayerNorm itself is ~6e-5 away from the exact answer. The reference is computed
# in float64 and the check allows 2e-4.
_LN_TOL = dict(rtol=2e-4, atol=2e-4)


def _layer_norm_exact(x, weight, bias, eps=1e-5):
    return layer_norm(x.double(), weight.double(), bias.double(), eps).to(x.dtype)


def _affine(xhat, w, b):
    return xhat * w + b


def _ln_over(dims, unbiased=False):
    def make(x, w, b, eps=1e-5):
        mean = x.mean(dim=dims, keepdim=True)
        var = x.var(dim=dims, keepdim=True, unbiased=unbiased)
        return _affine((x - mean) / torch.sqrt(var + eps), w, b)
    return make


def _centred(x):
    return x - x.mean(dim=-1, keepdim=True)


def _var(x):
    return x.var(dim=-1, keepdim=True, unbiased=False)


def _square_only(make):
    """A mistake that broadcasts a (B, T) statistic along (T, d_model): only runs when B = T = d_model."""
    return lambda x, w, b, eps=1e-5: make(x, w, b, eps) if x.shape[0] == x.shape[1] == x.shape[2] else None


def _layer_norm_cases() -> list[Case]:
    gen = torch.Generator().manual_seed(808)

    def params(d):
        return 1 + 0.5 * torch.randn(d, generator=gen), 0.5 * torch.randn(d, generator=gen)

    x1 = 2 * torch.randn(2, 3, 4, generator=gen) + 1
    # B = T = d_model: a (B, T) statistic without keepdim broadcasts against (T, d_model) without an error.
    x2 = 3 * torch.randn(3, 3, 3, generator=gen) - 2
    # tiny features (variance ~1e-6, below eps): where eps belongs matters a lot.
    x3 = 1e-3 * torch.randn(2, 3, 5, generator=gen)
    # tokens far from 0 (mean ~1000): E[x^2] - E[x]^2 loses the variance to rounding in float32.
    x4 = torch.randn(1, 3, 6, generator=gen) + 1000
    # a constant token: variance 0, so only eps keeps the division finite.
    x5 = torch.randn(1, 2, 4, generator=gen)
    x5[0, 1] = 3.0
    return [
        Case((x2, *params(3)), "x of shape (B=3, T=3, d_model=3), random weight and bias"),
        Case((x1, *params(4)), "x of shape (B=2, T=3, d_model=4), random weight and bias"),
        Case((x3, *params(5)), "tiny features, variance ~1e-6 (smaller than eps=1e-5)"),
        Case((x5, torch.ones(4), torch.zeros(4)), "a constant token [3, 3, 3, 3] (variance 0), weight 1, bias 0"),
        Case((x4, *params(6)), "tokens with a large mean, ~1000"),
        Case((x1, *params(4)), "x of shape (B=2, T=3, d_model=4) and eps=0.1", {"eps": 0.1}),
    ]


_LAYER_NORM_MISTAKES = [
    Mistake("you normalised over the batch axis B (dim 0): layer norm normalises each token over its own "
            "d_model features", _ln_over(0), "take the mean and variance over dim=-1, with keepdim=True"),
    Mistake("you normalised over the time axis T (dim 1), mixing the tokens of a sentence: layer norm "
            "normalises each token over its own d_model features", _ln_over(1),
            "take the mean and variance over dim=-1, with keepdim=True"),
    Mistake("you normalised each feature over all tokens of the batch (dims 0 and 1): that is batch "
            "normalisation, not layer normalisation", _ln_over((0, 1)),
            "take the mean and variance over dim=-1 only"),
    Mistake("you normalised over every axis at once: each token must be normalised on its own",
            _ln_over((0, 1, 2)), "take the mean and variance over dim=-1 only"),
    Mistake("you used the unbiased variance (dividing by d_model - 1, torch.var's default): layer norm "
            "uses the biased one, dividing by d_model", _ln_over(-1, unbiased=True),
            "x.var(dim=-1, keepdim=True, unbiased=False), or ((x - mean)**2).mean(dim=-1, keepdim=True)"),
    Mistake("you ignored the eps argument and used 1e-5 whatever eps was passed",
            lambda x, w, b, eps=1e-5: layer_norm(x, w, b, 1e-5), "use the eps that the function receives"),
    Mistake("you added eps outside the square root, sqrt(var) + eps: it belongs inside, sqrt(var + eps) "
            "(the difference shows when the variance is small)",
            lambda x, w, b, eps=1e-5: _affine(_centred(x) / (torch.sqrt(_var(x)) + eps), w, b),
            "divide by torch.sqrt(var + eps)"),
    Mistake("you divided by the standard deviation without eps: a constant token has std 0, and 0 / 0 "
            "gives nan", lambda x, w, b, eps=1e-5: _affine(_centred(x) / torch.sqrt(_var(x)), w, b),
            "divide by torch.sqrt(var + eps)"),
    Mistake("you divided by the variance instead of the standard deviation (its square root)",
            lambda x, w, b, eps=1e-5: _affine(_centred(x) / (_var(x) + eps), w, b),
            "divide by torch.sqrt(var + eps)"),
    Mistake("you did not subtract the mean: dividing by the root mean square is RMSNorm, not layer norm",
            lambda x, w, b, eps=1e-5: _affine(x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps), w, b),
            "subtract x.mean(dim=-1, keepdim=True) before dividing"),
    Mistake("you divided by the standard deviation but did not subtract the mean first",
            lambda x, w, b, eps=1e-5: _affine(x / torch.sqrt(_var(x) + eps), w, b),
            "compute (x - mean) / sqrt(var + eps)"),
    Mistake("you computed the variance as E[x²] - E[x]²: correct on paper, but for tokens with a large mean "
            "the two big numbers cancel and float32 rounding destroys the variance",
            lambda x, w, b, eps=1e-5: _affine(
                _centred(x) / torch.sqrt(x.pow(2).mean(-1, keepdim=True) - x.mean(-1, keepdim=True) ** 2 + eps),
                w, b),
            "subtract the mean first, then average the squares: ((x - mean)**2).mean(dim=-1, keepdim=True)"),
    Mistake("you forgot the gain and the bias: the answer is the normalised x, before * weight + bias",
            lambda x, w, b, eps=1e-5: _centred(x) / torch.sqrt(_var(x) + eps), "return x_hat * weight + bias"),
    Mistake("you forgot the bias: add it after multiplying by the weight",
            lambda x, w, b, eps=1e-5: _centred(x) / torch.sqrt(_var(x) + eps) * w, "return x_hat * weight + bias"),
    Mistake("you forgot the weight (the gain): multiply by it before adding the bias",
            lambda x, w, b, eps=1e-5: _centred(x) / torch.sqrt(_var(x) + eps) + b, "return x_hat * weight + bias"),
    Mistake("you added the bias before multiplying by the weight: (x_hat + bias) * weight",
            lambda x, w, b, eps=1e-5: (_centred(x) / torch.sqrt(_var(x) + eps) + b) * w,
            "return x_hat * weight + bias"),
    Mistake("you swapped weight and bias: x_hat * bias + weight",
            lambda x, w, b, eps=1e-5: _centred(x) / torch.sqrt(_var(x) + eps) * b + w,
            "return x_hat * weight + bias"),
    Mistake("you took the mean and the variance without keepdim=True: the (B, T) statistics broadcast "
            "against the last two axes (T, d_model), so the wrong numbers were subtracted and divided by",
            _square_only(lambda x, w, b, eps: _affine((x - x.mean(-1)) / torch.sqrt(_var(x).squeeze(-1) + eps), w, b)),
            "use keepdim=True so the statistics have shape (B, T, 1)"),
]


def check_layer_norm(fn) -> CheckResult:
    """Check a learner's ``layer_norm(x, weight, bias, eps=1e-5)``: (B, T, d_model) -> (B, T, d_model)."""
    return check_function(fn, exercise="layer_norm", reference=_layer_norm_exact, cases=_layer_norm_cases(),
                          mistakes=_LAYER_NORM_MISTAKES, shape_names="(B, T, d_model)", **_LN_TOL)


# --- exercise 2: encoder_block_forward ----------------------------------------------------------------------------


class _SelfAttention(nn.Module):
    """Multi-head self-attention that returns only its output, as the exercise's ``self_attn`` does."""

    def __init__(self, d_model: int, h: int):
        super().__init__()
        self.mha = MultiHeadAttention(d_model, h)

    def forward(self, x):
        return self.mha(x)[0]


def _sublayers(d_model: int, seed: int):
    """Random self-attention, feed-forward and two layer norms with different, non-trivial weights."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        attn = _SelfAttention(d_model, 2).eval()
        ff = FeedForward(d_model, 4 * d_model).eval()
        norms = [nn.LayerNorm(d_model), nn.LayerNorm(d_model)]
        with torch.no_grad():
            for norm in norms:
                norm.weight.copy_(1 + 0.5 * torch.randn(d_model))
                norm.bias.copy_(0.5 * torch.randn(d_model))
            # larger sublayer outputs, so that every misplaced residual or norm shows in the values
            ff.linear2.weight.mul_(3.0)
            attn.mha.w_o.weight.mul_(3.0)
    return attn, ff, norms[0], norms[1]


def _block_cases() -> list[Case]:
    gen = torch.Generator().manual_seed(809)
    cases = []
    for norm_first, seed in ((False, 1), (True, 2), (False, 3), (True, 4)):
        d_model = 8 if seed <= 2 else 4
        x = 2 * torch.randn(2, 3, d_model, generator=gen) + 0.5
        setting = "pre-LN (norm_first=True)" if norm_first else "post-LN (norm_first=False)"
        cases.append(Case((x, *_sublayers(d_model, seed), norm_first),
                          f"{setting}, x of shape {tuple(x.shape)}"))
    return cases


def _forward(post, pre):
    """A wrong answer given by one function for post-LN and another for pre-LN."""
    return lambda x, a, f, n1, n2, norm_first: (pre if norm_first else post)(x, a, f, n1, n2)


def _ref(x, a, f, n1, n2, norm_first):
    return encoder_block_forward(x, a, f, n1, n2, norm_first)


def _post_then(x, a, f, n1, n2, second):
    x = n1(x + a(x))
    return second(x)


def _pre_then(x, a, f, n1, n2, second):
    x = x + a(n1(x))
    return second(x)


_BLOCK_MISTAKES = [
    Mistake("you swapped post-LN and pre-LN: norm_first=True means normalise *before* each sublayer "
            "(x + sublayer(norm(x))), False means after the residual sum (norm(x + sublayer(x)))",
            lambda x, a, f, n1, n2, nf: _ref(x, a, f, n1, n2, not nf),
            "if norm_first: x = x + self_attn(norm1(x)) ... else: x = norm1(x + self_attn(x)) ..."),
    Mistake("the residual connections are missing: each sublayer's output must be added to its input",
            _forward(lambda x, a, f, n1, n2: n2(f(n1(a(x)))),
                     lambda x, a, f, n1, n2: f(n2(a(n1(x))))),
            "add the input back: x + sublayer(...)"),
    Mistake("the residual connection around the feed-forward sublayer is missing",
            _forward(lambda x, a, f, n1, n2: _post_then(x, a, f, n1, n2, lambda y: n2(f(y))),
                     lambda x, a, f, n1, n2: _pre_then(x, a, f, n1, n2, lambda y: f(n2(y)))),
            "the feed-forward sublayer needs its own residual: x + ff(...)"),
    Mistake("the residual connection around the self-attention sublayer is missing",
            _forward(lambda x, a, f, n1, n2: (lambda y: n2(y + f(y)))(n1(a(x))),
                     lambda x, a, f, n1, n2: (lambda y: y + f(n2(y)))(a(n1(x)))),
            "the attention sublayer needs its own residual: x + self_attn(...)"),
    Mistake("in pre-LN you added the *normalised* input as the residual, norm(x) + sublayer(norm(x)): the "
            "residual must carry x itself, so the stream is never normalised inside the block",
            _forward(lambda x, a, f, n1, n2: _ref(x, a, f, n1, n2, False),
                     lambda x, a, f, n1, n2: (lambda y: n2(y) + f(n2(y)))(n1(x) + a(n1(x)))),
            "h = norm1(x); x = x + self_attn(h); and the same with norm2 and ff"),
    Mistake("you applied the feed-forward sublayer to the block's input x instead of to the output of the "
            "attention sublayer: the two sublayers must run one after the other",
            _forward(lambda x, a, f, n1, n2: n2(n1(x + a(x)) + f(x)),
                     lambda x, a, f, n1, n2: x + a(n1(x)) + f(n2(x))),
            "overwrite x after the attention sublayer, then feed that x to the feed-forward sublayer"),
    Mistake("you ran the feed-forward sublayer before the attention sublayer: attention comes first",
            _forward(lambda x, a, f, n1, n2: (lambda y: n2(y + a(y)))(n1(x + f(x))),
                     lambda x, a, f, n1, n2: (lambda y: y + a(n2(y)))(x + f(n1(x)))),
            "self-attention first (with norm1), then the feed-forward network (with norm2)"),
    Mistake("you swapped the two layer norms: norm1 belongs to the attention sublayer, norm2 to the "
            "feed-forward sublayer", lambda x, a, f, n1, n2, nf: _ref(x, a, f, n2, n1, nf),
            "use norm1 around self_attn and norm2 around ff"),
    Mistake("you used norm1 for both sublayers: norm2 has its own weights and belongs to the feed-forward "
            "sublayer", lambda x, a, f, n1, n2, nf: _ref(x, a, f, n1, n1, nf),
            "use norm1 around self_attn and norm2 around ff"),
    Mistake("in pre-LN you also normalised the block's output: a pre-LN block returns x + ff(norm2(x)) "
            "unnormalised (a final LayerNorm comes once, at the end of the whole stack)",
            _forward(lambda x, a, f, n1, n2: _ref(x, a, f, n1, n2, False),
                     lambda x, a, f, n1, n2: n2(_ref(x, a, f, n1, n2, True))),
            "return x + ff(norm2(x))"),
    Mistake("in post-LN you normalised before adding the residual, x + norm(sublayer(x)): the norm comes "
            "after the sum, norm(x + sublayer(x))",
            _forward(lambda x, a, f, n1, n2: (lambda y: y + n2(f(y)))(x + n1(a(x))),
                     lambda x, a, f, n1, n2: _ref(x, a, f, n1, n2, True)),
            "x = norm1(x + self_attn(x)); return norm2(x + ff(x))"),
    Mistake("you left out the feed-forward sublayer: a block has two sublayers, attention and feed-forward",
            _forward(lambda x, a, f, n1, n2: n1(x + a(x)), lambda x, a, f, n1, n2: x + a(n1(x))),
            "after the attention sublayer, add the feed-forward sublayer with its residual and norm2"),
]


def check_encoder_block_forward(fn) -> CheckResult:
    """Check a learner's ``encoder_block_forward(x, self_attn, ff, norm1, norm2, norm_first)``."""
    return check_function(fn, exercise="encoder_block_forward", reference=_ref, cases=_block_cases(),
                          mistakes=_BLOCK_MISTAKES, shape_names="(B, T, d_model)", rtol=1e-4, atol=1e-5)
