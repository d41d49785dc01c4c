"""What a probe of the public API found answering silently or with a raw torch error (issue 27).

Each case fed a public function what a learner might: an integer or NumPy tensor, a token id
outside the vocabulary, half precision with large scores, an ambiguous mask, a negative length.
"""
import numpy as np
import pytest
import torch

from course_lib.attention import scaled_dot_product_attention
from course_lib.blocks import EncoderBlock, FeedForward, RMSNorm
from course_lib.decoding import greedy_search, length_penalty
from course_lib.scale import blockwise_attention
from course_lib.transformer import DecoderBlock, Seq2SeqTransformer


def _model(vocab=10):
    torch.manual_seed(0)
    return Seq2SeqTransformer(vocab, vocab, d_model=16, h=2, num_encoder_layers=1, num_decoder_layers=1,
                              d_ff=32).eval()


def test_blockwise_attention_survives_float16_scores_that_overflow_unscaled():
    q = torch.full((1, 2, 64), 40.0)
    k = q.clone()
    k[:, 1] = 39.0
    v = torch.randn(1, 2, 8, generator=torch.Generator().manual_seed(0))
    out16 = blockwise_attention(q.half(), k.half(), v.half(), block_size=1)
    reference, _ = scaled_dot_product_attention(q, k, v)
    assert torch.isfinite(out16).all()
    assert torch.allclose(out16.float(), reference, atol=1e-2), "float16 blockwise attention lost the scores"


def test_blockwise_attention_names_bad_inputs():
    q = torch.randn(1, 4, 8)
    with pytest.raises(TypeError, match=r"q: expected a torch.Tensor, got a NumPy array"):
        blockwise_attention(q.numpy(), q, q)
    with pytest.raises(TypeError, match=r"q has dtype torch.float16 but k has torch.float32"):
        blockwise_attention(q.half(), q, q)
    with pytest.raises(TypeError, match=r"v: expected a float dtype"):
        blockwise_attention(q, q, torch.ones(1, 4, 8, dtype=torch.long))
    with pytest.raises(TypeError, match="mask: expected a bool mask"):
        blockwise_attention(q, q, q, mask=[[True]])


def test_blockwise_attention_refuses_an_ambiguous_padding_mask():
    q = torch.randn(3, 3, 8)  # B = T_q = 3
    padding = torch.tensor([[1, 1, 1], [1, 1, 0], [1, 0, 0]], dtype=torch.bool)  # (B, T_k)
    with pytest.raises(ValueError, match=r"mask of shape \(3, 3\) is ambiguous.*mask\[:, None\] of shape \(3, 1, 3\)"):
        blockwise_attention(q, q, q, block_size=2, mask=padding)
    out = blockwise_attention(q, q, q, block_size=2, mask=padding[:, None])
    reference, _ = scaled_dot_product_attention(q, q, q, mask=padding[:, None])
    assert torch.allclose(out, reference, atol=1e-6)
    with pytest.raises(ValueError, match=r"mask of shape \(2, 3, 3\) does not broadcast"):
        blockwise_attention(q, q, q, mask=torch.ones(2, 3, 3, dtype=torch.bool))


@pytest.mark.parametrize("module", [FeedForward(8, 16), RMSNorm(8), EncoderBlock(8, 2, 16)],
                         ids=["FeedForward", "RMSNorm", "EncoderBlock"])
def test_blocks_name_integer_and_numpy_input(module):
    with pytest.raises(TypeError, match=r"x: expected a float dtype.*got torch.int64"):
        module(torch.ones(2, 3, 8, dtype=torch.long))
    with pytest.raises(TypeError, match=r"x: expected a torch.Tensor, got a NumPy array"):
        module(np.ones((2, 3, 8), dtype=np.float32))
    assert module(torch.randn(2, 3, 8)).shape == (2, 3, 8)


def test_decoder_block_names_the_input_with_the_wrong_dtype():
    block = DecoderBlock(8, 2, 16)
    x = torch.randn(2, 3, 8)
    with pytest.raises(TypeError, match=r"memory: expected a float dtype.*got torch.int64"):
        block(x, torch.ones(2, 4, 8, dtype=torch.long))
    with pytest.raises(TypeError, match=r"x has dtype torch.float16 but memory has torch.float32"):
        block(x.half(), torch.randn(2, 4, 8))
    assert block(x, torch.randn(2, 4, 8)).shape == (2, 3, 8)


