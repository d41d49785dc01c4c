"""course_lib.batching: encoding pairs, token-budget batches, collate, BatchPlan and padding_fraction."""
import random

import pytest
import torch

from course_lib.batching import (Batch, BatchPlan, Example, collate, encode_pairs, padding_fraction, plot_batch,
                                 token_budget_batches)
from course_lib.tokenizer import BOS_ID, EOS_ID, PAD_ID


class WordTokenizer:
    """A stand-in for the SentencePiece tokenizer: one id per space-separated word (ids from 4)."""

    def __init__(self):
        self.ids = {}

    def encode(self, text):
        return [self.ids.setdefault(w, 4 + len(self.ids)) for w in text.split()]

    def encode_batch(self, texts):
        return [self.encode(t) for t in texts]


def _examples(lengths):
    """Examples with the given (source, target) lengths, EOS included; ids count up from 4."""
    return [Example(tuple(range(4, 4 + s - 1)) + (EOS_ID,), tuple(range(10, 10 + t - 1)) + (EOS_ID,))
            for s, t in lengths]


def _random_examples(n, seed=0, longest=30):
    rng = random.Random(seed)
    return _examples([(rng.randint(1, longest), rng.randint(1, longest)) for _ in range(n)])


# --- encode_pairs ------------------------------------------------------------------------------------

def test_encode_pairs_appends_eos_to_both_sides():
    tok = WordTokenizer()
    examples = encode_pairs([("ein Hund", "a dog"), ("Hund", "dog runs fast")], tok)
    assert examples == [Example((4, 5, EOS_ID), (6, 7, EOS_ID)), Example((5, EOS_ID), (7, 8, 9, EOS_ID))]
    assert encode_pairs([], tok) == []


def test_encode_pairs_drops_long_pairs_and_keeps_the_order():
    tok = WordTokenizer()
    pairs = [("a b", "c"), ("a b c", "d"), ("a", "b c d"), ("a", "b c")]
    # lengths with EOS: (3, 2), (4, 2), (2, 4), (2, 3); max_len=3 keeps the 1st and the 4th
    kept = encode_pairs(pairs, tok, max_len=3)
    assert [(len(e.src), len(e.tgt)) for e in kept] == [(3, 2), (2, 3)]
    assert len(encode_pairs(pairs, tok, max_len=4)) == 4  # a side of exactly max_len is kept


@pytest.mark.parametrize("max_len", [1, 0, 2.5, "8"])
def test_encode_pairs_refuses_a_bad_max_len(max_len):
    with pytest.raises(ValueError, match="max_len"):
        encode_pairs([("a", "b")], WordTokenizer(), max_len=max_len)


@pytest.mark.parametrize("pairs", [["a b"], [("a", "b", "c")], [("a", 3)]])
def test_encode_pairs_refuses_what_is_not_pairs_of_text(pairs):
    with pytest.raises(TypeError, match="pairs"):
        encode_pairs(pairs, WordTokenizer())


# --- token_budget_batches ------------------------------------------------------------------------------

def test_token_budget_batches_by_hand():
    # (src, tgt) lengths; sorted by (tgt, src, index): 1 (2,2), 3 (3,2), 0 (5,3), 2 (2,4), 4 (6,6)
    examples = _examples([(5, 3), (2, 2), (2, 4), (3, 2), (6, 6)])
    # budget 8: [1, 3] (2 x 3 = 6; adding 0 would make 3 x 5 = 15), [0] (5; with 2: 2 x 5 = 10), [2] (4;
    # with 4: 2 x 6 = 12), [4] (6)
    assert token_budget_batches(examples, 8, shuffle=False) == [[1, 3], [0], [2], [4]]
    assert token_budget_batches(examples, 12, shuffle=False) == [[1, 3], [0, 2], [4]]
    assert token_budget_batches(examples, 100, shuffle=False) == [[1, 3, 0, 2, 4]]


def test_every_example_exactly_once_and_the_budget_holds():
    examples = _random_examples(500)
    for max_tokens in (30, 64, 257, 4096):
        batches = token_budget_batches(examples, max_tokens, seed=3)
        assert sorted(i for b in batches for i in b) == list(range(len(examples)))
        for b in batches:
            assert b and len(b) * max(max(len(examples[i].src), len(examples[i].tgt)) for i in b) <= max_tokens


