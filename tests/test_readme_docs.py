"""The README is a quickstart (issue 34): at most 150 lines, both commands in its first 40 and a results
table in its first 100, every command in its synopsis; the rest is in docs/, and every relative link of
the README and docs/ (file and #anchor) resolves, both ways."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _anchors(md: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    out = set()
    for line in md.splitlines():
        m = re.match(r"#+ (.*)", line)
        if m:
            text = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower())
            out.add(text.replace(" ", "-"))
    return out


def test_readme_is_a_quickstart() -> None:
    lines = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 150
    first = "\n".join(lines[:40])
    assert "bash scripts/demo.sh" in first and "bash scripts/test.sh" in first
    assert any(x.startswith("| finding |") for x in lines[:100])
    synopsis = "\n".join(lines)
    for command in ("list", "run", "show", "report", "matrix", "gate", "history", "sweep", "experiment",
                    "model info", "train codec", "train lm"):  # fmt: skip
        assert f"vemi-eval {command}" in synopsis, command
    assert "### The codec: decoder A/B and yardsticks" in synopsis


def test_every_relative_link_resolves() -> None:
    pages = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    assert len(pages) >= 5
    for page in pages:
        for target in LINK.findall(page.read_text(encoding="utf-8")):
            if target.startswith(("http://", "https://")):
                continue
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            assert dest.exists(), f"{page.name}: {target}"
            if anchor and dest.suffix == ".md":
                assert anchor in _anchors(dest.read_text(encoding="utf-8")), f"{page.name}: {target}"
    for doc in pages[1:]:  # links run both ways
        assert "](../README.md)" in doc.read_text(encoding="utf-8"), doc.name
        assert f"](docs/{doc.name})" in (REPO / "README.md").read_text(encoding="utf-8"), doc.name
