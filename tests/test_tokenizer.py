"""course_lib.tokenizer: word statistics, BPE from scratch, the SentencePiece tokenizer and its cache."""
import hashlib
import os
import random
import re
from collections import Counter

import pytest
import sentencepiece as spm
import torch

from course_lib import data, tokenizer
from course_lib.tokenizer import (BOS_ID, EOS_ID, PAD_ID, UNK_ID, WORD_START, Tokenizer, apply_bpe, count_pairs,
                                  learn_bpe, load_tokenizer, merge_pair, plot_segmentation, spell, split_words,
                                  train_sentencepiece, unknown_rate, word_vocabulary)

W = WORD_START

# --- words -----------------------------------------------------------------------------------------


def test_split_words_separates_punctuation_and_keeps_umlauts():
    assert split_words("Two dogs, running.") == ["Two", "dogs", ",", "running", "."]
    assert split_words("Ein Mädchen läuft  über die Straße!") == ["Ein", "Mädchen", "läuft", "über", "die",
                                                                  "Straße", "!"]
    assert split_words("A man's hat") == ["A", "man", "'", "s", "hat"]
    assert split_words("") == [] and split_words("   ") == []


def test_split_words_refuses_non_strings():
    with pytest.raises(TypeError, match="str"):
        split_words(["a", "b"])


def test_word_vocabulary_counts_and_filters():
    sentences = ["A dog runs.", "A dog sits.", "The cat runs"]
    assert word_vocabulary(sentences) == Counter({"A": 2, "dog": 2, "runs": 2, ".": 2, "sits": 1, "The": 1,
                                                  "cat": 1})
    assert word_vocabulary(sentences, min_count=2) == Counter({"A": 2, "dog": 2, "runs": 2, ".": 2})
    assert word_vocabulary(["A a a"], lowercase=True) == Counter({"a": 3})
    assert word_vocabulary([]) == Counter()


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2"])
def test_word_vocabulary_refuses_a_bad_min_count(bad):
    with pytest.raises(ValueError, match="min_count"):
        word_vocabulary(["a"], min_count=bad)


def test_unknown_rate():
    # 6 words: "A", "zebra", "runs", ".", "A", "dog" -> "zebra" unknown
    assert unknown_rate(["A zebra runs.", "A dog"], {"A", "runs", ".", "dog"}) == pytest.approx(1 / 6)
    assert unknown_rate(["A dog"], set()) == 1.0
    assert unknown_rate([], {"a"}) == 0.0 and unknown_rate(["", " "], {"a"}) == 0.0
    assert unknown_rate(["A Dog"], {"a", "dog"}) == 1.0
    assert unknown_rate(["A Dog"], {"a", "dog"}, lowercase=True) == 0.0


# --- BPE building blocks ---------------------------------------------------------------------------

def test_spell_marks_the_first_character():
    assert spell("dog") == (W + "d", "o", "g")
    assert spell("a") == (W + "a",)
    assert spell("Straße") == (W + "S", "t", "r", "a", "ß", "e")


@pytest.mark.parametrize("bad", ["", "a b", "tab\there", None, 3])
def test_spell_refuses_non_words(bad):
    with pytest.raises(ValueError, match="non-empty string without spaces"):
        spell(bad)


def test_count_pairs_weights_by_count_and_stays_inside_words():
    vocab = {(W + "m", "a", "n"): 6, (W + "w", "o", "m", "a", "n"): 3, (W + "b", "a", "n", "a", "n", "a"): 2,
             (W + "a",): 9}
    before = dict(vocab)
    assert count_pairs(vocab) == Counter({(W + "m", "a"): 6, ("a", "n"): 6 + 3 + 2 * 2, (W + "w", "o"): 3,
                                          ("o", "m"): 3, ("m", "a"): 3, (W + "b", "a"): 2, ("n", "a"): 2 * 2})
    assert vocab == before
    assert count_pairs({}) == Counter()
    assert count_pairs({("a", "a", "a"): 1}) == Counter({("a", "a"): 2})  # overlapping pairs both count


