"""The page: gr.Blocks layout and event wiring only (logic lives in session, jobs, registry).

Every public event has an explicit ``api_name`` (the ``gradio_client`` tests call them); the
high-rate held-key event is private. Each browser tab gets its own :class:`Session`, looked up by
Gradio's ``session_hash``; the page's unload event frees it.
"""

from __future__ import annotations

import functools
import os
import time
from pathlib import Path

import gradio as gr
from gradio import utils as gr_utils
import pandas as pd

from vla_demo.constants import FAMILIES
from vla_demo.ui import finetune_tab, evaluate_tab, record_tab
from vla_demo.ui.frames import FrameFiles, stream_folder
from vla_demo.ui.session import KEYMAP_MARKDOWN, MODES

TELEOP_JS = Path(__file__).with_name("teleop.js")
OVERLAY_CHOICES = ["attention", "action arrow", "chunk path", "gripper", "goal guess"]
# Scenes as each evaluation split samples them: only the third holds the colour-shape combinations
# the policy never trained on (training scenes leave them out, even as distractors).
SCENE_CHOICES = [("training", "train"), ("held-out phrasings", "heldout"), ("new colour-shape combinations", "heldout-combos")]
LAYER_CHOICES = ["rollout", "layer 1", "layer 2", "layer 3", "layer 4", "layer 5", "layer 6"]
CSS = "#vla-live img {image-rendering: auto;} #vla-status {font-family: monospace; font-size: 0.85em;}"
PLOT_PERIOD_S = 0.5  # the action chart: twice a second is plenty
KEEPALIVE_S = 1.0  # an unchanged stream still yields this often (see _changes)


def _changes(keepalive_s: float = KEEPALIVE_S):
    """``changed(value)``: True when ``value`` differs from the last one it let through, or that was
    ``keepalive_s`` ago. A stream must yield now and then even when nothing changed: Gradio notices a
    closed page, and cancels a generator, only between two of its yields."""
    last: list = [object(), 0.0]

    def changed(value) -> bool:
        now = time.monotonic()
        if value != last[0] or now - last[1] >= keepalive_s:
            last[:] = [value, now]
            return True
        return False

    return changed


