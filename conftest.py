"""Test-suite set-up shared by the unit tests and the nbval notebook runs.

The suite runs on several processes (pytest-xdist, ``-n`` in pyproject.toml). The hooks below keep
that correct and quick:

- every cell of a notebook runs in the same worker, in order (nbval gives each notebook one kernel);
  ``--dist=loadscope`` alone would do that too, and is what runs if this file's scheduler is not used;
- the runs that take longest (notebooks, their second kernel path, the browser) start first, and a
  worker takes the next one only when it is nearly done, so that no worker is left with a queue of
  long runs while the other one idles;
- in the workers, OpenMP threads sleep instead of spinning while they wait: two torch processes with
  2 threads each on 2 cores otherwise slow each other down about 6 times over (measured: one epoch of
  the quick recipe took 17 s alone, 25 s each for two at once with sleeping threads, 108 s each with
  spinning ones).
"""
import os
import re

# Before torch is first imported (course_lib imports it), in this worker and every kernel it starts.
# Only where workers share the cores: alone, a process runs about 1.4x faster with threads that spin.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


from course_lib.course import NOTEBOOKS  # noqa: E402
from course_lib.authoring.notebooks import KERNEL_ENV  # noqa: E402

# Every notebook kernel inherits this environment: the CPU as device (so a machine with a GPU
# reproduces the stored CPU outputs) and a fixed hash seed.
os.environ.update(KERNEL_ENV)

AMPLIFYING = {f"{nb.number:02d}" for nb in NOTEBOOKS if nb.amplifies_rounding}
HEAVY_FIRST = sorted(NOTEBOOKS, key=lambda nb: (not nb.amplifies_rounding, -nb.number))


def pytest_configure(config):
    # On a fresh install matplotlib builds its font cache on first import and says so on stderr,
    # which nbval would report as an unexpected output of the first notebook: build it now.
    import matplotlib.font_manager  # noqa: F401


RUN_KINDS = (("nbval", ".ipynb::"), ("second path", "::test_notebook_prints_the_same_on_the_second_kernel_path["),
             ("browser", "::test_notebook_runs_cleanly_in_jupyterlab["))


def run_kind(nodeid: str) -> tuple[str, str] | None:
    """(notebook, kind) for a test that executes a notebook, e.g. ("11", "nbval"); None otherwise."""
    for kind, marker in RUN_KINDS:
        if marker in nodeid:
            name = nodeid.split("::", 1)[0] if kind == "nbval" else nodeid.split("[", 1)[1]
            match = re.search(r"(\d\d)_\w+\.ipynb", name)
            if match:
                return match.group(1), kind
    return None


def notebook_of(item) -> str | None:
    """The notebook (``"11"``) that a test executes: an nbval cell, a second-path or a browser run."""
    key = run_kind(item.nodeid)
    return key[0] if key else None


def notebook_run(nodeid: str) -> bool:
    """Whether a test id is one notebook's run in another setting (second kernel path, browser)."""
    key = run_kind(nodeid)
    return key is not None and key[1] != "nbval"


def pytest_collection_modifyitems(config, items):
    """Notebook runs first, the longest first; then the unit tests, in their own order."""
    rank = {f"{nb.number:02d}": i for i, nb in enumerate(HEAVY_FIRST)}

    def order(indexed):
        index, item = indexed
        number = notebook_of(item)
        return (0, rank[number], index) if number in rank else (1, 0, index)

    items[:] = [item for _, item in sorted(enumerate(items), key=order)]


def unit_of_work(nodeid: str) -> str:
    """What one worker runs as a whole: a notebook's cells, one run of a notebook in another setting,
    or a module of unit tests."""
    if ".ipynb::" in nodeid or not notebook_run(nodeid):
        return nodeid.split("::", 1)[0]
    return nodeid


def pytest_xdist_make_scheduler(config, log):
    from xdist.scheduler import LoadScopeScheduling

    class LongRunsFirst(LoadScopeScheduling):
        """xdist's ``loadscope`` in the order collected, with these units of work: all the cells of a
        notebook (one kernel runs them in order), each other run of a notebook, and each module of
        unit tests. A worker gets its next unit only when the last item of its current one is all it
        has left (a worker must know its next item before it runs one), so that long runs are not
        queued behind each other while the other worker idles."""

        def _split_scope(self, nodeid):
            return unit_of_work(nodeid)

        def _reschedule(self, node):
            if node.shutting_down:
                return
            if not self.workqueue:
                node.shutdown()
                return
            if self._pending_of(self.assigned_work[node]) > 1:
                return
            self._assign_work_unit(node)

    return LongRunsFirst(config, log)


# --- what each notebook costs: printed at the end of every run that executed notebooks --------------

COSTS: dict[tuple[str, str], float] = {}
RAN: set[tuple[str, str]] = set()  # runs that were not skipped: they reached their call phase


def pytest_runtest_logreport(report):
    key = run_kind(report.nodeid)
    if key is not None:  # setup, call and teardown: a notebook's kernel starts in its first cell's setup
        COSTS[key] = COSTS.get(key, 0.0) + report.duration
        if report.when == "call":
            RAN.add(key)


def pytest_terminal_summary(terminalreporter):
    costs = {key: seconds for key, seconds in COSTS.items() if key in RAN}
    if not costs:
        return
    kinds = [kind for kind, _ in RUN_KINDS]
    terminalreporter.section("seconds per notebook (each worker shares the cores with the others)")
    terminalreporter.write_line(f"{'notebook':<10}" + "".join(f"{kind:>13}" for kind in kinds) + f"{'all':>10}")
    totals = dict.fromkeys(kinds, 0.0)
    for number in sorted({number for number, _ in costs}):
        row = [costs.get((number, kind)) for kind in kinds]
        for kind, seconds in zip(kinds, row):
            totals[kind] += seconds or 0.0
        cells = "".join(f"{'-' if s is None else f'{s:.1f}':>13}" for s in row)
        terminalreporter.write_line(f"{number:<10}{cells}{sum(s or 0.0 for s in row):>10.1f}")
    terminalreporter.write_line(f"{'all':<10}" + "".join(f"{totals[k]:>13.1f}" for k in kinds)
                                + f"{sum(totals.values()):>10.1f}")
    second = sorted(number for number, kind in costs if kind == "browser" and number in AMPLIFYING)
    if second:
        terminalreporter.write_line(f"(the browser ran {', '.join(second)} on the second kernel path and compared "
                                    "their outputs with the stored ones)")
