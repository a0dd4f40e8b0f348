"""Every public endpoint of the page, called through gradio_client against a real server on loopback."""

from __future__ import annotations

import os

import numpy as np
import pytest

from tests.serving import newest, serve, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def app(tmp_path_factory, tiny_policy_dir):
    from gradio_client import Client

    from vla_demo.ui.app import make_context

    ctx = make_context(str(tiny_policy_dir), tmp_path_factory.mktemp("data"), camera_size=64, display_size=128)
    demo, url = serve(ctx)
    ctx.demo = demo  # for the state-growth check below
    yield ctx, Client(url, verbose=False), url
    ctx.close()
    demo.close()


def test_api_lists_every_endpoint_with_a_name(app):
    _, client, _ = app
    names = set(client.view_api(return_format="dict", print_info=False)["named_endpoints"])
    expected = {"/set_instruction", "/run", "/pause", "/step", "/estop", "/reset", "/set_mode", "/set_speed",
                "/set_sensitivity", "/set_overlays", "/record_toggle", "/record_save", "/record_discard",
                "/dataset_summary", "/replay_frame", "/episode_delete", "/episode_undo", "/episode_trim",
                "/episode_relabel", "/dataset_export", "/finetune_start", "/finetune_cancel", "/policy_activate",
                "/policy_rollback", "/finetune_refresh", "/eval_start", "/eval_cancel", "/eval_refresh", "/ab_replay",
                "/webcam_frame", "/probe_grab", "/probe", "/live_stream", "/action_plot_stream", "/set_webcam_recording",
                "/save_webcam_episode", "/discard_webcam_episode"}
    assert expected <= names
    assert "/keys" not in names  # the held-key event is private


def test_live_controls_stream_and_record_round_trip(app):
    ctx, client, _ = app
    combo = client.predict(3, "pick", 3, "", "heldout-combos", api_name="/reset")  # the Scenes dropdown
    from vla_demo.constants import HELDOUT_COMBOS
    from vla_demo.sim.tasks import SHAPE_WORDS

    named = {f"{c} {w}" for c, shape in HELDOUT_COMBOS for w in SHAPE_WORDS[shape]}
    assert "new scene" in combo and any(n in combo for n in named), combo
    assert "new scene" in client.predict(3, "pick", 3, "", api_name="/reset")  # Scenes left at "training"
    assert "pick up the red cube" in client.predict("pick up the red cube", api_name="/set_instruction")
    assert "empty" in client.predict("", api_name="/set_instruction")
    assert client.predict("teleop", api_name="/set_mode") == "mode: teleop"
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="not in the list of choices"):  # Gradio validates the radio itself
        client.predict("warp", api_name="/set_mode")
    client.predict(1.5, api_name="/set_speed")
    client.predict(0.8, api_name="/set_sensitivity")
    client.predict(["attention", "gripper"], "layer 1", api_name="/set_overlays")
    assert "recording into 'client-ds'" in client.predict(True, "client-ds", "carol", api_name="/record_toggle")
    assert client.predict(api_name="/step") == "one step"
    job = client.submit(api_name="/live_stream")
    plot = client.submit(api_name="/action_plot_stream")
    assert wait_for(lambda: len(job.outputs()) >= 1)
    session = next(iter(ctx.sessions.values()))
    assert wait_for(lambda: session._t >= 1)
    assert client.predict(api_name="/run") == "running"
    assert wait_for(lambda: session._t >= 4)
    assert "EMERGENCY STOP" in client.predict(api_name="/estop")
    t = session._t
    assert wait_for(lambda: (u := newest(job, 3)) is not None and u[1].startswith("E-STOP"))  # the stream goes on...
    assert session._t == t and os.path.isfile(newest(job, 3)[0])  # ...and the arm does not
    assert len(session.history) == t and wait_for(lambda: plot.outputs() and shows(plot.outputs()[-1], session.action_chart()))
    assert client.predict(api_name="/pause") == "paused"
    msg, summary, table = client.predict("success", "client-ds", "carol", api_name="/record_save")
    assert "saved episode 0" in msg and "1 episodes" in summary and table["data"][0][5] == "carol"
    assert "discarded 0" in client.predict(api_name="/record_discard")
    info, table = client.predict("client-ds", api_name="/dataset_summary")
    assert "1 episodes" in info
    frame, where, _ = client.predict("client-ds", 0, 1, api_name="/replay_frame")
    assert frame and "frame 2/" in where
    assert "relabelled" in client.predict("client-ds", 0, "pick up the blue cube", "failure", api_name="/episode_relabel")
    assert "trimmed" in client.predict("client-ds", 0, 0, 2, api_name="/episode_trim")
    zip_path, note = client.predict("client-ds", api_name="/dataset_export")
    assert zip_path and zip_path.endswith(".zip") and "exported" in note
    assert "deleted episode 0" in client.predict("client-ds", 0, api_name="/episode_delete")
    assert "restored as episode 0" in client.predict("client-ds", api_name="/episode_undo")
    assert "not allowed" in client.predict("../../etc", api_name="/dataset_summary")[0]
    job.cancel()
    plot.cancel()


