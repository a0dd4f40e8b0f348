"""TrainingView: items follow the batch contract, chunks stay inside their episode, the frame cache
honours its budget, and mismatched datasets fail with a message that says how to map them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from vla_demo.constants import (
    ACTION,
    ACTION_IS_PAD,
    GOAL_POSITIONS,
    INTERVENTION,
    OBS_IMAGE_FRONT,
    OBS_IMAGE_WRIST,
    OBS_STATE,
    TASK,
)
from vla_demo.data import format as fmt
from vla_demo.data.format import sim_features, webcam_features
from vla_demo.data.torch_dataset import TrainingView
from vla_demo.data.writer import DatasetWriter, EpisodeRecorder

SIZE = 32
LENGTHS = (5, 4, 6)  # episode lengths of the main fixture (15 frames)
STARTS = np.concatenate([[0], np.cumsum(LENGTHS)])
FRAME_BYTES = SIZE * SIZE * 3
RENAMED = "robot.command"


# ----------------------------------------------------------------------------- recorded values


def image_of(g: int) -> np.ndarray:
    """A flat (SIZE, SIZE, 3) frame whose colour encodes the global frame index ``g``."""
    return np.broadcast_to(np.array([30 + 12 * g, 220 - 8 * g, 100], np.uint8), (SIZE, SIZE, 3)).copy()


def action_of(e: int, t: int) -> np.ndarray:
    return (np.arange(7) * 0.1 + 10 * e + t).astype(np.float32)


def task_of(e: int, t: int) -> str:
    if e == 1:  # the instruction changes mid-episode
        return "push the blue cube left" if t < 2 else "pick up the green sphere"
    return "reach the yellow cube" if e == 2 else "pick up the red cube"


def intervention_of(e: int, t: int) -> bool:
    return e == 1 and t >= 2


def make_frame(features: dict, e: int, t: int, g: int) -> dict:
    frame = {TASK: task_of(e, t)}
    for key, feat in features.items():
        if feat["dtype"] == "video":
            frame[key] = 255 - image_of(g) if key == OBS_IMAGE_WRIST else image_of(g)
        elif feat["dtype"] == "bool":
            frame[key] = intervention_of(e, t)
        else:  # state is the negated action, any other vector the action (cut to its size)
            frame[key] = (-1 if key == OBS_STATE else 1) * action_of(e, t)[: feat["shape"][0]]
    return frame


def write_dataset(root: Path, features: dict, lengths: tuple[int, ...] = LENGTHS) -> Path:
    writer = DatasetWriter.open(root, features, fps=10)
    try:
        g = 0
        for e, length in enumerate(lengths):
            recorder = EpisodeRecorder(writer)
            for t in range(length):
                recorder.add_frame(make_frame(features, e, t, g))
                g += 1
            recorder.finish(success=True, source="scripted")
    finally:
        writer.close()
    return root


def episode_and_frame(i: int) -> tuple[int, int]:
    e = int(np.searchsorted(STARTS, i, side="right")) - 1
    return e, i - int(STARTS[e])


@pytest.fixture(scope="module")
def sim_root(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("sim") / "ds", sim_features((SIZE, SIZE)))


@pytest.fixture(scope="module")
def view(sim_root) -> TrainingView:
    return TrainingView(sim_root, chunk_size=4)


# ----------------------------------------------------------------------------- items


def test_item_keys_dtypes_and_shapes(view):
    assert len(view) == sum(LENGTHS)
    item = view[0]
    assert set(item) == {OBS_IMAGE_FRONT, OBS_STATE, TASK, ACTION, ACTION_IS_PAD, INTERVENTION, GOAL_POSITIONS, "object_labels"}
    assert item[GOAL_POSITIONS].shape == (6,) and torch.isnan(item[GOAL_POSITIONS]).all()  # no labels here
    objects = item["object_labels"].view(5, 7)  # no objects labelled here either: every slot empty
    assert (objects[:, :2] == -1).all() and (objects[:, 2:] == 0).all()
    image = item[OBS_IMAGE_FRONT]
    assert image.dtype == torch.float32 and image.shape == (3, SIZE, SIZE)
    assert 0.0 <= image.min() and image.max() <= 1.0
    assert item[OBS_STATE].dtype == torch.float32 and item[OBS_STATE].shape == (7,)
    assert item[ACTION].dtype == torch.float32 and item[ACTION].shape == (4, 7)
    assert item[ACTION_IS_PAD].dtype == torch.bool and item[ACTION_IS_PAD].shape == (4,)
    assert item[INTERVENTION].dtype == torch.bool and item[INTERVENTION].shape == ()
    assert isinstance(item[TASK], str)


def test_action_chunks_are_the_recorded_actions_padded_with_the_last_one(view):
    for i in range(len(view)):
        e, t = episode_and_frame(i)
        last = LENGTHS[e] - 1
        expected = np.stack([action_of(e, min(t + k, last)) for k in range(4)])
        item = view[i]
        np.testing.assert_array_equal(item[ACTION].numpy(), expected)
        assert item[ACTION_IS_PAD].tolist() == [t + k > last for k in range(4)]


def test_chunk_at_episode_end_does_not_cross_into_the_next_episode(view):
    item = view[LENGTHS[0] - 1]  # last frame of episode 0
    assert item[ACTION_IS_PAD].tolist() == [False, True, True, True]
    assert all(torch.equal(row, torch.from_numpy(action_of(0, LENGTHS[0] - 1))) for row in item[ACTION])
    assert not any(torch.equal(row, torch.from_numpy(action_of(1, 0))) for row in item[ACTION])


def test_state_and_intervention_per_frame(view):
    for i in range(len(view)):
        e, t = episode_and_frame(i)
        item = view[i]
        np.testing.assert_array_equal(item[OBS_STATE].numpy(), -action_of(e, t))
        assert bool(item[INTERVENTION]) == intervention_of(e, t)


def test_task_follows_instruction_changes_inside_an_episode(view):
    tasks = [view[int(STARTS[1]) + t][TASK] for t in range(LENGTHS[1])]
    assert tasks == [task_of(1, t) for t in range(LENGTHS[1])]
    assert tasks[0] != tasks[-1]
    assert view[0][TASK] == task_of(0, 0)


def test_decoded_images_are_close_to_the_recorded_ones(view):
    for i in range(len(view)):
        got = view[i][OBS_IMAGE_FRONT].numpy().transpose(1, 2, 0) * 255  # (H, W, 3), RGB order
        error = np.abs(got - image_of(i).astype(np.float32)).mean()
        assert error < 8, f"frame {i}: mean abs error {error:.1f}"


def test_the_wrist_camera_is_served_when_asked_for_and_cached_apart(tmp_path):
    root = write_dataset(tmp_path / "ds", sim_features((SIZE, SIZE), wrist=True))
    both = TrainingView(root, chunk_size=4, wrist_key=OBS_IMAGE_WRIST)
    assert OBS_IMAGE_WRIST not in TrainingView(root, chunk_size=4)[0]
    for i in range(len(both)):
        item = both[i]
        for key, want in ((OBS_IMAGE_FRONT, image_of(i)), (OBS_IMAGE_WRIST, 255 - image_of(i))):
            got = item[key].numpy().transpose(1, 2, 0) * 255
            assert np.abs(got - want.astype(np.float32)).mean() < 8, (key, i)
    assert both.cache_bytes == 2 * sum(LENGTHS) * FRAME_BYTES  # two cameras, each episode once
    with pytest.raises(ValueError, match="no wrist camera"):
        TrainingView(tmp_path / "ds", wrist_key="observation.images.side")


def test_the_wrist_camera_has_a_size_of_its_own(tmp_path):
    root = write_dataset(tmp_path / "ds", sim_features((SIZE, SIZE), wrist=True))
    view = TrainingView(root, chunk_size=4, image_size=24, wrist_key=OBS_IMAGE_WRIST, wrist_size=16)
    item = view[2]
    assert item[OBS_IMAGE_FRONT].shape == (3, 24, 24) and item[OBS_IMAGE_WRIST].shape == (3, 16, 16)
    want = cv2.resize(255 - image_of(2), (16, 16), interpolation=cv2.INTER_AREA).astype(np.float32)
    assert np.abs(item[OBS_IMAGE_WRIST].numpy().transpose(1, 2, 0) * 255 - want).max() <= 1
    view.prefill(workers=1)
    assert view.cache_bytes == sum(LENGTHS) * (24 * 24 + 16 * 16) * 3  # each camera at its own size
    with pytest.raises(ValueError, match="wrist_size"):
        TrainingView(root, wrist_key=OBS_IMAGE_WRIST, wrist_size=0)


def test_negative_and_out_of_range_indices(view):
    assert torch.equal(view[-1][ACTION], view[len(view) - 1][ACTION])
    with pytest.raises(IndexError):
        view[len(view)]


# ----------------------------------------------------------------------------- resizing and cache


def test_image_size_resizes_and_the_cache_holds_resized_frames(sim_root):
    small = TrainingView(sim_root, image_size=16)
    for i in range(len(small)):
        image = small[i][OBS_IMAGE_FRONT]
        assert image.shape == (3, 16, 16)
        error = np.abs(image.numpy().transpose(1, 2, 0) * 255 - image_of(i)[:16, :16]).mean()
        assert error < 8
    assert small.cache_bytes == sum(LENGTHS) * 16 * 16 * 3  # every episode cached, already resized


def test_cache_budget_is_respected_and_results_match_uncached(sim_root, view):
    budget_mb = 1.2 * max(LENGTHS) * FRAME_BYTES / 2**20  # room for one episode, not two
    tiny = TrainingView(sim_root, chunk_size=4, cache_budget_mb=budget_mb)
    none = TrainingView(sim_root, chunk_size=4, cache_budget_mb=0)
    order = [0, 14, 5, 1, 9, 13, 6, 2, 10]  # hops between episodes
    for i in order:
        a, b, c = tiny[i], none[i], view[i]
        assert tiny.cache_bytes <= tiny.cache_budget_bytes
        assert none.cache_bytes == 0
        for key in (OBS_IMAGE_FRONT, ACTION, ACTION_IS_PAD, OBS_STATE):
            assert torch.equal(a[key], c[key]) and torch.equal(b[key], c[key]), key
    assert tiny.cache_bytes > 0  # the last episode used fits and was kept
    for i in range(len(view)):
        view[i]
    assert view.cache_bytes == sum(LENGTHS) * FRAME_BYTES  # the default budget keeps everything


def test_dataloader_collates_batches(view):
    loader = torch.utils.data.DataLoader(view, batch_size=4)
    batches = list(loader)
    assert len(batches) == 4 and sum(len(b[TASK]) for b in batches) == len(view)
    batch = batches[0]
    assert batch[OBS_IMAGE_FRONT].shape == (4, 3, SIZE, SIZE)
    assert batch[OBS_STATE].shape == (4, 7)
    assert batch[TASK] == [task_of(0, t) for t in range(4)]
    assert batch[ACTION].shape == (4, 4, 7)
    assert batch[ACTION_IS_PAD].dtype == torch.bool and batch[ACTION_IS_PAD].shape == (4, 4)
    assert batch[INTERVENTION].dtype == torch.bool and batch[INTERVENTION].shape == (4,)


# ----------------------------------------------------------------------------- other datasets


def test_webcam_items_have_no_state(tmp_path):
    root = write_dataset(tmp_path / "cam", webcam_features((SIZE, SIZE)), lengths=(3,))
    cam = TrainingView(root, chunk_size=2)
    item = cam[2]
    assert OBS_STATE not in item
    np.testing.assert_array_equal(item[ACTION].numpy(), np.stack([action_of(0, 2)] * 2))
    assert next(iter(torch.utils.data.DataLoader(cam, batch_size=3)))[ACTION].shape == (3, 2, 7)


def test_renamed_action_fails_with_a_key_map_hint_and_works_when_mapped(tmp_path):
    features = sim_features((SIZE, SIZE))
    features[RENAMED] = features.pop(ACTION)
    root = write_dataset(tmp_path / "renamed", features, lengths=(3,))
    with pytest.raises(ValueError, match="key_map") as err:
        TrainingView(root)
    assert RENAMED in str(err.value) and f"'{ACTION}'" in str(err.value)
    mapped = TrainingView(root, chunk_size=2, key_map={RENAMED: ACTION})
    np.testing.assert_array_equal(mapped[1][ACTION].numpy(), np.stack([action_of(0, 1), action_of(0, 2)]))
    stats = mapped.stats()
    assert ACTION in stats and RENAMED not in stats


def test_wrong_action_size_names_the_size(tmp_path):
    features = sim_features((SIZE, SIZE))
    features[ACTION] = {**features[ACTION], "shape": [6], "names": None}
    root = write_dataset(tmp_path / "six", features, lengths=(2,))
    with pytest.raises(ValueError, match="6 values") as err:
        TrainingView(root)
    assert "action_dim" in str(err.value) and "key_map" in str(err.value)
    assert TrainingView(root, action_dim=6)[0][ACTION].shape == (8, 6)


def test_bad_image_key_and_unknown_key_map_entries(sim_root):
    with pytest.raises(ValueError, match=OBS_IMAGE_FRONT):  # the message lists the cameras there are
        TrainingView(sim_root, image_key=OBS_IMAGE_WRIST)
    with pytest.raises(ValueError, match="float32"):
        TrainingView(sim_root, image_key=OBS_STATE)
    with pytest.raises(ValueError, match="no.such"):
        TrainingView(sim_root, key_map={"no.such": ACTION})


def test_image_key_can_be_mapped_onto_the_front_camera(sim_root):
    cam = TrainingView(sim_root, image_key="camera", key_map={OBS_IMAGE_FRONT: "camera"})
    assert cam[3][OBS_IMAGE_FRONT].shape == (3, SIZE, SIZE)


def to_image_dtype(root: Path) -> None:
    """Rewrite a video dataset as lerobot's ``image`` alternative: PNG bytes embedded in the parquet."""
    import cv2
    import pyarrow as pa
    import pyarrow.parquet as pq

    info = json.loads((root / fmt.INFO_PATH).read_text())
    info["features"][OBS_IMAGE_FRONT] = {**fmt.video_feature(SIZE, SIZE), "dtype": "image"}
    info["video_path"] = None
    struct = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    for e in range(info["total_episodes"]):
        table = pq.read_table(fmt.data_path(root, e))
        cells = [{"bytes": cv2.imencode(".png", cv2.cvtColor(image_of(g), cv2.COLOR_RGB2BGR))[1].tobytes(),
                  "path": f"frame-{g:06d}.png"} for g in table.column("index").to_pylist()]
        pq.write_table(table.append_column(OBS_IMAGE_FRONT, pa.array(cells, type=struct)), fmt.data_path(root, e))
    shutil.rmtree(root / "videos")
    (root / fmt.INFO_PATH).write_text(json.dumps(info))


