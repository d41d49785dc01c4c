"""The committed decoder-only translator (notebook 13, section 8): intact, under 10 MB, trained like the
encoder-decoder it is set against, and measuring what its provenance claims."""
import os

import pytest
import torch

from course_lib import data
from course_lib.families import (PRETRAINED_ROOT, TRANSLATOR_FOLDER, TRANSLATOR_SIZES, Vocabulary,
                                 load_language_model, perplexity)

needs_multi30k = pytest.mark.skipif(
    not (os.environ.get(data.MIRROR_ENV) or all((data.resolve_cache_dir() / f"{split}.de.gz").is_file()
                                                for split in ("train", "val"))),
    reason=f"needs Multi30k: set ${data.MIRROR_ENV} to a mirror folder, or fetch it once online")


TRANSLATOR_MAX_BYTES = 10_000_000


@pytest.fixture(scope="module")
def one_sequence_translator():
    return load_language_model("translator")


def test_the_translator_folder_is_intact_and_under_10_mb():
    folder = PRETRAINED_ROOT / TRANSLATOR_FOLDER
    assert sorted(p.name for p in folder.iterdir()) == ["model.pt", "provenance.json", "tokenizer.model"]
    assert sum(p.stat().st_size for p in folder.iterdir()) < TRANSLATOR_MAX_BYTES
    saved = torch.load(folder / "model.pt", map_location="cpu", weights_only=True)
    assert saved["weights"]["embed.weight"].dtype == torch.int8 and "embed.weight" in saved["int8_row_scales"]


def test_the_translator_matches_the_encoder_decoder_in_size_and_recipe(one_sequence_translator):
    from course_lib.train import load_pretrained
    from course_lib.transformer import count_parameters

    model, tokenizer, provenance = one_sequence_translator
    encoder_decoder, ed_tokenizer, ed_provenance = load_pretrained()
    assert model.causal and model.config["num_layers"] == TRANSLATOR_SIZES["num_layers"]
    assert provenance["sizes"] == TRANSLATOR_SIZES and provenance["parameters"] == count_parameters(model)
    assert abs(count_parameters(model) / count_parameters(encoder_decoder) - 1) < 0.01
    assert tokenizer.sha256 == ed_tokenizer.sha256 == provenance["tokenizer"]["sha256"]
    recipe = ed_provenance["recipe"]
    for key in ("lr", "warmup_steps", "label_smoothing", "weight_decay", "betas", "seed"):
        assert provenance["training"][key] == recipe[key], key
    assert provenance["training"]["final_lr_fraction"] == recipe["final_lr_fraction"]
    assert provenance["data"]["pair_max_len"] == recipe["max_len"]
    assert provenance["training"]["steps"] == len(provenance["epochs"]) * provenance["updates_per_epoch"]
    assert provenance["val_greedy"]["signature"].startswith("nrefs:1|case:mixed|eff:no|tok:13a")
    assert not model.training


@needs_multi30k
def test_the_recorded_bleu_holds_for_the_shipped_weights(one_sequence_translator):
    from course_lib.data import load_split
    from course_lib.families import encode_translation_pairs, translate_in_one_sequence
    from course_lib.train import bleu_with_signature

    model, tokenizer, provenance = one_sequence_translator
    vocab = Vocabulary.of(tokenizer)
    val_pairs = load_split("val")
    hypotheses = translate_in_one_sequence(model, tokenizer, vocab, [de for de, _ in val_pairs])
    score = bleu_with_signature(hypotheses, [en for _, en in val_pairs])
    assert score["bleu"] == pytest.approx(provenance["val_greedy"]["bleu"], abs=0.3)
    assert score["signature"] == provenance["val_greedy"]["signature"]
    val = encode_translation_pairs(tokenizer, val_pairs, vocab)
    assert perplexity(model, val, sep_id=vocab.sep_id) == pytest.approx(provenance["val_ppl"], rel=0.01)


def test_the_translator_translates(one_sequence_translator):
    from course_lib.families import translate_in_one_sequence

    model, tokenizer, _ = one_sequence_translator
    out = translate_in_one_sequence(model, tokenizer, Vocabulary.of(tokenizer),
                                    ["Ein Hund rennt über eine Wiese.", "Zwei Männer spielen Fußball."])
    assert "dog" in out[0] and "men" in out[1].lower()
