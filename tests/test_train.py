"""The training recipe, loop, checkpoints and shipped-model format (course_lib/train.py).

The Trainer runs on a toy word-for-word translation task (a few dozen pairs, a SentencePiece
model with 64 pieces, d_model 32, one encoder and one decoder layer). Two tests start other
processes: two DistributedDataParallel workers under torchrun (gloo, CPU), and the command line
on Multi30k (skipped when neither $COURSE_MULTI30K_MIRROR nor a data cache is available).
"""
import dataclasses
import hashlib
import json
import math
import os
import random
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from course_lib import data
from course_lib.batching import BatchPlan, collate, encode_pairs
from course_lib.decoding import greedy_search, translate
from course_lib.tokenizer import EOS_ID, PAD_ID, train_sentencepiece
from course_lib.train import (RECIPES, EpochResult, Recipe, Trainer, autocast_for, bleu_with_signature, build_model,
                              corpus_bleu, default_recipe_name, export_model, get_recipe, hardware_description,
                              label_smoothed_loss, learning_rate, load_pretrained, main, make_optimizer,
                              make_scheduler, parse_overrides, rng_state, save_atomically, set_rng_state,
                              sha256_file, train_step)
from course_lib.transformer import count_parameters

ROOT = Path(__file__).resolve().parent.parent
GERMAN = ["rot", "blau", "grün", "gelb", "hund", "katze", "haus", "baum", "groß", "klein"]
ENGLISH = ["red", "blue", "green", "yellow", "dog", "cat", "house", "tree", "big", "small"]


pytestmark = pytest.mark.usefixtures("one_thread")


def _pairs(count, seed):
    """Word-for-word 'translations' of 1-4 word sentences: an easy, copy-like task."""
    rng = random.Random(seed)
    pairs = []
    for _ in range(count):
        words = [rng.randrange(len(GERMAN)) for _ in range(rng.randint(1, 4))]
        pairs.append((" ".join(GERMAN[w] for w in words), " ".join(ENGLISH[w] for w in words)))
    return pairs


TRAIN, VAL = _pairs(96, seed=0), _pairs(12, seed=1)


@pytest.fixture(scope="module")
def tokenizer():
    return train_sentencepiece([s for pair in TRAIN for s in pair], vocab_size=64)


def _recipe(tokenizer, **overrides):
    values = dict(d_model=32, heads=2, encoder_layers=1, decoder_layers=1, d_ff=64, dropout=0.1,
                  vocab_size=tokenizer.vocab_size, train_pairs=None, max_len=32, max_tokens=160, epochs=2,
                  lr=3e-3, warmup_steps=4, bleu_sentences=4, seed=0)
    values.update(overrides)
    return get_recipe("quick", **values)


class Trained:
    """A toy run of two epochs, shared by the tests that only read it."""

    def __init__(self, tokenizer):
        self.recipe = _recipe(tokenizer)
        self.trainer = Trainer(self.recipe, tokenizer, TRAIN, VAL, progress=False)
        self.initial_val_loss = self.trainer.validate()[0]
        self.trainer.fit()


@pytest.fixture(scope="module")
def trained(tokenizer):
    return Trained(tokenizer)


# --- the learning-rate schedule ------------------------------------------------------------------

def test_learning_rate_warmup_then_cosine():
    peak, warmup, total, final = 2.0, 10, 110, 0.1
    lrs = [learning_rate(s, total, peak, warmup, final) for s in range(total + 20)]
    assert 0 < lrs[0] == pytest.approx(peak / warmup)
    for s in range(warmup):  # linear: equal increments up to the peak
        assert lrs[s] == pytest.approx(peak * (s + 1) / warmup)
    assert lrs[warmup - 1] == peak and lrs[warmup] == peak  # the peak, exactly, at the end of the warm-up
    assert max(lrs) == peak
    decay = lrs[warmup:total + 1]
    assert all(a > b for a, b in zip(decay, decay[1:]))  # strictly decreasing
    middle = warmup + (total - warmup) // 2  # half way: the cosine is at 0
    assert lrs[middle] == pytest.approx(peak * (final + (1 - final) * 0.5))
    quarter = warmup + (total - warmup) // 4
    assert lrs[quarter] == pytest.approx(peak * (final + (1 - final) * (1 + math.cos(math.pi / 4)) / 2))
    assert all(lr == pytest.approx(final * peak) for lr in lrs[total:])  # the floor, and it stays there


def test_learning_rate_edge_cases():
    assert learning_rate(0, 50, 1e-3, warmup_steps=0) == pytest.approx(1e-3)  # no warm-up: start at the peak
    assert learning_rate(50, 50, 1e-3, 0, final_fraction=0.0) == pytest.approx(0.0, abs=1e-12)
    assert [learning_rate(s, 20, 1.0, 5, final_fraction=1.0) for s in range(4, 30)] == [1.0] * 26  # constant
    assert learning_rate(3, 1, 1.0, 10) == pytest.approx(0.4)  # warm-up longer than the run
    for bad in [dict(total_steps=0), dict(warmup_steps=-1), dict(final_fraction=1.5), dict(final_fraction=-0.1)]:
        args = dict(step=0, total_steps=10, peak=1.0, warmup_steps=2, final_fraction=0.05) | bad
        with pytest.raises(ValueError, match="need total_steps >= 1"):
            learning_rate(**args)


