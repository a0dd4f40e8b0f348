"""One operator session: stepping, pausing, e-stop, teleop takeover, recording and bad input."""

from __future__ import annotations

import numpy as np
import torch
import pytest

from vla_demo.data.reader import DatasetReader


def frames(session, n):
    return list(session.stream(max_frames=n))


def test_paused_session_does_not_move_and_step_moves_once(make_ctx):
    s = make_ctx().session("a")
    s.reset(seed=1, family="pick")
    state0 = s._obs["observation.state"].copy()
    frames(s, 3)
    assert s._t == 0 and np.array_equal(s._obs["observation.state"], state0)
    s.step()
    out = frames(s, 4)
    assert s._t == 1 and not np.array_equal(s._obs["observation.state"], state0)
    assert out[0].image.shape == (128, 128, 3) and "paused" in out[-1].status


def test_a_late_loop_sheds_in_between_frames_and_restores_them_with_slack(make_ctx):
    s = make_ctx().session("a")
    s.reset(seed=1, family="reach")
    assert s.render_substeps == 2 and s.control.render_substeps is None
    seen = []
    for late in (0.5, 0.5, 0.5, 0.05, -0.2, -0.6, -0.6, -0.6):  # fractions of the control period
        s._shed_frames(late)
        seen.append(s.control.render_substeps)
    assert seen == [1, 0, 0, 0, 0, 1, 2, 2]
    s.run()
    s._shed_frames(0.5)
    s._shed_frames(0.5)
    assert len(s.advance()) == 1  # no in-between frames now: the step's own frame only
    s.control.render_substeps = None
    assert len(s.advance()) == 3  # the configured 2 in-between frames and the step's own
    s.reset(seed=1, family="reach")
    assert s.control.render_substeps is None  # a new episode starts smooth again


def test_run_to_success_then_estop_halts(make_ctx):
    s = make_ctx().session("a")
    s.reset(seed=2, family="reach")
    s.run()
    for _ in s.stream(max_frames=200):
        if s._gen is None:
            break
    assert s.auto_success() is True and "success" in s.message
    s.reset(seed=3, family="pick")
    s.run()
    frames(s, 6)
    t = s._t
    assert t > 0
    s.estop()
    out = frames(s, 5)
    assert s._t == t and out[-1].status.startswith("E-STOP")


def test_teleop_keys_drive_the_arm_and_are_flagged(make_ctx):
    s = make_ctx().session("a")
    s.reset(seed=4, family="pick")
    s.set_mode("teleop")
    s.set_recording(True, "ops", "alice")
    y0 = s._obs["observation.state"][1]
    s.set_keys(["d"])  # right on screen = +y
    s.run()
    frames(s, 9)
    assert s._obs["observation.state"][1] > y0 + 0.01
    assert s.recording.frames and all(f["intervention"] for f in s.recording.frames)
    msg = s.save_episode("failure")
    assert "saved episode 0" in msg
    r = DatasetReader(s.ctx.data_root / "datasets" / "ops")
    assert r.episode(0)["source"] == "teleop" and r.episode(0)["operator"] == "alice" and r.episode(0)["success"] is False
    assert r.episode_columns(0)["intervention"].all()


def test_shared_mode_takes_over_on_input_and_hands_back(make_ctx):
    s = make_ctx().session("a")
    s.reset(seed=5, family="pick")
    s.set_mode("shared")
    s.set_recording(True, "shared", "bob")
    s.run()
    frames(s, 6)
    s.set_keys(["w"])
    assert s.teleop.takeover
    frames(s, 6)
    s.set_keys(["h"])
    assert not s.teleop.takeover
    frames(s, 6)
    s.pause()
    flags = [f["intervention"] for f in s.recording.frames]
    assert any(flags) and not all(flags) and not flags[0]
    assert "saved" in s.save_episode("auto")
    assert DatasetReader(s.ctx.data_root / "datasets" / "shared").episode(0)["source"] == "shared"


