"""README.md and docs/*.md: every relative link and #anchor resolves in a checkout, the README stays short, and
nothing points at files a clone does not have."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", lambda m: m.group(1) or "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = FENCE.sub("", page.read_text())
    return {slug(m.group(1)) for m in re.finditer(r"^#{1,6} (.+)$", text, re.M)}


def links(page: Path) -> list[str]:
    return LINK.findall(FENCE.sub("", page.read_text()))


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_and_anchor_resolves(page):
    broken = []
    for target in links(page):
        if re.match(r"[a-z]+://", target) or target.startswith("mailto:"):
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading with that anchor in {dest.relative_to(ROOT)}")
    assert not broken, f"{page.relative_to(ROOT)}: " + "; ".join(broken)


def test_slug_follows_github():
    assert slug("## 3. Posteriors".lstrip("# ")) == "3-posteriors"
    assert slug("`fast` trains like `exact`") == "fast-trains-like-exact"
    assert slug("The paper's teacher rows") == "the-papers-teacher-rows"


def test_readme_is_short():
    assert (ROOT / "README.md").stat().st_size <= 15_000


@pytest.mark.parametrize("path", sorted(p for ext in ("*.py", "*.md", "*.sh") for p in ROOT.rglob(ext)
                                        if ".venv" not in p.parts and "tests" not in p.parts),
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_nothing_cites_files_outside_the_repository(path):
    text = path.read_text(errors="replace")
    assert "DESIGN.md" not in text and "../shared" not in text, f"{path.relative_to(ROOT)} cites a file a clone lacks"


def test_the_highdim_teacher_commands_on_the_page_are_the_recipes():
    """docs/high-dimensional.md's "What remains" trains the teachers that run_grid's highdim recipe reads, with the
    recipe's own commands (utils.recipes.highdim_teacher), so following the page makes the files the grid needs."""
    from utils.recipes import HIGHDIM_SIGMA_MAX, highdim_teacher

    page = (ROOT / "docs" / "high-dimensional.md").read_text()
    remains = page[page.index("## What remains"):]
    for dim, sigma_max in HIGHDIM_SIGMA_MAX.items():
        if dim > 2:
            assert highdim_teacher(dim, sigma_max)[1] in remains, dim
