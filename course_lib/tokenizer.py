"""Subword tokenisation for translation (notebook 10).

Two halves:

* **Byte-pair encoding from scratch**, small enough to read: :func:`learn_bpe` counts adjacent
  symbol pairs in a word-frequency table and merges the most frequent pair, again and again;
  :func:`apply_bpe` replays those merges on a new word. Words are spelt with a leading ``"▁"``
  (the word-start mark SentencePiece uses), so ``"▁the"`` and ``"the"`` inside ``"other"`` differ.
* **The course's real tokenizer**: one SentencePiece BPE model shared by German and English,
  trained on the Multi30k training split (:func:`train_sentencepiece`, :func:`load_tokenizer`).
  Ids 0-3 are reserved: ``PAD_ID = 0``, ``BOS_ID = 1``, ``EOS_ID = 2``, ``UNK_ID = 3``, the same
  PAD/BOS/EOS as the toy tasks of notebook 09.

Word-level statistics for the comparison: :func:`split_words`, :func:`word_vocabulary`,
:func:`unknown_rate`.
"""
from __future__ import annotations

import hashlib
import heapq
import io
import os
import re
from collections import Counter, defaultdict
from pathlib import Path
from typing import Iterable, Sequence

import sentencepiece as spm
import torch

from course_lib.files import write_atomically

PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3
SPECIAL_TOKENS = {"<pad>": PAD_ID, "<s>": BOS_ID, "</s>": EOS_ID, "<unk>": UNK_ID}
#: The word-start mark of SentencePiece, also used by the from-scratch BPE.
WORD_START = "\u2581"
#: The shared vocabulary size of the course's translation model.
DEFAULT_VOCAB_SIZE = 8000
ROOT = Path(__file__).resolve().parent.parent
TOKENIZER_CACHE = ROOT / "data" / "cache" / "tokenizer"

_WORD = re.compile(r"\w+|[^\w\s]", re.UNICODE)


# --- words ---------------------------------------------------------------------------------------

