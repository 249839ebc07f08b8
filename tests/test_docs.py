"""The docs hold together: every relative link and anchor in README.md, docs/*.md and the READMEs of the
folders leads somewhere, and docs/index.md lists every page."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")),
         *(ROOT / folder / "README.md" for folder in ("docker", "deploy/kubernetes")), ROOT / "bench" / "README-transfer.md"]
LINK = re.compile(r"(?<!!)\[(?:[^\[\]]|\[[^\]]*\])*\]\(([^()\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.M | re.S)


def prose(text: str) -> str:
    """The text without fenced code blocks and inline code spans, where `[x](y)` is not a link."""
    text = FENCE.sub("", text)
    return re.sub(r"(`+).*?\1", "", text, flags=re.S)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its rendered text, lower-case, punctuation dropped, spaces to '-'."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link shows its text
    text = text.replace("`", "").replace("*", "")
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every anchor GitHub makes for a Markdown file's headings (repeats get -1, -2, ...)."""
    seen: dict[str, int] = {}
    found = set()
    for match in re.finditer(r"^#{1,6}\s+(.+?)\s*#*\s*$", FENCE.sub("", path.read_text()), re.M):
        base = slug(match.group(1))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(path: Path) -> list[str]:
    return [target for target in LINK.findall(prose(path.read_text()))
            if not re.match(r"[a-z][a-z0-9+.-]*:", target)]  # http:, https:, mailto: are not ours to check


def broken_links(path: Path, root: Path = ROOT) -> list[str]:
    broken = []
    for target in links(path):
        file_part, _, anchor = target.partition("#")
        where = (path.parent / file_part).resolve() if file_part else path
        if not where.exists():
            broken.append(f"{target}: no such file")
        elif not where.is_relative_to(root):
            broken.append(f"{target}: outside the repository")
        elif anchor and where.suffix == ".md" and anchor not in anchors(where):
            broken.append(f"{target}: no heading with that anchor")
        elif anchor and where.suffix != ".md":
            broken.append(f"{target}: an anchor into a file that is not Markdown")
    return broken


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_and_anchor_leads_somewhere(page):
    assert broken_links(page) == []


def test_every_docs_page_is_listed_in_the_index():
    listed = {(ROOT / "docs" / target.partition("#")[0]).resolve() for target in links(ROOT / "docs" / "index.md")}
    pages = {page.resolve() for page in (ROOT / "docs").glob("*.md")} - {(ROOT / "docs" / "index.md").resolve()}
    assert sorted(p.name for p in pages - listed) == []


CODE_DIRS = ("preloader", "bench", "scripts", "tests", "localhub", "examples", "demo")
DOC_PATH = re.compile(r"(?<![\w./-])(docs/[\w./-]*[\w/]|README(?:\.md)?)(?:#([\w-]+))?")


def doc_references(root: Path = ROOT) -> list[tuple[str, str, str]]:
    """(where, path, anchor) for every `docs/...` path and `README#anchor` the code names (help texts,
    messages, comments), as paths from the repository root."""
    found = []
    for folder in CODE_DIRS:
        for source in sorted((root / folder).rglob("*.py")):
            if source.resolve() == Path(__file__).resolve():
                continue  # this file's own examples of broken references
            for number, line in enumerate(source.read_text().splitlines(), 1):
                for path, anchor in DOC_PATH.findall(line):
                    if path.startswith("README") and not anchor:
                        continue  # "the README" in prose: no place to check
                    where = f"{source.relative_to(root)}:{number}"
                    found.append((where, "README.md" if path.startswith("README") else path, anchor))
    return found


def test_every_docs_path_and_anchor_the_code_names_exists():
    """A help text or message that says `see docs/cache.md#read-only-tiers` sends the user somewhere real."""
    references = doc_references()
    assert any(path == "docs/RELIABILITY.md" for _, path, _ in references)  # the scan sees the code
    broken = [f"{where}: {path}#{anchor}" if anchor else f"{where}: {path}" for where, path, anchor in references
              if not (ROOT / path).exists() or (anchor and anchor not in anchors(ROOT / path))]
    assert broken == []


def test_a_broken_docs_path_in_the_code_is_found(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "cache.md").write_text("# The cache\n\n## Read-only tiers\n")
    (tmp_path / "README.md").write_text("# preloader\n")
    (tmp_path / "preloader").mkdir()
    (tmp_path / "preloader" / "help.py").write_text(
        'A = "see docs/cache.md#read-only-tiers"\nB = "see docs/cache.md#tiers, docs/gone.md"\n'
        'C = "see README#read-only-tiers; the README says"\n')
    assert doc_references(tmp_path) == [
        ("preloader/help.py:1", "docs/cache.md", "read-only-tiers"), ("preloader/help.py:2", "docs/cache.md", "tiers"),
        ("preloader/help.py:2", "docs/gone.md", ""), ("preloader/help.py:3", "README.md", "read-only-tiers")]


def test_the_readme_links_the_index():
    assert "docs/index.md" in links(ROOT / "README.md")


@pytest.mark.parametrize("heading, anchor", [
    ("## The cache on disk", "the-cache-on-disk"),
    ("### `latest`, and huggingface_hub's own tools", "latest-and-huggingface_hubs-own-tools"),
    ("### huggingface_hub 2.x caches: the shared blob store, tree listings",
     "huggingface_hub-2x-caches-the-shared-blob-store-tree-listings"),
    ("## `preloader plan`", "preloader-plan"),
    ("## Hand-off", "hand-off"),
    ("# The service: hand-off, logs and `preloader plan`", "the-service-hand-off-logs-and-preloader-plan"),
    ("## See [the README](../README.md)", "see-the-readme"),
])
def test_anchors_follow_githubs_rules(heading, anchor):
    assert slug(heading.lstrip("#")) == anchor


def test_a_broken_link_or_anchor_is_found(tmp_path):
    """The checker itself: a missing file, a missing anchor, a repeated heading's anchor, a link out of the
    repository; links in code left alone."""
    root = tmp_path / "repo"
    (root / "sub").mkdir(parents=True)
    (root / "other.md").write_text("# Title\n\n## Part\n\n## Part\n")
    page = root / "page.md"
    page.write_text("[a](other.md#part-1) [b](other.md#part-2) [c](missing.md) [d](#nowhere) [e](#here)\n\n"
                    "## Here\n\n`[f](gone.md)`\n\n```\n[g](gone.md)\n```\n[h](https://example.com/x#y)\n")
    assert broken_links(page, root) == ["other.md#part-2: no heading with that anchor", "missing.md: no such file",
                                        "#nowhere: no heading with that anchor"]
    (tmp_path / "elsewhere.md").write_text("# Elsewhere\n")
    (root / "sub" / "up.md").write_text("[out](../../elsewhere.md) [in](../other.md#title)\n")
    assert broken_links(root / "sub" / "up.md", root) == ["../../elsewhere.md: outside the repository"]
