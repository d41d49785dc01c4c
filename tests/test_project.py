"""The README's promises: two commands, the notebook table, and CI calling the same command."""
import re
from pathlib import Path

from course_lib.course import NOTEBOOKS

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _section(title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## )", README, re.S | re.M)
    assert match, f"README has no '## {title}' section"
    return match.group(1)


def test_quick_start_is_two_commands_that_the_makefile_defines():
    blocks = re.findall(r"```bash\n(.*?)```", _section("Quick start"), re.S)
    assert len(blocks) == 1
    commands = [line.split("#")[0].strip() for line in blocks[0].splitlines() if line.split("#")[0].strip()]
    assert commands == ["make lab", "make test"]
    makefile = (ROOT / "Makefile").read_text()
    for target in ("lab", "test"):
        assert re.search(rf"^{target}: \$\(STAMP\)$", makefile, re.M), f"Makefile target {target} must set up first"


def test_setup_installs_pinned_torch_before_anything_else():
    makefile = (ROOT / "Makefile").read_text()
    assert "TORCH_SPEC ?= torch==2.13.0" in makefile
    recipe = makefile[makefile.index("$(STAMP): pyproject.toml"):]
    assert recipe.index('"$(TORCH_SPEC)"') < recipe.index('-e ".[test]"')


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    commands = [line.strip() for line in ci.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert "make test" in commands
    assert "set -euo pipefail" in commands


def test_readme_notebook_table_follows_the_course_map():
    table = _section("The notebooks")
    rows = [line for line in table.splitlines() if re.match(r"\| (\[)?\d\d · ", line)]
    assert len(rows) == len(NOTEBOOKS)
    for row, nb in zip(rows, NOTEBOOKS):
        label = f"{nb.number:02d} · {nb.title}"
        assert label in row, f"row {row!r} should name {label!r}"
        if nb.available:
            assert f"[{label}](notebooks/{nb.filename})" in row and row.rstrip().endswith("| ready |"), row
        else:
            assert row.rstrip().endswith("| planned |") and "](" not in row, row


def test_pytest_runs_notebooks_under_strict_nbval():
    pyproject = (ROOT / "pyproject.toml").read_text()
    addopts = re.search(r'^addopts = "(.*)"$', pyproject, re.M).group(1).split()
    assert "--nbval" in addopts and "--nbval-lax" not in addopts
    assert "--nbval-sanitize-with=nbval_sanitize.cfg" in addopts
    assert re.search(r'^testpaths = \["tests", "notebooks"\]$', pyproject, re.M)
    assert (ROOT / "nbval_sanitize.cfg").exists()
