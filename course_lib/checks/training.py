"""Notebook 11's exercises: the label-smoothed loss, the warm-up + cosine schedule, and one training step."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from course_lib.checks.core import (ERROR, NOT_DONE, WRONG, CORRECT, Case, CheckResult, Mistake, check_function,
                                   describe_value, same_value, seeded_module)
from course_lib.train import label_smoothed_loss, learning_rate

PAD = 0


# --- exercise 1: the label-smoothed loss ---------------------------------------------------------

def smoothed_loss(logits: torch.Tensor, target: torch.Tensor, smoothing: float) -> torch.Tensor:
    """Reference: mean over non-PAD targets of (1 - eps) * NLL + eps * mean over the vocabulary of -log p.

    Args:
        logits: (B, T, n_vocab). target: (B, T) ids, PAD = 0 ignored. smoothing: eps in [0, 1).

    Returns:
        A scalar tensor.
    """
    return label_smoothed_loss(logits, target, smoothing, pad_id=PAD)[0]


def _per_token(logits, target, smoothing, other_classes=False, swap=False, dim=-1):
    logp = torch.log_softmax(logits.float(), dim=dim)  # (B, T, n_vocab)
    nll = -logp.gather(-1, target[..., None])[..., 0]  # (B, T)
    n_vocab = logits.shape[-1]
    if other_classes:  # eps spread over the n_vocab - 1 wrong tokens only
        uniform = (-logp.sum(-1) - nll) / (n_vocab - 1)
    else:
        uniform = -logp.mean(-1)
    if swap:
        return smoothing * nll + (1 - smoothing) * uniform
    return (1 - smoothing) * nll + smoothing * uniform


def _mean_real(values, target):
    real = target != PAD
    return values[real].mean()


def _loss_cases() -> list[Case]:
    gen = torch.Generator().manual_seed(1101)
    logits = 2 * torch.randn(2, 4, 6, generator=gen)
    target = torch.tensor([[5, 3, 2, 0], [4, 1, 0, 0]])  # three padding positions
    square = 2 * torch.randn(3, 5, 5, generator=gen)  # T == n_vocab: a wrong axis keeps the shapes
    square_target = torch.tensor([[1, 2, 3, 4, 0], [4, 4, 1, 0, 0], [2, 3, 1, 1, 2]])
    return [Case((logits, target, 0.1), "logits (B=2, T=4, n_vocab=6), 3 padding targets, smoothing 0.1"),
            Case((square, square_target, 0.2), "logits (B=3, T=5, n_vocab=5), 3 padding targets, smoothing 0.2"),
            Case((logits, target, 0.0), "smoothing 0.0 (plain cross-entropy)")]


_LOSS_MISTAKES = [
    Mistake("you averaged over every position, padding included: PAD targets (id 0) must not count",
            lambda lg, t, e: _per_token(lg, t, e).mean(),
            "average only where target != 0, e.g. loss[target != 0].mean()"),
    Mistake("you summed the loss over the tokens instead of averaging it",
            lambda lg, t, e: _per_token(lg, t, e)[t != PAD].sum(),
            "divide by the number of real (non-padding) target tokens"),
    Mistake("you spread eps over the n_vocab - 1 wrong tokens only; PyTorch (and this course) spread it over all n_vocab "
            "tokens, the right one included",
            lambda lg, t, e: _mean_real(_per_token(lg, t, e, other_classes=True), t),
            "the smoothing term is eps * mean over all n_vocab of -log p"),
    Mistake("you swapped the weights: eps goes on the uniform part and 1 - eps on the true token",
            lambda lg, t, e: _mean_real(_per_token(lg, t, e, swap=True), t),
            "(1 - eps) * NLL + eps * uniform term"),
    Mistake("no smoothing: this is plain cross-entropy, the same for every eps",
            lambda lg, t, e: F.cross_entropy(lg.reshape(-1, lg.shape[-1]), t.reshape(-1), ignore_index=PAD),
            "add eps * (mean over the vocabulary of -log p) and weigh the NLL by 1 - eps"),
    Mistake("your log-softmax normalised over the positions (dim 1) instead of the vocabulary (dim -1)",
            lambda lg, t, e: _mean_real(_per_token(lg, t, e, dim=1), t),
            "torch.log_softmax(logits, dim=-1): each position's scores over the n_vocab tokens"),
    Mistake("you used probabilities where log-probabilities belong (p instead of log p)",
            lambda lg, t, e: _mean_real(
                (1 - e) * -torch.softmax(lg, -1).gather(-1, t[..., None])[..., 0] + e * -torch.softmax(lg, -1).mean(-1), t),
            "take torch.log_softmax(logits, dim=-1), then the negative log-probabilities"),
]


def check_smoothed_loss(fn) -> CheckResult:
    """Check a learner's ``smoothed_loss(logits (B, T, n_vocab), target (B, T), smoothing) -> scalar``."""
    return check_function(fn, exercise="smoothed_loss", reference=smoothed_loss, cases=_loss_cases(),
                          mistakes=_LOSS_MISTAKES, shape_names="()", rtol=1e-4, atol=1e-5)