def test_recordings_keep_the_goal_labels_a_fine_tune_learns_from(make_ctx):
    from vla_demo.data.format import sim_features
    from vla_demo.data.writer import DatasetWriter

    s = make_ctx().session("a")
    s.reset(seed=5, family="place")
    s.set_mode("shared")
    s.set_recording(True, "labelled", "bob")
    s.step()
    frames(s, 2)
    label = np.asarray(s.recording.frames[0]["goal_positions"])
    assert np.isfinite(label).all()
    # An instruction outside the grammar names no object: its frames are saved with missing labels
    # (NaN) into the same dataset, and the label statistics leave them out.
    s.set_instruction("dance with the purple teapot")
    s.step()
    frames(s, 2)
    assert np.isnan(s.recording.frames[-1]["goal_positions"]).all()
    assert "saved episode 0" in s.save_episode("unlabelled") and s.unsaved_frames() == 0
    reader = DatasetReader(s.ctx.data_root / "datasets" / "labelled")
    cols = reader.episode_columns(0)
    np.testing.assert_allclose(cols["goal_positions"][0], label, rtol=1e-6)  # where the named objects were
    assert np.isnan(cols["goal_positions"][-1]).all()
    assert reader.stats()["goal_positions"]["count"] == [len(cols["goal_positions"]) - 1]
    # A dataset recorded before the app kept labels keeps its columns.
    cfg = s.env.config
    DatasetWriter.open(s.ctx.data_root / "datasets" / "old", sim_features(cfg.image_size, cfg.wrist_camera), cfg.control_hz).close()
    s.set_recording(True, "old", "bob")
    s.reset(seed=6, family="place")
    s.step()
    frames(s, 2)
    assert "saved episode 0" in s.save_episode("auto")
    assert "goal_positions" not in DatasetReader(s.ctx.data_root / "datasets" / "old").features


@pytest.mark.parametrize("text,expect", [
    ("", "empty"), ("   ", "empty"), ("pick up the red cube ☃", "printable ASCII"), (None, "empty"),
])
def test_bad_instructions_keep_the_old_one(make_ctx, text, expect):
    s = make_ctx().session("a")
    s.reset(seed=6, family="pick", instruction="pick up the red cube")
    assert expect in s.set_instruction(text)
    assert s.env.instruction == "pick up the red cube"


def test_long_and_unknown_instructions_are_handled(make_ctx):
    s = make_ctx().session("a")
    s.reset(seed=7, family="pick")
    assert "truncated" in s.set_instruction("pick up the red cube " * 40)
    assert "label success yourself" in s.set_instruction("dance with the purple teapot")
    s.step()
    frames(s, 3)
    assert s._t == 1 and s.auto_success() is None


def test_bad_names_and_empty_saves_are_refused(make_ctx):
    s = make_ctx().session("a")
    assert "not allowed" in s.set_recording(True, "../escape")
    assert not s.recording.on
    assert "nothing to save" in s.save_episode()
    assert "unknown task family" in s.reset(family="juggle")
    assert "unknown mode" in s.set_mode("autopilot")


def test_learned_policy_overlays_probe_and_webcam(make_ctx, tiny_policy_dir):
    s = make_ctx(tiny_policy_dir).session("a")
    s.reset(seed=8, family="pick")
    out = frames(s, 2)
    assert out[-1].words and [w for w, _ in out[-1].words][:2] == s.env.instruction.split()[:2]
    s.policy.model.goal_mean.copy_(torch.tensor([0.5, 0.0, 0.03, 0.5, 0.15, 0.0]))  # an untrained guess, on the table
    s.policy.model.goal_std.fill_(1e-3)
    s.set_overlays(False, "rollout", False, False, False, goal=False)
    plain = frames(s, 1)[0].image
    assert s._prediction.goal.shape == (2, 3)  # the goal head's guess: target and destination
    s.set_overlays(False, "rollout", False, False, False, goal=True)
    assert not np.array_equal(frames(s, 1)[0].image, plain)
    s.set_overlays(True, "layer 1", True, True, True)
    assert not np.array_equal(frames(s, 1)[0].image, plain)
    shown, rows = s.probe(None, ["pick up the red cube", "", "push the blue ball left"])
    assert len(shown) == 2 and len(rows) == 3 and len(rows[1]) == 8
    with pytest.raises(ValueError):
        s.probe(np.zeros((4, 4, 3), np.uint8), [""])
    img, info = s.webcam(np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8), "pick up the red cube")
    assert img.shape[2] == 3 and "state: none" in info
    with pytest.raises(ValueError):
        s.webcam(np.zeros((5, 5, 7), np.uint8), "x")


def test_sessions_are_independent_and_freed(make_ctx):
    ctx = make_ctx()
    a, b = ctx.session("a"), ctx.session("b")
    a.reset(seed=9, family="pick")
    b.reset(seed=10, family="pick")
    a.step()
    frames(a, 3)
    assert a._t == 1 and b._t == 0 and a.env is not b.env
    assert ctx.close_session("a") and "a" not in ctx.sessions and a.closed
    assert not ctx.close_session("a")


