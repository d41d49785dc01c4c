"""The browser test's own logic, checked without a browser: what counts as a problem on the page."""
import copy
import json
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from course_lib.authoring.notebooks import SECOND_KERNEL_PATH
from lab import (NOT_DONE, SANITIZE_FILE, SECOND_PATH_NOTEBOOKS, STDERR_MIME, WIDGET_MIME,
                 LabServer, check_reports, committed_cells, exercises, notebook_title, output_differences,
                 problems, run_has_started, second_path_kernel, selected_notebooks, slideshow_figures,
                 stage_notebooks)

VIEW = {"model_id": "abc", "version_major": 2, "version_minor": 0}
PNG = "iVBORw0KGgo="


@pytest.fixture
def notebook(tmp_path):
    nb = new_notebook(cells=[
        new_markdown_cell("# 99 · A test\n\ntext"),
        new_code_cell("explorer(draw, a=(1, 3))", execution_count=1, outputs=[
            new_output("display_data", data={WIDGET_MIME: VIEW, "text/plain": "VBox()"}),
            new_output("display_data", data={"image/png": PNG})]),
        new_code_cell("", metadata={"slideshow": {"slide_type": "skip"}}),
        new_code_cell("plt.plot([1])", execution_count=2, metadata={"slideshow": {"slide_type": "skip"}},
                      outputs=[new_output("display_data", data={"image/png": PNG})]),
    ], metadata={"widgets": {"state": {}}})
    path = tmp_path / "99_test.ipynb"
    nbformat.write(nb, path)
    return path


def page(prompts=("[1]:", "[ ]:", "[2]:"), widget=True, images=(True, True), stderr=None):
    """What READ_CELLS_JS would return for the notebook above."""
    explorer = [{"mime": WIDGET_MIME, "text": "" if widget else "Loading widget...", "widget": widget, "images": []},
                {"mime": "image/png", "text": "", "widget": False,
                 "images": [{"loaded": images[0], "width": 600 if images[0] else 0}]}]
    if stderr:
        explorer.append({"mime": STDERR_MIME, "text": stderr, "widget": False, "images": []})
    plot = [{"mime": "image/png", "text": "", "widget": False,
             "images": [{"loaded": images[1], "width": 600}]}] if images[1] is not None else []
    return [{"kind": "markdown", "prompt": "", "outputs": []},
            {"kind": "code", "prompt": prompts[0], "outputs": explorer},
            {"kind": "code", "prompt": prompts[1], "outputs": []},
            {"kind": "code", "prompt": prompts[2], "outputs": plot}]


def test_committed_cells_count_widgets_and_figures(notebook):
    n_cells, cells = committed_cells(notebook)
    assert n_cells == 4
    assert [(c.index, c.runs, c.widgets, c.figures) for c in cells] == [(1, True, 1, 1), (2, False, 0, 0),
                                                                        (3, True, 0, 1)]
    assert cells[0].label() == "cell 1 ('explorer(draw, a=(1, 3))')"
    assert notebook_title(notebook) == "99 · A test"
    assert slideshow_figures(notebook) == 1  # the skipped cell's figure is not in the slides


def test_a_clean_page_has_no_problems(notebook):
    n_cells, cells = committed_cells(notebook)
    assert problems(n_cells, cells, page()) == []


@pytest.mark.parametrize("shown, message", [
    pytest.param(page(stderr="Traceback ...\nZeroDivisionError: division by zero"),
                 "cell 1 ('explorer(draw, a=(1, 3))') shows an error or a warning:\n    Traceback", id="error"),
    pytest.param(page(prompts=("[1]:", "[ ]:", "[ ]:")),
                 "cell 3 ('plt.plot([1])') did not run (its prompt shows '[ ]:')", id="not-run"),
    pytest.param(page(prompts=("[1]:", "[ ]:", "[*]:")), "cell 3 ('plt.plot([1])') was still queued or running",
                 id="still-running"),
    pytest.param(page(widget=False), "a widget is not drawn; the page shows 'Loading widget...'",
                 id="widget-not-drawn"),
    pytest.param(page(images=(False, True)), "cell 1 ('explorer(draw, a=(1, 3))'): 1 of 1 image(s) did not load",
                 id="broken-image"),
    pytest.param(page(images=(True, None)), "cell 3 ('plt.plot([1])'): 0 figure(s) shown, the committed notebook "
                 "has 1", id="missing-figure"),
    pytest.param(page()[:3], "the page shows 3 cells, the notebook has 4", id="cells-missing"),
])
def test_problems_name_the_cell_and_what_the_page_shows(notebook, shown, message):
    n_cells, cells = committed_cells(notebook)
    found = problems(n_cells, cells, shown)
    assert len(found) == 1 and message in found[0], found