# --- exercise 2: warm-up then cosine decay -------------------------------------------------------

def _curve(schedule, total, peak, warmup, final):
    """The schedule at every step from 0 to total + 4, as a tensor (float64)."""
    return torch.tensor([float(schedule(step, total, peak, warmup, final)) for step in range(total + 5)],
                        dtype=torch.float64)


def _reference_curve(total, peak, warmup, final):
    return _curve(learning_rate, total, peak, warmup, final)


def _cos(progress):
    return 0.5 * (1 + math.cos(math.pi * progress))


_SCHEDULE_MISTAKES = [
    Mistake("your warm-up starts at 0: with step counted from 0, the first update would not move the "
            "weights at all; the rate for step s is peak * (s + 1) / warmup_steps",
            lambda n, p, w, f: _curve(lambda s, *_: p * s / w if s < w else learning_rate(s, n, p, w, f), n, p, w, f),
            "use (step + 1) / warmup_steps during warm-up, so step warmup_steps - 1 reaches the peak"),
    Mistake("your schedule decays to 0 instead of to final_fraction * peak",
            lambda n, p, w, f: _curve(lambda s, *_: learning_rate(s, n, p, w, 0.0), n, p, w, f),
            "peak * (final_fraction + (1 - final_fraction) * 0.5 * (1 + cos(pi * progress)))"),
    Mistake("your decay is linear, not a cosine",
            lambda n, p, w, f: _curve(lambda s, *_: learning_rate(s, n, p, w, f) if s < w else
                                      p * (f + (1 - f) * (1 - min(1.0, (s - w) / (n - w)))), n, p, w, f),
            "after warm-up use 0.5 * (1 + cos(pi * progress)), progress from 0 to 1"),
    Mistake("there is no warm-up: the rate starts at the peak",
            lambda n, p, w, f: _curve(lambda s, *_: learning_rate(s, n, p, 0, f), n, p, w, f),
            "for step < warmup_steps return peak * (step + 1) / warmup_steps"),
    Mistake("your cosine's progress counts from step 0, not from the end of warm-up, so the rate is already "
            "below the peak when warm-up ends",
            lambda n, p, w, f: _curve(lambda s, *_: learning_rate(s, n, p, w, f) if s < w else
                                      p * (f + (1 - f) * _cos(min(1.0, s / n))), n, p, w, f),
            "progress = (step - warmup_steps) / (total_steps - warmup_steps)"),
    Mistake("after total_steps your rate rises again: the cosine is periodic, so clamp progress at 1",
            lambda n, p, w, f: _curve(lambda s, *_: learning_rate(s, n, p, w, f) if s < w else
                                      p * (f + (1 - f) * _cos((s - w) / (n - w))), n, p, w, f),
            "progress = min(1.0, (step - warmup_steps) / (total_steps - warmup_steps))"),
]


def check_warmup_cosine(fn) -> CheckResult:
    """Check a learner's ``warmup_cosine(step, total_steps, peak, warmup_steps, final_fraction) -> float``.

    The check evaluates it at every step from 0 to total_steps + 4 and compares the whole curve.
    """
    def whole_curve(total, peak, warmup, final):
        return _curve(fn, total, peak, warmup, final)

    cases = [Case((40, 1e-3, 8, 0.05), "total_steps 40, peak 1e-3, warm-up 8 steps, final_fraction 0.05"),
             Case((25, 2.0, 5, 0.1), "total_steps 25, peak 2.0, warm-up 5 steps, final_fraction 0.1")]
    return check_function(whole_curve, exercise="warmup_cosine", reference=_reference_curve, cases=cases,
                          mistakes=_SCHEDULE_MISTAKES, shape_names="(steps,)", rtol=1e-6, atol=1e-12)


