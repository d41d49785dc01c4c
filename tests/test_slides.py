"""The slide types of course_lib.authoring.slides: each rule on small notebooks, the command, the committed notebooks."""
import shutil

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from course_lib.authoring import slides
from course_lib.course import NOTEBOOK_DIR
from course_lib.authoring.hosted import INSTALL_CELL, INSTALL_CELL_ID
from course_lib.authoring.notebooks import main
from course_lib.authoring.slides import (BACK, CONTINUES, EXERCISE, FIGURE, HOSTED, LONG, RECAP, REVEAL, SECTION,
                               SOLUTION, SUBSECTION, TITLE, headings, plan)
from course_lib.authoring.student import count_solutions

PATHS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
SOLUTION_CODE = "def f(x):\n    ### BEGIN SOLUTION\n    return x\n    ### END SOLUTION"


def notebook(*cells):
    nb = new_notebook()
    nb.cells = list(cells)
    return nb


def figure(source="plt.plot(x)", kind="image/png"):
    data = {kind: "iVBORw0KGgo=" if kind == "image/png" else {"model_id": "abc", "version_major": 2},
            "text/plain": "<Figure>"}
    return new_code_cell(source, execution_count=1, outputs=[new_output("display_data", data=data)])


def code(lines=1):
    return new_code_cell("\n".join(f"x{i} = {i}" for i in range(lines)))


def types(nb):
    return [decision.slide_type for decision in plan(nb)]


def reasons(nb):
    return [decision.reason for decision in plan(nb)]


def test_headings_are_read_outside_fenced_code_only():
    source = "Some text\n\n## 2. A section ##\n\n```python\n# a comment, not a heading\n```\n### Sub"
    assert headings(source) == [(2, "2. A section"), (3, "Sub")]
    assert headings("#hashtag, not a heading") == []


def test_title_sections_subsections_and_recap():
    nb = notebook(new_markdown_cell("# 03 · Softmax\n\nGoals"), code(),
                  new_markdown_cell("## 1. Scores"), code(),
                  new_markdown_cell("### A closer look"), code(),
                  new_markdown_cell("Text that ends section 1.\n\n## 2. Weights"),
                  new_markdown_cell("## Summary\n\n- one\n\n**Next:** 04"))
    assert types(nb) == ["slide", "-", "slide", "-", "subslide", "-", "slide", "slide"]
    assert reasons(nb) == [TITLE, CONTINUES, SECTION, CONTINUES, SUBSECTION, CONTINUES, SECTION, RECAP]


def test_a_notebook_without_headings_is_one_slide():
    nb = notebook(new_markdown_cell("Just some words."), code(), new_markdown_cell("More words."), code())
    assert types(nb) == ["slide", "-", "-", "-"]
    assert plan(notebook()) == []


def test_a_notebook_that_opens_with_code_still_has_a_title_slide():
    nb = notebook(code(), new_markdown_cell("Words."))
    assert types(nb) == ["slide", "-"]


def test_the_install_cell_is_skipped_and_is_not_the_title():
    install = new_code_cell(INSTALL_CELL)
    install.id = INSTALL_CELL_ID
    nb = notebook(install, new_markdown_cell("# 00 · Start here"), new_code_cell("device = setup()"))
    assert types(nb) == ["skip", "slide", "-"]
    assert reasons(nb)[:2] == [HOSTED, TITLE]


@pytest.mark.parametrize("intro", ["### Exercise 1: a soft lookup", "## 5. Exercise: a stable softmax",
                                   "### Your turn: the causal mask", "A sentence before.\n\n### Warm-up exercise: x"])
def test_an_exercise_heading_starts_a_your_turn_slide(intro):
    nb = notebook(new_markdown_cell("# Title"), code(), new_markdown_cell(intro),
                  new_code_cell(SOLUTION_CODE), new_code_cell("check_f(f)"),
                  new_markdown_cell("What the check says about wrong answers."), code(),
                  new_markdown_cell("Still after the exercise."))
    assert types(nb) == ["slide", "-", "slide", "fragment", "-", "subslide", "-", "-"]
    assert reasons(nb)[2:6] == [EXERCISE, SOLUTION, CONTINUES, BACK]


