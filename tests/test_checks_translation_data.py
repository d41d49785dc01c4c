"""Notebook 10's checks name each typical mistake."""
from collections import Counter, defaultdict
from itertools import combinations

import pytest
import torch

from course_lib.checks.core import CORRECT, ERROR, NOT_DONE, WRONG
from course_lib.checks.translation_data import check_count_pairs, check_decoder_input, decoder_input
from course_lib.tokenizer import count_pairs


def _not_done(*args):
    raise NotImplementedError("Your turn")


# --- count_pairs -------------------------------------------------------------------------------------------

def _loop(vocab):
    counts = {}
    for symbols, n in vocab.items():
        for i in range(len(symbols) - 1):
            counts[symbols[i], symbols[i + 1]] = counts.get((symbols[i], symbols[i + 1]), 0) + n
    return counts


def _defaultdict(vocab):
    counts = defaultdict(int)
    for symbols, n in vocab.items():
        for pair in zip(symbols, symbols[1:]):
            counts[pair] += n
    return counts


def _unweighted(vocab):
    return Counter(p for s in vocab for p in zip(s, s[1:]))


def _as_set(vocab):
    counts = Counter()
    for s, n in vocab.items():
        for p in set(zip(s, s[1:])):
            counts[p] += n
    return counts


def _joined(vocab, weighted=True):
    stream = [x for s, n in vocab.items() for _ in range(n if weighted else 1) for x in s]
    return Counter(zip(stream, stream[1:]))


def _joined_once_per_word_weighted(vocab):
    # words side by side, each once, but pairs weighted by the count of the word they start in
    stream = [(x, n) for s, n in vocab.items() for x in s]
    counts = Counter()
    for (a, n), (b, _) in zip(stream, stream[1:]):
        counts[a, b] += n
    return counts


def _range_off_by_one(vocab):
    counts = Counter()
    for s, n in vocab.items():
        for i in range(len(s) - 2):
            counts[s[i], s[i + 1]] += n
    return counts


def _from_one(vocab):
    counts = Counter()
    for s, n in vocab.items():
        for i in range(1, len(s) - 1):
            counts[s[i], s[i + 1]] += n
    return counts


def _all_pairs(vocab):
    counts = Counter()
    for s, n in vocab.items():
        for p in combinations(s, 2):
            counts[p] += n
    return counts


def _string_keys(vocab):
    counts = Counter()
    for s, n in vocab.items():
        for a, b in zip(s, s[1:]):
            counts[a + b] += n
    return counts


def _mutating(vocab):
    result = count_pairs(vocab)
    vocab.clear()
    return result


@pytest.mark.parametrize("attempt, fragment", [
    (count_pairs, "matches the reference"),
    (_loop, "matches the reference"),
    (_defaultdict, "matches the reference"),
    (_not_done, "replace `raise NotImplementedError`"),
    (_unweighted, "ignored the word counts"),
    (_as_set, "once per word"),
    (_joined, "across word boundaries"),
    (lambda v: _joined(v, weighted=False), "across word boundaries"),
    (_joined_once_per_word_weighted, "across word boundaries"),  # caught by the ▁ rule, not by a Mistake
    (_range_off_by_one, "missed the last pair"),
    (_from_one, "missed the first pair"),
    (_all_pairs, "ADJACENT"),
    (lambda v: Counter({(b, a): n for (a, b), n in count_pairs(v).items()}), "reversed"),
    (lambda v: Counter({p: n * n for p, n in count_pairs(v).items()}), "count twice"),
    (_string_keys, "joined strings"),
    (lambda v: count_pairs(v).most_common(), "got a list"),
    (lambda v: None, "returned None"),
    (_mutating, "changed the vocabulary"),
    (lambda v: Counter({**count_pairs(v), ("a", "n"): 99}) if v else Counter(), "should have count"),
    (lambda v: Counter({**count_pairs(v), ("q", "q"): 1}), "does not occur in any word"),
    (lambda v: Counter(dict(list(count_pairs(v).items())[1:])), "lacks the pair"),
])
def test_check_count_pairs_names_each_mistake(attempt, fragment):
    result = check_count_pairs(attempt)
    assert fragment in result.message, result


def test_check_count_pairs_statuses_and_where():
    assert check_count_pairs(_not_done).status == NOT_DONE
    assert check_count_pairs(count_pairs).status == CORRECT
    assert check_count_pairs(lambda v: 1 / 0).status == ERROR
    assert check_count_pairs(count_pairs({})).status == ERROR  # called instead of passed
    result = check_count_pairs(_unweighted)
    assert result.status == WRONG and "toy corpus" in result.message and "+= count" in result.hint
    # counting each pair once per word is right on the toy corpus: caught on the repeated-pairs case
    result = check_count_pairs(_as_set)
    assert result.status == WRONG and "repeated pairs" in result.message
    # zero counts and plain dicts are fine
    assert check_count_pairs(lambda v: Counter({**count_pairs(v), ("z", "z"): 0})).status == CORRECT


# --- decoder_input ------------------------------------------------------------------------------------------

def test_the_reference_decoder_input():
    tgt = torch.tensor([57, 9, 311, 2])
    assert torch.equal(decoder_input(tgt, 1), torch.tensor([1, 57, 9, 311]))
    assert torch.equal(decoder_input(torch.tensor([2]), 5), torch.tensor([5]))
    assert decoder_input(tgt, 1).dtype == torch.long


def _in_place(t, b):
    t[1:] = t[:-1].clone()
    t[0] = b
    return t


@pytest.mark.parametrize("attempt, fragment", [
    (decoder_input, "matches the reference"),
    (lambda t, b: torch.nn.functional.pad(t[:-1], (1, 0), value=b), "matches the reference"),
    (lambda t, b: torch.tensor([b] + t.tolist()[:-1]), "matches the reference"),
    (_not_done, "replace `raise NotImplementedError`"),
    (lambda t, b: t[:-1], "forgot BOS"),
    (lambda t, b: torch.cat([torch.tensor([b]), t]), "did not drop the last token"),
    (lambda t, b: torch.cat([t[1:], torch.tensor([b])]), "shifted the wrong way"),
    (lambda t, b: torch.roll(t, 1), "rolled the target"),
    (lambda t, b: torch.cat([torch.tensor([b]), t[1:]]), "replaced the first token with BOS instead of shifting"),
    (lambda t, b: t.clone(), "unchanged"),
    (lambda t, b: torch.cat([torch.tensor([1]), t[:-1]]), "id 1 instead of the argument bos_id"),
    (_in_place, "changed its input in place"),
    (lambda t, b: torch.cat([torch.tensor([float(b)]), t[:-1].float()]), "dtype is torch.float32"),
    (lambda t, b: [b] + t.tolist()[:-1], "expected a torch tensor"),
    (lambda t, b: None, "returned None"),
])
def test_check_decoder_input_names_each_mistake(attempt, fragment):
    result = check_decoder_input(attempt)
    assert fragment in result.message, result


def test_overwriting_the_first_token_is_named():
    def overwrite(t, b):
        out = t.clone()
        out[0] = b
        return out

    result = check_decoder_input(overwrite)
    assert result.status == WRONG and "replaced the first token" in result.message


def test_check_decoder_input_statuses():
    assert check_decoder_input(_not_done).status == NOT_DONE
    assert check_decoder_input(decoder_input).status == CORRECT
    assert check_decoder_input(lambda t, b: t[5]).status == ERROR
