import math

import matplotlib.pyplot as plt
import pytest
import torch
import torch.nn.functional as F

from course_lib.retrieval import (FEATURES, WORD_VECTORS, WORDS, contextualize, cosine, embed, hard_lookup,
                                  one_hot, plot_lookup, plot_lookup_2d, plot_weights_matrix, plot_word_table,
                                  similarity_scores, soft_lookup, soft_weights, word_table)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _softmax64(scores):
    """An independent softmax in float64 with plain Python maths."""
    top = max(scores)
    exps = [math.exp(s - top) for s in scores]
    return [e / sum(exps) for e in exps]


# --- the word table -----------------------------------------------------------------------------------

def test_word_table_is_small_readable_and_read_only():
    assert 10 <= len(WORDS) <= 16 and len(FEATURES) == 5
    assert all(len(vector) == len(FEATURES) for vector in WORD_VECTORS.values())
    assert all(0.0 <= x <= 1.0 for vector in WORD_VECTORS.values() for x in vector)
    with pytest.raises(TypeError):
        WORD_VECTORS["cat"] = (0.0,) * 5  # type: ignore[index]
    # the two ambiguous words each mix two meanings
    bank = dict(zip(FEATURES, WORD_VECTORS["bank"]))
    school = dict(zip(FEATURES, WORD_VECTORS["school"]))
    assert bank["money"] > 0 and bank["water"] > 0
    assert school["learning"] > 0 and school["animal"] > 0


def test_word_table_returns_a_fresh_float_matrix():
    words, table = word_table()
    assert words == list(WORDS) and table.shape == (len(WORDS), 5) and table.dtype == torch.float32
    assert table[words.index("river")].tolist() == list(WORD_VECTORS["river"])
    table[0] = 99  # changing the copy does not change the table
    assert word_table()[1][0].tolist() == list(WORD_VECTORS[WORDS[0]])
    words, table = word_table(["bank", "cat"])
    assert words == ["bank", "cat"] and torch.equal(table[1], torch.tensor(WORD_VECTORS["cat"]))


def test_embed_stacks_static_vectors_and_names_unknown_words():
    x = embed(["cash", "bank", "cash"])
    assert x.shape == (3, 5) and torch.equal(x[0], x[2])
    assert embed([]).shape == (0, 5)
    with pytest.raises(KeyError, match="no vector for 'bnak'.*cat, dog"):
        embed(["bnak"])
    with pytest.raises(TypeError, match="list of words"):
        embed("river bank")


# --- one-hot ------------------------------------------------------------------------------------------

def test_one_hot_selects_a_row_by_matrix_product():
    values = torch.arange(12.0).reshape(4, 3)
    for i in range(4):
        q = one_hot(i, 4)
        assert q.shape == (4,) and q.dtype == torch.float32 and q.sum() == 1 and q[i] == 1
        assert torch.equal(q @ values, values[i])
    assert torch.equal(one_hot(torch.tensor(2), 3), torch.tensor([0.0, 0.0, 1.0]))
    assert one_hot(0, 1).tolist() == [1.0]
    assert one_hot(1, 2, dtype=torch.float64).dtype == torch.float64


@pytest.mark.parametrize("index, n, error, fragment", [
    (3, 3, IndexError, "out of range for n=3 keys"),
    (-1, 3, IndexError, "out of range"),
    (0, 0, ValueError, "n must be a positive int"),
    (1.0, 3, TypeError, "index must be an int, got float"),
    (True, 3, TypeError, "index must be an int"),
    (torch.tensor([1]), 3, TypeError, "single integer"),
    (torch.tensor(1.0), 3, TypeError, "single integer"),
])
def test_one_hot_rejects_bad_input(index, n, error, fragment):
    with pytest.raises(error, match=fragment):
        one_hot(index, n)


# --- scores, hard and soft lookup ---------------------------------------------------------------------

KEYS = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
VALUES = torch.tensor([[10.0, 0.0, 1.0], [0.0, 10.0, 2.0], [5.0, 5.0, 3.0]])


