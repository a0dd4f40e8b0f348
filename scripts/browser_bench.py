"""Browser benchmark (dev only; needs Playwright and Chromium from requirements-dev.txt / .ci/run).

    python scripts/browser_bench.py [--url URL | --policy DIR|expert] [--seconds 20] [--presses 20] [--json PATH]

Measures, in a real Chromium, what an operator sees on the Live tab:

* ``app.browser_fps``: distinct live frames the page loads and displays per second while the policy
  runs, over ``--seconds`` after a ``--warmup``. Only time while the status line says ``running``
  counts (an episode that ends is reset and run again; the pause in between is not counted). It is
  compared with ``app.server_display_fps``, the rate at which the server composed and yielded frames
  (the ``display N fps`` of the status line, median over the same frames): the ratio is the share of
  composed frames that reached the screen. ``app.browser_frame_interval_ms_p95`` is the stutter (p95
  gap between displayed frames) and ``app.browser_frames`` the sample count.
* ``app.key_to_frame_ms``: in Teleop mode, with the arm idle and the frames static, the time from a
  teleop ``keydown`` event in the page (``performance.now()`` in a capture listener that runs before
  the app's own key handler) to the load of the first live frame whose pixels differ from the frame
  shown at the keydown (grey, 128 x 128, the sim camera's resolution). Median and p95 over
  ``--presses`` presses of ``d`` / ``a`` alternately (held 150 ms), plus the count and the presses
  that showed no motion within ``--press-timeout`` seconds.

Without ``--url`` the app is started as ``python app.py --policy POLICY`` (default ``expert``: no
checkpoint needed) on a free loopback port, with a temporary data root and Gradio cache, and stopped
at the end. Rows have the format of ``vla_demo.bench`` (``python -m vla_demo bench``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python scripts/browser_bench.py` from anywhere
    sys.path.insert(0, str(REPO))

from vla_demo.bench import Row, format_table, machine, make_rows  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
TARGET_FPS = 15.0
TARGET_KEY_MS = 200.0
HOLD_S = 0.15
STATIC_MS = 600  # frames are "static" when none changed by more than the threshold for this long
DIFF_SIZE = 128  # frames are compared in grey at the sim camera's resolution
PIXEL_DELTA = 12  # a pixel changed when its grey level moved by more than this (JPEG noise is smaller)
MIN_PIXELS = 16  # a frame shows motion when at least this many pixels changed (idle frames: 0-2; a step: hundreds)
FRESH_AFTER_STEPS = 90  # teleop: a new scene before the env's 120-step limit ends the episode mid-press

# Installed before the page's own scripts: watches the live image and the teleop keys.
INSTRUMENT_JS = """
(() => {
  const N = %(size)d, DELTA = %(delta)d, MIN = %(min)d;
  const B = window.__vlaBench = {frames: [], presses: [], armed: null, armKeys: [], lastChange: 0,
                                 lastLoad: 0, lastSrc: "", shown: null};
  let canvas = null, g2d = null;
  function grey(img) {
    if (!canvas) {
      canvas = document.createElement("canvas");
      canvas.width = canvas.height = N;
      g2d = canvas.getContext("2d", {willReadFrequently: true});
    }
    g2d.drawImage(img, 0, 0, N, N);
    const d = g2d.getImageData(0, 0, N, N).data, g = new Uint8Array(N * N);
    for (let i = 0; i < N * N; i++) g[i] = (d[4 * i] * 77 + d[4 * i + 1] * 150 + d[4 * i + 2] * 29) >> 8;
    return g;
  }
  function changed(a, b) {
    if (!a || !b) return 0;
    let n = 0;
    for (let i = 0; i < a.length; i++) if (Math.abs(a[i] - b[i]) > DELTA) n++;
    return n;
  }
  B.status = () => (document.querySelector("#vla-status")?.innerText || "").trim();
  document.addEventListener("load", (e) => {
    const img = e.target;
    if (!img || img.tagName !== "IMG" || !img.closest("#vla-live") || img.src === B.lastSrc) return;
    const t = performance.now();
    B.lastSrc = img.src;
    B.lastLoad = t;
    const status = B.status();
    const fps = status.match(/display (\\d+(?:\\.\\d+)?) fps/);
    let g;
    try { g = grey(img); } catch (err) { return; }
    const n = changed(g, B.shown);
    if (n >= MIN) B.lastChange = t;
    B.frames.push([t, status.split(" | ")[0], fps ? Number(fps[1]) : null, n]);
    B.shown = g;
    const a = B.armed;
    if (a && a.done === null) {
      const m = changed(g, a.base);
      a.trace.push([Math.round(t - a.t0), m]);
      if (m >= MIN) { a.done = t; B.presses.push({key: a.key, t0: a.t0, t1: t, pixels: m, trace: a.trace}); }
    }
  }, true);
  window.addEventListener("keydown", (e) => {
    const k = (e.key || "").toLowerCase();
    if (e.repeat || !B.armKeys.includes(k)) return;
    B.armed = {key: k, t0: performance.now(), base: B.shown, done: null, trace: []};
  }, true);
})();
""" % {"size": DIFF_SIZE, "delta": PIXEL_DELTA, "min": MIN_PIXELS}


# ----------------------------------------------------------------------------- the app


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def started_app(policy: str, timeout: float = 180.0, camera_size: int = 128):
    """``python app.py --policy POLICY`` on a free loopback port with a temporary data root and Gradio
    cache; yields the page URL and stops the process (and removes the folder) afterwards."""
    with tempfile.TemporaryDirectory(prefix="vla_browser_bench_") as tmp:
        port = free_port()
        env = {k: v for k, v in os.environ.items() if k != "VLA_DEMO_AUTH"}
        env.update(GRADIO_TEMP_DIR=str(Path(tmp) / "gradio"), PYTHONUNBUFFERED="1",
                   PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])))
        log = Path(tmp) / "app.log"
        args = [sys.executable, str(REPO / "app.py"), "--host", "127.0.0.1", "--port", str(port), "--policy", policy,
                "--data-root", str(Path(tmp) / "data"), "--camera-size", str(camera_size)]
        with open(log, "wb") as out:
            proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}/"
        try:
            deadline = time.monotonic() + timeout
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"app.py exited with {proc.returncode}:\n{log.read_text(errors='replace')[-3000:]}")
                with contextlib.suppress(OSError):
                    with urllib.request.urlopen(url + "health", timeout=5) as r:
                        if r.status == 200:
                            break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"app.py did not answer /health within {timeout:.0f} s")
                time.sleep(0.2)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


# ----------------------------------------------------------------------------- the page


def _state(page) -> str:
    return page.evaluate("window.__vlaBench.status()")


def _wait_js(page, expr: str, timeout_s: float, polling: int = 100) -> bool:
    """Wait until the page expression holds (polled in the page); False on timeout."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.wait_for_function(expr, timeout=max(1, int(timeout_s * 1000)), polling=polling)
        return True
    except PlaywrightTimeout:
        return False


