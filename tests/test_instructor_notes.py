"""The instructor notes in instructor/: one file per notebook, built so that a teacher can rely on it.

For every notebook in notebooks/ the test requires ``instructor/NN_slug.md`` with

- the title ``# NN · Title — instructor notes``, the title exactly as in ``course_lib/course.py``;
- the sections "## Timing plan", "## Common mistakes and what the checks say" and
  "## Discussion questions" (with 4 to 6 numbered questions);
- a timing table whose minutes add up to the notebook's own estimate: the ``**Time:**`` line of its
  first cell, read as "about N minutes" (N ± 10%), "N–M minutes" (N to M), in minutes or hours, plus
  any "plus about K minutes" that follows (notebook 11 adds its training time that way);
- at least one quoted check message for every exercise of the notebook;

and ``instructor/README.md`` must list every notebook with a link to its notes.

How a quoted check message is verified. A line ``> ❌ <message>`` claims that the check under one of
the notebook's exercises shows ``<message>`` to a learner. A check names a known mistake when the
learner's answer equals what that mistake would give: each ``Mistake(message, make, hint)`` of
``course_lib/checks`` carries ``make``, the function that computes the mistake's wrong answer from
the check's own inputs. So ``make`` *is* the function of a learner who made that mistake. The test
collects every Mistake of ``course_lib.checks`` (module-level lists of Mistakes, and zero-argument
module functions whose name ends in ``mistakes``, which build the lists that depend on
permutations), requires that the quote equals the message of at least one of them character for
character, then passes that Mistake's ``make``, as the learner's function, to the checks of the
notebook's exercises. At least one check must answer "wrong" with exactly the quote, followed by the
`` (on <test input>)`` that every message gets: the text a learner sees after "❌ Not yet right ·
<exercise>:". So a quote with a typo, a message that was edited in the check, a message of another
notebook's check, or a mistake that an earlier mistake of the same check always shadows (the learner
would never see it) all fail. Three checks compare a derived form of the learner's answer
(``warmup_cosine``: the whole learning-rate curve; ``beam_step``: a (3, K) table of scores, beams and
tokens; ``merge`` of notebook 14: a (T_q, 2 + d_v) table of m, l and acc), so their mistakes compute
that form; ``ADAPTERS`` turns them back into functions with the learner's signature.

Nothing here executes a notebook: exercises are found in the stored notebooks' source (the function
around each ``### BEGIN SOLUTION`` and the ``check_...(function)`` call in the cells after it).
"""
from __future__ import annotations

import ast
import importlib
import inspect
import json
import pkgutil
import re
import warnings
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

import course_lib.checks
from course_lib.checks.core import Mistake, ModuleMistake
from course_lib.course import NOTEBOOK_DIR, get_notebook

ROOT = Path(__file__).resolve().parent.parent
NOTES_DIR = ROOT / "instructor"
PATHS = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
REQUIRED_SECTIONS = ("## Timing plan", "## Common mistakes and what the checks say", "## Discussion questions")
QUOTE = "> ❌ "
pytestmark = pytest.mark.usefixtures("one_thread")  # the checks run tiny tensors: one thread is fastest


def _curve_to_rate(make):
    """warmup_cosine: a mistake computes the whole curve; a learner's function gives one step's rate."""
    return lambda step, total, peak, warmup, final: float(make(total, peak, warmup, final)[step])


def _rows_to_tuple(make):
    """beam_step: a mistake computes a (3, K) table; a learner's function returns (scores, beams, tokens)."""
    return lambda log_probs, beam_scores: tuple(make(log_probs, beam_scores))


def _columns_to_tuple(make):
    """merge (notebook 14): a mistake computes a (T_q, 2 + d_v) table; a learner's returns (m, l, acc)."""
    def merge(*parts):
        table = make(*parts)
        return table[:, 0], table[:, 1], table[:, 2:]
    return merge


def _outputs_to_head(make):
    """SingleHeadAttention: a mistake computes outputs from a head's weights; a learner writes a module."""
    from course_lib.attention import SingleHeadAttention

    class Mistaken(SingleHeadAttention):
        def forward(self, x, context=None, mask=None):
            return make(self, x, context, mask)
    return Mistaken


def _outputs_to_mha(make):
    """MultiHeadAttention: a mistake computes outputs from a layer's weights; a learner writes a module."""
    from course_lib.multihead import MultiHeadAttention

    class Mistaken(MultiHeadAttention):
        def forward(self, query, key=None, value=None, mask=None):
            return make(self, query, key, value, mask)
    return Mistaken


