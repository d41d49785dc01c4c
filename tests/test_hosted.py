"""The install cell for hosted services, run for real where course_lib is missing, and its placement."""
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from course_lib.authoring import hosted
from course_lib.authoring.hosted import INSTALL_CELL, INSTALL_CELL_ID, REPOSITORY_ENV, REPOSITORY_URL, ensure_install_cell
from course_lib.authoring.notebooks import main

try:
    import tomllib
except ImportError:  # Python 3.10: pytest brings tomli
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")

# Runs the cell twice in one interpreter, the way a kernel would, and reports what it saw.
DRIVER = """
import importlib.util, sys
cell = open(sys.argv[1], encoding="utf-8").read()
exec(compile(cell, "install cell", "exec"), {})
import course_lib
print("IMPORTED", course_lib.__file__, course_lib.ORIGIN)
exec(compile(cell, "install cell", "exec"), {})
print("SECOND RUN DONE")
"""


def test_the_repository_url_is_in_one_place():
    urls = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]
    assert urls["Repository"] == REPOSITORY_URL
    assert f'os.environ.get("{REPOSITORY_ENV}", "{REPOSITORY_URL}")' in INSTALL_CELL


def test_the_cell_is_silent_and_touches_nothing_where_course_lib_is_installed(monkeypatch, capsys, tmp_path):
    def no_subprocess(*args, **kwargs):
        raise AssertionError(f"the cell ran {args}")

    monkeypatch.setattr(subprocess, "run", no_subprocess)
    monkeypatch.chdir(tmp_path)
    path_before = list(sys.path)
    exec(compile(INSTALL_CELL, "install cell", "exec"), {})
    assert capsys.readouterr() == ("", "")
    assert sys.path == path_before and list(tmp_path.iterdir()) == []


@pytest.fixture
def bare_python(tmp_path):
    """A Python without course_lib: a fresh venv that borrows this environment's pip and setuptools.

    A path line in a .pth file puts this environment's site-packages on sys.path without running
    the .pth files there, so the editable install of the real course_lib stays invisible.
    """
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    Path(site, "borrowed.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    found = subprocess.run([str(python), "-c", "import importlib.util as u; "
                            "print(u.find_spec('course_lib') is None, u.find_spec('pip') is not None)"],
                           cwd=tmp_path, env=_clean_env(), capture_output=True, text=True, check=True).stdout.split()
    assert found == ["True", "True"], "the bare Python must lack course_lib and have pip"
    return python


def _clean_env():
    """This environment without pip or Python settings that could reach the real course_lib."""
    return {key: value for key, value in os.environ.items() if not key.startswith(("PIP_", "PYTHON"))}


def _git(*args, cwd):
    subprocess.run(["git", "-c", "user.name=test", "-c", "user.email=test@example.org", *args],
                   cwd=cwd, check=True, capture_output=True)


@pytest.fixture
def fake_repository(tmp_path):
    """A tiny repository with a course_lib package, two commits deep (so the clone can be shallow)."""
    repo = tmp_path / "origin"
    (repo / "course_lib").mkdir(parents=True)
    (repo / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=68"]\nbuild-backend = "setuptools.build_meta"\n\n'
        '[project]\nname = "fake-attention-course"\nversion = "0.0.1"\n\n'
        '[tool.setuptools.packages.find]\ninclude = ["course_lib*"]\n')
    (repo / "course_lib" / "__init__.py").write_text('ORIGIN = "first"\n')
    _git("init", "-q", cwd=repo)
    _git("add", ".", cwd=repo)
    _git("commit", "-q", "-m", "first", cwd=repo)
    (repo / "course_lib" / "__init__.py").write_text('ORIGIN = "fake repository"\n')
    _git("commit", "-q", "-am", "second", cwd=repo)
    return repo


