"""Render a scripted-expert episode to a video or a strip of key frames (``python -m vla_demo sim``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vla_demo.constants import OBS_IMAGE_FRONT, OBS_IMAGE_WRIST


def caption(frame: np.ndarray, text: str) -> np.ndarray:
    """Frame with a dark caption bar underneath (for stills and clips people look at)."""
    import cv2

    h, w = frame.shape[:2]
    scale = float(np.clip(h / 400, 0.3, 0.8))  # font size follows the image height, not the strip width
    bar = np.full((int(28 * scale / 0.5), w, 3), 24, np.uint8)
    cv2.putText(bar, text, (6, int(bar.shape[0] * 0.68)), cv2.FONT_HERSHEY_SIMPLEX, scale, (235, 235, 235), 1, cv2.LINE_AA)
    return np.concatenate([frame, bar], axis=0)


def _view(obs: dict, wrist: bool) -> np.ndarray:
    return np.concatenate([obs[OBS_IMAGE_FRONT], obs[OBS_IMAGE_WRIST]], axis=1) if wrist else obs[OBS_IMAGE_FRONT]


def render_episode(
    family: str = "pick",
    seed: int = 0,
    split: str = "train",
    instruction: str | None = None,
    n_objects: int | None = None,
    size: int = 256,
    visuals: str = "full",
    wrist: bool = False,
    substeps: int = 2,
    noise: float = 0.0,
    out: str = "episode.mp4",
) -> tuple[Path, str]:
    """Run the expert once and write ``out`` (.mp4: every frame; .png: 5 key frames side by side).

    Returns the path written and a one-line summary (instruction, success, steps).
    """
    from vla_demo.evaluate import rollout
    from vla_demo.media import write_image, write_video
    from vla_demo.sim.env import TabletopEnv
    from vla_demo.sim.expert import ScriptedExpert

    suffix = Path(out).suffix.lower()
    if suffix not in (".mp4", ".png"):
        raise ValueError(f"--out must end in .mp4 or .png, got {out!r}")
    env = TabletopEnv(image_size=(size, size), robot_visuals=visuals, wrist_camera=wrist)
    try:
        options = {"family": family, "split": split, "n_objects": n_objects, "instruction": instruction}
        obs, _ = env.reset(seed=seed, options=options)
        frames, info = [_view(obs, wrist)], {}
        for rec in rollout(env, ScriptedExpert(env, noise=noise, seed=seed), observation=obs,
                           render_substeps=substeps if suffix == ".mp4" else 0):
            frames += rec.info.get("frames", []) if not wrist else []
            frames.append(_view(rec.next_observation, wrist))
            info = rec.info
        text = env.instruction
        success = info.get("success")
        summary = f"'{text}': success={success} after {env.steps} steps"
    finally:
        env.close()
    label = f'"{text}"  ({"success" if success else "not done" if success is False else "unparsed"})'
    if suffix == ".mp4":
        fps = env.config.control_hz * (1 + (substeps if not wrist else 0))
        return write_video(out, (caption(f, label) for f in frames), fps=fps), summary
    keys = np.linspace(0, len(frames) - 1, 5).round().astype(int)
    strip = np.concatenate([frames[i] for i in keys], axis=1)
    return write_image(out, caption(strip, label)), summary