def _outputs_to_block(make):
    """A pre-LN encoder block: a mistake computes the output from a block's weights; a learner writes a module."""
    from course_lib.blocks import EncoderBlock

    class Mistaken(EncoderBlock):
        def __init__(self, d_model, h, d_ff):
            super().__init__(d_model, h, d_ff, dropout=0.0, norm_first=True)

        def forward(self, x, mask=None):
            return make(self, x, mask)
    return Mistaken


# Checks whose mistakes compute a derived form of the answer: check name -> (make -> a learner's function).
ADAPTERS = {"check_warmup_cosine": _curve_to_rate, "check_beam_step": _rows_to_tuple,
            "check_online_softmax_merge": _columns_to_tuple}
# Build exercises: check name -> (a ModuleMistake's make -> a module class that makes that mistake).
MODULE_ADAPTERS = {"check_single_head_attention": _outputs_to_head, "check_multi_head_attention": _outputs_to_mha,
                   "check_encoder_block": _outputs_to_block}

_WORDS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9,
          "ten": 10, "fifteen": 15, "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60,
          "ninety": 90, "an": 1, "a": 1}
_NUMBER = r"(\d+(?:\.\d+)?|" + "|".join(_WORDS) + r")"
_DURATION = re.compile(
    rf"(?P<plus>\bplus\s+)?(?:(?:about|around|roughly|some|up to)\s+)?\b{_NUMBER}"
    rf"(?:\s*(?:–|—|-|to)\s*{_NUMBER})?\s*(?P<unit>minutes?|mins?\b|hours?|h\b)", re.I)


def _number(text: str) -> float:
    return _WORDS[text.lower()] if text.lower() in _WORDS else float(text)


def _notes_path(nb_path: Path) -> Path:
    return NOTES_DIR / (nb_path.stem + ".md")


def _first_cell(nb_path: Path) -> str:
    cells = json.loads(nb_path.read_text(encoding="utf-8"))["cells"]
    return "".join(cells[0]["source"])


def stated_minutes(first_cell: str) -> tuple[float, float, str]:
    """The (lowest, highest) session length a notebook's **Time:** paragraph allows, and the text read.

    The first duration is the session ("about 75 minutes", "60–90 minutes", "1.5 hours"); a later one
    counts only when introduced by "plus" ("plus about 3 minutes of training"). "About N" allows N ± 10%.
    """
    match = re.search(r"\*\*Time:\*\*(.*?)(?:\n\s*\n|\Z)", first_cell, re.S)
    if not match:
        raise AssertionError("the first cell has no **Time:** paragraph")
    text = " ".join(match.group(1).split())
    low = high = 0.0
    found = 0
    for m in _DURATION.finditer(text):
        if found and not m.group("plus"):
            continue  # "Running every cell takes about two minutes": information, not session time
        factor = 60 if m.group("unit").lower().startswith("h") else 1
        a = _number(m.group(2)) * factor
        b = _number(m.group(3)) * factor if m.group(3) else None
        if b is None:
            low, high = low + 0.9 * a, high + 1.1 * a
        else:
            low, high = low + min(a, b), high + max(a, b)
        found += 1
    if not found:
        raise AssertionError(f"cannot read a duration in the **Time:** text {text!r} "
                             "(expected e.g. 'about 45 minutes' or '60–90 minutes')")
    return low, high, text


def _section(notes: str, heading: str) -> str:
    match = re.search(rf"^{re.escape(heading)}[^\n]*\n(.*?)(?=^## |\Z)", notes, re.S | re.M)
    return match.group(1) if match else ""


def timing_minutes(section: str) -> tuple[int, list[str]]:
    """Sum of the minutes column of the first table in the timing section, and any problems found."""
    rows = [line.strip() for line in section.splitlines() if line.strip().startswith("|")]
    if len(rows) < 3:
        return 0, ["the timing plan has no table (a header, a separator and at least one row)"]
    cells = [[c.strip() for c in row.strip("|").split("|")] for row in rows]
    header = [c.lower() for c in cells[0]]
    columns = [i for i, name in enumerate(header) if "min" in name]
    if not columns:
        return 0, [f"the timing table has no minutes column (header: {cells[0]})"]
    col = columns[0]
    total, stated_total, problems = 0, None, []
    for row in cells[2:]:
        if len(row) <= col:
            problems.append(f"timing row {row} has no minutes cell")
            continue
        value = row[col].replace("*", "").strip()
        if not value.isdigit():
            problems.append(f"timing row {row[0]!r}: minutes {row[col]!r} is not a whole number")
            continue
        if "total" in row[0].lower():
            stated_total = int(value)
        else:
            total += int(value)
    if stated_total is not None and stated_total != total:
        problems.append(f"the timing table's total row says {stated_total} minutes, its rows add up to {total}")
    return total, problems