def test_the_cell_above_a_solution_introduces_an_exercise_even_without_a_heading():
    nb = notebook(new_markdown_cell("# Title"), new_markdown_cell("Write `f`, which returns x."),
                  new_code_cell(SOLUTION_CODE))
    assert reasons(nb) == [TITLE, EXERCISE, SOLUTION]
    assert types(nb) == ["slide", "slide", "fragment"]


def test_a_prediction_and_its_answer_are_separate_slides():
    nb = notebook(new_markdown_cell("# Title"), new_markdown_cell("**Predict first.** What shape comes out?"),
                  code(), new_markdown_cell("It is (2, 3)."), code())
    assert reasons(nb) == [TITLE, CONTINUES, REVEAL, CONTINUES, CONTINUES]
    assert types(nb) == ["slide", "-", "subslide", "-", "-"]
    # a prompt inside an exercise keeps the solution a fragment of the exercise slide
    nb = notebook(new_markdown_cell("# Title"), new_markdown_cell("### Exercise\nPredict first: how many?"),
                  new_code_cell(SOLUTION_CODE), new_code_cell("check_f(f)"))
    assert types(nb) == ["slide", "slide", "fragment", "-"]


def test_a_heading_that_is_not_an_exercise_stays_a_subslide():
    nb = notebook(new_markdown_cell("# Title"), new_markdown_cell("### More practice with shapes"), code())
    assert reasons(nb)[1] == SUBSECTION
    # "Exercise" inside a fenced code block is not a heading at all
    nb = notebook(new_markdown_cell("# Title"), new_markdown_cell("Text\n```\n### Exercise\n```"), code())
    assert types(nb) == ["slide", "-", "-"]


def test_a_figure_gets_room_with_the_markdown_that_introduces_it():
    busy = code(slides.FIGURE_ROOM + 1)
    nb = notebook(new_markdown_cell("# Title"), busy, new_markdown_cell("The weights as a heatmap:"), figure())
    assert types(nb) == ["slide", "-", "subslide", "-"]
    assert reasons(nb)[2] == FIGURE
    # no markdown right above: the figure cell itself starts the subslide; widgets count as figures
    nb = notebook(new_markdown_cell("# Title"), busy, figure(kind="application/vnd.jupyter.widget-view+json"))
    assert types(nb) == ["slide", "-", "subslide"]
    # a slide with little on it keeps its figure
    nb = notebook(new_markdown_cell("# Title"), new_markdown_cell("## 2. The map"), figure())
    assert types(nb) == ["slide", "slide", "-"]
    # text outputs are not figures
    text = new_code_cell("print(1)", execution_count=1, outputs=[new_output("stream", text="1\n")])
    assert not slides.has_figure(text) and slides.has_figure(figure())


def test_a_long_slide_continues_on_a_subslide_at_a_markdown_cell():
    nb = notebook(new_markdown_cell("## 1. Long"), code(15), code(15), code(15), code(15),
                  new_markdown_cell("A new thought."), code(2), new_markdown_cell("Another."))
    assert types(nb) == ["slide", "-", "-", "-", "-", "subslide", "-", "-"]
    assert reasons(nb)[5] == LONG
    # outputs count towards the height
    long_output = new_code_cell("print(x)", execution_count=1,
                                outputs=[new_output("stream", text="line\n" * (slides.SLIDE_LINES + 1))])
    nb = notebook(new_markdown_cell("## 1. Long"), long_output, new_markdown_cell("After."))
    assert types(nb) == ["slide", "-", "subslide"]


def test_apply_writes_metadata_only_and_is_idempotent():
    nb = notebook(new_markdown_cell("# Title"), figure(), new_markdown_cell("## Summary"))
    nb.cells[1].metadata["slideshow"] = {"slide_type": "notes", "keep": 1}
    nb.metadata["rise"] = {"scroll": False, "footer": "the course"}
    before = [(cell.cell_type, cell.source, cell.get("outputs")) for cell in nb.cells]
    assert slides.apply(nb) is True
    assert slides.stored_types(nb) == ["slide", "-", "slide"]
    assert nb.cells[1].metadata["slideshow"] == {"slide_type": "-", "keep": 1}
    assert nb.metadata["rise"] == {**slides.RISE_SETTINGS, "footer": "the course"}
    assert [(cell.cell_type, cell.source, cell.get("outputs")) for cell in nb.cells] == before
    assert slides.apply(nb) is False