def test_merge_pair_left_to_right_without_overlap():
    assert merge_pair((W + "m", "a", "n"), ("a", "n")) == (W + "m", "an")
    assert merge_pair(("a", "a", "a"), ("a", "a")) == ("aa", "a")
    assert merge_pair(("a", "a", "a", "a"), ("a", "a")) == ("aa", "aa")
    assert merge_pair(("b", "a", "n", "a", "n", "a"), ("a", "n")) == ("b", "an", "an", "a")
    assert merge_pair(("x", "y"), ("a", "n")) == ("x", "y")
    assert merge_pair((), ("a", "n")) == ()
    symbols = ["a", "n", "d"]
    assert merge_pair(symbols, ("a", "n")) == ("an", "d") and symbols == ["a", "n", "d"]  # input unchanged
    # a pair of multi-character symbols joins them exactly, no matter what they spell
    assert merge_pair((W + "wom", "an", "an"), (W + "wom", "an")) == (W + "woman", "an")


# --- learn_bpe / apply_bpe -------------------------------------------------------------------------

# The notebook's toy corpus; the merges worked out by hand:
#  1 (a, n)      a n in man 6 + woman 3 + many 1 = 10
#  2 (▁m, an)    man 6 + many 1 = 7
#  3 (e, n)      men 4 + women 2 = 6
#  4 (o, m)      a tie with (▁w, o), both 5 (woman 3 + women 2); "o" < "▁w" alphabetically
#  5 (▁w, om)    5
#  6 (▁m, en)    men 4
#  7 (▁wom, an)  woman 3
#  8 (▁wom, en)  women 2
#  9 (▁man, y)   many 1; then every word is one symbol
TOY = {"man": 6, "men": 4, "woman": 3, "women": 2, "many": 1}
TOY_MERGES = [("a", "n"), (W + "m", "an"), ("e", "n"), ("o", "m"), (W + "w", "om"), (W + "m", "en"),
              (W + "wom", "an"), (W + "wom", "en"), (W + "man", "y")]


def test_learn_bpe_on_a_hand_worked_corpus():
    assert learn_bpe(TOY, 9) == TOY_MERGES
    assert learn_bpe(TOY, 4) == TOY_MERGES[:4]


def test_learn_bpe_stops_early_and_zero_merges():
    assert learn_bpe(TOY, 100) == TOY_MERGES  # 9: no pair is left
    assert learn_bpe(TOY, 0) == []
    assert learn_bpe({"a": 5, "b": 1}, 3) == []  # one-letter words have no pairs at all
    assert learn_bpe({}, 3) == []


def test_learn_bpe_breaks_ties_alphabetically_not_by_order():
    assert learn_bpe({"cd": 1, "ab": 1}, 1) == [(W + "a", "b")]
    assert learn_bpe({"ab": 1, "cd": 1}, 2) == [(W + "a", "b"), (W + "c", "d")]
    assert learn_bpe({"xy": 1, "zy": 2}, 1) == [(W + "z", "y")]  # the count wins over the alphabet


def test_learn_bpe_weights_words_by_count_and_accepts_a_list_of_words():
    assert learn_bpe({"ab": 1, "cd": 5}, 1) == [(W + "c", "d")]
    assert learn_bpe(["ab", "cd", "cd"], 2) == learn_bpe({"ab": 1, "cd": 2}, 2) == [(W + "c", "d"), (W + "a", "b")]


@pytest.mark.parametrize("counts, num_merges, match", [
    (TOY, -1, "num_merges"), (TOY, 1.5, "num_merges"), (TOY, True, "num_merges"),
    ({"ab": 0}, 1, "positive int"), ({"ab": -2}, 1, "positive int"), ({"ab": 1.0}, 1, "positive int"),
    ({"a b": 1}, 1, "without spaces"), ({"": 1}, 1, "non-empty"),
])
def test_learn_bpe_refuses_bad_input(counts, num_merges, match):
    with pytest.raises(ValueError, match=match):
        learn_bpe(counts, num_merges)


def _naive_learn_bpe(word_counts, num_merges):
    """The textbook loop: recount every pair each round (independent of the library's heap)."""
    vocab = {spell(w): c for w, c in word_counts.items()}
    merges = []
    for _ in range(num_merges):
        pairs = Counter()
        for symbols, c in vocab.items():
            for i in range(len(symbols) - 1):
                pairs[symbols[i], symbols[i + 1]] += c
        if not pairs:
            break
        top = max(pairs.values())
        best = sorted(p for p, n in pairs.items() if n == top)[0]
        merges.append(best)
        new = {}
        for symbols, c in vocab.items():
            out, i = [], 0
            while i < len(symbols):
                if tuple(symbols[i:i + 2]) == best:
                    out.append(best[0] + best[1])
                    i += 2
                else:
                    out.append(symbols[i])
                    i += 1
            new[tuple(out)] = c
        vocab = new
    return merges


