import math

import pytest
import torch

from course_lib.toy_tasks import (KeyValueRetriever, RetrievalBatch, evaluate_retriever, make_retrieval_batch,
                                  retrieval_loss, train_retriever)


def _batch(n=200, seed=0, **kwargs):
    return make_retrieval_batch(n, generator=torch.Generator().manual_seed(seed), **kwargs)


def test_batch_shapes_and_dtypes():
    batch = _batch(5, n_pairs=6, n_queries=3, n_keys=10, n_values=4)
    assert isinstance(batch, RetrievalBatch) and len(batch) == 5
    assert batch.keys.shape == batch.values.shape == (5, 6)
    assert batch.queries.shape == batch.positions.shape == batch.targets.shape == (5, 3)
    for t in (batch.keys, batch.values, batch.queries, batch.positions, batch.targets):
        assert t.dtype == torch.long
    assert batch.keys.max() < 10 and batch.values.max() < 4 and batch.keys.min() >= 0


def test_every_query_is_answered_by_its_own_pair_and_keys_differ():
    batch = _batch(300)
    for b in range(len(batch)):
        keys = batch.keys[b].tolist()
        assert len(set(keys)) == len(keys)  # keys of one sequence all differ
        assert len(set(batch.positions[b].tolist())) == batch.positions.shape[1]  # queries differ
        for query, pos, target in zip(batch.queries[b], batch.positions[b], batch.targets[b]):
            assert keys.index(int(query)) == int(pos)  # the only pair with that key
            assert batch.values[b, pos] == target


def test_batches_are_reproducible_and_varied():
    a, b = _batch(50, seed=1), _batch(50, seed=1)
    assert all(torch.equal(x, y) for x, y in zip(vars(a).values(), vars(b).values()))
    c = _batch(50, seed=2)
    assert not torch.equal(a.keys, c.keys)
    # every position is asked about sometimes, so a model cannot just read a fixed position
    assert set(_batch(500).positions.flatten().tolist()) == set(range(8))


def test_labels():
    batch = RetrievalBatch(keys=torch.tensor([[2, 0]]), values=torch.tensor([[7, 3]]),
                           queries=torch.tensor([[0]]), positions=torch.tensor([[1]]), targets=torch.tensor([[3]]))
    assert batch.pair_labels(0) == ["c=7", "a=3"] and batch.query_labels(0) == ["a?"]


@pytest.mark.parametrize("kwargs, message", [
    (dict(n_pairs=17), "n_pairs=17 pairs need 17 different keys"),
    (dict(n_queries=9), "n_queries=9 different queries"),
    (dict(n_keys=27, n_pairs=8), "n_keys must be at most 26"),
    (dict(n_values=0), "n_values must be a positive int"),
])
def test_bad_batch_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_retrieval_batch(4, **kwargs)


def test_model_shapes_weights_and_loss_of_an_untrained_model():
    torch.manual_seed(0)
    model = KeyValueRetriever(n_keys=16, n_values=10, d_model=8, d_k=4)
    batch = _batch(4)
    logits, weights = model.answer(batch)
    assert logits.shape == (4, 4, 10) and weights.shape == (4, 4, 8)
    assert torch.allclose(weights.sum(-1), torch.ones(4, 4))
    loss = retrieval_loss(logits, batch.targets)
    expected = -torch.log_softmax(logits, -1).gather(-1, batch.targets[..., None]).mean()
    assert torch.allclose(loss, expected)
    assert abs(retrieval_loss(torch.zeros(4, 4, 10), batch.targets).item() - math.log(10)) < 1e-6


def test_model_rejects_bad_ids_and_shapes():
    model = KeyValueRetriever(d_model=8, d_k=4)
    batch = _batch(2)
    with pytest.raises(ValueError, match=r"values: ids must lie in 0..9"):
        model(batch.keys, batch.values + 10, batch.queries)
    with pytest.raises(TypeError, match="keys: expected an? int dtype"):
        model(batch.keys.float(), batch.values, batch.queries)
    with pytest.raises(ValueError, match="values: expected n_pairs=8"):
        model(batch.keys, batch.values[:, :3], batch.queries)


def test_a_few_training_steps_lower_the_loss_and_are_reproducible():
    losses = []
    for _ in range(2):
        torch.manual_seed(0)
        model = KeyValueRetriever(d_model=16, d_k=8)
        losses.append(train_retriever(model, steps=40, batch_size=32, lr=1e-2, seed=3))
    assert losses[0] == losses[1]
    assert len(losses[0]) == 40
    assert sum(losses[0][-5:]) / 5 < 0.5 * losses[0][0]
    result = evaluate_retriever(model, _batch(200, seed=9))
    assert set(result) == {"accuracy", "attention_accuracy", "weight_on_target", "loss"}
    assert result["accuracy"] > 0.5 and result["attention_accuracy"] > 0.5  # chance: 0.1 and 0.125