def test_batches_are_deterministic_by_seed_and_shuffled():
    examples = _random_examples(400)
    a = token_budget_batches(examples, 100, seed=0)
    assert token_budget_batches(examples, 100, seed=0) == a
    b = token_budget_batches(examples, 100, seed=1)
    assert b != a and sorted(map(sorted, b)) != sorted(map(sorted, a))  # other order, other tie-breaks
    unshuffled = token_budget_batches(examples, 100, shuffle=False)
    longest = [max(len(examples[i].tgt) for i in batch) for batch in unshuffled]
    assert longest == sorted(longest)  # without shuffle: shortest first
    assert token_budget_batches(examples, 100, shuffle=False, seed=5) == unshuffled


def test_token_budget_batches_errors_and_empty_input():
    examples = _examples([(3, 3), (9, 2)])
    with pytest.raises(ValueError, match="example 1 has 9 tokens"):
        token_budget_batches(examples, 8)
    for bad in (0, -5, 8.0, None):
        with pytest.raises(ValueError, match="max_tokens"):
            token_budget_batches(examples, bad)
    assert token_budget_batches([], 10) == []


# --- collate and Batch -----------------------------------------------------------------------------------

def test_collate_pads_and_shifts():
    examples = [Example((5, 6, EOS_ID), (7, 8, 9, EOS_ID)), Example((5, EOS_ID), (7, EOS_ID))]
    batch = collate(examples)
    assert torch.equal(batch.src, torch.tensor([[5, 6, EOS_ID], [5, EOS_ID, PAD_ID]]))
    assert torch.equal(batch.tgt_out, torch.tensor([[7, 8, 9, EOS_ID], [7, EOS_ID, PAD_ID, PAD_ID]]))
    assert torch.equal(batch.tgt_in, torch.tensor([[BOS_ID, 7, 8, 9], [BOS_ID, 7, PAD_ID, PAD_ID]]))
    assert batch.src.dtype == batch.tgt_in.dtype == batch.tgt_out.dtype == torch.long
    assert torch.equal(batch.src_mask, torch.tensor([[True, True, True], [True, True, False]]))
    assert torch.equal(batch.tgt_mask, torch.tensor([[True] * 4, [True, True, False, False]]))
    assert batch.num_target_tokens == 6 and len(batch) == 2


def test_collate_on_random_examples_shapes_bos_eos_and_padding():
    examples = _random_examples(20, seed=7)
    batch = collate(examples)
    S = max(len(e.src) for e in examples)
    T = max(len(e.tgt) for e in examples)
    assert batch.src.shape == (20, S) and batch.tgt_in.shape == batch.tgt_out.shape == (20, T)
    assert (batch.tgt_in[:, 0] == BOS_ID).all()
    for b, e in enumerate(examples):
        n = len(e.tgt)
        assert batch.tgt_out[b, n - 1] == EOS_ID and batch.src[b, len(e.src) - 1] == EOS_ID
        assert torch.equal(batch.tgt_in[b, 1:n], batch.tgt_out[b, :n - 1])  # shifted by one
        assert (batch.tgt_in[b, n:] == PAD_ID).all() and (batch.tgt_out[b, n:] == PAD_ID).all()
        assert (batch.src[b, len(e.src):] == PAD_ID).all()
    assert batch.num_target_tokens == sum(len(e.tgt) for e in examples)


def test_collate_errors():
    with pytest.raises(ValueError, match="at least one example"):
        collate([])
    with pytest.raises(ValueError, match="empty side"):
        collate([Example((5, EOS_ID), ())])
    with pytest.raises(ValueError, match="empty side"):
        collate([Example((), (5, EOS_ID))])


def test_batch_to_device_keeps_the_values():
    batch = collate(_examples([(3, 2), (2, 4)]))
    moved = batch.to("cpu")
    assert isinstance(moved, Batch)
    assert all(torch.equal(getattr(moved, n), getattr(batch, n)) for n in ("src", "tgt_in", "tgt_out"))


# --- BatchPlan ---------------------------------------------------------------------------------------------

def test_batch_plan_epochs_use_their_own_seed():
    examples = _random_examples(300)
    plan = BatchPlan(examples, max_tokens=120, seed=4)
    assert plan.indices(0) == token_budget_batches(examples, 120, seed=4)
    assert plan.indices(2) == token_budget_batches(examples, 120, seed=6)
    assert plan.indices(0) != plan.indices(1)
    assert len(plan) == len(plan.indices(0))
    batches = list(plan.epoch(0))
    assert len(batches) == len(plan) and all(isinstance(b, Batch) for b in batches)
    assert sum(len(b) for b in batches) == 300


