"""Notebook 09's exercises: the decoder block's forward pass, and shifting targets right."""
from __future__ import annotations

import torch
from torch import nn

from course_lib.blocks import FeedForward
from course_lib.checks.core import ERROR, Case, CheckResult, Mistake, check_function
from course_lib.masking import causal_mask
from course_lib.multihead import MultiHeadAttention
from course_lib.transformer import shift_right

# --- exercise 1: the decoder block, post-LN -------------------------------------------------------------


def decoder_block_forward(x: torch.Tensor, memory: torch.Tensor, self_attn: MultiHeadAttention,
                          cross_attn: MultiHeadAttention, ff: nn.Module, norms, tgt_mask=None,
                          memory_mask=None) -> torch.Tensor:
    """One post-LN decoder block, given its sublayers (what ``DecoderBlock(norm_first=False)`` computes).

    Args:
        x: (B, T, d_model), the decoder's input. memory: (B, S, d_model), the encoder's output.
        self_attn, cross_attn: MultiHeadAttention modules; each returns ``(output, weights)``.
        ff: the feed-forward network, (B, T, d_model) -> (B, T, d_model).
        norms: three LayerNorms, one after each sublayer.
        tgt_mask: bool, True = may attend, e.g. causal (T, T). memory_mask: e.g. (B, 1, 1, S).

    Returns:
        (B, T, d_model).
    """
    norm1, norm2, norm3 = norms
    attended, _ = self_attn(x, x, x, mask=tgt_mask)
    x = norm1(x + attended)
    read, _ = cross_attn(x, memory, memory, mask=memory_mask)
    x = norm2(x + read)
    return norm3(x + ff(x))


def _safe(make):
    """A mistake that cannot happen on some inputs (shapes that do not fit) gives None there, not an error."""

    def wrapped(*args):
        try:
            return make(*args)
        except (RuntimeError, ValueError, TypeError):
            return None

    return wrapped


def _variant(*, kv_from_x=False, kv_from_input=False, q_from_memory=False, all_from_memory=False, self_mask="tgt", cross_mask="memory", cross_first=False,
             no_residual=(), pre_ln=False, norm_sublayer_only=False, norm_order=(0, 1, 2), no_final_norm=False):
    """A decoder block with one typical mistake; the keywords say which."""

    def forward(x, memory, self_attn, cross_attn, ff, norms, tgt_mask=None, memory_mask=None):
        masks = {"tgt": tgt_mask, "memory": memory_mask, None: None}
        n = [norms[i] for i in norm_order]
        if no_final_norm:
            n[2] = nn.Identity()

        def sa(h):
            return self_attn(h, h, h, mask=masks[self_mask])[0]

        def ca(h):
            if all_from_memory:
                return cross_attn(memory, memory, memory, mask=masks[cross_mask])[0]
            if kv_from_input:  # keys and values from the block's input, before the self-attention
                return cross_attn(h, x, x, mask=masks[cross_mask])[0]
            q, kv = (memory, h) if q_from_memory else (h, h if kv_from_x else memory)
            return cross_attn(q, kv, kv, mask=masks[cross_mask])[0]

        def sublayer(h, f, norm, name):
            keep = 0 if name in no_residual else 1
            if pre_ln:
                return keep * h + f(norm(h))
            if norm_sublayer_only:
                return keep * h + norm(f(h))
            return norm(keep * h + f(h))

        order = [("cross", ca), ("self", sa)] if cross_first else [("self", sa), ("cross", ca)]
        h = x
        for i, (name, f) in enumerate(order + [("ff", ff)]):
            h = sublayer(h, f, n[i], name)
        return h

    return _safe(forward)


