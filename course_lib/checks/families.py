"""Notebook 13's exercises: the loss a GPT-style model learns from, and BERT's masking of the input."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from course_lib.checks.core import (CORRECT, ERROR, NOT_DONE, WRONG, Case, CheckResult, Mistake, check_function,
                                    describe_value)
from course_lib.families import IGNORE, LanguageModel, Vocabulary, language_model_loss, next_token_targets
from course_lib.tokenizer import BOS_ID, EOS_ID, PAD_ID

# --- exercise 1: the next-token loss ---------------------------------------------------------------


def next_token_loss(model: LanguageModel, ids: torch.Tensor) -> torch.Tensor:
    """Reference: the mean cross-entropy of predicting token i + 1 from tokens 0..i, padding never predicted.

    Args:
        model: a causal :class:`~course_lib.families.LanguageModel`. ids: (B, T) ``[BOS, ..., EOS, PAD...]``.

    Returns:
        A scalar tensor (with its graph, so that ``loss.backward()`` works).
    """
    inputs, targets = next_token_targets(ids, model.pad_id)
    return language_model_loss(model(inputs), targets)


def _ce(logits, targets, ignore=True):
    flat = logits.reshape(-1, logits.shape[-1])
    return F.cross_entropy(flat, targets.reshape(-1), ignore_index=PAD_ID if ignore else -1000)


def _sum_over_all(logits, targets):
    per_token = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=PAD_ID,
                                reduction="sum")
    return per_token / targets.numel()


_LOSS_MISTAKES = [
    Mistake("no shift: position i was asked for token i, which it can already see in its input; the model learns "
            "to copy, not to predict", lambda m, ids: _ce(m(ids), ids),
            "inputs = ids[:, :-1] and targets = ids[:, 1:]: position i predicts token i + 1"),
    Mistake("you shifted the wrong way: the inputs start at the second token and the targets are the tokens "
            "BEFORE them, so the model is asked for the past", lambda m, ids: _ce(m(ids[:, 1:]), ids[:, :-1]),
            "inputs = ids[:, :-1] (BOS first), targets = ids[:, 1:] (EOS last)"),
    Mistake("your loss also predicts the padding: after EOS every position is trained to output PAD, which is "
            "not text", lambda m, ids: _ce(m(ids[:, :-1]), ids[:, 1:], ignore=False),
            "skip the padding targets: F.cross_entropy(..., ignore_index=PAD_ID), or replace them with -100"),
    Mistake("you shifted the wrong way AND predict the padding", lambda m, ids: _ce(m(ids[:, 1:]), ids[:, :-1], False),
            "inputs = ids[:, :-1], targets = ids[:, 1:], padding ignored"),
    Mistake("no shift, and the padding is predicted too", lambda m, ids: _ce(m(ids), ids, ignore=False),
            "inputs = ids[:, :-1], targets = ids[:, 1:], padding ignored"),
    Mistake("the padding is left out of the sum but counted in the mean: you divided by every position, "
            "padding included, so shorter sentences weigh less", lambda m, ids: _sum_over_all(m(ids[:, :-1]), ids[:, 1:]),
            "average over the real targets only (F.cross_entropy with ignore_index does that)"),
]


def _loss_model(seed: int) -> LanguageModel:
    torch.manual_seed(seed)
    return LanguageModel(Vocabulary(20).size, d_model=16, h=2, num_layers=2, d_ff=32, dropout=0.0,
                         max_len=16).eval()


def _loss_cases() -> list[Case]:
    return [
        Case((_loss_model(1301), torch.tensor([[BOS_ID, 5, 9, 7, EOS_ID, PAD_ID, PAD_ID],
                                               [BOS_ID, 11, 4, 6, 8, 12, EOS_ID]])),
             "a tiny model, ids (B=2, T=7), the first row padded after its EOS"),
        Case((_loss_model(1302), torch.tensor([[BOS_ID, 6, EOS_ID, PAD_ID], [BOS_ID, 4, 5, EOS_ID],
                                               [BOS_ID, EOS_ID, PAD_ID, PAD_ID]])),
             "ids (B=3, T=4) with more padding"),
    ]


def check_next_token_loss(fn) -> CheckResult:
    """Check a learner's ``next_token_loss(model, ids)``: (B, T) ids -> the scalar next-token loss."""
    exercise = "next_token_loss"
    result = check_function(fn, exercise=exercise, reference=next_token_loss, cases=_loss_cases(),
                            mistakes=_LOSS_MISTAKES, shape_names="() (a scalar)", rtol=1e-4, atol=1e-5)
    if result.status != CORRECT:
        return result
    case = _loss_cases()[0]
    if not getattr(fn(*case.args), "requires_grad", False):
        return CheckResult(exercise, WRONG, "the value is right, but it has no gradient: the loss was detached "
                                            "(.item(), .detach() or torch.no_grad()), so training could not use it",
                           "return the loss tensor itself")
    return result


