"""Every notebook is also a slideshow: the slide type of each cell, from a few plain rules.

`jupyterlab-rise` presents a notebook as live reveal.js slides. It reads one field per cell,
``cell.metadata["slideshow"]["slide_type"]``: ``"slide"`` starts a new slide, ``"subslide"``
a new slide below the current one (reveal's vertical stack), ``"fragment"`` appears on the
next key press, ``"-"`` continues the current slide, ``"skip"`` is never shown and
``"notes"`` goes to the speaker notes. :func:`plan` chooses that field for every cell; the
first rule that fits decides:

1. the hosted-install cell (see :mod:`course_lib.authoring.hosted`) is skipped;
2. the first cell shown, the notebook's title, opens the title slide;
3. a markdown cell with a ``#`` or ``##`` heading starts a slide: one per section, and the
   ``## Summary`` cell is the recap slide;
4. a markdown cell that introduces an exercise (a heading that says "Exercise" or "Your
   turn", or the cell right above a solution block) starts a "your turn" slide;
5. a code cell holding a solution block is a fragment: the task shows first, and the worked
   answer appears on the next key press;
6. a markdown cell with a ``###`` heading starts a subslide;
7. after an exercise, the first markdown cell that follows its code starts a subslide;
8. a code cell that draws a figure or a widget gets room: when the current slide already
   holds more than :data:`FIGURE_ROOM` lines, a subslide starts with the figure, or with the
   markdown cell right above it when that cell introduces it;
9. a markdown cell starts a subslide when the current slide already holds more than
   :data:`SLIDE_LINES` lines, so that no slide grows far past a screen;
10. every other cell continues the current slide, except the cell right after a "Predict first"
    prompt: it starts a subslide, so that the prompt and what answers it are separate slides.

"Lines" are estimated: source lines plus output lines, with :data:`IMAGE_LINES` for a
figure. :func:`apply` changes only metadata: sources and outputs stay exactly as they are, so
the stored outputs (and nbval) are unaffected. So that a section never starts in the middle of
a slide, :func:`split_at_headings` first gives every heading a markdown cell of its own (the
text is unchanged, and code cells are untouched). ``python -m course_lib.authoring slides``
does both to the notebooks; ``run`` splits before executing and applies the rules after.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import nbformat

from course_lib.authoring.hosted import is_install_cell
from course_lib.authoring.student import BEGIN

SLIDE_TYPES = ("slide", "subslide", "fragment", "-", "skip", "notes")

#: A slide holding more estimated lines than this starts a subslide at its next markdown cell.
SLIDE_LINES = 40
#: A figure moves to a subslide of its own when the slide above it holds more lines than this.
FIGURE_ROOM = 12
#: The height of a figure or a widget, in lines of text.
IMAGE_LINES = 20

#: Notebook-level settings for jupyterlab-rise (it reads ``nb.metadata["rise"]`` over its own
#: settings): slides taller than the screen scroll, content starts at the top instead of the
#: middle (so it does not jump while cells run), a light theme that suits code and plots, and
#: no animated transitions.
RISE_SETTINGS = {"scroll": True, "center": False, "theme": "simple", "transition": "none"}

# Why a cell got its slide type; the outline shows these, and the tests look for some of them.
TITLE, SECTION, RECAP, EXERCISE, SOLUTION = "title", "section", "recap", "your turn", "solution"
SUBSECTION, BACK, FIGURE, LONG, HOSTED, CONTINUES = (
    "subsection", "after the exercise", "figure", "long slide", "hosted install", "")
REVEAL = "after a prediction"

_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_FENCE = re.compile(r"^\s*(```|~~~)")
_EXERCISE = re.compile(r"\bexercises?\b|\byour turn\b", re.I)
_PREDICT = re.compile(r"\bpredict first\b", re.I)
_SOLUTION = re.compile(rf"^[ \t]*{re.escape(BEGIN)}\s*$", re.M)
_FIGURE_TYPES = ("image/png", "image/jpeg", "image/svg+xml", "application/vnd.jupyter.widget-view+json")


@dataclass(frozen=True)
class Decision:
    """The slide type of one cell and the rule that chose it."""

    slide_type: str
    reason: str


def headings(markdown: str) -> list[tuple[int, str]]:
    """The ``(level, text)`` of every heading in a markdown source, skipping fenced code blocks."""
    found, fenced = [], False
    for line in markdown.splitlines():
        if _FENCE.match(line):
            fenced = not fenced
        elif not fenced and (match := _HEADING.match(line)):
            found.append((len(match.group(1)), match.group(2)))
    return found


def has_solution(cell: nbformat.NotebookNode) -> bool:
    """Whether a cell is a code cell holding a ``### BEGIN SOLUTION`` block."""
    return cell.cell_type == "code" and bool(_SOLUTION.search(cell.source))


