"""RemotePolicy: a policy served by ``python -m vla_demo serve``, used like a local one.

``--policy http(s)://host:port`` (app, ``eval``) builds one. It has the policy interface of the
rollout loop (``reset()``, ``select_action(obs) -> (7,)``) and of the app (``predict(...) ->
Prediction`` with ``attention=None``: attention maps stay on the server; ``act(...)``), so the app's
overlays that need only the action chunk work and the attention ones are blank.

``select_action`` executes the predicted chunk from a queue, ``n_action_steps`` actions per
``/act_chunk`` round trip (the served checkpoint's setting, read from ``/health``), like the local
policy with its default queue; a checkpoint set to temporal ensembling is still run from the queue
here. The token comes from ``token=`` or ``$VLA_DEMO_SERVE_TOKEN``.

Errors: an unreachable server, a refused token or a server failure raise
:class:`RemotePolicyError` (a ``ConnectionError``) with the URL and the reason; input the server
refuses raises ``ValueError`` with the server's message, as the local policy would.
"""

from __future__ import annotations

import os
from collections import deque
from typing import Any

import numpy as np

from vla_demo import jsonnumpy
from vla_demo import serve_protocol as proto
from vla_demo.constants import OBS_IMAGE_FRONT, OBS_STATE, SERVE_TOKEN_ENV, TASK


def is_policy_url(spec: Any) -> bool:
    """Whether a ``--policy`` value names a policy server."""
    return isinstance(spec, str) and spec.startswith(("http://", "https://"))


class RemotePolicyError(ConnectionError):
    """The policy server cannot be used: unreachable, refused the token, or failed."""


def _as_array(image: Any) -> np.ndarray:
    if hasattr(image, "convert") and hasattr(image, "size"):  # PIL, without importing it
        image = image.convert("RGB")
    return np.asarray(image)


class RemotePolicy:
    """A client of a policy server.

    Args:
        url: the server, ``http(s)://host:port`` (a trailing slash is fine).
        token: bearer token (default: ``$VLA_DEMO_SERVE_TOKEN``; None: send none).
        timeout: seconds for connecting and for each answer.
        n_action_steps: actions executed per predicted chunk (default: the server's setting).
    """

    def __init__(self, url: str, token: str | None = None, timeout: float = 30.0, n_action_steps: int | None = None,
                 client: Any = None):
        if not is_policy_url(url):
            raise ValueError(f"not a policy-server URL: {url!r} (expected http://host:port or https://...)")
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0, got {timeout}")
        if n_action_steps is not None and n_action_steps < 1:
            raise ValueError(f"n_action_steps must be >= 1, got {n_action_steps}")
        self.url = url.rstrip("/")
        self.token = token if token is not None else (os.environ.get(SERVE_TOKEN_ENV) or None)
        self.timeout = float(timeout)
        self._n_action_steps = n_action_steps
        self._client = client
        self._info: dict[str, Any] | None = None
        self.last_prediction = None
        self.reset()

    def fork(self) -> RemotePolicy:
        """A new policy on the same server and connection pool, with its own action queue."""
        other = RemotePolicy(self.url, self.token, self.timeout, self._n_action_steps, client=self._http())
        other._info = self._info
        return other

    # ------------------------------------------------------------------ HTTP
    def _http(self):
        if self._client is None:
            import httpx

            headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
            self._client = httpx.Client(base_url=self.url, headers=headers, timeout=self.timeout)
        return self._client

    def _request(self, method: str, path: str, payload: dict | None = None) -> bytes:
        import httpx

        try:
            content = None if payload is None else jsonnumpy.dumps(payload).encode("utf-8")
            r = self._http().request(method, path, content=content, headers={"Content-Type": "application/json"})
        except httpx.TimeoutException as e:
            raise RemotePolicyError(f"the policy server at {self.url} did not answer within {self.timeout:g} s ({e})") from None
        except httpx.HTTPError as e:
            raise RemotePolicyError(f"cannot reach the policy server at {self.url}: {e}") from None
        if r.status_code == 200:
            return r.content
        message = proto.error_message(r.content)
        if r.status_code in (401, 403):
            raise RemotePolicyError(f"the policy server at {self.url} refused the token ({message}); set "
                                    f"{SERVE_TOKEN_ENV} to the server's token")
        if 400 <= r.status_code < 500 and r.status_code not in (404, 405):
            raise ValueError(f"the policy server refused the input: {message}")
        raise RemotePolicyError(f"the policy server at {self.url} answered {r.status_code}: {message}")

    def health(self) -> dict[str, Any]:
        """The server's ``/health`` answer (fetched once; RemotePolicyError when unusable)."""
        if self._info is None:
            import json

            body = self._request("GET", "/health")
            try:
                info = json.loads(body)
            except ValueError:
                info = None
            if not isinstance(info, dict) or info.get("status") != "ok":
                raise RemotePolicyError(f"{self.url} is not a vla-demo policy server (its /health says {body[:80]!r})")
            self._info = info
        return self._info

    @property
    def n_action_steps(self) -> int:
        """Actions executed per predicted chunk (the served checkpoint's, unless given)."""
        if self._n_action_steps is None:
            self._n_action_steps = int(self.health().get("n_action_steps", 1))
        return self._n_action_steps

    @property
    def config(self):
        """Inference settings as a ``PolicyConfig``, what callers of a local policy read."""
        from vla_demo.policy import PolicyConfig

        return PolicyConfig(n_action_steps=self.n_action_steps)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    # ------------------------------------------------------------------ the policy interface
    def reset(self) -> None:
        """Forget queued actions; call on every env reset and instruction change."""
        self._queue: deque[np.ndarray] = deque()

    def predict(self, image: Any, instruction: str, state: Any = None, return_attention: bool = False):
        """A fresh prediction from the server: the action chunk (attention is not served: None)."""
        from vla_demo.policy import Prediction

        payload = proto.chunk_payload([_as_array(image)], [instruction], None if state is None else [state])
        chunk = self._actions("/act_chunk", payload, ndim=3)[0]
        self.last_prediction = Prediction(chunk[0].copy(), chunk, None)
        return self.last_prediction

    def act(self, image: Any, instruction: str, state: Any = None) -> np.ndarray:
        """Stateless: one ``/act`` round trip (OpenVLA's endpoint), (7,) float32."""
        return self._actions("/act", proto.act_payload(_as_array(image), instruction, state), ndim=1)

    def select_action(self, obs: dict[str, Any]) -> np.ndarray:
        """Stateful closed-loop control from an env observation (a chunk per round trip)."""
        if not self._queue:
            chunk = self.predict(obs[OBS_IMAGE_FRONT], obs[TASK], obs.get(OBS_STATE)).chunk
            self._queue.extend(chunk[: self.n_action_steps])
        return self._queue.popleft()

    def _actions(self, path: str, payload: dict, ndim: int) -> np.ndarray:
        body = self._request("POST", path, payload)
        try:
            actions = proto.decode_actions(body)
        except (ValueError, TypeError) as e:
            raise RemotePolicyError(f"the policy server at {self.url} sent an unreadable answer: {e}") from None
        if actions.ndim != ndim or actions.shape[-1] < 1:
            raise RemotePolicyError(f"the policy server at {self.url} sent actions of shape {actions.shape}")
        return actions

    def __repr__(self) -> str:
        return f"RemotePolicy({self.url!r})"
