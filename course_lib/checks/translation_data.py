"""Notebook 10's exercises: counting BPE's symbol pairs, and the decoder's input for teacher forcing."""
from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Mapping
from itertools import combinations

import torch

from course_lib.checks.core import (CORRECT, ERROR, NOT_DONE, WRONG, Case, CheckResult, Mistake,
                                    check_function)
from course_lib.tokenizer import WORD_START
from course_lib.tokenizer import count_pairs as _reference_count_pairs

# --- exercise 1: count_pairs -----------------------------------------------------------------------


def _pairs_of(symbols):
    return list(zip(symbols, symbols[1:]))


def _unweighted(vocab):
    return Counter(p for symbols in vocab for p in _pairs_of(symbols))


def _once_per_word(vocab):
    counts = Counter()
    for symbols, n in vocab.items():
        for p in set(_pairs_of(symbols)):
            counts[p] += n
    return counts


def _stream(vocab, weighted):
    """Every word (``count`` times when weighted) in one long sequence: pairs cross word boundaries."""
    stream = [s for symbols, n in vocab.items() for _ in range(n if weighted else 1) for s in symbols]
    return Counter(_pairs_of(stream))


def _skip(vocab, first):
    counts = Counter()
    for symbols, n in vocab.items():
        for p in (_pairs_of(symbols)[1:] if first else _pairs_of(symbols)[:-1]):
            counts[p] += n
    return counts


def _all_pairs(vocab):
    counts = Counter()
    for symbols, n in vocab.items():
        for p in combinations(symbols, 2):
            counts[p] += n
    return counts


def _reversed(vocab):
    return Counter({(b, a): n for (a, b), n in _reference_count_pairs(vocab).items()})


def _squared(vocab):
    return Counter({p: n * n for p, n in _reference_count_pairs(vocab).items()})


_BOUNDARY = ("you counted pairs across word boundaries: a pair whose second symbol starts with '▁' joins the end "
             "of one word to the start of the next, and BPE never merges across words")
_BOUNDARY_HINT = "loop over the words, and over the adjacent pairs inside each word: zip(symbols, symbols[1:])"

_PAIR_MISTAKES = [
    Mistake("you ignored the word counts: each word added 1 per pair, but a word seen 6 times must add 6",
            _unweighted, "add the word's count: counts[pair] += count"),
    Mistake("you counted each distinct pair once per word (a set?), but a pair that occurs twice in a word, "
            "like ('a', 'n') in ▁b a n a n a, counts twice",
            _once_per_word, "loop over zip(symbols, symbols[1:]) without making it a set"),
    Mistake(_BOUNDARY, lambda v: _stream(v, True), _BOUNDARY_HINT),
    Mistake(_BOUNDARY, lambda v: _stream(v, False), _BOUNDARY_HINT),
    Mistake("you missed the last pair of every word (an off-by-one in the loop's range)",
            lambda v: _skip(v, first=False), "a word of n symbols has n - 1 pairs: range(len(symbols) - 1)"),
    Mistake("you missed the first pair of every word (an off-by-one in the loop's range)",
            lambda v: _skip(v, first=True), "start at i = 0: pairs (symbols[i], symbols[i + 1])"),
    Mistake("you counted every pair of symbols in a word, also those that are not next to each other; BPE "
            "merges only ADJACENT symbols",
            _all_pairs, "pair each symbol with the next one only: zip(symbols, symbols[1:])"),
    Mistake("your pairs are reversed: (right, left) instead of (left, right)",
            _reversed, "the pair of symbols[i] and symbols[i + 1] is (symbols[i], symbols[i + 1])"),
    Mistake("you multiplied by the word count twice (count * count): a word seen 6 times adds 36",
            _squared, "add the count once per occurrence: counts[pair] += count"),
]


def _toy_vocab() -> dict:
    w = WORD_START
    return {(w + "m", "a", "n"): 6, (w + "m", "e", "n"): 4, (w + "w", "o", "m", "a", "n"): 3,
            (w + "w", "o", "m", "e", "n"): 2, (w + "m", "a", "n", "y"): 1}


