"""Notebook 08's exercises: layer normalisation by hand, a pre-LN encoder block built as a module, and the
top-k routing step of a mixture of experts."""
from __future__ import annotations

import torch
from torch import nn

from course_lib.blocks import EncoderBlock, layer_norm
from course_lib.checks.core import (CORRECT, ERROR, NOT_DONE, WRONG, Case, CheckResult, Mistake, ModuleMistake,
                                   check_function, check_module, compare_answer, describe_value, same_value,
                                   seeded_module)
from course_lib.moe import top_k_routing

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


# --- exercise 3: the top-k routing step of a mixture of experts (section 9) ----------------------------------

def _route(probs, k, largest=True):
    """Pick k experts from scores ``probs`` (..., E) and divide the picked scores by their sum."""
    top, experts = probs.topk(k, dim=-1, largest=largest)
    return top / top.sum(dim=-1, keepdim=True), experts


def _denominator_detached(logits, k):
    top, experts = torch.softmax(logits, dim=-1).topk(k, dim=-1)
    return top / top.sum(dim=-1, keepdim=True).detach(), experts


_ROUTING_MISTAKES = [
    Mistake("you took the softmax over dim=0 (the tokens; the sentences of a (B, T, E) input) instead of over the "
            "experts, dim=-1: each expert's scores were normalised across tokens, so a token's probabilities do "
            "not sum to 1", lambda logits, k: _route(torch.softmax(logits, dim=0), k),
            "torch.softmax(router_logits, dim=-1): one distribution over the E experts per token"),
    Mistake("you took the softmax over dim=-2 (the positions) instead of over the experts, dim=-1: each expert's "
            "scores were normalised across positions, so a token's probabilities do not sum to 1",
            lambda logits, k: _route(torch.softmax(logits, dim=-2), k),
            "torch.softmax(router_logits, dim=-1): one distribution over the E experts per token"),
    Mistake("the weights are not renormalised over the k chosen experts: you kept the top-k probabilities of the "
            "softmax over all E experts, so a token's weights sum to less than 1",
            lambda logits, k: torch.softmax(logits, dim=-1).topk(k, dim=-1),
            "divide the k probabilities by their sum: top / top.sum(dim=-1, keepdim=True)"),
    Mistake("you renormalised the raw logits instead of probabilities: take the softmax first (or a softmax over "
            "the k chosen logits, which gives the same weights)",
            _route,
            "probs = torch.softmax(router_logits, dim=-1), then the top k of probs"),
    Mistake("you gave each chosen expert the same weight 1/k: the router's probabilities must weight the experts, "
            "or the router gets no gradient from the task",
            lambda logits, k: (torch.full(logits.shape[:-1] + (k,), 1.0 / k), logits.topk(k, -1).indices),
            "weights = the chosen probabilities divided by their sum"),
    Mistake("you chose the k *lowest*-scoring experts: topk takes the largest by default (largest=True)",
            lambda logits, k: _route(torch.softmax(logits, dim=-1), k, largest=False),
            "probs.topk(k, dim=-1) keeps the k largest"),
]


def _routing_without_gradient(logits, k):
    with torch.no_grad():
        return top_k_routing(logits, k)


_CUT_HINT = "compute everything from router_logits with torch operations: softmax, topk, then divide by the sum"
# Mistakes whose numbers are right: only the gradient sent back through the weights shows them.
_GRADIENT_CUT = Mistake("the values are right, but the gradient is cut: your weights do not depend on router_logits "
                        "in autograd (.detach(), torch.no_grad() or a new tensor built from numbers), so the router "
                        "could never learn", _routing_without_gradient, _CUT_HINT)
_DETACHED_SUM = Mistake("the values are right, but you detached the sum you divide by: the gradient no longer sees "
                        "that raising one weight lowers the others", _denominator_detached, _CUT_HINT)
_ROUTING_GRADIENT_MISTAKES = [_GRADIENT_CUT, _DETACHED_SUM]


def _routing_cases() -> list[Case]:
    gen = torch.Generator().manual_seed(909)
    return [
        Case((2 * torch.randn(6, 4, generator=gen), 2), "router_logits of shape (N=6, E=4), k=2"),
        Case((2 * torch.randn(5, 5, generator=gen), 3), "router_logits of shape (N=5, E=5), k=3"),
        Case((2 * torch.randn(2, 3, 6, generator=gen), 2), "router_logits of shape (B=2, T=3, E=6), k=2"),
        Case((2 * torch.randn(4, 8, generator=gen), 1), "router_logits of shape (N=4, E=8), k=1"),
    ]


def _as_dense(weights, experts, n_experts):
    """(..., k) weights and experts -> (..., E) with each weight at its expert's place, 0 elsewhere."""
    return torch.zeros(weights.shape[:-1] + (n_experts,), dtype=weights.dtype).scatter(-1, experts, weights)