_DECODER_MISTAKES = [
    Mistake("cross-attention took its keys and values from the decoder (x) instead of from the encoder's memory: "
            "it became a second self-attention, and the source sentence is never read",
            _variant(kv_from_x=True), "cross_attn(x, memory, memory, mask=memory_mask): queries from x, "
            "keys and values from memory"),
    Mistake("cross-attention took its keys and values from the decoder's input (the x the block was given) "
            "instead of from the encoder's memory: the source sentence is never read",
            _variant(kv_from_input=True), "cross_attn(x, memory, memory, mask=memory_mask): keys and values "
            "from memory"),
    Mistake("cross-attention took its queries from the memory: the roles are swapped (the output then has one "
            "row per SOURCE position); each target position must ask its own question",
            _variant(q_from_memory=True), "queries come from the decoder: cross_attn(x, memory, memory, ...)"),
    Mistake("cross-attention took its queries (as well as its keys and values) from the memory: it became the "
            "encoder attending to itself, and the target positions never ask anything (the output has one row "
            "per SOURCE position)",
            _variant(all_from_memory=True), "queries come from the decoder: cross_attn(x, memory, memory, ...)"),
    Mistake("the self-attention has no causal mask: every target position sees the later target tokens, "
            "including the one it has to predict",
            _variant(self_mask=None), "pass mask=tgt_mask to the self-attention"),
    Mistake("cross-attention ignores memory_mask: the target positions also read the source's padding",
            _variant(cross_mask=None), "pass mask=memory_mask to the cross-attention"),
    Mistake("the two masks are swapped: the self-attention got memory_mask and the cross-attention got tgt_mask",
            _variant(self_mask="memory", cross_mask="tgt"),
            "self-attention (target to target) takes tgt_mask; cross-attention (target to source) memory_mask"),
    Mistake("the sublayers are in the wrong order: cross-attention comes before the masked self-attention; the "
            "block first lets the target positions read each other, then the source, then the feed-forward",
            _variant(cross_first=True), "order: self-attention + norm1, cross-attention + norm2, feed-forward + norm3"),
    Mistake("the sublayers are in the wrong order and have each other's norms: cross-attention comes before "
            "the masked self-attention",
            _variant(cross_first=True, norm_order=(1, 0, 2)),
            "order: self-attention + norm1, cross-attention + norm2, feed-forward + norm3"),
    Mistake("there is no residual connection around the self-attention: norm1(attention) instead of "
            "norm1(x + attention)", _variant(no_residual=("self",)), "add the sublayer's input back: x + ..."),
    Mistake("there is no residual connection around the cross-attention: norm2(read) instead of norm2(x + read)",
            _variant(no_residual=("cross",)), "add the sublayer's input back: x + ..."),
    Mistake("there is no residual connection around the feed-forward: norm3(ff(x)) instead of norm3(x + ff(x))",
            _variant(no_residual=("ff",)), "add the sublayer's input back: x + ..."),
    Mistake("there is no residual connection at all: each sublayer's output replaces its input",
            _variant(no_residual=("self", "cross", "ff")), "norm(x + sublayer(x)) for each of the three"),
    Mistake("you wrote the pre-LN block, x + sublayer(norm(x)); this exercise asks for post-LN, as in the "
            "original Transformer: x = norm(x + sublayer(x))",
            _variant(pre_ln=True), "normalise after adding the residual: norm1(x + self_attn(...))"),
    Mistake("you normalised only the sublayer's output, x + norm(sublayer(x)); post-LN normalises the sum, "
            "norm(x + sublayer(x))", _variant(norm_sublayer_only=True), "put the norm around the sum"),
    Mistake("you used the first LayerNorm for all three sublayers; each sublayer has its own (norms[0], "
            "norms[1], norms[2]), with its own learned scale and shift",
            _variant(norm_order=(0, 0, 0)), "norm1, norm2, norm3 = norms"),
    Mistake("the LayerNorms are in the wrong order: norms[0] belongs after the self-attention, norms[1] after "
            "the cross-attention, norms[2] after the feed-forward",
            _variant(norm_order=(2, 1, 0)), "norm1, norm2, norm3 = norms"),
    Mistake("the LayerNorms are in the wrong order: norms[0] belongs after the self-attention, norms[1] after "
            "the cross-attention, norms[2] after the feed-forward",
            _variant(norm_order=(1, 0, 2)), "norm1, norm2, norm3 = norms"),
    Mistake("the last LayerNorm is missing: after the feed-forward, return norm3(x + ff(x))",
            _variant(no_final_norm=True), "return norms[2](x + ff(x))"),
]


def _decoder_case(gen: torch.Generator, B: int, T: int, S: int, lengths: list[int], description: str) -> Case:
    d_model, h = 8, 2
    with torch.random.fork_rng(devices=[]):  # build the sublayers without touching the global generator
        torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
        self_attn, cross_attn = MultiHeadAttention(d_model, h).eval(), MultiHeadAttention(d_model, h).eval()
        ff = FeedForward(d_model, 16).eval()
        norms = tuple(nn.LayerNorm(d_model) for _ in range(3))
        with torch.no_grad():
            for norm in norms:  # different scales and shifts, so using the wrong norm shows
                norm.weight.uniform_(0.5, 1.5)
                norm.bias.uniform_(-0.5, 0.5)
    x = torch.randn(B, T, d_model, generator=gen)
    memory = torch.randn(B, S, d_model, generator=gen)
    memory_mask = (torch.arange(S) < torch.tensor(lengths)[:, None])[:, None, None, :]  # (B, 1, 1, S)
    return Case((x, memory, self_attn, cross_attn, ff, norms, causal_mask(T), memory_mask), description)


def _decoder_cases() -> list[Case]:
    gen = torch.Generator().manual_seed(909)
    return [
        # S = T first: most mistakes then still give the right shape, and can be named.
        _decoder_case(gen, 2, 4, 4, [4, 2], "B=2, T=S=4, the second source padded after 2 tokens"),
        _decoder_case(gen, 2, 3, 5, [5, 3], "B=2, T=3, S=5, the second source padded after 3 tokens"),
        _decoder_case(gen, 1, 1, 2, [2], "B=1, a single target position, S=2"),
    ]


def _mention_tuples(result: CheckResult) -> CheckResult:
    if result.status == ERROR and "tuple" in result.message:
        return CheckResult(result.exercise, ERROR, result.message,
                           "a MultiHeadAttention returns a pair (output, weights): unpack it, "
                           "out, _ = self_attn(x, x, x, mask=tgt_mask)")
    return result