def split_words(text: str) -> list[str]:
    """Split on spaces and punctuation: ``"Two dogs, running."`` -> ``["Two", "dogs", ",", "running", "."]``."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    return _WORD.findall(text)


def word_vocabulary(sentences: Iterable[str], min_count: int = 1, lowercase: bool = False) -> Counter:
    """Word counts over ``sentences``, keeping words seen at least ``min_count`` times."""
    if not isinstance(min_count, int) or min_count < 1:
        raise ValueError(f"min_count must be a positive int, got {min_count!r}")
    counts = Counter(w for s in sentences for w in split_words(s.lower() if lowercase else s))
    return Counter({w: c for w, c in counts.items() if c >= min_count})


def unknown_rate(sentences: Iterable[str], vocabulary: Iterable[str], lowercase: bool = False) -> float:
    """Fraction of the words in ``sentences`` that are not in ``vocabulary`` (0.0 for no words)."""
    known = set(vocabulary)
    total = unknown = 0
    for s in sentences:
        for w in split_words(s.lower() if lowercase else s):
            total += 1
            unknown += w not in known
    return unknown / total if total else 0.0


# --- byte-pair encoding from scratch -------------------------------------------------------------

def spell(word: str) -> tuple[str, ...]:
    """A word as BPE's starting symbols, its characters with ``"▁"`` on the first:
    ``spell("dog")`` -> ``("▁d", "o", "g")``.

    Raises:
        ValueError: ``word`` is empty or contains white space.
    """
    if not isinstance(word, str) or not word or any(ch.isspace() for ch in word):
        raise ValueError(f"a word must be a non-empty string without spaces, got {word!r}")
    return (WORD_START + word[0],) + tuple(word[1:]) if len(word) > 1 else (WORD_START + word,)


def count_pairs(vocab: dict[tuple[str, ...], int]) -> Counter:
    """How often each pair of adjacent symbols occurs, each word weighted by its count.

    ``count_pairs({("▁a", "n", "a", "n"): 3})`` -> ``Counter({("▁a", "n"): 3, ("n", "a"): 3, ("a", "n"): 3})``.
    Pairs never straddle two words; a pair that occurs twice in a word counts twice.

    Args:
        vocab: ``{symbols of a word: count}``, e.g. ``{("▁m", "a", "n"): 6}``.
    """
    pairs: Counter = Counter()
    for symbols, count in vocab.items():
        for a, b in zip(symbols, symbols[1:]):
            pairs[a, b] += count
    return pairs


def merge_pair(symbols: Sequence[str], pair: tuple[str, str]) -> tuple[str, ...]:
    """Replace every occurrence of ``pair`` in ``symbols`` by one joined symbol, left to right.

    ``merge_pair(("▁m", "a", "n"), ("a", "n"))`` -> ``("▁m", "an")``. Occurrences do not overlap:
    ``merge_pair(("a", "a", "a"), ("a", "a"))`` -> ``("aa", "a")``. The input is not changed.
    """
    first, second = pair
    out: list[str] = []
    i, n = 0, len(symbols)
    while i < n:
        if i + 1 < n and symbols[i] == first and symbols[i + 1] == second:
            out.append(first + second)
            i += 2
        else:
            out.append(symbols[i])
            i += 1
    return tuple(out)


# The names the first version used.
_spell, _pair_counts, _merge = spell, count_pairs, merge_pair


def learn_bpe(word_counts: dict[str, int] | Iterable[str], num_merges: int) -> list[tuple[str, str]]:
    """Learn up to ``num_merges`` byte-pair merges from a word-frequency table.

    Each word starts as its characters, the first one marked with ``"▁"`` (:func:`spell`). Every
    round merges the adjacent pair with the highest total count (:func:`count_pairs`; ties: the
    alphabetically first pair), everywhere (:func:`merge_pair`). Stops early when no pair is left
    (every word is one symbol).

    The result is what recounting every pair each round would give; to be fast enough for a real
    corpus, only the words that hold the merged pair are recounted, and a heap finds the next pair.

    Args:
        word_counts: ``{word: count}``, or an iterable of words (each occurrence counts once).
        num_merges: the number of merges to learn, >= 0.

    Returns:
        The merges in the order learnt, e.g. ``[("▁t", "h"), ("▁th", "e"), ...]``.
    """
    if not isinstance(num_merges, int) or isinstance(num_merges, bool) or num_merges < 0:
        raise ValueError(f"num_merges must be an int >= 0, got {num_merges!r}")
    counts = word_counts if isinstance(word_counts, dict) else Counter(word_counts)
    for word, count in counts.items():
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            raise ValueError(f"the count of {word!r} must be a positive int, got {count!r}")
    words = [spell(w) for w in counts]
    freqs = list(counts.values())
    pairs: Counter = Counter()
    where: dict[tuple[str, str], set[int]] = defaultdict(set)  # pair -> the words that hold it
    for i, symbols in enumerate(words):
        for pair in zip(symbols, symbols[1:]):
            pairs[pair] += freqs[i]
            where[pair].add(i)
    heap = [(-c, pair) for pair, c in pairs.items()]  # (-count, pair): the smallest is the best
    heapq.heapify(heap)
    merges: list[tuple[str, str]] = []
    while len(merges) < num_merges:
        while heap and pairs.get(heap[0][1], 0) != -heap[0][0]:
            heapq.heappop(heap)  # a count that has changed since it was pushed
        if not heap:
            break
        best = heap[0][1]
        merges.append(best)
        changed = set()
        for i in where.pop(best):
            old, count = words[i], freqs[i]
            new = merge_pair(old, best)
            words[i] = new
            before, after = Counter(zip(old, old[1:])), Counter(zip(new, new[1:]))
            for pair in before.keys() | after.keys():
                difference = after[pair] - before[pair]
                if difference:  # only the pairs next to a merged spot change
                    pairs[pair] += difference * count
                    changed.add(pair)
                    if not after[pair]:
                        where[pair].discard(i)
                    elif not before[pair]:
                        where[pair].add(i)
        for pair in changed:
            if pairs[pair] > 0:
                heapq.heappush(heap, (-pairs[pair], pair))
            else:
                del pairs[pair]
                where.pop(pair, None)
    return merges


def apply_bpe(word: str, merges: Sequence[tuple[str, str]]) -> list[str]:
    """Split ``word`` into subwords by replaying ``merges`` in the order they were learnt.

    ``apply_bpe("these", [("▁t", "h"), ("▁th", "e")])`` -> ``["▁the", "s", "e"]``.
    """
    symbols = _spell(word)
    for pair in merges:
        if len(symbols) == 1:
            break
        symbols = _merge(symbols, tuple(pair))
    return list(symbols)


# --- SentencePiece -------------------------------------------------------------------------------

def check_texts(texts: Iterable[str], name: str) -> list[str]:
    """``texts`` as a list in which every element is a str (a TypeError names the first that is not)."""
    texts = list(texts)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"{name}[{i}]: expected a str, got {type(text).__name__}")
    return texts


class Tokenizer:
    """A SentencePiece model with the course's special ids and a stable identity.

    ``encode(text) -> list[int]`` (no BOS/EOS added), ``decode(ids) -> str`` (special ids
    are skipped), ``pieces(text) -> list[str]``. ``sha256`` is the digest of the serialised
    model, so two tokenizers with the same digest split every text the same way.
    """

    def __init__(self, model_proto: bytes):
        if not isinstance(model_proto, (bytes, bytearray)) or not model_proto:
            raise ValueError("model_proto must be the non-empty bytes of a SentencePiece model")
        self.model_proto = bytes(model_proto)
        self.sp = spm.SentencePieceProcessor(model_proto=self.model_proto)
        for piece, expected in SPECIAL_TOKENS.items():
            actual = self.sp.piece_to_id(piece)
            if actual != expected:
                raise ValueError(f"this SentencePiece model gives {piece} the id {actual}; the course "
                                 f"expects {expected} (pad 0, bos 1, eos 2, unk 3)")
        self.sha256 = hashlib.sha256(self.model_proto).hexdigest()

    pad_id, bos_id, eos_id, unk_id = PAD_ID, BOS_ID, EOS_ID, UNK_ID

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "Tokenizer":
        return cls(Path(path).read_bytes())

    @property
    def vocab_size(self) -> int:
        return self.sp.get_piece_size()

    def __len__(self) -> int:
        return self.vocab_size

    def encode(self, text: str) -> list[int]:
        if not isinstance(text, str):
            raise TypeError(f"encode takes a str, got {type(text).__name__}; use encode_batch for a list")
        return self.sp.encode(text, out_type=int)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        if isinstance(texts, str):
            raise TypeError("encode_batch takes a list of str; use encode for a single text")
        return self.sp.encode(check_texts(texts, "texts"), out_type=int)

    def unknown_pieces(self, text: str) -> list[str]:
        """The parts of ``text`` that this vocabulary cannot spell, each encoded as the ``<unk>`` id.

        Characters never seen in training (an emoji, a Chinese word) come out as UNK_ID, and the
        model reads them all as the same token: a translation cannot reproduce them.
        """
        if not isinstance(text, str):
            raise TypeError(f"unknown_pieces takes a str, got {type(text).__name__}")
        pieces, ids = self.sp.encode(text, out_type=str), self.sp.encode(text, out_type=int)
        return [piece.replace("\u2581", " ").strip() for piece, i in zip(pieces, ids) if i == UNK_ID]

    def pieces(self, text: str) -> list[str]:
        return self.sp.encode(text, out_type=str)

    def id_to_piece(self, i: int) -> str:
        return self.sp.id_to_piece(int(i))

    def decode(self, ids: Sequence[int]) -> str:
        """Text for ``ids``; stops at the first EOS and skips PAD and BOS."""
        if isinstance(ids, torch.Tensor) and ids.is_floating_point():
            raise TypeError(f"decode takes int token ids, got a {ids.dtype} tensor")
        ids = [int(i) for i in ids]
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise ValueError(f"decode: token ids must lie in 0..{self.vocab_size - 1} (the vocabulary has "
                             f"{self.vocab_size} pieces), got {bad[0]}: were they made by another tokenizer or model?")
        if EOS_ID in ids:
            ids = ids[:ids.index(EOS_ID)]
        return self.sp.decode([i for i in ids if i not in (PAD_ID, BOS_ID)])

    def save(self, path: str | os.PathLike) -> Path:
        """Write the model file atomically (a temporary file renamed into place)."""
        return write_atomically(path, lambda tmp: Path(tmp).write_bytes(self.model_proto))

    def __repr__(self) -> str:
        return f"Tokenizer(vocab_size={self.vocab_size}, sha256={self.sha256[:12]}…)"


def train_sentencepiece(sentences: Sequence[str], vocab_size: int = DEFAULT_VOCAB_SIZE,
                        model_type: str = "bpe") -> Tokenizer:
    """Train a SentencePiece model on ``sentences`` (in memory; single-threaded, so reproducible).

    Every character is kept (``character_coverage=1.0``: German umlauts and ß are few), and ids
    0-3 are PAD, BOS, EOS, UNK. The same sentences in the same order give the same model, byte
    for byte.
    """
    if not isinstance(vocab_size, int) or vocab_size < 8:
        raise ValueError(f"vocab_size must be an int >= 8, got {vocab_size!r}")
    sentences = list(sentences)
    if not sentences or not all(isinstance(s, str) for s in sentences):
        raise ValueError("sentences must be a non-empty list of str")
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences), model_writer=model, vocab_size=vocab_size,
        model_type=model_type, character_coverage=1.0, pad_id=PAD_ID, bos_id=BOS_ID,
        eos_id=EOS_ID, unk_id=UNK_ID, num_threads=1, shuffle_input_sentence=False,
        input_sentence_size=0, minloglevel=2)
    return Tokenizer(model.getvalue())


def _corpus_digest(sentences: Sequence[str]) -> str:
    digest = hashlib.sha256()
    for s in sentences:
        digest.update(s.encode("utf-8") + b"\n")
    return digest.hexdigest()


#: The sides of a Multi30k pair, in their order: German source, English target.
LANGUAGES = ("de", "en")


def load_tokenizer(vocab_size: int = DEFAULT_VOCAB_SIZE, cache_dir: str | os.PathLike | None = None,
                   verbose: bool = False, languages: Sequence[str] = LANGUAGES) -> Tokenizer:
    """The course's shared German+English tokenizer, trained on Multi30k ``train`` and cached.

    ``languages=("en",)`` trains on the English side only (the language models of notebook 13,
    whose smaller vocabulary makes their output layer cheaper). The cache file's name holds the
    languages, the vocabulary size and a digest of the training text, so a different corpus or size
    never picks up a stale model. Training takes about 10 s on 2 cores.
    """
    from course_lib.data import load_split  # here, so the BPE half needs no data module

    languages = tuple(languages)
    if not languages or any(lang not in LANGUAGES for lang in languages) or len(set(languages)) != len(languages):
        raise ValueError(f"languages must name some of {LANGUAGES} once each, got {languages!r}")
    pairs = load_split("train")
    sides = [LANGUAGES.index(lang) for lang in LANGUAGES if lang in languages]
    sentences = [pair[i] for pair in pairs for i in sides]
    folder = Path(cache_dir) if cache_dir is not None else TOKENIZER_CACHE
    prefix = "multi30k" if len(sides) == 2 else f"multi30k_{languages[0]}"
    path = folder / f"{prefix}_bpe{vocab_size}_{_corpus_digest(sentences)[:12]}.model"
    if path.is_file():
        try:
            tokenizer = Tokenizer.from_file(path)
            if verbose:
                print(f"tokenizer: loaded {path.name} from the cache")
            return tokenizer
        except (ValueError, RuntimeError, OSError):
            path.unlink(missing_ok=True)  # unreadable: train it again
    tokenizer = train_sentencepiece(sentences, vocab_size)
    tokenizer.save(path)
    if verbose:
        print(f"tokenizer: trained on {len(sentences):,} sentences, saved as {path.name}")
    return tokenizer


# --- drawing -------------------------------------------------------------------------------------

def plot_segmentation(rows: Sequence[tuple[str, Sequence[str]]], title: str | None = None,
                      width: int = 64):
    """Draw segmentations as boxes, one box per piece, the pieces of one word in one colour.

    Args:
        rows: ``(label, pieces)`` pairs, e.g. ``[("BPE", ["▁Zwei", "▁Hund", "e", "."])]``; a piece
            starting with ``"▁"`` starts a new word (and a new colour). ``"<unk>"``-like pieces
            (in angle brackets) are drawn in red.
        title: the figure's title.
        width: characters per line before the boxes wrap onto the next line.

    Returns:
        The matplotlib Figure.
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyBboxPatch

    if not rows:
        raise ValueError("plot_segmentation needs at least one (label, pieces) row")
    gap, line_h = 0.6, 1.0
    placed, y = [], 0.0  # (x, y, text, colour)
    labels = []
    for label, pieces in rows:
        labels.append((y, f"{label}  ({len(pieces)} pieces)"))
        y += line_h
        x, word = 0.0, -1
        for piece in pieces:
            piece = str(piece)
            if piece.startswith(WORD_START) or word < 0:
                word += 1
            w = max(len(piece), 1) + 0.8
            if x > 0 and x + w > width:
                x, y = 0.0, y + line_h
            special = piece.startswith("<") and piece.endswith(">")
            colour = "#F4B6B6" if special else ("#CFE3F3" if word % 2 == 0 else "#FBE3B8")
            placed.append((x, y, w, piece, colour))
            x += w + gap
        y += line_h * 1.3
    fig, ax = plt.subplots(figsize=(0.125 * (width + 4), 0.34 * y + 0.5))
    for x, yy, w, piece, colour in placed:
        ax.add_patch(FancyBboxPatch((x, yy - 0.36), w, 0.72, boxstyle="round,pad=0.02,rounding_size=0.15",
                                    facecolor=colour, edgecolor="#555555", linewidth=0.6))
        ax.text(x + w / 2, yy, piece, ha="center", va="center", fontsize=9, family="monospace")
    for yy, text in labels:
        ax.text(0, yy, text, ha="left", va="center", fontsize=10, fontweight="bold")
    ax.set_xlim(-0.5, width + 1)
    ax.set_ylim(y - 0.6, -0.8)
    ax.axis("off")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig
