"""app.py: flags and the auth rule for non-loopback hosts."""

from __future__ import annotations

import pytest

import app


def test_loopback_needs_no_auth_and_other_hosts_do(monkeypatch, tmp_path):
    monkeypatch.delenv("VLA_DEMO_AUTH", raising=False)
    assert app.read_auth("127.0.0.1", insecure=False) is None
    with pytest.raises(SystemExit, match="refusing to serve on 0.0.0.0 without auth"):
        app.read_auth("0.0.0.0", insecure=False)
    assert app.read_auth("0.0.0.0", insecure=True) is None
    monkeypatch.setenv("VLA_DEMO_AUTH", "ops:s3cret")
    assert app.read_auth("0.0.0.0", insecure=False) == ("ops", "s3cret")
    secret = tmp_path / "auth.txt"
    secret.write_text("lab:pw:with:colons\n")
    monkeypatch.setenv("VLA_DEMO_AUTH", str(secret))
    assert app.read_auth("0.0.0.0", insecure=False) == ("lab", "pw:with:colons")
    for bad in ("nopassword", ":pw", "user:"):
        monkeypatch.setenv("VLA_DEMO_AUTH", bad)
        with pytest.raises(SystemExit, match="VLA_DEMO_AUTH must be"):
            app.read_auth("127.0.0.1", insecure=False)


def test_flags_have_safe_defaults():
    args = app.parse_args([])
    assert (args.host, args.port, args.camera_size, args.insecure) == ("127.0.0.1", 7860, 128, False)
    with pytest.raises(SystemExit, match="camera-size"):
        app.main(["--camera-size", "9000"])
