"""``GET /health``: answers without auth and reveals nothing, while the page itself stays behind the
login and keeps the other launch protections."""

from __future__ import annotations

import httpx
import pytest

from tests.app_process import AppProcess
from tests.serving import serve
from vla_demo.ui.health import HEALTH_PATH, health_payload


def test_payload_is_ok_only_for_a_writable_data_root(tmp_path):
    assert health_payload(tmp_path) == (200, {"status": "ok", "service": "vla-demo"})
    missing = health_payload(tmp_path / "gone")
    assert missing[0] == 503 and missing[1]["status"] == "degraded" and str(tmp_path) not in str(missing)
    (tmp_path / "file").write_text("not a folder")
    assert health_payload(tmp_path / "file")[0] == 503


@pytest.mark.slow
def test_health_route_on_the_launched_page(make_ctx):
    ctx = make_ctx(jobs=True)  # the page's Fine-tune tab needs the job manager
    demo, url = serve(ctx)
    try:
        r = httpx.get(url.rstrip("/") + HEALTH_PATH, timeout=10)
        assert r.status_code == 200 and r.headers["content-type"] == "application/json"
        assert r.json() == {"status": "ok", "service": "vla-demo"}
        assert str(ctx.data_root) not in r.text and r.headers["cache-control"] == "no-store"
        assert httpx.head(url.rstrip("/") + HEALTH_PATH, timeout=10).status_code == 200
        assert httpx.post(url.rstrip("/") + HEALTH_PATH, timeout=10).status_code == 405
        assert httpx.get(url + "config", timeout=10).status_code == 200  # no auth here: the page is open
    finally:
        demo.close()


@pytest.mark.slow
def test_app_with_auth_serves_health_but_not_the_page(tmp_path):
    from gradio_client import Client
    from gradio_client.exceptions import AuthenticationError

    root = tmp_path / "data"
    (root / "datasets").mkdir(parents=True)
    secret = root / "datasets" / "secret.txt"
    secret.write_text("private")
    with AppProcess(root, tmp_path / "app.log", auth="ops:s3cret-pw") as app:
        app.wait_ready()
        assert app.health().json() == {"status": "ok", "service": "vla-demo"}
        page = httpx.get(app.url, timeout=10)
        assert page.status_code == 200 and '"auth_required":true' in page.text.replace(" ", "")
        assert "E-STOP" not in page.text  # the login page only: no components
        for path in ("config", "gradio_api/info", f"gradio_api/file={secret}"):
            assert httpx.get(app.url + path, timeout=10).status_code == 401, path
        with pytest.raises(AuthenticationError, match="credentials were not provided"):
            Client(app.url, verbose=False)
        with httpx.Client(base_url=app.url, timeout=10) as web:
            assert web.post("login", data={"username": "ops", "password": "wrong"}).status_code == 400
            assert web.post("login", data={"username": "ops", "password": "s3cret-pw"}).status_code == 200
            assert web.get("config").status_code == 200
            assert web.get(f"gradio_api/file={secret}").status_code == 403  # the data root stays blocked
        client = Client(app.url, auth=("ops", "s3cret-pw"), verbose=False)
        try:
            assert "new scene" in client.predict(1, "reach", 2, "", api_name="/reset")
        finally:
            client.close()
