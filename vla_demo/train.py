"""Training. ``train_vla(model, dataset, epochs)`` keeps the reference design's signature.

The full trainer (data mixing, schedules, checkpoints, DDP) builds on the same step: tokenise,
forward, ``model.loss``, backward, clip, step.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch

from vla_demo.constants import ACTION, ACTION_IS_PAD, GOAL_POSITIONS, OBS_IMAGE_FRONT, OBS_IMAGE_WRIST, OBS_STATE, TASK
from vla_demo.model.tokenizer import word_dropout


def as_image_batch(images: Any, size: int) -> torch.Tensor:
    """(B, 3, H, W) float in [0, 1] or (B, H, W, 3) uint8 -> (B, 3, size, size) float in [0, 1]."""
    x = torch.as_tensor(np.asarray(images)) if not isinstance(images, torch.Tensor) else images
    if x.dtype == torch.uint8:
        if x.ndim != 4 or x.shape[-1] != 3:
            raise ValueError(f"uint8 image batches must be (B, H, W, 3), got {tuple(x.shape)}")
        x = x.permute(0, 3, 1, 2).float() / 255
    elif x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"float image batches must be (B, 3, H, W) in [0, 1], got {tuple(x.shape)}")
    if x.shape[-2:] != (size, size):
        x = torch.nn.functional.interpolate(x.float(), size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return x.float()


def _batch_parts(batch: dict[str, Any], model, word_drop: float):
    """Accept the seed's ``{'images', 'instructions', 'actions'}`` batches or feature-keyed ones."""
    images = batch.get("images", batch.get(OBS_IMAGE_FRONT))
    text = batch.get("instructions", batch.get(TASK))
    actions = batch.get("actions", batch.get(ACTION))
    if images is None or text is None or actions is None:
        raise ValueError(f"a batch needs images, instructions and actions; got keys {sorted(batch)}")
    x = as_image_batch(images, model.config.image_size)
    if isinstance(text, torch.Tensor):  # already token ids
        ids = text.long()
        pad = model.tokenizer.pad_id if model.tokenizer is not None else 0
        mask = ids != pad
    else:
        if model.tokenizer is None:
            raise ValueError("string instructions need a tokenizer attached to the model (model.tokenizer)")
        enc = model.tokenizer(list(text))
        ids, mask = enc.input_ids, enc.attention_mask
    ids = word_dropout(ids, mask, model.tokenizer.unk_id if model.tokenizer is not None else None, word_drop)
    a = torch.as_tensor(actions, dtype=torch.float32)
    is_pad = batch.get(ACTION_IS_PAD)
    if a.ndim == 2:  # one action per sample: supervise the first step of the chunk only
        H = model.config.chunk_size
        a = a.unsqueeze(1).expand(-1, H, -1)
        is_pad = torch.ones(a.shape[:2], dtype=torch.bool)
        is_pad[:, 0] = False
    state = batch.get(OBS_STATE)
    state = None if state is None else torch.as_tensor(state, dtype=torch.float32)
    return x, ids, mask, state, a, is_pad


def train_vla(model, dataset: Iterable[dict[str, Any]], epochs: int, lr: float = 1e-4, word_drop: float = 0.1,
              grad_clip: float = 1.0, progress: bool = True) -> list[float]:
    """Train ``model`` (a VLAModel or a LanguageConditionedPolicy) with AdamW on an iterable of batches.

    Args:
        model: the model; string instructions are tokenised by ``model.tokenizer``.
        dataset: re-iterable batches ``{'images', 'instructions', 'actions'}`` (the reference form)
            or keyed by feature names (``observation.images.front``, ``task``, ``action``, ...).
        epochs: passes over ``dataset``.
        lr: AdamW learning rate (the reference design's 1e-4).
        word_drop: probability of replacing a word by the unknown token.

    Returns:
        the mean loss of each epoch.
    """
    from tqdm import tqdm

    model = getattr(model, "model", model)  # a policy wraps its model
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    history = []
    model.train()
    try:
        for epoch in tqdm(range(epochs), desc="train_vla", unit="epoch", disable=not progress):
            losses = []
            for batch in dataset:
                x, ids, mask, state, actions, is_pad = _batch_parts(batch, model, word_drop)
                out = model(x, ids, mask, state)["out"]
                loss, _ = model.loss(out, actions, is_pad)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
                opt.step()
                losses.append(loss.item())
            if not losses:
                raise ValueError("the dataset yielded no batches")
            history.append(float(np.mean(losses)))
    finally:
        model.eval()
    return history


