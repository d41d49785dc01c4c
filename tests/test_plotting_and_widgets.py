import ipywidgets as widgets
import matplotlib
import matplotlib.pyplot as plt
import pytest

from course_lib.course import NOTEBOOKS
from course_lib.plotting import apply_style, course_map_layout, figure_to_png, plot_course_map
from course_lib.widgets import Explorer, explorer, make_control


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_apply_style_sets_course_defaults():
    matplotlib.rcdefaults()
    apply_style()
    assert matplotlib.rcParams["axes.grid"] is True
    assert matplotlib.rcParams["figure.dpi"] == 100


def test_course_map_has_a_box_and_arrows_for_every_notebook():
    ax = plot_course_map()
    assert len(ax.patches) == 2 * len(NOTEBOOKS)  # a filled and an outlined box each
    arrows = [child for child in ax.texts if getattr(child, "arrow_patch", None) is not None]
    assert len(arrows) == sum(len(nb.needs) for nb in NOTEBOOKS)
    labels = {t.get_text() for t in ax.texts}
    assert {f"{nb.number:02d}" for nb in NOTEBOOKS} <= labels
    positions = list(course_map_layout().values())
    assert len(set(positions)) == len(NOTEBOOKS)  # no two boxes on top of each other


def test_figure_to_png():
    fig, ax = plt.subplots()
    ax.plot([0, 1])
    assert figure_to_png(fig).startswith(b"\x89PNG")


@pytest.mark.parametrize("spec, kind, value", [
    ((1, 10), widgets.IntSlider, 1),
    ((1, 10, 2, 5), widgets.IntSlider, 5),
    ((0.0, 1.0), widgets.FloatSlider, 0.0),
    ((0, 1.0, 0.1, 0.5), widgets.FloatSlider, 0.5),
    (["a", "b"], widgets.Dropdown, "a"),
    (True, widgets.Checkbox, True),
    ("Hallo Welt", widgets.Text, "Hallo Welt"),
])
def test_make_control(spec, kind, value):
    control = make_control("name", spec)
    assert isinstance(control, kind) and control.value == value and control.description == "name"


def test_make_control_keeps_widgets_and_rejects_nonsense():
    slider = widgets.IntSlider()
    assert make_control("x", slider) is slider
    with pytest.raises(TypeError, match="control 'x': expected"):
        make_control("x", {"a": 1})
    with pytest.raises(ValueError, match="start value 20 is outside"):
        make_control("x", (0, 10, 1, 20))


def _draw(n=2):
    fig, ax = plt.subplots()
    ax.plot(range(n))
    ax.set_title(f"n = {n}")
    return fig


def test_explorer_redraws_when_a_control_moves():
    ex = Explorer(_draw, {"n": (2, 9, 1, 2)})
    first = ex.png
    assert first.startswith(b"\x89PNG") and ex.values == {"n": 2}
    ex.controls["n"].value = 9
    assert ex.png != first
    assert plt.get_fignums() == []  # every drawn figure was closed


def test_explorer_needs_controls():
    with pytest.raises(ValueError, match="at least one control"):
        Explorer(_draw, {})


def test_explorer_displays_controls_then_figure(monkeypatch):
    shown = []
    monkeypatch.setattr("course_lib.widgets.display", lambda obj, **kw: shown.append(obj))
    assert explorer(_draw, n=(1, 5)) is None
    assert isinstance(shown[0], widgets.VBox)
    assert shown[1].data.startswith(b"\x89PNG")
