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

import ast
import copy
import re
import textwrap
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


def count_exercises(nb: nbformat.NotebookNode) -> int:
    """How many exercises the notebook holds: top-level functions or classes with a solution block.

    A build exercise is one class whose methods hold several blocks; it has one check.
    """
    count = 0
    for cell in nb.cells:
        if cell.cell_type != "code" or not solution_blocks(cell.source):
            continue
        marked = [n for n, line in enumerate(cell.source.splitlines(), 1) if _MARKER.match(line)]
        try:
            body = ast.parse(cell.source).body
        except SyntaxError:
            continue
        count += sum(1 for node in body if isinstance(node, (ast.FunctionDef, ast.ClassDef))
                     and any(node.lineno <= n <= node.end_lineno for n in marked))
    return count


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


# --- No answer before its exercise ------------------------------------------------------------
# A solution "stands earlier" when the substance of its code already appears in one earlier code
# cell of the same notebook, whatever the variables are called: the learner could copy it. The
# comparison works on the syntax tree, so comments, spacing and names do not matter, while the
# operations (attributes, calls, operators, constants) do.

MIN_NODES = 6  # smaller expressions (``q.shape[-1]``, ``torch.exp(x)``, ``a @ b``) are too common to count


class _Anonymise(ast.NodeTransformer):
    """Every variable and argument name becomes ``_``; attribute names and constants stay."""

    def visit_Name(self, node: ast.Name) -> ast.AST:
        return ast.copy_location(ast.Name(id="_", ctx=ast.Load()), node)

    def visit_arg(self, node: ast.arg) -> ast.AST:
        node.arg, node.annotation = "_", None
        return node


def _expression_roots(tree: ast.AST) -> list[ast.AST]:
    """The expressions that carry a statement's work: right-hand sides, returned values, calls."""
    roots = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Return, ast.Expr)) \
                and node.value is not None:
            roots.append(node.value)
    return roots


def _size(node: ast.AST) -> int:
    """The number of expression nodes (names, attributes, calls, constants, operations)."""
    return sum(1 for n in ast.walk(node) if isinstance(n, ast.expr))


def expression_fingerprints(code: str) -> set[str]:
    """The anonymised dumps of every substantial expression (and sub-expression) of ``code``.

    Returns an empty set for code that does not parse (such as IPython magics).
    """
    try:
        tree = _Anonymise().visit(ast.parse(textwrap.dedent(code)))
    except SyntaxError:
        return set()
    prints = set()
    for root in _expression_roots(tree):
        for node in ast.walk(root):
            if isinstance(node, ast.expr) and _size(node) >= MIN_NODES:
                prints.add(ast.dump(node, annotate_fields=False))
    return prints


def _solution_key_expressions(code: str) -> list[tuple[str, str]]:
    """The top-level expressions of a solution block (one per statement), anonymised.

    Each as (its dump, which is compared; its code, which messages show: ``_.softmax(_, dim=-1)``).
    """
    try:
        tree = _Anonymise().visit(ast.parse(textwrap.dedent(code)))
    except SyntaxError:
        return []
    return [(ast.dump(root, annotate_fields=False), ast.unparse(root)) for root in _expression_roots(tree)
            if _size(root) >= MIN_NODES]


def solution_blocks(source: str) -> list[str]:
    """The code between each pair of solution markers of one cell's source."""
    blocks, current = [], None
    for line in source.splitlines():
        marker = _MARKER.match(line)
        if marker is None:
            if current is not None:
                current.append(line)
        elif marker.group("kind") == "BEGIN":
            current = []
        else:
            blocks.append("\n".join(current or []))
            current = None
    return blocks


def earlier_answers(nb: nbformat.NotebookNode) -> list[str]:
    """Solutions whose substance already stands in one earlier code cell of ``nb``.

    For each solution block, take its substantial statement-level expressions (names
    anonymised). If one earlier code cell contains more than half of them, the notebook gives
    the answer away before the exercise asks for it. Returns one message per such block, naming the
    cells and the shared code.
    """
    problems = []
    earlier: list[tuple[int, set[str]]] = []
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        for block in solution_blocks(cell.source):
            wanted = _solution_key_expressions(block)
            if not wanted:
                continue
            best_index, best = None, []
            for earlier_index, prints in earlier:
                found = [(dump, text) for dump, text in wanted if dump in prints]
                if len(found) > len(best):
                    best_index, best = earlier_index, found
            if 2 * len(best) > len(wanted):
                shown = "; ".join(text for _, text in best)
                problems.append(f"the solution in cell {index} already stands in cell {best_index} "
                                f"({len(best)} of its {len(wanted)} statements): {shown}")
        earlier.append((index, expression_fingerprints(_without_solutions(cell.source))))
    return problems


def _without_solutions(source: str) -> str:
    """The source with its solution blocks removed (a cell's own solution is not a giveaway)."""
    return strip_solutions(source)[0]