def test_a_missing_widget_is_a_problem(notebook):
    n_cells, cells = committed_cells(notebook)
    shown = page()
    del shown[1]["outputs"][0]
    assert problems(n_cells, cells, shown) == [
        "cell 1 ('explorer(draw, a=(1, 3))'): 0 widget(s) in the page, the committed notebook has 1"]


def test_staging_clears_outputs_of_the_copy_only(notebook, tmp_path):
    before = notebook.read_bytes()
    stage_notebooks([notebook], tmp_path / "root")
    assert notebook.read_bytes() == before
    assert (tmp_path / "root" / "stored" / notebook.name).read_bytes() == before
    cleared = nbformat.read(tmp_path / "root" / "notebooks" / notebook.name, as_version=4)
    assert all(c.outputs == [] and c.execution_count is None for c in cleared.cells if c.cell_type == "code")
    assert "widgets" not in cleared.metadata
    assert [c.source for c in cleared.cells] == [c.source for c in nbformat.read(notebook, as_version=4).cells]


def test_the_notebook_selection_follows_the_environment(monkeypatch):
    monkeypatch.setenv("COURSE_BROWSER_NOTEBOOKS", "04, 00")
    assert [p.name for p in selected_notebooks()] == ["04_attention.ipynb", "00_start_here.ipynb"]
    monkeypatch.setenv("COURSE_BROWSER_NOTEBOOKS", "")
    assert len(selected_notebooks()) >= 13
    monkeypatch.setenv("COURSE_BROWSER_NOTEBOOKS", "99")
    with pytest.raises(KeyError, match="no notebook '99'"):
        selected_notebooks()


def test_a_collapsed_cell_counts_as_run_when_the_counts_after_it_add_up(notebook):
    # A collapsed input (the hosted-install cell) shows no prompt; Run All numbers the cells 1, 2, ...
    # in order, so the last count tells whether it ran.
    n_cells, cells = committed_cells(notebook)
    shown = page(prompts=("", "[ ]:", "[2]:"))
    shown[1]["collapsed"] = True
    assert problems(n_cells, cells, shown) == []
    shown[3]["prompt"] = "[1]:"  # only the last cell ran: the collapsed one did not
    found = problems(n_cells, cells, shown)
    assert len(found) == 1 and "(input collapsed) did not run: the last execution count is 1" in found[0], found


def test_a_notebook_with_exercises_is_staged_as_its_student_edition(tmp_path):
    solved = "def f(x):\n    ### BEGIN SOLUTION\n    return x + 1\n    ### END SOLUTION"
    nb = new_notebook(cells=[new_markdown_cell("# 98 · Exercises"), new_code_cell(solved, execution_count=1),
                             new_code_cell("check(f)", execution_count=2, outputs=[
                                 new_output("execute_result", data={"text/plain": "✅ Correct · f"})])])
    path = tmp_path / "98_exercises.ipynb"
    nbformat.write(nb, path)
    assert exercises(path) == 1
    stage_notebooks([path], tmp_path / "root")
    staged = nbformat.read(tmp_path / "root" / "notebooks" / path.name, as_version=4)
    assert "return x + 1" not in staged.cells[1].source and "NotImplementedError" in staged.cells[1].source
    assert len(staged.cells) == 3 and staged.cells[2].outputs == []
    assert "return x + 1" in (tmp_path / "root" / "stored" / path.name).read_text()  # the slides show the original


def test_check_reports_want_every_check_not_done():
    def shown(*texts):
        return [{"kind": "code", "prompt": "[1]:", "outputs": [{"text": t} for t in texts]}]

    assert check_reports(shown("⏳ Not done yet · f: replace ...", "⏳ Not done yet · g: ..."), 2) == []
    found = check_reports(shown("⏳ Not done yet · f: replace ..."), 2)
    assert found == ["1 check(s) say '⏳ Not done yet', but the student edition has 2 exercise(s) left as stubs"]
    found = check_reports(shown("⏳ Not done yet · f", "✅ Correct · g: matches"), 1)
    assert len(found) == 1 and found[0].startswith("a check passes with only a stub")


def test_notebooks_that_train_or_sample_are_staged_for_the_second_kernel_path(notebook, tmp_path):
    env = {"ATEN_CPU_CAPABILITY": "default"}
    stage_notebooks([notebook], tmp_path / "root", second_path={notebook.name: env})
    staged = nbformat.read(tmp_path / "root" / "notebooks" / notebook.name, as_version=4)
    assert staged.metadata["kernelspec"]["name"] == second_path_kernel(env) == "course-aten-cpu-capability-default"
    stage_notebooks([notebook], tmp_path / "other")
    assert "kernelspec" not in nbformat.read(tmp_path / "other" / "notebooks" / notebook.name, as_version=4).metadata
    assert SECOND_PATH_NOTEBOOKS["11_training_translation.ipynb"] == env
    assert SECOND_PATH_NOTEBOOKS["07_multi_head_attention.ipynb"] == SECOND_KERNEL_PATH
    assert "00_start_here.ipynb" not in SECOND_PATH_NOTEBOOKS