def test_image_features_are_decoded_from_png_bytes(tmp_path):
    root = write_dataset(tmp_path / "png", webcam_features((SIZE, SIZE)), lengths=(2, 3))
    to_image_dtype(root)
    view = TrainingView(root, image_size=16)
    for i in range(len(view)):  # PNG is lossless: exact colours, in RGB order
        expected = torch.from_numpy(image_of(i)[:16, :16].transpose(2, 0, 1).astype(np.float32) / 255)
        assert torch.allclose(view[i][OBS_IMAGE_FRONT], expected)


# ----------------------------------------------------------------------------- selection, weights, stats


def test_prefill_decodes_what_fits_the_budget_with_threads_and_serves_the_same_items(tmp_path):
    import threading

    root = write_dataset(tmp_path / "ds", sim_features((SIZE, SIZE), wrist=True))
    lazy = TrainingView(root, chunk_size=4, wrist_key=OBS_IMAGE_WRIST)
    full = TrainingView(root, chunk_size=4, wrist_key=OBS_IMAGE_WRIST)
    calls = []
    assert full.prefill(workers=2, progress=lambda done, total: calls.append((done, total))) == 2 * len(LENGTHS)
    assert calls == [(k, 2 * len(LENGTHS)) for k in range(1, 2 * len(LENGTHS) + 1)]
    assert full.cache_bytes == 2 * sum(LENGTHS) * FRAME_BYTES  # both cameras of every episode
    assert full.prefill() == 0  # nothing left to decode
    for i in range(len(lazy)):
        a, b = full[i], lazy[i]
        for key in (OBS_IMAGE_FRONT, OBS_IMAGE_WRIST, ACTION):
            assert torch.equal(a[key], b[key]), (key, i)
    # A budget for the first two episodes' cameras, not the third's: it stops there, in order.
    budget_mb = 2 * (LENGTHS[0] + LENGTHS[1]) * FRAME_BYTES / 2**20
    part = TrainingView(root, chunk_size=4, wrist_key=OBS_IMAGE_WRIST, cache_budget_mb=budget_mb)
    assert part.prefill() == 4 and part.cache_bytes == 2 * (LENGTHS[0] + LENGTHS[1]) * FRAME_BYTES
    # Frames already cached count once: a budget of exactly the whole dataset still takes the rest.
    exact = TrainingView(root, chunk_size=4, wrist_key=OBS_IMAGE_WRIST, cache_budget_mb=2 * sum(LENGTHS) * FRAME_BYTES / 2**20)
    exact[0]  # both cameras of episode 0, decoded on demand
    assert exact.prefill() == 2 * len(LENGTHS) - 2 and exact.cache_bytes == 2 * sum(LENGTHS) * FRAME_BYTES
    stop = threading.Event()
    stopped = TrainingView(root, chunk_size=4, wrist_key=OBS_IMAGE_WRIST)
    assert stopped.prefill(stop=stop, progress=lambda done, total: stop.set()) == 1
    assert stopped.cache_bytes == LENGTHS[0] * FRAME_BYTES  # what was decoded before the stop stays


