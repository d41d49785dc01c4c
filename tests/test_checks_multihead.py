import pytest
import torch

from course_lib.checks.core import CORRECT, ERROR, NOT_DONE, WRONG
from course_lib.checks.multihead import check_merge_heads, check_split_heads


def _not_done(*args):
    raise NotImplementedError("Your turn")


# --- split_heads ------------------------------------------------------------------------------------------

def _split_right(x, h):
    B, T, d_model = x.shape
    return x.view(B, T, h, d_model // h).transpose(1, 2)


def _split_loop(x, h):  # an independent way: slice the columns head by head
    d_k = x.shape[-1] // h
    return torch.stack([x[..., i * d_k:(i + 1) * d_k] for i in range(h)], dim=1)


@pytest.mark.parametrize("attempt, fragment", [
    (_split_right, "matches the reference"),
    (_split_loop, "matches the reference"),
    (lambda x, h: x.reshape(x.shape[0], x.shape[1], h, -1).permute(0, 2, 1, 3), "matches the reference"),
    (_not_done, "replace `raise NotImplementedError`"),
    (lambda x, h: x.reshape(x.shape[0], h, x.shape[1], -1), "straight to (B, h, T, d_k) without a transpose"),
    (lambda x, h: x.view(x.shape[0], h, x.shape[1], x.shape[2] // h), "without a transpose"),
    (lambda x, h: x.reshape(x.shape[0], x.shape[1], h, -1), "left the result as (B, T, h, d_k)"),
    (lambda x, h: _split_right(x, h).transpose(1, 2), "left the result as (B, T, h, d_k)"),
    (lambda x, h: x.reshape(x.shape[0], x.shape[1], h, -1).transpose(-2, -1),
     "in the order (B, T, d_k, h) instead of (B, h, T, d_k)"),
    (lambda x, h: x.reshape(x.shape[0], x.shape[1], h, -1).transpose(0, 2),
     "in the order (h, T, B, d_k)"),
    (lambda x, h: x.reshape(x.shape[0], x.shape[1], h, -1).transpose(1, 3), "in the order (B, d_k, h, T)"),
    (lambda x, h: x.view(x.shape[0], x.shape[1], -1, h).permute(0, 3, 1, 2), "strided columns"),
    (lambda x, h: torch.stack([x[..., i::h] for i in range(h)], dim=1), "strided columns"),
    (lambda x, h: x.view(x.shape[0], x.shape[1], -1, h).transpose(1, 2), "d_k heads of width h"),
    (lambda x, h: x.reshape(x.shape[0], x.shape[1], 2, -1).transpose(1, 2), "fixed number of heads"),
    (lambda x, h: x.transpose(1, 2).reshape(x.shape[0], h, x.shape[1], -1), "transposed before reshaping"),
    (lambda x, h: _split_right(x, h).numpy(), "expected a torch tensor"),
    (lambda x, h: None, "returned None"),
])
def test_check_split_heads_names_each_mistake(attempt, fragment):
    result = check_split_heads(attempt)
    assert fragment in result.message, result


def test_always_two_heads_is_named_on_its_own_when_nothing_else_fits():
    from course_lib.checks.core import Case, check_function
    from course_lib.checks.multihead import _split_mistakes
    from course_lib.multihead import split_heads

    two = lambda x, h: x.reshape(x.shape[0], x.shape[1], 2, -1).transpose(1, 2)  # noqa: E731
    result = check_function(two, exercise="split_heads", reference=split_heads,
                            cases=[Case((torch.randn(2, 3, 4), 1), "h=1")], mistakes=_split_mistakes())
    assert "always make 2 heads" in result.message


def test_check_split_heads_statuses():
    assert check_split_heads(_not_done).status == NOT_DONE
    assert check_split_heads(_split_right).status == CORRECT
    assert check_split_heads(lambda x, h: x / 0 + torch.zeros(3, 3, 3, 3, 3)).status == ERROR

    def in_place(x, h):
        x.mul_(2)
        return _split_right(x, h) / 2

    result = check_split_heads(in_place)
    assert result.status == WRONG and "changed its input in place" in result.message


def test_square_inputs_catch_what_shapes_cannot():
    # Wrong only where every size is 2: the shape is right everywhere, only the values can tell.
    def sneaky(x, h):
        out = _split_right(x, h)
        return out.transpose(-2, -1) if x.shape == (2, 2, 4) else out

    result = check_split_heads(sneaky)
    assert result.status == WRONG and "(B=2, T=2, d_model=4)" in result.message


# --- merge_heads ------------------------------------------------------------------------------------------

def _merge_right(x):
    B, h, T, d_k = x.shape
    return x.transpose(1, 2).reshape(B, T, h * d_k)


@pytest.mark.parametrize("attempt, fragment", [
    (_merge_right, "matches the reference"),
    (lambda x: torch.cat(x.unbind(dim=1), dim=-1), "matches the reference"),
    (lambda x: x.permute(0, 2, 1, 3).contiguous().view(x.shape[0], x.shape[2], -1), "matches the reference"),
    (_not_done, "replace `raise NotImplementedError`"),
    (lambda x: x.reshape(x.shape[0], x.shape[2], -1), "without transposing back"),
    (lambda x: x.permute(0, 2, 3, 1).reshape(x.shape[0], x.shape[2], -1), "interleaved"),
    (lambda x: x.transpose(1, 2), "did not merge the last two axes"),
    (lambda x: x.sum(dim=1), "added the heads up"),
    (lambda x: x.mean(dim=1), "averaged the heads"),
    (lambda x: torch.cat(x.unbind(dim=1), dim=1), "along the time axis"),
    (lambda x: x[:, 0], "kept only head 0"),
    (lambda x: x.transpose(-2, -1).reshape(x.shape[0], x.shape[2], -1), "in the order (B, h, d_k, T)"),
    (lambda x: x.transpose(1, 3).reshape(x.shape[0], x.shape[2], -1), "in the order (B, d_k, T, h)"),
    (lambda x: None, "returned None"),
])
def test_check_merge_heads_names_each_mistake(attempt, fragment):
    result = check_merge_heads(attempt)
    assert fragment in result.message, result


def test_check_merge_heads_explains_view_after_transpose():
    result = check_merge_heads(lambda x: x.transpose(1, 2).view(x.shape[0], x.shape[2], -1))
    assert result.status == ERROR and "view size is not compatible" in result.message
    assert ".reshape" in result.hint and "no longer stored row by row" in result.hint
    # other errors keep their message and get no such hint
    result = check_merge_heads(lambda x: x.reshape(7, 7))
    assert result.status == ERROR and result.hint == ""


def test_check_merge_heads_statuses_and_square_inputs():
    assert check_merge_heads(_not_done).status == NOT_DONE
    assert check_merge_heads(_merge_right).status == CORRECT

    def sneaky(x):  # wrong only when T == h, where the shape is still right
        return x.reshape(x.shape[0], x.shape[2], -1) if x.shape[1] == x.shape[2] == 4 else _merge_right(x)

    result = check_merge_heads(sneaky)
    assert result.status == WRONG and "T == h" in result.message and "without transposing back" in result.message


def test_split_then_merge_round_trip_passes_both_checks():
    assert check_split_heads(_split_loop).passed
    assert check_merge_heads(lambda x: torch.cat([x[:, i] for i in range(x.shape[1])], dim=-1)).passed
