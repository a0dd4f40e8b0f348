"""The app caps glibc's malloc arenas (flat RSS under many streaming sessions) unless told otherwise."""

from __future__ import annotations

import sys

import pytest

from vla_demo.ui.memory import MallocTrimmer, limit_malloc_arenas


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


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_the_trimmer_trims_on_its_interval_and_stops():
    import platform

    from tests.serving import wait_for

    trimmer = MallocTrimmer(interval_s=0.01)
    if platform.libc_ver()[0] != "glibc":
        assert trimmer.start() is False
        return
    assert trimmer.start() is True
    assert wait_for(lambda: trimmer.trims >= 3, 10)
    trimmer.stop()
    n = trimmer.trims
    assert not trimmer._thread.is_alive() and trimmer.trims == n


def test_the_trimmer_refuses_a_non_positive_interval():
    with pytest.raises(ValueError, match="positive"):
        MallocTrimmer(interval_s=0)


def test_app_trims_while_it_serves():
    from pathlib import Path

    source = (Path(__file__).resolve().parents[2] / "app.py").read_text(encoding="utf-8")
    assert source.index("trimmer.start()") < source.index("demo.launch(") < source.index("trimmer.stop()")