# --- the loss ------------------------------------------------------------------------------------

def _by_hand(logits, target, eps, pad_id=PAD_ID):
    """(1 - eps) * NLL + eps * mean over the vocabulary of -log p, averaged over the non-pad tokens."""
    total = nll_total = 0.0
    count = 0
    B, T, n_vocab = logits.shape
    for b in range(B):
        for t in range(T):
            if target[b, t] == pad_id:
                continue
            logp = logits[b, t].double() - torch.logsumexp(logits[b, t].double(), 0)
            nll = -float(logp[target[b, t]])
            total += (1 - eps) * nll + eps * float(-logp.sum()) / n_vocab
            nll_total += nll
            count += 1
    return total / count, nll_total / count


def test_label_smoothed_loss_matches_the_formula():
    gen = torch.Generator().manual_seed(0)
    logits = 3 * torch.randn(3, 5, 7, generator=gen)
    target = torch.tensor([[4, 5, 6, 2, 0], [3, 2, 0, 0, 0], [1, 6, 6, 6, 2]])
    for eps in (0.0, 0.1, 0.5):
        loss, nll = label_smoothed_loss(logits, target, smoothing=eps)
        expected_loss, expected_nll = _by_hand(logits, target, eps)
        assert loss.shape == () and nll.shape == ()
        assert float(loss) == pytest.approx(expected_loss, rel=1e-5)
        assert float(nll) == pytest.approx(expected_nll, rel=1e-5)
    other_pad = label_smoothed_loss(logits, target, smoothing=0.1, pad_id=6)[0]
    assert float(other_pad) == pytest.approx(_by_hand(logits, target, 0.1, pad_id=6)[0], rel=1e-5)


def test_label_smoothed_loss_ignores_padding_and_smoothing_zero_is_cross_entropy():
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 4, 9, generator=gen, requires_grad=True)
    target = torch.tensor([[5, 8, 2, 0], [7, 2, 0, 0]])
    loss, nll = label_smoothed_loss(logits, target, 0.1)
    changed = logits.detach().clone()
    changed[target == PAD_ID] = 100 * torch.randn(3, 9, generator=gen)  # anything at the padding
    assert torch.equal(label_smoothed_loss(changed, target, 0.1)[0], loss.detach())
    loss.backward()
    assert (logits.grad[target == PAD_ID] == 0).all() and (logits.grad[target != PAD_ID] != 0).any()
    assert not nll.requires_grad  # the NLL is a read-out for the perplexity, not trained
    real = target != PAD_ID
    plain = label_smoothed_loss(logits, target, 0.0)[0]
    assert torch.allclose(plain, F.cross_entropy(logits[real], target[real]))
    assert torch.allclose(nll, plain)
    no_pad = torch.tensor([[5, 8, 2, 4], [7, 2, 3, 3]])
    assert torch.allclose(label_smoothed_loss(logits, no_pad, 0.0)[0],
                          F.cross_entropy(logits.reshape(-1, 9), no_pad.reshape(-1)))


def test_label_smoothed_loss_in_bfloat16_returns_float32():
    logits = torch.randn(2, 3, 5).bfloat16()
    target = torch.tensor([[1, 2, 0], [3, 4, 2]])
    loss, nll = label_smoothed_loss(logits, target, 0.1)
    assert loss.dtype == nll.dtype == torch.float32
    assert float(loss) == pytest.approx(_by_hand(logits.float(), target, 0.1)[0], rel=1e-5)