def test_similarity_scores_are_dot_products():
    q = torch.tensor([2.0, -1.0])
    assert similarity_scores(q, KEYS).tolist() == [2.0, -1.0, 1.0]
    batch = torch.tensor([[2.0, -1.0], [0.0, 3.0]])
    assert similarity_scores(batch, KEYS).tolist() == [[2.0, -1.0, 1.0], [0.0, 3.0, 3.0]]


def test_soft_weights_match_an_independent_softmax():
    q = torch.tensor([2.0, -1.0])
    expected = _softmax64([2.0, -1.0, 1.0])
    assert torch.allclose(soft_weights(q, KEYS), torch.tensor(expected), atol=1e-7)
    expected_t = _softmax64([2.0 / 0.5, -1.0 / 0.5, 1.0 / 0.5])
    assert torch.allclose(soft_weights(q, KEYS, temperature=0.5), torch.tensor(expected_t), atol=1e-7)
    w = soft_weights(torch.randn(4, 2), KEYS)
    assert w.shape == (4, 3) and torch.allclose(w.sum(dim=-1), torch.ones(4))


def test_temperature_limits_hard_and_uniform():
    q = torch.tensor([2.0, -1.0])
    assert torch.allclose(soft_lookup(q, KEYS, VALUES, temperature=1e-3), hard_lookup(q, KEYS, VALUES))
    assert torch.allclose(soft_lookup(q, KEYS, VALUES, temperature=1e6), VALUES.mean(dim=0), atol=1e-4)


@pytest.mark.parametrize("temperature, error", [(0, ValueError), (-1.0, ValueError), (float("inf"), ValueError),
                                                (float("nan"), ValueError), ("1", TypeError), (True, TypeError)])
def test_bad_temperature_is_refused(temperature, error):
    with pytest.raises(error, match="temperature must be a positive"):
        soft_lookup(torch.ones(2), KEYS, VALUES, temperature=temperature)


def test_hard_lookup_returns_the_best_row_and_the_first_on_a_tie():
    assert hard_lookup(torch.tensor([2.0, -1.0]), KEYS, VALUES).tolist() == [10.0, 0.0, 1.0]
    # (1, 1) scores 1, 1 and 2 -> key 2; (1, 0) scores 1, 0, 1 -> a tie of keys 0 and 2 -> key 0
    assert hard_lookup(torch.tensor([1.0, 1.0]), KEYS, VALUES).tolist() == [5.0, 5.0, 3.0]
    assert hard_lookup(torch.tensor([1.0, 0.0]), KEYS, VALUES).tolist() == [10.0, 0.0, 1.0]
    words, table = word_table()
    cat = hard_lookup(torch.tensor([1.0, 0, 0, 0, 0]), table, table)  # cat and dog tie: cat comes first
    assert torch.equal(cat, table[words.index("cat")]) and words.index("cat") < words.index("dog")
    batch = hard_lookup(torch.tensor([[2.0, -1.0], [-1.0, 2.0]]), KEYS, VALUES)
    assert batch.tolist() == [[10.0, 0.0, 1.0], [0.0, 10.0, 2.0]]


def test_hard_lookup_returns_a_copy():
    values = VALUES.clone()
    out = hard_lookup(torch.tensor([2.0, -1.0]), KEYS, values)
    out += 1
    assert torch.equal(values, VALUES)


def test_soft_lookup_is_the_weighted_average_of_values():
    q = torch.tensor([2.0, -1.0])
    w = _softmax64([2.0, -1.0, 1.0])
    expected = [sum(w[i] * VALUES[i, j].item() for i in range(3)) for j in range(3)]
    out = soft_lookup(q, KEYS, VALUES)
    assert out.shape == (3,) and torch.allclose(out, torch.tensor(expected), atol=1e-5)
    assert torch.allclose(out, F.scaled_dot_product_attention(q[None], KEYS, VALUES, scale=1.0)[0], atol=1e-6)


