import pytest
import torch
from torch import nn

from course_lib.checks.core import CORRECT, ERROR, NOT_DONE, WRONG
from course_lib.checks.transformer import check_decoder_block_forward, check_shift_right, decoder_block_forward
from course_lib.masking import causal_mask
from course_lib.transformer import DecoderBlock, shift_right


def _not_done(*args):
    raise NotImplementedError("Your turn")


# --- the reference is what DecoderBlock computes --------------------------------------------------------

def test_reference_matches_a_post_ln_decoder_block():
    torch.manual_seed(0)
    block = DecoderBlock(8, 2, 16, dropout=0.0, norm_first=False).eval()
    with torch.no_grad():
        for norm in (block.norm1, block.norm2, block.norm3):
            norm.weight.uniform_(0.5, 1.5)
            norm.bias.uniform_(-0.5, 0.5)
    x, memory = torch.randn(2, 3, 8), torch.randn(2, 5, 8)
    memory_mask = torch.tensor([[True] * 5, [True] * 2 + [False] * 3])[:, None, None, :]
    ours = decoder_block_forward(x, memory, block.self_attn, block.cross_attn, block.ff,
                                 (block.norm1, block.norm2, block.norm3), causal_mask(3), memory_mask)
    assert torch.allclose(ours, block(x, memory, causal_mask(3), memory_mask), atol=1e-6)


# --- learners' attempts at decoder_block_forward, each written the way a learner would ------------------

def _attempt(order=("self", "cross", "ff"), kv="memory", q="x", self_mask="tgt", cross_mask="memory",
             residual=("self", "cross", "ff"), style="post", norm_index=(0, 1, 2)):
    def forward(x, memory, self_attn, cross_attn, ff, norms, tgt_mask, memory_mask):
        masks = {"tgt": tgt_mask, "memory": memory_mask, "none": None}
        layers = {
            "self": lambda h: self_attn(h, h, h, mask=masks[self_mask])[0],
            "cross": lambda h: cross_attn(memory if q == "memory" else h, memory if kv == "memory" else h,
                                          memory if kv == "memory" else h, mask=masks[cross_mask])[0],
            "ff": ff,
        }
        for i, name in enumerate(order):
            norm = norms[norm_index[i]]
            skip = x if name in residual else 0
            if style == "post":
                x = norm(skip + layers[name](x))
            elif style == "pre":
                x = skip + layers[name](norm(x))
            else:  # norm on the sublayer output only
                x = skip + norm(layers[name](x))
        return x

    return forward


def _tuple_bug(x, memory, self_attn, cross_attn, ff, norms, tgt_mask, memory_mask):
    return norms[0](x + self_attn(x, x, x, mask=tgt_mask))  # forgot that attention returns a pair


@pytest.mark.parametrize("attempt, fragment", [
    (_attempt(), "matches the reference"),
    (decoder_block_forward, "matches the reference"),
    (_not_done, "replace `raise NotImplementedError`"),
    (_attempt(kv="x"), "keys and values from the decoder (x)"),
    (lambda x, m, *rest: decoder_block_forward(x, x, *rest), "keys and values from the decoder's input"),
    (_attempt(q="memory"), "took its queries"),
    (_attempt(q="memory", kv="x"), "took its queries from the memory"),
    (_attempt(self_mask="none"), "no causal mask"),
    (_attempt(cross_mask="none"), "ignores memory_mask"),
    (_attempt(self_mask="memory", cross_mask="tgt"), "the two masks are swapped"),
    (_attempt(order=("cross", "self", "ff")), "cross-attention comes before the masked self-attention"),
    (_attempt(order=("cross", "self", "ff"), norm_index=(1, 0, 2)), "cross-attention comes before"),
    (_attempt(residual=("cross", "ff")), "no residual connection around the self-attention"),
    (_attempt(residual=("self", "ff")), "no residual connection around the cross-attention"),
    (_attempt(residual=("self", "cross")), "no residual connection around the feed-forward"),
    (_attempt(residual=()), "no residual connection at all"),
    (_attempt(style="pre"), "pre-LN block"),
    (_attempt(style="sublayer"), "normalised only the sublayer's output"),
    (_attempt(norm_index=(0, 0, 0)), "first LayerNorm for all three"),
    (_attempt(norm_index=(2, 1, 0)), "LayerNorms are in the wrong order"),
    (lambda x, m, sa, ca, ff, norms, tm, mm: _attempt()(x, m, sa, ca, ff, (norms[0], norms[1], nn.Identity()), tm, mm),
     "last LayerNorm is missing"),
    (lambda x, m, sa, ca, ff, norms, tm, mm: _attempt()(x, m, sa, ca, ff, norms, tm, mm)[:, -1],
     "expected shape (2, 4, 8) = (B, T, d_model)"),
    (lambda *args: None, "returned None"),
])
def test_check_decoder_block_forward_names_each_mistake(attempt, fragment):
    result = check_decoder_block_forward(attempt)
    assert fragment in result.message, result