def exercises(nb_path: Path) -> list[tuple[str, str]]:
    """(learner's function, check function name) for each solution block of a stored notebook."""
    cells = [("".join(c["source"]), c["cell_type"]) for c in json.loads(nb_path.read_text(encoding="utf-8"))["cells"]]
    code = [source for source, kind in cells if kind == "code"]
    found = []
    for i, source in enumerate(code):
        marker_lines = [n for n, line in enumerate(source.splitlines(), 1) if line.strip() == "### BEGIN SOLUTION"]
        if not marker_lines:
            continue
        # the top-level function or class around the block: a build exercise is one class
        defined = [node for node in ast.parse(source).body if isinstance(node, (ast.FunctionDef, ast.ClassDef))]
        for line in marker_lines:
            around = [f for f in defined if f.lineno <= line <= f.end_lineno]
            assert around, f"{nb_path.name}: a solution block outside a function (code cell {i})"
            name = around[0].name
            if any(name == seen for seen, _ in found):
                continue  # another method of the same class
            call = re.compile(rf"^(check_\w+)\(\s*{name}\s*\)", re.M)
            later = (call.search(s) for s in code[i + 1:])
            check = next((m.group(1) for m in later if m), None)
            assert check, f"{nb_path.name}: no check_...({name}) call after the exercise {name}"
            found.append((name, check))
    return found


@lru_cache(maxsize=None)
def _check_modules() -> tuple:
    return tuple(importlib.import_module(f"course_lib.checks.{m.name}")
                 for m in pkgutil.iter_modules(course_lib.checks.__path__) if m.name != "core")


@lru_cache(maxsize=None)
def all_mistakes() -> dict[str, list[Mistake]]:
    """Every Mistake of course_lib.checks, by message."""
    by_message: dict[str, list[Mistake]] = {}
    for module in _check_modules():
        for name, obj in vars(module).items():
            if inspect.isfunction(obj) and obj.__module__ == module.__name__ and name.endswith("mistakes") \
                    and not inspect.signature(obj).parameters:
                obj = obj()
            if isinstance(obj, (list, tuple)) and obj and all(isinstance(m, Mistake) for m in obj):
                for mistake in obj:
                    by_message.setdefault(mistake.message, []).append(mistake)
    return by_message


def check_function(name: str):
    owners = [m for m in _check_modules() if inspect.isfunction(getattr(m, name, None))]
    assert len(owners) == 1, f"{name}: found in {len(owners)} modules of course_lib.checks, expected 1"
    return getattr(owners[0], name)


@lru_cache(maxsize=None)
def learner_sees(check_name: str, message: str) -> bool:
    """Whether ``check_name`` shows ``message`` to a learner whose function makes that Mistake."""
    check = check_function(check_name)
    module_check = check_name in MODULE_ADAPTERS
    adapt = {**ADAPTERS, **MODULE_ADAPTERS}.get(check_name, lambda make: make)
    for mistake in all_mistakes().get(message, []):
        if isinstance(mistake, ModuleMistake) != module_check:
            continue  # a function's mistake cannot be a module's, and the other way round
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")  # a wrong answer may overflow: that is the point of it
            result = check(adapt(mistake.make))
        if result.status == "wrong" and (result.message == message or result.message.startswith(message + " (on ")):
            return True
    return False


def quotes(notes: str) -> list[str]:
    return [line[len(QUOTE):].strip() for line in notes.splitlines() if line.startswith(QUOTE)]


@pytest.fixture(params=PATHS, ids=lambda p: p.name)
def notebook(request):
    return request.param


def test_there_are_notebooks_and_notes():
    assert PATHS and NOTES_DIR.is_dir()


def test_notes_have_title_and_sections(notebook):
    path = _notes_path(notebook)
    assert path.exists(), (f"{notebook.name} has no instructor notes: write {path.relative_to(ROOT)} "
                           "(follow the format of the other files in instructor/)")
    notes = path.read_text(encoding="utf-8")
    entry = get_notebook(notebook.name)
    title = f"# {entry.number:02d} · {entry.title} — instructor notes"
    assert notes.splitlines()[0] == title, f"{path.name}: the first line must be {title!r}"
    missing = [s for s in REQUIRED_SECTIONS if not re.search(rf"^{re.escape(s)}", notes, re.M)]
    assert not missing, f"{path.name}: missing sections {missing}"
    questions = re.findall(r"^\d+\. ", _section(notes, "## Discussion questions"), re.M)
    assert 4 <= len(questions) <= 6, f"{path.name}: {len(questions)} numbered discussion questions, expected 4 to 6"


