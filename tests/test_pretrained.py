"""The committed de->en model: intact, small enough, documented, and actually translating."""
import json
import os

import pytest
import torch

from course_lib import data
from course_lib.train import PRETRAINED_DIR, Recipe, build_model, corpus_bleu, load_pretrained, sha256_file
from course_lib.transformer import count_parameters

MAX_BYTES = 20_000_000  # "at most 20 MB"


def _real_data_available() -> bool:
    if os.environ.get(data.MIRROR_ENV):
        return True
    cache = data.resolve_cache_dir()
    return all((cache / f"{split}.{lang}.gz").is_file() for split in data.SPLITS for lang in data.LANGUAGES)


needs_multi30k = pytest.mark.skipif(
    not _real_data_available(),
    reason=f"needs Multi30k: set ${data.MIRROR_ENV} to a mirror folder, or fetch it once online")


@pytest.fixture(scope="module")
def provenance():
    return json.loads((PRETRAINED_DIR / "provenance.json").read_text())


@pytest.fixture(scope="module")
def pretrained():
    return load_pretrained()


def test_the_folder_holds_three_files_within_the_size_limit():
    names = sorted(p.name for p in PRETRAINED_DIR.iterdir())
    assert names == ["model.pt", "provenance.json", "tokenizer.model"]
    total = sum(p.stat().st_size for p in PRETRAINED_DIR.iterdir())
    assert total <= MAX_BYTES, f"the committed model takes {total / 1e6:.1f} MB, more than 20 MB"


def test_every_file_matches_its_recorded_digest_and_size(provenance):
    assert set(provenance["files"]) == {"model.pt", "tokenizer.model"}
    for name, info in provenance["files"].items():
        path = PRETRAINED_DIR / name
        assert sha256_file(path) == info["sha256"], name
        assert path.stat().st_size == info["bytes"], name


def test_provenance_records_how_the_model_was_made(provenance):
    recipe = Recipe.from_dict(provenance["recipe"])
    assert provenance["command"].startswith("python -m course_lib.train ")
    assert "--recipe full" in provenance["command"]
    assert provenance["hardware"] and provenance["torch"]
    assert len(provenance["epochs"]) == recipe.epochs
    assert [e["epoch"] for e in provenance["epochs"]] == list(range(1, recipe.epochs + 1))
    assert provenance["train_seconds_total"] == pytest.approx(sum(e["seconds"] for e in provenance["epochs"]), abs=1)
    for name in ("greedy", "beam4"):
        score = provenance["test_2016_flickr"][name]
        assert 0 < score["bleu"] < 100 and "case:mixed" in score["signature"] and "tok:13a" in score["signature"]
        assert "case:lc" in score["signature_lowercase"]


def test_weights_are_fp16_and_the_output_layer_is_shared():
    saved = torch.load(PRETRAINED_DIR / "model.pt", map_location="cpu", weights_only=True)
    floats = [v for v in saved["weights"].values() if v.is_floating_point()]
    assert floats and all(v.dtype == torch.float16 for v in floats)
    assert "out.weight" not in saved["weights"]


def test_load_pretrained_gives_the_full_recipe_model_in_eval_mode(pretrained, provenance):
    model, tokenizer, loaded = pretrained
    assert loaded == provenance
    assert not model.training
    assert model.out.weight is model.src_embed.weight is model.tgt_embed.weight
    recipe = Recipe.from_dict(provenance["recipe"])
    assert count_parameters(model) == count_parameters(build_model(recipe, tokenizer.vocab_size))
    assert tokenizer.sha256 == provenance["tokenizer_sha256"]


def test_load_pretrained_refuses_a_damaged_file(tmp_path):
    for name in ("model.pt", "tokenizer.model", "provenance.json"):
        (tmp_path / name).write_bytes((PRETRAINED_DIR / name).read_bytes())
    damaged = bytearray((tmp_path / "tokenizer.model").read_bytes())
    damaged[100] ^= 0xFF
    (tmp_path / "tokenizer.model").write_bytes(bytes(damaged))
    with pytest.raises(ValueError, match=r"tokenizer\.model has SHA-256 .* records"):
        load_pretrained(tmp_path)


def test_it_translates_simple_sentences(pretrained):
    from course_lib.decoding import translate

    model, tokenizer, _ = pretrained
    outputs = translate(model, tokenizer, ["Ein Hund rennt durch den Schnee.", "Zwei Männer spielen Fußball."])
    assert "dog" in outputs[0].lower() and "snow" in outputs[0].lower(), outputs[0]
    assert "two men" in outputs[1].lower(), outputs[1]


@needs_multi30k
def test_the_committed_tokenizer_is_the_one_the_course_trains(pretrained):
    from course_lib.tokenizer import load_tokenizer

    assert load_tokenizer().sha256 == pretrained[1].sha256, (
        "retraining the tokenizer on Multi30k gave another model: has the sentencepiece version changed?")


@needs_multi30k
def test_greedy_bleu_on_part_of_the_test_set_is_near_the_recorded_figure(pretrained, provenance):
    from course_lib.decoding import translate

    model, tokenizer, _ = pretrained
    pairs = data.load_split("test_2016_flickr")[:200]
    hypotheses = translate(model, tokenizer, [de for de, _ in pairs])
    bleu, _ = corpus_bleu(hypotheses, [en for _, en in pairs])
    recorded = provenance["test_2016_flickr"]["greedy"]["bleu"]
    # 200 of the 1,000 sentences: a noisy estimate, but a broken model scores near 0.
    assert bleu.score > recorded - 10, (bleu.score, recorded)