def check_decoder_block_forward(fn) -> CheckResult:
    """Check a learner's ``decoder_block_forward(x, memory, self_attn, cross_attn, ff, norms, tgt_mask,
    memory_mask)``: (B, T, d_model) -> (B, T, d_model), post-LN."""
    with torch.no_grad():
        result = check_function(fn, exercise="decoder_block_forward", reference=decoder_block_forward,
                                cases=_decoder_cases(), mistakes=_DECODER_MISTAKES, shape_names="(B, T, d_model)",
                                atol=1e-5)
    return _mention_tuples(result)


# --- exercise 2: shift_right ---------------------------------------------------------------------------


def _bos(tgt: torch.Tensor, bos_id: int) -> torch.Tensor:
    return torch.full_like(tgt[:, :1], bos_id)  # (B, 1)


_SHIFT_MISTAKES = [
    Mistake("you shifted LEFT: position t now holds y_(t+1), the very token it has to predict, and BOS ended "
            "up at the end", lambda t, b: torch.cat([t[:, 1:], _bos(t, b)], dim=1),
            "shift right: [BOS, y_0, ..., y_(T-2)] = torch.cat([bos_column, tgt[:, :-1]], dim=1)"),
    Mistake("you shifted LEFT: position t now holds y_(t+1), the very token it has to predict",
            lambda t, b: torch.cat([t[:, 1:], torch.zeros_like(t[:, :1])], dim=1),
            "shift right: [BOS, y_0, ..., y_(T-2)] = torch.cat([bos_column, tgt[:, :-1]], dim=1)"),
    Mistake("you dropped the FIRST token instead of the last (or overwrote it with BOS): y_0 never enters the "
            "decoder, and y_1 sits at position 1, where it is the answer", lambda t, b: torch.cat([_bos(t, b), t[:, 1:]], dim=1),
            "keep tgt[:, :-1] (everything but the last token) after the BOS"),
    Mistake("BOS went to the end instead of the front: the first position has no start signal",
            lambda t, b: torch.cat([t[:, :-1], _bos(t, b)], dim=1), "put the BOS column first: cat([bos, tgt[:, :-1]])"),
    Mistake("you appended BOS at the end and kept every token: the result has T + 1 positions, BOS last",
            lambda t, b: torch.cat([t, _bos(t, b)], dim=1), "BOS goes first, and the last token is dropped"),
    Mistake("the result has T + 1 positions: you put BOS in front but kept the last token; the decoder input "
            "must be as long as the target, so drop the last token",
            lambda t, b: torch.cat([_bos(t, b), t], dim=1), "use tgt[:, :-1], not tgt"),
    Mistake("you shifted along dim 0, the batch axis: a row of BOS came in on top and the last SEQUENCE fell "
            "off, instead of a BOS column on the left and the last TOKEN of each sequence",
            lambda t, b: torch.cat([torch.full_like(t[:1], b), t[:-1]], dim=0),
            "shift along dim=1, the time axis: torch.cat([bos_column, tgt[:, :-1]], dim=1)"),
    Mistake("you rotated the sequence (torch.roll): the last token wrapped around to the front where BOS belongs",
            lambda t, b: torch.roll(t, 1, dims=1), "roll is fine if you then overwrite column 0 with bos_id"),
    Mistake("you rotated along dim 0, the batch axis", lambda t, b: torch.roll(t, 1, dims=0),
            "shift along dim=1, the time axis"),
    Mistake("you returned the targets unchanged: each position would be given the token it must predict",
            lambda t, b: t.clone(), "prepend BOS and drop the last token"),
    Mistake("you used a fixed id for BOS instead of the bos_id argument",
            lambda t, b: shift_right(t, 1), "use bos_id"),
    Mistake("you used a fixed id for BOS instead of the bos_id argument",
            lambda t, b: shift_right(t, 0), "use bos_id"),
]


def _shift_cases() -> list[Case]:
    return [
        Case((torch.tensor([[8, 6, 9, 2, 0], [11, 3, 5, 7, 2]]), 1),
             "two targets (B=2, T=5) ending in EOS=2 and PAD=0, bos_id=1"),
        Case((torch.tensor([[3, 4, 5, 6], [7, 8, 9, 10], [11, 12, 3, 4], [5, 6, 7, 8]]), 1),
             "B = T = 4, where a shift along the wrong axis keeps the shape"),
        Case((torch.tensor([[5], [6]]), 1), "T=1: the decoder input is just BOS"),
        Case((torch.tensor([[20, 21, 22], [23, 24, 25]]), 7), "bos_id=7"),
    ]


def check_shift_right(fn) -> CheckResult:
    """Check a learner's ``shift_right(tgt, bos_id)``: (B, T) ids -> (B, T) ids, ``[BOS, y_0, ..., y_(T-2)]``."""
    return check_function(fn, exercise="shift_right", reference=shift_right, cases=_shift_cases(),
                          mistakes=_SHIFT_MISTAKES, shape_names="(B, T)",
                          dtype_hint="token ids must be integers, or nn.Embedding refuses them: build the BOS "
                                     "column with torch.full_like(tgt[:, :1], bos_id), which keeps tgt's dtype")
