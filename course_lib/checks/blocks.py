"""Notebook 08's exercises: layer normalisation by hand, and a pre-LN encoder block built as a module."""
from __future__ import annotations

import torch
from torch import nn

from course_lib.blocks import EncoderBlock, layer_norm
from course_lib.checks.core import (ERROR, Case, CheckResult, Mistake, ModuleMistake, check_function, check_module,
                                   seeded_module)

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


# --- exercise 2: build a pre-LN encoder block ------------------------------------------------------------------

BLOCK_SIZES = {"d_model": 8, "h": 2, "d_ff": 32}


def _block_with_distinct_norms() -> nn.Module:
    block = EncoderBlock(**BLOCK_SIZES, dropout=0.0, norm_first=True)
    d_model = BLOCK_SIZES["d_model"]
    with torch.no_grad():
        for norm in (block.norm1, block.norm2):  # two different norms, neither the identity
            norm.weight.copy_(1 + 0.5 * torch.randn(d_model))
            norm.bias.copy_(0.5 * torch.randn(d_model))
        # larger sublayer outputs, so that every misplaced residual or norm shows in the values
        block.ff.linear2.weight.mul_(3.0)
        block.self_attn.w_o.weight.mul_(3.0)
    return block


def _reference_block() -> nn.Module:
    """A pre-LN EncoderBlock with non-trivial layer norms and large sublayer outputs."""
    return seeded_module(_block_with_distinct_norms, seed=808)


def _block_with(body):
    """A mistake given as ``body(x, attn, ff, norm1, norm2)`` on the reference block's sublayers."""
    def make(ref, x, mask=None):
        return body(x, lambda t: ref.self_attn(t, mask=mask)[0], ref.ff, ref.norm1, ref.norm2)
    return make


def _pre_ln(x, a, f, n1, n2):
    x = x + a(n1(x))
    return x + f(n2(x))


def _mask_ignored(ref, x, mask=None):
    return _pre_ln(x, lambda t: ref.self_attn(t)[0], ref.ff, ref.norm1, ref.norm2)


_BLOCK_MISTAKES = [
    ModuleMistake("you built a post-LN block, norm(x + sublayer(x)): the exercise asks for pre-LN, "
                  "x + sublayer(norm(x)), which normalises each sublayer's input and leaves the residual "
                  "stream alone",
                  _block_with(lambda x, a, f, n1, n2: (lambda y: n2(y + f(y)))(n1(x + a(x)))),
                  "x = x + self_attn(norm1(x)); then x = x + ff(norm2(x))"),
    ModuleMistake("the residual connections are missing: each sublayer's output must be added to its input",
                  _block_with(lambda x, a, f, n1, n2: f(n2(a(n1(x))))), "add the input back: x + sublayer(...)"),
    ModuleMistake("the residual connection around the feed-forward sublayer is missing",
                  _block_with(lambda x, a, f, n1, n2: f(n2(x + a(n1(x))))),
                  "the feed-forward sublayer needs its own residual: x + ff(norm2(x))"),
    ModuleMistake("the residual connection around the self-attention sublayer is missing",
                  _block_with(lambda x, a, f, n1, n2: (lambda y: y + f(n2(y)))(a(n1(x)))),
                  "the attention sublayer needs its own residual: x + self_attn(norm1(x))"),
    ModuleMistake("you added the *normalised* input as the residual, norm(x) + sublayer(norm(x)): the residual "
                  "must carry x itself, so the stream is never normalised inside the block",
                  _block_with(lambda x, a, f, n1, n2: (lambda y: n2(y) + f(n2(y)))(n1(x) + a(n1(x)))),
                  "h = self.norm1(x); x = x + attention of h; and the same with norm2 and ff"),
    ModuleMistake("you applied the feed-forward sublayer to the block's input x instead of to the output of the "
                  "attention sublayer: the two sublayers must run one after the other",
                  _block_with(lambda x, a, f, n1, n2: x + a(n1(x)) + f(n2(x))),
                  "overwrite x after the attention sublayer, then feed that x to the feed-forward sublayer"),
    ModuleMistake("you ran the feed-forward sublayer before the attention sublayer: attention comes first",
                  _block_with(lambda x, a, f, n1, n2: (lambda y: y + a(n2(y)))(x + f(n1(x)))),
                  "self-attention first (with norm1), then the feed-forward network (with norm2)"),
    ModuleMistake("you swapped the two layer norms: norm1 belongs to the attention sublayer, norm2 to the "
                  "feed-forward sublayer", _block_with(lambda x, a, f, n1, n2: _pre_ln(x, a, f, n2, n1)),
                  "use norm1 before self_attn and norm2 before ff"),
    ModuleMistake("you used norm1 for both sublayers: norm2 has its own weights and belongs to the feed-forward "
                  "sublayer", _block_with(lambda x, a, f, n1, n2: _pre_ln(x, a, f, n1, n1)),
                  "use norm1 before self_attn and norm2 before ff"),
    ModuleMistake("you also normalised the block's output: a pre-LN block returns x + ff(norm2(x)) unnormalised "
                  "(a final LayerNorm comes once, at the end of the whole stack)",
                  _block_with(lambda x, a, f, n1, n2: n2(_pre_ln(x, a, f, n1, n2))), "return x + self.ff(self.norm2(x))"),
    ModuleMistake("you left out the feed-forward sublayer: a block has two sublayers, attention and feed-forward",
                  _block_with(lambda x, a, f, n1, n2: x + a(n1(x))),
                  "after the attention sublayer, add the feed-forward sublayer with its residual and norm2"),
    ModuleMistake("the mask is ignored: pass it on to the attention, self.self_attn(h, mask=mask), so that no "
                  "token reads the padding", _mask_ignored, "self.self_attn(h, mask=mask)[0]"),
]