def run_cell(python, cwd, tmp_path, repository=None, path=None):
    """Run the driver (the cell, twice) with ``python`` in ``cwd``; pip stays offline and installs no deps."""
    cell = tmp_path / "cell.py"
    cell.write_text(INSTALL_CELL, encoding="utf-8")
    env = _clean_env()
    env.update(PIP_NO_DEPS="1", PIP_NO_INDEX="1", PIP_NO_BUILD_ISOLATION="0",
               PIP_DISABLE_PIP_VERSION_CHECK="1", PYTHONNOUSERSITE="1")
    env.pop(REPOSITORY_ENV, None)
    if repository is not None:
        env[REPOSITORY_ENV] = repository
    if path is not None:
        env["PATH"] = path
    return subprocess.run([str(python), "-c", DRIVER, str(cell)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


@needs_git
def test_the_cell_clones_installs_and_imports_then_does_nothing(bare_python, fake_repository, tmp_path):
    notebooks = tmp_path / "hosted" / "content"
    notebooks.mkdir(parents=True)
    result = run_cell(bare_python, notebooks, tmp_path, repository=fake_repository.as_uri())
    assert result.returncode == 0, result.stderr
    clone = notebooks / "attention-course"
    lines = result.stdout.splitlines()
    # one line on the first run, nothing on the second
    assert lines[0] == f"Installed course_lib from {fake_repository.as_uri()}, cloned into {clone}."
    assert lines[1:] == [f"IMPORTED {clone / 'course_lib' / '__init__.py'} fake repository", "SECOND RUN DONE"]
    count = subprocess.run(["git", "rev-list", "--count", "HEAD"], cwd=clone, capture_output=True, text=True)
    assert count.stdout.strip() == "1", "the clone should be shallow (--depth 1)"
    # pip really installed it, editable: a new interpreter (a restarted kernel) finds the clone
    fresh = subprocess.run([str(bare_python), "-c", "import course_lib; print(course_lib.__file__)"],
                           cwd=tmp_path, env=_clean_env(), capture_output=True, text=True)
    assert fresh.stdout.strip() == str(clone / "course_lib" / "__init__.py"), fresh.stderr


@needs_git
def test_the_cell_installs_the_repository_a_notebook_sits_in(bare_python, fake_repository, tmp_path):
    notebooks = fake_repository / "notebooks"
    notebooks.mkdir()
    result = run_cell(bare_python, notebooks, tmp_path, repository="file:///nowhere/not-used")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == (
        f"Installed course_lib from the repository around this notebook, {fake_repository}.")
    assert not (notebooks / "attention-course").exists()


@needs_git
def test_a_failed_clone_says_what_to_do(bare_python, tmp_path):
    result = run_cell(bare_python, tmp_path, tmp_path, repository=(tmp_path / "missing").as_uri())
    assert result.returncode != 0
    assert "RuntimeError: git clone --depth 1" in result.stderr and "failed" in result.stderr
    assert f"({REPOSITORY_ENV} sets another one)" in result.stderr


def test_missing_git_says_so(bare_python, tmp_path):
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    result = run_cell(bare_python, tmp_path, tmp_path, path=str(empty))
    assert "RuntimeError: git is not installed: install it and run this cell again." in result.stderr


def test_a_failed_pip_install_says_what_to_do(bare_python, tmp_path):
    (tmp_path / "attention-course").mkdir()  # an earlier try left a folder that is not the repository
    result = run_cell(bare_python, tmp_path, tmp_path)
    assert result.returncode != 0
    assert "pip install --quiet -e" in result.stderr
    assert f"To start afresh, delete {tmp_path / 'attention-course'} and run this cell again." in result.stderr


# ---- where the cell goes -------------------------------------------------------------------


def _course_notebook():
    nb = new_notebook()
    nb.cells = [new_markdown_cell("# 01 · Title"), new_code_cell("device = setup()"), new_markdown_cell("## 1.")]
    return nb


def test_ensure_install_cell_puts_it_after_the_title_once():
    nb = _course_notebook()
    assert ensure_install_cell(nb) is True
    assert [c.source for c in nb.cells] == ["# 01 · Title", INSTALL_CELL, "device = setup()", "## 1."]
    cell = nb.cells[1]
    assert cell.cell_type == "code" and cell.id == INSTALL_CELL_ID and hosted.is_install_cell(cell)
    assert cell.metadata["slideshow"] == {"slide_type": "skip"}
    assert cell.metadata["jupyter"] == {"source_hidden": True}  # collapsed in JupyterLab
    nbformat.validate(nb)
    del nb.cells[1].metadata["jupyter"]  # expanded by hand: collapsed again
    assert ensure_install_cell(nb) is True and nb.cells[1].metadata["jupyter"]["source_hidden"] is True
    assert ensure_install_cell(nb) is False and len(nb.cells) == 4


def test_ensure_install_cell_keeps_a_current_cell_and_its_outputs():
    nb = _course_notebook()
    ensure_install_cell(nb)
    nb.cells[1].execution_count = 1
    nb.cells[1].outputs = [new_output("stream", text="kept\n")]
    nb.cells.insert(0, nb.cells.pop(1))  # moved to the top by hand
    assert ensure_install_cell(nb) is True
    assert nb.cells[1].id == INSTALL_CELL_ID and nb.cells[1].outputs[0].text == "kept\n"


def test_ensure_install_cell_replaces_a_stale_cell_and_its_outputs():
    nb = _course_notebook()
    stale = new_code_cell("# an older install cell", execution_count=1,
                          outputs=[new_output("stream", text="old\n")])
    stale.id = INSTALL_CELL_ID
    nb.cells.insert(1, stale)
    assert ensure_install_cell(nb) is True
    assert [c.source for c in nb.cells].count(INSTALL_CELL) == 1 and len(nb.cells) == 4
    assert nb.cells[1].outputs == [] and nb.cells[1].execution_count is None


def test_a_notebook_without_a_title_gets_the_cell_at_the_top():
    nb = new_notebook()
    nb.cells = [new_code_cell("x = 1")]
    ensure_install_cell(nb)
    assert [c.source for c in nb.cells] == [INSTALL_CELL, "x = 1"]


def test_hosted_command_inserts_the_cell_once_and_changes_nothing_else(tmp_path, capsys):
    path = tmp_path / "01_key_value_retrieval.ipynb"
    nb = _course_notebook()
    nbformat.write(nb, path)
    assert main(["hosted", str(path)]) == 0 and "updated" in capsys.readouterr().out
    written = path.read_bytes()
    assert main(["hosted", str(path)]) == 0 and "already current" in capsys.readouterr().out
    assert path.read_bytes() == written
    after = nbformat.read(path, as_version=4)
    assert [c.source for c in after.cells] == ["# 01 · Title", INSTALL_CELL, "device = setup()", "## 1."]
