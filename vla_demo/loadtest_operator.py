"""One simulated operator of the load test: a ``gradio_client`` session that uses the page's events.

Like a browser tab it opens the live stream (``/live_stream``), resets scenes, re-sends the
instruction, runs, pauses, steps, switches modes and takes over in Shared mode with held keys (the
page's private ``keys`` event, which this client marks callable for itself), and fetches the newest
frame of the stream the way the page's ``<img>`` does. :class:`FrameLog` times every streamed
output as the client receives it and reads the status line the app streams with each frame.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time
from typing import Any

import numpy as np

from vla_demo.constants import FAMILIES

STATUS = re.compile(r"^(?P<state>[\w-]+) \| mode \w+ \| step (?P<step>\d+) \| control (?P<hz>[\d.]+) Hz")
SCENE = re.compile(r"new scene: '(?P<text>.*)' on ")
TELEOP_KEYS = ("w", "s", "a", "d", "r", "f")
MAX_MESSAGES = 5
REQUEST_TIMEOUT_S = 60.0  # a page waits for a slow server too; httpx's default of 5 s would count slowness as failure


def percentile(values, q: float) -> float | None:
    """The ``q``-th percentile of ``values`` (None when empty)."""
    return float(np.percentile(np.asarray(values, np.float64), q)) if len(values) else None


class FrameLog:
    """Arrival times and status lines of one session's streamed frames (fed from the client's
    receiving thread); statistics cover the frames after :attr:`measure_from` only."""

    def __init__(self):
        self.lock = threading.Lock()
        self.measure_from = float("inf")
        self.frames = 0
        self.state = "starting"
        self.latest_url: str | None = None
        self.new_frame = threading.Event()
        self.intervals_ms: list[float] = []  # between consecutive frames while running
        self.steps, self.step_seconds = 0, 0.0  # control steps and the running time they took
        self.app_hz: list[float] = []  # the control rate the app reports while running
        self._last: tuple[float, str, int] | None = None  # (time, state, step)

    def on_output(self, *data: Any) -> None:
        """The client's ``process_predictions`` hook: (image, status, words, plot) of one frame."""
        now = time.perf_counter()
        image, status = (data + (None, None))[:2]
        m = STATUS.match(status) if isinstance(status, str) else None
        url = image.get("url") if isinstance(image, dict) else getattr(image, "url", None)
        with self.lock:
            self.frames += 1
            self.latest_url = url or self.latest_url
            self.new_frame.set()
            if m is None:
                return None
            state, step = m["state"], int(m["step"])
            self.state = state
            last, self._last = self._last, (now, state, step)
            if now < self.measure_from or last is None or state != "running" or last[1] != "running":
                return None
            self.intervals_ms.append(1000 * (now - last[0]))
            if step >= last[2]:  # a reset in between restarts the count
                self.steps += step - last[2]
                self.step_seconds += now - last[0]
            self.app_hz.append(float(m["hz"]))
        return None  # keeps the client's own output list tiny over a long run

    def summary(self) -> dict[str, Any]:
        with self.lock:
            hz = self.steps / self.step_seconds if self.step_seconds > 0 else None
            p95 = percentile(self.intervals_ms, 95)
            return {"frames": self.frames, "control_hz": None if hz is None else round(hz, 2),
                    "app_control_hz": percentile(self.app_hz, 50),
                    "p95_frame_interval_ms": None if p95 is None else round(p95, 1),
                    "running_seconds": round(self.step_seconds, 1)}


