"""Where shape gets lost between the pixels and a policy: probes on the front camera's first frames.

Every labelled object (``object_labels``, recorded by collections since 2026-12-06) of a dataset's
first frames is probed twice for its shape:

1. the pixels: a small CNN on grey crops centred on the object at the policy's image size, with
   the brightness jittered so that intensity is no colour code: how well shape can be told at all;
2. each policy's front feature map (the stride-8 map its keypoints score), frozen and read
   bilinearly at the object's centre: a linear probe and one with a hidden layer.

Accuracy over all objects, and over red ones, which come in all three shapes so colour cannot
answer for them. Even episodes fit the probes, odd ones test them.

    PYTHONPATH=. python scripts/shape_probe.py --dataset DATA/datasets/default-demos-wrist-v4 \\
        --policy assets/policies/default [OTHER ...] [--episodes 2000] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from vla_demo.constants import COLOURS, MAX_OBJECTS, OBJECT_LABEL_FIELDS, OBJECT_LABELS, OBS_IMAGE_FRONT, SHAPES

RED = list(COLOURS).index("red")
CROP_HALF = 0.09  # crop half-side, a share of the image side (an object is about 0.07 of it)


def first_frames(reader, episodes: list[int], size: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per episode: its first front frame resized to ``size`` (as training resizes) and its labelled
    objects' rows (n, 7) of ``OBJECT_LABEL_FIELDS``."""
    from vla_demo.data.torch_dataset import resize_frames

    out = []
    for e in tqdm(episodes, desc="first frames", unit="ep"):
        image = resize_frames(reader.frames(OBS_IMAGE_FRONT, e)[:1], size)[0]
        rows = reader.episode_columns(e)[OBJECT_LABELS][0].reshape(MAX_OBJECTS, len(OBJECT_LABEL_FIELDS))
        out.append((image, rows[rows[:, 0] >= 0]))
    return out


def crops(frames) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Grey crops (n, 1, 2h, 2h) in [0, 1] centred on every object, their shapes and colours (n,)."""
    xs, shapes, colours = [], [], []
    for image, rows in frames:
        size = image.shape[0]
        h = max(2, round(CROP_HALF * size))
        grey = np.pad(image.astype(np.float32).mean(-1) / 255.0, h, mode="edge")
        for row in rows:
            u, v = (np.round((row[2:4] + 1) / 2 * size).astype(int) + h).tolist()  # image (x, y) -> padded indices
            xs.append(grey[v - h:v + h, u - h:u + h])
            shapes.append(int(row[1]))
            colours.append(int(row[0]))
    return torch.tensor(np.stack(xs))[:, None], torch.tensor(shapes), torch.tensor(colours)


@torch.no_grad()
def map_features(model, frames) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The front stride-8 map (frozen) read bilinearly at every object's centre (n, C), shapes, colours."""
    xs, shapes, colours = [], [], []
    for image, rows in frames:
        x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255  # (1, 3, S, S)
        fmap = model.vision.feature_map(x)  # (1, C, S/8, S/8)
        uv = torch.from_numpy(rows[:, 2:4]).float().view(1, -1, 1, 2)
        xs.append(F.grid_sample(fmap, uv, align_corners=False)[0, :, :, 0].T)  # (n, C)
        shapes += rows[:, 1].astype(int).tolist()
        colours += rows[:, 0].astype(int).tolist()
    return torch.cat(xs), torch.tensor(shapes), torch.tensor(colours)


def crop_net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.GELU(), nn.Conv2d(16, 32, 3, padding=1), nn.GELU(),
                         nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(512, 64), nn.GELU(), nn.Linear(64, len(SHAPES)))


def map_net(channels: int, hidden: int) -> nn.Module:
    if not hidden:
        return nn.Linear(channels, len(SHAPES))
    return nn.Sequential(nn.Linear(channels, hidden), nn.GELU(), nn.Linear(hidden, len(SHAPES)))


