"""The course's plotting style and the figures that several notebooks share."""
from __future__ import annotations

import io

import matplotlib

from course_lib.course import PARTS

# Okabe–Ito colours: distinguishable with the common forms of colour blindness.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")

STYLE = {
    "figure.figsize": (6.4, 4.0),
    "figure.dpi": 100,
    "savefig.dpi": 100,
    "font.size": 11,
    "axes.titlesize": 12,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.prop_cycle": matplotlib.cycler(color=PALETTE),
    "image.cmap": "viridis",
    "legend.frameon": False,
}


def apply_style() -> None:
    """Set matplotlib's defaults to the course style (called by ``course_lib.setup``)."""
    matplotlib.rcParams.update(STYLE)


def figure_to_png(fig, dpi: int = 100) -> bytes:
    """Render a matplotlib figure to PNG bytes (used by the widget explorers)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return buffer.getvalue()


_PART_COLOURS = dict(zip(PARTS, PALETTE))
_MAP_STEP, _MAP_ROW, _MAP_W, _MAP_H = 4.2, 2.9, 3.9, 1.45


def course_map_layout() -> dict[int, tuple[float, float]]:
    """Box centres for the course map: a snake of two rows, the first half left to right, the rest back."""
    from course_lib.course import NOTEBOOKS

    per_row = (len(NOTEBOOKS) + 1) // 2
    positions = {}
    for nb in NOTEBOOKS:
        row, col = divmod(nb.number, per_row)
        if row % 2:
            col = per_row - 1 - col
        positions[nb.number] = (col * _MAP_STEP, -row * _MAP_ROW)
    return positions


def _map_edge(start: tuple[float, float], end: tuple[float, float]):
    """End points and curvature of one prerequisite arrow on the course map."""
    (x0, y0), (x1, y1) = start, end
    w, h = _MAP_W / 2, _MAP_H / 2
    if abs(y0 - y1) > 1e-9:  # to the row below: bottom edge to top edge
        return (x0, y0 - h), (x1, y1 + h), 0.0
    if abs(abs(x1 - x0) - _MAP_STEP) < 1e-9:  # neighbours: side to side
        sign = 1 if x1 > x0 else -1
        return (x0 + sign * w, y0), (x1 - sign * w, y1), 0.0
    # skips a box in the same row: an arc over the top row, under the bottom row
    top_row = y0 == 0
    y_edge = h if top_row else -h
    rad = -0.35 if (x1 > x0) == top_row else 0.35
    return (x0, y0 + y_edge), (x1, y1 + y_edge), rad


def plot_course_map(ax=None):
    """Draw the series as a graph: a box per notebook, an arrow from each prerequisite.

    Boxes are coloured by part of the course. Returns the matplotlib Axes.
    """
    import textwrap

    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    from course_lib.course import NOTEBOOKS
    from course_lib.diagrams import _box  # the course's box, as in every diagram

    if ax is None:
        _, ax = plt.subplots(figsize=(16, 5.4))
    pos = course_map_layout()
    w, h = _MAP_W, _MAP_H
    for nb in NOTEBOOKS:
        x, y = pos[nb.number]
        colour = _PART_COLOURS[nb.part]
        _box(ax, x, y, w, h, "", colour, fill_alpha=0.15)
        ax.text(x, y + 0.57, f"{nb.number:02d}", ha="center", va="center", fontsize=9, color=colour,
                fontweight="bold")
        ax.text(x, y + 0.05, textwrap.fill(nb.title, 18), ha="center", va="center", fontsize=9, fontweight="bold")
        ax.text(x, y - 0.52, nb.concept, ha="center", va="center", fontsize=7.5, color="#333333")
    for nb in NOTEBOOKS:
        for need in nb.needs:
            start, end, rad = _map_edge(pos[need], pos[nb.number])
            ax.annotate("", xy=end, xytext=start,
                        arrowprops=dict(arrowstyle="-|>", color="#444444", lw=1.2, shrinkA=1, shrinkB=1,
                                        connectionstyle=f"arc3,rad={rad}"))
    xs = [p[0] for p in pos.values()]
    ys = [p[1] for p in pos.values()]
    ax.set_xlim(min(xs) - w / 2 - 0.2, max(xs) + w / 2 + 0.2)
    ax.set_ylim(min(ys) - h / 2 - 1.0, max(ys) + h / 2 + 1.0)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.legend(handles=[Patch(facecolor=c, alpha=0.4, edgecolor=c, label=p) for p, c in _PART_COLOURS.items()],
              loc="lower center", ncol=len(_PART_COLOURS), bbox_to_anchor=(0.5, -0.2), fontsize=10)
    ax.set_title("The course map: an arrow A → B means read A before B", fontsize=12)
    return ax
