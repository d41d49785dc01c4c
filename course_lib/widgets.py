"""Interactive explorers that still read well when the notebook is only rendered.

:func:`explorer` shows the controls and, under them, the figure as an ordinary PNG
output drawn at the starting values. Moving a control redraws that same output in
place. A rendered notebook (GitHub, a static HTML export, a printout) therefore shows a
meaningful figure, and a live kernel shows the same figure responding to the controls.
The figure's title should name the values it was drawn with, so the static picture
says what it shows.
"""
from __future__ import annotations

from typing import Any, Callable

import ipywidgets as widgets
from IPython.display import Image, display


def make_control(name: str, spec: Any) -> widgets.ValueWidget:
    """Turn a short description into a widget.

    ``(lo, hi)`` or ``(lo, hi, step)`` of ints gives an ``IntSlider``, with any float a
    ``FloatSlider`` (the value starts at ``lo`` unless a 4th item gives it); a list or
    tuple of strings gives a ``Dropdown``; a bool gives a ``Checkbox``; a string a
    ``Text`` box; an existing widget is used as it is.
    """
    if isinstance(spec, widgets.ValueWidget):
        return spec
    style = {"description_width": "initial"}
    if isinstance(spec, bool):
        return widgets.Checkbox(value=spec, description=name, style=style)
    if isinstance(spec, str):
        return widgets.Text(value=spec, description=name, style=style, continuous_update=False)
    if isinstance(spec, (list, tuple)) and spec and all(isinstance(s, str) for s in spec):
        return widgets.Dropdown(options=list(spec), value=spec[0], description=name, style=style)
    if isinstance(spec, tuple) and len(spec) in (2, 3, 4) and all(
            isinstance(s, (int, float)) and not isinstance(s, bool) for s in spec):
        lo, hi = spec[0], spec[1]
        step = spec[2] if len(spec) >= 3 else None
        start = spec[3] if len(spec) == 4 else lo
        if not lo <= start <= hi:
            raise ValueError(f"control {name!r}: start value {start} is outside [{lo}, {hi}]")
        if all(isinstance(s, int) for s in spec):
            return widgets.IntSlider(value=start, min=lo, max=hi, step=step or 1, description=name,
                                     style=style, continuous_update=False)
        return widgets.FloatSlider(value=start, min=lo, max=hi, step=step or (hi - lo) / 100,
                                   description=name, style=style, continuous_update=False)
    raise TypeError(
        f"control {name!r}: expected (lo, hi[, step[, start]]) numbers, a list of strings, a bool, "
        f"a string or an ipywidget; got {spec!r}"
    )


class Explorer:
    """Controls plus a figure that is redrawn whenever a control changes."""

    def __init__(self, draw: Callable[..., Any], controls: dict[str, Any]):
        if not controls:
            raise ValueError("an explorer needs at least one control")
        self.draw = draw
        self.controls = {name: make_control(name, spec) for name, spec in controls.items()}
        self.box = widgets.VBox(list(self.controls.values()))
        self.png = self._render()
        self._handle = None
        for control in self.controls.values():
            control.observe(self._on_change, names="value")

    @property
    def values(self) -> dict[str, Any]:
        return {name: control.value for name, control in self.controls.items()}

    def _render(self) -> bytes:
        import matplotlib.pyplot as plt

        from course_lib.plotting import figure_to_png

        fig = self.draw(**self.values)
        if fig is None:
            fig = plt.gcf()
        try:
            return figure_to_png(fig)
        finally:
            plt.close(fig)

    def _on_change(self, _change=None) -> None:
        self.png = self._render()
        if self._handle is not None:
            self._handle.update(Image(data=self.png))

    def show(self) -> "Explorer":
        display(self.box)
        self._handle = display(Image(data=self.png), display_id=True)
        return self


def explorer(draw: Callable[..., Any], **controls: Any) -> None:
    """Show ``controls`` and the figure ``draw(**values)`` returns, redrawn on every change.

    Returns nothing, so the cell shows only the controls and the figure (use
    :class:`Explorer` directly to keep a handle on them).

    Example::

        def draw(T=4):
            fig, ax = plt.subplots()
            ax.plot(range(T))
            ax.set_title(f"T = {T}")
            return fig

        explorer(draw, T=(1, 10, 1, 4))
    """
    Explorer(draw, controls).show()
