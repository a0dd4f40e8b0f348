"""The README's pointers into the model card and the experiment log name sections that exist, and its
relative links point at files in the repository (the history moved between the three on 2026-12-07)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
TARGETS = {"model card": REPO / "assets" / "policies" / "default" / "README.md",
           "experiment log": REPO / "docs" / "experiments.md"}
# (model card, "Section title") or (experiment log, "Section title"), possibly across a line break
POINTER = re.compile(r"(model card|experiment log),\s+\"([^\"]+)\"", re.IGNORECASE)
SECTION = re.compile(r"[Ss]ection,?\s+\"([^\"]+)\"")  # (section "Title"): in the same document or the other
LINK = re.compile(r"\]\(([^)#:\s]+)(?:#[^)]*)?\)")


def flat(path: Path) -> str:
    return re.sub(r"\s+", " ", path.read_text(encoding="utf-8"))


def headings(path: Path) -> list[str]:
    return [line.lstrip("#").strip() for line in path.read_text(encoding="utf-8").splitlines() if line.startswith("#")]


def pointers(path: Path) -> list[tuple[str, str]]:
    return [(m.group(1).lower(), m.group(2)) for m in POINTER.finditer(flat(path))]


def test_the_readme_points_at_both_documents():
    found = {where for where, _ in pointers(README)}
    assert found == set(TARGETS), found  # a reworded pattern would leave the test below checking nothing


@pytest.mark.parametrize("source", [README, TARGETS["model card"], TARGETS["experiment log"]], ids=lambda p: p.name)
def test_every_named_section_exists(source):
    missing = [(where, title) for where, title in pointers(source)
               if not any(h.startswith(title) for h in headings(TARGETS[where]))]
    assert not missing, f"{source.name} names sections that do not exist: {missing}"
    titles = [h for target in TARGETS.values() for h in headings(target)]
    loose = [m.group(1) for m in SECTION.finditer(flat(source)) if not any(h.startswith(m.group(1)) for h in titles)]
    assert not loose, f"{source.name} names sections that do not exist: {loose}"


def test_relative_links_resolve():
    links = LINK.findall(README.read_text(encoding="utf-8"))
    assert links, "the README has no relative links: the pattern is wrong"
    assert [link for link in links if not (REPO / link).exists()] == []