def _live_tab(ctx, session_of) -> None:
    with gr.Row():
        with gr.Column(scale=3):
            live = gr.Image(label="Live (front camera)", format="jpeg", interactive=False, elem_id="vla-live",
                            height=ctx.display_size, buttons=[])
            status = gr.Markdown("starting...", elem_id="vla-status")
            words = gr.HighlightedText(label="Per-word attention (readout -> words)", show_legend=False)
            plot = gr.Image(label="Executed actions", show_label=False, format="png", interactive=False,
                            elem_id="vla-actions", buttons=[])  # the chart draws its own title
        with gr.Column(scale=2):
            with gr.Row():
                instruction = gr.Textbox(label="Instruction", placeholder="pick up the red cube", max_lines=1, scale=4)
                send = gr.Button("Send", scale=1)
            with gr.Row():
                run, pause, step = gr.Button("Run", variant="primary"), gr.Button("Pause"), gr.Button("Step")
                estop = gr.Button("E-STOP (Esc)", variant="stop", elem_id="vla-estop")
            with gr.Row():
                seed = gr.Number(-1, label="Seed (-1 random)", precision=0)
                family = gr.Dropdown(["any", *FAMILIES], value="any", label="Task family")
                objects = gr.Slider(2, 5, value=4, step=1, label="Objects")
                scenes = gr.Dropdown(SCENE_CHOICES, value="train", label="Scenes")
            reset = gr.Button("Reset scene")
            mode = gr.Radio(list(MODES), value="policy", label="Mode (Shared: any key takes over, H hands back)")
            with gr.Row():
                speed = gr.Slider(0.1, 2.0, value=1.0, step=0.1, label="Speed")
                sensitivity = gr.Slider(0.05, 1.0, value=0.5, step=0.05, label="Teleop sensitivity")
            overlays = gr.CheckboxGroup(OVERLAY_CHOICES, value=OVERLAY_CHOICES, label="Overlays")
            layer = gr.Dropdown(LAYER_CHOICES, value="rollout", label="Attention map")
            gr.Markdown(KEYMAP_MARKDOWN)
            keys = gr.Textbox("[]", elem_id="vla-keys", visible="hidden", label="held keys")
            note = gr.Markdown()

    def with_session(method, takes_value: bool = False):
        """A handler calling ``Session.<method>`` (Gradio injects the request by annotation)."""
        if takes_value:
            def handler(value, request: gr.Request):
                return getattr(session_of(request), method)(value)
        else:
            def handler(request: gr.Request):
                return getattr(session_of(request), method)()
        return handler

    def stream(request: gr.Request):
        """The live view: a frame file, the status line and the word bars, sent when one of them changed
        and otherwise once every ``KEEPALIVE_S`` (never ``gr.skip()``: see ``ui/frames.py``)."""
        session = session_of(request)
        files = FrameFiles(stream_folder(gr_utils.get_upload_folder()), on_delete=live.temp_files.discard)
        words, changed = None, _changes()
        try:
            for lf in session.stream():
                words = lf.words if lf.words is not None else words
                out = (files.publish(lf.image), lf.status, words)
                if changed(out):
                    yield out
        finally:
            files.close()

    def plot_stream(request: gr.Request):
        """The executed-action chart (an image drawn on the server: see ``ui/action_chart.py``), checked
        every ``PLOT_PERIOD_S`` and sent when it changed (or as keep-alive)."""
        session, changed = session_of(request), _changes()
        files = FrameFiles(stream_folder(gr_utils.get_upload_folder()), keep=8, suffix=".png",
                           on_delete=plot.temp_files.discard)
        try:
            while not session.closed:
                path = files.publish(session.action_chart())
                if changed(path):
                    yield path
                time.sleep(PLOT_PERIOD_S)
        finally:
            files.close()

    def set_keys(value: str, request: gr.Request) -> None:
        import json

        try:
            held = json.loads(value) if value and len(value) < 400 else []
        except ValueError:
            held = []
        session_of(request).set_keys(held if isinstance(held, list) else [])

    def set_overlays(chosen, layer_name, request: gr.Request) -> None:
        c = set(chosen or [])
        session_of(request).set_overlays("attention" in c, layer_name, "action arrow" in c, "chunk path" in c, "gripper" in c,
                                          "goal guess" in c)

    def do_reset(s, f, n, text, split, request: gr.Request) -> str:
        return session_of(request).reset(seed=int(s) if s is not None else None, family=f, n_objects=n,
                                         instruction=text.strip() if isinstance(text, str) and text.strip() else None,
                                         split=split)

    fast = dict(show_progress="hidden", concurrency_limit=None)
    gr.on([instruction.submit, send.click], with_session("set_instruction", True), instruction, note, api_name="set_instruction", **fast)
    run.click(with_session("run"), None, note, api_name="run", **fast)
    pause.click(with_session("pause"), None, note, api_name="pause", **fast)
    step.click(with_session("step"), None, note, api_name="step", **fast)
    estop.click(with_session("estop"), None, note, api_name="estop", **fast)
    reset.click(do_reset, [seed, family, objects, instruction, scenes], note, api_name="reset", **fast)
    mode.change(with_session("set_mode", True), mode, note, api_name="set_mode", **fast)
    speed.change(with_session("set_speed", True), speed, None, api_name="set_speed", **fast)
    sensitivity.change(with_session("set_sensitivity", True), sensitivity, None, api_name="set_sensitivity", **fast)
    gr.on([overlays.change, layer.change], set_overlays, [overlays, layer], None, api_name="set_overlays", **fast)
    # Off the queue: one plain POST, no queue round trip between a key press and the step that executes it.
    keys.change(set_keys, keys, None, api_name="keys", api_visibility="private", trigger_mode="always_last", queue=False,
                **fast)
    return {"live": live, "status": status, "words": words, "plot": plot, "stream": stream, "plot_stream": plot_stream}


def _probe_tab(session_of) -> None:
    gr.Markdown("Does the policy listen? One frame, up to four instructions, their actions and attention side by side.")
    with gr.Row():
        with gr.Column():
            image = gr.Image(label="Frame (upload, or take the live sim frame)", type="numpy", height=256)
            grab = gr.Button("Use the current sim frame")
            texts = [gr.Textbox(v, label=f"Instruction {i + 1}", max_lines=1) for i, v in
                     enumerate(["pick up the red cube", "pick up the blue cube", "push the green ball left", ""])]
            go = gr.Button("Probe", variant="primary")
        with gr.Column():
            gallery = gr.Gallery(label="Attention per instruction", columns=2, height=520)
            table = gr.Dataframe(interactive=False)
            note = gr.Markdown()

    def do_probe(img, a, b, c, d, request: gr.Request):
        try:
            shown, rows = session_of(request).probe(img, [a, b, c, d])
        except ValueError as e:
            return [], None, f"probe failed: {e}"
        return shown, pd.DataFrame(rows[1:], columns=rows[0]), ""

    def do_grab(request: gr.Request):
        return session_of(request).current_frame()

    grab.click(do_grab, None, image, api_name="probe_grab")
    go.click(do_probe, [image, *texts], [gallery, table, note], api_name="probe")


def _webcam_tab(session_of) -> None:
    gr.Markdown("The browser webcam through the same policy (no proprioceptive state) with its attention and "
                "predicted planar motion (arrow) and gripper command.")
    with gr.Row():
        cam = gr.Image(sources=["webcam"], streaming=True, type="numpy", label="Webcam", height=320)
        out = gr.Image(label="Policy view", format="jpeg", interactive=False, height=320)
    instruction = gr.Textbox("pick up the red cube", label="Instruction", max_lines=1)
    info = gr.Markdown()

    def frame(img, text, request: gr.Request):
        try:
            return session_of(request).webcam(img, text)
        except ValueError as e:
            return None, f"frame skipped: {e}"

    cam.stream(frame, [cam, instruction], [out, info], stream_every=0.1, concurrency_limit=None, api_name="webcam_frame",
               show_progress="hidden", time_limit=3600)
    _webcam_labelling(session_of)