# ============================================================================ the trainer
#
# train(cfg, progress=None, stop=None) -> checkpoint folder. One loop for training from scratch,
# fine-tuning (cfg.init_from) and DDP (under torchrun: gloo on CPU, nccl on GPU). The loop reads
# top to bottom: sample a batch -> augment -> loss -> backward -> clip -> step -> (weight average)
# -> log, with validation and atomic checkpoints at intervals. No pickle: model weights go through
# save_pretrained, optimizer and RNG state through safetensors + JSON.

import contextlib  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from vla_demo.ema import WeightAverage  # noqa: E402


def lr_at(step: int, cfg) -> float:
    """Linear warm-up, then cosine decay from ``lr`` to ``min_lr``."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    t = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * min(1.0, t)))


def augment(images: torch.Tensor, shift: int, jitter: float, g: torch.Generator) -> torch.Tensor:
    """Small random shifts (edge-padded) and brightness/contrast jitter, per sample. (B, 3, H, W)."""
    B, _, H, W = images.shape
    out = images
    if shift > 0:
        padded = torch.nn.functional.pad(images, (shift,) * 4, mode="replicate")
        dx = torch.randint(0, 2 * shift + 1, (B,), generator=g)
        dy = torch.randint(0, 2 * shift + 1, (B,), generator=g)
        out = torch.stack([padded[i, :, dy[i]:dy[i] + H, dx[i]:dx[i] + W] for i in range(B)])
    if jitter > 0:
        bright = 1 + (torch.rand(B, 1, 1, 1, generator=g) * 2 - 1) * jitter
        contrast = 1 + (torch.rand(B, 1, 1, 1, generator=g) * 2 - 1) * jitter
        mean = out.mean(dim=(1, 2, 3), keepdim=True)
        out = ((out - mean) * contrast + mean * bright).clamp(0, 1)
    return out


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    batch: dict[str, Any] = {}
    for key in items[0]:
        values = [it[key] for it in items]
        batch[key] = values if isinstance(values[0], str) else torch.stack([torch.as_tensor(v) for v in values])
    return batch


class MixedSampler:
    """Draws batch indices over several datasets: dataset weights times per-frame weights
    (intervention frames up-weighted). Each DDP rank draws its own stream (seeded by rank), which
    is what a distributed sampler does for with-replacement sampling."""

    def __init__(self, views, weights: list[float] | None, intervention_weight: float, seed: int, rank: int = 0,
                 own_action_weight: float = 1.0):
        self.views = views
        self.offsets = np.cumsum([0] + [len(v) for v in views])
        shares = np.asarray(weights if weights is not None else [len(v) for v in views], dtype=np.float64)
        shares = shares / shares.sum()
        parts = []
        for share, view in zip(shares, views, strict=True):
            w = view.sample_weights(intervention_weight, own_action_weight).double()
            parts.append(w / w.sum() * share)
        self.weights = torch.cat(parts)
        self.generator = torch.Generator().manual_seed(seed * 1009 + rank)

    def batch(self, size: int) -> dict[str, Any]:
        idx = torch.multinomial(self.weights, size, replacement=True, generator=self.generator)
        items = []
        for i in idx.tolist():
            d = int(np.searchsorted(self.offsets, i, side="right") - 1)
            items.append(self.views[d][i - self.offsets[d]])
        return collate(items)


def split_episodes(n: int, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Deterministic train/validation split of episode indices (at least one training episode)."""
    order = np.random.default_rng(seed).permutation(n).tolist()
    n_val = min(n - 1, int(round(n * val_fraction))) if n > 1 else 0
    return sorted(order[n_val:]), sorted(order[:n_val])


