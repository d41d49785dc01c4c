"""Every stored notebook: executed cleanly, and built to the course's quality bar."""
import re

import nbformat
import pytest

from course_lib.course import NOTEBOOK_DIR, get_notebook
from course_lib.authoring.hosted import INSTALL_CELL, is_install_cell
from course_lib.authoring.notebooks import problems
from course_lib.authoring.student import count_exercises

PATHS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))


def _load(path):
    return nbformat.read(path, as_version=4)


@pytest.fixture(params=PATHS, ids=lambda p: p.name)
def notebook(request):
    return request.param, _load(request.param)


def test_there_are_notebooks():
    assert PATHS


def test_stored_outputs_are_clean(notebook):
    path, nb = notebook
    assert problems(nb) == [], f"{path.name}: run `python -m course_lib.authoring run {path.stem[:2]}`"
    assert any(cell.get("outputs") for cell in nb.cells if cell.cell_type == "code"), "no stored outputs"


def test_opens_with_title_goals_prerequisites_and_time(notebook):
    path, nb = notebook
    entry = get_notebook(path.name)
    first = nb.cells[0]
    assert first.cell_type == "markdown"
    assert first.source.startswith(f"# {entry.number:02d} · {entry.title}\n"), first.source.splitlines()[0]
    for phrase in ("you will be able to", "**Prerequisites:**", "**Time:**"):
        assert phrase in first.source, f"{path.name}: the opening cell lacks {phrase!r}"


def test_first_code_cell_installs_course_lib_when_missing_and_the_next_calls_setup(notebook):
    path, nb = notebook
    install, setup_cell = [cell for cell in nb.cells if cell.cell_type == "code"][:2]
    assert install.source == INSTALL_CELL, f"{path.name}: run `python -m course_lib.authoring hosted {path.stem[:2]}`"
    assert install.outputs == [], "where course_lib is installed, the install cell prints nothing"
    assert re.search(r"^device = setup\(", setup_cell.source, re.M), setup_cell.source


def test_ends_with_summary_and_next_step(notebook):
    _, nb = notebook
    last = nb.cells[-1]
    assert last.cell_type == "markdown" and "## Summary" in last.source and "**Next:**" in last.source


def test_ignored_outputs_say_why_in_the_form_nbval_reads(notebook):
    # nbval honours a marker only when it is the whole comment ("# NBVAL_IGNORE_OUTPUT"); text after it
    # switches the marker off silently. So the reason goes on the next line: "# why: ...".
    from nbval.plugin import find_comment_markers

    path, nb = notebook
    for i, cell in enumerate(nb.cells):
        lines = [line.strip() for line in cell.source.splitlines()]
        for j, line in enumerate(lines):
            if "NBVAL_" not in line:
                continue
            where = f"{path.name} cell {i}: {line!r}"
            assert line in ("# NBVAL_IGNORE_OUTPUT", "# NBVAL_RAISES_EXCEPTION"), (
                f"{where}: write the marker alone on its line, and the reason on the next one as '# why: ...'")
            assert j + 1 < len(lines) and re.fullmatch(r"# why: \S.{10,}", lines[j + 1]), (
                f"{where}: the next line must say why, as '# why: <reason>'")
            marker = "check" if "IGNORE_OUTPUT" in line else "check_exception"
            assert marker in dict(find_comment_markers(cell.source)), f"{where}: nbval does not see it"


def test_concept_notebooks_have_an_explorer(notebook):
    path, nb = notebook
    if get_notebook(path.name).number > 9:
        pytest.skip("the translation notebooks are not concept notebooks")
    assert any("explorer(" in cell.source for cell in nb.cells if cell.cell_type == "code")


def test_every_exercise_has_a_check(notebook):
    path, nb = notebook
    checks = sum(len(re.findall(r"^check_\w+\(", cell.source, re.M))
                 for cell in nb.cells if cell.cell_type == "code")
    assert checks >= count_exercises(nb), f"{path.name}: each exercise needs a check cell under it"


def test_ignored_training_figures_stand_next_to_the_claims_that_hold_everywhere(notebook):
    # A training result's exact figures move in the last digits from CPU to CPU, so nbval skips the cell
    # that prints them; what the lesson claims must then be asserted in the very next code cell, which
    # nbval does compare (README, "Training results print claims, not digits").
    path, nb = notebook
    code = [(i, cell) for i, cell in enumerate(nb.cells) if cell.cell_type == "code"]
    for n, (i, cell) in enumerate(code):
        lines = [line.strip() for line in cell.source.splitlines()]
        if "# NBVAL_IGNORE_OUTPUT" not in lines or "next cell states what holds" not in cell.source:
            continue
        assert n + 1 < len(code), f"{path.name} cell {i}: promises claims in the next cell, but it is the last one"
        j, following = code[n + 1]
        assert "NBVAL_IGNORE_OUTPUT" not in following.source, f"{path.name} cell {j}: the claims must be compared"
        assert re.search(r"^\s*assert(\s|_claims\()", following.source, re.M), (
            f"{path.name} cell {j}: cell {i} ignores training figures, so this cell must assert what holds")


MAX_CODE_CELL_LINES = 25


def test_no_code_cell_is_longer_than_25_lines(notebook):
    path, nb = notebook
    long = [(i, len(cell.source.splitlines())) for i, cell in enumerate(nb.cells)
            if cell.cell_type == "code" and not is_install_cell(cell)
            and len(cell.source.splitlines()) > MAX_CODE_CELL_LINES]
    assert not long, (f"{path.name}: code cells (index, lines) over {MAX_CODE_CELL_LINES} lines: {long}. "
                      "Split model from loop, or move a drawing helper into course_lib.")


#: Where each concept diagram is drawn: the notebook that introduces its idea.
DIAGRAM_HOMES = {
    "plot_broadcast": "00", "plot_lookup_table": "01", "plot_attention_flow": "04", "plot_heads_flow": "07",
    "plot_block_wiring": "08", "plot_data_flow": "09", "plot_encoder_decoder": "09", "plot_training_loop": "11",
    "plot_model_families": "13",
}


def test_every_concept_diagram_is_drawn_where_its_idea_is_introduced():
    from course_lib import diagrams

    assert set(DIAGRAM_HOMES) | {"plot_heads_split"} == set(diagrams.__all__)
    for name, number in DIAGRAM_HOMES.items():
        path = next(NOTEBOOK_DIR.glob(f"{number}_*.ipynb"))
        calls = [cell for cell in _load(path).cells if cell.cell_type == "code" and f"{name}(" in cell.source]
        assert calls, f"{path.name} does not draw {name}"
        assert all(any(o.get("data", {}).get("image/png") for o in cell.outputs) for cell in calls), \
            f"{path.name}: the cell that calls {name} has no stored picture"