def test_timing_plan_fits_the_stated_time(notebook):
    path = _notes_path(notebook)
    if not path.exists():
        pytest.fail(f"{notebook.name} has no instructor notes ({path.relative_to(ROOT)})")
    low, high, text = stated_minutes(_first_cell(notebook))
    total, problems = timing_minutes(_section(path.read_text(encoding="utf-8"), "## Timing plan"))
    assert not problems, f"{path.name}: " + "; ".join(problems)
    assert low <= total <= high, (f"{path.name}: the timing plan adds up to {total} minutes, but the notebook "
                                  f"says **Time:** {text!r}, so between {low:g} and {high:g} minutes")


def test_notes_quote_the_notebooks_own_time(notebook):
    """Where the notes say "The notebook says **Time:** ...", the durations are the notebook's own."""
    path = _notes_path(notebook)
    if not path.exists():
        pytest.fail(f"{notebook.name} has no instructor notes ({path.relative_to(ROOT)})")
    notes = path.read_text(encoding="utf-8")
    if "**Time:**" not in notes:
        return
    quoted = stated_minutes(notes)
    stated = stated_minutes(_first_cell(notebook))
    assert quoted[:2] == stated[:2], (f"{path.name} quotes **Time:** {quoted[2]!r}, but the notebook says "
                                      f"**Time:** {stated[2]!r}")


def test_quoted_check_messages_are_what_learners_see(notebook):
    path = _notes_path(notebook)
    if not path.exists():
        pytest.fail(f"{notebook.name} has no instructor notes ({path.relative_to(ROOT)})")
    notes = path.read_text(encoding="utf-8")
    found = exercises(notebook)
    covered = {name: 0 for name, _ in found}
    problems = []
    for quote in quotes(notes):
        if quote not in all_mistakes():
            problems.append(f"no Mistake in course_lib/checks has exactly the message {quote!r}")
            continue
        seen_by = [name for name, check in found if learner_sees(check, quote)]
        if not seen_by:
            checks = ", ".join(check for _, check in found) or "none: the notebook has no exercise"
            problems.append(f"no check of this notebook ({checks}) shows {quote!r} to a learner who makes "
                            "that mistake")
        for name in seen_by:
            covered[name] += 1
    problems += [f"the exercise {name} has no quoted check message ('{QUOTE}<message>')"
                 for name, n in covered.items() if n == 0]
    assert not problems, f"{path.name}:\n  " + "\n  ".join(problems)


@pytest.mark.parametrize("time_line, low, high", [
    ("**Time:** about 20 minutes.", 18, 22),
    ("**Time:** 60–90 minutes.", 60, 90),
    ("**Time:** 45 to 60 minutes, plus 10 minutes of training.", 54, 71),
    ("**Time:** about 60 minutes of reading and two exercises, plus about 3 minutes of training.", 56.7, 69.3),
    ("**Time:** about 75 minutes. Running every cell takes about two minutes on a laptop CPU.", 67.5, 82.5),
    ("**Time:** about 1.5 hours.", 81, 99),
])
def test_time_line_forms(time_line, low, high):
    got_low, got_high, _ = stated_minutes(time_line)
    assert (got_low, got_high) == pytest.approx((low, high))


def test_time_line_without_a_duration_fails_clearly():
    with pytest.raises(AssertionError, match="cannot read a duration"):
        stated_minutes("**Time:** an afternoon.")


def test_every_notes_file_belongs_to_a_notebook():
    names = {p.stem for p in PATHS}
    stray = [p.name for p in NOTES_DIR.glob("*.md") if p.name != "README.md" and p.stem not in names]
    assert not stray, f"notes without a notebook in notebooks/: {stray}"


def test_instructor_readme_lists_every_notebook():
    path = NOTES_DIR / "README.md"
    assert path.exists(), "instructor/README.md is missing: it explains how to run a session and lists the notes"
    readme = path.read_text(encoding="utf-8")
    for path in PATHS:
        entry = get_notebook(path.name)
        assert f"({path.stem}.md)" in readme, f"instructor/README.md does not link to {path.stem}.md"
        assert f"{entry.number:02d} · {entry.title}" in readme, (
            f"instructor/README.md does not name {entry.number:02d} · {entry.title}")


def test_instructor_readme_states_each_notebook_time_as_the_notebook_does():
    readme = (NOTES_DIR / "README.md").read_text(encoding="utf-8")
    for path in PATHS:
        entry = get_notebook(path.name)
        row = next(line for line in readme.splitlines() if line.startswith(f"| {entry.number:02d} · "))
        session = re.search(r"\*\*Time:\*\*[^0-9]*(\d+(?:\.\d+)?)", _first_cell(path))
        assert session, f"{path.name}: no **Time:** with a number"
        listed = re.search(r"\|[^|]*\|[^0-9|]*(\d+(?:\.\d+)?)", row)
        assert listed and listed.group(1) == session.group(1), (
            f"instructor/README.md says {row.split('|')[2].strip()!r} for {path.name}, whose **Time:** starts "
            f"with {session.group(1)}")