def has_figure(cell: nbformat.NotebookNode) -> bool:
    """Whether a code cell's stored outputs hold an image or a widget."""
    return cell.cell_type == "code" and any(
        kind in output.get("data", {}) for output in cell.get("outputs", []) for kind in _FIGURE_TYPES)


def introduces_exercise(nb: nbformat.NotebookNode, index: int) -> bool:
    """Whether markdown cell ``index`` introduces an exercise (rule 4 of the module docstring)."""
    cell = nb.cells[index]
    if cell.cell_type != "markdown":
        return False
    if any(level >= 2 and _EXERCISE.search(text) for level, text in headings(cell.source)):
        return True
    return index + 1 < len(nb.cells) and has_solution(nb.cells[index + 1])


def height(cell: nbformat.NotebookNode) -> int:
    """A cell's estimated height on a slide, in lines: its source plus its outputs."""
    lines = len(cell.source.splitlines())
    for output in cell.get("outputs", []):
        data = output.get("data", {})
        if any(kind in data for kind in _FIGURE_TYPES):
            lines += IMAGE_LINES
        elif output.get("output_type") == "stream":
            lines += len(output.get("text", "").splitlines())
        elif output.get("output_type") == "error":
            lines += len(output.get("traceback", []))
        else:
            lines += len(data.get("text/plain", "").splitlines())
    return lines


def plan(nb: nbformat.NotebookNode) -> list[Decision]:
    """The slide type of every cell of ``nb``, by the rules of the module docstring."""
    decisions: list[Decision] = []
    seen_title = False
    in_exercise = False  # inside a "your turn" slide...
    exercise_code = False  # ...and past its first code cell
    lines = 0  # estimated height of the current slide or subslide
    previous = None  # index of the previous cell that is shown
    after_prediction = False  # the previous cell shown asks for a prediction

    for i, cell in enumerate(nb.cells):
        levels = [level for level, _ in headings(cell.source)] if cell.cell_type == "markdown" else []
        if is_install_cell(cell):
            decisions.append(Decision("skip", HOSTED))
            continue
        if not seen_title:
            decision, seen_title = Decision("slide", TITLE), True
        elif levels and min(levels) <= 2:
            recap = any(level == 2 and text.strip().lower() == "summary" for level, text in headings(cell.source))
            decision = Decision("slide", RECAP if recap else EXERCISE if introduces_exercise(nb, i) else SECTION)
        elif introduces_exercise(nb, i):
            decision = Decision("slide", EXERCISE)
        elif has_solution(cell):
            decision = Decision("fragment", SOLUTION)
        elif levels:
            decision = Decision("subslide", SUBSECTION)
        elif cell.cell_type == "markdown" and in_exercise and exercise_code:
            decision = Decision("subslide", BACK)
        elif has_figure(cell) and lines > FIGURE_ROOM:
            above = decisions[previous] if previous is not None else None
            if (above is not None and above.slide_type == "-" and nb.cells[previous].cell_type == "markdown"
                    and previous == i - 1):
                decisions[previous] = Decision("subslide", FIGURE)  # the figure and its introduction
                lines = height(nb.cells[previous])
                decision = Decision("-", CONTINUES)
            else:
                decision = Decision("subslide", FIGURE)
        elif cell.cell_type == "markdown" and lines > SLIDE_LINES:
            decision = Decision("subslide", LONG)
        else:
            decision = Decision("-", CONTINUES)
        if after_prediction and decision.slide_type == "-":
            decision = Decision("subslide", REVEAL)
        after_prediction = cell.cell_type == "markdown" and bool(_PREDICT.search(cell.source))

        if decision.slide_type in ("slide", "subslide"):
            lines = 0
            in_exercise, exercise_code = decision.reason == EXERCISE, False
        elif in_exercise and cell.cell_type == "code":
            exercise_code = True
        lines += height(cell)
        decisions.append(decision)
        previous = i
    return decisions