def test_overlays_reuse_the_policys_own_predictions(make_ctx, tiny_policy_dir):
    """With attention shown, the loop still runs one forward pass per executed chunk, not per step."""
    s = make_ctx(tiny_policy_dir).session("a")
    s.reset(seed=8, family="pick")
    model = s.policy.model
    calls = []
    model.register_forward_hook(lambda *_: calls.append(1))
    n = s.policy.config.n_action_steps
    for _ in range(2 * n):
        s.step()
        s.advance()
    assert len(calls) == 2  # one chunk prediction every n steps, attention computed along
    assert s._prediction is s.policy.last_prediction and s._prediction.attention is not None
    s.set_mode("teleop")  # the policy is not consulted: the overlay still refreshes once a chunk
    for _ in range(n):
        s.step()
        s.advance()
    assert len(calls) == 3 and s._t == 3 * n


def test_webcam_frames_are_labelled_with_teleop_actions_into_a_webcam_dataset(make_ctx, tiny_policy_dir):
    from vla_demo.constants import ACTION, OBS_STATE
    from vla_demo.data import edit
    from vla_demo.data.reader import DatasetReader

    ctx = make_ctx(tiny_policy_dir)
    s = ctx.session("a")
    frame = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    s.webcam(frame, "pick up the red cube")
    assert not s.webcam_recording.frames  # labelling is off by default
    assert "not allowed" in s.set_webcam_recording(True, "../x") and not s.webcam_recording.on
    s.set_webcam_recording(True, "cam")
    s.set_keys(["ArrowUp"])
    _, info = s.webcam(frame, "pick up the red cube")
    s.set_keys([" "])  # gripper closed, no motion
    s.webcam(frame, "pick up the red cube")
    assert "labelling: 1 frames" in info and len(s.webcam_recording.frames) == 2
    assert "saved episode 0 (2 frames" in s.save_webcam_episode("success")
    r = DatasetReader(ctx.data_root / "datasets" / "cam")
    assert OBS_STATE not in r.features and r.num_episodes == 1 and edit.check(r.root) == []
    actions = r.episode_columns(0)[ACTION]
    assert np.abs(actions[0, :3]).max() > 0 and actions[0, 6] == 1.0  # moving, gripper open
    assert np.allclose(actions[1, :3], 0) and actions[1, 6] == 0.0  # closed, still
    assert r.episode(0)["tasks"] == ["pick up the red cube"] and not s.webcam_recording.frames


@pytest.mark.parametrize("latency", [0.0, 0.02, 0.05, 0.09, 0.2])
def test_frames_are_spaced_evenly_and_fit_in_their_control_period(latency):
    from vla_demo.ui.session import frame_spacing

    period, n = 0.1, 3
    gap = frame_spacing(period, n, latency)
    if latency <= period / n:  # on time: a steady rhythm across steps (last frame -> next first: the same gap)
        assert gap == pytest.approx(period / n)
    assert latency + gap * (n - 1) <= period + 1e-9 or gap == 0.0  # never delays the next control step
    assert gap >= 0.0 and frame_spacing(period, 1, latency) == 0.0


def test_an_operator_key_change_starts_the_next_step_at_once(make_ctx):
    """A held-key change in Teleop mode ends the wait for the next control step: with a period of
    1000 s (speed 0.0001) the step that executes the key can only come from that."""
    import threading

    from tests.serving import wait_for

    s = make_ctx().session("a")
    s.reset(seed=4, family="pick")
    s.set_mode("teleop")
    s.run()
    s.speed = 1e-4
    shown = []
    t = threading.Thread(target=lambda: shown.extend(s.stream(max_frames=8)), daemon=True)
    t.start()
    assert wait_for(lambda: s._t == 1)  # the first step, then a 1000 s wait
    y = s._obs["observation.state"][1]
    s.set_keys(["d"])
    assert wait_for(lambda: s._t == 2) and s._obs["observation.state"][1] > y
    s.set_keys(["d"])  # no change: no early step
    s.set_mode("policy")
    s.set_keys([])  # the policy drives: keys are not news
    assert not s._wake.is_set()
    s.close()  # ends the stream's 1000 s wait
    t.join(timeout=60)
    assert not t.is_alive()


