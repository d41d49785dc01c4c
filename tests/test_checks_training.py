"""Notebook 11's checks: the right answer passes, and each known mistake is named."""
import math

import pytest
import torch
import torch.nn.functional as F

from course_lib.checks.training import (_LOSS_MISTAKES, _SCHEDULE_MISTAKES, check_smoothed_loss,
                                        check_warmup_cosine, smoothed_loss)
from course_lib.train import learning_rate


def _loss_by_hand(logits, target, eps):
    log_p = torch.log_softmax(logits, dim=-1)
    nll = -log_p.gather(-1, target[..., None])[..., 0]
    per_token = (1 - eps) * nll + eps * -log_p.mean(-1)
    return per_token[target != 0].mean()


def _stub(*_):
    raise NotImplementedError


def test_the_reference_loss_is_the_formula():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 5, generator=gen)
    target = torch.tensor([[1, 2, 0], [4, 0, 0]])
    assert torch.allclose(smoothed_loss(logits, target, 0.1), _loss_by_hand(logits, target, 0.1))
    flat = F.cross_entropy(logits.reshape(-1, 5), target.reshape(-1), ignore_index=0, label_smoothing=0.3)
    assert torch.allclose(smoothed_loss(logits, target, 0.3), flat)


def test_a_correct_loss_passes_and_a_stub_is_not_done():
    assert check_smoothed_loss(_loss_by_hand).passed
    assert check_smoothed_loss(_stub).status == "not done"


@pytest.mark.parametrize("mistake", _LOSS_MISTAKES, ids=lambda m: m.message[:40])
def test_each_loss_mistake_is_named(mistake):
    result = check_smoothed_loss(mistake.make)
    assert result.status == "wrong" and result.message.startswith(mistake.message), result


def test_an_unknown_wrong_loss_is_still_wrong():
    result = check_smoothed_loss(lambda lg, t, e: _loss_by_hand(lg, t, e) * 1.01)
    assert result.status == "wrong"


def _schedule_by_hand(step, total, peak, warmup, final):
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / (total - warmup))
    return peak * (final + (1 - final) * 0.5 * (1 + math.cos(math.pi * progress)))


def test_a_correct_schedule_passes_and_a_stub_is_not_done():
    assert check_warmup_cosine(_schedule_by_hand).passed
    assert check_warmup_cosine(learning_rate).passed
    assert check_warmup_cosine(_stub).status == "not done"


@pytest.mark.parametrize("mistake", _SCHEDULE_MISTAKES, ids=lambda m: m.message[:40])
def test_each_schedule_mistake_is_named(mistake):
    # Each Mistake builds a whole curve from (total, peak, warmup, final); turn it back into a
    # per-step function, as a learner would have written it.
    def learner(step, total, peak, warmup, final):
        return float(mistake.make(total, peak, warmup, final)[step])

    result = check_warmup_cosine(learner)
    assert result.status == "wrong" and result.message.startswith(mistake.message), result


def test_a_schedule_that_raises_is_reported_as_an_error():
    result = check_warmup_cosine(lambda step, total, peak, warmup, final: 1 / 0)
    assert result.status == "error" and "ZeroDivisionError" in result.message