def shows(path: str, image: np.ndarray) -> bool:
    """Is the (lossless PNG) file at ``path`` exactly ``image``? (The action chart follows the steps; a
    failed download shows up as a list holding the exception, see ``tests.serving.newest``.)"""
    from PIL import Image

    return isinstance(path, str) and os.path.isfile(path) and np.array_equal(np.asarray(Image.open(path).convert("RGB")), image)


def test_probe_webcam_and_jobs_endpoints(app, tmp_path):
    from PIL import Image
    from gradio_client import handle_file

    _, client, _ = app
    assert client.predict(api_name="/probe_grab")
    path = tmp_path / "frame.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path)
    gallery, table, note = client.predict(handle_file(str(path)), "pick up the red cube", "push the blue ball left", "", "",
                                          api_name="/probe")
    assert len(gallery) == 2 and len(table["data"]) == 2 and note == ""
    _, _, note = client.predict(handle_file(str(path)), "", "", "", "", api_name="/probe")
    assert "at least one instruction" in note
    # /webcam_frame is a streaming-input event, which gradio_client cannot drive: the browser test
    # feeds it from Chromium's fake camera instead.
    assert "not allowed" in client.predict(True, "../escape", api_name="/set_webcam_recording")
    assert "recording into 'cam-labels'" in client.predict(True, "cam-labels", api_name="/set_webcam_recording")
    assert "nothing to save" in client.predict("success", api_name="/save_webcam_episode")
    assert "discarded 0 frames" in client.predict(api_name="/discard_webcam_episode")
    assert "dataset" in client.predict([], 10, "active", 0, api_name="/finetune_start").lower()
    assert client.predict(api_name="/finetune_cancel")
    assert client.predict(api_name="/eval_cancel")
    note, table = client.predict("no-such-version", api_name="/policy_activate")
    assert "no-such-version" in note
    assert len(client.predict(api_name="/finetune_refresh")) == 4
    assert len(client.predict(api_name="/eval_refresh")) == 3


def test_a_long_stream_keeps_the_session_state_and_frame_files_bounded(app):
    """Regression: ``gr.skip()`` in the stream made Gradio keep a component copy per skip in the
    session's state (hundreds of MB over a 10-minute load test); and every frame file stayed on disk."""
    from gradio_client import Client

    from vla_demo.ui.frames import KEEP

    ctx, _, url = app
    client = Client(url, verbose=False, download_files=False)  # a page fetches only the newest frame
    job = client.submit(api_name="/live_stream")
    plot = client.submit(api_name="/action_plot_stream")
    client.predict(4, "reach", 2, "", api_name="/reset")
    assert wait_for(lambda: len(job.outputs()) >= 1)
    session = ctx.sessions[client.session_hash]

    def state_size() -> int:
        return len(ctx.demo.state_holder[client.session_hash].blocks_config.blocks)

    def run_until(step: int) -> None:
        client.predict(api_name="/run")
        assert wait_for(lambda: session._t >= step or session._gen is None)
        client.predict(api_name="/pause")  # unchanged frames while paused, then changing ones again

    run_until(3)
    before = state_size()
    for k in range(4):
        run_until(session._t + 3)
    assert state_size() == before
    folder = __import__("pathlib").Path(job.outputs()[-1][0]["path"]).parent
    assert wait_for(lambda: len(list(folder.glob("*.jpg"))) <= KEEP)
    job.cancel()
    plot.cancel()
    assert wait_for(lambda: not folder.exists())  # the stream's files go with it