def test_outline_numbers_slides_and_subslides():
    nb = notebook(new_markdown_cell("# Title"), new_markdown_cell("## One"), new_markdown_cell("### Sub"),
                  new_markdown_cell("## Summary"))
    rows = slides.outline(nb)
    assert [row.split()[0] for row in rows] == ["1", "2", "2.1", "3"]
    assert "recap" in rows[-1] and "## Summary" in rows[-1]


def test_slides_command_rewrites_metadata_once_and_outline_writes_nothing(tmp_path, capsys):
    path = tmp_path / PATHS[0].name
    shutil.copy(PATHS[0], path)
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        cell.metadata.pop("slideshow", None)
    nb.metadata.pop("rise", None)
    nbformat.write(nb, path)
    stripped = path.read_bytes()

    assert main(["slides", "--outline", str(path)]) == 0
    assert "title" in capsys.readouterr().out and path.read_bytes() == stripped

    assert main(["slides", str(path)]) == 0
    assert "updated" in capsys.readouterr().out
    written = path.read_bytes()
    assert main(["slides", str(path)]) == 0
    assert "already current" in capsys.readouterr().out and path.read_bytes() == written

    after = nbformat.read(path, as_version=4)
    assert slides.stored_types(after) == [d.slide_type for d in plan(after)]
    assert [(c.source, c.get("outputs")) for c in after.cells] == [(c.source, c.get("outputs")) for c in nb.cells]


def test_split_at_headings_gives_each_heading_its_own_cell():
    nb = notebook(new_markdown_cell("End of section 1.\n\n## 2. Next\n\nIntro.\n### 2.1 Detail\ntext\n#### small\nmore"),
                  code(),
                  new_markdown_cell("## 3. Heading first\n\n### Straight into a subsection\n\ntext"),
                  new_markdown_cell("```\nfenced text\n## not a heading\n```"))
    nb.cells[0].id, nb.cells[0].metadata["tags"] = "abc", ["keep"]
    code_before = nb.cells[1]
    assert slides.split_at_headings(nb) is True
    assert [c.source for c in nb.cells] == [
        "End of section 1.", "## 2. Next\n\nIntro.", "### 2.1 Detail\ntext\n#### small\nmore", code_before.source,
        "## 3. Heading first\n\n### Straight into a subsection\n\ntext",  # nothing but a heading above: kept
        "```\nfenced text\n## not a heading\n```"]
    assert nb.cells[3] is code_before
    assert [c.id for c in nb.cells[:3]] == ["abc", "abc-1", "abc-2"] and nb.cells[0].metadata["tags"] == ["keep"]
    assert len({c.id for c in nb.cells}) == len(nb.cells)
    nbformat.validate(nb)
    assert slides.split_at_headings(nb) is False  # idempotent


def test_split_ids_never_collide():
    nb = notebook(new_markdown_cell("text\n## A"), new_markdown_cell("## B"))
    nb.cells[0].id, nb.cells[1].id = "x", "x-1"
    slides.split_at_headings(nb)
    assert [c.id for c in nb.cells] == ["x", "x-2", "x-1"]


def test_there_are_notebooks():
    assert PATHS


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.name)
def test_committed_notebook_carries_the_current_slides(path):
    nb = nbformat.read(path, as_version=4)
    decisions = plan(nb)
    assert slides.split_at_headings(nbformat.read(path, as_version=4)) is False, (
        f"{path.name}: a heading shares a cell with the text above it; run "
        f"`python -m course_lib.authoring slides {path.stem[:2]}`")
    assert slides.stored_types(nb) == [d.slide_type for d in decisions], (
        f"{path.name}: run `python -m course_lib.authoring slides {path.stem[:2]}`")
    assert {k: nb.metadata.get("rise", {}).get(k) for k in slides.RISE_SETTINGS} == slides.RISE_SETTINGS
    assert decisions[0] == slides.Decision("slide", TITLE)
    assert decisions[-1] == slides.Decision("slide", RECAP)
    if count_solutions(nb):
        assert slides.Decision("slide", EXERCISE) in decisions, f"{path.name}: no 'your turn' slide"
        assert slides.Decision("fragment", SOLUTION) in decisions