# --- exercise 2: masking tokens for a masked language model ---------------------------------------------

MASK_VOCAB = Vocabulary(40)  # word ids 4..39, [MASK] = 40, [SEP] = 41


def _mask_batch() -> torch.Tensor:
    """(1200, 22) rows ``[BOS, words..., EOS, PAD...]`` of 6 to 20 words: enough tokens for the rates to show."""
    g = torch.Generator().manual_seed(1303)
    rows = torch.full((1200, 22), PAD_ID, dtype=torch.long)
    for b in range(rows.shape[0]):
        n = int(torch.randint(6, 21, (1,), generator=g))
        rows[b, 0], rows[b, n + 1] = BOS_ID, EOS_ID
        rows[b, 1:n + 1] = torch.randint(MASK_VOCAB.first_word_id, MASK_VOCAB.tokenizer_size, (n,), generator=g)
    return rows


def _masking(ids, vocab, generator, *, rate=0.15, split=(0.8, 0.1), words_only=True, keep_bos_eos=True,
             labels_everywhere=False, use_generator=True, label_with_mask=False):
    """BERT's masking as a learner writes it (a draw per token), with switches for the known slips."""
    g = generator if use_generator else None
    specials = torch.tensor(vocab.special_ids if keep_bos_eos else (PAD_ID,))
    words = ~torch.isin(ids, specials) if words_only else torch.ones_like(ids, dtype=torch.bool)
    chosen = (torch.rand(ids.shape, generator=g) < rate) & words
    u = torch.rand(ids.shape, generator=g)
    random_words = torch.randint(vocab.first_word_id, vocab.tokenizer_size, ids.shape, generator=g)
    inputs = torch.where(chosen & (u < split[0]), vocab.mask_id, ids)
    inputs = torch.where(chosen & (u >= split[0]) & (u < split[0] + split[1]), random_words, inputs)
    if labels_everywhere:
        return inputs, ids.clone()
    return inputs, torch.where(chosen, inputs if label_with_mask else ids, IGNORE)


def _slip(message, hint, **switches):
    return Mistake(message, lambda ids, vocab, g: _masking(ids, vocab, g, **switches), hint)


_MASK_MISTAKES = [
    _slip("the same generator seed gave a different draw: your function draws from torch's global random state, "
          "not from the generator it was given", "pass generator=generator to every torch.rand / torch.randint you "
          "call", use_generator=False),
    _slip("the labels keep every token: the loss would be taken at unmasked positions too, where the answer is in "
          "plain sight", "labels = ids where chosen, IGNORE (-100) everywhere else", labels_everywhere=True),
    _slip("you chose padding positions: PAD is not text, and a model asked to recover it learns nothing useful",
          "choose among positions where ids is not a special id", words_only=False),
    _slip("you chose BOS or EOS: special tokens are never masked, they are always where they are",
          "choose among positions whose id is not in vocab.special_ids", keep_bos_eos=False),
    _slip("the labels hold [MASK]: a label is the ORIGINAL token, the one the model must recover",
          "labels = torch.where(chosen, ids, IGNORE)", label_with_mask=True),
    _slip("every chosen token became [MASK]: without the 80/10/10 split the model only learns about positions that "
          "show [MASK], which never occur when it is used",
          "of the chosen: 80 % [MASK], 10 % a random word, 10 % unchanged", split=(1.0, 0.0)),
]
_SLIPS = {key: mistake for key, mistake in zip(("global", "everywhere", "padding", "bos_eos", "label_mask",
                                                "all_mask"), _MASK_MISTAKES)}


class _Wrong(Exception):
    def __init__(self, message, hint=""):
        super().__init__(message)
        self.message, self.hint = message, hint


def _slipped(key):
    return _Wrong(_SLIPS[key].message, _SLIPS[key].hint)


def _run_masking(fn, ids, seed, global_seed):
    torch.manual_seed(global_seed)  # an answer that draws from the global generator changes with this
    out = fn(ids.clone(), MASK_VOCAB, torch.Generator().manual_seed(seed))
    if not (isinstance(out, (tuple, list)) and len(out) == 2 and all(isinstance(t, torch.Tensor) for t in out)):
        raise _Wrong(f"your function returned {describe_value(out)}; expected a pair (inputs, labels) of tensors",
                     "return inputs, labels")
    for name, t in zip(("inputs", "labels"), out):
        if t.shape != ids.shape:
            raise _Wrong(f"{name} has shape {tuple(t.shape)}; expected {tuple(ids.shape)}, the shape of ids (B, T)")
        if t.is_floating_point() or t.dtype == torch.bool:
            raise _Wrong(f"{name} has dtype {t.dtype}; token ids must be integers (long)")
    return out