def test_learn_bpe_equals_the_textbook_loop_on_random_corpora():
    rng = random.Random(10)
    for _ in range(60):
        words = {"".join(rng.choice("aabn" + W) for _ in range(rng.randint(1, 8))): rng.randint(1, 6)
                 for _ in range(rng.randint(1, 15))}
        k = rng.randint(0, 40)
        assert learn_bpe(words, k) == _naive_learn_bpe(words, k), (words, k)


def test_apply_bpe_replays_the_merges():
    for word in TOY:
        assert apply_bpe(word, TOY_MERGES) == [W + word]
    assert apply_bpe("manly", TOY_MERGES) == [W + "man", "l", "y"]  # unseen: known pieces + characters
    assert apply_bpe("omen", TOY_MERGES) == [W + "o", "m", "en"]  # (o, m) does not apply to ▁o
    assert apply_bpe("Mann", TOY_MERGES) == [W + "M", "an", "n"]
    assert apply_bpe("zebra", TOY_MERGES) == [W + "z", "e", "b", "r", "a"]
    assert apply_bpe("men", []) == [W + "m", "e", "n"]
    assert apply_bpe("x", TOY_MERGES) == [W + "x"]
    # the order of the merges matters: with (▁m, a) before (a, n), "man" ends as ▁ma n
    assert apply_bpe("man", [(W + "m", "a"), ("a", "n")]) == [W + "ma", "n"]
    # merges read back from JSON are lists, not tuples
    assert apply_bpe("women", [list(m) for m in TOY_MERGES]) == [W + "women"]


def test_apply_bpe_refuses_non_words():
    with pytest.raises(ValueError):
        apply_bpe("two words", TOY_MERGES)


# --- SentencePiece -----------------------------------------------------------------------------------

_WORDS = ("der die das ein eine Hund Katze Kinder läuft springt über den Zaun im Park . "
          "a the dog cat children runs jumps over fence in park").split()


def _corpus(n=300, seed=0):
    rng = random.Random(seed)
    return [" ".join(rng.choice(_WORDS) for _ in range(rng.randint(3, 9))) for _ in range(n)]


@pytest.fixture(scope="module")
def small():
    return train_sentencepiece(_corpus(), vocab_size=60)


def test_train_sentencepiece_is_deterministic_and_has_the_special_ids(small):
    again = train_sentencepiece(_corpus(), vocab_size=60)
    assert again.model_proto == small.model_proto and again.sha256 == small.sha256
    assert small.vocab_size == len(small) == 60
    assert [small.id_to_piece(i) for i in range(4)] == ["<pad>", "<s>", "</s>", "<unk>"]
    assert (small.pad_id, small.bos_id, small.eos_id, small.unk_id) == (PAD_ID, BOS_ID, EOS_ID, UNK_ID) == (0, 1, 2, 3)
    assert small.sha256 == hashlib.sha256(small.model_proto).hexdigest()
    other = train_sentencepiece(_corpus(seed=1), vocab_size=60)
    assert other.model_proto != small.model_proto  # different text, different model


@pytest.mark.parametrize("sentences, vocab_size, match", [
    (["a b"], 7, "vocab_size"), (["a b"], 60.0, "vocab_size"), ([], 60, "non-empty"),
    (["a", 3], 60, "list of str"),
])
def test_train_sentencepiece_refuses_bad_input(sentences, vocab_size, match):
    with pytest.raises(ValueError, match=match):
        train_sentencepiece(sentences, vocab_size)


def test_encode_decode_pieces(small):
    text = "ein Hund springt über den Zaun ."
    ids = small.encode(text)
    assert all(isinstance(i, int) and 4 <= i < 60 for i in ids)  # no BOS/EOS added, nothing unknown
    assert small.decode(ids) == text
    assert "".join(small.pieces(text)).replace(W, " ").strip() == text
    assert [small.id_to_piece(i) for i in ids] == small.pieces(text)
    assert small.encode_batch([text, "a dog"]) == [ids, small.encode("a dog")]
    assert small.encode_batch([]) == []
    assert UNK_ID in small.encode("ein Xylophon")  # X, y, o, p never occur in the corpus