def test_evaluate_counts_right_answers():
    class Oracle(KeyValueRetriever):
        def forward(self, keys, values, queries):
            positions = (queries[..., None] == keys[:, None, :]).float()  # (B, n_q, n_pairs)
            answer = torch.nn.functional.one_hot(values, self.n_values).float()  # (B, n_pairs, n_values)
            return 10 * positions @ answer, positions

    result = evaluate_retriever(Oracle(), _batch(50))
    assert result["accuracy"] == 1.0 and result["attention_accuracy"] == 1.0 and result["weight_on_target"] == 1.0


def test_train_arguments_are_checked():
    model = KeyValueRetriever(d_model=8, d_k=4)
    with pytest.raises(ValueError, match="steps must be a positive int"):
        train_retriever(model, steps=0)
    with pytest.raises(ValueError, match="lr must be positive"):
        train_retriever(model, steps=1, lr=0.0)


# --- digit reversal (notebook 09) ------------------------------------------------------------------------

from course_lib.toy_tasks import (BOS_ID, EOS_ID, PAD_ID, REVERSAL_VOCAB, ReversalBatch,  # noqa: E402
                                  build_reversal_model, digits_to_ids, evaluate_reversal, ids_to_digits, ids_to_tokens,
                                  make_reversal_batch, reverse_with_eos, seq2seq_loss, train_reversal,
                                  warmup_then_linear_decay)
from course_lib.transformer import Seq2SeqTransformer  # noqa: E402


def test_reversal_vocabulary_and_conversions():
    assert len(REVERSAL_VOCAB) == 13 and REVERSAL_VOCAB[PAD_ID] == "<pad>" and REVERSAL_VOCAB[BOS_ID] == "<bos>"
    assert REVERSAL_VOCAB[EOS_ID] == "<eos>" and REVERSAL_VOCAB[3] == "0" and REVERSAL_VOCAB[12] == "9"
    assert digits_to_ids("3 1,4") == digits_to_ids([3, 1, 4]) == [6, 4, 7]
    assert ids_to_tokens(torch.tensor([1, 6, 2, 0])) == ["<bos>", "3", "<eos>", "<pad>"]
    assert ids_to_digits([1, 8, 6, 2, 9, 0]) == "53"  # stops at <eos>
    assert ids_to_digits([]) == ""
    with pytest.raises(ValueError, match="only the digits 0-9, got 'x'"):
        digits_to_ids("12x")
    with pytest.raises(ValueError, match="ints 0-9, got 10"):
        digits_to_ids([1, 10])
    with pytest.raises(ValueError, match=r"ids must lie in 0..12, got 13"):
        ids_to_tokens([13])


def test_reverse_with_eos_against_a_python_loop():
    src = torch.tensor([[6, 4, 7, 0, 0], [5, 6, 7, 8, 9], [3, 0, 0, 0, 0]])
    expected = []
    for row in src.tolist():
        tokens = [t for t in row if t != PAD_ID]
        expected.append(tokens[::-1] + [EOS_ID] + [PAD_ID] * (len(row) - len(tokens)))
    assert reverse_with_eos(src).tolist() == expected
    with pytest.raises(ValueError, match="right padding"):
        reverse_with_eos(torch.tensor([[0, 4, 5]]))
    with pytest.raises(TypeError, match="int dtype"):
        reverse_with_eos(src.float())


def test_reversal_batches_are_right_reproducible_and_exclude_what_they_are_told():
    batch = make_reversal_batch(300, min_len=3, max_len=8, generator=torch.Generator().manual_seed(0))
    assert isinstance(batch, ReversalBatch) and len(batch) == 300
    assert batch.src.shape == (300, 8) and batch.tgt.shape == (300, 9) and batch.src.dtype == torch.long
    assert set(batch.lengths.tolist()) == set(range(3, 9))
    for b in range(20):
        digits = batch.digits(b)
        assert len(digits) == batch.lengths[b] and ids_to_digits(batch.tgt[b]) == digits[::-1]
    again = make_reversal_batch(300, generator=torch.Generator().manual_seed(0))
    assert torch.equal(again.src, batch.src)
    held_out = make_reversal_batch(50, min_len=3, max_len=3, generator=torch.Generator().manual_seed(1)).sequences()
    fresh = make_reversal_batch(400, min_len=3, max_len=3, generator=torch.Generator().manual_seed(2),
                                exclude=held_out)
    assert not (fresh.sequences() & held_out) and len(held_out) > 40
    every_one = {(a, b) for a in range(3, 13) for b in range(3, 13)}
    with pytest.raises(ValueError, match="nothing left to draw"):
        make_reversal_batch(4, min_len=2, max_len=2, exclude=every_one)
    with pytest.raises(ValueError, match="min_len=5 must not exceed max_len=4"):
        make_reversal_batch(4, min_len=5, max_len=4)


