"""TabletopEnv contracts: spaces, determinism, snapshots, isolation, bad input."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from vla_demo.config import SimConfig
from vla_demo.constants import COLOURS, DIRECTIONS, ENV_ID, FAMILIES, OBS_IMAGE_FRONT, OBS_IMAGE_WRIST, OBS_STATE, SHAPES, TASK
from vla_demo.sim.env import TabletopEnv


def scripted_actions(n: int, seed: int = 0) -> np.ndarray:
    """A fixed action sequence that moves the arm around, closes and opens the gripper."""
    rng = np.random.default_rng(seed)
    a = rng.uniform(-1, 1, (n, 7)) * [0.02, 0.02, 0.02, 0.05, 0.05, 0.1, 1]
    a[:, 6] = (np.arange(n) // 5) % 2
    return a.astype(np.float32)


def same_obs(a: dict, b: dict) -> None:
    np.testing.assert_array_equal(a[OBS_IMAGE_FRONT], b[OBS_IMAGE_FRONT])
    np.testing.assert_array_equal(a[OBS_STATE], b[OBS_STATE])
    assert a[TASK] == b[TASK]


def test_observation_matches_the_contract(env):
    obs, info = env.reset(seed=0)
    assert obs[OBS_IMAGE_FRONT].shape == (64, 64, 3) and obs[OBS_IMAGE_FRONT].dtype == np.uint8
    assert obs[OBS_STATE].shape == (7,) and obs[OBS_STATE].dtype == np.float32
    assert isinstance(obs[TASK], str) and obs[TASK]
    assert env.observation_space.contains(obs)
    # Home: grasp point above the table, gripper pointing down (relative angles ~0), open.
    state = obs[OBS_STATE]
    assert 0.1 < state[2] < 0.4
    np.testing.assert_allclose(state[3:6], 0, atol=0.01)
    assert state[6] > 0.07
    assert info["success"] is False and info["family"] in FAMILIES
    assert info["target"]["name"] in obs[TASK].replace("block", "cube").replace("ball", "sphere").replace("can", "cylinder")


def test_state_is_in_physical_units(env):
    obs, _ = env.reset(seed=1, options={"family": "reach"})
    start = obs[OBS_STATE].copy()
    for _ in range(5):
        obs, *_ = env.step([0.02, 0, 0, 0, 0, 0.1, 1])
    moved = obs[OBS_STATE] - start
    assert 0.07 < moved[0] < 0.11, moved  # 5 steps of 2 cm (the hand lags the target a little)
    assert 0.35 < moved[5] < 0.55, moved  # 5 steps of 0.1 rad yaw, no wrap
    for _ in range(8):
        obs, *_ = env.step([0, 0, 0, 0, 0, 0, 0])
    assert obs[OBS_STATE][6] < 0.005  # closed on nothing


def test_gymnasium_env_checker_passes():
    import warnings

    from gymnasium.utils.env_checker import check_env

    import vla_demo.sim  # noqa: F401  (registers the id)

    env = gym.make(ENV_ID, image_size=(32, 32))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the checker reports problems as warnings: fail on any
        check_env(env.unwrapped, skip_render_check=False)
    env.close()


def test_registered_with_gymnasium():
    import vla_demo.sim  # noqa: F401  (registers the id)

    env = gym.make(ENV_ID, image_size=(32, 32), wrist_camera=True)
    obs, _ = env.reset(seed=0)
    assert obs[OBS_IMAGE_WRIST].shape == (32, 32, 3)
    env.close()


def test_same_seed_same_episode(small_config):
    runs = []
    for _ in range(2):
        env = TabletopEnv(small_config)
        obs, info = env.reset(seed=123)
        trace = [obs]
        for a in scripted_actions(15):
            trace.append(env.step(a)[0])
        runs.append((env.scene, info["instruction"], trace))
        env.close()
    (scene_a, text_a, trace_a), (scene_b, text_b, trace_b) = runs
    assert scene_a == scene_b and text_a == text_b
    for a, b in zip(trace_a, trace_b, strict=True):
        same_obs(a, b)


def test_different_seeds_differ(env):
    scenes = {env.reset(seed=s)[1]["instruction"] + str(env.scene) for s in range(6)}
    assert len(scenes) == 6


def test_state_round_trip_restores_observation_and_future(small_config):
    env = TabletopEnv(small_config)
    env.reset(seed=7, options={"family": "pick"})
    actions = scripted_actions(30, seed=3)
    for a in actions[:12]:
        env.step(a)
    snapshot = env.get_state()
    expected = [env.step(a) for a in actions[12:]]
    # Restore into the same env after a different episode, and into a fresh env.
    env.reset(seed=99, options={"family": "stack"})
    other = TabletopEnv(small_config)
    for target in (env, other):
        target.set_state(snapshot)
        assert target.steps == 12 and target.instruction == snapshot.instruction
        for a, (obs, reward, term, trunc, info) in zip(actions[12:], expected, strict=True):
            got = target.step(a)
            np.testing.assert_allclose(got[0][OBS_STATE], obs[OBS_STATE], atol=1e-6)
            assert np.mean(np.abs(got[0][OBS_IMAGE_FRONT].astype(int) - obs[OBS_IMAGE_FRONT])) < 0.5
            assert got[1:4] == (reward, term, trunc) and got[4]["success"] == info["success"]
    other.close()
    env.close()


def test_two_envs_in_one_process_are_independent(small_config):
    a, b = TabletopEnv(small_config), TabletopEnv(small_config)
    solo = TabletopEnv(small_config)
    obs_a, _ = a.reset(seed=5)
    b.reset(seed=6)
    solo_obs, _ = solo.reset(seed=5)
    same_obs(obs_a, solo_obs)
    for act in scripted_actions(10):
        b.step(-act)  # interleaved steps in the other world must not leak into this one
        obs_a = a.step(act)[0]
        solo_obs = solo.step(act)[0]
        same_obs(obs_a, solo_obs)
    for e in (a, b, solo):
        e.close()


@pytest.mark.parametrize(
    "action, message",
    [
        ([0.0] * 6, r"shape \(7,\)"),
        (np.zeros((1, 7)), r"shape \(7,\)"),
        ([0, 0, np.nan, 0, 0, 0, 1], "NaN or inf"),
        ([0, 0, 0, np.inf, 0, 0, 1], "NaN or inf"),
        (["a"] * 7, "sequence of 7 numbers"),
        (None, "shape"),
    ],
)
def test_bad_actions_raise_clear_errors(env, action, message):
    env.reset(seed=0)
    with pytest.raises(ValueError, match=message):
        env.step(action)


def test_actions_are_clipped_to_the_limits(env):
    obs, _ = env.reset(seed=0, options={"family": "reach"})
    z0 = obs[OBS_STATE][2]
    obs, *_ = env.step([0, 0, 5.0, 0, 0, 0, 1])  # asks for 5 m up
    assert obs[OBS_STATE][2] - z0 < 0.03


def test_reset_options_are_validated(env):
    with pytest.raises(ValueError, match="unknown reset options"):
        env.reset(seed=0, options={"colour": "red"})
    with pytest.raises(ValueError, match="unknown task family"):
        env.reset(seed=0, options={"family": "juggle"})
    with pytest.raises(ValueError, match="unknown split"):
        env.reset(seed=0, options={"split": "test"})
    with pytest.raises(ValueError, match="n_objects"):
        env.reset(seed=0, options={"n_objects": 9})


@pytest.mark.parametrize("family", FAMILIES)
def test_reset_options_choose_family_objects_and_split(env, family):
    obs, info = env.reset(seed=3, options={"family": family, "n_objects": 4, "split": "heldout-combos"})
    assert info["family"] == family
    assert len(env.scene.objects) == 4
    target = env.scene.objects[info["target"]["index"]]
    from vla_demo.constants import HELDOUT_COMBOS

    assert target.combo in HELDOUT_COMBOS


def test_shape_rival_option_puts_the_targets_colour_in_another_shape_in_the_scene(env):
    _, info = env.reset(seed=5, options={"family": "pick", "n_objects": 2, "shape_rival": True})
    target = env.scene.objects[info["target"]["index"]]
    others = [o for i, o in enumerate(env.scene.objects) if i != info["target"]["index"]]
    assert [o.colour for o in others] == [target.colour] and others[0].shape != target.shape


def test_shape_only_option_names_the_target_by_shape_and_leaves_unnamed_colours_unlabelled(env):
    from vla_demo.constants import COLOURS, MAX_OBJECTS, UNNAMED_COLOURS

    found = False
    for seed in range(20):
        obs, info = env.reset(seed=seed, options={"family": "reach", "n_objects": 5, "shape_only": True})
        target = env.scene.objects[info["target"]["index"]]
        assert info["target"]["index"] == env.scene.find(None, target.shape)[0]  # named by shape: the only one
        assert not any(c in obs[TASK] for c in COLOURS)
        labels = env.object_labels().reshape(MAX_OBJECTS, -1)
        for obj, row in zip(env.scene.objects, labels):
            assert (row[0] >= 0) == (obj.colour in COLOURS) and (row[1] >= 0) == (obj.colour in COLOURS)
        found |= any(o.colour in UNNAMED_COLOURS for o in env.scene.objects)
    assert found


def test_given_instruction_is_parsed_and_grounded(env):
    env.reset(seed=0, options={"family": "pick"})
    name = env.scene.objects[0].name
    obs, info = env.reset(seed=0, options={"family": "pick", "instruction": f"touch the {name}"})
    assert obs[TASK] == f"touch the {name}" and info["family"] == "reach"
    assert info["target"]["index"] == 0


def test_set_instruction_mid_episode(env):
    env.reset(seed=0, options={"family": "pick", "n_objects": 3})
    env.step([0, 0, 0, 0, 0, 0, 1])
    other = env.scene.objects[1].name
    parsed = env.set_instruction(f"  reach   the {other} ")
    assert parsed.ok and env.instruction == f"reach the {other}"
    obs, _, _, _, info = env.step([0, 0, 0, 0, 0, 0, 1])
    assert obs[TASK] == env.instruction and info["family"] == "reach" and info["target"]["index"] == 1
    env.set_instruction("do a little dance")
    obs, _, _, _, info = env.step([0, 0, 0, 0, 0, 0, 1])
    assert info["success"] is None and info["target"] is None and "no object" in info["parse_error"]
    env.set_instruction("pick up the purple cube")
    info = env.step([0, 0, 0, 0, 0, 0, 1])[4]
    assert info["success"] is None and "purple" in info["parse_error"]
    absent = next(f"{c} {s}" for c in COLOURS for s in SHAPES if not env.scene.find(c, s))
    env.set_instruction(f"pick up the {absent}")  # parses, but there is no such object here
    info = env.step([0, 0, 0, 0, 0, 0, 1])[4]
    assert info["success"] is None and f"no {absent}" in info["parse_error"]


def test_instruction_charset_and_length(env):
    env.reset(seed=0)
    with pytest.raises(ValueError, match="printable ASCII"):
        env.set_instruction("pick up the red cube ✋")
    with pytest.raises(ValueError, match="must be a string"):
        env.set_instruction(None)
    with pytest.warns(UserWarning, match="truncated"):
        env.set_instruction("lift the red cube " * 40)
    assert len(env.instruction) == 256
    assert env.observation_space[TASK].contains(env.instruction)


def test_render_substeps_adds_display_frames(env):
    env.reset(seed=0)
    _, _, _, _, info = env.step([0.02, 0, 0, 0, 0, 0, 1], render_substeps=3)
    frames = info["frames"]
    assert len(frames) == 3 and all(f.shape == (64, 64, 3) and f.dtype == np.uint8 for f in frames)
    assert "frames" not in env.step([0, 0, 0, 0, 0, 0, 1])[4]
    with pytest.raises(ValueError, match="render_substeps"):
        env.step([0, 0, 0, 0, 0, 0, 1], render_substeps=24)


def test_render_returns_the_front_image(env):
    obs, _ = env.reset(seed=2)
    np.testing.assert_array_equal(env.render(), obs[OBS_IMAGE_FRONT])


def test_episode_truncates_at_the_step_limit():
    env = TabletopEnv(SimConfig(image_size=(32, 32), max_episode_steps=3))
    env.reset(seed=0, options={"family": "reach"})
    flags = [env.step([0, 0, 0, 0, 0, 0, 1])[3] for _ in range(3)]
    assert flags == [False, False, True]
    env.close()


def test_use_before_reset_and_after_close_raise():
    env = TabletopEnv(SimConfig(image_size=(32, 32)))
    with pytest.raises(RuntimeError, match="reset"):
        env.step([0] * 7)
    env.reset(seed=0)
    env.close()
    with pytest.raises(RuntimeError, match="closed"):
        env.render()


def test_config_validation():
    with pytest.raises(ValueError, match="multiple of control_hz"):
        SimConfig(control_hz=7)
    with pytest.raises(ValueError, match="image_size"):
        SimConfig(image_size=(4, 4))
    with pytest.raises(ValueError, match="n_objects"):
        SimConfig(n_objects=(1, 9))
    assert SimConfig.from_dict(SimConfig(image_size=(96, 96)).to_dict()) == SimConfig(image_size=(96, 96))


@pytest.mark.parametrize("family", FAMILIES)
def test_info_labels_where_the_target_is_and_where_it_should_go(env, family):
    _, info = env.reset(seed=3, options={"family": family})
    goal, view = env.goal, env.world_view()
    target, dest = info["goal_positions"][:3], info["goal_positions"][3:]
    np.testing.assert_allclose(target, view.positions[goal.target], atol=1e-6)
    if family == "place":
        np.testing.assert_allclose(dest, view.receptacles[goal.destination], atol=1e-6)
    elif family == "stack":
        np.testing.assert_allclose(dest, view.positions[goal.destination], atol=1e-6)
    elif family == "push":
        moved = dest[:2] - view.initial_positions[goal.target][:2]
        np.testing.assert_allclose(moved, 0.08 * np.asarray(DIRECTIONS[goal.goal.direction]), atol=1e-6)
    else:
        np.testing.assert_allclose(dest, target)
    env.set_instruction("dance")  # no goal, no labels
    assert "goal_positions" not in env.step(np.zeros(7))[4]


def test_object_labels_name_each_object_where_both_cameras_see_it():
    from vla_demo.constants import MAX_OBJECTS, OBJECT_LABEL_FIELDS
    from vla_demo.sim import camera

    env = TabletopEnv(SimConfig(image_size=(64, 64), wrist_camera=True))
    try:
        unit = np.array([c[:3] for c in COLOURS.values()])
        unit /= np.linalg.norm(unit, axis=1, keepdims=True)
        for seed in range(3):
            obs, _ = env.reset(seed=seed)
            rows = env.object_labels().reshape(MAX_OBJECTS, len(OBJECT_LABEL_FIELDS))
            n = len(env.scene.objects)
            assert rows[:n, 0].tolist() == [list(COLOURS).index(o.colour) for o in env.scene.objects]
            assert rows[:n, 1].tolist() == [SHAPES.index(o.shape) for o in env.scene.objects]
            assert (rows[n:, :2] == -1).all() and (rows[n:, 2:] == 0).all()
            for key, uv in ((OBS_IMAGE_FRONT, rows[:n, 2:4]), (OBS_IMAGE_WRIST, rows[:n, 4:6])):
                # The pixel under each labelled centre has that object's colour (hue, not shading).
                px = obs[key][((uv[:, 1] + 1) / 2 * 64).astype(int), ((uv[:, 0] + 1) / 2 * 64).astype(int)] / 255.0
                hue = px / np.linalg.norm(px, axis=1, keepdims=True)
                assert (np.linalg.norm(unit[None] - hue[:, None], axis=2).argmin(1) == rows[:n, 0]).all(), (seed, key)
            assert (rows[:n, 6] == 1).all()  # from home the wrist camera sees these scenes whole
        # Behind the camera or outside its frustum: not visible.
        uv, seen = camera.image_coordinates(np.array([[0.5, 0.0, 0.0], [0.5, 0.0, 5.0], [5.0, 5.0, 0.0]]), env.front_camera())
        assert seen.tolist() == [True, False, False] and uv.shape == (3, 2)
    finally:
        env.close()
