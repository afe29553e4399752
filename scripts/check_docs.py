"""Check the built docs site for what `mkdocs build --strict` lets through but a reader sees.

    python scripts/check_docs.py SITE_DIR

runs after `mkdocs build` (in `.ci/run`) and fails, listing every case, on:

- **nested blockquotes on the API pages**: the mark of a doctest rendered as Markdown (each `>>>`
  opens a quote) instead of as code;
- **double-escaped entities**: text that shows the reader `&lt;`, `&gt;`, `&amp;` or `&#...;`
  instead of the character (an escape applied twice, e.g. to a code span);
- **figures with small text**: a PNG whose smallest text (its legend's, or any) is shown under
  `MIN_TEXT_PX` CSS pixels in a 1280 px window. The text size comes from the PNG: the font size in
  points that `seqmem.plotstyle.png_bytes` records in its metadata (every seqmem figure, the
  notebooks' inline ones included once they call `seqmem.plotstyle.use()`; for a figure without it,
  matplotlib's default legend size), its resolution, and the width the page shows it at: its
  natural width, or its `width` attribute, at most the content column
  (`seqmem.plotstyle.PAGE_WIDTH_PX`);
- **broken links inside the site**: an anchor (`#id`) that names no element of its page, or a link
  to a page or file that is not in the site.
"""

from __future__ import annotations

import argparse
import re
import struct
import sys
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

MIN_TEXT_PX = 9.0
"""Smallest text a figure may show, in CSS pixels at a 1280 px window."""

ENTITY = re.compile(r"&(?:[A-Za-z][A-Za-z0-9]{1,31}|#[0-9]{1,7}|#[xX][0-9A-Fa-f]{1,6});")
RAW_TEXT = {"script", "style", "textarea"}


@dataclass
class Page:
    """What the checks need from one HTML page."""

    ids: set[str] = field(default_factory=set)
    links: list[str] = field(default_factory=list)
    images: list[dict[str, str]] = field(default_factory=list)
    nested_quotes: list[str] = field(default_factory=list)
    escaped: list[str] = field(default_factory=list)


class _Parser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.page = Page()
        self._raw = 0  # inside <script>/<style>
        self._quote_depth = 0
        self._quote_text: list[str] | None = None  # the text of a nested quote being read

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        for key in ("id", "name"):
            if a.get(key):
                self.page.ids.add(a[key])
        if tag == "a" and "href" in a:
            self.page.links.append(a["href"])
        if tag == "img":
            self.page.images.append(a)
        if tag in RAW_TEXT:
            self._raw += 1
        if tag == "blockquote":
            self._quote_depth += 1
            if self._quote_depth == 2 and self._quote_text is None:
                self._quote_text = []

    def handle_endtag(self, tag: str) -> None:
        if tag in RAW_TEXT and self._raw:
            self._raw -= 1
        if tag == "blockquote" and self._quote_depth:
            self._quote_depth -= 1
            if self._quote_depth == 0 and self._quote_text is not None:
                self.page.nested_quotes.append(" ".join("".join(self._quote_text).split())[:80])
                self._quote_text = None

    def handle_data(self, data: str) -> None:
        if self._raw:
            return
        if self._quote_text is not None:
            self._quote_text.append(data)
        m = ENTITY.search(data)  # one report per text
        if m is not None:
            start = max(0, m.start() - 30)
            self.page.escaped.append(" ".join(data[start : m.end() + 30].split()))


def parse(text: str) -> Page:
    """The ids, links, images, nested quotes and visible entities of an HTML page."""
    parser = _Parser()
    parser.feed(text)
    parser.close()
    return parser.page


# ------------------------------------------------------------------------------------------ figures
def png_info(data: bytes) -> tuple[int, int, float | None, dict[str, str]]:
    """`(width, height, dpi or None, text chunks)` of a PNG file's bytes.

    Raises:
        ValueError: if `data` is not a PNG.
    """
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG file")
    pos, width, height, dpi, text = 8, 0, 0, None, {}
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height = struct.unpack(">II", body[:8])
        elif kind == b"pHYs" and len(body) == 9 and body[8] == 1:  # unit: metre
            dpi = struct.unpack(">I", body[:4])[0] * 0.0254
        elif kind == b"tEXt" and b"\0" in body:
            key, value = body.split(b"\0", 1)
            text[key.decode("latin-1")] = value.decode("latin-1")
        elif kind == b"IEND":
            break
        pos += 12 + length
    return width, height, dpi, text


