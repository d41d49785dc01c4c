"""A real JupyterLab and a headless Chromium, for the browser tests in this folder.

The tests drive the course the way a learner does: open a notebook in JupyterLab, choose
Run → Run All Cells, look at the page. This module holds the pieces that are not tests:

- :func:`stage_notebooks` copies the notebooks into a scratch folder, so the browser never
  touches (or autosaves over) the committed files;
- :class:`LabServer` starts ``jupyter lab`` on 127.0.0.1 with a private token, settings and
  workspaces, and shuts it down with its kernels;
- :func:`open_notebook`, :func:`run_all_cells` and :func:`read_cells` drive and read the page;
- :func:`problems` compares what the page shows with what the committed notebook stores.

The functions that drive a page take a Playwright ``Page``; the module itself loads without
Playwright, so that the tests can say what is missing instead of failing to import.
"""
from __future__ import annotations

import copy
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import nbformat

from course_lib.checks.core import _ICONS
from course_lib.course import NOTEBOOKS
from course_lib.authoring.student import count_exercises, count_solutions, student_notebook

from course_lib.authoring.notebooks import KERNEL_ENV, resolve, second_kernel_path

WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
STDERR_MIME = "application/vnd.jupyter.stderr"  # JupyterLab shows both stderr and tracebacks with it
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    # The page may load only what the local server serves, as on an offline CI machine.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
)
VIEWPORT = {"width": 1400, "height": 1000}
# The notebooks that train or sample run in a kernel of their own: the same Python, on the second
# kernel path (course_lib.authoring.notebooks.second_kernel_path). Their outputs are compared with the stored ones.
SECOND_PATH_NOTEBOOKS = {nb.filename: second_kernel_path(nb) for nb in NOTEBOOKS if nb.amplifies_rounding}


def second_path_kernel(env: dict[str, str]) -> str:
    """The name of the kernel spec that starts Python with ``env``, e.g. ``course-aten-cpu-capability-default``."""
    return "course-" + "-".join(f"{key}-{value}" for key, value in sorted(env.items())).lower().replace("_", "-")


SANITIZE_FILE = Path(__file__).resolve().parents[2] / "nbval_sanitize.cfg"  # as in pyproject.toml's addopts
TIMINGS: list[str] = []  # one line per notebook, printed at the end of the run (see conftest.py)

# Settings a fresh JupyterLab reads from its user-settings folder. Windowing "none" keeps every
# cell in the page (by default JupyterLab drops cells that are scrolled out of view), and news
# and update checks would only pop up a notification over the screenshots.
LAB_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false", "checkForUpdates": False},
}


def selected_notebooks() -> list[Path]:
    """Every notebook present, or those named in ``COURSE_BROWSER_NOTEBOOKS`` (e.g. ``00,04``)."""
    names = [name.strip() for name in os.environ.get("COURSE_BROWSER_NOTEBOOKS", "").split(",")]
    return resolve([name for name in names if name])


def find_chromium() -> str | None:
    """The Chromium executable on PATH (Debian names it ``chromium``), or None."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


# --- what the committed notebook promises -------------------------------------------------

@dataclass(frozen=True)
class CodeCell:
    """One code cell of a committed notebook and what its stored outputs contain."""

    index: int  # position among all cells, markdown included, as JupyterLab shows them
    first_line: str
    runs: bool  # empty cells are not executed
    widgets: int  # stored widget views
    figures: int  # stored PNG images

    def label(self) -> str:
        return f"cell {self.index} ({self.first_line!r})"


def first_line(source: str) -> str:
    line = next((line.strip() for line in source.splitlines() if line.strip()), "")
    return line if len(line) <= 70 else line[:67] + "..."


def committed_cells(path: Path) -> tuple[int, list[CodeCell]]:
    """The number of cells of the notebook at ``path`` and its code cells."""
    nb = nbformat.read(path, as_version=4)
    cells = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        data = [output.get("data", {}) for output in cell.outputs]
        cells.append(CodeCell(index=i, first_line=first_line(cell.source), runs=bool(cell.source.strip()),
                              widgets=sum(WIDGET_MIME in d for d in data),
                              figures=sum("image/png" in d for d in data)))
    return len(nb.cells), cells


def notebook_title(path: Path) -> str:
    """The text of the notebook's first heading, e.g. ``00 · Start here``."""
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        match = re.search(r"^#\s+(.+)$", cell.source, re.M) if cell.cell_type == "markdown" else None
        if match:
            return match.group(1).strip()
    raise ValueError(f"{path.name} has no markdown heading")