def test_feed_forward_names_a_wrong_width():
    with pytest.raises(ValueError, match="x: expected d_model=8, got d_model=6"):
        FeedForward(8, 16)(torch.randn(2, 3, 6))


def test_token_ids_outside_the_vocabulary_are_named():
    model = _model(vocab=10)
    tgt = torch.ones(1, 2, dtype=torch.long)
    with pytest.raises(ValueError, match=r"src: token ids must lie in 0..9 \(the vocabulary has 10 entries\), "
                                         r"got ids from 1 to 12"):
        model(torch.tensor([[1, 12, 2]]), tgt)
    with pytest.raises(ValueError, match=r"src: token ids must lie in 0..9.*got ids from -1 to 3"):
        model(torch.tensor([[-1, 3]]), tgt)
    with pytest.raises(ValueError, match=r"tgt_in: token ids must lie in 0..9"):
        model(torch.tensor([[3, 2]]), torch.tensor([[1, 10]]))
    with pytest.raises(ValueError, match=r"src: token ids must lie in 0..9"):
        greedy_search(model, torch.tensor([[50, 2]]))
    with pytest.raises(ValueError, match=r"src is on meta but the model is on cpu"):
        model.encode(torch.ones(1, 3, dtype=torch.long, device="meta"))


def test_length_penalty_refuses_a_negative_length():
    with pytest.raises(ValueError, match="length must be a non-negative number of tokens, got -10"):
        length_penalty(-10, 0.6)  # was a complex number
    with pytest.raises(ValueError, match="alpha must be a finite number"):
        length_penalty(3, float("nan"))
    assert length_penalty(0, 0.6) == pytest.approx((5 / 6) ** 0.6)
    assert length_penalty(7, 0.0) == 1.0


def test_the_cached_decoder_names_a_token_outside_the_vocabulary():
    from course_lib.decoding import IncrementalDecoder

    decoder = IncrementalDecoder(_model(vocab=10)).start(torch.tensor([[4, 5, 2]]))
    with pytest.raises(ValueError, match=r"tokens: token ids must lie in 0..9.*got ids from 12 to 12"):
        decoder.step(torch.tensor([12]))
    assert decoder.step(torch.tensor([1])).shape == (1, 10)


def test_an_empty_source_or_decoder_input_is_named():
    model = _model()
    with pytest.raises(ValueError, match=r"src of shape \(2, 0\) has no tokens: every source needs at least its EOS"):
        model.encode(torch.ones(2, 0, dtype=torch.long))  # was "T must be a positive int, got 0"
    with pytest.raises(ValueError, match=r"src of shape \(1, 0\) has no tokens"):
        greedy_search(model, torch.ones(1, 0, dtype=torch.long))
    memory, src_mask = model.encode(torch.tensor([[4, 2]]))
    with pytest.raises(ValueError, match=r"tgt_in of shape \(1, 0\) has no tokens: the decoder input starts with BOS"):
        model.decode(torch.ones(1, 0, dtype=torch.long), memory, src_mask)


def test_text_where_token_ids_belong_is_named():
    from course_lib.masking import pad_sequences

    with pytest.raises(TypeError, match=r"sequences\[1\]: expected a list of int token ids, got the text 'ein hund'"):
        pad_sequences([[4, 5], "ein hund"])  # was torch's "new(): invalid data type 'str'"


def test_encode_pairs_checks_every_pair_and_the_tokenizer():
    from course_lib.batching import encode_pairs
    from course_lib.tokenizer import train_sentencepiece

    tok = train_sentencepiece(["ein hund", "a dog", "eine katze", "a cat"] * 10, vocab_size=30)
    with pytest.raises(TypeError, match=r"pairs\[2\] is \('a', None\)"):
        encode_pairs([("ein hund", "a dog"), ("eine katze", "a cat"), ("a", None)], tok)
    with pytest.raises(TypeError, match="tokenizer: expected a course Tokenizer \\(with encode_batch\\), got NoneType"):
        encode_pairs([("ein hund", "a dog")], None)


def test_rope_names_its_odd_axis_readably():
    from course_lib.positional import apply_rope

    with pytest.raises(ValueError, match=r"^d must be even: .* got d=5$"):
        apply_rope(torch.zeros(3, 5))
