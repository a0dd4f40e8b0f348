"""Fine-tune and Evaluate tabs: layout builds, handlers give clear messages, and the browser API
runs a fine-tune end to end (start, progress, registered version, rollback)."""

from __future__ import annotations

import os
import time
from types import SimpleNamespace

import gradio as gr
import pytest

from vla_demo.ui import evaluate_tab, finetune_tab
from vla_demo.ui.jobs import JobManager
from vla_demo.ui.registry import PolicyRegistry


@pytest.fixture
def ctx(tmp_path, assets):
    base, tiny = assets
    (tmp_path / "datasets").mkdir()
    os.symlink(tiny, tmp_path / "datasets" / "tiny")
    registry = PolicyRegistry(tmp_path, str(base))
    jobs = JobManager(tmp_path, registry, eval_episodes=0, poll_s=0.1)
    yield SimpleNamespace(data_root=tmp_path, registry=registry, jobs=jobs)
    jobs.close(timeout=30)


def build_demo(ctx) -> gr.Blocks:
    with gr.Blocks() as demo:
        session = gr.State(None)
        with gr.Tab("Fine-tune"):
            finetune_tab.build(ctx, session)
        with gr.Tab("Evaluate"):
            evaluate_tab.build(ctx, session)
    return demo


def test_tabs_build_with_named_endpoints(ctx):
    demo = build_demo(ctx)
    names = {fn.api_name for fn in demo.fns.values() if fn.api_name}
    assert {"finetune_start", "finetune_cancel", "policy_activate", "policy_rollback", "eval_start", "ab_replay"} <= names


def test_handlers_give_clear_messages(ctx, tmp_path):
    follow, note = finetune_tab.start(ctx, [], 10, None, 0, {})
    assert follow == {} and "Not started" in note and "at least one dataset" in note
    follow, note = finetune_tab.start(ctx, ["tiny"], 0, None, 0, {})
    assert "steps must be between" in note
    assert "No fine-tune to cancel" in finetune_tab.cancel(ctx, {})
    assert "No job yet" in finetune_tab.poll(ctx, {})[1]
    assert "no earlier version" in finetune_tab.rollback(ctx)[0]
    v1 = ctx.registry.add_version(ctx.registry.path_of("default"), "default", {}, "test")
    (tmp_path / "policies" / v1 / "model.safetensors").write_bytes(b"broken")
    msg, table = finetune_tab.activate(ctx, v1)
    assert "Not activated" in msg and "`default` keeps running" in msg and ctx.registry.active == "default"
    assert list(table["version"]) == ["expert", "default (active)", "v1"]
    _, note = evaluate_tab.start_eval(ctx, "v7", "train", ["reach"], 1, False, {})
    assert "unknown policy version" in note
    _, note = evaluate_tab.start_replay(ctx, "default", "expert", "fly", 0, "train", {})
    assert "unknown task family" in note
    assert evaluate_tab.show_clip("pick seed1", {"clips": {}}) is None
    html = finetune_tab.progress_html({"id": "x", "state": "failed", "step": 1, "total": 2, "message": "<script>", "label": ""})
    assert "&lt;script&gt;" in html and "<script>" not in html


@pytest.mark.slow
def test_browser_api_runs_a_finetune_and_rolls_back(ctx):
    from gradio_client import Client

    demo = build_demo(ctx)
    demo.queue(api_open=False).launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=None,
                                      quiet=True, blocked_paths=[str(ctx.data_root)])
    try:
        client = Client(demo.local_url, verbose=False)
        note = client.predict(["tiny"], 4, finetune_tab.ACTIVE, 0, api_name="/finetune_start")
        assert "Queued" in note
        job = ctx.jobs.jobs()[-1]["id"]
        deadline = time.time() + 180
        while ctx.jobs.status(job)["state"] not in finetune_tab.FINAL:
            assert time.time() < deadline
            time.sleep(0.2)
        st = ctx.jobs.status(job)
        assert st["state"] == "done", st["message"]
        assert "without a before/after evaluation" in st["message"] and ctx.registry.active == "default"
        _, plot, result = finetune_tab.poll(ctx, {"job": job})[1:4]
        assert list(plot["step"]) == [1, 2, 3, 4] and "Result: `v1`" in result
        msg, _ = client.predict("v1", api_name="/policy_activate")
        assert "`v1` is active" in msg and ctx.registry.active == "v1"
        msg, _ = client.predict(api_name="/policy_rollback")
        assert "`default` is active" in msg and ctx.registry.active == "default"
    finally:
        demo.close()
