"""The app caps glibc's malloc arenas (flat RSS under many streaming sessions) unless told otherwise."""

from __future__ import annotations

import sys

import pytest

from vla_demo.ui.memory import limit_malloc_arenas


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_arenas_are_capped_on_glibc(monkeypatch):
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    import platform

    expected = platform.libc_ver()[0] == "glibc"
    assert limit_malloc_arenas() is expected


def test_an_explicit_malloc_arena_max_wins(monkeypatch):
    monkeypatch.setenv("MALLOC_ARENA_MAX", "8")
    assert limit_malloc_arenas() is False


def test_app_caps_arenas_before_launching():
    from pathlib import Path

    source = (Path(__file__).resolve().parents[2] / "app.py").read_text(encoding="utf-8")
    assert source.index("limit_malloc_arenas()") < source.index("demo.launch(")
