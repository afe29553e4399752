"""`seqmem.plotstyle`: one colour and marker per model in every figure, text sized for the page."""

from __future__ import annotations

import subprocess
import sys

import pytest

import seqmem
from seqmem.plotstyle import (
    FIGURE_WIDTH,
    FONT_PT,
    PAGE_WIDTH_PX,
    RC,
    line_style,
    model_family,
    model_style,
    plot_style,
    png_bytes,
    save_figure,
)

BUILTIN_STYLES = {spec.name: (spec.color, spec.marker) for spec in seqmem.list_models()}


def test_every_built_in_model_has_its_own_colour_and_marker():
    assert all(color and marker for color, marker in BUILTIN_STYLES.values())
    colors = [c for c, _ in BUILTIN_STYLES.values()]
    markers = [m for _, m in BUILTIN_STYLES.values()]
    assert len(set(colors)) == len(colors) and len(set(markers)) == len(markers)
    assert {name: model_style(name) for name in BUILTIN_STYLES} == BUILTIN_STYLES


@pytest.mark.parametrize(
    ("label", "family"),
    [("lstm", "lstm"), ("lstm/numba", "lstm"), ("gru/torch", "gru"), ("torch.nn.LSTM", "lstm"),
     ("torch.nn.GRUCell", "gru"), ("torch.nn.RNNCell", "rnn"), ("my_cell", "my_cell"),
     ("my_cell/numba", "my_cell/numba"), ("torch.nn.Linear", "torch.nn.Linear")],
)
def test_labels_map_to_their_family(label, family):
    assert model_family(label) == family
    if family in BUILTIN_STYLES:
        assert model_style(label) == BUILTIN_STYLES[family]


def test_other_names_get_a_style_that_is_the_same_in_another_process():
    names = ["my_cell", "MinGRU", "xlstm", "rwkv", "hyena", "retnet"]
    here = [model_style(n) for n in names]
    code = f"from seqmem.plotstyle import model_style; print([model_style(n) for n in {names!r}])"
    there = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert str(here) == there.strip()  # not Python's salted hash()
    builtin_colors = {c for c, _ in BUILTIN_STYLES.values()}
    assert not builtin_colors & {c for c, _ in here}  # never mistaken for a built-in model
    assert len(set(here)) > 1


def test_line_style_tells_the_implementation_by_the_line():
    assert line_style("lstm", "torch")["linestyle"] == "-"
    assert line_style("lstm", "numba")["linestyle"] == "--"
    assert line_style("torch.nn.LSTM", "oneDNN")["linestyle"] == ":"
    assert line_style("lstm", "something-new")["linestyle"] == "-."
    assert line_style("lstm")["color"] == line_style("torch.nn.LSTMCell", "oneDNN")["color"]


def test_model_style_rejects_a_non_string():
    with pytest.raises(TypeError, match="must be a str, got int"):
        model_style(3)


def test_figures_fill_the_page_at_eleven_points():
    assert FIGURE_WIDTH * RC["figure.dpi"] == pytest.approx(PAGE_WIDTH_PX)
    sizes = [v for k, v in RC.items() if k == "font.size" or k.endswith(("titlesize", "labelsize", "fontsize"))]
    assert sizes and min(sizes) >= FONT_PT >= 11


def test_png_records_its_smallest_text_and_resolution(tmp_path):
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    image = pytest.importorskip("PIL.Image")
    with plot_style():
        fig = Figure()
        ax = fig.add_subplot()
        ax.plot([1, 2], [3, 4], label="lstm", **line_style("lstm"))
        ax.legend(fontsize=8)
        ax.set_title("a title")
    path = save_figure(fig, tmp_path / "f.png")
    info = image.open(path).info
    assert float(info["seqmem:legend_font_pt"]) == 8 and float(info["seqmem:min_font_pt"]) == 8
    assert info["dpi"][0] == pytest.approx(2 * RC["figure.dpi"], rel=1e-3)
    assert png_bytes(fig)[:4] == b"\x89PNG"
    with plot_style(**{"ytick.labelsize": 9.5}):  # tick labels count, though drawn only when saved
        fig = Figure()
        fig.add_subplot().plot([1, 2], [3, 4])
    info = image.open(save_figure(fig, tmp_path / "g.png")).info
    assert float(info["seqmem:min_font_pt"]) == 9.5 and "seqmem:legend_font_pt" not in info


def test_plot_style_restores_matplotlib_settings():
    matplotlib = pytest.importorskip("matplotlib")
    before = matplotlib.rcParams["legend.fontsize"]
    with plot_style(**{"legend.fontsize": 13}):
        assert matplotlib.rcParams["legend.fontsize"] == 13
    assert matplotlib.rcParams["legend.fontsize"] == before
