import pytest
import torch
from torch import nn

from course_lib.transformer import (DecoderBlock, Seq2SeqTransformer, Transformer, count_parameters, greedy_decode,
                                    shift_right)


@pytest.mark.parametrize("norm_first", [False, True])
def test_decoder_block_matches_pytorch(norm_first):
    torch.manual_seed(0)
    theirs = nn.TransformerDecoderLayer(8, 2, 16, dropout=0.0, batch_first=True, norm_first=norm_first).eval()
    ours = DecoderBlock(8, 2, 16, dropout=0.0, norm_first=norm_first).load_from_torch(theirs).eval()
    x, memory = torch.randn(2, 4, 8), torch.randn(2, 6, 8)
    blocked = torch.ones(4, 4, dtype=torch.bool).triu(1)
    ignore = torch.tensor([[False] * 6, [False] * 3 + [True] * 3])
    ref = theirs(x, memory, tgt_mask=blocked, memory_key_padding_mask=ignore)
    out = ours(x, memory, tgt_mask=~blocked, memory_mask=(~ignore)[:, None, None, :])
    assert torch.allclose(out, ref, atol=1e-5)
    assert ours.cross_weights.shape == (2, 2, 4, 6) and (ours.cross_weights[1, :, :, 3:] == 0).all()


@pytest.mark.parametrize("norm_first", [False, True])
def test_transformer_matches_pytorch(norm_first):
    torch.manual_seed(0)
    theirs = nn.Transformer(8, 2, 2, 2, 16, dropout=0.0, batch_first=True, norm_first=norm_first).eval()
    ours = Transformer(8, 2, 2, 2, 16, dropout=0.0, norm_first=norm_first).load_from_torch(theirs).eval()
    src, tgt = torch.randn(2, 5, 8), torch.randn(2, 4, 8)
    src_ignore = torch.tensor([[False] * 5, [False] * 3 + [True] * 2])
    blocked = nn.Transformer.generate_square_subsequent_mask(4).isinf()
    ref = theirs(src, tgt, tgt_mask=blocked, src_key_padding_mask=src_ignore, memory_key_padding_mask=src_ignore)
    keep = (~src_ignore)[:, None, None, :]
    out = ours(src, tgt, src_mask=keep, tgt_mask=~blocked, memory_mask=keep)
    assert torch.allclose(out, ref, atol=1e-5)


def test_load_from_torch_refuses_other_depths():
    with pytest.raises(ValueError, match="layer counts differ"):
        Transformer(8, 2, 1, 1, 16).load_from_torch(nn.Transformer(8, 2, 2, 2, 16, batch_first=True))


def test_shift_right():
    tgt = torch.tensor([[5, 6, 7], [8, 9, 2]])
    assert shift_right(tgt, bos_id=1).tolist() == [[1, 5, 6], [1, 8, 9]]
    with pytest.raises(TypeError, match="expected an int dtype"):
        shift_right(tgt.float(), 1)


def _model(**kw):
    torch.manual_seed(0)
    return Seq2SeqTransformer(20, 20, d_model=16, h=2, num_encoder_layers=2, num_decoder_layers=2, d_ff=32,
                              dropout=0.0, **kw).eval()


def test_seq2seq_shapes_and_shared_embeddings():
    model = _model(share_embeddings=True)
    assert model.src_embed.weight is model.tgt_embed.weight is model.out.weight
    logits = model(torch.randint(3, 20, (2, 7)), torch.randint(3, 20, (2, 5)))
    assert logits.shape == (2, 5, 20)
    assert count_parameters(model) < count_parameters(_model())
    with pytest.raises(ValueError, match="share_embeddings needs one vocabulary"):
        Seq2SeqTransformer(20, 30, share_embeddings=True)


def test_seq2seq_ignores_padding_and_never_peeks():
    model = _model()
    src = torch.tensor([[4, 5, 6, 0, 0]])
    tgt = torch.tensor([[1, 7, 8, 9]])
    base = model(src, tgt)
    assert torch.allclose(model(torch.tensor([[4, 5, 6]]), tgt), base, atol=1e-5)  # padding changes nothing
    changed = model(src, torch.tensor([[1, 7, 8, 15]]))
    assert torch.allclose(changed[:, :3], base[:, :3], atol=1e-6)  # earlier positions cannot see the future
    assert not torch.allclose(changed[:, 3], base[:, 3])


def test_seq2seq_rejects_float_tokens():
    with pytest.raises(TypeError, match="src: expected an int dtype"):
        _model()(torch.zeros(1, 3), torch.zeros(1, 2, dtype=torch.long))


def test_greedy_decode_stops_at_eos_and_pads_after(monkeypatch):
    model = _model()
    eos, bos = 2, 1

    def fake_decode(tgt_in, memory, src_mask):  # sequence 0 says EOS at step 2, sequence 1 never
        logits = torch.zeros(tgt_in.shape[0], tgt_in.shape[1], 20)
        step = tgt_in.shape[1]
        logits[0, :, eos if step == 2 else 9] = 1.0
        logits[1, :, 11] = 1.0
        return logits

    monkeypatch.setattr(model, "decode", fake_decode)
    out = greedy_decode(model, torch.tensor([[4, 5], [6, 7]]), bos, eos, max_len=4)
    assert out.tolist() == [[9, 2, 0, 0], [11, 11, 11, 11]]


def test_default_size_is_the_translation_model():
    assert count_parameters(Seq2SeqTransformer(8000, 8000, share_embeddings=True)) == 7_578_624