def test_label_smoothed_loss_shape_errors():
    with pytest.raises(ValueError, match=r"expected logits \(B, T, n_vocab\) and target \(B, T\)"):
        label_smoothed_loss(torch.randn(4, 7), torch.tensor([1, 2, 3, 4]))
    with pytest.raises(ValueError, match=r"\(2, 3, 5\) and \(2, 4\)"):
        label_smoothed_loss(torch.randn(2, 3, 5), torch.ones(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="expected logits"):
        label_smoothed_loss(torch.randn(2, 3, 5), torch.ones(3, 2, dtype=torch.long))


# --- recipes -------------------------------------------------------------------------------------

def test_recipe_round_trip_through_json():
    for recipe in list(RECIPES.values()) + [get_recipe("quick", betas=(0.8, 0.95), train_pairs=None)]:
        values = json.loads(json.dumps(recipe.to_dict()))  # as a checkpoint or provenance file stores it
        assert isinstance(values["betas"], list)
        back = Recipe.from_dict(values)
        assert back == recipe and isinstance(back.betas, tuple)
    assert RECIPES["full"].name == "full" and RECIPES["quick"].name == "quick"
    with pytest.raises(dataclasses.FrozenInstanceError):
        RECIPES["full"].lr = 1.0


def test_get_recipe_overrides_and_errors():
    recipe = get_recipe("quick", epochs=1, lr=5e-4, train_pairs=None)
    assert (recipe.epochs, recipe.lr, recipe.train_pairs) == (1, 5e-4, None)
    quick = RECIPES["quick"]
    assert recipe == dataclasses.replace(quick, epochs=1, lr=5e-4, train_pairs=None)  # nothing else changed
    assert quick.train_pairs is not None and quick.epochs != 1  # and the table itself is untouched
    assert get_recipe("full") == RECIPES["full"]
    with pytest.raises(ValueError, match=r"unknown recipe field\(s\) \['d_modle', 'layers'\]"):
        get_recipe("quick", d_modle=64, layers=2)
    with pytest.raises(ValueError, match="unknown recipe 'medium': expected one of full, quick"):
        get_recipe("medium")


def test_default_recipe_name():
    assert default_recipe_name(torch.device("cpu")) == "quick"
    assert default_recipe_name("cpu") == "quick"
    assert default_recipe_name(torch.device("cuda", 0)) == "full"
    assert default_recipe_name("mps") == "full"


def test_parse_overrides_types():
    got = parse_overrides(["d_model=128", "lr=5e-4", "train_pairs=None", "bleu_sentences=None",
                           "betas=0.9,0.99", "dropout=0", "d-ff=64", "epochs=7", "train_pairs=500"])
    assert got == {"d_model": 128, "lr": 5e-4, "train_pairs": 500, "bleu_sentences": None,
                   "betas": (0.9, 0.99), "dropout": 0.0, "d_ff": 64, "epochs": 7}
    assert type(got["d_model"]) is int and type(got["dropout"]) is float and type(got["lr"]) is float
    assert parse_overrides([]) == {}
    get_recipe("quick", **got)  # every parsed value is accepted by the recipe


@pytest.mark.parametrize("assignment", ["d_model=12.5", "epochs=None", "lr=fast", "name=mine", "heads",
                                        "layers=2", "betas=a,b", "betas=0.9", "=3"])
def test_parse_overrides_rejects_bad_input(assignment):
    with pytest.raises(SystemExit, match="--set"):
        parse_overrides([assignment])


def test_main_rejects_bad_overrides_before_loading_anything():
    with pytest.raises(SystemExit, match="--set expects FIELD=VALUE"):
        main(["--device", "cpu", "--set", "colour=red"])


# --- the model -----------------------------------------------------------------------------------

def test_build_model_parameter_count_with_a_shared_embedding():
    recipe = RECIPES["full"]
    model = build_model(recipe)
    d, ff, n_vocab = recipe.d_model, recipe.d_ff, recipe.vocab_size
    attention = 4 * (d * d + d)  # W_Q, W_K, W_V, W_O with biases
    feed_forward = d * ff + ff + ff * d + d
    norm = 2 * d
    encoder = recipe.encoder_layers * (attention + feed_forward + 2 * norm) + norm
    decoder = recipe.decoder_layers * (2 * attention + feed_forward + 3 * norm) + norm
    assert count_parameters(model) == n_vocab * d + encoder + decoder == 7_578_624  # one n_vocab x d matrix, not three
    assert model.src_embed.weight is model.tgt_embed.weight is model.out.weight
    small = build_model(recipe.__class__("tiny", d_model=16, heads=2, encoder_layers=1, decoder_layers=1, d_ff=32),
                        vocab_size=50)
    assert small.out.weight.shape == (50, 16) and small.src_embed.num_embeddings == 50
    assert small.pad_id == PAD_ID
    assert model.trained_max_len == recipe.max_len  # translate() warns about longer sources
    assert small.trained_max_len == recipe.__class__("tiny").max_len


def test_corpus_bleu():
    refs = ["A dog runs on the grass .", "Two children play ."]
    score, signature = corpus_bleu(refs, refs)
    assert score.score == pytest.approx(100.0)
    lower_hyps = [r.lower() for r in refs]
    cased = corpus_bleu(lower_hyps, refs)[0].score
    lowered, lowered_signature = corpus_bleu(lower_hyps, refs, lowercase_tokenized=True)
    assert cased < 100 and lowered.score == pytest.approx(100.0)
    assert "case:mixed" in str(signature) and "case:lc" in str(lowered_signature)
    assert corpus_bleu(["completely different words here"], ["A dog runs on the grass ."])[0].score < 10


# --- saving and randomness -----------------------------------------------------------------------

def _leftovers(folder):
    return sorted(p.name for p in Path(folder).iterdir() if p.name.endswith(".part") or p.name.startswith("."))


def test_bleu_with_signature_is_sacrebleus_cased_score():
    from sacrebleu.metrics import BLEU

    hyps, refs = ["a dog runs on the grass .", "two men play"], ["A dog runs on the grass.", "Two men play football."]
    out = bleu_with_signature(hyps, refs)
    assert out["bleu"] == round(BLEU().corpus_score(hyps, [refs]).score, 2)
    assert out["signature"].startswith("nrefs:1|case:mixed|eff:no|tok:13a")
    assert bleu_with_signature(refs, refs)["bleu"] == 100.0


def test_save_atomically_replaces_the_file_in_one_step(tmp_path):
    path = tmp_path / "sub" / "state.pt"
    assert save_atomically({"x": torch.arange(3)}, path) == path  # creates the folder
    assert torch.equal(torch.load(path)["x"], torch.arange(3))
    reader = tmp_path / "reader.pt"
    os.link(path, reader)  # someone holding the old file (same inode)
    save_atomically({"x": torch.arange(5)}, path)
    assert torch.equal(torch.load(path)["x"], torch.arange(5))
    assert torch.equal(torch.load(reader)["x"], torch.arange(3))  # a new file was renamed in, not overwritten
    assert _leftovers(path.parent) == []
    assert oct(path.stat().st_mode & 0o777) == oct(0o644)
    with pytest.raises(Exception):
        save_atomically({"bad": lambda: None}, path)  # cannot be pickled
    assert torch.equal(torch.load(path)["x"], torch.arange(5))  # the old file is intact
    assert _leftovers(path.parent) == []


def test_rng_state_round_trip(tmp_path):
    state = rng_state()
    torch.save(state, tmp_path / "rng.pt")  # as it travels in a checkpoint
    draws = (random.random(), float(np.random.rand()), torch.rand(4))
    random.seed(99), np.random.seed(99), torch.manual_seed(99)  # anything in between
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=False))
    again = (random.random(), float(np.random.rand()), torch.rand(4))
    assert draws[:2] == again[:2] and torch.equal(draws[2], again[2])