def figure_text_px(data: bytes, shown_width: float | None, page_width: float, default_pt: float
                   ) -> tuple[float, str, float]:
    """The smallest text of a PNG figure as shown on the page, in CSS pixels.

    Args:
        data: the PNG file.
        shown_width: the `width` attribute of its `<img>`, or `None`.
        page_width: the content column's width, in CSS pixels.
        default_pt: the font size to assume when the PNG does not record one.

    Returns:
        `(pixels, which text, the width the figure is shown at)`.
    """
    width, _, dpi, text = png_info(data)
    shown = min(float(shown_width) if shown_width else float(width), page_width)
    if "seqmem:legend_font_pt" in text and float(text["seqmem:legend_font_pt"]) <= float(
            text.get("seqmem:min_font_pt", "inf")):
        pt, which = float(text["seqmem:legend_font_pt"]), "legend"
    elif "seqmem:min_font_pt" in text:
        pt, which = float(text["seqmem:min_font_pt"]), "text"
    else:
        pt, which = default_pt, "legend (no seqmem metadata: matplotlib's default size assumed)"
    px_in_file = pt * (dpi or 72.0) / 72.0
    return px_in_file * shown / width, which, shown


def _matplotlib_default_legend_pt() -> float:
    """matplotlib's default legend font size in points (10 pt: "medium" of a 10 pt font)."""
    from matplotlib import rcParamsDefault
    from matplotlib.font_manager import font_scalings

    size = rcParamsDefault["legend.fontsize"]
    base = float(rcParamsDefault["font.size"])
    return float(size) if not isinstance(size, str) else base * font_scalings.get(size, 1.0)


# -------------------------------------------------------------------------------------------- check
def _target(site: Path, page_file: Path, url: str) -> tuple[Path | None, str]:
    """The file a site-internal link points to (`None` for an external one) and its fragment."""
    parts = urlsplit(url)
    if parts.scheme or parts.netloc or url.startswith(("mailto:", "javascript:", "data:")):
        return None, ""
    if not parts.path:
        return page_file, unquote(parts.fragment)
    path = (site / parts.path.lstrip("/")) if parts.path.startswith("/") else page_file.parent / parts.path
    path = Path(unquote(str(path)))
    if parts.path.endswith("/") or path.is_dir():
        path = path / "index.html"
    return path.resolve(), unquote(parts.fragment)


def check_site(site: str | Path, *, page_width: float | None = None, min_px: float = MIN_TEXT_PX) -> list[str]:
    """Every problem of the built site in `site`, one line each (empty when it is clean)."""
    from seqmem.plotstyle import PAGE_WIDTH_PX

    site = Path(site).resolve()
    width = float(page_width or PAGE_WIDTH_PX)
    default_pt = _matplotlib_default_legend_pt()
    pages = {p.resolve(): parse(p.read_text(encoding="utf-8")) for p in sorted(site.rglob("*.html"))}
    problems = []
    for path, page in pages.items():
        rel = path.relative_to(site).as_posix()
        if rel.startswith("api/"):
            problems += [f"{rel}: nested blockquote (a doctest shown as quotes?): {t!r}" for t in page.nested_quotes]
        problems += [f"{rel}: double-escaped entity shown to the reader: {t!r}" for t in page.escaped]
        for url in dict.fromkeys(page.links):
            target, fragment = _target(site, path, url)
            if target is None or (url.startswith("#") and not fragment):
                continue
            if not target.exists():
                problems.append(f"{rel}: link to a missing page or file: {url}")
            elif fragment and target.suffix == ".html":
                ids = pages[target].ids if target in pages else set()
                if fragment not in ids:
                    problems.append(f"{rel}: link to a missing anchor: {url}")
        for img in page.images:
            target, _ = _target(site, path, img.get("src", ""))
            if target is None or target.suffix.lower() != ".png":
                continue
            if not target.is_file():
                problems.append(f"{rel}: missing image: {img.get('src')}")
                continue
            shown_attr = img.get("width", "").removesuffix("px")
            try:
                px, which, shown = figure_text_px(target.read_bytes(), float(shown_attr) if shown_attr else None,
                                                  width, default_pt)
            except ValueError as err:
                problems.append(f"{rel}: unreadable image {img.get('src')}: {err}")
                continue
            if px < min_px:
                problems.append(f"{rel}: figure {img.get('src')}: its {which} is {px:.1f} px at a 1280 px "
                                f"window (shown {shown:.0f} px wide), under {min_px:g} px")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("site", type=Path, help="the folder mkdocs built (site_dir)")
    parser.add_argument("--page-width", type=float, default=None,
                        help="content column in CSS px at 1280 px (default: seqmem.plotstyle.PAGE_WIDTH_PX)")
    args = parser.parse_args(argv)
    if not (args.site / "index.html").is_file():
        parser.error(f"{args.site} is not a built site (no index.html)")
    problems = check_site(args.site, page_width=args.page_width)
    for line in problems:
        print(line)
    n_pages = sum(1 for _ in args.site.rglob("*.html"))
    print(f"check_docs: {n_pages} pages, {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