def test_check_decoder_block_statuses_and_hints():
    assert check_decoder_block_forward(_not_done).status == NOT_DONE
    assert check_decoder_block_forward(decoder_block_forward).status == CORRECT
    result = check_decoder_block_forward(_tuple_bug)
    assert result.status == ERROR and "(output, weights)" in result.hint
    assert check_decoder_block_forward(_attempt(kv="x")).status == WRONG


def test_check_decoder_block_leaves_the_global_generator_alone():
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    check_decoder_block_forward(decoder_block_forward)
    assert torch.equal(torch.rand(3), expected)


def test_a_mistake_that_only_shows_on_the_rectangular_case_is_reported_not_raised():
    def right_only_if_square(x, memory, *rest):
        out = decoder_block_forward(x, memory, *rest)
        return out if x.shape[1] == memory.shape[1] else out + 1

    result = check_decoder_block_forward(right_only_if_square)
    assert result.status == WRONG and "T=3, S=5" in result.message


# --- shift_right -----------------------------------------------------------------------------------------

def _bos(tgt, bos_id):
    return torch.full((tgt.shape[0], 1), bos_id, dtype=tgt.dtype)


def _overwrite(tgt, bos_id):
    out = tgt.clone()
    out[:, 0] = bos_id
    return out


def _in_place(tgt, bos_id):
    tgt[:, 1:] = tgt[:, :-1].clone()
    tgt[:, 0] = bos_id
    return tgt


@pytest.mark.parametrize("attempt, fragment", [
    (lambda t, b: torch.cat([_bos(t, b), t[:, :-1]], dim=1), "matches the reference"),
    (lambda t, b: torch.roll(t, 1, dims=1).index_fill(1, torch.tensor([0]), b), "matches the reference"),
    (shift_right, "matches the reference"),
    (_not_done, "replace `raise NotImplementedError`"),
    (lambda t, b: torch.cat([t[:, 1:], _bos(t, b)], dim=1), "you shifted LEFT"),
    (lambda t, b: torch.cat([t[:, 1:], torch.zeros_like(t[:, :1])], dim=1), "you shifted LEFT"),
    (lambda t, b: torch.cat([_bos(t, b), t[:, 1:]], dim=1), "dropped the FIRST token"),
    (_overwrite, "dropped the FIRST token instead of the last (or overwrote it with BOS)"),
    (lambda t, b: torch.cat([t[:, :-1], _bos(t, b)], dim=1), "BOS went to the end"),
    (lambda t, b: torch.cat([t, _bos(t, b)], dim=1), "appended BOS at the end and kept every token"),
    (lambda t, b: torch.cat([_bos(t, b), t], dim=1), "T + 1 positions: you put BOS in front"),
    (lambda t, b: torch.cat([torch.full((1, t.shape[1]), b), t[:-1]], dim=0), "along dim 0, the batch axis"),
    (lambda t, b: torch.roll(t, 1, dims=1), "rotated the sequence"),
    (lambda t, b: torch.roll(t, 1, dims=0), "rotated along dim 0"),
    (lambda t, b: t, "returned the targets unchanged"),
    (lambda t, b: torch.cat([torch.ones_like(t[:, :1]), t[:, :-1]], dim=1), "fixed id for BOS"),
    (lambda t, b: torch.cat([torch.zeros_like(t[:, :1]), t[:, :-1]], dim=1), "fixed id for BOS"),
    (lambda t, b: torch.cat([torch.ones(t.shape[0], 1) * b, t[:, :-1]], dim=1), "dtype is torch.float32"),
    (_in_place, "changed its input in place"),
    (lambda t, b: torch.cat([_bos(t, b), t[:, :-1]], dim=1).numpy(), "expected a torch tensor"),
])
def test_check_shift_right_names_each_mistake(attempt, fragment):
    result = check_shift_right(attempt)
    assert fragment in result.message, result


def test_check_shift_right_statuses():
    assert check_shift_right(_not_done).status == NOT_DONE
    assert check_shift_right(shift_right).status == CORRECT
    assert check_shift_right(lambda t, b: t[5]).status == ERROR
    assert check_shift_right(lambda t, b: t).status == WRONG
