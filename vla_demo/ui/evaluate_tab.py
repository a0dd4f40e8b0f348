"""The Evaluate tab: run the evaluation suite on a version, read the table, watch failure clips,
and replay two versions side by side on the same seed.

Evaluations and A/B replays are background jobs of ``ctx.jobs`` (child processes, queued one at a
time with fine-tunes). Clips are copied out of the data root into a private temp folder before
they are shown, so the page never serves files from the data root. A ``gr.Timer(1)`` polls both
the followed evaluation and the followed replay.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

import gradio as gr

from vla_demo.constants import FAMILIES, SPLITS
from vla_demo.ui.finetune_tab import followed, progress_html

_CLIPS: dict[str, Any] = {"dir": None, "lock": threading.Lock()}
MAX_CLIP_COPIES = 64


def public_copy(path: str, prefix: str) -> str:
    """Copy a clip into this process's temp folder (oldest copies pruned); returns the copy's path."""
    with _CLIPS["lock"]:
        if _CLIPS["dir"] is None:
            _CLIPS["dir"] = Path(tempfile.mkdtemp(prefix="vla-demo-clips-"))
        folder: Path = _CLIPS["dir"]
        target = folder / f"{prefix}-{Path(path).name}"
        if not target.exists():
            shutil.copyfile(path, target)
        copies = sorted(folder.iterdir(), key=lambda p: p.stat().st_mtime)
        for old in copies[:-MAX_CLIP_COPIES]:
            old.unlink(missing_ok=True)
        return str(target)


# ----------------------------------------------------------------------------- evaluation


def start_eval(ctx, version: str | None, split: str, families: list[str] | None, episodes: float, baselines: bool,
               follow: dict | None) -> tuple[dict, str]:
    """Queue an evaluation of ``version``."""
    try:
        job_id = ctx.jobs.submit_eval(version or ctx.registry.active, split=split, families=list(families or FAMILIES),
                                      episodes_per_family=episodes, baselines=bool(baselines))
    except ValueError as e:
        return follow or {}, f"**Not started:** {e}"
    return {"job": job_id}, f"Queued `{job_id}`."


def cancel_eval(ctx, follow: dict | None) -> str:
    st = followed(ctx.jobs, follow, ("eval",))
    if st is None:
        return "No evaluation to cancel."
    return f"Cancelling `{st['id']}`." if ctx.jobs.cancel(st["id"]) else f"`{st['id']}` has already ended ({st['state']})."


def eval_view(st: dict[str, Any] | None, follow: dict) -> tuple[dict, str, Any]:
    """(follow state, results markdown, clip picker update) for the followed evaluation."""
    if not st or st["state"] != "done" or not st.get("result"):
        return follow, "", gr.skip()
    report = st["result"]
    table = report.get("table_markdown", "")
    if follow.get("shown") == st["id"]:
        return follow, table, gr.skip()
    clips = {Path(p).stem.replace("fail_", "").replace("_", " "): public_copy(p, st["id"])
             for p in report.get("failure_clips", []) if Path(p).is_file()}
    follow = {**follow, "shown": st["id"], "clips": clips}
    first = next(iter(clips), None)
    return follow, table, gr.update(choices=list(clips), value=first)


def show_clip(label: str | None, follow: dict | None) -> str | None:
    """The temp copy of a failure clip picked by its label (only clips this session was shown)."""
    return ((follow or {}).get("clips") or {}).get(label) if label else None


# ----------------------------------------------------------------------------- A/B replay


def start_replay(ctx, a: str | None, b: str | None, family: str, seed: float, split: str,
                 follow: dict | None) -> tuple[dict, str]:
    """Queue an A/B replay of two versions on one seeded episode."""
    try:
        job_id = ctx.jobs.submit_replay(a or ctx.registry.active, b or ctx.registry.active, family=family,
                                        seed=seed, split=split)
    except ValueError as e:
        return follow or {}, f"**Not started:** {e}"
    return {"job": job_id}, f"Queued `{job_id}`."


def replay_view(st: dict[str, Any] | None, follow: dict) -> tuple[dict, Any, str]:
    """(follow state, video update, summary) for the followed A/B replay."""
    if not st or st["state"] != "done" or not st.get("result"):
        return follow, gr.skip(), ""
    res = st["result"]
    summary = f"**{res['instruction']}** ({res['family']}, seed {res['seed']}): " + "; ".join(
        f"{'AB'[i]} `{s['version']}` {'succeeded' if s['success'] else 'failed'} in {s['steps']} steps"
        for i, s in enumerate(res["sides"]))
    if follow.get("shown") == st["id"]:
        return follow, gr.skip(), summary
    return {**follow, "shown": st["id"]}, public_copy(res["clip"], st["id"]), summary


# ----------------------------------------------------------------------------- polling and layout


def poll(ctx, follow_eval: dict | None, follow_ab: dict | None):
    """Timer tick: progress and results of the followed evaluation and A/B replay."""
    st = followed(ctx.jobs, follow_eval, ("eval",))
    ab = followed(ctx.jobs, follow_ab, ("replay",))
    follow_eval, table, clips = eval_view(st, dict(follow_eval or {}))
    follow_ab, video, summary = replay_view(ab, dict(follow_ab or {}))
    return follow_eval, progress_html(st), table, clips, follow_ab, progress_html(ab), video, summary


def refresh_versions(ctx):
    names = ctx.registry.names()
    return gr.update(choices=names), gr.update(choices=names), gr.update(choices=names)


def build(ctx, session_state) -> None:
    """Lay out the tab (called inside ``with gr.Tab("Evaluate"):``) and wire its events."""
    follow_eval, follow_ab = gr.State({}), gr.State({})
    names, active = ctx.registry.names(), ctx.registry.active
    with gr.Row():
        with gr.Column():
            gr.Markdown("### Evaluation suite")
            version = gr.Dropdown(names, value=active, label="Version", allow_custom_value=True)
            split = gr.Radio(list(SPLITS), value="train", label="Split (phrasings / colour-shape combinations)")
            families = gr.CheckboxGroup(list(FAMILIES), value=list(FAMILIES), label="Task families")
            with gr.Row():
                episodes = gr.Number(10, label="Episodes per family", minimum=1, maximum=500, precision=0)
                baselines = gr.Checkbox(True, label="Expert and language-blind baselines")
            with gr.Row():
                run_btn = gr.Button("Evaluate", variant="primary")
                cancel_btn = gr.Button("Cancel", variant="stop")
                refresh_btn = gr.Button("Refresh versions")
            note = gr.Markdown()
            progress = gr.HTML(progress_html(None))
            table = gr.Markdown()
            clip_pick = gr.Dropdown([], label="Failure clips")
            clip = gr.Video(label="Failure clip", interactive=False)
        with gr.Column():
            gr.Markdown("### A/B replay: two versions, same seed")
            with gr.Row():
                a = gr.Dropdown(names, value=active, label="A", allow_custom_value=True)
                b = gr.Dropdown(names, value="expert", label="B", allow_custom_value=True)
            with gr.Row():
                family = gr.Dropdown(list(FAMILIES), value=FAMILIES[0], label="Task family")
                seed = gr.Number(0, label="Seed", minimum=0, precision=0)
                ab_split = gr.Dropdown(list(SPLITS), value="train", label="Split")
            ab_btn = gr.Button("Replay A vs B", variant="primary")
            ab_note = gr.Markdown()
            ab_progress = gr.HTML(progress_html(None))
            ab_video = gr.Video(label="A | B", interactive=False, autoplay=True)
            ab_summary = gr.Markdown()

    run_btn.click(lambda v, s, f, e, bl, fo: start_eval(ctx, v, s, f, e, bl, fo),
                  [version, split, families, episodes, baselines, follow_eval], [follow_eval, note], api_name="eval_start")
    cancel_btn.click(lambda fo: cancel_eval(ctx, fo), follow_eval, note, api_name="eval_cancel")
    refresh_btn.click(lambda: refresh_versions(ctx), None, [version, a, b], api_name="eval_refresh")
    clip_pick.change(show_clip, [clip_pick, follow_eval], clip, api_visibility="private")
    ab_btn.click(lambda x, y, fam, sd, sp, fo: start_replay(ctx, x, y, fam, sd, sp, fo),
                 [a, b, family, seed, ab_split, follow_ab], [follow_ab, ab_note], api_name="ab_replay")
    timer = gr.Timer(1, active=False)  # the page turns it on while this tab is shown
    timer.tick(lambda fe, fa: poll(ctx, fe, fa), [follow_eval, follow_ab],
               [follow_eval, progress, table, clip_pick, follow_ab, ab_progress, ab_video, ab_summary],
               concurrency_limit=None, show_progress="hidden", api_visibility="private")
    return timer
