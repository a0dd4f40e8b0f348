"""The page in a real browser: Debian's Chromium driven by Playwright (installed by .ci/run).

Load the page, type an instruction, run and see frames update, take over with the keyboard,
record an episode and find it on disk, fine-tune on it and see the new version hot-swapped in, two
tabs with independent sims, and the webcam path fed a clip generated here (through a canvas stream
in place of getUserMedia, not Chromium's fake-device flags). Screenshots go to a temporary folder, or
to assets/readme/ for the README with ``VLA_DEMO_README_SHOTS=1`` (a plain test run leaves the
tracked images alone: re-rendered, they differ by pixel noise only).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from tests.serving import serve, wait_for

CHROMIUM = "/usr/bin/chromium"
README_SHOTS = Path(__file__).resolve().parents[2] / "assets" / "readme"

pytestmark = [pytest.mark.browser, pytest.mark.slow]
if not os.path.exists(CHROMIUM):
    pytest.skip(f"browser tests need Debian's chromium at {CHROMIUM} (.ci/run installs it with apt-get)",
                allow_module_level=True)
playwright = pytest.importorskip("playwright.sync_api", reason="browser tests need playwright (requirements-dev.txt)")


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    """Where the screenshots go (see the module docstring)."""
    folder = README_SHOTS if os.environ.get("VLA_DEMO_README_SHOTS") == "1" else tmp_path_factory.mktemp("shots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def screenshot(page, path: Path) -> None:
    page.screenshot(path=str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def app(tmp_path_factory, tiny_policy_dir):
    from vla_demo.ui.app import make_context

    ctx = make_context(str(tiny_policy_dir), tmp_path_factory.mktemp("data"), camera_size=96, display_size=384)
    demo, url = serve(ctx)
    yield ctx, url
    ctx.close()
    demo.close()


def launch(p, *args: str):
    return p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", *args])


@pytest.fixture(scope="module")
def browser():
    with playwright.sync_playwright() as p:
        b = launch(p)
        yield b
        b.close()


def live_src(page) -> str:
    return page.locator("#vla-live img").first.get_attribute("src") or ""


def open_page(browser, url):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(url)
    page.locator("#vla-live img").first.wait_for(timeout=60_000)
    return page


def test_live_page_runs_takes_over_and_records(app, browser, shots):
    ctx, url = app
    page = open_page(browser, url)
    box = page.get_by_label("Instruction")
    box.fill("pick up the red cube")
    box.press("Enter")
    assert wait_for(lambda: len(ctx.sessions) == 1 and next(iter(ctx.sessions.values()))._obs["task"] == "pick up the red cube")
    session = next(iter(ctx.sessions.values()))
    first = live_src(page)
    page.get_by_role("button", name="Run", exact=True).click()
    assert wait_for(lambda: session._t >= 3)
    assert wait_for(lambda: live_src(page) != first, 30)  # the browser sees new frames
    assert "running" in page.locator("#vla-status").inner_text()
    chart = page.locator("#vla-actions img").first
    assert wait_for(lambda: session._t >= 15)
    drawn = chart.get_attribute("src")
    assert wait_for(lambda: chart.get_attribute("src") != drawn, 30)  # the action chart follows the steps
    screenshot(page, shots / "live.png")

    # take over with the keyboard (typing in a text box must not move the arm)
    page.get_by_label("shared").check()
    assert wait_for(lambda: session.mode == "shared")
    page.get_by_role("tab", name="Record").click()
    page.get_by_label("Record (every control step goes into the episode buffer)").check()
    page.get_by_label("Operator").fill("dave")
    assert wait_for(lambda: session.recording.on)
    page.get_by_role("tab", name="Live").click()
    page.locator("#vla-status").click()
    y0 = float(session._obs["observation.state"][1])
    page.keyboard.down("d")
    assert wait_for(lambda: session.teleop.takeover and float(session._obs["observation.state"][1]) > y0 + 0.01, 30)
    page.keyboard.up("d")
    assert wait_for(lambda: not session.teleop.keys)
    page.keyboard.press("Escape")  # emergency stop from the keyboard
    assert wait_for(lambda: session.estopped)

    page.get_by_role("tab", name="Record").click()
    page.get_by_role("button", name="Save episode").click()
    from vla_demo.data.reader import DatasetReader

    root = ctx.data_root / "datasets" / "recordings"
    assert wait_for(lambda: (root / "meta" / "info.json").exists() and DatasetReader(root).num_episodes == 1)
    r = DatasetReader(root)
    assert r.num_episodes == 1 and r.episode(0)["operator"] == "dave" and r.episode(0)["source"] == "shared"
    assert r.episode_columns(0)["intervention"].any()
    page.get_by_role("button", name="Refresh").click()
    page.get_by_text("1 episodes").wait_for(timeout=30_000)
    screenshot(page, shots / "record.png")
    # close the loop: fine-tune on the recorded episode, evaluate before/after, hot-swap
    page.get_by_role("tab", name="Fine-tune").click()
    page.get_by_role("button", name="Refresh lists").click()
    page.get_by_label("recordings").check()
    for label, value in (("Steps", "5"), ("Before/after episodes per family", "1")):
        page.get_by_label(label).fill(value)
        page.get_by_label(label).press("Tab")
    parent = ctx.registry.active
    page.get_by_role("button", name="Start fine-tune").click()
    assert wait_for(lambda: ctx.registry.active != parent, 300), ctx.jobs.jobs()
    page.get_by_text("registered and activated").first.wait_for(timeout=60_000)
    screenshot(page, shots / "finetune.png")
    page.get_by_role("tab", name="Live").click()
    page.get_by_role("button", name="Reset scene").click()
    assert wait_for(lambda: session.version == ctx.registry.active)  # new episodes run the new version
    page.close()
    assert wait_for(lambda: not ctx.sessions, 60)  # the closed tab's session is freed by demo.unload


def test_two_tabs_have_independent_sims(app, browser):
    ctx, url = app
    a, b = open_page(browser, url), open_page(browser, url)
    assert wait_for(lambda: len(ctx.sessions) == 2)
    sa, sb = list(ctx.sessions.values())
    assert sa.env is not sb.env
    a.get_by_role("button", name="Step", exact=True).click()
    assert wait_for(lambda: sa._t + sb._t == 1)
    assert {sa._t, sb._t} == {0, 1}
    a.close()
    b.close()


def clip_camera_script(frames: np.ndarray, fps: int = 10) -> str:
    """An init script that makes getUserMedia return a canvas stream playing ``frames`` (N, H, W, 3):
    the page's webcam path runs unchanged, without Chromium's fake-device flags (run as root, one
    such browser was left spinning at SCHED_FIFO 99 and starved the machine)."""
    import base64
    import json

    n, h, w, _ = frames.shape
    rgba = np.concatenate([frames, np.full((n, h, w, 1), 255, np.uint8)], axis=-1)
    data = json.dumps([base64.b64encode(f.tobytes()).decode() for f in rgba])
    return f"""(() => {{
      const W = {w}, H = {h}, frames = {data}.map(b => Uint8ClampedArray.from(atob(b), c => c.charCodeAt(0)));
      const canvas = document.createElement("canvas"); canvas.width = W; canvas.height = H;
      const ctx = canvas.getContext("2d"); let i = 0;
      const draw = () => ctx.putImageData(new ImageData(frames[i++ % frames.length], W, H), 0, 0);
      draw(); setInterval(draw, {1000 // fps});
      const device = {{deviceId: "clip", groupId: "clip", kind: "videoinput", label: "test clip", toJSON() {{ return this; }}}};
      navigator.mediaDevices.getUserMedia = async () => canvas.captureStream({fps});
      navigator.mediaDevices.enumerateDevices = async () => [device];
    }})();"""


def moving_square_clip(w: int = 96, h: int = 64, n: int = 20) -> np.ndarray:
    """(n, h, w, 3) uint8: a bright square sliding across a dark frame."""
    frames = np.full((n, h, w, 3), 60, np.uint8)
    for i in range(n):
        x0 = (i * 4) % (w - 16)
        frames[i, 20:36, x0:x0 + 16] = (220, 40, 40)
    return frames


def test_webcam_frames_go_through_the_policy(app, browser):
    _, url = app
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.add_init_script(clip_camera_script(moving_square_clip()))
    try:
        webcam_round_trip(context, url)
    finally:
        context.close()


def webcam_round_trip(context, url):
    page = context.new_page()
    page.goto(url)
    page.locator("#vla-live img").first.wait_for(timeout=60_000)
    page.get_by_role("tab", name="Webcam").click()
    page.get_by_role("button", name="Click to Access Webcam").click()
    start = page.locator("button[aria-label='capture photo']")  # the streaming webcam's start button
    start.wait_for(timeout=30_000)
    start.click()
    page.get_by_text("state: none (webcam)").wait_for(timeout=60_000)
    page.close()

