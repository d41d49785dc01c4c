"""Notebooks whose results another CPU could round differently, run again on a second kernel path.

Training and sampling magnify rounding: the last bits of a sum depend on the order in which
the CPU's vector kernels add, and that order differs between CPU models (Intel or AMD, AVX2 or
AVX-512). A stored loss printed to four decimals can then differ on the next machine, and a learner
or another CI machine no longer sees the stored text. Such a cell must print a claim that holds
everywhere instead (README, "For maintainers").

To catch such a cell on the machine where it is written, every notebook that the course map marks
``amplifies_rounding`` is executed a second time here, under strict nbval, in a kernel that adds
in another order: torch's plain C++ kernels and MKL's CPU-independent code path
(``course_lib.authoring.notebooks.second_kernel_path``; the translation notebooks leave MKL's out, which would
double their time). The outputs are compared with the same stored ones
as in the normal run, so a cell that passes there and fails here hangs on the last bits.

In CI that second run is the browser test's (tests/browser: the notebooks that train or sample run
there in a kernel on the second path, and their outputs are compared as nbval compares them); the
nbval runs at the end of this file take its place where the browser test does not run every notebook.
"""
import os
import re
import shutil
import subprocess
import sys

import nbformat
import pytest

from course_lib.course import NOTEBOOKS
from course_lib.authoring.notebooks import SECOND_KERNEL_PATH, second_kernel_path

REPO = NOTEBOOKS[0].path.parent.parent
ON_SECOND_PATH = [nb for nb in NOTEBOOKS if nb.amplifies_rounding and nb.available]

# Code that trains (a training helper, an optimiser step, the Trainer) or samples something.
AMPLIFIES = re.compile(r"^(?!\s*def ).*(\btrain_\w+\(|\boptimizer\.step\(|\bTrainer\(|\bsample\w*\(|\bmultinomial\()")


def amplifying_lines(path) -> list[str]:
    nb = nbformat.read(path, as_version=4)
    return [line.strip() for cell in nb.cells if cell.cell_type == "code"
            for line in cell.source.splitlines() if AMPLIFIES.search(line)]


@pytest.mark.parametrize("nb", [nb for nb in NOTEBOOKS if nb.available], ids=lambda nb: nb.filename)
def test_the_map_marks_exactly_the_notebooks_that_train_or_sample(nb):
    lines = amplifying_lines(nb.path)
    if lines:
        assert nb.amplifies_rounding, (
            f"{nb.filename} trains or samples something ({lines[0]!r}) but course_lib/course.py does "
            "not mark it amplifies_rounding=True, so it is never run on the second kernel path")
    else:
        assert not nb.amplifies_rounding, (
            f"{nb.filename} is marked amplifies_rounding=True in course_lib/course.py but neither trains "
            "nor samples anything: the second run costs time and checks nothing new")


def test_the_rule_finds_training_and_sampling_but_not_definitions_gradients_or_timing():
    assert AMPLIFIES.search("losses = train_lookback(model, steps=300)")
    assert AMPLIFIES.search("    optimizer.step()")
    assert AMPLIFIES.search("out = sample_cached(model, src, generator=g)")
    assert not AMPLIFIES.search("start = time.perf_counter()")  # timings are never compared
    assert not AMPLIFIES.search("def train_pattern(head, x, targets, steps=200, lr=0.1):")
    assert not AMPLIFIES.search("loss.backward()")


def test_the_second_path_really_changes_the_kernels():
    # If torch ignored the variable, the second run would only repeat the first one.
    probe = "from course_lib import environment_report; print(environment_report()['CPU capability'])"
    for env in {tuple(second_kernel_path(nb).items()) for nb in ON_SECOND_PATH}:
        shown = subprocess.run([sys.executable, "-c", probe], env={**os.environ, **dict(env)}, capture_output=True,
                               text=True, check=True)
        assert shown.stdout.strip() == "DEFAULT", dict(env)


def test_mkl_is_left_out_only_where_the_course_map_says_so():
    for nb in ON_SECOND_PATH:
        expected = SECOND_KERNEL_PATH if nb.second_path_mkl else {"ATEN_CPU_CAPABILITY": "default"}
        assert second_kernel_path(nb) == expected, nb.filename
    assert [nb.number for nb in ON_SECOND_PATH if not nb.second_path_mkl] == [11, 12, 13]
    with pytest.raises(ValueError, match="00_start_here.ipynb neither trains nor samples"):
        second_kernel_path(NOTEBOOKS[0])


# In CI (COURSE_REQUIRE_BROWSER=1, set by .ci/run) the browser test runs these notebooks in JupyterLab in
# a kernel on the second kernel path and compares their outputs with the stored ones as nbval does
# (tests/browser/lab.py: SECOND_PATH_KERNEL, output_differences); running them here as well would only
# repeat that. Elsewhere (no Chromium, or a few notebooks chosen for the browser) they run here.
BROWSER_RUNS_SECOND_PATH = (os.environ.get("COURSE_REQUIRE_BROWSER") == "1"
                            and not os.environ.get("COURSE_BROWSER_NOTEBOOKS"))


@pytest.mark.skipif(BROWSER_RUNS_SECOND_PATH, reason="the browser test runs these notebooks on the second "
                    "kernel path and compares their outputs (COURSE_REQUIRE_BROWSER=1)")
@pytest.mark.parametrize("nb", ON_SECOND_PATH, ids=lambda nb: nb.filename)
def test_notebook_prints_the_same_on_the_second_kernel_path(nb, tmp_path):
    # A copy in a folder of its own, so that what the notebook writes next to the repository (notebook
    # 11's runs/) cannot collide with the normal run of the same notebook in another worker.
    copy = tmp_path / "notebooks" / nb.filename
    copy.parent.mkdir()
    shutil.copyfile(nb.path, copy)
    command = [sys.executable, "-m", "pytest", "-n", "0", "-p", "no:cacheprovider", "-q", "--tb=short",
               "--rootdir", str(REPO), "-c", str(REPO / "pyproject.toml"), str(copy)]
    env = {**os.environ, **second_kernel_path(nb)}
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    settings = " ".join(f"{k}={v}" for k, v in second_kernel_path(nb).items())
    assert result.returncode == 0, (
        f"{nb.filename} passes strict nbval on this CPU's own kernels but not under {settings}: the cells "
        "below print digits that another CPU would round differently. Print a claim that holds everywhere "
        "instead (course_lib.assert_claims; README, For maintainers). Reproduce with\n"
        f"  {settings} .venv/bin/python -m pytest -n 0 notebooks/{nb.filename}\n\n"
        + result.stdout[-6000:] + result.stderr[-2000:])