def keep_family_share(reader, episodes: list[int], fractions: dict[str, float], seed: int) -> list[int]:
    """Keep ``fractions[family]`` of the episodes of each named family (at least one when the share
    is positive); episodes of other families, or with instructions that do not parse, all stay."""
    if not fractions:
        return episodes
    from vla_demo.sim.tasks import parse_instruction

    by_family: dict[str, list[int]] = {}
    for e in episodes:
        parsed = parse_instruction(reader.episode(e)["tasks"][0])
        by_family.setdefault(parsed.goal.family if parsed.ok else "", []).append(e)
    rng = np.random.default_rng(seed)
    kept = []
    for family, eps in by_family.items():
        share = fractions.get(family, 1.0)
        n = len(eps) if share >= 1 else (max(1, round(share * len(eps))) if share > 0 else 0)
        kept += eps if n == len(eps) else rng.choice(eps, n, replace=False).tolist()
    return sorted(kept)


def cap_episodes(train: list[int], val: list[int], cap: int | None, seed: int) -> tuple[list[int], list[int]]:
    """At most ``cap`` of the training episodes (a fixed random subset) and the same share of the
    validation episodes (at least one when there were any)."""
    if cap is None or cap >= len(train):
        return train, val
    rng = np.random.default_rng(seed)
    n_val = min(len(val), max(1, round(len(val) * cap / len(train)))) if val else 0
    pick = lambda eps, n: sorted(rng.choice(eps, n, replace=False).tolist())  # noqa: E731
    return pick(train, cap), pick(val, n_val)


def dataset_stats(views) -> dict[str, Any]:
    """Action and state normalisation stats over all training datasets (goal positions over
    the frames that carry them: none when no dataset has a labelled frame)."""
    from vla_demo.data import stats as st

    parts = [v.stats() for v in views]
    keys = [ACTION] + ([OBS_STATE] if all(OBS_STATE in p for p in parts) else [])
    out = st.aggregate([{k: p[k] for k in keys} for p in parts])
    labelled = [{GOAL_POSITIONS: p[GOAL_POSITIONS]} for p in parts if GOAL_POSITIONS in p]
    goals = st.aggregate(labelled) if labelled else {}
    return {**out, **goals} if goals and goals[GOAL_POSITIONS]["count"][0] > 0 else out


