"""The test suite's own set-up (conftest.py at the top of the repository): how the work is split
between the pytest-xdist workers, in what order, and how each notebook's cost is reported."""
import importlib.util
from pathlib import Path

from course_lib.course import NOTEBOOKS

# The repository's conftest.py, not tests/conftest.py (which `import conftest` would find first).
_spec = importlib.util.spec_from_file_location("repository_conftest", Path(__file__).resolve().parents[1] / "conftest.py")
conftest = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(conftest)

NBVAL = "notebooks/11_training_translation.ipynb::Cell 3"
SECOND = "tests/test_second_kernel_path.py::test_notebook_prints_the_same_on_the_second_kernel_path[07_multi_head_attention.ipynb]"
BROWSER = "tests/browser/test_browser.py::test_notebook_runs_cleanly_in_jupyterlab[12_decoding_and_evaluation.ipynb]"
SLIDES = "tests/browser/test_browser.py::test_notebook_presents_as_slides[04_attention.ipynb]"
UNIT = "tests/test_train.py::test_learning_rate[3]"


def test_a_notebooks_cells_stay_together_and_each_other_run_is_a_unit_of_its_own():
    assert conftest.unit_of_work(NBVAL) == "notebooks/11_training_translation.ipynb"
    assert conftest.unit_of_work("notebooks/11_training_translation.ipynb::Cell 30") == conftest.unit_of_work(NBVAL)
    assert conftest.unit_of_work(SECOND) == SECOND and conftest.unit_of_work(BROWSER) == BROWSER
    assert conftest.unit_of_work(SLIDES) == "tests/browser/test_browser.py"
    assert conftest.unit_of_work(UNIT) == "tests/test_train.py"


def test_each_notebook_run_is_recognised_with_its_kind():
    assert conftest.run_kind(NBVAL) == ("11", "nbval")
    assert conftest.run_kind(SECOND) == ("07", "second path")
    assert conftest.run_kind(BROWSER) == ("12", "browser")
    assert conftest.run_kind(SLIDES) is None and conftest.run_kind(UNIT) is None


def test_notebooks_that_train_or_sample_start_first_the_last_ones_first():
    order = [nb.number for nb in conftest.HEAVY_FIRST]
    marked = [nb.number for nb in NOTEBOOKS if nb.amplifies_rounding]
    assert order[:len(marked)] == sorted(marked, reverse=True)
    assert sorted(order) == [nb.number for nb in NOTEBOOKS]


class Report:
    def __init__(self, nodeid, duration, when="call"):
        self.nodeid, self.duration, self.when = nodeid, duration, when


class Terminal:
    def __init__(self):
        self.lines = []

    def section(self, title):
        self.lines.append(f"== {title}")

    def write_line(self, line):
        self.lines.append(line)


def test_the_cost_table_adds_up_each_notebooks_runs_and_leaves_out_skipped_ones(monkeypatch):
    monkeypatch.setattr(conftest, "COSTS", {})
    monkeypatch.setattr(conftest, "RAN", set())
    for nodeid, seconds, when in [(NBVAL, 1.5, "setup"), (NBVAL, 0.5, "call"), (UNIT, 100.0, "call"),
                                  ("notebooks/11_training_translation.ipynb::Cell 4", 3.0, "call"),
                                  (BROWSER, 7.5, "call"), (SLIDES, 100.0, "call"),
                                  (SECOND, 0.1, "setup"), (SECOND, 0.0, "teardown")]:  # a skipped test: no call
        conftest.pytest_runtest_logreport(Report(nodeid, seconds, when))
    assert conftest.RAN == {("11", "nbval"), ("12", "browser")}
    terminal = Terminal()
    conftest.pytest_terminal_summary(terminal)
    rows = {line.split()[0]: line.split()[1:] for line in terminal.lines[2:5]}
    assert rows == {"11": ["5.0", "-", "-", "5.0"], "12": ["-", "-", "7.5", "7.5"], "all": ["5.0", "0.0", "7.5", "12.5"]}
    assert terminal.lines[-1] == ("(the browser ran 12 on the second kernel path and compared their outputs with "
                                  "the stored ones)")