def test_epoch_result_line_and_hardware_description():
    result = EpochResult(3, 120, 1e-3, 2.34567, 3.1, 22.1977, 12.3456, 5000, 10.0)
    assert result.line() == "epoch  3  train loss 2.346  val loss 3.100  val ppl  22.20  val BLEU 12.35"
    text = hardware_description(torch.device("cpu"))
    assert text.startswith("CPU: ") and f"{os.cpu_count()} cores" in text


# --- the Trainer ---------------------------------------------------------------------------------

def test_one_epoch_lowers_the_loss_and_the_history_has_one_entry_per_epoch(trained):
    trainer, history = trained.trainer, trained.trainer.history
    assert [type(h) for h in history] == [EpochResult, EpochResult]
    assert [h.epoch for h in history] == [1, 2] and trainer.epoch == 2
    steps = trainer.steps_per_epoch
    assert steps == len(BatchPlan(trainer.train_examples, trained.recipe.max_tokens)) > 1
    assert [h.step for h in history] == [steps, 2 * steps] == [steps, trainer.total_steps]
    assert history[0].val_loss < trained.initial_val_loss - 0.5
    assert history[1].val_loss < history[0].val_loss and history[1].train_loss < history[0].train_loss
    tokens = sum(len(e.tgt) for e in trainer.train_examples)
    assert all(h.target_tokens == tokens for h in history)
    assert all(math.isfinite(h.train_loss) and 0 <= h.val_bleu <= 100 for h in history)
    # the schedule ran to its end: the last rate is final_lr_fraction of the peak
    assert history[-1].lr == pytest.approx(trained.recipe.lr * trained.recipe.final_lr_fraction)
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(
        trained.recipe.lr * learning_rate(trainer.step, trainer.total_steps, 1.0, trained.recipe.warmup_steps,
                                          trained.recipe.final_lr_fraction))


def test_validate_is_the_token_weighted_loss_and_perplexity(trained):
    trainer = trained.trainer
    batch = collate(encode_pairs(VAL, trainer.tokenizer))  # every validation pair in one batch
    trainer.model.eval()
    with torch.no_grad():
        loss, nll = label_smoothed_loss(trainer.model(batch.src, batch.tgt_in), batch.tgt_out,
                                        trained.recipe.label_smoothing)
    val_loss, val_ppl = trainer.validate()
    assert val_loss == pytest.approx(float(loss), rel=1e-4)
    assert val_ppl == pytest.approx(math.exp(float(nll)), rel=1e-4)
    assert trainer.history[-1].val_loss == pytest.approx(val_loss, rel=1e-6)


def test_bleu_on_given_pairs(trained):
    trainer = trained.trainer
    pairs = VAL[:5]
    hypotheses = translate(trainer.model, trainer.tokenizer, [p[0] for p in pairs], warn=False)
    expected = corpus_bleu(hypotheses, [p[1] for p in pairs])[0].score
    assert trainer.bleu(pairs) == pytest.approx(expected)
    assert trainer.bleu([(de, de) for de, _ in pairs]) == pytest.approx(corpus_bleu(hypotheses, [p[0] for p in pairs])[0].score)


def test_trainer_repeats_train_step_the_inline_loop_gives_the_same_losses(tokenizer, trained):
    # Notebook 11 writes the loop out with train_step, make_optimizer and make_scheduler, and asserts
    # that Trainer computes the same losses on the same batches; this is that claim on the toy task.
    recipe = trained.recipe
    torch.manual_seed(recipe.seed)
    model = build_model(recipe, tokenizer.vocab_size)
    plan = BatchPlan(encode_pairs(TRAIN, tokenizer, max_len=recipe.max_len), recipe.max_tokens, seed=recipe.seed)
    optimizer = make_optimizer(model, recipe)
    scheduler = make_scheduler(optimizer, recipe, total_steps=len(plan) * recipe.epochs)
    model.train()
    losses = [train_step(model, batch, optimizer, scheduler, recipe.label_smoothing, recipe.clip_norm,
                         autocast_for("cpu"))[0] for batch in plan.epoch(0)]
    assert len(losses) == trained.trainer.steps_per_epoch
    assert losses == trained.trainer.step_losses[:len(losses)]  # bit for bit
    assert len(trained.trainer.step_losses) == recipe.epochs * trained.trainer.steps_per_epoch