def _webcam_labelling(session_of) -> None:
    """Label webcam frames with the held teleop keys (or gamepad) into a separate dataset."""
    gr.Markdown("**Label frames.** While this is on, every webcam frame is buffered with the teleop action you "
                "hold (keys or gamepad, as in the Live tab); save the take as one episode of a webcam dataset "
                "(image and action, no state).")
    with gr.Row():
        on = gr.Checkbox(False, label="Label frames")
        dataset = gr.Textbox("webcam", label="Webcam dataset", max_lines=1)
        outcome = gr.Radio(["unlabelled", "success", "failure"], value="unlabelled", label="Outcome")
        save = gr.Button("Save take")
        discard = gr.Button("Discard take")
    status = gr.Markdown()
    fast = dict(show_progress="hidden", concurrency_limit=None)

    def toggle(value, name, request: gr.Request) -> str:
        return session_of(request).set_webcam_recording(bool(value), name)

    def save_take(label, request: gr.Request) -> str:
        return session_of(request).save_webcam_episode(label)

    def discard_take(request: gr.Request) -> str:
        return session_of(request).discard_webcam_episode()

    on.change(toggle, [on, dataset], status, api_name="set_webcam_recording", **fast)
    save.click(save_take, outcome, status, api_name="save_webcam_episode")
    discard.click(discard_take, None, status, api_name="discard_webcam_episode", **fast)


def _poll_while_shown(tabs, timers: dict) -> None:
    """Each tab's progress timer ticks only while that tab is shown. Before, every open page sent both
    tabs' polls once a second whatever it showed (8 queued events a second for 4 pages, each
    redrawing a progress bar and a loss plot and rebuilding the components it skipped)."""
    owners = list(timers)

    def states(shown):
        return [gr.Timer(active=owner is shown) for owner in owners]

    for tab in tabs:
        tab.select(functools.partial(states, tab), None, [timers[o] for o in owners], api_visibility="private",
                   show_progress="hidden", concurrency_limit=None)


def build_demo(ctx) -> gr.Blocks:
    """The whole page for one :class:`~vla_demo.ui.context.AppContext`."""

    def session_of(request: gr.Request):
        return ctx.session(request.session_hash if request is not None else "default")

    with gr.Blocks(title="vla-demo", analytics_enabled=False, delete_cache=(60, 600)) as demo:
        gr.Markdown("## vla-demo: a vision-language-action policy you can watch, steer and retrain")
        session_state = gr.State(None)
        with gr.Tab("Live") as live_tab:
            live = _live_tab(ctx, session_of)
        with gr.Tab("Record") as rec_tab:
            record_tab.build(ctx, session_of)
        with gr.Tab("Fine-tune") as ft_tab:
            ft_timer = finetune_tab.build(ctx, session_state)
        with gr.Tab("Evaluate") as ev_tab:
            ev_timer = evaluate_tab.build(ctx, session_state)
        with gr.Tab("Webcam") as cam_tab:
            _webcam_tab(session_of)
        with gr.Tab("Probe") as probe_tab:
            _probe_tab(session_of)
        _poll_while_shown([live_tab, rec_tab, ft_tab, ev_tab, cam_tab, probe_tab], {ft_tab: ft_timer, ev_tab: ev_timer})

        demo.load(live["stream"], None, [live["live"], live["status"], live["words"]],
                  api_name="live_stream", show_progress="hidden", concurrency_limit=None)
        demo.load(live["plot_stream"], None, live["plot"], api_name="action_plot_stream", show_progress="hidden",
                  concurrency_limit=None)

        def unload(request: gr.Request) -> None:
            ctx.close_session(request.session_hash)

        demo.unload(unload)
    demo.queue(api_open=False, default_concurrency_limit=4, max_size=64)
    return demo


def launch_kwargs(ctx, auth=None) -> dict:
    """Security defaults, page assets and the ``/health`` probe for ``demo.launch`` (ARCHITECTURE section 7)."""
    from vla_demo.ui.health import health_route

    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    return dict(
        auth=auth, share=False, max_file_size="20mb", blocked_paths=[str(Path(ctx.data_root).resolve())],
        enable_monitoring=False, run_history=False, show_error=True, css=CSS,
        head=f"<script>{TELEOP_JS.read_text(encoding='utf-8')}</script>", footer_links=["gradio", "settings"],
        app_kwargs={"routes": [health_route(ctx.data_root)]},  # GET /health, outside auth (see ui/health.py)
    )