def test_prefill_of_a_damaged_video_fails_like_on_demand_decoding_and_keeps_what_came_before(tmp_path):
    root = write_dataset(tmp_path / "ds", sim_features((SIZE, SIZE)))
    damaged = sorted((root / "videos" / OBS_IMAGE_FRONT).glob("*/*.mp4"))[1]
    damaged.write_bytes(b"not a video" * 100)
    lazy = TrainingView(root, chunk_size=4)
    with pytest.raises(ValueError, match=damaged.name):  # PyAV's error names the file
        lazy[LENGTHS[0]]  # the first frame of episode 1
    view = TrainingView(root, chunk_size=4)
    with pytest.raises(ValueError, match=damaged.name):
        view.prefill(workers=2)
    assert view.cache_bytes == LENGTHS[0] * FRAME_BYTES  # episode 0, decoded before the damaged one


def test_episode_selection_keeps_the_given_order(sim_root):
    view = TrainingView(sim_root, episodes=[2, 0])
    assert len(view) == LENGTHS[2] + LENGTHS[0]
    np.testing.assert_array_equal(view[0][ACTION][0].numpy(), action_of(2, 0))
    np.testing.assert_array_equal(view[LENGTHS[2]][ACTION][0].numpy(), action_of(0, 0))
    assert view[LENGTHS[2]][TASK] == task_of(0, 0)
    with pytest.raises(ValueError, match="do not exist"):
        TrainingView(sim_root, episodes=[3])


