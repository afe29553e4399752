"""One look for every seqmem figure: a fixed colour and marker per model, text sized for the page.

A model keeps its colour and marker in every plot (`seqmem compare`, `seqmem report`, `seqmem bench`,
the docs' figures and notebooks), so a reader who learned that the LSTM is the blue squares does not
have to learn it again. Each registered model's colour and marker are in its `ModelSpec` (the six
classic ones from the Okabe-Ito palette, which stays distinguishable under the common colour-vision
deficiencies, Okabe & Ito 2008; the newer families from Paul Tol's); any other name (a user's model
without a spec colour) gets a colour and marker chosen from its name by a stable hash, so it too is the
same in every plot and every process.

Figures are drawn to be shown at their natural size in a page column of `PAGE_WIDTH_PX` CSS pixels
(the content column of the docs site at a 1280 px window): `FIGURE_WIDTH` inches at `DISPLAY_DPI`,
so that a point of matplotlib text is a point on the screen and `FONT_PT` (11 pt) text reads as
11 pt. Files are written at `SAVE_DPI`, twice the display resolution, for sharp high-density screens;
`save_figure` records the smallest text size of the figure in the PNG's metadata, which the docs
check (`scripts/check_docs.py`) reads.

Use `plot_style()` around the code that draws a figure (or `use()` once in a notebook), `line_style`
for each model's line, and `save_figure` to write it atomically.
"""

from __future__ import annotations

import contextlib
import io
import os
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ._files import atomic_write_bytes

__all__ = [
    "BACKEND_LINESTYLES",
    "DISPLAY_DPI",
    "FIGURE_WIDTH",
    "FONT_PT",
    "PAGE_WIDTH_PX",
    "RC",
    "SAVE_DPI",
    "line_style",
    "model_family",
    "model_style",
    "plot_style",
    "png_bytes",
    "save_figure",
    "use",
]

# For models without a colour in their spec (users' models): Paul Tol's "muted" and "dark" hues that
# no built-in family uses, and markers that none uses.
_FALLBACK_COLORS = ("#661100", "#6699CC", "#4477AA", "#AA3377", "#228833", "#BBBBBB", "#222255", "#997700")
_FALLBACK_MARKERS = ("*", "<", ">", "8", "1", "2", "3", "4")

BACKEND_LINESTYLES: dict[str, str] = {"torch": "-", "numba": "--", "torch.nn": ":"}
"""Line style per implementation: seqmem's `"torch"` backend, its `"numba"` kernels, the `torch.nn`
baselines of `seqmem bench`. Other backends are drawn dash-dotted."""

PAGE_WIDTH_PX = 688
"""Width of the docs' content column at a 1280 px window, in CSS pixels (measured in Chromium)."""

DISPLAY_DPI = 96
"""CSS pixels per inch: at this resolution a point of matplotlib text is a point on the page."""

FIGURE_WIDTH = PAGE_WIDTH_PX / DISPLAY_DPI
"""Figure width in inches that fills the page column without being scaled down (7.17 in)."""

SAVE_DPI = 2 * DISPLAY_DPI
"""Resolution of the PNG files: twice the display resolution, sharp on high-density screens."""

FONT_PT = 11.0
"""The smallest text of a figure (tick labels, legends), in points at the displayed size."""

RC: dict[str, Any] = {
    "figure.figsize": (FIGURE_WIDTH, 4.4),
    "figure.dpi": DISPLAY_DPI,
    "savefig.dpi": SAVE_DPI,
    "figure.constrained_layout.use": True,
    "font.size": FONT_PT,
    "axes.titlesize": FONT_PT + 1,
    "axes.labelsize": FONT_PT,
    "xtick.labelsize": FONT_PT,
    "ytick.labelsize": FONT_PT,
    "legend.fontsize": FONT_PT,
    "legend.title_fontsize": FONT_PT,
    "figure.titlesize": FONT_PT + 1,
    "axes.grid": True,
    "axes.grid.which": "both",
    "grid.alpha": 0.3,
    "lines.linewidth": 1.8,
    "lines.markersize": 6.0,
    "legend.framealpha": 0.9,
}
"""matplotlib settings of every seqmem figure (`plot_style`, `use`)."""


def _registered() -> dict[str, Any]:
    from .registry import list_models

    return {spec.name: spec for spec in list_models()}


def model_family(name: str) -> str:
    """The model a plot label stands for: `"lstm/numba"` -> `"lstm"`, `"torch.nn.GRUCell"` -> `"gru"`.

    Args:
        name: a model name (`"lstm"`), a bench label (`"model/backend"`), or a `torch.nn` class name
            (the registered model whose `ModelSpec.torch_equivalents` holds that class).

    Returns:
        The registered model's name where one matches, else `name` unchanged.
    """
    specs = _registered()
    if name in specs:
        return name
    if name.startswith("torch.nn."):
        cls = name.removeprefix("torch.nn.")
        return next((n for n, s in specs.items() if any(t.__name__ == cls for t in s.torch_equivalents)), name)
    head, sep, _ = name.partition("/")
    return head if sep and head in specs else name