def _judge_masking(fn) -> None:
    """Raise :class:`_Wrong` naming the first mistake found; return quietly when the masking is right."""
    ids = _mask_batch()
    inputs, labels = _run_masking(fn, ids, seed=7, global_seed=0)
    again = _run_masking(fn, ids, seed=7, global_seed=1)
    if not (torch.equal(inputs, again[0]) and torch.equal(labels, again[1])):
        raise _slipped("global")
    special = ids == PAD_ID
    bos_eos = (ids == BOS_ID) | (ids == EOS_ID)
    chosen = labels != IGNORE
    words = ~(special | bos_eos)
    if not bool(chosen.any()):
        raise _Wrong("no label is set: every position holds IGNORE (-100), so the loss has nothing to learn from")
    if float((chosen & words).sum()) > 0.9 * float(words.sum()):
        raise _slipped("everywhere")
    other = _run_masking(fn, ids, seed=8, global_seed=0)
    if torch.equal(labels, other[1]) and torch.equal(inputs, other[0]):
        raise _Wrong("another generator seed gave the same draw: the choice is not random",
                     "draw the choice with torch.rand(ids.shape, generator=generator)")
    if bool((chosen & special).any()):
        raise _slipped("padding")
    if bool((chosen & bos_eos).any()):
        raise _slipped("bos_eos")
    share = float(chosen.sum()) / float(words.sum())
    if not 0.12 <= share <= 0.18:
        raise _Wrong(f"you chose {100 * share:.1f} % of the word tokens; BERT chooses 15 %",
                     "chosen = (torch.rand(ids.shape, generator=generator) < 0.15) & words")
    if not torch.equal(labels[chosen], ids[chosen]):
        if bool((labels[chosen] == MASK_VOCAB.mask_id).any()):
            raise _slipped("label_mask")
        raise _Wrong("at some chosen positions the label is not the original token",
                     "labels = torch.where(chosen, ids, IGNORE)")
    if not torch.equal(inputs[~chosen], ids[~chosen]):
        raise _Wrong("tokens that were not chosen changed in the inputs: only chosen positions may be corrupted")
    masked = float((inputs[chosen] == MASK_VOCAB.mask_id).float().mean())
    kept = float((inputs[chosen] == ids[chosen]).float().mean())
    replaced = inputs[chosen & (inputs != MASK_VOCAB.mask_id) & (inputs != ids)]
    if masked > 0.95:
        raise _slipped("all_mask")
    if bool(((replaced < MASK_VOCAB.first_word_id) | (replaced >= MASK_VOCAB.tokenizer_size)).any()):
        raise _Wrong("some replacements are not word ids: a random replacement is drawn from "
                     "vocab.first_word_id .. vocab.tokenizer_size - 1, never a special id or [MASK]",
                     "torch.randint(vocab.first_word_id, vocab.tokenizer_size, ids.shape, generator=generator)")
    expected_kept = 0.1 + 0.1 / (MASK_VOCAB.tokenizer_size - MASK_VOCAB.first_word_id)
    if abs(masked - 0.8) > 0.04 or abs(kept - expected_kept) > 0.04:
        raise _Wrong(f"of the chosen tokens {100 * masked:.0f} % became [MASK], {100 * kept:.0f} % stayed and "
                     f"{100 * (1 - masked - kept):.0f} % became another word; BERT's split is 80 / 10 / 10",
                     "draw one more u = torch.rand(...); u < 0.8: [MASK]; 0.8 <= u < 0.9: a random word; else keep")


def check_mask_tokens(fn) -> CheckResult:
    """Check a learner's ``mask_tokens(ids, vocab, generator) -> (inputs, labels)`` by what its draws must satisfy.

    Random draws cannot be compared with a reference token by token (an answer may draw in another
    order), so the check runs it on 1,200 sentences and tests every rule: the generator alone decides
    the draw; only word tokens are chosen, about 15 % of them; labels hold the originals there and
    IGNORE elsewhere; the chosen become [MASK], a random word or themselves, 80 / 10 / 10.
    """
    exercise = "mask_tokens"
    if not callable(fn):
        return CheckResult(exercise, ERROR, f"expected a function, got {describe_value(fn)}",
                           "pass the function itself, without calling it: check_mask_tokens(mask_tokens)")
    try:
        _judge_masking(fn)
    except NotImplementedError:
        return CheckResult(exercise, NOT_DONE, "replace `raise NotImplementedError` with your code, then run this "
                                               "check again.")
    except _Wrong as wrong:
        return CheckResult(exercise, WRONG, wrong.message, wrong.hint)
    except Exception as exc:
        return CheckResult(exercise, ERROR, f"your function raised {type(exc).__name__}: {exc}")
    return CheckResult(exercise, CORRECT, "on 1,200 sentences: reproducible from the generator, 15 % of the words "
                                          "chosen and nothing else, labels only there, and an 80/10/10 split.")