# --- exercise 3: one training step ---------------------------------------------------------------
# The check trains two copies of a tiny translator, the learner's step and course_lib's, on the same
# padded batches, and compares after every update: the returned loss and gradient norm, every weight,
# and the learning rate. It uses plain SGD, whose update is proportional to the gradient, so that
# clipping, an accumulated gradient or a wrong rate shows in the weights at once (Adam would divide
# most of a uniform rescaling back out).

STEP_SETTINGS = {"smoothing": 0.1, "clip_norm": 0.5}
_STEP_LR, _STEP_UPDATES = 0.5, 3


def _step_batches() -> list:
    from course_lib.batching import Example, collate

    gen = torch.Generator().manual_seed(1103)
    batches = []
    for lengths in ((5, 3, 4), (2, 6, 3), (4, 4, 1)):  # different lengths: every batch has padding
        examples = [Example(tuple((torch.randint(4, 12, (n,), generator=gen)).tolist()) + (2,),
                            tuple((torch.randint(4, 12, (n + 1,), generator=gen)).tolist()) + (2,))
                    for n in lengths]
        batches.append(collate(examples))
    return batches


def _step_setup():
    """A fresh tiny translator, its SGD optimiser and a warm-up schedule (the same every call)."""
    from course_lib.transformer import Seq2SeqTransformer

    model = seeded_module(lambda: Seq2SeqTransformer(12, 12, d_model=16, h=2, num_encoder_layers=1,
                                                     num_decoder_layers=1, d_ff=32, dropout=0.0,
                                                     share_embeddings=True, pad_id=PAD), seed=1102)
    optimizer = torch.optim.SGD(model.parameters(), lr=_STEP_LR)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: learning_rate(step, 10, 1.0, 3, 0.05))
    return model, optimizer, scheduler


def _trajectory(step_fn) -> list[tuple]:
    """(loss, norm, weights, learning rate) after each update of a fresh setup trained with ``step_fn``."""
    import contextlib
    import warnings

    model, optimizer, scheduler = _step_setup()
    model.train()
    states = []
    with warnings.catch_warnings():  # e.g. "lr_scheduler.step() before optimizer.step()": the check names it
        warnings.simplefilter("ignore")
        for batch in _step_batches():
            result = step_fn(model, batch, optimizer, scheduler, STEP_SETTINGS["smoothing"],
                             STEP_SETTINGS["clip_norm"], contextlib.nullcontext())
            weights = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
            states.append((result, weights, optimizer.param_groups[0]["lr"]))
    return states


def _loss_of(model, batch, smoothing, pad_ignored=True, smoothed=True):
    logits = model(batch.src, batch.tgt_in)  # (B, T, n_vocab)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch.tgt_out.reshape(-1),
                           ignore_index=PAD if pad_ignored else -100, label_smoothing=smoothing if smoothed else 0.0)


def _wrong_step(zero_grad="before", clip="before", scheduler_step="after", backward=True, pad_ignored=True,
                smoothed=True):
    """A training step with one known slip (the defaults make the right one)."""
    def step(model, batch, optimizer, scheduler, smoothing, clip_norm, autocast):
        with autocast:
            loss = _loss_of(model, batch, smoothing, pad_ignored, smoothed)
        if zero_grad == "before":
            optimizer.zero_grad()
        if backward:
            loss.backward()
        if zero_grad == "after backward":
            optimizer.zero_grad()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip_norm) if clip == "before" else None
        if scheduler_step == "before":
            scheduler.step()
        optimizer.step()
        if clip == "after":
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip_norm)
        if scheduler_step == "after":
            scheduler.step()
        return float(loss), float(norm)
    return step


_STEP_SLIPS = [  # (the wrong step, what the check says, the hint)
    (_wrong_step(zero_grad="never"),
     "you never cleared the gradients: backward() ADDS to each .grad, so from the second update on the gradients "
     "of all earlier batches pile up", "call optimizer.zero_grad() before loss.backward() in every step"),
    (_wrong_step(clip="after"),  # the same weights as no clipping at all
     "every update used the unclipped gradient: is clip_grad_norm_ missing, or does it come after "
     "optimizer.step(), when the update has already been made?",
     "norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip_norm), between loss.backward() and "
     "optimizer.step()"),
    (_wrong_step(scheduler_step="never"),
     "the learning rate never changed: the schedule counts updates, so scheduler.step() belongs in every step "
     "(after optimizer.step()), not once per epoch",
     "add scheduler.step() after optimizer.step()"),
    (_wrong_step(scheduler_step="before"),
     "you stepped the scheduler before the optimiser: every update used the learning rate of the next one",
     "optimizer.step() first, then scheduler.step()"),
    (_wrong_step(pad_ignored=False),
     "your loss counts the padding too: the PAD targets must be ignored, so that the loss averages over the real "
     "target tokens only", "F.cross_entropy(..., ignore_index=PAD_ID)"),
    (_wrong_step(smoothed=False),
     "your loss has no label smoothing: plain cross-entropy", "F.cross_entropy(..., label_smoothing=smoothing)"),
    (_wrong_step(zero_grad="after backward"),
     "the weights never changed: the optimiser saw no gradient. Does zero_grad() run between backward() and "
     "step(), or is loss.backward() missing?", "zero_grad(), backward(), clip, step(): in that order"),
    (_wrong_step(backward=False),
     "the weights never changed: the optimiser saw no gradient. Does zero_grad() run between backward() and "
     "step(), or is loss.backward() missing?", "zero_grad(), backward(), clip, step(): in that order"),
]