def test_soft_lookup_batch_equals_one_query_at_a_time():
    torch.manual_seed(0)
    queries, keys, values = torch.randn(4, 3), torch.randn(4, 3), torch.randn(4, 2)
    batch = soft_lookup(queries, keys, values)
    assert batch.shape == (4, 2)
    for j in range(4):
        assert torch.allclose(batch[j], soft_lookup(queries[j], keys, values), atol=1e-6)


def test_soft_lookup_is_stable_for_huge_scores():
    q = torch.tensor([10.0, 0.0])
    keys = torch.tensor([[100.0, 0.0], [99.9, 0.0], [-100.0, 0.0]])  # scores 1000, 999, -1000
    naive = torch.exp(q @ keys.T)
    assert torch.isinf(naive).any()  # a naive softmax would give inf / inf = NaN
    w = _softmax64([1000.0, 999.0, -1000.0])
    expected = torch.tensor([w[0] * 1 + w[1] * 2 + w[2] * 3])
    out = soft_lookup(q, keys, torch.tensor([[1.0], [2.0], [3.0]]))
    assert torch.isfinite(out).all() and torch.allclose(out, expected, atol=1e-5)
    assert torch.allclose(soft_weights(q, keys).sum(), torch.tensor(1.0))


def test_single_key_gets_all_the_weight():
    out = soft_lookup(torch.tensor([-50.0, 3.0]), KEYS[:1], VALUES[:1])
    assert torch.equal(out, VALUES[0])


@pytest.mark.parametrize("fn", [hard_lookup, soft_lookup])
@pytest.mark.parametrize("query, keys, values, error, fragment", [
    (torch.ones(2), torch.zeros(0, 2), torch.zeros(0, 3), ValueError, "keys is empty"),
    (torch.ones(3), KEYS, VALUES, ValueError, r"query has 3 features but each key has d=2"),
    (torch.ones(2, 2, 2), KEYS, VALUES, ValueError, r"expected shape \(d,\) or a batch \(m, d\)"),
    (torch.ones(2), KEYS[0], VALUES, ValueError, r"keys: expected 2 axes"),
    (torch.ones(2), KEYS, VALUES[:2], ValueError, r"values: expected shape \(n, d_v\) with one row per key, n=3"),
    (torch.ones(2), KEYS, VALUES[0], ValueError, r"values: expected shape \(n, d_v\)"),
    (torch.ones(2, dtype=torch.long), KEYS, VALUES, TypeError, "query: expected a float dtype"),
    (torch.ones(2, dtype=torch.float64), KEYS, VALUES, TypeError, "query has dtype torch.float64"),
    (torch.ones(2), KEYS, VALUES.long(), TypeError, "values: expected a float dtype"),
    ([1.0, 0.0], KEYS, VALUES, TypeError, "query: expected a torch tensor, got list"),
    (torch.ones(2), KEYS, VALUES.tolist(), TypeError, "values: expected a torch tensor, got list"),
])
def test_lookups_reject_bad_shapes_with_clear_messages(fn, query, keys, values, error, fragment):
    with pytest.raises(error, match=fragment):
        fn(query, keys, values)


# --- contextualize ------------------------------------------------------------------------------------

def test_contextualize_matches_pytorch_attention_without_scaling():
    x = embed(["boat", "river", "bank"])
    ours = contextualize(x)
    theirs = F.scaled_dot_product_attention(x[None], x[None], x[None], scale=1.0)[0]
    assert ours.shape == (3, 5) and torch.allclose(ours, theirs, atol=1e-6)
    sharper = contextualize(x, temperature=0.5)
    assert torch.allclose(sharper, F.scaled_dot_product_attention(x, x, x, scale=2.0), atol=1e-6)


def test_contextualize_row_by_row():
    x = embed(["cash", "bank", "loan"])
    manual = torch.stack([soft_lookup(x[t], x, x) for t in range(3)])
    assert torch.allclose(contextualize(x), manual, atol=1e-6)
    assert torch.equal(contextualize(x[:1]), x[:1])  # one word can only read itself