def test_seq2seq_loss_ignores_padding():
    logits = torch.randn(2, 3, 13, generator=torch.Generator().manual_seed(0))
    targets = torch.tensor([[5, 2, 0], [7, 8, 2]])
    keep = targets != PAD_ID
    expected = -torch.log_softmax(logits, -1).gather(-1, targets[..., None]).squeeze(-1)[keep].mean()
    assert torch.allclose(seq2seq_loss(logits, targets), expected)
    assert abs(seq2seq_loss(torch.zeros(2, 3, 13), targets).item() - math.log(13)) < 1e-6
    with pytest.raises(ValueError, match="expected T=3"):
        seq2seq_loss(logits, targets[:, :2])


def test_warmup_then_linear_decay():
    factors = [warmup_then_linear_decay(s, 4, 10) for s in range(11)]
    assert factors[:4] == [0.25, 0.5, 0.75, 1.0]
    assert factors[4:] == pytest.approx([1.0, 5 / 6, 4 / 6, 3 / 6, 2 / 6, 1 / 6, 0.0])
    assert warmup_then_linear_decay(0, 0, 5) == 1.0


def _tiny_model(seed=0, **kwargs):
    return build_reversal_model(seed, d_model=16, h=2, num_layers=1, d_ff=32, **kwargs)


def test_build_reversal_model_is_the_same_every_time_and_leaves_the_global_generator_alone():
    torch.manual_seed(3)
    expected = torch.rand(2)
    torch.manual_seed(3)
    models = [_tiny_model() for _ in range(6)]  # enough to meet both orders of a set of two modules
    assert torch.equal(torch.rand(2), expected)
    for model in models[1:]:
        for (name, p), q in zip(models[0].named_parameters(), model.parameters()):
            assert torch.equal(p, q), name
    model = models[0]
    assert isinstance(model, Seq2SeqTransformer) and model.src_embed.num_embeddings == 13
    assert len(model.transformer.encoder_layers) == len(model.transformer.decoder_layers) == 1
    assert not torch.equal(model.src_embed.weight, model.tgt_embed.weight)
    std = torch.cat([model.src_embed.weight, model.tgt_embed.weight]).std().item()
    assert 0.15 < std < 0.35  # d_model^-0.5 = 0.25
    assert not torch.equal(_tiny_model(seed=1).src_embed.weight, model.src_embed.weight)
    shared = _tiny_model(share_embeddings=True)
    assert shared.src_embed is shared.tgt_embed and shared.out.weight is shared.src_embed.weight


def test_a_few_reversal_steps_lower_the_loss_and_are_reproducible():
    runs = []
    for _ in range(2):
        model = _tiny_model()
        runs.append(train_reversal(model, steps=30, batch_size=32, lr=3e-3, warmup=5, max_len=5, seed=1))
    assert runs[0] == runs[1] and len(runs[0]) == 30
    assert sum(runs[0][-5:]) / 5 < runs[0][0] - 0.3  # from about ln 13 = 2.56
    assert not model.training  # left in eval mode for decoding
    with pytest.raises(ValueError, match="warmup must be an int in 0..steps=3"):
        train_reversal(model, steps=3, warmup=4)
    with pytest.raises(ValueError, match="lr must be positive"):
        train_reversal(model, steps=3, warmup=0, lr=-1.0)


def test_evaluate_reversal_counts_whole_sequences_and_tokens(monkeypatch):
    src = torch.tensor([[4, 5, 6], [7, 8, 0]])  # "123" and "45"
    batch = ReversalBatch(src=src, tgt=reverse_with_eos(src), lengths=torch.tensor([3, 2]))
    assert batch.tgt.tolist() == [[6, 5, 4, 2], [8, 7, 2, 0]]
    model = _tiny_model()
    import course_lib.transformer as transformer

    answers = {
        "perfect": (torch.tensor([[6, 5, 4, 2], [8, 7, 2, 0]]), 1.0, 1.0),
        "one digit wrong": (torch.tensor([[6, 9, 4, 2], [8, 7, 2, 0]]), 0.5, 6 / 7),
        "no EOS": (torch.tensor([[6, 5, 4, 4], [8, 7, 2, 0]]), 0.5, 6 / 7),
        "stopped early, shorter output": (torch.tensor([[6, 2], [8, 2]]), 0.0, 2 / 7),
    }
    for name, (answer, exact, tokens) in answers.items():
        monkeypatch.setattr(transformer, "greedy_decode", lambda *args, answer=answer, **kw: answer)
        result = evaluate_reversal(model, batch)
        assert set(result) == {"exact_match", "token_accuracy", "loss"}
        assert result["exact_match"] == exact and result["token_accuracy"] == pytest.approx(tokens), name
