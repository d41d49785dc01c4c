"""The first code cell of every notebook: install ``course_lib`` on a hosted notebook service.

A notebook opened on its own in Google Colab, Kaggle Notebooks or a similar service has no
``course_lib``. Its first code cell, :data:`INSTALL_CELL`, notices that, clones the course's
repository next to the notebook, installs it with pip in editable mode (so ``course_lib``
finds the repository's ``data/`` folder, the trained model included) and makes it importable
in the running kernel, without a restart. Where ``course_lib`` is installed already (locally,
in CI) the cell prints nothing and returns at once, so the stored outputs stay empty.

``python -m course_lib.authoring hosted`` puts the cell into every notebook with
:func:`ensure_install_cell`; ``run`` does the same before executing a notebook.
"""
from __future__ import annotations

import nbformat

#: Where the course lives. The install cell clones it; pyproject.toml's [project.urls] names it too.
REPOSITORY_URL = "https://github.com/attention-course/attention-course"

#: Environment variable that replaces :data:`REPOSITORY_URL` in the cell, for forks and mirrors.
REPOSITORY_ENV = "COURSE_REPOSITORY"

#: The cell's id in every notebook: how :func:`ensure_install_cell` finds it again.
INSTALL_CELL_ID = "hosted-install"

#: The source of the install cell, the first code cell of every notebook.
INSTALL_CELL = f'''\
# On a hosted service (Colab, Kaggle, ...) this cell installs the course's library, course_lib.
# Where course_lib is installed already, it does nothing.
import importlib.util

if importlib.util.find_spec("course_lib") is None:
    import os, subprocess, sys

    def _run(command, advice):
        try:
            result = subprocess.run(command, capture_output=True, text=True)
        except FileNotFoundError:  # the program itself (git) is missing
            raise RuntimeError(f"{{command[0]}} is not installed: install it and run this cell again.") from None
        if result.returncode != 0:
            raise RuntimeError(f"{{' '.join(command)}} failed:\\n{{result.stderr[-2000:]}}\\n{{advice}}")

    repository = os.environ.get("{REPOSITORY_ENV}", "{REPOSITORY_URL}")
    folder = os.path.abspath("..")  # is this notebook inside a copy of the repository already?
    if os.path.isdir(os.path.join(folder, "course_lib")):
        source = f"the repository around this notebook, {{folder}}"
    else:  # no: clone it next to the notebook (or reuse the clone of an earlier try)
        folder = os.path.abspath("attention-course")
        source = f"{{repository}}, cloned into {{folder}}"
        if not os.path.isdir(folder):
            _run(["git", "clone", "--depth", "1", repository, folder],
                 "Check the internet connection and the address ({REPOSITORY_ENV} sets another one).")
    # Editable (-e): course_lib reads its data, such as the trained model, from the repository.
    _run([sys.executable, "-m", "pip", "install", "--quiet", "-e", folder],
         f"Read pip's message above. To start afresh, delete {{folder}} and run this cell again.")
    sys.path.insert(0, folder)  # importable now, without restarting the kernel
    importlib.invalidate_caches()
    print(f"Installed course_lib from {{source}}.")'''


def is_install_cell(cell: nbformat.NotebookNode) -> bool:
    """Whether ``cell`` is a notebook's install cell (found by its id, whatever its source says)."""
    return cell.get("id") == INSTALL_CELL_ID


def _install_position(nb: nbformat.NotebookNode) -> int:
    """Right after the opening markdown cell (the title), or at the very top."""
    return 1 if nb.cells and nb.cells[0].cell_type == "markdown" else 0


def ensure_install_cell(nb: nbformat.NotebookNode) -> bool:
    """Make :data:`INSTALL_CELL` the notebook's first code cell, right after its title.

    An install cell that is already there is updated when its source differs from
    :data:`INSTALL_CELL` (its outputs are dropped with the old code) and moved when it stands
    elsewhere; a current one is left alone, outputs and all. The cell's slide type is "skip", and
    its code is collapsed in JupyterLab (``jupyter.source_hidden``): it is plumbing, not course content.
    Returns whether the notebook changed.
    """
    found = [cell for cell in nb.cells if is_install_cell(cell)]
    others = [cell for cell in nb.cells if not is_install_cell(cell)]
    position = 1 if others and others[0].cell_type == "markdown" else 0  # after the title
    current = len(found) == 1 and found[0].cell_type == "code" and found[0].source == INSTALL_CELL
    if (current and nb.cells[position] is found[0] and _slide_type(found[0]) == "skip"
            and found[0].metadata.get("jupyter", {}).get("source_hidden") is True):
        return False
    if current:
        cell = found[0]
    else:
        cell = nbformat.v4.new_code_cell(INSTALL_CELL)
        cell.id = INSTALL_CELL_ID
    cell.metadata.setdefault("slideshow", {})["slide_type"] = "skip"  # never shown as a slide
    cell.metadata.setdefault("jupyter", {})["source_hidden"] = True  # JupyterLab shows it collapsed
    others.insert(position, cell)
    nb.cells = others
    return True


def _slide_type(cell: nbformat.NotebookNode) -> str | None:
    return cell.get("metadata", {}).get("slideshow", {}).get("slide_type")
