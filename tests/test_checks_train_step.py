"""Notebook 11's training-step exercise: the check names each known slip of a learner's step."""

import pytest
import torch
import torch.nn.functional as F

from course_lib.checks.core import CORRECT, ERROR, NOT_DONE, WRONG
from course_lib.checks.training import check_train_step
from course_lib.tokenizer import PAD_ID
from course_lib.train import train_step

pytestmark = pytest.mark.usefixtures("one_thread")


def step(*, zero_grad=True, backward=True, clip="before", sched="after", ignore_pad=True, smooth=True,
         returns="pair", accumulate_loss=False):
    """A learner's train_step written out; each keyword switches on one slip."""
    def train_step_(model, batch, optimizer, scheduler, smoothing, clip_norm, autocast):
        with autocast:
            logits = model(batch.src, batch.tgt_in)  # (B, T, n_vocab)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch.tgt_out.reshape(-1),
                               ignore_index=PAD_ID if ignore_pad else -100,
                               label_smoothing=smoothing if smooth else 0.0)
        if zero_grad:
            optimizer.zero_grad()
        if backward:
            loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip_norm) if clip == "before" else torch.tensor(0.0)
        if sched == "before":
            scheduler.step()
        optimizer.step()
        if clip == "after":
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip_norm)
        if sched == "after":
            scheduler.step()
        if returns == "loss only":
            return loss.item()
        return loss.item(), norm.item()
    return train_step_


def test_course_lib_and_a_written_out_step_pass():
    assert check_train_step(train_step).status == CORRECT
    assert check_train_step(step()).status == CORRECT


@pytest.mark.parametrize("slip, fragment", [
    (dict(zero_grad=False), "you never cleared the gradients"),
    (dict(clip="after"), "every update used the unclipped gradient"),
    (dict(sched="never"), "the learning rate never changed"),
    (dict(sched="before"), "you stepped the scheduler before the optimiser"),
    (dict(ignore_pad=False), "your loss counts the padding too"),
    (dict(smooth=False), "your loss has no label smoothing"),
    (dict(backward=False), "the weights never changed"),
    (dict(returns="loss only"), "expected a pair (loss, norm)"),
])
def test_each_slip_is_named(slip, fragment):
    result = check_train_step(step(**slip))
    assert result.status == WRONG, result
    assert fragment in result.message, result


def test_no_clipping_at_all_is_named_like_clipping_too_late():
    def unclipped(model, batch, optimizer, scheduler, smoothing, clip_norm, autocast):
        loss, norm = train_step(model, batch, optimizer, scheduler, smoothing, clip_norm=float("inf"))
        return loss, norm

    result = check_train_step(unclipped)
    assert result.status == WRONG and "unclipped gradient" in result.message and "between" in result.hint


def test_an_unknown_difference_says_which_update_and_what():
    def half_rate(model, batch, optimizer, scheduler, smoothing, clip_norm, autocast):
        for group in optimizer.param_groups:
            group["lr"] *= 0.5
        return train_step(model, batch, optimizer, scheduler, smoothing, clip_norm, autocast)

    result = check_train_step(half_rate)
    assert result.status == WRONG and result.message.startswith("after update 1, the weights differ from")


def test_stubs_errors_and_non_functions():
    def stub(*args):
        raise NotImplementedError("Your turn")

    def broken(model, batch, optimizer, scheduler, smoothing, clip_norm, autocast):
        return model(batch.src)  # forgot the decoder input

    assert check_train_step(stub).status == NOT_DONE
    result = check_train_step(broken)
    assert result.status == ERROR and "your step raised TypeError" in result.message
    assert check_train_step(42).status == ERROR