def test_the_same_word_gets_different_vectors_in_different_sentences():
    river, money = embed(["boat", "river", "bank"]), embed(["cash", "bank", "loan"])
    assert torch.equal(river[2], money[1])  # static: identical
    a, b = contextualize(river)[2], contextualize(money)[1]
    assert cosine(a, b) < 0.9
    water, cash = FEATURES.index("water"), FEATURES.index("money")
    assert a[water] > a[cash] and b[cash] > b[water]


def test_contextualize_rejects_bad_input():
    with pytest.raises(ValueError, match="a sentence needs at least one word"):
        contextualize(torch.zeros(0, 5))
    with pytest.raises(ValueError, match="expected 2 axes"):
        contextualize(torch.zeros(1, 3, 5))
    with pytest.raises(TypeError, match="float dtype"):
        contextualize(torch.ones(3, 5, dtype=torch.long))


def test_cosine():
    assert cosine(torch.tensor([1.0, 0.0]), torch.tensor([3.0, 0.0])) == pytest.approx(1.0)
    assert cosine(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 2.0])) == pytest.approx(0.0)
    assert cosine(torch.tensor([1.0, 1.0]), torch.tensor([-1.0, -1.0])) == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="zero vector"):
        cosine(torch.zeros(2), torch.ones(2))
    with pytest.raises(ValueError, match="expected d=2, got d=3"):
        cosine(torch.ones(2), torch.ones(3))


# --- figures ------------------------------------------------------------------------------------------

def test_plot_word_table_writes_every_number():
    words, table = word_table(["cat", "bank"])
    ax = plot_word_table(words, table)
    texts = [t.get_text() for t in ax.texts]
    assert texts.count("1.0") == 1 and "0.7" in texts and "0.6" in texts and len(texts) == 10
    with pytest.raises(ValueError, match="table"):
        plot_word_table(["cat"], table)


def test_plot_lookup_has_three_labelled_panels():
    words, table = word_table()
    fig = plot_lookup(torch.tensor([0.0, 0, 1, 0, 0]), words, table, table, title="money")
    assert len(fig.axes) == 3 and fig._suptitle.get_text() == "money"
    assert all(ax.get_xlabel() and ax.get_ylabel() and ax.get_title() for ax in fig.axes)
    assert fig.axes[2].get_legend().get_texts()[0].get_text() == "hard: cash"


def test_plot_lookup_2d_title_states_settings_and_results():
    keys = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    fig = plot_lookup_2d(torch.tensor([1.0, 0.5]), ["a", "b"], keys, temperature=0.5,
                         axis_names=("animal", "water"))
    title = fig._suptitle.get_text()
    w = _softmax64([2.0, 1.0])
    assert title == (f"query = (1.00, 0.50), temperature = 0.5   →   hard: a,  soft: ({w[0]:.2f}, {w[1]:.2f})")
    assert fig.axes[0].get_xlabel() == "animal"
    with pytest.raises(ValueError, match="query"):
        plot_lookup_2d(torch.ones(3), ["a", "b"], keys)


def test_plot_weights_matrix():
    w = soft_weights(embed(["cash", "bank"]), embed(["cash", "bank"]))
    ax = plot_weights_matrix(w, ["cash", "bank"], title="t")
    assert len(ax.texts) == 4 and ax.get_title() == "t" and ax.get_ylabel() == "word asking (query)"
    with pytest.raises(ValueError, match="weights"):
        plot_weights_matrix(w, ["cash"])


def test_plot_feature_bars():
    from course_lib.retrieval import plot_feature_bars

    ax = plot_feature_bars({"a": torch.ones(5), "b": torch.zeros(5)}, title="t")
    assert len(ax.patches) == 10 and ax.get_title() == "t" and ax.get_xlabel() == "feature"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["a", "b"]
    with pytest.raises(ValueError, match="vector 'a'"):
        plot_feature_bars({"a": torch.ones(3)})
    with pytest.raises(ValueError, match="at least one vector"):
        plot_feature_bars({})