def test_train_step_returns_the_norm_before_clipping_and_steps_once(tokenizer):
    recipe = _recipe(tokenizer, clip_norm=1e-3)
    torch.manual_seed(0)
    model = build_model(recipe, tokenizer.vocab_size)
    batch = collate(encode_pairs(TRAIN[:4], tokenizer))
    optimizer = make_optimizer(model, recipe)
    scheduler = make_scheduler(optimizer, recipe, total_steps=10)
    loss, norm = train_step(model, batch, optimizer, scheduler, 0.1, recipe.clip_norm)
    assert isinstance(loss, float) and isinstance(norm, float) and norm > 1e-3  # before clipping
    grads = torch.cat([p.grad.reshape(-1) for p in model.parameters() if p.grad is not None])
    assert torch.linalg.vector_norm(grads).item() == pytest.approx(1e-3, rel=1e-3)  # clipped in place
    assert scheduler.last_epoch == 1  # one scheduler step per update
    before = [p.detach().clone() for p in model.parameters()]
    train_step(model, batch, optimizer, None, 0.1, recipe.clip_norm)  # no scheduler: the rate stays
    assert scheduler.last_epoch == 1 and any(not torch.equal(a, p) for a, p in zip(before, model.parameters()))


def test_make_optimizer_decays_matrices_only_and_the_scheduler_follows_learning_rate(tokenizer):
    recipe = _recipe(tokenizer, weight_decay=0.05)
    model = build_model(recipe, tokenizer.vocab_size)
    optimizer = make_optimizer(model, recipe)
    decay, no_decay = optimizer.param_groups
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decay["params"]) and all(p.dim() < 2 for p in no_decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))
    assert optimizer.defaults["betas"] == recipe.betas
    scheduler = make_scheduler(optimizer, recipe, total_steps=20)
    for step in range(20):
        assert optimizer.param_groups[0]["lr"] == pytest.approx(learning_rate(step, 20, recipe.lr, recipe.warmup_steps,
                                                                              recipe.final_lr_fraction))
        optimizer.step()
        scheduler.step()


