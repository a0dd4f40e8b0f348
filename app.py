"""vla-demo: ``python app.py`` serves the browser app on http://127.0.0.1:7860.

Thin on purpose: parse flags, build the shared context, build the page, launch. The page lives in
``vla_demo/ui``; see the README for what each tab does.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

DEFAULT_POLICY = Path(__file__).resolve().parent / "assets" / "policies" / "default"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="vla-demo: watch, steer and retrain a VLA policy in the browser")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (0.0.0.0 needs VLA_DEMO_AUTH or --insecure)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--policy", default=None, help="checkpoint folder, policy-server URL (http://host:8000, token in "
                   "$VLA_DEMO_SERVE_TOKEN) or 'expert' (default: the bundled policy)")
    p.add_argument("--data-root", default=None, help="datasets, policy versions and runs (default: $VLA_DEMO_DATA or ./data)")
    p.add_argument("--camera-size", type=int, default=128, help="sim camera side in pixels (16..512)")
    p.add_argument("--insecure", action="store_true", help="allow a non-loopback host without auth (not recommended)")
    return p.parse_args(argv)


def read_auth(host: str, insecure: bool):
    """``VLA_DEMO_AUTH=user:pass`` (or a path to a file holding it). Non-loopback hosts need it."""
    raw = os.environ.get("VLA_DEMO_AUTH", "").strip()
    if raw and os.path.isfile(raw):
        raw = Path(raw).read_text(encoding="utf-8").strip()
    if raw:
        user, sep, password = raw.partition(":")
        if not sep or not user or not password:
            raise SystemExit("VLA_DEMO_AUTH must be 'user:password' (or a file holding that)")
        return (user, password)
    if host not in ("127.0.0.1", "localhost", "::1") and not insecure:
        raise SystemExit(f"refusing to serve on {host} without auth: set VLA_DEMO_AUTH=user:password, or pass --insecure")
    return None


def main(argv=None) -> int:
    args = parse_args(argv)
    auth = read_auth(args.host, args.insecure)
    policy = args.policy or (str(DEFAULT_POLICY) if (DEFAULT_POLICY / "config.json").exists() else "expert")
    if args.policy is None and policy == "expert":
        print(f"note: no bundled policy at {DEFAULT_POLICY}; running the scripted expert "
              "(train one with `python -m vla_demo train --preset default`)", file=sys.stderr)
    if not 16 <= args.camera_size <= 512:
        raise SystemExit(f"--camera-size must be in 16..512, got {args.camera_size}")
    os.environ.setdefault("GRADIO_HEARTBEAT_INTERVAL", "5")  # a closed tab frees its sim within seconds
    from vla_demo.ui.memory import MallocTrimmer, limit_malloc_arenas

    limit_malloc_arenas()  # before Gradio's worker threads exist: RSS stays flat under many sessions
    trimmer = MallocTrimmer()
    trimmer.start()
    from vla_demo.ui.app import make_context
    from vla_demo.ui.layout import build_demo, launch_kwargs

    try:
        ctx = make_context(policy, args.data_root, args.camera_size)
    except (ValueError, OSError) as e:
        raise SystemExit(f"cannot start: {e}") from None
    demo = build_demo(ctx)
    try:
        demo.launch(server_name=args.host, server_port=args.port, **launch_kwargs(ctx, auth))
    finally:
        ctx.close()
        trimmer.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
