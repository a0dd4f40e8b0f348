"""The Fine-tune tab: pick datasets and steps, run a background fine-tune, watch it, manage versions.

The tab only talks to ``ctx.jobs`` (a :class:`~vla_demo.ui.jobs.JobManager`) and ``ctx.registry``
(a :class:`~vla_demo.ui.registry.PolicyRegistry`): jobs run in a child process, so the live feed
keeps streaming. A ``gr.Timer(1)`` polls the followed job (this session's last job, or else the
newest fine-tune, so a reloaded page re-attaches) into a progress bar, a loss plot and the
before/after result. Handlers are plain functions of ``ctx`` so they can be tested without a browser.
"""

from __future__ import annotations

import html
from typing import Any

import gradio as gr
import pandas as pd

ACTIVE = "(active version)"
FINAL = ("done", "failed", "cancelled")


# ----------------------------------------------------------------------------- shared views


def progress_html(st: dict[str, Any] | None) -> str:
    """A progress bar with the job's phase and message (HTML-escaped)."""
    if not st:
        return "<div class='vla-job'>No job yet.</div>"
    total, step = st.get("total") or 0, st.get("step") or 0
    bar = f"<progress value='{step}' max='{total}' style='width:100%'></progress>" if total else ""
    colour = {"failed": "#b42318", "cancelled": "#8a6d00", "done": "#1a7f37"}.get(st["state"], "inherit")
    message = html.escape(st.get("message") or "").replace("\n", "<br>")
    label = html.escape(st.get("label") or st["id"])
    return (f"<div class='vla-job'><b>{label}</b> &middot; <span style='color:{colour}'>{st['state']}</span>"
            f"{bar}<div style='font-family:monospace;font-size:0.85em;white-space:normal'>{message}</div></div>")


def loss_frame(st: dict[str, Any] | None) -> pd.DataFrame:
    """The (decimated) training loss as a DataFrame for ``gr.LinePlot``."""
    rows = (st or {}).get("loss") or []
    return pd.DataFrame(rows, columns=["step", "loss"])


def versions_frame(registry) -> pd.DataFrame:
    """One row per version: lineage and before/after success."""
    rows = []
    for v in registry.versions():
        m = v.get("metrics") or {}
        rows.append({"version": v["name"] + (" (active)" if v.get("active") else ""), "parent": v.get("parent") or "",
                     "created": v.get("created") or "", "families": ", ".join(m.get("families", [])),
                     "before": _pct(m.get("before")), "after": _pct(m.get("after")), "source": v.get("source") or ""})
    return pd.DataFrame(rows, columns=["version", "parent", "created", "families", "before", "after", "source"])


def _pct(x) -> str:
    return "" if x is None else f"{100 * float(x):.0f}%"


def followed(jobs, follow: dict[str, Any] | None, kinds: tuple[str, ...]) -> dict[str, Any] | None:
    """Status of this session's job, or of the newest job of these kinds."""
    job_id = (follow or {}).get("job")
    if job_id is None:
        mine = [j for j in jobs.jobs() if j["kind"] in kinds]
        job_id = mine[-1]["id"] if mine else None
    if job_id is None:
        return None
    try:
        return jobs.status(job_id)
    except ValueError:
        return None


# ----------------------------------------------------------------------------- handlers


def start(ctx, datasets: list[str] | None, steps: float, base: str | None, eval_episodes: float,
          follow: dict | None) -> tuple[dict, str]:
    """Queue a fine-tune; returns the new follow state and a message for the operator."""
    try:
        job_id = ctx.jobs.submit_finetune(list(datasets or []), steps=steps, eval_episodes=eval_episodes,
                                          base=None if base in (None, "", ACTIVE) else base)
    except ValueError as e:
        return follow or {}, f"**Not started:** {e}"
    return {"job": job_id, "seen": None}, f"Queued `{job_id}`."


def cancel(ctx, follow: dict | None) -> str:
    """Cancel the followed fine-tune."""
    st = followed(ctx.jobs, follow, ("finetune",))
    if st is None:
        return "No fine-tune to cancel."
    return f"Cancelling `{st['id']}`." if ctx.jobs.cancel(st["id"]) else f"`{st['id']}` has already ended ({st['state']})."


def result_markdown(st: dict[str, Any] | None) -> str:
    """Before/after table of a finished fine-tune."""
    if not st or st["state"] != "done" or not st.get("result"):
        return ""
    res = st["result"]
    lines = [f"### Result: `{res.get('version', '?')}`", "", html.escape(st["message"])]
    before, after = res.get("before") or {}, res.get("after") or {}
    if after:
        lines += ["", "| family | before | after |", "|---|---|---|"]
        for fam, row in after.items():
            lines.append(f"| {fam} | {_rate(before.get(fam))} | {_rate(row)} |")
        lines.append(f"| **all** | {_pct(res.get('before_rate'))} | {_pct(res.get('after_rate'))} |")
    return "\n".join(lines)


