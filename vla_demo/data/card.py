"""The dataset card (README.md): what the dataset is, how it was recorded, counts and tasks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vla_demo.data import format as fmt


def dataset_card(root: Path, info: dict[str, Any], tasks: dict[str, int], note: str = "") -> str:
    feats = fmt.user_features(info["features"])
    cams = fmt.video_keys(feats)
    shown = sorted(tasks, key=tasks.get)[:20]
    lines = [
        "---",
        "license: apache-2.0",
        "task_categories:",
        "- robotics",
        "tags:",
        "- LeRobot",
        "- vla-demo",
        "configs:",
        "- config_name: default",
        "  data_files: data/*/*.parquet",
        "---",
        "",
        f"# {root.name}",
        "",
        "Demonstrations recorded with vla-demo in the LeRobot v3.0 format "
        "(loadable with `lerobot`'s `LeRobotDataset`).",
        "",
        note.strip(),
        "",
        f"- robot: `{info.get('robot_type')}`, {info['fps']} frames per second (the control rate)",
        f"- episodes: {info['total_episodes']}, frames: {info['total_frames']}, tasks (instructions): {len(tasks)}",
        f"- cameras: {', '.join(f'`{c}`' for c in cams) or 'none'}",
        "- `action`: the commanded end-effector delta (dx, dy, dz in m, droll, dpitch, dyaw in rad) and the "
        "gripper command (1 = open); `intervention` marks frames an operator drove",
        "- episode extras (episodes table): `success` (null = unlabelled), `source` "
        "(scripted | teleop | policy | shared), `operator`",
        "",
        "## Tasks",
        "",
        *[f"- {t}" for t in shown],
        *([f"- ... and {len(tasks) - len(shown)} more"] if len(tasks) > len(shown) else []),
        "",
        "## info.json",
        "",
        "```json",
        json.dumps(info, indent=2, ensure_ascii=False),
        "```",
        "",
    ]
    return "\n".join(line for line in lines if line is not None)
