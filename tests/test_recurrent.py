"""course_lib.recurrent: the GRU encoder–decoders (fixed vector, additive attention) and section 12's measurements."""
import matplotlib.pyplot as plt
import pytest
import torch

from course_lib.recurrent import (GRUSeq2Seq, exact_match_by_length, influence_by_distance,
                                  plot_exact_match_by_length, time_forward_passes)
from course_lib.similarity import additive_score
from course_lib.toy_tasks import (BOS_ID, EOS_ID, PAD_ID, REVERSAL_VOCAB, digits_to_ids, evaluate_reversal,
                                  make_reversal_batch, train_reversal)
from course_lib.transformer import greedy_decode, shift_right

V = len(REVERSAL_VOCAB)


def _model(attention, seed=0, d_model=16):
    torch.manual_seed(seed)
    return GRUSeq2Seq(V, V, d_model=d_model, attention=attention).eval()


@pytest.mark.parametrize("attention", [False, True])
def test_shapes_and_padding_changes_nothing(attention):
    model = _model(attention)
    src = torch.tensor([digits_to_ids("3141"), digits_to_ids("59") + [PAD_ID, PAD_ID]])  # (B=2, S=4)
    tgt_in = torch.tensor([[BOS_ID, 4, 7, 4, 6], [BOS_ID, 12, 8, PAD_ID, PAD_ID]])  # (B=2, T=5)
    logits = model(src, tgt_in)
    assert logits.shape == (2, 5, V)
    alone = model(src[1:, :2], tgt_in[1:])  # "59" without its padding
    assert torch.allclose(logits[1], alone[0], atol=1e-6)
    if attention:
        weights = model.attention_weights
        assert weights.shape == (1, 5, 2)  # of the last call
        model(src, tgt_in)
        assert model.attention_weights.shape == (2, 5, 4)
        assert torch.allclose(model.attention_weights.sum(-1), torch.ones(2, 5), atol=1e-6)
        assert (model.attention_weights[1, :, 2:] == 0).all()  # never on the padding


@pytest.mark.parametrize("attention", [False, True])
def test_decoder_is_causal_so_greedy_decoding_can_grow_the_prefix(attention):
    model = _model(attention, seed=1)
    src = make_reversal_batch(3, 2, 6, torch.Generator().manual_seed(0)).src
    tgt_in = torch.randint(3, V, (3, 6))
    full = model(src, tgt_in)
    assert torch.allclose(model(src, tgt_in[:, :3]), full[:, :3], atol=1e-6)
    out = greedy_decode(model, src, BOS_ID, EOS_ID, max_len=7)
    assert out.shape[0] == 3 and out.shape[1] <= 7


def test_fixed_vector_model_hands_over_only_the_last_state():
    model = _model(False, seed=2)
    states, mask = model.encode(torch.tensor([digits_to_ids("123") + [PAD_ID], digits_to_ids("4567")]))
    changed = states.clone()
    changed[0, :2] += 5.0  # change everything but row 0's last real state (position 2)
    changed[1, :3] += 5.0
    tgt_in = torch.tensor([[BOS_ID, 5, 6], [BOS_ID, 7, 8]])
    assert torch.equal(model.decode(tgt_in, states, mask), model.decode(tgt_in, changed, mask))
    assert torch.equal(GRUSeq2Seq.summary(states, mask), states[[0, 1], [2, 3]])


def test_attention_scores_are_the_additive_score_of_notebook_02():
    model = _model(True, seed=3)
    src = torch.tensor([digits_to_ids("9876")])
    states, mask = model.encode(src)
    model.decode(torch.tensor([[BOS_ID]]), states, mask)  # one step: the query is the encoder's summary
    query = GRUSeq2Seq.summary(states, mask)  # (1, d_model)
    scores = additive_score(query, states[0], model.score_query.weight.T, model.score_key.weight.T,
                            model.score_out.weight[0])
    assert torch.allclose(model.attention_weights[0, 0], torch.softmax(scores[0], dim=-1), atol=1e-6)


def test_errors_name_what_came():
    model = _model(True)
    with pytest.raises(ValueError, match="at least one real token"):
        model(torch.tensor([[PAD_ID, 4]]), torch.tensor([[BOS_ID]]))
    with pytest.raises(ValueError, match="token ids must lie in 0..12"):
        model(torch.tensor([[20, 4]]), torch.tensor([[BOS_ID]]))
    with pytest.raises(TypeError, match="src"):
        model(torch.tensor([[4.0, 5.0]]), torch.tensor([[BOS_ID]]))
    with pytest.raises(ValueError, match="tgt_in"):
        model(torch.tensor([[4, 5]]), torch.tensor([BOS_ID]))
    with pytest.raises(TypeError, match="d_model must be an int"):
        GRUSeq2Seq(V, V, d_model=16.0)


@pytest.mark.parametrize("attention", [False, True])
def test_trains_with_the_reversal_loop_and_beats_guessing(attention):
    torch.manual_seed(0)
    model = GRUSeq2Seq(V, V, d_model=32, attention=attention)
    losses = train_reversal(model, steps=60, batch_size=32, lr=1e-2, warmup=10, min_len=1, max_len=3)
    assert losses[-1] < losses[0] - 0.5
    result = evaluate_reversal(model, make_reversal_batch(100, 1, 2, torch.Generator().manual_seed(5)))
    assert result["token_accuracy"] > 0.5
    assert not model.training


def test_exact_match_by_length_and_its_plot():
    model = _model(True)
    results = exact_match_by_length(model, [2, 4], n_per_length=20)
    assert list(results) == [2, 4] and all(0 <= v <= 1 for v in results.values())
    assert results == exact_match_by_length(model, [2, 4], n_per_length=20)  # the same strings every time
    ax = plot_exact_match_by_length({"a": results, "b": {2: 1.0, 4: 0.5}})
    assert len(ax.lines) == 2
    plt.close(ax.figure)
    with pytest.raises(ValueError, match="at least one length"):
        exact_match_by_length(model, [])
    with pytest.raises(ValueError, match="at least one model"):
        plot_exact_match_by_length({})


def test_time_forward_passes_returns_one_positive_time_per_length():
    times = time_forward_passes(lengths=(4, 16), d_model=32, repeats=2)
    assert set(times) == {"recurrent (GRU)", "self-attention"}
    assert all(len(v) == 2 and all(t > 0 for t in v) for v in times.values())
    with pytest.raises(TypeError, match="each length must be an int"):
        time_forward_passes(lengths=(4.0,))


def test_influence_fades_with_distance_through_a_gru_but_not_through_attention():
    gru, attention = influence_by_distance("gru"), influence_by_distance("attention")
    assert gru.shape == attention.shape == (64,)
    assert gru[0] / gru[-1] < 1e-6  # 63 steps back, almost nothing arrives
    assert attention.min() / attention.max() > 0.05  # one step from every position
    assert torch.equal(gru, influence_by_distance("gru"))
    with pytest.raises(ValueError, match="kind must be 'gru' or 'attention'"):
        influence_by_distance("lstm")