def test_views_of_one_dataset_can_share_a_reader(sim_root):
    from vla_demo.data.reader import DatasetReader

    reader = DatasetReader(sim_root)
    train, val = TrainingView(reader, episodes=[0, 2]), TrainingView(reader, episodes=[1])
    assert train.reader is val.reader is reader
    alone = TrainingView(sim_root, episodes=[1])
    np.testing.assert_array_equal(val[0][ACTION].numpy(), alone[0][ACTION].numpy())
    assert val[0][TASK] == alone[0][TASK] and len(train) == LENGTHS[0] + LENGTHS[2]


def test_sample_weights_up_weight_intervention_frames(view, sim_root):
    weights = view.sample_weights(intervention_weight=3.0)
    expected = [3.0 if intervention_of(*episode_and_frame(i)) else 1.0 for i in range(len(view))]
    assert weights.tolist() == expected and 3.0 in expected
    assert torch.equal(view.sample_weights(), torch.ones(len(view), dtype=weights.dtype))
    assert TrainingView(sim_root, episodes=[1]).sample_weights(5.0).tolist() == [1.0, 1.0, 5.0, 5.0]
    with pytest.raises(ValueError):
        view.sample_weights(-1.0)
    with pytest.raises(ValueError):
        view.sample_weights(1.0, float("nan"))


