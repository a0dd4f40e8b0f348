"""Helper for tests that run the policy server (``vla_demo.serve``) on a real loopback port."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from tests.serving import free_port, wait_for

TOKEN = "test-token-0123456789"


@contextlib.contextmanager
def running_server(policy, **config) -> Iterator[str]:
    """Serve ``policy`` with uvicorn in a thread on a free loopback port; yields the base URL and
    stops the server (and joins its thread) on exit."""
    import uvicorn

    from vla_demo.serve import ServeConfig, create_app

    cfg = ServeConfig(port=free_port(), **config)
    server = uvicorn.Server(uvicorn.Config(create_app(policy, cfg), host=cfg.host, port=cfg.port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="policy-server", daemon=True)
    thread.start()
    try:
        assert wait_for(lambda: server.started or not thread.is_alive(), timeout=60), "the policy server did not start"
        assert server.started, "the policy server thread ended before it started serving"
        yield f"http://{cfg.host}:{cfg.port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        assert not thread.is_alive(), "the policy server did not stop"