def test_decode_skips_pad_and_bos_and_stops_at_eos(small):
    ids = small.encode("a dog runs")
    assert small.decode([BOS_ID] + ids + [EOS_ID, PAD_ID, PAD_ID]) == "a dog runs"
    assert small.decode(ids + [EOS_ID] + small.encode("the cat")) == "a dog runs"
    assert small.decode([EOS_ID] + ids) == "" and small.decode([]) == ""


def test_encode_refuses_a_list(small):
    with pytest.raises(TypeError, match="encode_batch"):
        small.encode(["a dog"])


def test_encode_batch_and_decode_name_bad_input(small):
    with pytest.raises(TypeError, match="encode_batch takes a list of str"):
        small.encode_batch("a dog")
    with pytest.raises(TypeError, match=r"texts\[1\]: expected a str, got NoneType"):
        small.encode_batch(["a dog", None])
    with pytest.raises(ValueError, match=rf"decode: token ids must lie in 0..{small.vocab_size - 1}.*got {small.vocab_size}"):
        small.decode([5, small.vocab_size])  # sentencepiece's own error was "piece id is out of range"
    with pytest.raises(ValueError, match="got -1"):
        small.decode([-1])
    with pytest.raises(TypeError, match="decode takes int token ids, got a torch.float32 tensor"):
        small.decode(torch.tensor([5.0, 6.0]))
    assert small.decode(torch.tensor([5, 6])) == small.decode([5, 6])


def test_unknown_pieces_names_text_the_vocabulary_cannot_spell(small):
    assert small.unknown_pieces("") == []
    text = "a 你好 dog 😀"
    pieces = small.unknown_pieces(text)
    assert "你好" in pieces and "😀" in pieces
    assert UNK_ID in small.encode(text)
    assert small.unknown_pieces("a dog runs") == [] and UNK_ID not in small.encode("a dog runs")


def test_save_and_load_round_trip(small, tmp_path):
    path = small.save(tmp_path / "sub" / "model.model")
    assert path.read_bytes() == small.model_proto
    assert [p.name for p in path.parent.iterdir()] == ["model.model"]  # no temporary file left
    loaded = Tokenizer.from_file(path)
    assert loaded.sha256 == small.sha256 and loaded.encode("a dog") == small.encode("a dog")
    assert re.fullmatch(r"Tokenizer\(vocab_size=60, sha256=[0-9a-f]{12}…\)", repr(small))


def test_tokenizer_rejects_a_model_with_other_special_ids(tmp_path):
    import io
    model = io.BytesIO()  # SentencePiece's defaults: <unk> 0, <s> 1, </s> 2, no <pad>
    spm.SentencePieceTrainer.train(sentence_iterator=iter(_corpus()), model_writer=model, vocab_size=60,
                                   model_type="bpe", minloglevel=2, num_threads=1)
    with pytest.raises(ValueError, match="expects 3"):
        Tokenizer(model.getvalue())


@pytest.mark.parametrize("bad", [b"", "text", None, b"not a sentencepiece model"])
def test_tokenizer_rejects_what_is_not_a_model(bad):
    with pytest.raises((ValueError, RuntimeError, TypeError)):
        Tokenizer(bad)


# --- load_tokenizer: the cache ------------------------------------------------------------------------

@pytest.fixture
def fake_multi30k(monkeypatch):
    """load_tokenizer reads ``course_lib.data.load_split("train")``: give it a small corpus."""
    corpus = _corpus(200, seed=3)
    pairs = list(zip(corpus[::2], corpus[1::2]))
    calls = []

    def fake_load_split(split, *args, **kwargs):
        calls.append(split)
        return pairs

    monkeypatch.setattr(data, "load_split", fake_load_split)
    return pairs, calls


def test_load_tokenizer_trains_once_then_loads_from_the_cache(fake_multi30k, tmp_path, monkeypatch, capsys):
    pairs, calls = fake_multi30k
    first = load_tokenizer(vocab_size=50, cache_dir=tmp_path, verbose=True)
    assert calls == ["train"]
    sentences = [s for pair in pairs for s in pair]
    digest = hashlib.sha256("".join(s + "\n" for s in sentences).encode("utf-8")).hexdigest()[:12]
    [path] = list(tmp_path.iterdir())
    assert path.name == f"multi30k_bpe50_{digest}.model"
    assert first.vocab_size == 50 and path.read_bytes() == first.model_proto
    assert first.model_proto == train_sentencepiece(sentences, 50).model_proto  # both sides of each pair
    assert "trained on 200 sentences" in capsys.readouterr().out

    def no_training(*args, **kwargs):
        raise AssertionError("the cached model should have been used")

    monkeypatch.setattr(tokenizer, "train_sentencepiece", no_training)
    second = load_tokenizer(vocab_size=50, cache_dir=tmp_path, verbose=True)
    assert second.sha256 == first.sha256
    assert "loaded" in capsys.readouterr().out


