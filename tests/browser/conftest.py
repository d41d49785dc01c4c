"""Fixtures of the browser tests: one JupyterLab server and one Chromium for the whole run.

Without Chromium or the ``playwright`` package the tests are skipped, saying what is missing;
with ``COURSE_REQUIRE_BROWSER=1`` (CI sets it) a missing tool is a failure instead.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from course_lib.authoring.notebooks import resolve
from lab import (CHROMIUM_FLAGS, SECOND_PATH_NOTEBOOKS, TIMINGS, VIEWPORT, LabServer, close_notebooks, find_chromium,
                 stage_notebooks)

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "artifacts" / "browser"


def missing_tools() -> list[str]:
    missing = []
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("the Python package playwright (it comes with: pip install -e '.[test]')")
    if find_chromium() is None:
        missing.append("a chromium executable on PATH (Debian: apt-get install chromium)")
    return missing


@pytest.fixture(scope="session")
def browser_tools():
    missing = missing_tools()
    if missing:
        reason = "browser tests need " + " and ".join(missing)
        if os.environ.get("COURSE_REQUIRE_BROWSER") == "1":
            pytest.fail(f"{reason} (COURSE_REQUIRE_BROWSER=1 makes this a failure)", pytrace=False)
        pytest.skip(reason)


@pytest.fixture(scope="session")
def lab(browser_tools, tmp_path_factory):
    """JupyterLab serving copies of the notebooks from a scratch folder."""
    workdir = tmp_path_factory.mktemp("jupyterlab")
    root = workdir / "root"
    stage_notebooks(resolve([]), root, second_path=SECOND_PATH_NOTEBOOKS)
    server = LabServer(root, workdir)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def browser(browser_tools):
    from playwright.sync_api import sync_playwright

    playwright = sync_playwright().start()
    try:
        chromium = playwright.chromium.launch(executable_path=find_chromium(), args=list(CHROMIUM_FLAGS))
        try:
            yield chromium
        finally:
            chromium.close()
    finally:
        playwright.stop()


@pytest.fixture(scope="session")
def browser_tab(browser):
    """One tab for all the notebooks of a worker: JupyterLab loads once in it (lab.open_notebook)."""
    context = browser.new_context(viewport=VIEWPORT)
    try:
        yield context.new_page()
    finally:
        context.close()


@pytest.fixture
def page(browser_tab, lab):
    """The worker's tab; afterwards its notebooks are closed and the kernels they started shut down."""
    try:
        yield browser_tab
    finally:
        close_notebooks(browser_tab, lab)
        lab.shutdown_kernels()


@pytest.fixture
def page_errors(page) -> list[str]:
    """The JavaScript errors the page raises during one test."""
    errors: list[str] = []

    def record(error) -> None:
        errors.append(str(error))

    page.on("pageerror", record)
    yield errors
    page.remove_listener("pageerror", record)


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


def pytest_terminal_summary(terminalreporter):
    if TIMINGS:
        terminalreporter.section("notebooks in JupyterLab")
        for line in TIMINGS:
            terminalreporter.write_line(line)
