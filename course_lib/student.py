"""The student edition: every solution replaced by a stub that the checks recognise.

Solutions sit between nbgrader-style markers inside a function body::

    def mean_over_time(x):
        ### BEGIN SOLUTION
        return x.mean(dim=1)
        ### END SOLUTION

and become::

    def mean_over_time(x):
        # YOUR CODE HERE
        raise NotImplementedError("Your turn: write this part, then run the check below.")

The stub raises only when the function is called, and every check answers
NotImplementedError with "Not done yet", so the student edition runs top to bottom.
"""
from __future__ import annotations

import copy
import re
from pathlib import Path

import nbformat

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
STUB_MESSAGE = "Your turn: write this part, then run the check below."
_MARKER = re.compile(r"^(?P<indent>[ \t]*)### (?P<kind>BEGIN|END) SOLUTION\s*$")


class SolutionMarkerError(ValueError):
    """The solution markers of a cell are unbalanced, nested or outside a function."""


def strip_solutions(source: str, where: str = "cell") -> tuple[str, int]:
    """Replace every solution block of one code cell's source by a stub.

    Returns the new source and the number of blocks replaced. A block must sit indented
    inside a function: at the top level the stub's ``raise`` would stop the notebook.
    """
    out: list[str] = []
    inside: str | None = None  # the indent of the open block
    opened_at = 0
    count = 0
    for lineno, line in enumerate(source.splitlines(), start=1):
        marker = _MARKER.match(line)
        if marker is None:
            if inside is None:
                out.append(line)
            continue
        indent, kind = marker.group("indent"), marker.group("kind")
        if kind == "BEGIN":
            if inside is not None:
                raise SolutionMarkerError(f"{where}, line {lineno}: {BEGIN} inside the block opened on line {opened_at}")
            if not indent:
                raise SolutionMarkerError(
                    f"{where}, line {lineno}: a solution block must be inside a function body, "
                    "so that the student edition's stub raises only when the function is called")
            inside, opened_at = indent, lineno
        else:
            if inside is None:
                raise SolutionMarkerError(f"{where}, line {lineno}: {END} without a {BEGIN}")
            if indent != inside:
                raise SolutionMarkerError(f"{where}, line {lineno}: {END} is indented differently from "
                                          f"the {BEGIN} on line {opened_at}")
            out.append(f"{inside}# YOUR CODE HERE")
            out.append(f'{inside}raise NotImplementedError("{STUB_MESSAGE}")')
            inside = None
            count += 1
    if inside is not None:
        raise SolutionMarkerError(f"{where}, line {opened_at}: {BEGIN} is never closed")
    return "\n".join(out), count


def count_solutions(nb: nbformat.NotebookNode) -> int:
    """How many solution blocks the notebook's code cells hold."""
    return sum(strip_solutions(cell.source, f"cell {i}")[1]
               for i, cell in enumerate(nb.cells) if cell.cell_type == "code")


def student_notebook(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """A copy of ``nb`` with solutions stubbed, outputs cleared and counts reset."""
    student = copy.deepcopy(nb)
    student.metadata.pop("widgets", None)
    for i, cell in enumerate(student.cells):
        if cell.cell_type != "code":
            continue
        cell.source, _ = strip_solutions(cell.source, f"cell {i}")
        cell.outputs = []
        cell.execution_count = None
    return student


def write_student_edition(paths: list[Path], out_dir: Path) -> list[Path]:
    """Write the student edition of each notebook into ``out_dir``; returns the new paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        target = out_dir / Path(path).name
        nbformat.write(student_notebook(nb), target)
        written.append(target)
    return written
