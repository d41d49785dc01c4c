"""Notebook 13's checks name the mistakes a learner makes: the next-token loss and BERT's masking."""
import pytest
import torch
import torch.nn.functional as F

from course_lib.checks.core import CORRECT, ERROR, NOT_DONE, WRONG
from course_lib.checks.families import check_mask_tokens, check_next_token_loss
from course_lib.families import IGNORE, mask_tokens
from course_lib.tokenizer import PAD_ID

pytestmark = pytest.mark.usefixtures("one_thread")


# --- exercise 1: the next-token loss, written as a learner would ------------------------------------

def loss_right(model, ids):
    logits = model(ids[:, :-1])
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1), ignore_index=PAD_ID)


def loss_right_via_transpose(model, ids):
    targets = ids[:, 1:].masked_fill(ids[:, 1:] == PAD_ID, -100)
    return F.cross_entropy(model(ids)[:, :-1].transpose(1, 2), targets)  # a causal model: the last input changes nothing


def loss_no_shift(model, ids):
    logits = model(ids)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids.reshape(-1), ignore_index=PAD_ID)


def loss_wrong_way(model, ids):
    logits = model(ids[:, 1:])
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, :-1].reshape(-1), ignore_index=PAD_ID)


def loss_predicts_padding(model, ids):
    logits = model(ids[:, :-1])
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))


def loss_mean_over_all(model, ids):
    logits, targets = model(ids[:, :-1]), ids[:, 1:]
    per_token = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
    return (per_token * (targets != PAD_ID)).mean()


def loss_detached(model, ids):
    return loss_right(model, ids).detach()


def loss_not_done(model, ids):
    raise NotImplementedError


@pytest.mark.parametrize("fn", [loss_right, loss_right_via_transpose])
def test_a_right_next_token_loss_passes(fn):
    assert check_next_token_loss(fn).status == CORRECT


@pytest.mark.parametrize("fn, words", [
    (loss_no_shift, "no shift"),
    (loss_wrong_way, "the wrong way"),
    (loss_predicts_padding, "predicts the padding"),
    (loss_mean_over_all, "counted in the mean"),
    (loss_detached, "no gradient"),
])
def test_next_token_loss_mistakes_are_named(fn, words):
    result = check_next_token_loss(fn)
    assert result.status == WRONG and words in result.message, result


def test_next_token_loss_not_done_and_errors():
    assert check_next_token_loss(loss_not_done).status == NOT_DONE
    assert check_next_token_loss(lambda model, ids: model(ids.float())).status == ERROR
    assert check_next_token_loss(lambda model, ids: float(loss_right(model, ids).detach())).status == WRONG


# --- exercise 2: masking, written as a learner would ---------------------------------------------------

def masking(ids, vocab, generator, *, rate=0.15, split=(0.8, 0.1), words_only=True, keep_bos_eos=True,
            labels_everywhere=False, use_generator=True, label_with_mask=False, random_from=None,
            corrupt_unchosen=False):
    g = generator if use_generator else None
    specials = torch.tensor(vocab.special_ids if keep_bos_eos else (PAD_ID,))
    words = ~torch.isin(ids, specials) if words_only else torch.ones_like(ids, dtype=torch.bool)
    chosen = (torch.rand(ids.shape, generator=g) < rate) & words
    u = torch.rand(ids.shape, generator=g)
    low, high = random_from or (vocab.first_word_id, vocab.tokenizer_size)
    random_ids = torch.randint(low, high, ids.shape, generator=g)
    inputs = torch.where(chosen & (u < split[0]), vocab.mask_id, ids)
    inputs = torch.where(chosen & (u >= split[0]) & (u < split[0] + split[1]), random_ids, inputs)
    if corrupt_unchosen:
        inputs = torch.where(~chosen & (u < 0.05), vocab.mask_id, inputs)
    if labels_everywhere:
        return inputs, ids.clone()
    return inputs, torch.where(chosen, inputs if label_with_mask else ids, IGNORE)


def test_course_lib_and_a_bernoulli_draw_both_pass():
    assert check_mask_tokens(mask_tokens).status == CORRECT
    assert check_mask_tokens(masking).status == CORRECT


@pytest.mark.parametrize("options, words", [
    (dict(use_generator=False), "global random state"),
    (dict(words_only=False), "padding positions"),
    (dict(keep_bos_eos=False), "BOS or EOS"),
    (dict(labels_everywhere=True), "unmasked positions"),
    (dict(rate=0.3), "BERT chooses 15 %"),
    (dict(split=(1.0, 0.0)), "80/10/10"),
    (dict(split=(0.5, 0.25)), "80 / 10 / 10"),
    (dict(label_with_mask=True), "ORIGINAL token"),
    (dict(random_from=(0, 41)), "not word ids"),
    (dict(corrupt_unchosen=True), "not chosen changed"),
])
def test_masking_mistakes_are_named(options, words):
    result = check_mask_tokens(lambda ids, vocab, g: masking(ids, vocab, g, **options))
    assert result.status == WRONG and words in result.message, result


def test_masking_not_done_errors_and_wrong_returns():
    def not_done(ids, vocab, generator):
        raise NotImplementedError

    assert check_mask_tokens(not_done).status == NOT_DONE
    assert check_mask_tokens(lambda ids, vocab, g: ids.no_such_method()).status == ERROR
    assert "pair (inputs, labels)" in check_mask_tokens(lambda ids, vocab, g: ids).message
    assert "dtype" in check_mask_tokens(lambda ids, vocab, g: (ids.float(), ids)).message
    assert "no label" in check_mask_tokens(lambda ids, vocab, g: (ids, torch.full_like(ids, IGNORE))).message
    assert check_mask_tokens("mask_tokens").status == ERROR