def _step(status: str) -> int:
    m = re.search(r"\| step (\d+) \|", status)
    return int(m.group(1)) if m else 0


def start_running(page, fresh_after: int | None = None, timeout_s: float = 30.0) -> None:
    """Make the session step: Run, after a fresh scene when the episode is over (or, with
    ``fresh_after``, when it has taken that many steps and would soon hit the env's step limit)."""
    status = _state(page)
    stale = fresh_after is not None and _step(status) >= fresh_after
    if status.startswith("running") and not stale:
        return
    if status.startswith("done") or stale:
        page.get_by_role("button", name="Reset scene").click()
        if not _wait_js(page, "() => /^paused \\| .*\\| step 0 \\|/.test(window.__vlaBench.status())", timeout_s):
            raise RuntimeError(f"the scene was not reset: {_state(page)!r}")
    page.get_by_role("button", name="Run", exact=True).click()
    if not _wait_js(page, "() => /^(running|done)/.test(window.__vlaBench.status())", timeout_s):
        raise RuntimeError(f"the session did not start running: {_state(page)!r}")
    if _state(page).startswith("done"):  # the paused episode was one step from its end: a fresh scene
        start_running(page, fresh_after=0, timeout_s=timeout_s)


def now_ms(page) -> float:
    return float(page.evaluate("performance.now()"))


