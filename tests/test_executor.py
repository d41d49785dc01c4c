import nbformat
import pytest
from nbclient.exceptions import CellExecutionError

from course_lib.authoring import notebooks as cli
from course_lib.course import NOTEBOOK_DIR
from course_lib.authoring.hosted import INSTALL_CELL


def make_notebook(*sources):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(src) for src in sources]
    return nb


def test_run_notebook_stores_outputs_as_nbval_will_see_them(tmp_path):
    path = tmp_path / "demo.ipynb"
    nbformat.write(make_notebook(
        "import os, sys\nprint(os.environ['COURSE_DEVICE'], os.environ['PYTHONHASHSEED'])",
        "print(os.getcwd() == %r)" % str(tmp_path),
        "print(sys.executable == %r)" % __import__("sys").executable,
        "1 + 1",
    ), path)
    assert cli.run_notebook(path) == []
    nb = nbformat.read(path, as_version=4)
    install, *cells = nb.cells  # run puts the hosted-install cell first; here it finds course_lib and is silent
    assert install.source == INSTALL_CELL and install.outputs == []
    texts = [cell.outputs[0].get("text", "") for cell in cells[:3]]
    assert texts == ["cpu 0\n", "True\n", "True\n"]
    assert cells[3].outputs[0]["data"]["text/plain"] == "2"
    assert [c.execution_count for c in nb.cells] == [1, 2, 3, 4, 5]
    assert not list(tmp_path.glob(".*tmp")), "the temporary file was left behind"


def test_run_notebook_fails_loudly_and_keeps_the_old_file(tmp_path):
    path = tmp_path / "broken.ipynb"
    nbformat.write(make_notebook("1 / 0"), path)
    before = path.read_bytes()
    with pytest.raises(CellExecutionError, match="ZeroDivisionError"):
        cli.run_notebook(path)
    assert path.read_bytes() == before


def test_problems_finds_errors_unexecuted_cells_and_disorder():
    nb = make_notebook("a", "b", "c", "")
    nb.cells[0].execution_count = 1
    nb.cells[0].outputs = [nbformat.v4.new_output("error", ename="KeyError", evalue="'x'", traceback=[])]
    nb.cells[2].execution_count = 1
    found = cli.problems(nb)
    assert "code cell 0 stores an error: KeyError: 'x'" in found
    assert "code cell 1 was never executed" in found
    assert any("execution counts are not 1, 2, ..., 2 in order: [1, 1]" in f for f in found)
    nb = make_notebook("a", "b")
    nb.cells[0].execution_count, nb.cells[1].execution_count = 1, 2
    assert cli.problems(nb) == []


def test_check_command_reports_and_exits_nonzero(tmp_path, capsys):
    path = tmp_path / "00_bad.ipynb"
    nbformat.write(make_notebook("x = 1"), path)
    assert cli.main(["check", str(path)]) == 1
    assert "code cell 0 was never executed" in capsys.readouterr().out
    assert cli.main(["check"]) == 0  # the stored course notebooks
    assert "stored cleanly" in capsys.readouterr().out


def test_list_and_resolve(capsys):
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    assert "00_start_here.ipynb" in out and "14_attention_at_scale.ipynb" in out
    assert cli.resolve(["0"]) == [NOTEBOOK_DIR / "00_start_here.ipynb"]
    assert cli.resolve([]) == sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
    with pytest.raises(KeyError, match="no notebook 'nope'"):
        cli.resolve(["nope"])


def test_resolve_refuses_a_planned_notebook(tmp_path):
    with pytest.raises(FileNotFoundError, match="has not been written yet"):
        cli.resolve(["13"], directory=tmp_path)


def test_write_atomically_keeps_permissions(tmp_path):
    path = tmp_path / "nb.ipynb"
    path.write_text("old")
    path.chmod(0o644)
    cli.write_atomically(make_notebook("1"), path)
    assert path.stat().st_mode & 0o777 == 0o644
    assert nbformat.read(path, as_version=4).cells[0].source == "1"


def test_write_atomically_leaves_nothing_behind_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "nb.ipynb"
    path.write_text("old")

    def explode(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(cli.nbformat, "write", explode)
    with pytest.raises(RuntimeError, match="disk full"):
        cli.write_atomically(make_notebook("1"), path)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["nb.ipynb"]
