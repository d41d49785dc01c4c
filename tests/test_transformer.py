import warnings

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
    with warnings.catch_warnings():  # PyTorch notes that its nested-tensor fast path is off for pre-LN
        warnings.simplefilter("ignore", UserWarning)
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


# --- notebook 09's read-outs and pictures ----------------------------------------------------------------

import matplotlib  # noqa: E402

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402

from course_lib.transformer import (MILESTONES, cross_attention_weights, plot_cross_attention,  # noqa: E402
                                    plot_timeline)

@pytest.fixture
def _close_figures():
    yield
    plt.close("all")


def test_cross_attention_weights_are_every_layers_and_respect_padding():
    model = _model()
    src = torch.tensor([[4, 5, 6, 0, 0], [7, 8, 9, 10, 11]])
    tgt_in = torch.tensor([[1, 6, 5], [1, 11, 10]])
    weights = cross_attention_weights(model, src, tgt_in)
    assert weights.shape == (2, 2, 2, 3, 5)  # (L, B, h, T, S)
    assert torch.allclose(weights.sum(-1), torch.ones(2, 2, 2, 3))
    assert (weights[:, 0, :, :, 3:] == 0).all()  # padding of the first source gets no weight
    # the last layer's weights are what that layer recorded
    assert torch.equal(weights[-1], model.transformer.decoder_layers[-1].cross_weights)
    # recomputed by hand from the first decoder layer's inputs
    memory, src_mask = model.encode(src)
    layer = model.transformer.decoder_layers[0]
    x = model._embed(tgt_in, model.tgt_embed)
    h = layer.norm1(x)
    x = x + layer.self_attn(h, mask=model.target_mask(tgt_in))[0]
    _, by_hand = layer.cross_attn(layer.norm2(x), memory, memory, mask=src_mask)
    assert torch.allclose(weights[0], by_hand, atol=1e-6)
    with pytest.raises(ValueError, match="tgt_in: expected B=2"):
        cross_attention_weights(model, src, tgt_in[:1])


def test_plot_cross_attention_draws_a_panel_per_layer_and_head(_close_figures):
    weights = torch.softmax(torch.randn(2, 3, 4, 5), dim=-1)
    fig = plot_cross_attention(weights, list("abcde"), list("wxyz"), title="a title")
    assert len(fig.axes) == 6 and fig._suptitle.get_text() == "a title"
    assert fig.axes[0].get_title() == "layer 1, head 1" and fig.axes[5].get_title() == "layer 2, head 3"
    assert [t.get_text() for t in fig.axes[3].get_xticklabels()] == list("abcde")
    assert len(plot_cross_attention(weights[0, 0], list("abcde"), list("wxyz")).axes) == 1  # one (T, S) map
    with pytest.raises(ValueError, match="expected 5 source labels and 4 target labels"):
        plot_cross_attention(weights, list("abc"), list("wxyz"))


def test_timeline_has_the_six_milestones_in_order(_close_figures):
    years = [m[0] for m in MILESTONES]
    assert len(MILESTONES) == 6 and all(2014 <= y < 2019 for y in years)
    names = " ".join(m[1] for m in MILESTONES)
    for who in ("Sutskever", "Bahdanau", "Luong", "Vaswani", "Radford", "Devlin"):
        assert who in names
    vaswani = next(m for m in MILESTONES if "Vaswani" in m[1])
    assert all(m[0] > vaswani[0] for m in MILESTONES if "Radford" in m[1] or "Devlin" in m[1])
    ax = plot_timeline()
    texts = " ".join(t.get_text() for t in ax.texts)
    assert all(m[1] in texts for m in MILESTONES) and "2017" in texts


def test_separate_embeddings_are_seeded_in_a_fixed_order():
    torch.manual_seed(0)
    a = Seq2SeqTransformer(20, 30, d_model=16, h=2, num_encoder_layers=1, num_decoder_layers=1, d_ff=32)
    torch.manual_seed(0)
    b = Seq2SeqTransformer(20, 30, d_model=16, h=2, num_encoder_layers=1, num_decoder_layers=1, d_ff=32)
    assert torch.equal(a.src_embed.weight, b.src_embed.weight) and torch.equal(a.tgt_embed.weight, b.tgt_embed.weight)


def test_check_token_ids_names_the_vocabulary_and_the_device():
    from course_lib.transformer import check_token_ids

    embedding = nn.Embedding(10, 4)
    check_token_ids(torch.tensor([[0, 9]]), embedding)  # in range: no error
    check_token_ids(torch.zeros(1, 0, dtype=torch.long), embedding)  # nothing to check
    with pytest.raises(ValueError, match=r"words: token ids must lie in 0..9 .*got ids from 3 to 10"):
        check_token_ids(torch.tensor([3, 10]), embedding, "words")
    with pytest.raises(ValueError, match="meta"):
        check_token_ids(torch.tensor([1], device="meta"), embedding)