NOT_DONE, CORRECT = _ICONS["not done"], _ICONS["correct"]  # as the checks print them


def exercises(path: Path) -> int:
    """How many exercises (functions or classes with solution blocks) the notebook at ``path`` has."""
    return count_exercises(nbformat.read(path, as_version=4))


def stage_notebooks(paths: list[Path], root: Path, second_path: Mapping[str, dict[str, str]] | None = None) -> None:
    """Copy the notebooks into ``root``: ``notebooks/`` as learners open them, ``stored/`` as committed.

    ``notebooks/`` holds the student edition of a notebook with exercises (every solution a stub,
    as a class gets it from ``make student``) and a copy without outputs of the others. So every
    output on the page is the product of this run, and a run of a student edition is also the test
    that it runs top to bottom with every check saying "not done yet" (in CI, where this test runs,
    tests/test_student.py leaves that to it instead of executing the student editions a second
    time). Student editions keep every cell, so cell numbers, widgets and figures match the
    committed notebook. The kernels import ``course_lib`` from the installed (editable) package,
    which finds ``data/`` by its own location, and notebook 11's ``../runs`` lands in ``root``.
    A notebook named in ``second_path`` asks for the kernel that runs with the environment given there.
    """
    for folder in ("notebooks", "stored"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for path in paths:
        shutil.copy2(path, root / "stored" / path.name)
        nb = nbformat.read(path, as_version=4)
        if count_solutions(nb):
            nb = student_notebook(nb)  # outputs cleared too
        else:
            for cell in nb.cells:
                if cell.cell_type == "code":
                    cell.outputs, cell.execution_count = [], None
            nb.metadata.pop("widgets", None)
        if path.name in (second_path or {}):
            nb.metadata["kernelspec"] = {"name": second_path_kernel(second_path[path.name]), "language": "python",
                                         "display_name": "Python 3 (second kernel path)"}
        nbformat.write(nb, root / "notebooks" / path.name)


# --- the outputs, compared as strict nbval compares them ------------------------------------

# What nbval leaves out of a comparison (nbval.plugin.IPyNbFile.skip_compare, without nbdime).
NBVAL_SKIP_COMPARE = ("metadata", "traceback", "prompt_number", "output_type", "name", "execution_count",
                      WIDGET_MIME, "image/png", "image/jpeg")


class _NbvalComparison:
    """nbval's own comparison of one cell's outputs (sanitize patterns included), outside a pytest item."""

    from nbval.plugin import IPyNbCell, nocolors

    compare_outputs = IPyNbCell.compare_outputs
    format_output_compare = IPyNbCell.format_output_compare
    sanitize = IPyNbCell.sanitize
    colors = nocolors
    config = None
    ihook = SimpleNamespace(pytest_assertrepr_compare=lambda **_: [])  # nbval's plain reference/new layout

    def __init__(self, patterns: dict[str, str]):
        self.parent = SimpleNamespace(sanitize_patterns=patterns, skip_compare=NBVAL_SKIP_COMPARE)
        self.comparison_traceback: list[str] = []


def compared_by_nbval(cell) -> bool:
    """Whether strict nbval compares this code cell's outputs (no NBVAL_IGNORE_OUTPUT, NBVAL_SKIP...)."""
    from nbval.plugin import find_comment_markers, find_metadata_tags

    options = {**dict(find_metadata_tags(cell.metadata)), **dict(find_comment_markers(cell.source))}
    return options.get("check", True) and not options.get("skip") and cell.execution_count is not None


def output_differences(stored: nbformat.NotebookNode, ran: nbformat.NotebookNode,
                       sanitize_file: Path) -> list[str]:
    """The cells whose outputs in ``ran`` differ from those ``stored``, as strict nbval would report them.

    ``ran`` is a run of the student edition of ``stored`` (or of a copy): a cell whose source differs
    (a solution stubbed) and a cell whose output says a check is "not done yet" (a check of a stub)
    are not compared; every other cell that nbval compares must show the stored text.
    """
    from nbval.plugin import coalesce_streams, get_sanitize_patterns

    patterns = dict(get_sanitize_patterns(Path(sanitize_file).read_text()))
    found = []
    for i, (old, new) in enumerate(zip(stored.cells, ran.cells)):
        if old.cell_type != "code" or old.source != new.source or not compared_by_nbval(old):
            continue
        if any(NOT_DONE in output.get("text", "") or NOT_DONE in output.get("data", {}).get("text/plain", "")
               for output in new.outputs):
            continue
        comparison = _NbvalComparison(patterns)
        fresh, reference = (coalesce_streams(copy.deepcopy(list(cell.outputs))) for cell in (new, old))
        if not comparison.compare_outputs(fresh, reference):
            found.append(f"cell {i} ({first_line(old.source)!r}) prints other text than the stored one:\n    "
                         + "\n".join(comparison.comparison_traceback).replace("\n", "\n    "))
    return found


def check_reports(shown: list[dict], n_exercises: int) -> list[str]:
    """Problems with what the checks of a student edition say: each must be "not done yet"."""
    texts = [out["text"] for cell in shown for out in cell["outputs"]]
    not_done = sum(text.count(NOT_DONE) for text in texts)
    found = []
    if not_done < n_exercises:
        found.append(f"{not_done} check(s) say {NOT_DONE!r}, but the student edition has {n_exercises} "
                     "exercise(s) left as stubs")
    found += [f"a check passes with only a stub: {text.strip()[:200]!r}" for text in texts if CORRECT in text]
    return found


# --- the server -----------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LabServer:
    """``jupyter lab`` serving ``root`` on 127.0.0.1, with everything it writes under ``workdir``."""

    def __init__(self, root: Path, workdir: Path):
        self.root, self.workdir = Path(root), Path(workdir)
        self.token = secrets.token_hex(16)
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}/"
        self.log_path = self.workdir / "jupyterlab.log"
        self.process: subprocess.Popen | None = None

    def _environment(self) -> dict[str, str]:
        env = dict(os.environ)
        private = {}
        for name in ("settings", "workspaces", "config", "data", "runtime"):
            private[name] = self.workdir / name
            private[name].mkdir(parents=True, exist_ok=True)
        for second_path in SECOND_PATH_NOTEBOOKS.values():  # kernel specs, one per environment
            spec = private["data"] / "kernels" / second_path_kernel(second_path) / "kernel.json"
            spec.parent.mkdir(parents=True, exist_ok=True)
            spec.write_text(json.dumps({
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "Python 3 (" + " ".join(f"{k}={v}" for k, v in second_path.items()) + ")",
                "language": "python", "env": second_path}))
        for relative, values in LAB_SETTINGS.items():
            target = private["settings"] / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(json.dumps(values))
        env.update({
            # No settings, workspace, config or kernel spec of the person running the tests leaks in;
            # the kernel is the default one of this Python environment.
            "JUPYTERLAB_SETTINGS_DIR": str(private["settings"]),
            "JUPYTERLAB_WORKSPACES_DIR": str(private["workspaces"]),
            "JUPYTER_CONFIG_DIR": str(private["config"]),
            "JUPYTER_DATA_DIR": str(private["data"]),
            "JUPYTER_RUNTIME_DIR": str(private["runtime"]),
            **KERNEL_ENV,  # as in the nbval run: the CPU, a fixed hash seed
        })
        return env

    def start(self, timeout: float = 120) -> None:
        command = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1",
                   f"--port={self.port}", "--ServerApp.port_retries=0",
                   f"--IdentityProvider.token={self.token}", f"--ServerApp.root_dir={self.root}"]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            command.append("--allow-root")
        with open(self.log_path, "wb") as log:
            # A session of its own, so that stop() can end the server's kernels with it.
            self.process = subprocess.Popen(command, cwd=self.root, env=self._environment(), stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"jupyter lab exited with status {self.process.returncode} before it "
                                   f"answered:\n{self.log_tail()}")
            try:
                self.api("GET", "api/status", timeout=2)
                return
            except (OSError, urllib.error.URLError):
                time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"jupyter lab did not answer on {self.base} within {timeout:.0f} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no server log)"
        return "\n".join(text.splitlines()[-lines:])

    def url(self, path: str) -> str:
        return f"{self.base}{path}"

    def api(self, method: str, path: str, timeout: float = 10):
        request = urllib.request.Request(self.base + path, method=method,
                                         headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read()
        return json.loads(body) if body else None

    def shutdown_kernels(self) -> None:
        """End every session and kernel, so that the next notebook has the CPU to itself."""
        for session in self.api("GET", "api/sessions"):
            self.api("DELETE", f"api/sessions/{session['id']}")
        for kernel in self.api("GET", "api/kernels"):
            self.api("DELETE", f"api/kernels/{kernel['id']}")

    def stop(self) -> None:
        """Shut the server down through its API (kernels included); force it if it will not go."""
        if self.process is None or self.process.poll() is not None:
            return
        kernels = _children(self.process.pid)  # each kernel runs in a session of its own
        try:
            self.api("POST", "api/shutdown", timeout=5)
            self.process.wait(timeout=20)
        except (OSError, urllib.error.URLError, subprocess.TimeoutExpired):
            pass
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if self.process.poll() is not None:
                break
            try:  # the server's own session, started for it in start()
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                continue
        for pid, started in kernels:  # normally gone with the server; never left behind
            if _process_start(pid) == started:  # still that kernel, not a new process with its id
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass


def _stat(pid: int | str) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name, or None."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _process_start(pid: int) -> str | None:
    fields = _stat(pid)
    return fields[19] if fields else None  # field 22 of stat: the start time


def _children(pid: int) -> list[tuple[int, str]]:
    """(id, start time) of the processes whose parent is ``pid``; empty where there is no /proc."""
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        fields = _stat(entry.name)
        if fields and int(fields[1]) == pid:  # the field after the state is the parent's id
            found.append((int(entry.name), fields[19]))
    return found


# --- the page -------------------------------------------------------------------------------

# Every cell of the open notebook, in order, with what its prompt and outputs show.
READ_CELLS_JS = """
() => Array.from(document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-Cell'))
  .map(cell => ({
    kind: cell.classList.contains('jp-CodeCell') ? 'code'
        : cell.classList.contains('jp-MarkdownCell') ? 'markdown' : 'raw',
    prompt: (cell.querySelector('.jp-InputPrompt') || {textContent: ''}).textContent.trim(),
    // A collapsed input (the install cell's) shows a one-line placeholder, without the prompt.
    collapsed: Boolean(cell.querySelector('.jp-InputPlaceholder')),
    outputs: Array.from(cell.querySelectorAll('.jp-OutputArea-output')).map(out => {
      // JupyterLab's own renderers mark their output with its mime type; the widget renderer does not.
      // It shows "Loading widget..." first, then the widget's view as its child, or an error text.
      const isWidget = !out.dataset.mimeType && out.classList.contains('lm-Panel');
      const view = isWidget ? out.querySelector(':scope > .jupyter-widgets') : null;
      const box = view ? view.getBoundingClientRect() : null;
      return {
        mime: isWidget ? 'application/vnd.jupyter.widget-view+json' : (out.dataset.mimeType || ''),
        text: out.innerText.slice(0, 600),
        widget: Boolean(view && box.width > 0 && box.height > 0),
        images: Array.from(out.querySelectorAll('img')).map(img => ({
          loaded: img.complete && img.naturalWidth > 0, width: img.naturalWidth})),
      };
    }),
  }))
"""


def lab_is_loaded(page, server: LabServer) -> bool:
    """Whether the tab shows this server's JupyterLab, started and with no notebook open."""
    return (page.url.startswith(server.url("lab")) and page.locator("#jp-main-dock-panel").count() == 1
            and page.locator(".jp-NotebookPanel").count() == 0 and page.locator(".jp-Dialog").count() == 0)


def open_notebook(page, server: LabServer, relative_path: str, n_cells: int, timeout: float = 60) -> None:
    """Open a notebook and wait until all its cells are in the page.

    In a tab that already shows JupyterLab (see :func:`close_notebooks`), File → Open from Path…, as a
    learner may; otherwise load JupyterLab on the notebook's address with a fresh workspace. Loading
    JupyterLab takes about 5 s of a 2-core machine, so a worker loads it once and opens notebook after
    notebook in it.
    """
    if lab_is_loaded(page, server):
        page.get_by_role("menuitem", name="File", exact=True).click()
        page.locator('.lm-Menu li[data-command="filebrowser:open-path"]').click()
        field = page.locator(".jp-Dialog input")
        field.fill(relative_path)
        field.press("Enter")
    else:
        # ?reset starts from an empty workspace: no notebook of an earlier test is reopened.
        page.goto(server.url(f"lab/tree/{relative_path}?reset&token={server.token}"))
    page.wait_for_function(
        "n => document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-Cell').length === n",
        arg=n_cells, timeout=timeout * 1000)
    # Fold the file browser away: the notebook gets the whole width, as in the screenshots a learner
    # would want to see.
    side_tab = page.locator(".jp-SideBar.jp-mod-left .lm-TabBar-tab.lm-mod-current")
    if side_tab.count():
        side_tab.click()


def close_notebooks(page, server: LabServer, timeout: float = 15) -> None:
    """Save and close every open notebook, so that the tab shows an empty JupyterLab for the next one.

    Saving first (the copies under the server's root; never the committed files) means no dialog asks
    about unsaved changes. Whatever goes wrong, the tab is emptied instead, and the next notebook loads
    JupyterLab afresh.
    """
    try:
        if page.url.startswith(server.url("lab")) and page.locator(".jp-Dialog").count() == 0:
            if page.locator(".jp-NotebookPanel").count():
                page.get_by_role("menuitem", name="File", exact=True).click()
                page.locator('.lm-Menu li[data-command="docmanager:save-all"]').click()
                page.wait_for_function("() => !document.querySelector('.lm-TabBar-tab.jp-mod-dirty')",
                                       timeout=timeout * 1000)
                page.get_by_role("menuitem", name="File", exact=True).click()
                page.locator('.lm-Menu li[data-command="application:close-all"]').click()
                page.wait_for_function("() => !document.querySelector('.jp-NotebookPanel')", timeout=timeout * 1000)
            if lab_is_loaded(page, server):
                return
    except Exception:  # noqa: BLE001 - any trouble: start the next notebook from a fresh page
        pass
    page.goto("about:blank")


def _prompts(page) -> list[str]:
    """The input prompts of the visible notebook's code cells: "[ ]:", "[*]:", "[3]:", ..."""
    return page.eval_on_selector_all(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell .jp-InputPrompt",
                                     "nodes => nodes.map(n => n.textContent.trim())")


def run_has_started(prompts: list[str]) -> bool:
    """Whether any code cell is queued, running or done (its prompt is no longer empty)."""
    return any(p not in ("", "[ ]:") for p in prompts)


def run_all_cells(page, attempts: int = 3, started_within: float = 15.0) -> None:
    """Run → Run All Cells, through the menu as a learner does, until the run has visibly started.

    Run All queues every cell at once, so at least one prompt shows ``[*]`` within moments. Right
    after a notebook opens, a click can land on a menu that is still being drawn and do nothing (one
    CI run waited 600 s on a notebook that never started); then the menu is closed and the click
    repeated, at most ``attempts`` times.
    """
    for _ in range(attempts):
        page.get_by_role("menuitem", name="Run", exact=True).click()
        page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
        deadline = time.monotonic() + started_within
        while time.monotonic() < deadline:
            if run_has_started(_prompts(page)) or page.locator(".jp-Dialog").count():
                return
            time.sleep(0.25)
        page.keyboard.press("Escape")  # a menu left open would swallow the next click
    raise AssertionError(f"Run → Run All Cells did not start the notebook ({attempts} tries, "
                         f"{started_within:.0f} s each)")


def wait_for_run(page, timeout: float, poll: float = 0.5) -> str | None:
    """Wait until no cell is queued or running any more; None, or what cut the run short.

    A cell shows ``[*]`` from the moment Run All queues it until it finishes; when a cell fails,
    JupyterLab drops the rest of the queue, so the run is over when no ``[*]`` is left. A dialog
    (the kernel died, say) also ends the wait, with its text.
    """
    deadline = time.monotonic() + timeout
    started = False
    while time.monotonic() < deadline:
        dialog = page.locator(".jp-Dialog")
        if dialog.count():
            return "a dialog came up: " + " ".join(dialog.first.inner_text().split())
        prompts = _prompts(page)
        busy = any(p.startswith("[*]") for p in prompts)
        started = started or run_has_started(prompts)
        if started and not busy:
            return None
        time.sleep(poll)
    return f"the notebook was still running after {timeout:.0f} s"


def save_notebook(page, path: Path, timeout: float = 60) -> nbformat.NotebookNode:
    """File → Save Notebook; returns the notebook as JupyterLab wrote it to ``path``, outputs and all."""
    before = path.stat().st_mtime_ns
    page.get_by_role("menuitem", name="File", exact=True).click()
    page.locator('.lm-Menu li[data-command="docmanager:save"]').click()  # "Save Notebook  Ctrl+S"
    deadline = time.monotonic() + timeout
    while path.stat().st_mtime_ns == before:
        if time.monotonic() > deadline:
            raise AssertionError(f"JupyterLab did not save {path.name} within {timeout:.0f} s")
        time.sleep(0.2)
    while True:  # the server writes the file in one go, but read it only once it parses
        try:
            return nbformat.read(path, as_version=4)
        except (ValueError, json.JSONDecodeError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def read_cells(page, settle: float = 10, poll: float = 0.25) -> list[dict]:
    """What every cell shows, once widgets and images have had up to ``settle`` seconds to appear.

    A widget's view is built after its cell has finished, and an image is decoded after it is
    inserted, so the page is read again until nothing is pending any more.
    """
    deadline = time.monotonic() + settle
    while True:
        cells = page.evaluate(READ_CELLS_JS)
        pending = any((out["mime"] == WIDGET_MIME and not out["widget"])
                      or any(not image["loaded"] for image in out["images"])
                      for cell in cells for out in cell["outputs"])
        if not pending or time.monotonic() > deadline:
            return cells
        time.sleep(poll)


def problems(n_cells: int, expected: list[CodeCell], shown: list[dict]) -> list[str]:
    """What the page shows wrongly: errors, cells not run, widgets or figures missing."""
    if len(shown) != n_cells:
        return [f"the page shows {len(shown)} cells, the notebook has {n_cells}"]
    found = []
    counts = [int(m.group(1)) for c in shown if (m := re.fullmatch(r"\[(\d+)\]:", c["prompt"]))]
    last_count = max(counts, default=0)  # shows whether the collapsed cells ran too
    for cell in expected:
        page_cell = shown[cell.index]
        outputs = page_cell["outputs"]
        if cell.runs and page_cell.get("collapsed"):
            if last_count != sum(c.runs for c in expected):  # Run All numbers the cells 1, 2, ... in order
                found.append(f"{cell.label()} (input collapsed) did not run: the last execution count is "
                             f"{last_count}, but the notebook has {sum(c.runs for c in expected)} cells to run")
        elif cell.runs and page_cell["prompt"].startswith("[*]"):
            found.append(f"{cell.label()} was still queued or running")
        elif cell.runs and not re.fullmatch(r"\[\d+\]:", page_cell["prompt"]):
            found.append(f"{cell.label()} did not run (its prompt shows {page_cell['prompt']!r})")
        for out in outputs:
            if out["mime"] == STDERR_MIME:
                found.append(f"{cell.label()} shows an error or a warning:\n    "
                             + out["text"].strip().replace("\n", "\n    "))
        views = [out for out in outputs if out["mime"] == WIDGET_MIME]
        for out in views:
            if not out["widget"]:
                found.append(f"{cell.label()}: a widget is not drawn; the page shows {out['text'].strip()!r}")
        if len(views) < cell.widgets:
            found.append(f"{cell.label()}: {len(views)} widget(s) in the page, the committed notebook has "
                         f"{cell.widgets}")
        images = [image for out in outputs for image in out["images"]]
        broken = [image for image in images if not image["loaded"]]
        if broken:
            found.append(f"{cell.label()}: {len(broken)} of {len(images)} image(s) did not load")
        elif len(images) < cell.figures:
            found.append(f"{cell.label()}: {len(images)} figure(s) shown, the committed notebook has "
                         f"{cell.figures}")
    return found


def scroll_to(page, cell: int | None = None, output: int = 0) -> None:
    """Scroll the notebook to its top, or so that an output of ``cell`` stands near the top."""
    page.evaluate("""([cell, output]) => {
        const panel = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)');
        const scroller = panel.querySelector('.jp-WindowedPanel-outer');
        if (cell === null) { scroller.scrollTop = 0; return; }
        const target = panel.querySelectorAll('.jp-Notebook .jp-Cell')[cell]
                            .querySelectorAll('.jp-OutputArea-output')[output];
        scroller.scrollTop += target.getBoundingClientRect().top - scroller.getBoundingClientRect().top - 24;
    }""", [cell, output])


# --- the slideshow --------------------------------------------------------------------------

# Where the slideshow stands: how many slides, which one is shown, and what it shows.
SLIDE_STATE_JS = """
() => {
  const slides = Array.from(document.querySelectorAll('.reveal .slides > section'));
  const h = slides.findIndex(s => s.classList.contains('present'));
  const present = Array.from(document.querySelectorAll('.reveal .slides section.present')).pop();
  const stacked = h >= 0 ? Array.from(slides[h].querySelectorAll(':scope > section')) : [];
  return {
    slides: slides.length,
    position: [h, Math.max(0, stacked.findIndex(s => s.classList.contains('present')))],
    fragments: document.querySelectorAll('.reveal .fragment.visible').length,
    text: present ? present.innerText.slice(0, 2000) : '',
    errors: Array.from((present || document).querySelectorAll('[data-mime-type="application/vnd.jupyter.stderr"]'))
      .concat(Array.from(document.querySelectorAll('.jp-Dialog'))).map(n => n.innerText.slice(0, 600)),
    // every slide is in the page, shown or not: the figures of the whole slideshow
    figures: Array.from(document.querySelectorAll('.reveal .slides .jp-OutputArea-output img'))
      .map(img => img.complete && img.naturalWidth > 0),
  };
}
"""


def slideshow_figures(path: Path) -> int:
    """How many stored PNG figures the slideshow of the notebook at ``path`` should show."""
    nb = nbformat.read(path, as_version=4)
    return sum("image/png" in output.get("data", {})
               for cell in nb.cells if cell.cell_type == "code"
               and cell.metadata.get("slideshow", {}).get("slide_type") not in ("skip", "notes")
               for output in cell.outputs)


def open_slideshow(page, server: LabServer, relative_path: str, timeout: float = 60) -> dict:
    """Open a notebook as a reveal.js slideshow, as RISE's "Open as Reveal Slideshow" does."""
    page.goto(server.url(f"rise/{relative_path}?token={server.token}"))
    page.wait_for_selector(".reveal.ready .slides > section.present", timeout=timeout * 1000)
    return slide_state(page)


def slide_state(page) -> dict:
    return page.evaluate(SLIDE_STATE_JS)


def next_slide(page, timeout: float = 10) -> dict:
    """Press the right-arrow key and wait until the next slide (or fragment) is shown."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    def step(state):
        return json.dumps([state["position"], state["fragments"]], separators=(",", ":"))

    before = slide_state(page)
    page.keyboard.press("ArrowRight")
    try:
        page.wait_for_function(
            f"before => {{ const s = ({SLIDE_STATE_JS})(); return JSON.stringify([s.position, s.fragments]) !== before; }}",
            arg=step(before), timeout=timeout * 1000)
    except PlaywrightTimeout:
        raise AssertionError(f"the right-arrow key did not move on from slide {before['position']} within "
                             f"{timeout:.0f} s; it shows:\n{before['text'][:300]}") from None
    return slide_state(page)