def fit_and_test(net: nn.Module, x: torch.Tensor, y: torch.Tensor, x_test: torch.Tensor, steps: int,
                 jitter: bool = False, lr: float = 3e-3) -> torch.Tensor:
    """Train ``net`` on (x, y) with AdamW (batches of 128; ``jitter`` scales each input's brightness
    by 0.6-1.4), then its predictions for ``x_test``."""
    torch.manual_seed(0)
    opt = torch.optim.AdamW(net.parameters(), lr, weight_decay=1e-3)
    for _ in range(steps):
        i = torch.randint(len(x), (128,))
        xb = x[i] * (0.6 + 0.8 * torch.rand(len(i), *[1] * (x.dim() - 1))) if jitter else x[i]
        loss = F.cross_entropy(net(xb), y[i])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return net(x_test).argmax(-1)


def scores(pred: torch.Tensor, shapes: torch.Tensor, colours: torch.Tensor) -> dict[str, float]:
    right = (pred == shapes).float()
    red = right[colours == RED]
    return {"objects": len(right), "shape_right": float(right.mean()),
            "red_objects": len(red), "red_shape_right": float(red.mean()) if len(red) else float("nan")}


def standardise(x: torch.Tensor, x_test: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mu, sd = x.mean(0), x.std(0) + 1e-5
    return (x - mu) / sd, (x_test - mu) / sd


def probe_policy(model, fit, test, steps: int) -> dict[str, dict[str, float]]:
    x, y, _ = map_features(model, fit)
    x_test, y_test, c_test = map_features(model, test)
    x, x_test = standardise(x, x_test)
    return {name: scores(fit_and_test(map_net(x.size(1), hidden), x, y, x_test, steps), y_test, c_test)
            for name, hidden in (("linear", 0), ("hidden128", 128))}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", required=True, help="a dataset with object_labels")
    ap.add_argument("--policy", nargs="+", required=True, help="policy folders (one image size)")
    ap.add_argument("--episodes", type=int, default=2000, help="first frames of this many episodes (half fit, half test)")
    ap.add_argument("--steps", type=int, default=1500, help="training steps of each probe")
    ap.add_argument("--json", default=None, help="write the results here too")
    args = ap.parse_args(argv)
    if args.episodes < 2 or args.steps < 1:
        ap.error(f"--episodes must be at least 2 and --steps at least 1, got {args.episodes} and {args.steps}")
    from vla_demo.data.reader import DatasetReader
    from vla_demo.policy import LanguageConditionedPolicy

    try:
        reader = DatasetReader(args.dataset)
        policies = {p: LanguageConditionedPolicy.from_pretrained(p).model.eval() for p in args.policy}
    except (OSError, ValueError) as e:
        ap.error(f"cannot open: {e}")
    if OBJECT_LABELS not in reader.info["features"]:
        ap.error(f"{args.dataset} has no {OBJECT_LABELS} (collections since 2026-12-06 record them)")
    sizes = {m.config.image_size for m in policies.values()}
    if len(sizes) != 1 or any(not hasattr(m.vision, "feature_map") for m in policies.values()):
        ap.error("the policies must share one image size and have a convolutional stem")
    episodes = list(range(min(args.episodes, reader.num_episodes)))
    frames = first_frames(reader, episodes, sizes.pop())
    fit, test = frames[0::2], frames[1::2]
    (x, y, _), (x_test, y_test, c_test) = crops(fit), crops(test)
    results = {"pixels": scores(fit_and_test(crop_net(), x, y, x_test, args.steps, jitter=True, lr=2e-3), y_test, c_test)}
    for path, model in policies.items():
        results[path] = probe_policy(model, fit, test, args.steps)
    print_table(results)
    if args.json:
        Path(args.json).write_text(json.dumps({"dataset": args.dataset, "episodes": len(episodes), "results": results}, indent=2))
    return results


def print_table(results: dict) -> None:
    print("\n| probe | shape told right | red objects (all three shapes) |")
    print("|---|---|---|")
    rows = [("grey crops (pixels)", results["pixels"])]
    rows += [(f"`{path}` map, {name}", r) for path, per in results.items() if path != "pixels" for name, r in per.items()]
    for name, r in rows:
        print(f"| {name} | {r['shape_right']:.1%} of {r['objects']} | {r['red_shape_right']:.1%} of {r['red_objects']} |")


if __name__ == "__main__":
    main()
