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