def _routing_gradient(fn, logits, k, seed):
    """The gradient of a fixed random function of the routing with respect to the logits (None if cut)."""
    leaf = logits.clone().requires_grad_(True)
    weights, experts = fn(leaf, k)
    if not isinstance(weights, torch.Tensor) or not weights.requires_grad:
        return None
    probe = torch.randn(logits.shape, generator=torch.Generator().manual_seed(seed))
    (_as_dense(weights, experts.long(), logits.shape[-1]) * probe).sum().backward()
    return leaf.grad


def _routing_problem(answer, case: Case) -> str | None:
    """What is wrong with a learner's (weights, experts); None when both are right (in any consistent order)."""
    logits, k = case.args
    where = f" (on {case.description})"
    if not isinstance(answer, tuple) or len(answer) != 2:
        return f"expected a pair (weights, experts), got {describe_value(answer)}{where}"
    weights, experts = answer
    if not isinstance(experts, torch.Tensor) or not isinstance(weights, torch.Tensor):
        return f"expected two tensors (weights, experts), got {describe_value(weights)} and {describe_value(experts)}"
    if weights.dtype == torch.int64 and experts.is_floating_point():
        return f"you returned (experts, weights): return the weights first, then the experts{where}"
    expected_shape = tuple(logits.shape[:-1]) + (k,)
    for name, value in (("weights", weights), ("experts", experts)):
        if tuple(value.shape) != expected_shape:
            return f"{name}: expected shape {expected_shape} = (..., k), got {tuple(value.shape)}{where}"
    if experts.is_floating_point() or experts.dtype == torch.bool:
        return (f"experts must hold integer indices (torch.int64, as topk returns them), got {experts.dtype}"
                f"{where}")
    ref_weights, ref_experts = top_k_routing(logits, k)
    if not torch.equal(experts.sort(-1).values, ref_experts.sort(-1).values):
        return f"you chose other experts than the k with the highest router probability{where}"
    mine = _as_dense(weights.detach(), experts, logits.shape[-1])
    theirs = _as_dense(ref_weights, ref_experts, logits.shape[-1])
    return compare_answer(mine, theirs, shape_names="(..., E), each weight placed at its expert")


def check_top_k_routing(fn) -> CheckResult:
    """Check a learner's ``top_k_routing(router_logits, k) -> (weights, experts)``.

    ``router_logits`` is (..., E); weights and experts are (..., k): the k experts with the highest
    softmax probability and their probabilities renormalised to sum to 1. The order of the k is free
    as long as each weight stands beside its expert. The check also sends a gradient back through the
    weights and compares what reaches the logits, so a routing step the router cannot learn from fails.
    """
    exercise = "top_k_routing"
    if not callable(fn):
        return CheckResult(exercise, ERROR, f"expected a function, got {describe_value(fn)}",
                           "pass the function itself, without calling it: check_top_k_routing(top_k_routing)")
    for seed, case in enumerate(_routing_cases()):
        logits, k = case.args
        try:
            answer = fn(logits.clone(), k)
        except NotImplementedError:
            return CheckResult(exercise, NOT_DONE,
                               "replace `raise NotImplementedError` with your code, then run this check again.")
        except Exception as exc:
            return CheckResult(exercise, ERROR, f"your function raised {type(exc).__name__}: {exc} "
                                                f"(on {case.description})")
        problem = _routing_problem(answer, case)
        if problem is not None:
            for mistake in _ROUTING_MISTAKES:
                wrong = mistake.make(logits, k)
                if _routing_problem(wrong, case) is not None and isinstance(answer, tuple) and len(answer) == 2 \
                        and _same_routing(answer, wrong, logits.shape[-1]):
                    return CheckResult(exercise, WRONG, f"{mistake.message} (on {case.description})", mistake.hint)
            return CheckResult(exercise, WRONG, problem)
        theirs = _routing_gradient(top_k_routing, logits, k, seed)
        try:
            mine = _routing_gradient(fn, logits, k, seed)
        except Exception as exc:
            return CheckResult(exercise, ERROR, f"backward through your weights raised {type(exc).__name__}: {exc}")
        if mine is None:
            return CheckResult(exercise, WRONG, _GRADIENT_CUT.message, _GRADIENT_CUT.hint)
        if not same_value(mine, theirs, rtol=1e-4, atol=1e-6):
            if same_value(mine, _routing_gradient(_DETACHED_SUM.make, logits, k, seed), rtol=1e-4, atol=1e-6):
                return CheckResult(exercise, WRONG, _DETACHED_SUM.message, _DETACHED_SUM.hint)
            return CheckResult(exercise, WRONG, "the values are right, but the gradient that reaches router_logits "
                               f"differs from the reference's (on {case.description})", _CUT_HINT)
    return CheckResult(exercise, CORRECT, "the right experts with the right weights, in every case, and the "
                                          "gradient reaches the router's logits as it should.")




def _same_routing(a, b, n_experts) -> bool:
    try:
        return same_value(_as_dense(a[0].detach(), a[1].long(), n_experts), _as_dense(b[0].detach(), b[1], n_experts))
    except Exception:
        return False
