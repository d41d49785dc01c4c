"""The course as a learner sees it: every notebook run in JupyterLab, in a headless Chromium.

For each notebook, as a learner opens it (the student edition when it has exercises, see
lab.stage_notebooks): open it, Run → Run All Cells, wait, then check the page. No cell may show
an error or a warning, every cell must have run, every widget the committed notebook has must
be drawn (not "Loading widget..." or "Error displaying widget"), every figure must be there, and
every check of a student edition must say "not done yet". The notebooks that train or sample
(``amplifies_rounding`` on the course map) run in a kernel on the second kernel path
(``course_lib.authoring.notebooks.second_kernel_path``); they are saved from the page and each cell's outputs
must equal the stored ones, compared as strict nbval compares them (tests/test_second_kernel_path.py
says why).
A screenshot of the top of each notebook, and of its first widget, goes to artifacts/browser/.

Two notebooks are also opened as RISE slideshows (from their stored outputs, nothing is run):
there must be several slides, the first showing the notebook's title, every figure must load,
and the right-arrow key must move on. Screenshots of the first four slides are saved too.
(Widgets show as text in the slideshow: jupyterlab-rise does not load the ipywidgets 8
manager, https://github.com/jupyterlab-contrib/rise/issues/119; the explorers' figures are
ordinary images and still show.)

Run only these tests with ``.venv/bin/python -m pytest tests/browser``; limit the notebooks with
``COURSE_BROWSER_NOTEBOOKS=00,04``.
"""
import time

import nbformat
import pytest

from lab import (SANITIZE_FILE, SECOND_PATH_NOTEBOOKS, TIMINGS, WIDGET_MIME, check_reports, committed_cells,
                 exercises, next_slide, notebook_title, open_notebook, open_slideshow, output_differences,
                 problems, read_cells, run_all_cells, save_notebook, scroll_to, second_path_kernel,
                 selected_notebooks, slideshow_figures, wait_for_run)

pytestmark = pytest.mark.browser

NOTEBOOK_TIMEOUT = 600  # seconds for Run All Cells; the heaviest notebooks need about 2 minutes on 2 cores
SLIDESHOWS = ("00", "04")  # the notebooks also checked as slideshows
SLIDES_TO_VISIT = 4  # the first slide and three more


@pytest.mark.parametrize("path", selected_notebooks(), ids=lambda path: path.name)
def test_notebook_runs_cleanly_in_jupyterlab(path, lab, page, page_errors, artifacts):
    n_cells, expected = committed_cells(path)

    screenshot = artifacts / f"{path.stem}.png"
    start = time.monotonic()
    try:
        open_notebook(page, lab, f"notebooks/{path.name}", n_cells)
        opened = time.monotonic()
        run_all_cells(page)
    except Exception:
        page.screenshot(path=screenshot)  # what the page showed instead
        raise
    interrupted = wait_for_run(page, NOTEBOOK_TIMEOUT)
    ran = time.monotonic()
    shown = read_cells(page)

    # What a learner sees: the top of the notebook, and the first widget with its figure.
    scroll_to(page)
    page.screenshot(path=screenshot)
    widget = next(((i, k) for i, cell in enumerate(shown) for k, out in enumerate(cell["outputs"])
                   if out["mime"] == WIDGET_MIME), None)
    if widget:
        scroll_to(page, *widget)
        page.screenshot(path=artifacts / f"{path.stem}_widget.png")
    TIMINGS.append(f"{path.name}: opened in {opened - start:.1f} s, ran in {ran - opened:.1f} s, "
                   f"checked in {time.monotonic() - ran:.1f} s")

    found = problems(n_cells, expected, shown)
    if path.name in SECOND_PATH_NOTEBOOKS and not interrupted:
        kernels = sorted({session["kernel"]["name"] for session in lab.api("GET", "api/sessions")})
        if kernels != [second_path_kernel(SECOND_PATH_NOTEBOOKS[path.name])]:
            found.append(f"the notebook ran in the kernel(s) {kernels}, not in "
                         f"{second_path_kernel(SECOND_PATH_NOTEBOOKS[path.name])!r}")
        ran_nb = save_notebook(page, lab.root / "notebooks" / path.name)
        differences = output_differences(nbformat.read(path, as_version=4), ran_nb, SANITIZE_FILE)
        if differences:
            settings = " ".join(f"{k}={v}" for k, v in SECOND_PATH_NOTEBOOKS[path.name].items())
            found.append(f"on the second kernel path ({settings}) these cells print digits that another CPU would "
                         "round differently: print a claim that holds everywhere instead (course_lib.assert_claims; "
                         f"README, For maintainers). Reproduce with\n    {settings} .venv/bin/python -m pytest -n 0 "
                         f"notebooks/{path.name}")
            found += differences
    if exercises(path):  # the page ran the student edition
        found += check_reports(shown, exercises(path))
    if interrupted:
        found.insert(0, interrupted)
    if found and page_errors:
        found.append("JavaScript errors in the page: " + "; ".join(page_errors[:5]))
    assert not found, (f"{path.name} after Run All Cells in JupyterLab (screenshot: {screenshot}):\n"
                       + "\n".join(f"- {problem}" for problem in found))


@pytest.mark.parametrize("path", [path for path in selected_notebooks() if path.name[:2] in SLIDESHOWS],
                         ids=lambda path: path.name)
def test_notebook_presents_as_slides(path, lab, page, artifacts):
    # The committed notebook, stored outputs and all: a slideshow shows them without running anything.
    state = open_slideshow(page, lab, f"stored/{path.name}")
    page.screenshot(path=artifacts / f"slides_{path.stem}_1.png", animations="disabled")
    title = notebook_title(path)
    assert state["slides"] > 1, (
        f"{path.name}: reveal.js shows {state['slides']} slide(s); do the cells carry slideshow metadata?")
    assert title in state["text"], f"{path.name}: the first slide should show {title!r}; it shows:\n{state['text']}"

    figures = slideshow_figures(path)
    assert all(state["figures"]) and len(state["figures"]) >= figures, (
        f"{path.name}: the slideshow should show {figures} figure(s); it has {state['figures'].count(True)} "
        f"and {state['figures'].count(False)} image(s) that did not load")

    for number in range(1, min(SLIDES_TO_VISIT, state["slides"]) + 1):
        if number > 1:
            state = next_slide(page)
            page.screenshot(path=artifacts / f"slides_{path.stem}_{number}.png", animations="disabled")
        assert not state["errors"], f"{path.name}, slide {number} shows an error:\n" + "\n".join(state["errors"])
