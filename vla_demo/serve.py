"""Policy server: ``python -m vla_demo serve --policy DIR [--port 8000]``.

Serves one learned checkpoint over HTTP so the app, ``eval`` and any OpenVLA-style client can use
it from another machine (``--policy http://host:8000`` everywhere). Endpoints:

* ``GET /health`` (no auth): ``{"status": "ok", "policy": <name>, "chunk_size", "n_action_steps",
  "image_size", "state_dim", "action_dim", "unnorm_keys", "auth", "max_request_mb", "max_batch"}``;
* ``POST /act``: OpenVLA's request, answered with the json-numpy (7,) action;
* ``POST /act_chunk``: a batch, answered with each item's whole predicted chunk (B, H, 7).

The request format and what is refused are described in :mod:`vla_demo.serve_protocol`.

Differences from OpenVLA's ``vla-scripts/deploy.py``:

* bearer-token auth (``--token`` or ``VLA_DEMO_SERVE_TOKEN``; ``Authorization: Bearer <token>``,
  compared in constant time) on ``/act`` and ``/act_chunk``; a host other than loopback refuses
  to start without a token unless ``--insecure`` is given (OpenVLA binds 0.0.0.0 with no auth);
* refused requests are answered 4xx with ``{"error": message}`` (400 bad input, 401 token,
  404/405 route, 413 too large) instead of the string ``"error"`` with status 200; an unexpected
  failure is a 500 with ``{"error": ...}`` and never a traceback;
* the request body is limited (``--max-request-mb``, default 8) before it is parsed;
* ``unnorm_key`` may only be null or ``"vla_demo"`` (one normalisation per checkpoint);
* optional ``state`` and ``format`` fields, and the ``/act_chunk`` and ``/health`` endpoints;
* the action is float32 (OpenVLA's is float64); json-numpy readers do not care.

Forward passes are serialised with a lock (torch on a small CPU gains nothing from running two at
once); only safetensors/JSON checkpoints are loaded. The scripted expert cannot be served: it reads
the simulator's privileged state, which a remote client does not send.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hmac
import ipaddress
import json
import logging
import os
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vla_demo import serve_protocol as proto
from vla_demo.constants import ACTION_DIM, MAX_INSTRUCTION_CHARS, SERVE_TOKEN_ENV, SERVE_UNNORM_KEY

log = logging.getLogger(__name__)
LOOPBACK_NAMES = ("localhost",)


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class ServeConfig:
    """How the server runs.

    Attributes:
        host, port: where to listen (port 0: any free port).
        token: bearer token the POST endpoints require (None: no auth, loopback only).
        insecure: allow a non-loopback host without a token.
        max_request_mb: largest request body accepted, checked before parsing.
        max_batch: most items in one ``/act_chunk`` request.
        name: the policy's name in ``/health``.
        threads: torch threads for the forward passes (None: torch's default).
    """

    host: str = "127.0.0.1"
    port: int = 8000
    token: str | None = None
    insecure: bool = False
    max_request_mb: float = 8.0
    max_batch: int = 16
    name: str = "policy"
    threads: int | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in 0..65535, got {self.port}")
        if not 0 < self.max_request_mb <= 1024:
            raise ValueError(f"max_request_mb must be in (0, 1024], got {self.max_request_mb}")
        if self.max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {self.max_batch}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")
        if self.token is not None and (not self.token or not self.token.isascii() or not self.token.isprintable()
                                       or any(c.isspace() for c in self.token)):
            raise ValueError("the token must be non-empty printable ASCII without spaces")
        if not is_loopback(self.host) and self.token is None and not self.insecure:
            raise ValueError(f"refusing to serve on {self.host} without a token: set {SERVE_TOKEN_ENV} (or --token), "
                             "or pass --insecure")

    @property
    def max_request_bytes(self) -> int:
        return int(self.max_request_mb * 1024 * 1024)


# ----------------------------------------------------------------------------- the policy


def load_served_policy(spec: str):
    """The checkpoint to serve; the expert and URLs are refused with the reason."""
    if spec == "expert":
        raise ValueError("the scripted expert cannot be served: it reads the simulator's privileged state, which a "
                         "remote client does not send; serve a checkpoint folder")
    if spec.startswith(("http://", "https://")):
        raise ValueError(f"{spec!r} is already a policy server; serve a checkpoint folder")
    if not Path(spec).is_dir():
        raise ValueError(f"no policy checkpoint folder at {spec!r}")
    from vla_demo.policy import LanguageConditionedPolicy

    policy = LanguageConditionedPolicy.from_pretrained(spec)
    if policy.needs_wrist:
        raise ValueError(f"{spec!r} also sees the wrist camera, which the serving protocol does not carry "
                         "(one image per request); serve a front-camera checkpoint")
    return policy


class PolicyRunner:
    """Forward passes of one shared policy, one at a time."""

    def __init__(self, policy, threads: int | None = None):
        self.policy = policy
        self.threads = threads
        self.lock = threading.Lock()

    @property
    def state_dim(self) -> int:
        return int(self.policy.model.config.state_dim)

    def info(self) -> dict[str, Any]:
        c, p = self.policy.model.config, self.policy.config
        return {"chunk_size": int(c.chunk_size), "n_action_steps": int(p.n_action_steps),
                "temporal_ensemble": bool(p.temporal_ensemble), "image_size": int(c.image_size),
                "state_dim": self.state_dim, "action_dim": ACTION_DIM, "unnorm_keys": [SERVE_UNNORM_KEY]}

    def act(self, req: proto.ActRequest) -> np.ndarray:
        with self.lock, _refusing_bad_input():
            self._set_threads()
            return _finite(self.policy.predict(req.image, req.instruction, req.state).action)

    def chunks(self, req: proto.ChunkRequest) -> np.ndarray:
        with self.lock, _refusing_bad_input():
            self._set_threads()
            return _finite(predict_chunks(self.policy, req.images, req.instructions, req.states))

    def _set_threads(self) -> None:
        """Apply ``--threads`` in the worker thread that runs the forward pass."""
        if self.threads:
            import torch

            torch.set_num_threads(self.threads)


@contextlib.contextmanager
def _refusing_bad_input():
    """The policy's own input checks (ValueError) become 400s; the protocol checks first anyway."""
    try:
        yield
    except proto.RequestError:
        raise
    except ValueError as e:
        raise proto.RequestError(f"the policy cannot read this input: {e}") from None


def predict_chunks(policy, images: list[np.ndarray], instructions: list[str], states: np.ndarray | None) -> np.ndarray:
    """(B, H, 7) chunks for a batch in one forward pass (what ``policy.predict`` does per item)."""
    import torch

    from vla_demo.policy import prepare_images

    m = policy.model
    with torch.inference_mode():
        x = prepare_images(images, m.config.image_size)
        enc = policy.tokenizer(instructions)
        st = None if states is None else torch.from_numpy(np.ascontiguousarray(states, dtype=np.float32))
        res = m(x, enc.input_ids, enc.attention_mask, st)
        return m.decode(res["out"]).numpy().astype(np.float32)


def _finite(actions: np.ndarray) -> np.ndarray:
    if not np.all(np.isfinite(actions)):
        raise RuntimeError("the policy produced a non-finite action")
    return actions


# ----------------------------------------------------------------------------- HTTP


def check_token(header: str | None, token: str | None) -> None:
    """Raise 401 unless ``header`` is ``Bearer <token>`` (constant-time comparison)."""
    if token is None:
        return
    scheme, _, given = (header or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode("utf-8", "replace"), token.encode()):
        raise proto.RequestError("missing or wrong token: send the header 'Authorization: Bearer <token>'",
                                 status=401, headers={"WWW-Authenticate": "Bearer"})


async def read_body(request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed ``limit`` bytes."""
    too_big = f"request body is larger than {limit} bytes (the server's --max-request-mb)"
    length = request.headers.get("content-length")
    if length is not None:
        if not length.isdigit():
            raise proto.RequestError("bad Content-Length header")
        if int(length) > limit:
            raise proto.RequestError(too_big, status=413)
    body = bytearray()
    async for part in request.stream():
        body += part
        if len(body) > limit:
            raise proto.RequestError(too_big, status=413)
    return bytes(body)


def _json_response(body: bytes | dict, status: int = 200, headers: dict[str, str] | None = None):
    from starlette.responses import Response

    content = body if isinstance(body, bytes) else json.dumps(body).encode("utf-8")
    return Response(content, status_code=status, headers=headers, media_type="application/json")


def _warning(truncated: bool) -> dict[str, str] | None:
    return {proto.WARNING_HEADER: f"instruction truncated to {MAX_INSTRUCTION_CHARS} characters"} if truncated else None


def create_app(policy, config: ServeConfig | None = None):
    """The FastAPI app serving ``policy`` (a loaded ``LanguageConditionedPolicy``)."""
    from fastapi import FastAPI
    from starlette.concurrency import run_in_threadpool

    config = config or ServeConfig()
    runner = PolicyRunner(policy, config.threads)
    app = FastAPI(title="vla-demo policy server", docs_url=None, redoc_url=None, openapi_url=None)
    _add_error_handlers(app)

    async def authorised_body(request) -> bytes:
        check_token(request.headers.get("authorization"), config.token)  # before reading anything
        return await read_body(request, config.max_request_bytes)

    def answer_act(raw: bytes) -> tuple[bytes, bool]:
        payload, encoded = proto.parse_body(raw)
        req = proto.parse_act(payload, runner.state_dim, encoded)
        return proto.encode_actions(runner.act(req), req.as_list, req.encoded), req.truncated

    def answer_chunk(raw: bytes) -> tuple[bytes, bool]:
        payload, encoded = proto.parse_body(raw)
        req = proto.parse_chunk(payload, runner.state_dim, config.max_batch)
        return proto.encode_actions(runner.chunks(req), req.as_list, encoded), req.truncated

    async def health(request):
        return _json_response({"status": "ok", "policy": config.name, **runner.info(), "auth": config.token is not None,
                               "max_request_mb": config.max_request_mb, "max_batch": config.max_batch})

    async def act(request):  # parsing and the forward pass run in a worker thread, off the event loop
        body, truncated = await run_in_threadpool(answer_act, await authorised_body(request))
        return _json_response(body, headers=_warning(truncated))

    async def act_chunk(request):
        body, truncated = await run_in_threadpool(answer_chunk, await authorised_body(request))
        return _json_response(body, headers=_warning(truncated))

    # Starlette-style routes: the handlers read the raw request themselves (size limit first).
    app.add_route("/health", _guarded(health), methods=["GET"])
    app.add_route("/act", _guarded(act), methods=["POST"])
    app.add_route("/act_chunk", _guarded(act_chunk), methods=["POST"])
    return app


def _failure(exc: Exception):
    return _json_response({"error": f"the server failed on this request ({type(exc).__name__}: {str(exc)[:200]}); "
                                    "see its log"}, 500)


def _guarded(handler):
    """Answer a refused request 4xx and a failure 500, both ``{"error": message}``; the traceback
    only goes to the server's log. (Caught here rather than by an app-wide handler, after which
    Starlette re-raises and the client's keep-alive connection is dropped.)"""

    @functools.wraps(handler)
    async def guarded(request):
        try:
            return await handler(request)
        except proto.RequestError as e:
            return _json_response({"error": str(e)}, e.status, e.headers)
        except Exception as e:  # noqa: BLE001 (a server answers, whatever happened)
            log.exception("%s %s failed", request.method, request.url.path)
            return _failure(e)

    return guarded


def _add_error_handlers(app) -> None:
    """Routing errors (404, 405) as ``{"error": message}`` too, and a last-resort 500."""
    from starlette.exceptions import HTTPException

    @app.exception_handler(HTTPException)
    async def http_error(request, exc: HTTPException):
        return _json_response({"error": str(exc.detail)}, exc.status_code, getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def failed(request, exc: Exception):
        return _failure(exc)


# ----------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``serve`` verb's flags."""
    parser.add_argument("--policy", required=True, help="checkpoint folder to serve (the expert cannot be served)")
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (non-loopback needs a token or --insecure)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--token", default=None,
                        help=f"bearer token for /act and /act_chunk (default: ${SERVE_TOKEN_ENV}; prefer the variable, "
                             "command lines are visible to other users)")
    parser.add_argument("--insecure", action="store_true", help="allow a non-loopback host without a token")
    parser.add_argument("--max-request-mb", type=float, default=8.0, help="largest request body accepted")
    parser.add_argument("--max-batch", type=int, default=16, help="most items in one /act_chunk request")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")


def config_from_args(args: argparse.Namespace) -> ServeConfig:
    token = args.token or os.environ.get(SERVE_TOKEN_ENV) or None
    return ServeConfig(host=args.host, port=args.port, token=token, insecure=args.insecure,
                       max_request_mb=args.max_request_mb, max_batch=args.max_batch,
                       name=Path(args.policy).resolve().name, threads=args.threads)


def run(args: argparse.Namespace) -> int:
    """Check the flags, load the policy once and serve until interrupted (ValueError on bad flags)."""
    config = config_from_args(args)
    policy = load_served_policy(args.policy)
    import uvicorn

    auth = "token required" if config.token else "no token (loopback only)" if is_loopback(config.host) else "NO AUTH"
    print(f"serving {config.name} ({policy!r}) on http://{config.host}:{config.port} [{auth}]", file=sys.stderr)
    uvicorn.run(create_app(policy, config), host=config.host, port=config.port, log_level="info",
                server_header=False, limit_concurrency=64, timeout_keep_alive=5)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m vla_demo.serve ...`` (the same flags as the ``serve`` verb)."""
    parser = argparse.ArgumentParser(prog="python -m vla_demo serve", description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