def test_each_second_path_kernel_is_installed_with_its_environment(tmp_path):
    kernels = Path(LabServer(tmp_path / "root", tmp_path)._environment()["JUPYTER_DATA_DIR"]) / "kernels"
    for env in SECOND_PATH_NOTEBOOKS.values():
        spec = json.loads((kernels / second_path_kernel(env) / "kernel.json").read_text())
        assert spec["env"] == env and "{connection_file}" in spec["argv"]
    assert len(list(kernels.iterdir())) == len({second_path_kernel(env) for env in SECOND_PATH_NOTEBOOKS.values()}) == 2


def run_of(stored, **changes):
    """A copy of ``stored`` as a run in JupyterLab might save it, with some cells' outputs replaced."""
    ran = copy.deepcopy(stored)
    for index, outputs in changes.items():
        ran.cells[int(index.lstrip("c"))].outputs = outputs
    return ran


def stream(text, name="stdout"):
    return new_output("stream", name=name, text=text)


@pytest.fixture
def printed():
    """A stored notebook whose cells print: a claim, a loss, a timing, an ignored value, an exercise."""
    return new_notebook(cells=[
        new_code_cell("print('loss', loss)", execution_count=1, outputs=[stream("loss 0.4321\n")]),
        new_code_cell("print(f'{t:.2f} s')", execution_count=2, outputs=[stream("1.23 s\n")]),
        new_code_cell("# NBVAL_IGNORE_OUTPUT\nprint(norms)", execution_count=3, outputs=[stream("1.95 1.35\n")]),
        new_code_cell("def f(x):\n    ### BEGIN SOLUTION\n    return x\n    ### END SOLUTION", execution_count=4),
        new_code_cell("check(f)", execution_count=5, outputs=[
            new_output("execute_result", execution_count=5, data={"text/plain": "✅ Correct · f"})]),
        new_code_cell("x", execution_count=6, outputs=[
            new_output("execute_result", execution_count=6, data={"text/plain": "3", "text/html": "<b>3</b>"})]),
    ])


def test_a_run_that_prints_the_stored_text_has_no_output_differences(printed):
    ran = run_of(printed, c1=[stream("9.87 s\n")], c2=[stream("2.00 1.00\n")])  # a timing, an ignored cell
    ran.cells[0].outputs = [stream("loss "), stream("0.4321\n")]  # JupyterLab may keep a stream in pieces
    ran.cells[3].source = "def f(x):\n    raise NotImplementedError"  # the student edition's stub
    ran.cells[4].outputs = [new_output("execute_result", data={"text/plain": f"{NOT_DONE} · f: replace"})]
    assert output_differences(printed, ran, SANITIZE_FILE) == []


@pytest.mark.parametrize("changes, cell, shown", [
    pytest.param({"c0": [stream("loss 0.4322\n")]}, "cell 0 (\"print('loss', loss)\")", "loss 0.4322",
                 id="last-digit"),
    pytest.param({"c0": [stream("loss 0.4321\n", name="stderr")]}, "cell 0", "Missing output fields from running "
                 "code: {'stdout'}", id="stream-name"),
    pytest.param({"c5": [new_output("execute_result", data={"text/plain": "3", "text/html": "<b>4</b>"})]},
                 "cell 5 ('x')", "<b>4</b>", id="html"),
    pytest.param({"c4": [new_output("execute_result", data={"text/plain": "✅ Correct · g"})]}, "cell 4",
                 "Correct · g", id="check-of-another-cell"),
    pytest.param({"c5": []}, "cell 5 ('x')", "Missing output fields", id="output-missing"),
])
def test_output_differences_name_the_cell_and_the_text(printed, changes, cell, shown):
    found = output_differences(printed, run_of(printed, **changes), SANITIZE_FILE)
    assert len(found) == 1 and found[0].startswith(cell) and shown in found[0], found


@pytest.mark.parametrize("prompts, started", [
    (["", "[ ]:", "[ ]:"], False),  # nothing queued: the Run All click was lost
    (["", "[*]:", "[*]:"], True),   # queued
    (["", "[1]:", "[*]:"], True),   # running
    (["", "[1]:", "[2]:"], True),   # done already
    ([], False),
])
def test_a_run_has_started_once_any_prompt_is_no_longer_empty(prompts, started):
    assert run_has_started(prompts) is started
