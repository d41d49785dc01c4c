import os

import nbformat
import pytest

from course_lib.course import NOTEBOOK_DIR
from course_lib.notebooks import execute
from course_lib.student import (STUB_MESSAGE, SolutionMarkerError, count_solutions, strip_solutions,
                                student_notebook, write_student_edition)

SOLVED = '''def f(x):
    """Doc."""
    ### BEGIN SOLUTION
    y = x + 1
    return y
    ### END SOLUTION

def g(x):
    if x:
        ### BEGIN SOLUTION
        return 2
        ### END SOLUTION
    return 0'''


def test_strip_solutions_replaces_each_block_with_an_indented_stub():
    source, count = strip_solutions(SOLVED)
    assert count == 2
    assert "y = x + 1" not in source and "return 2" not in source
    assert f'    raise NotImplementedError("{STUB_MESSAGE}")' in source
    assert f'        raise NotImplementedError("{STUB_MESSAGE}")' in source
    namespace = {}
    exec(source, namespace)  # the stubbed cell still runs: defining f raises nothing
    with pytest.raises(NotImplementedError):
        namespace["f"](1)


def test_source_without_solutions_is_unchanged():
    assert strip_solutions("x = 1\nprint(x)") == ("x = 1\nprint(x)", 0)


@pytest.mark.parametrize("source, message", [
    ("### BEGIN SOLUTION\nx = 1\n### END SOLUTION", "must be inside a function body"),
    ("def f():\n    ### BEGIN SOLUTION\n    return 1", "never closed"),
    ("def f():\n    return 1\n    ### END SOLUTION", "without a ### BEGIN SOLUTION"),
    ("def f():\n    ### BEGIN SOLUTION\n    ### BEGIN SOLUTION\n", "inside the block opened on line 2"),
    ("def f():\n    ### BEGIN SOLUTION\n    return 1\n  ### END SOLUTION", "indented differently"),
])
def test_bad_markers_are_refused_with_the_line(source, message):
    with pytest.raises(SolutionMarkerError, match=message):
        strip_solutions(source, "cell 3")


def test_student_notebook_clears_outputs_and_keeps_the_original():
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("### BEGIN SOLUTION stays in markdown"),
                nbformat.v4.new_code_cell(SOLVED, execution_count=1,
                                          outputs=[nbformat.v4.new_output("stream", text="hi")])]
    nb.metadata["widgets"] = {"state": {}}
    student = student_notebook(nb)
    assert count_solutions(nb) == 2 and count_solutions(student) == 0
    assert student.cells[1].outputs == [] and student.cells[1].execution_count is None
    assert student.cells[0].source == nb.cells[0].source
    assert "widgets" not in student.metadata
    assert "y = x + 1" in nb.cells[1].source and nb.cells[1].outputs  # original untouched


NOTEBOOKS_WITH_EXERCISES = [p for p in sorted(NOTEBOOK_DIR.glob("*.ipynb"))
                            if count_solutions(nbformat.read(p, as_version=4))]


def test_the_course_has_exercises():
    assert NOTEBOOKS_WITH_EXERCISES


# In CI (COURSE_REQUIRE_BROWSER=1, set by .ci/run) the browser test runs every student edition in
# JupyterLab and checks the same things (tests/browser/lab.py: stage_notebooks, check_reports);
# executing them here as well would only double the time. Elsewhere they are executed here.
BROWSER_RUNS_STUDENT_EDITIONS = (os.environ.get("COURSE_REQUIRE_BROWSER") == "1"
                                 and not os.environ.get("COURSE_BROWSER_NOTEBOOKS"))


@pytest.mark.skipif(BROWSER_RUNS_STUDENT_EDITIONS,
                    reason="the browser test runs the student editions in JupyterLab (COURSE_REQUIRE_BROWSER=1)")
@pytest.mark.parametrize("path", NOTEBOOKS_WITH_EXERCISES, ids=lambda p: p.name)
def test_student_edition_runs_top_to_bottom_and_checks_report(path, tmp_path):
    [student_path] = write_student_edition([path], tmp_path)
    nb = nbformat.read(student_path, as_version=4)
    execute(nb, tmp_path)  # raises CellExecutionError if any cell crashes
    texts = []
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            texts.append(output.get("text", "") + output.get("data", {}).get("text/plain", ""))
    reports = "\n".join(texts)
    expected = count_solutions(nbformat.read(path, as_version=4))
    assert reports.count("⏳ Not done yet") >= expected, reports
    assert "✅ Correct" not in reports  # no exercise passes with only a stub