_STEP_MISTAKES = [Mistake(message, make, hint) for make, message, hint in _STEP_SLIPS]


def _same_state(a, b) -> bool:
    (result_a, weights_a, lr_a), (result_b, weights_b, lr_b) = a, b
    return (same_value(torch.tensor(result_a, dtype=torch.float64), torch.tensor(result_b, dtype=torch.float64),
                       rtol=1e-4, atol=1e-6)
            and same_value(weights_a, weights_b, rtol=1e-4, atol=1e-6) and math.isclose(lr_a, lr_b, rel_tol=1e-9))


def _as_pair(result):
    """The learner's (loss, norm) as two floats, or a message saying what came instead."""
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        return f"your step returned {describe_value(result)}; expected a pair (loss, norm) of numbers"
    try:
        return float(result[0]), float(result[1])
    except (TypeError, ValueError, RuntimeError):
        return f"your step returned ({type(result[0]).__name__}, {type(result[1]).__name__}); expected two numbers"


def check_train_step(fn) -> CheckResult:
    """Check a learner's ``train_step(model, batch, optimizer, scheduler, smoothing, clip_norm, autocast)``.

    It must run one update (forward under ``autocast``, label-smoothed cross-entropy over the real
    target tokens, zero_grad, backward, clipping to ``clip_norm``, optimizer step, scheduler step)
    and return ``(loss, norm)``, the loss and the gradient norm before clipping, as numbers.
    """
    exercise = "train_step"
    if not callable(fn):
        return CheckResult(exercise, ERROR, f"expected a function, got {describe_value(fn)}",
                           "pass the function itself, without calling it: check_train_step(train_step)")
    from course_lib.train import train_step

    def checked(model, batch, optimizer, scheduler, smoothing, clip_norm, autocast):
        return _as_pair(fn(model, batch, optimizer, scheduler, smoothing, clip_norm, autocast))

    try:
        mine = _trajectory(checked)
    except NotImplementedError:
        return CheckResult(exercise, NOT_DONE, "replace `raise NotImplementedError` with your code, then run this "
                                               "check again.")
    except Exception as exc:
        return CheckResult(exercise, ERROR, f"your step raised {type(exc).__name__}: {exc}")
    for n, state in enumerate(mine, start=1):
        if isinstance(state[0], str):
            return CheckResult(exercise, WRONG, state[0] + f" (after update {n})")
    expected = _trajectory(train_step)
    if all(_same_state(a, b) for a, b in zip(mine, expected)):
        return CheckResult(exercise, CORRECT, f"{_STEP_UPDATES} updates of a tiny translator match course_lib's "
                                              "train_step: losses, gradient norms, every weight and the learning rate.")
    for mistake in _STEP_MISTAKES:
        if all(_same_state(a, b) for a, b in zip(mine, _trajectory(mistake.make))):
            return CheckResult(exercise, WRONG, mistake.message, mistake.hint)
    n, (a, b) = next((n, pair) for n, pair in enumerate(zip(mine, expected), start=1) if not _same_state(*pair))
    what = ("the loss" if not math.isclose(a[0][0], b[0][0], rel_tol=1e-4) else
            "the gradient norm" if not math.isclose(a[0][1], b[0][1], rel_tol=1e-4) else
            "the learning rate" if not math.isclose(a[2], b[2], rel_tol=1e-9) else "the weights")
    verb = "differ" if what == "the weights" else "differs"
    return CheckResult(exercise, WRONG, f"after update {n}, {what} {verb} from course_lib's train_step "
                                        f"(loss {a[0][0]:.4f} against {b[0][0]:.4f}, norm {a[0][1]:.4f} against "
                                        f"{b[0][1]:.4f})")
