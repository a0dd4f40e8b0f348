"""``GET /health``: the liveness probe of containers and load balancers.

It answers without auth (a probe has no credentials) and therefore says nothing but whether the
app can do its job: ``{"status": "ok", "service": "vla-demo"}`` with 200 while the data root is a
writable folder, ``{"status": "degraded", "problem": "data root not writable"}`` with 503 otherwise
(an unmounted or read-only volume). No paths, versions, users, sessions or jobs.

The route goes into Gradio's own FastAPI app through ``launch(app_kwargs={"routes": [...]})`` (see
:func:`vla_demo.ui.layout.launch_kwargs`), so the page keeps every launch setting (auth,
``blocked_paths``, ``max_file_size``, the closed queue) and no second server is needed.
"""

from __future__ import annotations

import os
from pathlib import Path

HEALTH_PATH = "/health"
SERVICE = "vla-demo"


def health_payload(data_root: Path) -> tuple[int, dict[str, str]]:
    """``(HTTP status, JSON body)`` of the probe for an app serving ``data_root``."""
    root = Path(data_root)
    if root.is_dir() and os.access(root, os.W_OK | os.X_OK):
        return 200, {"status": "ok", "service": SERVICE}
    return 503, {"status": "degraded", "service": SERVICE, "problem": "data root not writable"}


def health_route(data_root: Path):
    """A Starlette route for :data:`HEALTH_PATH` (GET and HEAD) bound to the app's data root."""
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def health(request) -> JSONResponse:  # noqa: ARG001 (Starlette passes the request)
        status, body = health_payload(data_root)
        return JSONResponse(body, status_code=status, headers={"Cache-Control": "no-store"})

    return Route(HEALTH_PATH, health, methods=["GET"], name="health")
