"""scripts/check_docs.py, the CI check of the built site, on small sites with one fault each."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.script_loader import loaded_script

PAGE = """<!doctype html><html><head><style>a::after {{ content: "&amp;lt;" }}</style></head>
<body><nav><a href="#intro">Intro</a><a href="{nav}">other page</a></nav>
<article><h1 id="intro">Intro</h1>{body}</article>
<script>var s = "&amp;lt;";</script></body></html>"""


@pytest.fixture(scope="module")
def check():
    yield from loaded_script("check_docs")


def site(tmp_path: Path, pages: dict[str, str], files: dict[str, bytes] | None = None) -> Path:
    """A built site: `pages` maps a path (`api/x/index.html`) to the HTML inside <article>."""
    root = tmp_path / "site"
    pages = {"index.html": "<p>home</p>", **pages}
    for rel, body in pages.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        depth = rel.count("/")
        path.write_text(PAGE.format(body=body, nav="../" * depth + "index.html" if depth else "index.html"))
    for rel, data in (files or {}).items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


def figure(width_in: float, legend_pt: float, dpi: float) -> bytes:
    """A PNG drawn through seqmem.plotstyle, with one legend."""
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    from seqmem.plotstyle import plot_style, png_bytes

    with plot_style(**{"legend.fontsize": legend_pt, "font.size": legend_pt, "xtick.labelsize": legend_pt,
                       "ytick.labelsize": legend_pt, "axes.labelsize": legend_pt, "axes.titlesize": legend_pt}):
        fig = Figure(figsize=(width_in, 2.0))
        ax = fig.add_subplot()
        ax.plot([0, 1], [0, 1], label="lstm")
        ax.legend()
    return png_bytes(fig, dpi=dpi)


def test_a_clean_site_passes(check, tmp_path):
    root = site(tmp_path, {
        "api/a/index.html": '<div class="highlight"><pre><code>&gt;&gt;&gt; 1 + 1\n2</code></pre></div>'
                            "<blockquote><p>one quote is fine</p></blockquote>",
        "guide/index.html": '<p>x &lt; y, <code>seqmem report &lt;out&gt;</code> <a href="../api/a/#intro">a</a></p>'
                            '<p><a href="#intro">top</a> <a href="https://example.org/#nowhere">out</a></p>',
    })
    assert check.check_site(root) == []
    assert check.main([str(root)]) == 0


def test_nested_blockquotes_on_api_pages_fail(check, tmp_path):
    doctest = "<blockquote><blockquote><blockquote><p>import seqmem</p></blockquote></blockquote></blockquote>"
    root = site(tmp_path, {"api/rnn/index.html": doctest, "guide/index.html": doctest})
    problems = check.check_site(root)
    assert len(problems) == 1 and problems[0].startswith("api/rnn/index.html: nested blockquote")
    assert "import seqmem" in problems[0]


@pytest.mark.parametrize("escaped", ["&amp;lt;out&amp;gt;", "&amp;amp;", "&amp;#39;", "&amp;#x27;"])
def test_double_escaped_entities_fail(check, tmp_path, escaped):
    root = site(tmp_path, {"cli/index.html": f"<p>Runs in <code>seqmem report {escaped}</code></p>"})
    problems = check.check_site(root)
    assert len(problems) == 1 and "double-escaped entity" in problems[0] and problems[0].startswith("cli/")


def test_broken_anchors_and_links_fail(check, tmp_path):
    root = site(tmp_path, {
        "nb/index.html": '<h2 id="token-by-token-with-step">Token by token, with <code>step</code></h2>'
                         '<a href="#token-by-token-with">toc</a> <a href="#token-by-token-with-step">ok</a>',
        "guide/index.html": '<a href="../nb/#no-such-heading">x</a> <a href="../missing/">y</a>'
                            ' <a href="../nb/#token-by-token-with-step">ok</a> <a href="#">top</a>',
    })
    problems = sorted(check.check_site(root))
    assert problems == [
        "guide/index.html: link to a missing anchor: ../nb/#no-such-heading",
        "guide/index.html: link to a missing page or file: ../missing/",
        "nb/index.html: link to a missing anchor: #token-by-token-with",
    ]


def test_figure_text_is_measured_at_the_width_the_page_shows(check, tmp_path):
    # 11 pt at 192 dpi in a 7.17 in figure: shown at 688 px, 14.7 px text. The same text in a figure
    # 20 in wide is shrunk to 688 px: 5.3 px. 8 pt in a figure drawn at its natural size: 10.7 px.
    files = {"figures/good.png": figure(7.17, 11, 192), "figures/wide.png": figure(20, 11, 192),
             "figures/small.png": figure(6.0, 8, 96)}
    root = site(tmp_path, {"page/index.html": "".join(
        f'<p><img alt="" src="../figures/{n}.png"></p>' for n in ("good", "wide", "small"))}, files)
    problems = check.check_site(root)
    assert len(problems) == 1 and "figures/wide.png" in problems[0] and "legend" in problems[0]
    px, which, shown = check.figure_text_px(files["figures/wide.png"], None, 688, 10)
    assert which == "legend" and shown == 688 and px == pytest.approx(11 * 192 / 72 * 688 / (20 * 192), rel=0.02)
    px, _, shown = check.figure_text_px(files["figures/small.png"], None, 688, 10)
    assert shown == pytest.approx(6.0 * 96, abs=1) and px == pytest.approx(8 * 96 / 72, rel=0.01)


def test_a_width_attribute_and_a_figure_without_metadata(check, tmp_path):
    # a "retina" image shown at half its pixels keeps its text size; one halved again does not
    png = figure(7.17, 11, 192)
    root = site(tmp_path, {"nb/index.html": '<img src="f.png" width="688"> <img src="f.png" width="300">'},
                {"nb/f.png": png})
    problems = check.check_site(root)
    assert len(problems) == 1 and "shown 300 px wide" in problems[0]
    # without seqmem's metadata: matplotlib's default legend size, 10 pt, is assumed
    plain = png.replace(b"seqmem:", b"others:")  # same chunk lengths, CRCs are not checked
    px, which, _ = check.figure_text_px(plain, None, 688, check._matplotlib_default_legend_pt())
    assert "matplotlib's default" in which and px == pytest.approx(10 * 192 / 72 * 688 / 1377, rel=0.02)


def test_not_a_site_is_a_usage_error(check, tmp_path):
    with pytest.raises(SystemExit) as exc:
        check.main([str(tmp_path)])
    assert exc.value.code == 2