def _pair_cases() -> list[Case]:
    w = WORD_START
    return [
        Case((_toy_vocab(),), "the toy corpus: ▁m a n ×6, ▁m e n ×4, ▁w o m a n ×3, ▁w o m e n ×2, ▁m a n y ×1"),
        Case(({(w + "b", "a", "n", "a", "n", "a"): 2, (w + "a", "a", "a", "a"): 1, (w + "n", "a"): 5},),
             "words with repeated pairs: ▁b a n a n a ×2, ▁a a a a ×1, ▁n a ×5"),
        Case(({(w + "m", "an"): 6, (w + "wom", "an"): 3, (w + "wom", "en"): 2, (w + "a",): 9},),
             "symbols after a few merges: ▁m an ×6, ▁wom an ×3, ▁wom en ×2, and ▁a ×9 (one symbol: no pair)"),
        Case(({},), "an empty vocabulary"),
    ]


def _as_plain(counts: Mapping) -> dict:
    return {p: n for p, n in counts.items() if n != 0}


def _first_difference(answer: dict, expected: dict) -> str:
    for pair in sorted(set(answer) | set(expected), key=repr):
        got, want = answer.get(pair, 0), expected.get(pair, 0)
        if got != want:
            if pair not in expected:
                return f"your answer has the pair {pair!r} (count {got}), which does not occur in any word"
            if pair not in answer:
                return f"your answer lacks the pair {pair!r}, expected count {want}"
            return f"the pair {pair!r} should have count {want}, got {got}"
    return "the counts differ"


def _pair_problem(answer) -> tuple[str, str] | None:
    """A problem with the answer's type or keys, whatever the values: (message, hint)."""
    if answer is None:
        return "your function returned None: did you forget the `return`?", ""
    if not isinstance(answer, Mapping):
        return (f"expected a Counter (or dict) from pair to count, got a {type(answer).__name__}",
                "counts = Counter(); ...; counts[a, b] += count; return counts")
    for key in answer:
        if isinstance(key, str):
            return (f"your keys are joined strings like {key!r}; use (left, right) tuples such as ('a', 'n'): "
                    "'▁m' + 'an' and '▁ma' + 'n' join to the same string but are different pairs",
                    "counts[a, b] += count makes the key the tuple (a, b)")
        if not (isinstance(key, tuple) and len(key) == 2):
            return f"every key must be a pair (left, right) of two symbols, got {key!r}", ""
    for key in answer:
        if isinstance(key[1], str) and key[1].startswith(WORD_START):
            return _BOUNDARY, _BOUNDARY_HINT
    return None


def check_count_pairs(fn) -> CheckResult:
    """Check a learner's ``count_pairs(vocab)``: ``{symbols: count}`` -> Counter of adjacent pairs."""
    exercise = "count_pairs"
    if not callable(fn):
        return CheckResult(exercise, ERROR, "expected a function",
                           "pass the function itself, without calling it: check_count_pairs(count_pairs)")
    for case in _pair_cases():
        vocab = case.args[0]
        given = copy.deepcopy(vocab)
        where = f" (on {case.description})"
        try:
            answer = fn(given)
        except NotImplementedError:
            return CheckResult(exercise, NOT_DONE,
                               "replace `raise NotImplementedError` with your code, then run this check again.")
        except Exception as exc:  # the learner's bug, reported rather than raised
            return CheckResult(exercise, ERROR, f"your function raised {type(exc).__name__}: {exc}{where}")
        if given != vocab:
            return CheckResult(exercise, WRONG, f"your function changed the vocabulary it was given{where}",
                               "only read vocab; put the counts in a new Counter")
        expected = _as_plain(_reference_count_pairs(vocab))
        problem = _pair_problem(answer)
        if problem is None and _as_plain(answer) == expected:
            continue
        for mistake in _PAIR_MISTAKES:
            wrong = _as_plain(mistake.make(vocab))
            if wrong != expected and isinstance(answer, Mapping) and _as_plain(answer) == wrong:
                return CheckResult(exercise, WRONG, mistake.message + where, mistake.hint)
        if problem is not None:
            return CheckResult(exercise, WRONG, problem[0] + where, problem[1])
        return CheckResult(exercise, WRONG, _first_difference(_as_plain(answer), expected) + where)
    return CheckResult(exercise, CORRECT, "matches the reference on every test vocabulary.")