def test_autocast_for_is_plain_float32_off_cuda():
    with autocast_for("cpu"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
    with warnings.catch_warnings():  # without a GPU torch warns that it disables CUDA autocast
        warnings.simplefilter("ignore")
        assert isinstance(autocast_for(torch.device("cuda", 0)), torch.autocast)


def test_train_pairs_takes_a_subset_in_corpus_order(tokenizer):
    everything = encode_pairs(TRAIN, tokenizer)
    chosen = []
    for seed in (0, 1):
        trainer = Trainer(_recipe(tokenizer, train_pairs=10, seed=seed), tokenizer, TRAIN, VAL, progress=False)
        order = list(range(len(TRAIN)))
        random.Random(seed).shuffle(order)  # "the first N after shuffling", kept in corpus order
        assert trainer.train_examples == [everything[i] for i in sorted(order[:10])]
        chosen.append(trainer.train_examples)
    assert chosen[0] != chosen[1]
    short = Trainer(_recipe(tokenizer, max_len=8), tokenizer, TRAIN, VAL, progress=False)
    assert short.train_examples == [e for e in everything if len(e.src) <= 8 and len(e.tgt) <= 8]
    assert 0 < len(short.train_examples) < len(everything)


def _weights(trainer):
    return {k: v.clone() for k, v in trainer.model.state_dict().items()}


def test_gradients_are_clipped(tokenizer, trained):
    # Clipped to a norm of 1e-12, every gradient drowns in AdamW's epsilon: the weights hardly move.
    clipped = Trainer(_recipe(tokenizer, clip_norm=1e-12, weight_decay=0.0), tokenizer, TRAIN, VAL, progress=False)
    before = _weights(clipped)
    clipped.train_epoch()
    moved = max(float((v - before[k]).abs().max()) for k, v in _weights(clipped).items())
    assert moved < 1e-4
    normal = max(float((v - before[k]).abs().max()) for k, v in _weights(trained.trainer).items())
    assert normal > 1e-2  # the same start (same seed) without the tiny clip


def test_resume_continues_exactly_where_the_run_stopped(tmp_path, tokenizer, trained):
    straight = trained.trainer
    checkpoint = tmp_path / "run" / "checkpoint.pt"
    first = Trainer(trained.recipe, tokenizer, TRAIN, VAL, checkpoint=checkpoint, progress=False)
    assert first.resume() is False  # nothing to resume yet
    first.fit(stop_after=1)
    assert checkpoint.is_file() and first.epoch == 1 and _leftovers(checkpoint.parent) == []
    after_one = tmp_path / "after_one.pt"
    after_one.write_bytes(checkpoint.read_bytes())
    random.seed(7), np.random.seed(7), torch.manual_seed(7)  # whatever happens in between

    second = Trainer(trained.recipe, tokenizer, TRAIN, VAL, checkpoint=checkpoint, progress=False)
    assert second.resume() is True
    assert (second.epoch, second.step, len(second.history)) == (1, first.step, 1)
    second.fit()
    assert second.epoch == 2
    fields = ["epoch", "step", "lr", "train_loss", "val_loss", "val_ppl", "val_bleu", "target_tokens"]
    for resumed, reference in zip(second.history, straight.history, strict=True):
        assert [getattr(resumed, f) for f in fields] == [getattr(reference, f) for f in fields]  # exact floats
    final, reference = _weights(second), _weights(straight)
    assert all(torch.equal(final[k], reference[k]) for k in reference)
    assert torch.load(checkpoint, weights_only=False)["epoch"] == 2  # rewritten after the second epoch

    # The same resume, but with other random numbers for dropout afterwards, ends elsewhere:
    # the equalities above are not vacuous, the saved random state matters.
    third = Trainer(trained.recipe, tokenizer, TRAIN, VAL, progress=False)
    assert third.resume(after_one) is True and third.epoch == 1
    torch.manual_seed(12345)
    third.fit()
    assert third.history[-1].train_loss != straight.history[-1].train_loss


def test_resume_refuses_another_recipe_or_tokenizer(tmp_path, tokenizer, trained):
    checkpoint = tmp_path / "checkpoint.pt"
    trained.trainer.save(checkpoint)
    other_recipe = Trainer(_recipe(tokenizer, lr=1e-3), tokenizer, TRAIN, VAL, checkpoint=checkpoint, progress=False)
    with pytest.raises(ValueError, match=r"another recipe.*'lr': \(0\.003, 0\.001\)"):
        other_recipe.resume()
    other_tokenizer = train_sentencepiece([s for pair in TRAIN for s in pair], vocab_size=60)
    assert other_tokenizer.sha256 != tokenizer.sha256
    other = Trainer(trained.recipe, other_tokenizer, TRAIN, VAL, progress=False)
    with pytest.raises(ValueError, match="made with tokenizer"):
        other.resume(checkpoint)
    assert other.epoch == 0  # nothing was loaded
    assert Trainer(trained.recipe, tokenizer, TRAIN, VAL, progress=False).resume() is False  # no checkpoint set
    missing = Trainer(trained.recipe, tokenizer, TRAIN, VAL, checkpoint=tmp_path / "none.pt", progress=False)
    assert missing.resume() is False and missing.epoch == 0


# --- the shipped model ---------------------------------------------------------------------------

def test_export_and_load_pretrained_round_trip(tmp_path, trained):
    trainer = trained.trainer
    folder = export_model(trainer, tmp_path / "model", {"command": "test", "bleu": 1.5})
    assert sorted(p.name for p in folder.iterdir()) == ["model.pt", "provenance.json", "tokenizer.model"]
    provenance = json.loads((folder / "provenance.json").read_text())
    assert provenance["command"] == "test" and provenance["bleu"] == 1.5
    for name in ("model.pt", "tokenizer.model"):
        blob = (folder / name).read_bytes()
        assert provenance["files"][name] == {"sha256": hashlib.sha256(blob).hexdigest(), "bytes": len(blob)}
        assert sha256_file(folder / name) == hashlib.sha256(blob).hexdigest()
    saved = torch.load(folder / "model.pt", weights_only=True)
    assert not {"out.weight", "tgt_embed.weight"} & set(saved["weights"])  # tied: stored once, as src_embed
    assert all(v.dtype == torch.float16 for v in saved["weights"].values() if v.is_floating_point())
    assert Recipe.from_dict(saved["recipe"]) == trained.recipe

    model, tokenizer, loaded_provenance = load_pretrained(folder)
    assert loaded_provenance == provenance and not model.training
    assert tokenizer.sha256 == trainer.tokenizer.sha256
    assert model.out.weight is model.src_embed.weight is model.tgt_embed.weight
    reference = trainer.model.eval().state_dict()
    for key, value in model.state_dict().items():
        assert torch.allclose(value, reference[key], rtol=1e-3, atol=1e-3), key
        assert torch.equal(value, reference[key].half().float()), key  # exactly the fp16 rounding
    sentences = [p[0] for p in VAL[:6]]
    src = torch.nn.utils.rnn.pad_sequence([torch.tensor(tokenizer.encode(s) + [EOS_ID]) for s in sentences],
                                          batch_first=True, padding_value=PAD_ID)
    with torch.no_grad():
        tgt_in = torch.full((len(sentences), 1), 1)
        assert torch.allclose(model(src, tgt_in), trainer.model(src, tgt_in), atol=0.05)
    assert greedy_search(model, src) == greedy_search(trainer.model, src)
    assert translate(model, tokenizer, sentences, warn=False) == translate(trainer.model, trainer.tokenizer, sentences,
                                                                  warn=False)


def test_load_pretrained_accepts_the_tied_matrix_stored_twice(tmp_path, trained):
    # Models exported before the tied matrix was stored once (the committed one) hold tgt_embed.weight too.
    folder = export_model(trained.trainer, tmp_path / "model", {})
    saved = torch.load(folder / "model.pt", weights_only=True)
    saved["weights"]["tgt_embed.weight"] = saved["weights"]["src_embed.weight"].clone()
    torch.save(saved, folder / "model.pt")
    provenance = json.loads((folder / "provenance.json").read_text())
    provenance["files"]["model.pt"]["sha256"] = sha256_file(folder / "model.pt")
    (folder / "provenance.json").write_text(json.dumps(provenance))
    model, _, _ = load_pretrained(folder)
    assert model.tgt_embed.weight is model.src_embed.weight
    assert torch.equal(model.src_embed.weight, saved["weights"]["src_embed.weight"].float())


def test_load_pretrained_refuses_damaged_or_missing_files(tmp_path, trained):
    with pytest.raises(FileNotFoundError, match="no trained model at"):
        load_pretrained(tmp_path / "nowhere")
    folder = export_model(trained.trainer, tmp_path / "model", {})
    blob = bytearray((folder / "model.pt").read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    (folder / "model.pt").write_bytes(bytes(blob))
    with pytest.raises(ValueError, match=re.escape(str(folder / "model.pt")) + ".*SHA-256"):
        load_pretrained(folder)

    folder = export_model(trained.trainer, tmp_path / "partial", {})  # consistent digests, a weight missing
    saved = torch.load(folder / "model.pt", weights_only=True)
    del saved["weights"][sorted(saved["weights"])[0]]
    save_atomically(saved, folder / "model.pt")
    provenance = json.loads((folder / "provenance.json").read_text())
    provenance["files"]["model.pt"]["sha256"] = sha256_file(folder / "model.pt")
    (folder / "provenance.json").write_text(json.dumps(provenance))
    with pytest.raises(ValueError, match="lacks weights for"):
        load_pretrained(folder)


# --- other processes: DistributedDataParallel and the command line --------------------------------

DDP_SCRIPT = '''
import json, sys
from pathlib import Path

import torch
import torch.distributed as dist

torch.set_num_threads(1)
dist.init_process_group("gloo")
from course_lib.tokenizer import Tokenizer
from course_lib.train import Recipe, Trainer

folder = Path(sys.argv[1])
job = json.loads((folder / "job.json").read_text())
trainer = Trainer(Recipe.from_dict(job["recipe"]), Tokenizer.from_file(folder / "tokenizer.model"),
                  [tuple(p) for p in job["train"]], [tuple(p) for p in job["val"]], progress=False)
initial = {k: v.clone() for k, v in trainer.model.state_dict().items()}
seen = []
planned = trainer.plan.indices


def recording(epoch=0):
    batches = planned(epoch)
    seen.extend(list(b) for b in batches)
    return batches


trainer.plan.indices = recording
trainer.fit()
torch.save({"rank": trainer.rank, "world_size": trainer.world_size, "initial": initial,
            "final": trainer.model.state_dict(), "seen": seen,
            "history": [vars(h) for h in trainer.history]}, folder / f"rank{trainer.rank}.pt")
dist.destroy_process_group()
'''


def _child_env(**extra):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(
        [str(ROOT)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])))
    env.update(extra)
    return env