def test_load_tokenizer_retrains_over_a_corrupt_cache_file(fake_multi30k, tmp_path):
    good = load_tokenizer(vocab_size=50, cache_dir=tmp_path)
    [path] = list(tmp_path.iterdir())
    path.write_bytes(b"garbage, not a model")
    again = load_tokenizer(vocab_size=50, cache_dir=tmp_path)
    assert again.sha256 == good.sha256 and path.read_bytes() == good.model_proto


def test_load_tokenizer_keeps_sizes_and_corpora_apart(fake_multi30k, tmp_path, monkeypatch):
    load_tokenizer(vocab_size=50, cache_dir=tmp_path)
    load_tokenizer(vocab_size=40, cache_dir=tmp_path)
    other = _corpus(100, seed=4)
    monkeypatch.setattr(data, "load_split", lambda split, *a, **k: list(zip(other[::2], other[1::2])))
    load_tokenizer(vocab_size=50, cache_dir=tmp_path)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert len(names) == 3 and sum(n.startswith("multi30k_bpe50_") for n in names) == 2


def test_load_tokenizer_on_one_language_trains_on_that_side_only(fake_multi30k, tmp_path):
    pairs, _ = fake_multi30k
    english = load_tokenizer(vocab_size=40, cache_dir=tmp_path, languages=("en",))
    assert english.model_proto == train_sentencepiece([en for _, en in pairs], 40).model_proto
    assert [p.name.startswith("multi30k_en_bpe40_") for p in tmp_path.iterdir()] == [True]
    assert load_tokenizer(vocab_size=40, cache_dir=tmp_path, languages=("de", "en")).sha256 != english.sha256
    for wrong in ((), ("fr",), ("en", "en")):
        with pytest.raises(ValueError, match="languages must name"):
            load_tokenizer(vocab_size=40, cache_dir=tmp_path, languages=wrong)


def _real_data_available() -> bool:
    if os.environ.get(data.MIRROR_ENV):
        return True
    cache = data.resolve_cache_dir()
    return all((cache / f"train.{lang}.gz").is_file() for lang in data.LANGUAGES)


@pytest.mark.skipif(not _real_data_available(),
                    reason=f"needs Multi30k: set ${data.MIRROR_ENV} to a mirror folder, or run "
                           f"course_lib.data.load_split('train') once online to fill the cache")
def test_the_course_tokenizer_on_multi30k():
    # Shares the default cache with notebooks 10-12: trained once (about 10 s), then loaded.
    tok = load_tokenizer()
    assert tok.vocab_size == 8000
    assert [tok.id_to_piece(i) for i in range(4)] == ["<pad>", "<s>", "</s>", "<unk>"]
    sentence = "Zwei junge weiße Männer sind im Freien in der Nähe vieler Büsche."
    ids = tok.encode(sentence)
    assert UNK_ID not in ids and tok.decode(ids) == sentence
    assert load_tokenizer().sha256 == tok.sha256


# --- drawing -------------------------------------------------------------------------------------------

def test_plot_segmentation_draws_a_box_per_piece():
    import matplotlib.pyplot as plt
    rows = [("BPE", [W + "Zwei", W + "Hund", "e", "."]), ("SentencePiece", [W + "Zwei", "<unk>"])]
    fig = plot_segmentation(rows, title="two rows")
    ax = fig.axes[0]
    assert len(ax.patches) == 6 and ax.get_title() == "two rows"
    texts = [t.get_text() for t in ax.texts]
    assert "BPE  (4 pieces)" in texts and "SentencePiece  (2 pieces)" in texts and "<unk>" in texts
    unk_box = ax.patches[5]
    assert unk_box.get_facecolor()[:3] != ax.patches[4].get_facecolor()[:3]
    plt.close(fig)
    # a long row wraps onto more lines: a taller figure
    tall = plot_segmentation([("long", [W + "word"] * 60)], width=30)
    assert tall.get_figheight() > plot_segmentation([("short", [W + "word"] * 3)], width=30).get_figheight()
    plt.close("all")
    with pytest.raises(ValueError, match="at least one"):
        plot_segmentation([])
