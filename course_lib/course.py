"""The course map: every notebook, the concept it builds and what to read first.

This table is the single source of truth for the order of the series: notebook 00 draws
it as a figure, the README lists it, and the tests check that the files in
``notebooks/`` and the README agree with it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

#: The repository's ``notebooks/`` folder (the package is installed in editable mode).
NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"


@dataclass(frozen=True)
class Notebook:
    """One notebook of the series."""

    number: int
    slug: str
    title: str
    concept: str  # what the learner builds there, in a few words
    needs: tuple[int, ...]  # notebooks to read first (direct prerequisites only)
    part: str
    #: It trains or samples something: both magnify the last bits in which another CPU's rounding can
    #: differ. The test suite runs such a notebook a second time on another kernel path
    #: (course_lib.authoring.notebooks.second_kernel_path).
    amplifies_rounding: bool = False
    #: Whether that second run also puts MKL on its CPU-independent code path (``MKL_CBWR``), which changes
    #: how matrix products add up but makes them about 3 times slower. The translation notebooks spend
    #: most of their time in the translator's large products, and notebook 13 in training its language
    #: models, so there it would double the run (see course_lib.authoring.notebooks.second_kernel_path);
    #: they keep torch's plain kernels only.
    second_path_mkl: bool = True

    @property
    def filename(self) -> str:
        return f"{self.number:02d}_{self.slug}.ipynb"

    @property
    def path(self) -> Path:
        return NOTEBOOK_DIR / self.filename

    @property
    def available(self) -> bool:
        """Whether the notebook has been written yet."""
        return self.path.exists()


PARTS = ("Foundations", "Attention", "The architecture", "Translation", "Beyond translation")

NOTEBOOKS: tuple[Notebook, ...] = (
    Notebook(0, "start_here", "Start here", "notation, set-up, exercises", (), PARTS[0]),
    Notebook(1, "key_value_retrieval", "Key–value retrieval", "lookup as a weighted average", (0,), PARTS[0]),
    Notebook(2, "similarity_functions", "Similarity functions", "scoring a query against keys", (1,), PARTS[0]),
    Notebook(3, "softmax", "Softmax", "from scores to weights", (2,), PARTS[0]),
    Notebook(4, "attention", "Attention", "scaled dot-product attention", (3,), PARTS[1],
             amplifies_rounding=True),
    Notebook(5, "positional_encoding", "Positional encoding", "telling positions apart", (4,), PARTS[1]),
    Notebook(6, "masking", "Masking", "padding and causal masks", (4,), PARTS[1]),
    Notebook(7, "multi_head_attention", "Multi-head attention", "several heads in parallel", (6,), PARTS[2],
             amplifies_rounding=True),
    Notebook(8, "transformer_block", "The transformer block", "norm, residual, feed-forward", (7,), PARTS[2],
             amplifies_rounding=True),
    Notebook(9, "encoder_decoder", "Encoder–decoder", "the whole Transformer", (5, 8), PARTS[2],
             amplifies_rounding=True),
    Notebook(10, "translation_data", "Translation data", "Multi30k, subwords, batches", (6,), PARTS[3]),
    Notebook(11, "training_translation", "Training the translator", "the training recipe", (9, 10), PARTS[3],
             amplifies_rounding=True, second_path_mkl=False),
    Notebook(12, "decoding_and_evaluation", "Decoding and evaluation", "beam search, BLEU", (11,), PARTS[3],
             amplifies_rounding=True, second_path_mkl=False),
    Notebook(13, "model_families", "Model families", "GPT and BERT from one block", (12,), PARTS[4],
             amplifies_rounding=True, second_path_mkl=False),
    Notebook(14, "attention_at_scale", "Attention at scale", "cost, memory, KV cache", (12,), PARTS[4]),
)


def get_notebook(key: int | str) -> Notebook:
    """Find a notebook by number (``4``), two-digit prefix (``"04"``), slug or filename."""
    for nb in NOTEBOOKS:
        if key in (nb.number, nb.slug, nb.filename, nb.filename.removesuffix(".ipynb")):
            return nb
        if isinstance(key, str) and key.isdigit() and int(key) == nb.number:
            return nb
    known = ", ".join(f"{nb.number:02d}_{nb.slug}" for nb in NOTEBOOKS)
    raise KeyError(f"no notebook {key!r} in the course; known: {known}")