def _run(args, cwd, timeout=240, **env):
    done = subprocess.run(args, cwd=cwd, env=_child_env(**env), capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(map(str, args))} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def test_distributed_data_parallel_keeps_two_processes_in_sync(tmp_path, tokenizer):
    recipe = _recipe(tokenizer, epochs=1, max_tokens=96)
    tokenizer.save(tmp_path / "tokenizer.model")
    (tmp_path / "job.json").write_text(json.dumps({"recipe": recipe.to_dict(), "train": TRAIN, "val": VAL}))
    (tmp_path / "ddp_job.py").write_text(DDP_SCRIPT)
    _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
          str(tmp_path / "ddp_job.py"), str(tmp_path)], cwd=tmp_path)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert [(r["rank"], r["world_size"]) for r in ranks] == [(0, 2), (1, 2)]

    first, second = ranks
    assert first["final"].keys() == second["final"].keys()
    assert all(torch.equal(first["final"][k], second["final"][k]) for k in first["final"])  # in sync
    assert any(not torch.equal(first["final"][k], first["initial"][k]) for k in first["final"])  # and trained

    batches = BatchPlan(encode_pairs(TRAIN, tokenizer, max_len=recipe.max_len), recipe.max_tokens,
                        seed=recipe.seed).indices(0)
    assert len(first["seen"]) == len(second["seen"]) == len(batches) // 2 > 1
    examples = [set(i for b in r["seen"] for i in b) for r in ranks]
    assert not examples[0] & examples[1]  # each process trained on its own share of the data
    assert sorted(map(sorted, first["seen"] + second["seen"])) == sorted(map(sorted, batches[:2 * (len(batches) // 2)]))

    (h0,), (h1,) = first["history"], second["history"]
    assert math.isfinite(h0["train_loss"]) and h0["train_loss"] == h1["train_loss"]  # the mean over both
    examples = encode_pairs(TRAIN, tokenizer)
    used = [i for b in batches[:2 * (len(batches) // 2)] for i in b]
    assert h0["target_tokens"] == h1["target_tokens"] == sum(len(examples[i].tgt) for i in used)  # summed over both
    assert h0["val_loss"] == h1["val_loss"] and math.isfinite(h0["val_loss"])
    assert 0 <= h0["val_bleu"] <= 100 and math.isnan(h1["val_bleu"])  # BLEU on rank 0 only


def _multi30k_available():
    if os.environ.get(data.MIRROR_ENV):
        return True
    cache = data.resolve_cache_dir()
    return all((cache / name).is_file() for name in data.MULTI30K_SHA256)


@pytest.mark.skipif(not _multi30k_available(),
                    reason=f"Multi30k is not available: set ${data.MIRROR_ENV} to a local mirror (CI's .ci/run "
                           f"does) or fill the data cache ({data.CACHE_DIR})")
def test_command_line_trains_writes_a_checkpoint_and_resumes(tmp_path):
    out = tmp_path / "run"
    base = [sys.executable, "-m", "course_lib.train", "--recipe", "quick", "--out", str(out), "--train-pairs", "64",
            "--device", "cpu", "--threads", "1", "--set", "d_model=32", "--set", "d_ff=64",
            "--set", "encoder_layers=1", "--set", "decoder_layers=1", "--set", "bleu_sentences=4",
            "--test-beam", "0", "--quiet", "--epochs", "2"]
    first = _run(base + ["--stop-after", "1"], cwd=ROOT)
    assert "resumed" not in first.stdout and re.search(r"\d+ training pairs", first.stdout)
    assert (out / "checkpoint.pt").is_file()
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [entry["epoch"] for entry in log] == [1] and math.isfinite(log[0]["train_loss"])

    second = _run(base, cwd=ROOT)
    assert f"resumed from {out / 'checkpoint.pt'} after epoch 1" in second.stdout
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [entry["epoch"] for entry in log] == [1, 2]
    assert log[1]["step"] == 2 * log[0]["step"]
    state = torch.load(out / "checkpoint.pt", weights_only=False)
    assert state["epoch"] == 2 and len(state["history"]) == 2
    assert Recipe.from_dict(state["recipe"]).d_model == 32 and state["recipe"]["train_pairs"] == 64
    assert _leftovers(out) == []


# --- pictures ------------------------------------------------------------------------------------

def test_select_pairs():
    pairs = [(f"de {i}", f"en {i}") for i in range(20)]
    assert Trainer.select_pairs(iter(pairs), get_recipe("quick", train_pairs=None)) == pairs
    assert Trainer.select_pairs(pairs, get_recipe("quick", train_pairs=20)) == pairs
    assert Trainer.select_pairs(pairs, get_recipe("quick", train_pairs=50)) == pairs
    order = list(range(20))
    random.Random(3).shuffle(order)
    picked = Trainer.select_pairs(pairs, get_recipe("quick", train_pairs=6, seed=3))
    assert picked == [pairs[i] for i in sorted(order[:6])]


def test_plots(trained):
    import matplotlib.pyplot as plt

    from course_lib.train import plot_history, plot_learning_rate

    recipe = trained.recipe
    fig = plot_learning_rate({"toy": (recipe, 10), "longer": (dataclasses.replace(recipe, epochs=4), 10)})
    ax = fig.axes[0]
    assert [len(line.get_xdata()) for line in ax.get_lines() if len(line.get_xdata()) > 2] == [20, 40]
    curve = ax.get_lines()[0].get_ydata()
    assert max(curve) == pytest.approx(recipe.lr) and curve[0] == pytest.approx(recipe.lr / recipe.warmup_steps)
    assert ax.get_xlabel() and ax.get_ylabel() and ax.get_title()
    plt.close(fig)
    history = trained.trainer.history
    for rows in (history, [dataclasses.asdict(h) for h in history]):
        fig = plot_history(rows, "toy run")
        left, right = fig.axes
        assert list(left.get_lines()[0].get_ydata()) == [h.train_loss for h in history]
        assert list(right.get_lines()[0].get_ydata()) == [h.val_bleu for h in history]
        assert all(ax.get_xlabel() == "epoch" and ax.get_ylabel() for ax in (left, right))
        plt.close(fig)


def test_live_curves_redraw_after_every_epoch(monkeypatch, trained):
    import IPython.display

    shown = []

    class Handle:
        def update(self, obj):
            shown.append(obj)

    monkeypatch.setattr(IPython.display, "display", lambda obj, display_id=False: Handle())
    from course_lib.train import LiveCurves

    live = LiveCurves("toy")
    for n in (1, 2):
        live.update(trained.trainer.history[:n])
    assert len(shown) == 2 and all(image.data[:8] == b"\x89PNG\r\n\x1a\n" for image in shown)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_resume_on_cuda(tmp_path, tokenizer):
    recipe = _recipe(tokenizer)
    checkpoint = tmp_path / "checkpoint.pt"
    first = Trainer(recipe, tokenizer, TRAIN, VAL, device="cuda", checkpoint=checkpoint, progress=False)
    first.fit(stop_after=1)
    second = Trainer(recipe, tokenizer, TRAIN, VAL, device="cuda", checkpoint=checkpoint, progress=False)
    assert second.resume() is True  # the saved random states come back on the GPU: set_rng_state takes them
    second.fit()
    assert second.epoch == 2 and all(math.isfinite(h.train_loss) for h in second.history)