_TUPLE_HINT = ("MultiHeadAttention returns a pair (output, weights): take the output, "
               "self.self_attn(h, mask=mask)[0]")


def _block_cases() -> list[Case]:
    gen = torch.Generator().manual_seed(809)
    d_model = BLOCK_SIZES["d_model"]
    x5, x4 = (2 * torch.randn(2, t, d_model, generator=gen) + 0.5 for t in (5, 4))
    keep = torch.tensor([[True] * 5, [True, True, True, False, False]])
    return [
        Case((x5,), "x of shape (B=2, T=5, d_model=8), no mask"),
        Case((x5,), "x (2, 5, 8) with a padding mask (B, 1, 1, T): the 2nd sentence has 2 pads",
             kwargs={"mask": keep[:, None, None, :]}),
        Case((x4,), "x of shape (B=2, T=4, d_model=8), no mask"),
    ]


def check_encoder_block(cls) -> CheckResult:
    """Check a learner's pre-LN encoder block class, built as ``cls(d_model=8, h=2, d_ff=32)``.

    Its submodules must be ``self_attn`` (a ``MultiHeadAttention(d_model, h)``), ``ff`` (a
    ``FeedForward(d_model, d_ff)``), ``norm1`` and ``norm2`` (``nn.LayerNorm(d_model)``);
    ``forward(x, mask=None)`` maps x (B, T, d_model) to (B, T, d_model).
    """
    result = check_module(cls, exercise="EncoderBlock (pre-LN)", init_kwargs=dict(BLOCK_SIZES),
                          make_reference=_reference_block, cases=_block_cases(), mistakes=_BLOCK_MISTAKES,
                          parameter_hint="self.self_attn = MultiHeadAttention(d_model, h), self.ff = FeedForward("
                                         "d_model, d_ff), self.norm1 and self.norm2 = nn.LayerNorm(d_model)",
                          success="your block matches course_lib's pre-LN EncoderBlock with the same weights: "
                                  "with and without a padding mask, output and gradients.", rtol=1e-4, atol=1e-5)
    if result.status == ERROR and "tuple" in result.message:
        return CheckResult(result.exercise, ERROR, result.message, _TUPLE_HINT)
    return result