#: Headings down to this level start a cell of their own (see :func:`split_at_headings`).
SPLIT_LEVEL = 3


def _split_markdown(source: str) -> list[str]:
    """``source`` cut before every heading (levels 1 to :data:`SPLIT_LEVEL`) that follows other text."""
    parts: list[list[str]] = [[]]
    fenced = False
    for line in source.splitlines():
        if _FENCE.match(line):
            fenced = not fenced
        match = None if fenced else _HEADING.match(line)
        text_before = any(l.strip() and not _HEADING.match(l) for l in parts[-1])
        if match and len(match.group(1)) <= SPLIT_LEVEL and text_before:
            parts.append([])
        parts[-1].append(line)
    return ["\n".join(part).strip("\n") for part in parts]


def split_at_headings(nb: nbformat.NotebookNode) -> bool:
    """Give every heading a markdown cell of its own, so that each section starts on its own slide.

    A markdown cell that holds text and then a heading (``#`` to ``###``, outside fenced code) is
    cut before the heading; the first part keeps the cell's id and metadata, the others get new
    ids. The text is unchanged, so the notebook reads exactly as before. Only markdown cells
    change, so stored outputs stay valid. Returns whether anything changed.
    """
    taken = {cell.get("id") for cell in nb.cells}
    cells, changed = [], False
    for cell in nb.cells:
        parts = _split_markdown(cell.source) if cell.cell_type == "markdown" else [cell.source]
        if len(parts) == 1:
            cells.append(cell)
            continue
        changed = True
        cell.source = parts[0]
        cells.append(cell)
        for k, part in enumerate(parts[1:], start=1):
            piece = nbformat.v4.new_markdown_cell(part)
            base = f"{cell.get('id') or 'md'}"[:56]
            n = k
            while f"{base}-{n}" in taken:
                n += 1
            piece.id = f"{base}-{n}"
            taken.add(piece.id)
            cells.append(piece)
    nb.cells = cells
    return changed


def apply(nb: nbformat.NotebookNode) -> bool:
    """Write the planned slide types and :data:`RISE_SETTINGS` into ``nb``'s metadata.

    Only metadata changes; other keys of a cell's ``slideshow`` metadata and of the
    notebook's ``rise`` metadata are kept. Returns whether anything changed.
    """
    changed = False
    for cell, decision in zip(nb.cells, plan(nb)):
        slideshow = cell.metadata.setdefault("slideshow", {})
        if slideshow.get("slide_type") != decision.slide_type:
            slideshow["slide_type"] = decision.slide_type
            changed = True
    rise = nb.metadata.setdefault("rise", {})
    for key, value in RISE_SETTINGS.items():
        if rise.get(key) != value:
            rise[key] = value
            changed = True
    return changed


def split_and_apply(nb: nbformat.NotebookNode) -> bool:
    """:func:`split_at_headings`, then :func:`apply`: what ``python -m course_lib.authoring slides`` does."""
    split = split_at_headings(nb)
    return apply(nb) or split


def stored_types(nb: nbformat.NotebookNode) -> list[str | None]:
    """The slide type each cell carries now (None where it has none)."""
    return [cell.get("metadata", {}).get("slideshow", {}).get("slide_type") for cell in nb.cells]


def outline(nb: nbformat.NotebookNode) -> list[str]:
    """One line per cell: slide number, slide type, the rule that chose it and the cell's first line."""
    rows, slide, sub = [], 0, 0
    for cell, decision in zip(nb.cells, plan(nb)):
        if decision.slide_type == "slide":
            slide, sub = slide + 1, 0
        elif decision.slide_type == "subslide":
            sub += 1
        number = "" if decision.slide_type == "skip" else f"{slide}.{sub}" if sub else f"{slide}"
        first = next((line.strip() for line in cell.source.splitlines() if line.strip()), "")
        rows.append(f"{number:>6}  {decision.slide_type:<9} {decision.reason:<19} "
                    f"{cell.cell_type[:4]}  {first[:70]}")
    return rows
