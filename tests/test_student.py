import os

import nbformat
import pytest

from course_lib.course import NOTEBOOK_DIR
from course_lib.authoring.notebooks import execute
from course_lib.authoring.student import (STUB_MESSAGE, SolutionMarkerError, count_exercises, count_solutions,
                                strip_solutions, student_notebook, write_student_edition)

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
    expected = count_exercises(nbformat.read(path, as_version=4))
    assert reports.count("⏳ Not done yet") >= expected, reports
    assert "✅ Correct" not in reports  # no exercise passes with only a stub


# --- No answer before its exercise ------------------------------------------------------------

from course_lib.authoring.student import earlier_answers, expression_fingerprints, solution_blocks  # noqa: E402

EXERCISE = '''def attend(q, k, v):
    ### BEGIN SOLUTION
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    weights = torch.softmax(scores, dim=-1)
    return weights @ v
    ### END SOLUTION'''


def _notebook(*sources):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# Title")]
    nb.cells += [nbformat.v4.new_code_cell(s) for s in sources]
    return nb


def test_solution_blocks_returns_the_code_between_the_markers():
    assert solution_blocks(EXERCISE) == [
        "    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])\n"
        "    weights = torch.softmax(scores, dim=-1)\n    return weights @ v"]
    assert solution_blocks(SOLVED) == ["    y = x + 1\n    return y", "        return 2"]
    assert solution_blocks("x = 1") == []


def test_the_same_code_under_other_names_and_comments_is_found_earlier():
    worked = ("S = Q @ K.transpose(-2, -1) / math.sqrt(Q.shape[-1])  # scores\n"
              "W = torch.softmax(S, dim=-1)  # weights\nprint(W @ V)")
    [problem] = earlier_answers(_notebook("import math", worked, EXERCISE))
    assert "the solution in cell 3 already stands in cell 2 (2 of its 2 statements)" in problem
    assert "_.softmax(_, dim=-1)" in problem  # the shared code, names anonymised


def test_the_worked_cell_after_the_exercise_is_a_reveal_not_a_giveaway():
    worked = "S = Q @ K.transpose(-2, -1) / math.sqrt(Q.shape[-1])\nW = torch.softmax(S, dim=-1)"
    assert earlier_answers(_notebook(EXERCISE, worked)) == []


def test_the_step_before_is_allowed_and_half_is_not_more_than_half():
    step_before = "S = Q @ K.T / math.sqrt(Q.shape[-1])\nW = torch.softmax(S, dim=-1)"  # 2-D: .T
    assert earlier_answers(_notebook(step_before, EXERCISE)) == []  # 1 of 2 statements


def test_other_operations_or_constants_are_different_code():
    assert earlier_answers(_notebook("W = torch.softmax(S, dim=0)", "def f(s):\n"
                                     "    ### BEGIN SOLUTION\n    return torch.softmax(s, dim=-1)\n"
                                     "    ### END SOLUTION")) == []
    assert earlier_answers(_notebook("W = torch.softmax(S, dim=-1)", "def f(s):\n"
                                     "    ### BEGIN SOLUTION\n    return torch.softmax(s, dim=-1)\n"
                                     "    ### END SOLUTION"))


def test_an_earlier_exercise_solution_does_not_give_a_later_one_away():
    # the student edition stubs the earlier solution, so it is not on the learner's page
    again = EXERCISE.replace("def attend", "def attend_again")
    assert earlier_answers(_notebook(EXERCISE, again)) == []


def test_small_expressions_and_unparsable_cells_are_ignored():
    assert expression_fingerprints("%timeit f(x)") == set()
    assert expression_fingerprints("y = x.shape[-1]\nz = a @ b") == set()  # too common to count
    assert expression_fingerprints("w = torch.softmax(s, dim=-1)") == {
        "Call(Attribute(Name('_', Load()), 'softmax', Load()), [Name('_', Load())], "
        "[keyword('dim', UnaryOp(USub(), Constant(1)))])"}


@pytest.mark.parametrize("path", NOTEBOOKS_WITH_EXERCISES, ids=lambda p: p.name)
def test_no_exercise_answer_stands_before_its_exercise(path):
    problems = earlier_answers(nbformat.read(path, as_version=4))
    assert not problems, (f"{path.name}: " + "\n".join(problems)
                          + "\nTeach the step before in the worked cell, or move it after the exercise as the reveal.")


def test_a_class_with_solutions_in_two_methods_is_one_exercise():
    module = ('class Head:\n    def __init__(self):\n        ### BEGIN SOLUTION\n        self.w = 1\n'
              '        ### END SOLUTION\n\n    def forward(self, x):\n        ### BEGIN SOLUTION\n'
              '        return x * self.w\n        ### END SOLUTION')
    nb = _notebook(module, SOLVED, "x = 1")
    assert count_solutions(nb) == 4 and count_exercises(nb) == 3  # Head, f and g
    stubbed, count = strip_solutions(module)
    assert count == 2
    namespace = {}
    exec(stubbed, namespace)  # the class still defines; building it raises the stub's error
    with pytest.raises(NotImplementedError, match="Your turn"):
        namespace["Head"]()