def _rate(row: dict | None) -> str:
    if not row:
        return "-"
    lo, hi = row["ci95"]
    return f"{row['successes']}/{row['episodes']} = {100 * row['success_rate']:.0f}% [{100 * lo:.0f}, {100 * hi:.0f}]"


def poll(ctx, follow: dict | None):
    """Timer tick: progress, loss plot, result; the version list and pickers refresh when a job ends."""
    st = followed(ctx.jobs, follow, ("finetune",))
    follow = dict(follow or {})
    state = (st or {}).get("state")
    ended_now = state in FINAL and follow.get("seen") != (st["id"], state)
    if st is not None:
        follow["seen"] = (st["id"], state)
    versions = versions_frame(ctx.registry) if ended_now else gr.skip()
    names = ctx.registry.names()
    picker = gr.update(choices=names) if ended_now else gr.skip()
    base = gr.update(choices=[ACTIVE, *names]) if ended_now else gr.skip()
    return follow, progress_html(st), loss_frame(st), result_markdown(st), versions, picker, base


def activate(ctx, name: str | None):
    """Hot-swap to a version (new episodes use it); a bad checkpoint leaves the current one running."""
    if not name:
        return "Pick a version first.", versions_frame(ctx.registry)
    try:
        ctx.registry.activate(name)
    except ValueError as e:
        return f"**Not activated:** {e}. `{ctx.registry.active}` keeps running.", versions_frame(ctx.registry)
    return f"`{name}` is active: new episodes use it; running ones finish on theirs.", versions_frame(ctx.registry)


def rollback(ctx):
    """Back to the previously active version."""
    try:
        name = ctx.registry.rollback()
    except ValueError as e:
        return f"**Rollback:** {e}.", versions_frame(ctx.registry)
    return f"Rolled back: `{name}` is active.", versions_frame(ctx.registry)


def refresh(ctx):
    """Re-read datasets and versions from the data root."""
    names = ctx.registry.names()
    return (gr.update(choices=ctx.jobs.dataset_names()), gr.update(choices=[ACTIVE, *names]),
            gr.update(choices=names), versions_frame(ctx.registry))


# ----------------------------------------------------------------------------- layout


def build(ctx, session_state) -> None:
    """Lay out the tab (called inside ``with gr.Tab("Fine-tune"):``) and wire its events.

    Version pickers accept values outside their initial choices (versions appear while the page is
    open); the registry validates every name, and names never become paths.
    """
    follow = gr.State({})
    gr.Markdown("Fine-tune a policy on recorded episodes. The job runs in the background (one at a time, "
                "others queue) while the live feed keeps running; afterwards both versions are evaluated "
                "and the new one is activated if it is at least as good.")
    with gr.Row():
        with gr.Column(scale=2):
            datasets = gr.CheckboxGroup(ctx.jobs.dataset_names(), label="Datasets to fine-tune on")
            with gr.Row():
                steps = gr.Number(300, label="Steps", minimum=1, maximum=100_000, precision=0)
                episodes = gr.Number(ctx.jobs.eval_episodes, label="Before/after episodes per family", minimum=0,
                                     maximum=200, precision=0)
                base = gr.Dropdown([ACTIVE, *ctx.registry.names()], value=ACTIVE, label="Start from", allow_custom_value=True)
            with gr.Row():
                start_btn = gr.Button("Start fine-tune", variant="primary")
                cancel_btn = gr.Button("Cancel", variant="stop")
                refresh_btn = gr.Button("Refresh lists")
            note = gr.Markdown()
            progress = gr.HTML(progress_html(None))
            plot = gr.LinePlot(loss_frame(None), x="step", y="loss", title="training loss", height=260)
            result = gr.Markdown()
        with gr.Column(scale=2):
            gr.Markdown("### Policy versions")
            table = gr.Dataframe(versions_frame(ctx.registry), interactive=False, wrap=True)
            with gr.Row():
                pick = gr.Dropdown(ctx.registry.names(), label="Version", value=ctx.registry.active, allow_custom_value=True)
                activate_btn = gr.Button("Activate")
                rollback_btn = gr.Button("Roll back")
            version_note = gr.Markdown(ctx.registry.warning)

    start_btn.click(lambda d, s, b, e, f: start(ctx, d, s, b, e, f), [datasets, steps, base, episodes, follow],
                    [follow, note], api_name="finetune_start")
    cancel_btn.click(lambda f: cancel(ctx, f), follow, note, api_name="finetune_cancel")
    activate_btn.click(lambda n: activate(ctx, n), pick, [version_note, table], api_name="policy_activate")
    rollback_btn.click(lambda: rollback(ctx), None, [version_note, table], api_name="policy_rollback")
    refresh_btn.click(lambda: refresh(ctx), None, [datasets, base, pick, table], api_name="finetune_refresh")
    timer = gr.Timer(1, active=False)  # the page turns it on while this tab is shown
    timer.tick(lambda f: poll(ctx, f), follow, [follow, progress, plot, result, table, pick, base],
               concurrency_limit=None, show_progress="hidden", api_visibility="private")
    return timer