def test_stats_are_numpy_arrays_of_the_dataset(view):
    stats = view.stats()
    actions = np.stack([action_of(e, t) for e, n in enumerate(LENGTHS) for t in range(n)])
    assert isinstance(stats[ACTION]["mean"], np.ndarray)
    np.testing.assert_allclose(stats[ACTION]["mean"], actions.mean(0), rtol=1e-5)
    assert stats[OBS_IMAGE_FRONT]["mean"].shape == (3, 1, 1)


def test_the_policys_own_action_frames_can_be_left_out_but_not_a_demonstrations(tmp_path):
    """Shared-mode frames the policy drove, labelled with its own action, get ``own_action_weight``;
    relabelled policy frames, operator frames and scripted demonstrations do not."""
    from vla_demo.constants import EXECUTED_ACTION
    from vla_demo.data.format import sim_features
    from vla_demo.data.writer import DatasetWriter, Episode

    def episode(source, intervention, relabel=False):
        n = len(intervention)
        executed = np.tile(np.arange(7, dtype=np.float32) / 10, (n, 1))
        label = executed + 0.05 if relabel else executed.copy()  # an expert's relabel differs from what was done
        frames = {OBS_IMAGE_FRONT: np.zeros((n, 16, 16, 3), np.uint8), OBS_STATE: np.zeros((n, 7), np.float32),
                  ACTION: label, EXECUTED_ACTION: executed, INTERVENTION: np.asarray(intervention, bool)}
        return Episode(frames, ["pick up the red cube"] * n, True, source)

    writer = DatasetWriter.open(tmp_path / "ds", sim_features((16, 16), False), fps=10)
    writer.save_episode(episode("shared", [False, False, True, True]))  # own, own, operator, operator
    writer.save_episode(episode("shared", [False, True], relabel=True))  # relabelled policy frame, operator
    writer.save_episode(episode("scripted", [False, False]))  # a demonstration whose noise happened to be zero
    writer.close()
    view = TrainingView(tmp_path / "ds", image_size=16)
    assert view.sample_weights(3.0, 0.0).tolist() == [0, 0, 3, 3, 1, 3, 1, 1]
    assert view.sample_weights(3.0, 0.5).tolist() == [0.5, 0.5, 3, 3, 1, 3, 1, 1]
    policy_only = tmp_path / "policy_only"
    writer = DatasetWriter.open(policy_only, sim_features((16, 16), False), fps=10)
    writer.save_episode(episode("policy", [False, False, False]))
    writer.close()
    assert TrainingView(policy_only, image_size=16).sample_weights(3.0, 0.0).tolist() == [1, 1, 1]  # all there is
