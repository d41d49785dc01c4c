"""course_lib/README.md, the map of the package: one row per module, in the order of the course, with the
modules each one builds on. The rows must match the files, and "builds on" the imports."""
import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "course_lib"
MAP = PACKAGE / "README.md"
ROW = re.compile(r"^\|\s*`(?P<module>[\w/]+\.py)`\s*\|(?P<notebook>[^|]+)\|(?P<what>[^|]+)\|(?P<needs>[^|]*)\|$")


def _rows():
    """{module path: (notebook column, builds-on set)}, in the map's order."""
    rows = {}
    for line in MAP.read_text(encoding="utf-8").splitlines():
        match = ROW.match(line)
        if match:
            assert match["module"] not in rows, f"{match['module']} has two rows"
            needs = {name.strip().strip("`") for name in match["needs"].split(",") if name.strip()}
            rows[match["module"]] = (match["notebook"].strip(), needs)
    return rows


def _modules():
    """Every module a reader may open: the package's files, without the subpackages' __init__/__main__."""
    found = set()
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE).as_posix()
        if path.name == "__main__.py" or (path.name == "__init__.py" and "/" in relative):
            continue
        found.add(relative)
    return found


def _imports(relative: str) -> set[str]:
    """The course_lib modules that a file imports, written as in the map (``shapes``, ``checks.core``)."""
    tree = ast.parse((PACKAGE / relative).read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("course_lib"):
            if node.module in ("course_lib", "course_lib.checks", "course_lib.authoring"):
                names |= {f"{node.module}.{alias.name}" for alias in node.names}
            else:
                names.add(node.module)
        elif isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names if alias.name.startswith("course_lib")}
    own = relative[:-3].replace("/", ".")
    return {name.removeprefix("course_lib.") for name in names} - {own}


def test_the_map_has_one_row_per_module():
    rows = _rows()
    assert set(rows) == _modules(), (f"missing from course_lib/README.md: {sorted(_modules() - set(rows))}; "
                                     f"no such file: {sorted(set(rows) - _modules())}")


def test_builds_on_lists_what_each_module_imports():
    for module, (_, needs) in _rows().items():
        imports = _imports(module)
        assert needs == imports, (f"{module}: the map says it builds on {sorted(needs)}, it imports "
                                  f"{sorted(imports)}")


def test_the_lessons_follow_the_arc():
    """The first table lists the lesson modules by the notebook that introduces them, 00 to 14."""
    text = MAP.read_text(encoding="utf-8")
    lessons = text.split("## The lessons")[1].split("\n## ")[0]
    numbers = [int(m["notebook"]) for line in lessons.splitlines() if (m := ROW.match(line))]
    assert len(numbers) > 10 and numbers == sorted(numbers) and numbers[0] == 0 and numbers[-1] == 14


def test_the_row_parser_can_fail():
    """A row with a wrong import list or a file without a row would be caught."""
    assert _imports("kv_cache.py") == {"masking", "shapes"}
    assert "authoring/notebooks.py" in _modules() and "checks/core.py" in _modules()
    assert ROW.match("| `x.py` | 01 | what | `a`, `b` |")["needs"].strip() == "`a`, `b`"