# --- exercise 2: decoder_input ---------------------------------------------------------------------

def decoder_input(tgt: torch.Tensor, bos_id: int) -> torch.Tensor:
    """Teacher forcing's decoder input for one target: ``[BOS, y_0, ..., y_(T-2)]``.

    Args:
        tgt: (T,) int64 target ids, ending with EOS.
        bos_id: the id of the begin-of-sentence token.

    Returns:
        (T,) int64: BOS, then ``tgt`` without its last token.
    """
    return torch.cat([torch.tensor([bos_id], dtype=tgt.dtype), tgt[:-1]])


def _bos(tgt, bos_id):
    return torch.tensor([bos_id], dtype=tgt.dtype)


def _overwrite_first(tgt, bos_id):
    out = tgt.clone()
    out[0] = bos_id
    return out


_INPUT_MISTAKES = [
    Mistake("you forgot BOS: tgt[:-1] has T - 1 tokens, and the first position has nothing to read",
            lambda t, b: t[:-1], "put bos_id in front: torch.cat([torch.tensor([bos_id]), tgt[:-1]])"),
    Mistake("you did not drop the last token: BOS + tgt has T + 1 tokens, one more than tgt_out, so inputs and "
            "targets no longer line up (position t must read y_(t-1) and predict y_t)",
            lambda t, b: torch.cat([_bos(t, b), t]), "drop the last token: tgt[:-1]"),
    Mistake("you shifted the wrong way (left): position t reads y_(t+1), a token AFTER the one it must predict, "
            "and BOS went to the end",
            lambda t, b: torch.cat([t[1:], _bos(t, b)]), "BOS goes first, then tgt[:-1]"),
    Mistake("you rolled the target: the last token (EOS) wrapped around to the front instead of BOS",
            lambda t, b: torch.roll(t, 1), "put bos_id in front instead: torch.cat([bos, tgt[:-1]])"),
    Mistake("you replaced the first token with BOS instead of shifting (BOS + tgt[1:]): position t reads y_t "
            "itself, the very token it must predict, and y_0 is lost",
            _overwrite_first, "shift: BOS first, then tgt[:-1] (drop the LAST token, keep the first)"),
    Mistake("you returned the target unchanged: position t would read y_t, the answer it must predict",
            lambda t, b: t.clone(), "shift right: BOS first, then tgt[:-1]"),
    Mistake("you used the id 1 instead of the argument bos_id", lambda t, b: torch.cat([_bos(t, 1), t[:-1]]),
            "use bos_id, whatever its value"),
]


def _input_cases() -> list[Case]:
    return [
        Case((torch.tensor([57, 9, 311, 9, 2]), 1), "tgt = [57, 9, 311, 9, 2] (T=5), bos_id=1"),
        Case((torch.tensor([2]), 1), "tgt = [2] (T=1: only EOS), bos_id=1"),
        Case((torch.tensor([40, 41, 42, 3]), 7), "tgt = [40, 41, 42, 3] (T=4), bos_id=7"),
    ]


def check_decoder_input(fn) -> CheckResult:
    """Check a learner's ``decoder_input(tgt, bos_id)``: (T,) int64 -> (T,) int64."""
    return check_function(fn, exercise="decoder_input", reference=decoder_input, cases=_input_cases(),
                          mistakes=_INPUT_MISTAKES, shape_names="(T,)",
                          dtype_hint="token ids must be integers for the embedding lookup: build BOS with the "
                                     "target's dtype, torch.tensor([bos_id], dtype=tgt.dtype)")