def _distributed() -> tuple[int, int]:
    """(rank, world size); initialises the process group under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        torch.distributed.init_process_group(backend)
    rank = torch.distributed.get_rank() if world > 1 else 0
    return rank, world


def rng_states(sampler: MixedSampler, aug_g: torch.Generator) -> dict[str, torch.Tensor]:
    """This process's random streams: torch's global one, the sampler's and the augmentation's."""
    return {"torch": torch.get_rng_state(), "sampler": sampler.generator.get_state(), "augment": aug_g.get_state()}


def every_rank(states: dict[str, torch.Tensor], world: int) -> list[dict[str, torch.Tensor]]:
    """``states`` of every rank, in rank order (a collective: all ranks must call it together)."""
    if world == 1:
        return [states]
    gathered: list[Any] = [None] * world
    torch.distributed.all_gather_object(gathered, states)
    return gathered


def _rng_key(rank: int, name: str) -> str:
    return f"rng.{name}" if rank == 0 else f"rng.rank{rank}.{name}"  # rank 0 keeps the one-process names


def save_trainer_state(folder: Path, opt, step: int, rngs: list[dict[str, torch.Tensor]], ema=None) -> None:
    """Optimizer moments, every rank's RNG states and the weight average (safetensors) + step and
    hyper-parameters (JSON). ``rngs``: :func:`rng_states` of each rank, in rank order."""
    from safetensors.torch import save_file

    from vla_demo.data import format as fmt

    tensors, scalars = {}, {"step": step, "param_groups": opt.state_dict()["param_groups"], "ranks": len(rngs)}
    for pid, state in opt.state_dict()["state"].items():
        for name, value in state.items():
            tensors[f"state.{pid}.{name}"] = torch.as_tensor(value).clone().contiguous()
    for rank, states in enumerate(rngs):
        tensors.update({_rng_key(rank, name): value for name, value in states.items()})
    if ema is not None:
        tensors.update(ema.tensors())
        scalars["ema"] = ema.scalars()
    fmt.atomic_write(folder / "trainer_state.safetensors", lambda tmp: save_file(tensors, tmp))
    fmt.write_json(folder / "trainer_state.json", scalars)


def load_trainer_state(folder: Path, opt, sampler: MixedSampler, aug_g: torch.Generator, ema=None, rank: int = 0,
                       world: int = 1) -> int:
    """Restore what :func:`save_trainer_state` saved; ``rank`` (of ``world``) takes its own random streams back.

    Raises:
        ValueError: when the checkpoint was written by a different number of processes (their
            random streams cannot be shared out again).
    """
    from safetensors.torch import load_file

    tensors = load_file(str(folder / "trainer_state.safetensors"))
    scalars = json.loads((folder / "trainer_state.json").read_text(encoding="utf-8"))
    if scalars.get("ranks", 1) != world:
        raise ValueError(f"{folder} was written by {scalars.get('ranks', 1)} training processes; resume it with as many "
                         f"(processes={scalars.get('ranks', 1)}), not {world}")
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("state."):
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = value
    opt.load_state_dict({"state": state, "param_groups": scalars["param_groups"]})
    torch.set_rng_state(tensors[_rng_key(rank, "torch")])
    sampler.generator.set_state(tensors[_rng_key(rank, "sampler")])
    aug_g.set_state(tensors[_rng_key(rank, "augment")])
    if ema is not None:
        ema.restore(tensors, scalars.get("ema", {}))
    return int(scalars["step"])


def _make_policy(cfg, views):
    from vla_demo.policy import LanguageConditionedPolicy

    if cfg.init_from:
        policy = LanguageConditionedPolicy.from_pretrained(cfg.init_from)
    else:
        overrides = {**cfg.model_overrides, "chunk_size": cfg.chunk_size}
        policy = LanguageConditionedPolicy.build(cfg.preset, seed=cfg.seed, **overrides)
        policy.model.set_stats(dataset_stats(views))
    if policy.model.config.chunk_size != cfg.chunk_size:
        raise ValueError(f"chunk_size {cfg.chunk_size} differs from the model's {policy.model.config.chunk_size}")
    return policy


def _loss(policy, model, batch, cfg, g) -> tuple[torch.Tensor, dict[str, float]]:
    """The policy's loss through ``model`` (the policy's model or its DDP wrapper), augmented in training."""
    if not model.training:
        return policy.forward(batch, module=model)
    cameras = [k for k in (OBS_IMAGE_FRONT, OBS_IMAGE_WRIST) if k in batch]
    batch = {**batch, **{k: augment(batch[k], cfg.shift_px, cfg.colour_jitter, g) for k in cameras}}
    return policy.forward(batch, module=model, word_drop=cfg.word_drop, generator=g)


def _shipped(ema, model):
    """Within the block ``model`` holds the weights that get validated and saved as the policy."""
    return ema.applied(model) if ema is not None else contextlib.nullcontext(model)


def _validation(policy, views, cfg, ema) -> dict[str, float | None]:
    """The validation loss of the shipped weights (and of the raw ones when they differ)."""
    with _shipped(ema, policy.model):
        metrics = {"val_loss": validate(policy, views, cfg)}
    if ema is not None:
        metrics["val_loss_raw"] = validate(policy, views, cfg)
    policy.model.train()
    return metrics


@torch.no_grad()
def validate(policy, views, cfg, batches: int = 4) -> float | None:
    if not views or not any(len(v) for v in views):
        return None
    policy.model.eval()
    sampler = MixedSampler(views, None, 1.0, seed=cfg.seed + 7)
    losses = [_loss(policy, policy.model, sampler.batch(cfg.batch_size), cfg, None)[0].item() for _ in range(batches)]
    return float(np.mean(losses))


def train(cfg, progress=None, stop=None) -> Path:
    """Train (or fine-tune) a policy; returns the folder of the final checkpoint (``out/policy``).

    Args:
        cfg: a :class:`~vla_demo.config.TrainConfig`.
        progress: ``progress(step, total, metrics)`` called after every logged step.
        stop: a ``threading.Event``-like flag; when set, the run checkpoints and returns early.

    With ``cfg.processes`` > 1 (and not already under ``torchrun``) it starts that many local DDP
    processes (gloo) and returns when they are done; each draws ``batch_size / processes`` samples
    a step, so the step's batch is the same whatever the process count.
    """
    if cfg.processes > 1 and "WORLD_SIZE" not in os.environ:
        return _launch(cfg, progress, stop)
    from tqdm import tqdm

    rank, world = _distributed()
    if cfg.batch_size % world:
        raise ValueError(f"batch_size {cfg.batch_size} does not split evenly over {world} training processes")
    out = Path(cfg.out)
    torch.manual_seed(cfg.seed + rank)
    splits, policy, train_views, val_views = _open_run(cfg, cfg.cache_budget_mb)
    _prefill(train_views, stop, show=rank == 0)
    model = policy.model
    model.train()
    ddp_model = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sampler = MixedSampler(train_views, cfg.weights, cfg.intervention_weight, cfg.seed, rank, cfg.own_action_weight)
    aug_g = torch.Generator().manual_seed(cfg.seed * 31 + rank)
    ema = WeightAverage(model, cfg.ema_decay) if cfg.ema_decay else None
    step = _resume(out / "last", policy, opt, sampler, aug_g, ema, rank, world)
    log_path = out / "log.jsonl"
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        from vla_demo.data import format as fmt

        fmt.write_json(out / "train_config.json", dataclasses_asdict(cfg))
        fmt.write_json(out / "episodes.json", {d: {"train": tr, "val": va} for d, (tr, va) in zip(cfg.datasets, splits, strict=True)})
    t0 = time.time()
    bar = tqdm(total=cfg.steps, initial=step, desc="train", unit="step", disable=rank != 0)
    while step < cfg.steps:
        if stop is not None and stop.is_set():
            break
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg)
        loss, logs = _loss(policy, ddp_model, sampler.batch(cfg.batch_size // world), cfg, aug_g)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        if ema is not None:
            ema.update(model)
        step += 1
        bar.update(1)
        metrics = {**logs, "lr": opt.param_groups[0]["lr"], "grad_norm": float(grad_norm)}
        if step % cfg.val_every == 0 or step == cfg.steps:
            metrics.update(_validation(policy, val_views, cfg, ema))
        rngs = every_rank(rng_states(sampler, aug_g), world) if step % cfg.ckpt_every == 0 else None
        if rank == 0:
            _log(log_path, step, cfg.steps, metrics, time.time() - t0)
            bar.set_postfix(loss=f"{logs['loss']:.4f}")
            if progress is not None:
                progress(step, cfg.steps, metrics)
            if rngs is not None:
                _checkpoint(out / "last", policy, opt, step, rngs, ema)
    bar.close()
    model.eval()
    rngs = every_rank(rng_states(sampler, aug_g), world)
    if rank == 0:
        _checkpoint(out / "last", policy, opt, step, rngs, ema)
        card = model_card(cfg, policy, step, time.time() - t0, log_path)
        with _shipped(ema, model):
            policy.save_pretrained(out / "policy", card=card)
    if world > 1:
        torch.distributed.barrier()
    return out / "policy"


def _open_run(cfg, cache_mb: float):
    """The run's episode splits, its policy (fresh or ``init_from``) and its training and validation
    views; raises the dataset's or checkpoint's own error when one is unusable."""
    from vla_demo.data.reader import DatasetReader
    from vla_demo.data.torch_dataset import TrainingView

    readers = [DatasetReader(d) for d in cfg.datasets]  # shared by the probe, training and validation views
    probe = [TrainingView(r, chunk_size=cfg.chunk_size, cache_budget_mb=1) for r in readers]
    splits = [split_episodes(r.num_episodes, cfg.val_fraction, cfg.seed) for r in readers]
    splits = [cap_episodes(keep_family_share(r, tr, cfg.fractions_for(i), cfg.seed), va, cfg.max_episodes_for(i), cfg.seed)
              for i, (r, (tr, va)) in enumerate(zip(readers, splits, strict=True))]
    policy = _make_policy(cfg, probe)
    mc = policy.model.config
    cams = dict(image_size=mc.image_size, wrist_key=OBS_IMAGE_WRIST if policy.needs_wrist else None, wrist_size=mc.wrist_image_size)
    train_views = [TrainingView(r, cfg.chunk_size, cache_budget_mb=cache_mb, episodes=tr, **cams)
                   for r, (tr, _) in zip(readers, splits, strict=True)]
    val_views = [TrainingView(r, cfg.chunk_size, cache_budget_mb=256, episodes=va, **cams)
                 for r, (_, va) in zip(readers, splits, strict=True) if va]
    return splits, policy, train_views, val_views


def _launch(cfg, progress, stop) -> Path:
    """Run :func:`train` in ``cfg.processes`` local DDP processes, each with its share of the cores."""
    import uuid

    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    if progress is not None or stop is not None:
        raise ValueError("progress and stop callbacks need a run in this process: set processes=1")
    _open_run(cfg, cache_mb=1)  # bad datasets or checkpoints fail here, with their own message, before any process starts
    launch = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=cfg.processes, rdzv_backend="c10d",
                          rdzv_endpoint="localhost:0", run_id=str(uuid.uuid4()), max_restarts=0, monitor_interval=1)
    try:
        return elastic_launch(launch, _rank_main)(cfg)[0]
    except ChildFailedError as exc:
        rank, failure = exc.get_first_failure()
        message = failure.message.get("message", "") if isinstance(failure.message, dict) else str(failure.message)
        raise RuntimeError(f"training process {rank} of {cfg.processes} failed: {message or 'see its output above'}") from None


def _rank_main(cfg) -> Path:
    """One process of a :func:`_launch`: its share of the cores (the launcher leaves threads as they are)."""
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ["LOCAL_WORLD_SIZE"])))
    return train(cfg)


def _prefill(views, stop, show: bool) -> None:
    """Decode the training frames before the first step, on both cores (see ``TrainingView.prefill``)."""
    from tqdm import tqdm

    with tqdm(desc="decode frames", unit="camera", disable=not show, leave=False) as bar:
        def advance(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        for view in views:  # one pass of the bar per dataset
            bar.reset()
            view.prefill(workers=min(2, os.cpu_count() or 1), stop=stop, progress=advance)


def dataclasses_asdict(cfg) -> dict[str, Any]:
    import dataclasses

    return dataclasses.asdict(cfg)


def _log(path: Path, step: int, total: int, metrics: dict[str, Any], elapsed: float) -> None:
    line = {"step": step, "total": total, "time_s": round(elapsed, 2), **{k: v for k, v in metrics.items() if v is not None}}
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(line) + "\n")


def _checkpoint(folder: Path, policy, opt, step: int, rngs, ema) -> None:
    """Raw weights + trainer state (with the weight average) in one folder, replaced atomically
    (save_pretrained renames into place)."""
    policy.save_pretrained(folder, card=f"# training checkpoint at step {step}\n",
                           extra=lambda tmp: save_trainer_state(Path(tmp), opt, step, rngs, ema))


def _resume(folder: Path, policy, opt, sampler, aug_g, ema, rank: int = 0, world: int = 1) -> int:
    if not (folder / "trainer_state.json").exists():
        return 0
    from vla_demo.model.checkpoint import WEIGHTS_NAME, _read_weights, check_state_dict

    state = _read_weights(folder / WEIGHTS_NAME)
    check_state_dict(policy.model, state, folder / WEIGHTS_NAME)
    policy.model.load_state_dict(state)
    return load_trainer_state(folder, opt, sampler, aug_g, ema, rank, world)


def model_card(cfg, policy, steps: int, seconds: float, log_path: Path) -> str:
    last = {}
    if log_path.exists():
        lines = log_path.read_text(encoding="utf-8").strip().splitlines()
        last = json.loads(lines[-1]) if lines else {}
    c = policy.model.config
    return "\n".join([
        f"# vla-demo policy ({c.preset})",
        "",
        f"- command: `{cfg.command or 'train(TrainConfig(...)) from Python'}`",
        f"- data: {', '.join(f'`{d}`' for d in cfg.datasets)}" + (f" (weights {cfg.weights})" if cfg.weights else ""),
        f"- initialised from: `{cfg.init_from}`" if cfg.init_from else "- initialised from scratch",
        f"- seed: {cfg.seed}",
        f"- steps: {steps} x batch {cfg.batch_size}, lr {cfg.lr} (warm-up {cfg.warmup_steps}, cosine), wall time {seconds / 60:.1f} min",
        f"- final training loss {last.get('loss', float('nan')):.4f}" + (f", validation loss {last['val_loss']:.4f}" if "val_loss" in last else ""),
        f"- parameters: {policy.num_parameters():,}; fusion d{c.d_model} x {c.n_layers} layers; chunk {c.chunk_size}; head {c.head}",
        "",
    ])