class Operator:
    """One session: connects, streams, and acts like an operator until :meth:`stop`."""

    def __init__(self, index: int, url: str, auth: tuple[str, str] | None, seed: int):
        from gradio_client import Client

        self.index = index
        self.rng = np.random.default_rng(seed)
        self.log = FrameLog()
        self.errors: list[str] = []
        self.error_count = 0
        self.episodes = self.takeovers = self.fetched = 0
        self.stopped = threading.Event()
        self.client = Client(url, auth=auth, verbose=False, download_files=False,
                             httpx_kwargs={"timeout": REQUEST_TIMEOUT_S})
        self._keys = self._enable_private("/keys")
        stream = self.client._infer_fn_index("/live_stream", None)
        self.client.endpoints[stream].process_predictions = self.log.on_output
        self.job = None
        self._threads: list[threading.Thread] = []

    def _enable_private(self, api_name: str) -> int | None:
        """The index of a private event, made callable by this client (the browser calls it too)."""
        for index, endpoint in self.client.endpoints.items():
            if getattr(endpoint, "api_name", None) == api_name:
                endpoint.is_valid = True
                return index
        return None

    # ------------------------------------------------------------------ threads
    def start(self) -> None:
        self.job = self.client.submit(api_name="/live_stream")
        for target in (self._act, self._fetch):
            t = threading.Thread(target=target, name=f"operator-{self.index}-{target.__name__}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        """Stop acting, end the stream and the client's heartbeat (the app then frees the session)."""
        self.stopped.set()
        for t in self._threads:
            t.join(timeout=REQUEST_TIMEOUT_S + 5)  # a call in flight ends within its own timeout
        try:
            if self.job is not None:
                if self.job.done() and self.job.exception() is not None:
                    self._error(f"live stream failed: {self.job.exception()}")
                self.job.cancel()
        except Exception as e:  # noqa: BLE001 - a failed cancel is a finding, not a crash of the load test
            self._error(f"stopping the live stream: {type(e).__name__}: {e}")
        finally:
            self.client.close()

    def _error(self, message: str) -> None:
        self.error_count += 1
        if len(self.errors) < MAX_MESSAGES:
            self.errors.append(message[:300])

    def call(self, api_name: str, *args) -> Any:
        """One event; failures (and calls unanswered after ``REQUEST_TIMEOUT_S``) are counted, never raised."""
        return self._bounded(api_name, lambda: self.client.submit(*args, api_name=api_name))

    def _bounded(self, name: str, submit) -> Any:
        """Wait at most ``REQUEST_TIMEOUT_S`` for a queued event, so an overloaded app cannot hang
        the load test (gradio_client's ``predict`` waits for ever)."""
        job = None
        try:
            job = submit()
            return job.result(timeout=REQUEST_TIMEOUT_S)
        except Exception as e:  # noqa: BLE001 - every failure is a load-test finding
            self._error(f"{name}: {type(e).__name__}: {e}")
            if job is not None:
                with contextlib.suppress(Exception):
                    job.cancel()
            return None

    def keys(self, held: list[str]) -> None:
        if self._keys is None:
            return
        self._bounded("/keys", lambda: self.client.submit(json.dumps(held), fn_index=self._keys))

    def _pause(self, low: float, high: float) -> bool:
        """Wait like an operator; False once the test is over."""
        return not self.stopped.wait(float(self.rng.uniform(low, high)))

    # ------------------------------------------------------------------ behaviour
    def _act(self) -> None:
        while not self.stopped.is_set():
            if self.job is not None and self.job.done():
                self._error(f"live stream ended: {self.job.exception()!r}")
                return
            self._episode()

    def _episode(self) -> None:
        rng = self.rng
        reply = self.call("/reset", int(rng.integers(0, 2**31 - 1)), str(rng.choice(FAMILIES)), 3, "")
        self.episodes += 1
        m = SCENE.search(reply or "")
        if m and rng.random() < 0.5:
            self.call("/set_instruction", m["text"])  # typed again, as an operator would
        self.call("/run")
        end = time.monotonic() + float(rng.uniform(6, 15))
        while time.monotonic() < end and self.log.state != "done" and self._pause(1.0, 3.0):
            u = rng.random()
            if u < 0.2:
                self._takeover()
            elif u < 0.3:
                self._pause_and_step()
            elif u < 0.35:
                self.call("/set_overlays", ["attention", "action arrow", "chunk path", "gripper"], "rollout")

    def _takeover(self) -> None:
        """Shared mode: hold a key (the operator takes over), release, hand back with H."""
        self.takeovers += 1
        self.call("/set_mode", "shared")
        self.keys([str(self.rng.choice(TELEOP_KEYS))])
        self._pause(0.3, 1.0)
        self.keys([])
        self.keys(["h"])
        self.keys([])
        self.call("/set_mode", "policy")

    def _pause_and_step(self) -> None:
        self.call("/pause")
        self.call("/step")
        self._pause(0.3, 0.8)
        self.call("/run")

    def _fetch(self) -> None:
        """GET the newest streamed frame whenever a new one arrived (stale ones are skipped)."""
        import httpx

        seen = None
        with httpx.Client(headers=self.client.headers, cookies=self.client.cookies, timeout=REQUEST_TIMEOUT_S) as http:
            while not self.stopped.is_set():
                if not self.log.new_frame.wait(0.5):
                    continue
                self.log.new_frame.clear()
                url = self.log.latest_url
                if url is None or url == seen:  # a paused scene streams the same cached file
                    continue
                seen = url
                try:
                    http.get(url).raise_for_status()
                    self.fetched += 1
                except httpx.HTTPError as e:
                    self._error(f"frame fetch: {type(e).__name__}: {e}")

    def report(self) -> dict[str, Any]:
        s = self.log.summary()
        return {"session": self.index, **s, "frames_fetched": self.fetched, "episodes": self.episodes,
                "takeovers": self.takeovers, "errors": self.error_count, "error_messages": list(self.errors)}

