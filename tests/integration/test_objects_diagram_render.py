"""Memory diagrams rendered to pixels by a real SVG renderer (cairosvg on libcairo), checked by content."""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET

import needs  # tests/needs.py
import numpy as np
import pytest

from pyguts.objects.diagrams import ARROW_COLOURS, BOX_FILLS, TITLE_FILL, diagram

# cairosvg's import dlopen()s libcairo and raises OSError without it: probe the library first.
needs.require_library("cairo")
cairosvg = pytest.importorskip("cairosvg", reason="needs_cairosvg: pip install cairosvg (in the test extra)")
# Pillow is a dependency of cairosvg itself (cairosvg needs it for raster images), so it is here too.
Image = pytest.importorskip("PIL.Image")

_SVG = "{http://www.w3.org/2000/svg}"


def _rgb(colour: str) -> tuple[int, int, int]:
    return tuple(int(colour[i:i + 2], 16) for i in (1, 3, 5))


def _render(svg: str) -> np.ndarray:
    png = cairosvg.svg2png(bytestring=svg.encode("utf-8"))
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def _count(pixels: np.ndarray, colour: str) -> int:
    return int(np.all(pixels == _rgb(colour), axis=-1).sum())


@pytest.fixture(scope="module")
def hello():
    """A tuple of bytes, a shared int (twice) and a self-containing list: every arrow kind and a cycle."""
    b = b"Hello, world!"
    cyclic = [b]
    cyclic.append(cyclic)
    obj = (b, 1000, 1000, cyclic)
    d = diagram(obj)
    svg = d.to_svg()
    return obj, d, svg, ET.fromstring(svg), _render(svg)


def test_png_has_the_svgs_size(hello):
    _, _, _, root, pixels = hello
    assert pixels.shape[:2] == (int(root.get("height")), int(root.get("width")))


def test_every_arrow_kind_and_box_fill_is_painted(hello):
    _, d, _, _, pixels = hello
    assert {a.kind for a in d.arrows} == set(ARROW_COLOURS)
    for kind, colour in ARROW_COLOURS.items():
        assert _count(pixels, colour) > 50, f"no {kind} arrow ({colour}) in the picture"
    for kind, colour in {**BOX_FILLS, "title": TITLE_FILL}.items():
        assert _count(pixels, colour) > 1000, f"no {kind} box fill ({colour}) in the picture"


def test_each_arrowhead_lands_in_its_colour_at_its_target(hello):
    _, d, _, root, pixels = hello
    heads = [(g.get("class").split()[1], g.find(f"{_SVG}polygon").get("points"))
             for g in root.iter(_SVG + "g") if (g.get("class") or "").startswith("arrow ")]
    assert len(heads) == len(d.arrows)
    for kind, points in heads:
        xy = np.array([[float(v) for v in p.split(",")] for p in points.split()])
        cx, cy = (round(v) for v in xy.mean(axis=0))  # the centroid of a filled triangle is inside it
        # 5x5 around it: a line of another colour crossing the head cannot cover all of it.
        assert _count(pixels[cy - 2:cy + 3, cx - 2:cx + 3], ARROW_COLOURS[kind]) >= 5, (kind, cx, cy)


def test_titles_are_drawn_as_dark_text_in_each_title_bar(hello):
    _, d, _, root, pixels = hello
    bars = [r for r in root.iter(_SVG + "rect") if r.get("fill") == TITLE_FILL]
    assert len(bars) == len(d.boxes)
    for bar in bars:
        x, y, w, h = (int(bar.get(k)) for k in ("x", "y", "width", "height"))
        inside = pixels[y + 2:y + h - 2, x + 2:x + w - 2].astype(int)
        assert (inside.sum(axis=-1) < 200).sum() > 50  # glyph pixels, near black


def test_field_names_and_target_titles_are_text(hello):
    obj, d, svg, root, _ = hello
    texts = [t.text for t in root.iter(_SVG + "text")]
    for name in ("ob_refcnt", "ob_type", "ob_size", "ob_shash", "ob_sval", "ob_item[0]", "ob_item[3]",
                 "tp_name", "allocated"):
        assert name in texts, name
    b, big, _, cyclic = obj
    for title in (f"bytes at {id(b):#x}", f"type bytes at {id(bytes):#x}", f"int at {id(big):#x}",
                  f"list at {id(cyclic):#x}", f"type tuple at {id(tuple):#x}"):
        assert texts.count(title) == 1, title  # one box each, however many arrows point to it
    assert [a.dst for a in d.arrows].count(id(big)) == 2
    assert [a.dst for a in d.arrows].count(id(cyclic)) == 2  # from the tuple and from the list's own items


def test_a_diagram_without_pointers_followed_has_no_arrow_pixels():
    pixels = _render(diagram(b"Hello, world!", depth=0).to_svg())
    assert _count(pixels, BOX_FILLS["object"]) > 1000
    for colour in ARROW_COLOURS.values():
        assert _count(pixels, colour) == 0