def test_only_a_new_gamepad_direction_wakes_the_stream(make_ctx):
    s = make_ctx().session("a")
    s.reset(seed=4, family="pick")
    s.set_mode("teleop")
    s.run()
    s.set_gamepad(0.5, 0.0, 0.0, False)
    assert s._wake.is_set()
    s._wake.clear()
    s.set_gamepad(0.6, 0.05, 0.0, False)  # the same direction, the stick moved a little
    assert not s._wake.is_set()
    s.set_gamepad(0.6, 0.0, 0.0, True)  # the gripper closes
    assert s._wake.is_set()


def test_the_action_chart_is_redrawn_only_when_the_history_changes(make_ctx):
    s = make_ctx().session("a")
    s.reset(seed=1, family="reach")
    idle = s.action_chart()
    assert s.action_chart() is idle  # nothing stepped: the same drawing, not a new one
    for _ in range(3):  # a line needs two points
        s.step()
        frames(s, 4)
    assert len(s.history) == 3
    moved = s.action_chart()
    assert moved is not idle and not np.array_equal(moved, idle) and s.action_chart() is moved
    s.reset(seed=1, family="reach")
    cleared = s.action_chart()
    assert cleared is not moved and np.array_equal(cleared, idle)  # a new episode starts an empty chart


def test_a_wrist_camera_policy_gets_a_sim_that_renders_the_hand_view(make_ctx, tmp_path):
    from vla_demo.constants import OBS_IMAGE_WRIST
    from vla_demo.policy import LanguageConditionedPolicy

    path = LanguageConditionedPolicy.build("default", image_size=32, d_model=32, n_heads=2, n_layers=1, head_hidden=32,
                                           keypoints=4, wrist=True).save_pretrained(tmp_path / "wrist")
    ctx = make_ctx(path)
    s = ctx.session("a")
    s.reset(seed=3, family="pick")
    assert s.env.config.wrist_camera and OBS_IMAGE_WRIST in s._obs
    assert s._prediction is not None  # the overlay's own prediction read the hand's view too
    s.set_recording(True, "wrist-ops", "alice")
    s.step()
    frames(s, 3)
    assert s._t == 1 and "saved episode 0" in s.save_episode("failure")
    reader = DatasetReader(ctx.data_root / "datasets" / "wrist-ops")
    assert len(reader.frames(OBS_IMAGE_WRIST, 0)) == 1  # recorded with its hand's view, ready to fine-tune on
    gallery, _ = s.probe(None, ["pick up the red cube"])  # the sim's frame: with the sim's hand view
    assert len(gallery) == 1
    out, status = s.webcam(np.zeros((48, 64, 3), np.uint8), "pick up the red cube")
    assert out is not None and "wrist camera: none (blank input" in status  # a webcam has no hand camera
    ctx.registry.activate("expert")
    s.reset(seed=3, family="pick")
    assert s.env.config.wrist_camera  # what is recorded under the expert can still fine-tune the default
    front = make_ctx().session("b")  # the expert as default: no second render
    front.reset(seed=3, family="pick")
    assert not front.env.config.wrist_camera and OBS_IMAGE_WRIST not in front._obs


def test_the_shipped_policy_drives_a_session_with_the_cameras_it_needs(make_ctx):
    from vla_demo.recipes import DEFAULT_POLICY, DEMO_WRIST

    assert sum(f.stat().st_size for f in DEFAULT_POLICY.rglob("*") if f.is_file()) <= 30 * 2**20  # the 30 MB budget
    s = make_ctx(DEFAULT_POLICY).session("a")
    s.reset(seed=0, family="reach")
    assert s.policy.needs_wrist == DEMO_WRIST == s.env.config.wrist_camera
    s.step()
    frames(s, 3)
    assert s._t == 1 and s._prediction is not None and np.isfinite(s._prediction.action).all()


def test_reset_samples_scenes_as_the_chosen_split_does(make_ctx):
    from vla_demo.constants import HELDOUT_COMBOS

    s = make_ctx().session("a")
    for seed in range(4):
        s.reset(seed=seed, family="pick", n_objects=5)  # the default: training scenes
        assert not {(o.colour, o.shape) for o in s.env.scene.objects} & HELDOUT_COMBOS
        msg = s.reset(seed=seed, family="pick", n_objects=5, split="heldout-combos")
        target = s.env.scene.objects[s.env.goal.target]
        assert (target.colour, target.shape) in HELDOUT_COMBOS and target.colour in msg
    assert "unknown split 'nope'" in s.reset(seed=1, split="nope")
