import pytest
import torch
from torch import nn

from course_lib.blocks import EncoderBlock, FeedForward, RMSNorm


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_encoder_block_matches_pytorch(norm_first, activation):
    torch.manual_seed(0)
    theirs = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, activation=activation, batch_first=True,
                                        norm_first=norm_first).eval()
    ours = EncoderBlock(8, 2, 16, dropout=0.0, activation=activation, norm_first=norm_first)
    ours.load_from_torch(theirs).eval()
    x = torch.randn(2, 5, 8)
    ignore = torch.tensor([[False] * 5, [False, False, False, True, True]])
    assert torch.allclose(ours(x), theirs(x), atol=1e-5)
    assert torch.allclose(ours(x, (~ignore)[:, None, None, :])[0], theirs(x, src_key_padding_mask=ignore)[0],
                          atol=1e-5)
    assert ours.attention_weights.shape == (2, 2, 5, 5)


def test_rms_norm_matches_pytorch_and_has_no_centring():
    x = torch.randn(3, 4, 6) * 5 + 2
    ours = RMSNorm(6, eps=1e-6)
    theirs = nn.RMSNorm(6, eps=1e-6)
    assert torch.allclose(ours(x), theirs(x), atol=1e-5)
    y = ours(x)
    assert torch.allclose(y.pow(2).mean(-1), torch.ones(3, 4), atol=1e-3)
    with pytest.raises(ValueError, match="expected d_model=6, got d_model=5"):
        ours(torch.randn(2, 5))


def test_feed_forward_shapes_and_errors():
    ff = FeedForward(8, 32)
    assert ff(torch.randn(2, 3, 8)).shape == (2, 3, 8)
    assert sum(p.numel() for p in ff.parameters()) == 8 * 32 + 32 + 32 * 8 + 8
    with pytest.raises(ValueError, match="activation must be one of"):
        FeedForward(8, 32, activation="swish")


def test_dropout_only_in_training():
    block = EncoderBlock(8, 2, 16, dropout=0.5)
    x = torch.randn(1, 4, 8)
    block.eval()
    assert torch.equal(block(x), block(x))
    block.train()
    torch.manual_seed(0)
    a = block(x)
    torch.manual_seed(1)
    assert not torch.equal(a, block(x))