def model_style(name: str) -> tuple[str, str]:
    """The colour and marker of a model, the same in every figure.

    A registered model's come from its `ModelSpec` (`color`, `marker`); bench labels (`"lstm/numba"`)
    and `torch.nn` class names (`"torch.nn.LSTM"`) take their model's (see `model_family`).

    Args:
        name: a model name or label.

    Returns:
        `(color, marker)`: a hex colour and a matplotlib marker. For a name without a spec colour (a
        user's model), chosen by a hash of the name that is stable across processes and runs, from
        colours and markers no built-in family uses (two user models may share a colour, but then
        not, in general, a marker).

    Raises:
        TypeError: if `name` is not a string.

    Examples:
        >>> from seqmem.plotstyle import model_style
        >>> model_style("lstm")
        ('#0072B2', 's')
        >>> model_style("torch.nn.LSTM") == model_style("lstm/numba")
        True
        >>> model_style("my_cell") == model_style("my_cell")
        True
    """
    if not isinstance(name, str):
        raise TypeError(f"model_style: name must be a str, got {type(name).__name__}")
    spec = _registered().get(model_family(name))
    h = zlib.crc32(name.encode("utf-8"))
    color = spec.color if spec is not None and spec.color else _FALLBACK_COLORS[h % len(_FALLBACK_COLORS)]
    marker = spec.marker if spec is not None and spec.marker else _FALLBACK_MARKERS[(h // 7) % len(_FALLBACK_MARKERS)]
    return color, marker


def line_style(name: str, backend: str | None = None) -> dict[str, str]:
    """Keyword arguments for `Axes.plot` of one model (and backend): colour, marker, line style.

    Args:
        name: the model's name or label, as for `model_style`.
        backend: `"torch"` (solid), `"numba"` (dashed); `torch.nn` baselines (names starting with
            `"torch.nn."`) are dotted whatever the backend; `None` draws a solid line.

    Returns:
        `{"color": ..., "marker": ..., "linestyle": ...}`.
    """
    color, marker = model_style(name)
    if name.startswith("torch.nn."):
        linestyle = BACKEND_LINESTYLES["torch.nn"]
    elif backend is None:
        linestyle = "-"
    else:
        linestyle = BACKEND_LINESTYLES.get(backend, "-.")
    return {"color": color, "marker": marker, "linestyle": linestyle}


@contextlib.contextmanager
def plot_style(**overrides: Any) -> Iterator[None]:
    """A context in which matplotlib draws with seqmem's settings (`RC`, plus `overrides`).

    matplotlib reads its settings when an artist is made, so draw the whole figure inside it.

    Args:
        **overrides: rcParams to change, with dots written as in matplotlib
            (`plot_style(**{"figure.figsize": (7, 3)})`).

    Yields:
        Nothing; the settings are restored afterwards.
    """
    import matplotlib

    with matplotlib.rc_context({**RC, **overrides}):
        yield


def use() -> None:
    """Apply seqmem's settings to matplotlib for the rest of the session (for notebooks and scripts).

    In a Jupyter kernel, inline figures are also shown as `png_bytes` draws them: at twice their
    resolution and shown at their natural size ("retina"), with their text size in the metadata, as
    the files `save_figure` writes.
    """
    import matplotlib

    matplotlib.rcParams.update(RC)
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython is not installed
        return
    shell = get_ipython()
    if shell is not None:  # pragma: no cover - only inside a kernel
        from matplotlib.figure import Figure

        # The inline backend registers its own PNG formatter when it loads, which matplotlib does
        # lazily, at the first figure: load it now, so that ours is the one that stays.
        with contextlib.suppress(ImportError):
            import matplotlib_inline.backend_inline  # noqa: F401
        shell.display_formatter.formatters["image/png"].for_type(Figure, _notebook_png)


def _notebook_png(fig: Any) -> tuple[bytes, dict[str, int]]:
    """A figure for a notebook: `png_bytes` at twice the display resolution, shown at half its pixels."""
    dpi = 2 * fig.dpi
    width, height = fig.get_size_inches() * fig.dpi
    return png_bytes(fig, dpi=dpi), {"width": round(width), "height": round(height)}


def _smallest_text_pt(fig: Any) -> tuple[float, float | None]:
    """The smallest font size of the visible text in `fig`, and of its legends' text (points).

    Read without drawing the figure (a draw lays out every text, as long as saving it does): tick
    labels get their text only when drawn, so they count by the font size of their axis.
    """
    from matplotlib.axis import Tick
    from matplotlib.legend import Legend
    from matplotlib.text import Text

    sizes = [t.get_fontsize() for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]
    sizes += [tick.label1.get_fontsize() for tick in fig.findobj(Tick) if tick.label1.get_visible()]
    legend_sizes = [t.get_fontsize() for leg in fig.findobj(Legend) for t in leg.get_texts() if t.get_text().strip()]
    return (min(sizes) if sizes else FONT_PT), (min(legend_sizes) if legend_sizes else None)


def png_bytes(fig: Any, *, dpi: float = SAVE_DPI) -> bytes:
    """A matplotlib figure as PNG bytes, with its smallest text size in the metadata.

    The PNG gets the text chunks `seqmem:min_font_pt` and (with a legend) `seqmem:legend_font_pt`;
    with the resolution (`dpi`, stored in the PNG) they give the size of the text in pixels, which
    the docs check (`scripts/check_docs.py`) compares with the width the page shows the figure at.

    Args:
        fig: a `matplotlib.figure.Figure`.
        dpi: pixels per inch of the image.

    Returns:
        The PNG file's bytes.
    """
    smallest, legend = _smallest_text_pt(fig)
    metadata = {"Software": "seqmem (matplotlib)", "seqmem:min_font_pt": f"{smallest:g}"}
    if legend is not None:
        metadata["seqmem:legend_font_pt"] = f"{legend:g}"
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, metadata=metadata)
    return buf.getvalue()


def save_figure(fig: Any, path: str | os.PathLike[str], *, dpi: float = SAVE_DPI) -> Path:
    """Write a matplotlib figure as PNG (`png_bytes`), atomically, readable as `open()` would make it.

    Args:
        fig: a `matplotlib.figure.Figure`.
        path: where to write the PNG (its folder is created if missing).
        dpi: pixels per inch of the file.

    Returns:
        The path written.
    """
    return atomic_write_bytes(path, png_bytes(fig, dpi=dpi))
