"""Run, check and publish the course notebooks.

    python -m course_lib.authoring list              the series and which notebooks exist
    python -m course_lib.authoring run [NAME ...]    execute and store outputs (all when no NAME)
    python -m course_lib.authoring check [NAME ...]  stored outputs: no errors, all run, in order
    python -m course_lib.authoring student [--out DIR] [NAME ...]   write the student edition
    python -m course_lib.authoring slides [--outline] [NAME ...]    set the cells' slide types
    python -m course_lib.authoring hosted [NAME ...]   put the install cell first (hosted services)

``run`` executes a notebook the way the test suite's nbval does: a kernel from this
Python environment, started in the notebook's folder, with ``COURSE_DEVICE=cpu`` (so the
stored outputs are the ones CI reproduces) and a fixed hash seed. Before executing, it puts
the install cell first (as ``hosted`` does); afterwards it sets the slide types (as ``slides``
does, since they depend on the outputs). ``slides`` and ``hosted`` change no other cell and
write a notebook only when something changed. NAME is a number (``3``), a prefix (``03``),
a slug or a file name.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import nbformat

from course_lib.course import NOTEBOOK_DIR, NOTEBOOKS, Notebook, get_notebook

#: Environment every notebook kernel gets, here and in the test suite (see conftest.py).
KERNEL_ENV = {"COURSE_DEVICE": "cpu", "PYTHONHASHSEED": "0"}

#: A second way for the same CPU to compute, for the test suite: torch's plain C++ kernels instead of
#: the AVX2/AVX-512 ones it picks by itself (``ATEN_CPU_CAPABILITY``), and MKL's code path that gives
#: the same bits on every x86 CPU instead of the one tuned for this one (``MKL_CBWR``). Both round
#: sums in another order, as another CPU model does; a notebook must print the same text either way.
SECOND_KERNEL_PATH = {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "COMPATIBLE"}


def second_kernel_path(nb: Notebook) -> dict[str, str]:
    """The environment of the second run of ``nb``: :data:`SECOND_KERNEL_PATH`, without ``MKL_CBWR``
    where the course map says ``second_path_mkl=False``.

    MKL's CPU-independent path is what makes the difference for a matrix product's bits, and it is
    slow: on a 2-core AMD EPYC a (512 x 256) @ (256 x 8000) product took 59 ms instead of 19.5 ms, and
    notebook 12 ran in 139 s with it, 74 s with ``ATEN_CPU_CAPABILITY`` alone (71 s natively);
    notebook 11 in 152 s, 107 s and 72 s.
    """
    if not nb.amplifies_rounding:
        raise ValueError(f"{nb.filename} neither trains nor samples (amplifies_rounding=False): it has no second run")
    return {key: value for key, value in SECOND_KERNEL_PATH.items() if nb.second_path_mkl or key != "MKL_CBWR"}


def resolve(names: list[str] | None, directory: Path = NOTEBOOK_DIR) -> list[Path]:
    """Paths of the named notebooks, or of every notebook present when ``names`` is empty."""
    if not names:
        return sorted(directory.glob("[0-9][0-9]_*.ipynb"))
    paths = []
    for name in names:
        candidate = Path(name)
        if candidate.suffix == ".ipynb" and candidate.exists():
            paths.append(candidate)
            continue
        path = directory / get_notebook(name).filename
        if not path.exists():
            raise FileNotFoundError(f"{path} is on the course map but has not been written yet")
        paths.append(path)
    return paths


def problems(nb: nbformat.NotebookNode) -> list[str]:
    """What is wrong with a stored notebook: error outputs, unexecuted cells, counts out of order."""
    found = []
    counts = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code" or not cell.source.strip():
            continue
        if cell.execution_count is None:
            found.append(f"code cell {i} was never executed")
        else:
            counts.append(cell.execution_count)
        for output in cell.get("outputs", []):
            if output.output_type == "error":
                found.append(f"code cell {i} stores an error: {output.ename}: {output.evalue[:100]}")
    if counts != list(range(1, len(counts) + 1)):
        found.append(f"execution counts are not 1, 2, ..., {len(counts)} in order: {counts[:10]}")
    return found


def _current_env_kernel_manager():
    """A kernel manager that starts ipykernel with this very Python, as nbval --nbval-current-env does."""
    from jupyter_client.kernelspec import KernelSpec, KernelSpecManager
    from jupyter_client.manager import KernelManager

    class CurrentEnvSpecs(KernelSpecManager):
        def get_kernel_spec(self, kernel_name):
            return KernelSpec(argv=[sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                              display_name="Python 3 (course)", language="python")

    return KernelManager(kernel_name="python3", kernel_spec_manager=CurrentEnvSpecs())


def execute(nb: nbformat.NotebookNode, cwd: Path, timeout: int = 900,
            allow_errors: bool = False) -> nbformat.NotebookNode:
    """Execute ``nb`` in place, in a fresh kernel started in ``cwd``, and return it."""
    from nbclient import NotebookClient

    saved = {key: os.environ.get(key) for key in KERNEL_ENV}
    os.environ.update(KERNEL_ENV)
    try:
        client = NotebookClient(nb, km=_current_env_kernel_manager(), timeout=timeout,
                                allow_errors=allow_errors, record_timing=False,
                                store_widget_state=True, resources={"metadata": {"path": str(cwd)}})
        client.execute()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return nb


def write_atomically(nb: nbformat.NotebookNode, path: Path) -> None:
    """Write a notebook through a temporary file, so a crash never leaves half a file."""
    path = Path(path)
    if path.exists():
        mode = path.stat().st_mode & 0o777
    else:  # what a plain open() would have made
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            nbformat.write(nb, handle)
        os.chmod(tmp, mode)  # mkstemp makes 0600 files; keep the notebook's own permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def run_notebook(path: Path, timeout: int = 900) -> list[str]:
    """Execute one notebook from a clean kernel and store its outputs; returns its problems.

    The install cell is put first before executing, and the slide types are set afterwards.
    """
    from course_lib.authoring import hosted, slides

    nb = nbformat.read(path, as_version=4)
    hosted.ensure_install_cell(nb)
    slides.split_at_headings(nb)  # markdown only: a heading never shares a cell with the text above it
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    nb.metadata.pop("widgets", None)
    execute(nb, Path(path).parent, timeout=timeout)
    slides.apply(nb)
    write_atomically(nb, path)
    return problems(nb)


def update_notebook(path: Path, change) -> bool:
    """Apply ``change(nb) -> bool`` to the notebook at ``path``; write it only when it changed."""
    nb = nbformat.read(path, as_version=4)
    changed = change(nb)
    if changed:
        write_atomically(nb, path)
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m course_lib.authoring", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="the series and which notebooks exist")
    run_p = sub.add_parser("run", help="execute notebooks and store their outputs")
    run_p.add_argument("names", nargs="*")
    run_p.add_argument("--timeout", type=int, default=900, help="seconds per cell")
    check_p = sub.add_parser("check", help="check the stored outputs")
    check_p.add_argument("names", nargs="*")
    student_p = sub.add_parser("student", help="write the student edition")
    student_p.add_argument("names", nargs="*")
    student_p.add_argument("--out", type=Path, default=NOTEBOOK_DIR.parent / "student")
    slides_p = sub.add_parser("slides", help="set every cell's slide type (metadata only)")
    slides_p.add_argument("names", nargs="*")
    slides_p.add_argument("--outline", action="store_true",
                          help="print each notebook's slides instead of writing anything")
    hosted_p = sub.add_parser("hosted", help="put the install cell for hosted services first")
    hosted_p.add_argument("names", nargs="*")
    args = parser.parse_args(argv)

    if args.command == "list":
        for nb in NOTEBOOKS:
            state = "" if nb.available else "   (not written yet)"
            print(f"{nb.filename:<36} {nb.title}{state}")
        return 0
    paths = resolve(args.names)
    if args.command == "student":
        from course_lib.authoring.student import write_student_edition

        for path in write_student_edition(paths, args.out):
            print(f"wrote {path}")
        return 0
    if args.command in ("slides", "hosted"):
        from course_lib.authoring import hosted, slides

        for path in paths:
            if args.command == "slides" and args.outline:
                print(f"{path.name}:")
                print("\n".join(slides.outline(nbformat.read(path, as_version=4))))
                continue
            change = slides.split_and_apply if args.command == "slides" else hosted.ensure_install_cell
            print(f"{path.name}: {'updated' if update_notebook(path, change) else 'already current'}")
        return 0
    status = 0
    for path in paths:
        if args.command == "run":
            import time

            start = time.perf_counter()
            print(f"running {path.name} ...", flush=True)
            found = run_notebook(path, timeout=args.timeout)
            print(f"  stored outputs in {time.perf_counter() - start:.1f} s")
        else:
            found = problems(nbformat.read(path, as_version=4))
        for message in found:
            print(f"{path.name}: {message}")
        status |= bool(found)
    if args.command == "check" and not status:
        print(f"{len(paths)} notebook(s) stored cleanly: every code cell executed, in order, without errors")
    return int(status)


if __name__ == "__main__":
    sys.exit(main())