def test_batch_plan_with_two_processes_gives_disjoint_equal_shards():
    examples = _random_examples(300)
    full = token_budget_batches(examples, 120, seed=0)
    shards = [BatchPlan(examples, 120, seed=0, rank=r, world_size=2).indices(0) for r in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == len(full) // 2
    seen = [{i for b in shard for i in b} for shard in shards]
    assert not seen[0] & seen[1]
    assert shards[0] == full[0:2 * (len(full) // 2):2] and shards[1] == full[1:2 * (len(full) // 2):2]
    dropped = len(full) % 2
    assert len(seen[0] | seen[1]) == 300 - sum(len(b) for b in full[len(full) - dropped:])


def test_batch_plan_errors():
    examples = _examples([(3, 3)] * 4)
    with pytest.raises(ValueError, match="at least one example"):
        BatchPlan([], 10)
    for rank, world_size in ((2, 2), (-1, 2), (0, 0), (0, 1.5)):
        with pytest.raises(ValueError, match="rank"):
            BatchPlan(examples, 10, rank=rank, world_size=world_size)
    one_batch = BatchPlan(examples, 100, rank=0, world_size=2)  # everything fits in 1 batch, 2 processes
    with pytest.raises(ValueError, match="only 1 batches for 2 processes"):
        one_batch.indices(0)


# --- padding_fraction ---------------------------------------------------------------------------------------

def test_padding_fraction_by_hand():
    # batch 1: src lengths 3 and 1 -> (2, 3): 2 pads of 6; tgt lengths 4 and 2 -> (2, 4): 2 pads of 8
    # batch 2: one example (2, 2): no padding, 4 positions. Total: 4 pads of 18.
    b1 = collate(_examples([(3, 4), (1, 2)]))
    b2 = collate(_examples([(2, 2)]))
    assert padding_fraction([b1, b2]) == pytest.approx(4 / 18)
    assert padding_fraction([b1]) == pytest.approx(4 / 14)
    assert padding_fraction([b2]) == 0.0
    assert padding_fraction([]) == 0.0
    # pooled over positions, not the mean of the batches' fractions
    assert padding_fraction([b1, b2]) != pytest.approx((4 / 14 + 0.0) / 2)


def test_sorting_by_length_reduces_padding():
    rng = random.Random(2)  # the two sides' lengths go together, as in real translations
    examples = _examples([(n + rng.randint(0, 2), n) for n in (rng.randint(2, 30) for _ in range(400))])
    sorted_batches = [collate([examples[i] for i in b]) for b in token_budget_batches(examples, 200, seed=0)]
    order = list(range(400))
    random.Random(0).shuffle(order)
    random_batches = [collate([examples[i] for i in order[k:k + 8]]) for k in range(0, 400, 8)]
    assert padding_fraction(sorted_batches) < padding_fraction(random_batches) / 2


# --- drawing ----------------------------------------------------------------------------------------------

def test_plot_batch_draws_three_grids_with_shapes():
    import matplotlib.pyplot as plt
    batch = collate(_examples([(3, 4), (1, 2)]))
    fig = plot_batch(batch, id_to_piece=lambda i: f"p{i}", title="tiny")
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["src (B, S) = (2, 3)", "tgt_in (B, T) = (2, 4)", "tgt_out (B, T) = (2, 4)"]
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert texts == ["p4", "p5", "</s>", "</s>", "<pad>", "<pad>"]
    assert fig._suptitle.get_text() == "tiny"
    plt.close(fig)
    fig = plot_batch(batch)  # ids when no id_to_piece is given
    assert [t.get_text() for t in fig.axes[0].texts][:2] == ["4", "5"]
    plt.close(fig)


def test_collate_equals_padding_each_side_with_pad_sequences():
    from course_lib.masking import pad_sequences
    rng = random.Random(11)
    for _ in range(50):
        # ids drawn from 0 on: even a PAD id inside a sentence must not confuse the shift
        examples = [Example(tuple(rng.randint(0, 40) for _ in range(rng.randint(1, 9))),
                            tuple(rng.randint(0, 40) for _ in range(rng.randint(1, 9))))
                    for _ in range(rng.randint(1, 6))]
        batch = collate(examples)
        assert torch.equal(batch.src, pad_sequences([e.src for e in examples], pad_id=PAD_ID))
        assert torch.equal(batch.tgt_out, pad_sequences([e.tgt for e in examples], pad_id=PAD_ID))
        assert torch.equal(batch.tgt_in, pad_sequences([(BOS_ID,) + e.tgt[:-1] for e in examples], pad_id=PAD_ID))


def test_collate_refuses_float_ids():
    with pytest.raises(TypeError, match="ints"):
        collate([Example((4.0, 2.0), (5, 2))])