def measure_fps(page, seconds: float, warmup: float) -> dict[str, Any]:
    """Run the policy for ``warmup + seconds`` (new episodes as needed); frames while running, after the warm-up."""
    start_running(page)
    t_start = now_ms(page)
    t_from, t_to = t_start + warmup * 1000, t_start + (warmup + seconds) * 1000
    end = time.monotonic() + warmup + seconds
    while (left := end - time.monotonic()) > 0:
        if not _wait_js(page, "() => !window.__vlaBench.status().startsWith('running')", left, polling=200):
            break
        start_running(page)
    page.get_by_role("button", name="Pause").click()
    frames = [f for f in page.evaluate("window.__vlaBench.frames") if t_from <= f[0] <= t_to]
    # contiguous runs of frames shown while the status said "running"
    segments: list[list[list]] = []
    prev_running = False
    for f in frames:
        running = f[1] == "running"
        if running:
            if not prev_running:
                segments.append([])
            segments[-1].append(f)
        prev_running = running
    gaps = [b[0] - a[0] for seg in segments for a, b in zip(seg, seg[1:])]
    span_ms = sum(gaps)
    server = sorted(f[2] for seg in segments for f in seg if f[2] is not None)
    return {
        "frames": len(gaps) + len(segments),
        "intervals": len(gaps),
        "running_s": span_ms / 1000,
        "episodes": len(segments),
        "fps": len(gaps) / (span_ms / 1000) if span_ms > 0 else 0.0,
        "interval_ms_p50": percentile(gaps, 50),
        "interval_ms_p95": percentile(gaps, 95),
        "server_fps": percentile(server, 50),
    }


def measure_keys(page, presses: int, press_timeout: float = 5.0, static_timeout: float = 15.0) -> dict[str, Any]:
    """Teleop mode, arm idle: ``presses`` key presses (d / a alternately), keydown to first changed frame."""
    page.get_by_role("radio", name="teleop", exact=True).check()
    if not _wait_js(page, "() => window.__vlaBench.status().includes('mode teleop')", 30):
        raise RuntimeError(f"the session did not switch to teleop: {_state(page)!r}")
    page.evaluate("document.activeElement && document.activeElement.blur()")  # keys typed in a text box are ignored
    page.locator("#vla-status").click()
    page.evaluate("window.__vlaBench.armKeys = ['a', 'd']")
    latencies: list[float] = []
    traces: list[list] = []  # per press: [ms after keydown, pixels changed] of each frame until motion
    missed = 0
    for i in range(presses):
        for _attempt in range(3):
            start_running(page, fresh_after=FRESH_AFTER_STEPS)  # an idle episode ends at the env's step limit
            if not _wait_js(page, f"() => performance.now() - window.__vlaBench.lastChange > {STATIC_MS}", static_timeout):
                raise RuntimeError("the live frames did not become static with the arm idle")
            if _state(page).startswith("running"):
                break
        before = len(page.evaluate("window.__vlaBench.presses"))
        key = "d" if i % 2 == 0 else "a"
        page.keyboard.down(key)
        time.sleep(HOLD_S)
        page.keyboard.up(key)
        if _wait_js(page, f"() => window.__vlaBench.presses.length > {before}", press_timeout, polling=50):
            p = page.evaluate("window.__vlaBench.presses")[-1]
            latencies.append(p["t1"] - p["t0"])
            traces.append(p["trace"])
        else:
            missed += 1
        page.evaluate("window.__vlaBench.armed = null")
    page.get_by_role("radio", name="policy", exact=True).check()
    page.get_by_role("button", name="Pause").click()
    return {"latencies_ms": latencies, "traces": traces, "presses": len(latencies), "missed": missed,
            "p50": percentile(latencies, 50), "p95": percentile(latencies, 95)}


def percentile(values, q: float) -> float:
    if not values:
        return math.nan
    import numpy as np

    return float(np.percentile(np.asarray(values, float), q))


