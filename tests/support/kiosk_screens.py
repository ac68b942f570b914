"""Measuring the kiosk's pages in Chromium: fit, touch targets, contrast; small screenshots.

Every kiosk page is held to the same rules at 800x480 (the Pi's 7" screen), 1280x800 and
1920x1080: the page shows whole (no scrolling either way), every target is at least 48 px
each way and inside the screen, and every text has AA contrast on what is behind it.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

DOCS_SCREENS = Path(__file__).resolve().parents[2] / "docs" / "screens"
# docs/screens is rewritten only when asked (LOYALTY_UPDATE_SCREENS=1): every run's PNGs
# differ by a few pixels, and a test run should not leave the working tree changed
UPDATE_SCREENS = os.environ.get("LOYALTY_UPDATE_SCREENS") == "1"
SIZES = [(800, 480), (1280, 800), (1920, 1080)]
PI = SIZES[0]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screens"

# every text at least 4.5:1 on what is behind it (3:1 for large text), WCAG 2 AA
CONTRAST = """() => {
  const parse = (c) => { const m = c.match(/rgba?\\(([^)]+)\\)/); if (!m) return null;
    const p = m[1].split(",").map(Number);
    return {r: p[0], g: p[1], b: p[2], a: p.length > 3 ? p[3] : 1}; };
  const lum = ({r, g, b}) => { const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92
    : Math.pow((v + 0.055) / 1.055, 2.4); };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b); };
  const behind = (el) => { for (; el; el = el.parentElement) {
    const c = parse(getComputedStyle(el).backgroundColor); if (c && c.a > 0.5) return c; }
    return {r: 255, g: 255, b: 255, a: 1}; };
  const bad = [];
  const walk = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  while (walk.nextNode()) {
    const node = walk.currentNode, el = node.parentElement;
    if (!node.textContent.trim() || !el.getClientRects().length) continue;
    if (el.closest("[hidden]")) continue;
    const cs = getComputedStyle(el);
    if (cs.visibility === "hidden") continue;
    const a = lum(parse(cs.color)), b = lum(behind(el));
    const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    const size = parseFloat(cs.fontSize), bold = Number(cs.fontWeight) >= 700;
    const large = size >= 24 || (bold && size >= 18.66);
    if (ratio < (large ? 3 : 4.5)) {
      bad.push([node.textContent.trim().slice(0, 40), ratio.toFixed(2)]);
    }
  }
  return bad;
}"""

# every visible touch target: its box, and how far the page reaches
TARGETS = """() => {
  const out = [];
  const inputs = "input:not([type=hidden]):not([type=checkbox]):not([type=radio])";
  const labels = "label.check, label.choice, label:has(> input[type=radio]), "
    + "label:has(> input[type=checkbox])";
  for (const el of document.querySelectorAll(`button, a, select, ${inputs}, ${labels}`)) {
    if (!el.getClientRects().length || el.closest("[hidden]")) continue;
    const r = el.getBoundingClientRect();
    out.push({html: el.outerHTML.slice(0, 120), w: r.width, h: r.height, right: r.right,
              bottom: r.bottom + window.scrollY});
  }
  const screen = document.querySelector("main .screen") || document.body;
  return {targets: out, scrollW: document.documentElement.scrollWidth,
          scrollH: document.documentElement.scrollHeight,
          content: Math.ceil(screen.getBoundingClientRect().bottom + window.scrollY)};
}"""

# the on-screen keyboard's keys, and the field it types into
KEYBOARD = """() => {
  const kb = document.querySelector(".kb:not([hidden])");
  if (!kb) return null;
  const keys = Array.from(kb.querySelectorAll("button")).map((k) => {
    const r = k.getBoundingClientRect();
    return [k.textContent, r.width, r.height]; });
  const field = document.activeElement.getBoundingClientRect();
  return {keys, top: kb.getBoundingClientRect().top, field: [field.top, field.bottom],
          scrollW: document.documentElement.scrollWidth};
}"""


def save(page, name: str) -> None:
    """A small PNG of the screen (a 64-colour palette keeps the repo light): in docs/screens
    with ``LOYALTY_UPDATE_SCREENS=1``, otherwise in test-artifacts/screens."""
    from PIL import Image

    folder = DOCS_SCREENS if UPDATE_SCREENS else ARTIFACTS
    folder.mkdir(parents=True, exist_ok=True)
    image = Image.open(io.BytesIO(page.screenshot())).convert("RGB")
    image.quantize(colors=64, method=Image.Quantize.MEDIANCUT).save(
        folder / f"{name}.png", optimize=True)


def check_now(page, name: str) -> dict:
    """Assert the rules on the page as it is, at its current size; how tall its content is."""
    width, height = page.viewport_size["width"], page.viewport_size["height"]
    try:
        return _check(page, name, width, height)
    except AssertionError:  # what it looked like, for whoever mends it
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        slug = "".join(c if c.isalnum() else "-" for c in name)
        page.screenshot(path=ARTIFACTS / f"{slug}-{width}x{height}.png", full_page=True)
        raise


def _check(page, name: str, width: int, height: int) -> dict:
    found = page.evaluate(TARGETS)
    where = f"{name} at {width}x{height}"
    assert found["scrollW"] <= width, (where, "scrolls sideways", found["scrollW"])
    assert found["scrollH"] <= height, (where, "needs scrolling", found["scrollH"])
    for t in found["targets"]:
        assert t["h"] >= 48 and t["w"] >= 48, (where, "small target", t)
        assert t["right"] <= width and t["bottom"] <= height, (where, "off screen", t)
    bad = page.evaluate(CONTRAST)
    assert bad == [], (where, "low contrast", bad)
    return {"size": f"{width}x{height}", "height": found["content"]}


def check_keyboard(page, name: str) -> None:
    """With the on-screen keyboard up: keys of 48 px, the field above it, nothing sideways."""
    width = page.viewport_size["width"]
    kb = page.evaluate(KEYBOARD)
    assert kb is not None, (name, "no keyboard shown")
    assert all(w >= 48 and h >= 48 for _, w, h in kb["keys"]), (name, kb["keys"])
    assert kb["field"][0] >= 0 and kb["field"][1] <= kb["top"], (name, "field hidden", kb)
    assert kb["scrollW"] <= width, (name, "scrolls sideways", kb["scrollW"])
    bad = page.evaluate(CONTRAST)
    assert bad == [], (name, "low contrast", bad)


def check_sizes(page, name: str, sizes=SIZES) -> list[dict]:
    """:func:`check_now` at every size (the page resized, not reloaded); back to the Pi's."""
    measured = []
    try:
        for width, height in sizes:
            page.set_viewport_size({"width": width, "height": height})
            measured.append(check_now(page, name))
    finally:
        page.set_viewport_size({"width": PI[0], "height": PI[1]})
    return measured
