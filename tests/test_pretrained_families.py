"""The committed GPT-style and BERT-style pair: intact, small, documented, and measuring what they claim."""
import json
import os

import pytest
import torch

from course_lib import data
from course_lib.families import (ENGLISH_VOCAB_SIZE, FAMILY_FOLDERS, PAIR_SIZES, PAIR_STEPS, PAIR_TRAINING,
                                 PRETRAINED_ROOT,
                                 Vocabulary, blank_accuracy, choose_blanks, english_captions, fill_in,
                                 generate_text, load_language_model, perplexity)
from course_lib.tokenizer import BOS_ID
from course_lib.train import sha256_file

MAX_BYTES = 3_000_000  # per model: a small pair next to the 20 MB translator

needs_multi30k = pytest.mark.skipif(
    not (os.environ.get(data.MIRROR_ENV) or all((data.resolve_cache_dir() / f"{split}.en.gz").is_file()
                                                for split in ("train", "val"))),
    reason=f"needs Multi30k: set ${data.MIRROR_ENV} to a mirror folder, or fetch it once online")


@pytest.fixture(scope="module")
def pair():
    return {family: load_language_model(family) for family in FAMILY_FOLDERS}


@pytest.mark.parametrize("family", sorted(FAMILY_FOLDERS))
def test_each_folder_holds_three_files_that_match_their_digests(family):
    folder = PRETRAINED_ROOT / FAMILY_FOLDERS[family]
    assert sorted(p.name for p in folder.iterdir()) == ["model.pt", "provenance.json", "tokenizer.model"]
    assert sum(p.stat().st_size for p in folder.iterdir()) < MAX_BYTES
    provenance = json.loads((folder / "provenance.json").read_text())
    for name, info in provenance["files"].items():
        assert sha256_file(folder / name) == info["sha256"] and (folder / name).stat().st_size == info["bytes"]


def test_both_were_trained_the_same_way_and_differ_only_in_the_mask(pair):
    (gpt, gpt_tok, gpt_prov), (bert, bert_tok, bert_prov) = pair["gpt"], pair["bert"]
    assert gpt.causal and not bert.causal
    assert {k: v for k, v in gpt.config.items() if k != "causal"} == {k: v for k, v in bert.config.items() if k != "causal"}
    for family, provenance in (("gpt", gpt_prov), ("bert", bert_prov)):
        assert provenance["sizes"] == PAIR_SIZES and provenance["training"] == dict(PAIR_TRAINING, steps=PAIR_STEPS[family])
        assert provenance["tokenizer"]["vocab_size"] == ENGLISH_VOCAB_SIZE
        assert provenance["command"].startswith("python -m course_lib.families --family ")
        assert provenance["train_seconds"] > 0 and 0 < provenance["val_blank_accuracy"] < 1
    assert gpt_tok.sha256 == bert_tok.sha256 == gpt_prov["tokenizer"]["sha256"]
    assert "val_perplexity" in gpt_prov and "val_perplexity" not in bert_prov
    assert all(t.dtype == torch.float32 for t in gpt.state_dict().values())  # fp16 on disk, fp32 loaded
    assert not gpt.training and not bert.training


@needs_multi30k
def test_the_committed_tokenizer_is_the_one_the_course_trains(pair):
    from course_lib.tokenizer import load_tokenizer

    assert load_tokenizer(ENGLISH_VOCAB_SIZE, languages=("en",)).sha256 == pair["gpt"][1].sha256


@needs_multi30k
def test_the_recorded_scores_hold_for_the_fp16_weights(pair):
    (gpt, tokenizer, gpt_prov), (bert, _, bert_prov) = pair["gpt"], pair["bert"]
    vocab = Vocabulary.of(tokenizer)
    val = english_captions("val", tokenizer)
    assert perplexity(gpt, val) == pytest.approx(gpt_prov["val_perplexity"], rel=0.02)
    positions = choose_blanks(val, vocab, seed=0)
    accuracy = {name: blank_accuracy(model, val, positions, vocab) for name, model in (("gpt", gpt), ("bert", bert))}
    assert accuracy["gpt"] == pytest.approx(gpt_prov["val_blank_accuracy"], abs=0.01)
    assert accuracy["bert"] == pytest.approx(bert_prov["val_blank_accuracy"], abs=0.01)
    assert accuracy["bert"] > accuracy["gpt"] + 0.05  # the claim of notebook 13, section 6


def test_the_pair_does_its_jobs(pair):
    (gpt, tokenizer, _), (bert, _, _) = pair["gpt"], pair["bert"]
    vocab = Vocabulary.of(tokenizer)
    out = generate_text(gpt, [BOS_ID] + tokenizer.encode("A man"), max_new_tokens=20, top_k=1)[0]
    assert len(tokenizer.decode(out).split()) >= 3
    guesses = [piece for piece, _ in fill_in(bert, tokenizer, vocab, "A man in a blue [MASK] is riding a bike.")]
    assert "▁shirt" in guesses