def measure(url: str, seconds: float = 20.0, presses: int = 20, warmup: float = 3.0,
            press_timeout: float = 5.0) -> dict[str, Any]:
    """Open ``url`` in headless Chromium and run both measurements in one tab (one session)."""
    from playwright.sync_api import sync_playwright

    if not os.path.exists(CHROMIUM):
        raise RuntimeError(f"the browser bench needs Debian's chromium at {CHROMIUM}")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.add_init_script(INSTRUMENT_JS)
            page.goto(url)
            page.locator("#vla-live img").first.wait_for(timeout=60_000)
            if not _wait_js(page, "() => window.__vlaBench.status().includes(' | mode ')", 60):
                raise RuntimeError("the live stream did not start (no status line)")
            fps = measure_fps(page, seconds, warmup)
            keys = measure_keys(page, presses, press_timeout) if presses > 0 else None
            page.close()
        finally:
            browser.close()
    return {"fps": fps, "keys": keys}


# ----------------------------------------------------------------------------- rows


def rows_from(result: dict[str, Any]) -> list[Row]:
    fps = result["fps"]
    rows = []
    if fps["server_fps"] == fps["server_fps"] and fps["server_fps"] > 0:  # not NaN
        rows += make_rows({"app.server_display_fps": (fps["server_fps"], "fps"),
                           "app.browser_fps": (fps["fps"], "fps")}, "app.server_display_fps")
    else:
        rows += make_rows({"app.browser_fps": (fps["fps"], "fps")}, None)
    rows += make_rows({"app.browser_frame_interval_ms_p95": (fps["interval_ms_p95"], "ms"),
                       "app.browser_frames": (float(fps["frames"]), "n")}, None)
    keys = result.get("keys")
    if keys is not None:
        rows += make_rows({"app.key_to_frame_ms": (keys["p50"], "ms"), "app.key_to_frame_ms_p95": (keys["p95"], "ms"),
                           "app.key_to_frame_presses": (float(keys["presses"]), "n"),
                           "app.key_to_frame_missed": (float(keys["missed"]), "n")}, None)
    return rows


def verdicts(rows: list[Row]) -> list[str]:
    values = {r["name"]: r["value"] for r in rows}
    out = []
    if "app.browser_fps" in values:
        v = values["app.browser_fps"]
        out.append(f"browser fps {v:.1f} (target >= {TARGET_FPS:.0f}): {'met' if v >= TARGET_FPS else 'NOT met'}")
    if "app.key_to_frame_ms" in values:
        v = values["app.key_to_frame_ms"]
        ok = v == v and v < TARGET_KEY_MS
        out.append(f"key to visible motion median {v:.0f} ms (target < {TARGET_KEY_MS:.0f}): {'met' if ok else 'NOT met'}")
    return out


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    where = p.add_mutually_exclusive_group()
    where.add_argument("--url", help="a running app (otherwise app.py is started on a free loopback port)")
    where.add_argument("--policy", default="expert", help="policy for the started app: a checkpoint folder or 'expert'")
    p.add_argument("--seconds", type=float, default=20.0, help="frame-rate window after the warm-up")
    p.add_argument("--warmup", type=float, default=3.0, help="seconds of running before frames count")
    p.add_argument("--presses", type=int, default=20, help="teleop key presses to time (0: skip)")
    p.add_argument("--press-timeout", type=float, default=5.0, help="seconds to wait for visible motion after a key press")
    p.add_argument("--json", default=None, help="write the rows here (the format of `python -m vla_demo bench --json`)")
    args = p.parse_args(argv)
    if args.seconds <= 0 or args.press_timeout <= 0 or args.warmup < 0 or args.presses < 0:
        p.error("--seconds and --press-timeout must be positive, --warmup and --presses not negative")
    return args


def main(argv=None) -> list[Row]:
    args = parse_args(argv)
    load = os.getloadavg()
    if args.url:
        result = measure(args.url, args.seconds, args.presses, args.warmup, args.press_timeout)
        target = args.url
    else:
        with started_app(args.policy) as url:
            result = measure(url, args.seconds, args.presses, args.warmup, args.press_timeout)
        target = f"app.py --policy {args.policy}"
    rows = rows_from(result)
    f = result["fps"]
    print(f"# {machine()}; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at the start")
    print(f"# {target}: {f['running_s']:.1f} s running over {f['episodes']} episode(s), headless Chromium")
    print(format_table(rows))
    for line in verdicts(rows):
        print(f"# {line}")
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    return rows


if __name__ == "__main__":
    main()
