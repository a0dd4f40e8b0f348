"""The one benchmark entry point: ``python -m vla_demo bench [--only PREFIX] [--json PATH]``.

Every hot path adds a group here. A group returns rows ``{"name", "value", "unit", "reference",
"ratio"}``: ``reference`` names the row (same unit, same run) this one is compared with and
``ratio = value / reference value``. Timings on shared CPUs are noisy, so every value is a
median over repeats and the ratios, not the absolute numbers, are what to compare across machines.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

Row = dict[str, Any]


def durations_s(fn: Callable[[], Any], repeats: int, warmup: int = 3) -> list[float]:
    """Seconds taken by each of ``repeats`` single calls, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return times


def median_rate_hz(fn: Callable[[], Any], repeats: int, warmup: int = 3) -> float:
    """Calls per second, from the median duration of single calls."""
    return 1.0 / float(np.median(durations_s(fn, repeats, warmup)))


def interleaved_rates_hz(fns: dict[str, Callable[[], Any]], repeats: int, warmup: int = 3) -> dict[str, float]:
    """Calls per second of each function, timed in turns (a, b, c, a, b, c, ...) so that a ratio
    between them is not skewed by the machine speeding up or slowing down between two blocks of runs
    (on a shared 2-core VM the same row moved by 30% between consecutive runs)."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for i in range(warmup + repeats):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            if i >= warmup:
                times[name].append(time.perf_counter() - t)
    return {name: 1.0 / float(np.median(ts)) for name, ts in times.items()}


def make_rows(values: dict[str, tuple[float, str]], reference: str | None) -> list[Row]:
    """Rows for ``{name: (value, unit)}``, each compared with ``reference`` (one of the names)."""
    ref_value = values[reference][0] if reference else None
    rows = []
    for name, (value, unit) in values.items():
        ref = None if name == reference else reference
        ratio = round(value / ref_value, 4) if ref and ref_value else None
        rows.append({"name": name, "value": round(value, 3), "unit": unit, "reference": ref, "ratio": ratio})
    return rows


# ----------------------------------------------------------------------------- groups


def bench_sim(repeats: int = 60) -> list[Row]:
    """Simulator rates at 128 x 128 against the bare front-camera render in the same run."""
    from vla_demo.sim.env import TabletopEnv

    rng = np.random.default_rng(0)

    def actions(env):
        lo, hi = env.action_space.low, env.action_space.high
        return lambda: env.step(rng.uniform(lo, hi) * 0.5)

    values: dict[str, tuple[float, str]] = {}
    env = TabletopEnv()
    env.reset(seed=0, options={"family": "pick", "n_objects": 5})
    values["sim.render_front_hz"] = (median_rate_hz(env.render, repeats), "Hz")
    client = env._client  # the raw physics step is a property of the client, not of the API
    values["sim.physics_step_hz"] = (median_rate_hz(client.stepSimulation, repeats * 20), "Hz")
    values["sim.step_render_front_hz"] = (median_rate_hz(actions(env), repeats), "Hz")
    env.close()
    wrist = TabletopEnv(wrist_camera=True)
    wrist.reset(seed=0, options={"family": "pick", "n_objects": 5})
    values["sim.step_render_front_wrist_hz"] = (median_rate_hz(actions(wrist), repeats), "Hz")
    wrist.close()
    return make_rows(values, reference="sim.render_front_hz")


def latency_ms(fn: Callable[[], Any], repeats: int, warmup: int = 5) -> tuple[float, float]:
    """(p50, p95) of single-call latency in milliseconds."""
    times = np.asarray(durations_s(fn, repeats, warmup)) * 1000
    return float(np.percentile(times, 50)), float(np.percentile(times, 95))


def bench_policy(repeats: int = 100) -> list[Row]:
    """End-to-end ``act()`` latency (preprocessing, tokenisation, forward), batch 1, 2 threads."""
    import torch

    from vla_demo.policy import LanguageConditionedPolicy
    from vla_demo.recipes import DEFAULT_MODEL

    torch.set_num_threads(2)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)
    state = rng.normal(size=7).astype(np.float32)
    text = "pick up the red cube"
    p50: dict[str, tuple[float, str]] = {}
    p95: dict[str, tuple[float, str]] = {}
    for preset in ("default", "reference"):
        policy = LanguageConditionedPolicy.build(preset, **(DEFAULT_MODEL if preset == "default" else {}))
        hand = {"wrist": image} if policy.needs_wrist else {}  # the shipped policy also sees the wrist camera
        variants = {preset: False} if preset == "reference" else {preset: False, f"{preset}_attention": True}
        for name, attention in variants.items():
            lo, hi = latency_ms(lambda p=policy, a=attention, h=hand: p.predict(image, text, state, return_attention=a, **h), repeats)
            p50[f"policy.act_p50_ms.{name}"] = (lo, "ms")
            p95[f"policy.act_p95_ms.{name}"] = (hi, "ms")
    rows = []
    for values, stat in ((p50, "p50"), (p95, "p95")):
        rows += make_rows({k: v for k, v in values.items() if not k.endswith("attention")}, f"policy.act_{stat}_ms.reference")
        att = f"policy.act_{stat}_ms.default_attention"
        rows += make_rows({f"policy.act_{stat}_ms.default": values[f"policy.act_{stat}_ms.default"], att: values[att]},
                          f"policy.act_{stat}_ms.default")[1:]
    return rows


def sim_episode(length: int = 100):
    """A realistic 100-frame episode (scripted-expert frames, which compress like real ones)."""
    from vla_demo.data.collect import CollectJob, run_demo

    episode, _ = run_demo(CollectJob("place", "train", 0, 0.3, (128, 128), False))
    reps = -(-length // len(episode))
    frames = {k: np.concatenate([v] * reps)[:length] for k, v in episode.frames.items()}
    episode.frames, episode.tasks = frames, (episode.tasks * reps)[:length]
    return episode


def bench_dataset(repeats: int = 5, fill: int = 200) -> list[Row]:
    """``save_episode`` of 100 frames into a fresh dataset and one holding ``fill`` episodes
    (the ratio shows whether saving slows down as the dataset grows), and collection throughput."""
    import tempfile

    from vla_demo.data.collect import collect
    from vla_demo.data.format import sim_features
    from vla_demo.data.writer import DatasetWriter

    episode = sim_episode()
    values: dict[str, tuple[float, str]] = {}
    with tempfile.TemporaryDirectory(prefix="vla_bench_") as tmp:
        writer = DatasetWriter.open(Path(tmp) / "ds", sim_features(goals=True), fps=10)  # as collect writes
        save = lambda: writer.save_episode(episode)  # noqa: E731
        values["dataset.save_episode_100_ms.at_1"] = (float(np.median(durations_s(save, repeats, 0))) * 1000, "ms")
        while writer.num_episodes < fill:
            save()
        values[f"dataset.save_episode_100_ms.at_{fill}"] = (float(np.median(durations_s(save, repeats, 0))) * 1000, "ms")
        writer.close()
        summary = collect(Path(tmp) / "collect", episodes=max(4, 2 * repeats), progress=False)
    rows = make_rows(values, "dataset.save_episode_100_ms.at_1")
    rows.append({"name": "dataset.collect_frames_per_s", "value": summary["frames_per_s"], "unit": "frames/s",
                 "reference": None, "ratio": None})
    return rows


def bench_train(repeats: int = 10, batch: int = 32) -> list[Row]:
    """Training throughput of both presets on one batch shape (forward, backward, AdamW step),
    and the wall time of the app's fine-tune recipe on 10 freshly collected episodes."""
    import tempfile

    import torch

    from vla_demo.data.collect import collect
    from vla_demo.policy import LanguageConditionedPolicy
    from vla_demo.recipes import DEFAULT_MODEL, DEMO_WRIST, FINETUNE_STEPS, default_demos, fine_tune

    torch.set_num_threads(2)
    g = torch.Generator().manual_seed(0)
    values: dict[str, tuple[float, str]] = {}
    for preset in ("default", "reference"):
        policy = LanguageConditionedPolicy.build(preset, **(DEFAULT_MODEL if preset == "default" else {}))
        step = training_step(policy, batch, g, goals=True)  # the default recipe's data labels goals
        values[f"train.samples_per_s.{preset}"] = (batch / float(np.median(durations_s(step, repeats, 2))), "samples/s")
    rows = make_rows(values, "train.samples_per_s.reference")
    two = {"train.samples_per_s.default": values["train.samples_per_s.default"],  # its reference: one process
           "train.samples_per_s.default_2proc": (two_process_samples_per_s(DEFAULT_MODEL, batch, repeats), "samples/s")}
    rows += make_rows(two, "train.samples_per_s.default")[1:]
    with tempfile.TemporaryDirectory(prefix="vla_bench_") as tmp:
        LanguageConditionedPolicy.build("default", **DEFAULT_MODEL).save_pretrained(Path(tmp) / "base")
        collect(Path(tmp) / "new", episodes=10, wrist=DEMO_WRIST, progress=False)
        demos = default_demos()
        replay = [demos] if (demos / "meta" / "info.json").exists() else []
        t = time.perf_counter()
        fine_tune(Path(tmp) / "base", [Path(tmp) / "new"], replay, Path(tmp) / "run", steps=FINETUNE_STEPS if repeats >= 10 else 5)
        seconds = time.perf_counter() - t
    rows.append({"name": "train.finetune_10_episodes_s", "value": round(seconds, 2), "unit": "s", "reference": None, "ratio": None})
    return rows


def two_process_samples_per_s(overrides: dict[str, Any], batch: int, repeats: int) -> float:
    """Samples per second of the default step split over two one-thread DDP processes (gloo), as
    ``TrainConfig.processes=2`` trains: each rank steps on half the batch and the gradients are averaged."""
    import multiprocessing as mp

    from vla_demo.workers import free_port

    ctx = mp.get_context("spawn")
    results = ctx.SimpleQueue()
    args = (free_port(), os.getpid(), overrides, batch // 2, repeats, results)
    procs = [ctx.Process(target=_ddp_steps, args=(rank, *args)) for rank in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=900)
        if p.is_alive():  # its peer died before the rendezvous: do not wait for ever
            p.kill()
    medians = [results.get() if not results.empty() else "no result" for _ in procs]
    if any(isinstance(m, str) for m in medians):
        raise RuntimeError(f"a DDP bench process failed: {medians}")
    return batch / max(medians)


def _ddp_steps(rank: int, port: int, parent: int, overrides: dict[str, Any], batch: int, repeats: int, results) -> None:
    """One rank of :func:`two_process_samples_per_s`: puts its median step time (s) on ``results``."""
    try:
        import datetime

        import torch

        from vla_demo.policy import LanguageConditionedPolicy
        from vla_demo.workers import exit_with_parent

        exit_with_parent(parent)  # a killed bench leaves no rank behind

        torch.set_num_threads(1)
        torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2,
                                             timeout=datetime.timedelta(minutes=2))
        policy = LanguageConditionedPolicy.build("default", **overrides)
        ddp = torch.nn.parallel.DistributedDataParallel(policy.model.train())
        step = training_step(policy, batch, torch.Generator().manual_seed(rank), goals=True, module=ddp)
        results.put(float(np.median(durations_s(step, repeats, 2))))
        torch.distributed.destroy_process_group()
    except Exception as exc:  # reported to the parent, which raises
        results.put(f"rank {rank}: {exc!r}")


def training_step(policy, batch: int, g, goals: bool = False, module=None) -> Callable[[], None]:
    """One training step (forward, backward, AdamW) of ``policy`` on a fixed random batch of size
    ``batch`` drawn from generator ``g``: each camera at its own size, goal labels when ``goals``,
    object labels when the model has an object head. ``module``: what runs the model (a DDP wrapper)."""
    import torch

    from vla_demo.constants import ACTION, GOAL_POSITIONS, OBJECT_LABELS, OBS_IMAGE_FRONT, OBS_IMAGE_WRIST, OBS_STATE, TASK

    m = policy.model.train()
    c = m.config
    b = {OBS_IMAGE_FRONT: torch.rand(batch, 3, c.image_size, c.image_size, generator=g), TASK: ["pick up the red cube"] * batch,
         OBS_STATE: torch.randn(batch, 7, generator=g), ACTION: torch.randn(batch, c.chunk_size, 7, generator=g) * 0.01}
    if policy.needs_wrist:
        b[OBS_IMAGE_WRIST] = torch.rand(batch, 3, c.wrist_image_size, c.wrist_image_size, generator=g)
    if goals:
        b[GOAL_POSITIONS] = torch.randn(batch, 6, generator=g)
    if c.object_head:
        b[OBJECT_LABELS] = random_object_labels(batch, g)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-4)

    def step() -> None:
        loss, _ = policy.forward(b, module=module)
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step


def random_object_labels(batch: int, g):
    """(batch, MAX_OBJECTS * 7) object-head labels: three objects in view of both cameras, two slots empty."""
    import torch

    from vla_demo.constants import COLOURS, MAX_OBJECTS, OBJECT_LABEL_FIELDS, SHAPES

    rows = torch.full((batch, MAX_OBJECTS, len(OBJECT_LABEL_FIELDS)), -1.0)
    rows[:, :3, 0] = torch.randint(0, len(COLOURS), (batch, 3), generator=g).float()
    rows[:, :3, 1] = torch.randint(0, len(SHAPES), (batch, 3), generator=g).float()
    rows[:, :3, 2:6] = torch.rand(batch, 3, 4, generator=g) * 1.6 - 0.8  # image positions in [-0.8, 0.8]
    rows[:, :3, 6] = 1.0
    return rows.view(batch, -1)


def bench_app(repeats: int = 60, sessions: int = 4) -> list[Row]:
    """Unthrottled live-loop rate (sim step + render + policy + overlays + the JPEG file the page
    fetches) of one session, timed in turns with the bare front render and with the sim's own control
    step, and the rate of each of ``sessions`` sessions stepping at once."""
    import tempfile
    import threading

    from vla_demo.policy import LanguageConditionedPolicy
    from vla_demo.sim.env import TabletopEnv
    from vla_demo.recipes import DEFAULT_MODEL
    from vla_demo.ui.app import make_context
    from vla_demo.ui.frames import FrameFiles, stream_folder

    env = TabletopEnv()
    env.reset(seed=0, options={"family": "pick", "n_objects": 5})
    with tempfile.TemporaryDirectory(prefix="vla_bench_") as tmp:
        # The shipped architecture, untrained: the same compute as the default policy.
        LanguageConditionedPolicy.build("default", **DEFAULT_MODEL).save_pretrained(Path(tmp) / "policy")
        ctx = make_context(str(Path(tmp) / "policy"), Path(tmp) / "data", jobs=False)

        def live_loop(key: str):
            """One step of a session's live loop (no in-between frames), and the stream's files."""
            s = ctx.session(key)
            s.render_substeps = 0
            s.reset(seed=0, family="pick")
            s.run()
            files = FrameFiles(stream_folder(tmp))  # the JPEG file the page fetches, as the app writes it

            def one():
                if s.advance() is None:  # episode over: start another
                    s.reset(family="pick")
                    s.run()
                files.publish(s.compose(s._obs["observation.images.front"]))

            return one, files

        one, files = live_loop("bench-0")
        # The loop's own ceiling is a control step (physics) and its render, nothing else.
        rates = interleaved_rates_hz({"sim.render_front_hz": env.render, "app.sim_step_render_hz":
                                      lambda: env.step(np.zeros(7, np.float32)), "app.loop_capacity_hz": one}, repeats)
        files.close()
        values = {name: (hz, "Hz") for name, hz in rates.items()}

        def loop_rates(key: str, out: list) -> None:
            step, stream_files = live_loop(key)
            out.append(median_rate_hz(step, repeats))
            stream_files.close()

        many: list[float] = []
        threads = [threading.Thread(target=loop_rates, args=(f"bench-{i + 1}", many)) for i in range(sessions)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        values[f"app.loop_hz_{sessions}_sessions"] = (min(many), "Hz")
        values["app.loop_share_of_sim_step"] = (rates["app.loop_capacity_hz"] / rates["app.sim_step_render_hz"], "ratio")
        ctx.close()
    env.close()
    rows = [r for r in make_rows(values, "sim.render_front_hz") if r["name"].startswith("app.")]
    for r in rows:
        if r["unit"] == "ratio":  # already a ratio (to the sim's own step): no second one
            r["reference"], r["ratio"] = "app.sim_step_render_hz", r["value"]
    return rows


def bench_serve(repeats: int = 60) -> list[Row]:
    """``POST /act`` round trip to a policy server on loopback (json-numpy 128 px image, HTTP,
    parsing, forward pass) against the same policy's local ``act`` in the same run. The local call
    is timed in a worker thread, where the server runs its forward passes too (on a loaded 2-core
    machine torch's main thread was 3x slower than a worker thread for the same call)."""
    import threading

    import httpx
    import torch
    import uvicorn

    from vla_demo import jsonnumpy
    from vla_demo.policy import LanguageConditionedPolicy
    from vla_demo.serve import ServeConfig, create_app

    torch.set_num_threads(2)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)
    state = rng.normal(size=7).astype(np.float32) * 0.1
    text = "pick up the red cube"
    policy = LanguageConditionedPolicy.build("default")
    local: list[float] = []
    timer = threading.Thread(target=lambda: local.append(latency_ms(lambda: policy.act(image, text, state), repeats)[0]))
    timer.start()
    timer.join()
    values = {"serve.local_act_ms": (local[0], "ms")}
    server = uvicorn.Server(uvicorn.Config(create_app(policy, ServeConfig(port=0)), host="127.0.0.1", port=0,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while not server.started and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        if not server.started:
            raise RuntimeError("the policy server did not start")
        port = server.servers[0].sockets[0].getsockname()[1]
        body = jsonnumpy.dumps({"image": image, "instruction": text, "state": state}).encode()
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            def roundtrip():
                client.post("/act", content=body).raise_for_status()

            values["serve.act_roundtrip_ms"] = (latency_ms(roundtrip, repeats)[0], "ms")
    finally:
        server.should_exit = True
        thread.join(timeout=30)
    return make_rows(values, "serve.local_act_ms")


GROUPS: dict[str, Callable[..., list[Row]]] = {"sim.": bench_sim, "policy.": bench_policy, "dataset.": bench_dataset,
                                               "train.": bench_train, "app.": bench_app, "serve.": bench_serve}


def run(only: str | None = None, repeats: int | None = None) -> list[Row]:
    """Run every group whose prefix overlaps ``only`` and keep the rows that start with it.

    ``repeats`` overrides each group's default number of timed calls (tests use a handful).
    """
    rows: list[Row] = []
    for prefix, fn in GROUPS.items():
        if only and not (prefix.startswith(only) or only.startswith(prefix)):
            continue
        rows += fn() if repeats is None else fn(repeats=repeats)
    if only:
        rows = [r for r in rows if r["name"].startswith(only)]
    if not rows:
        raise ValueError(f"no benchmark rows match {only!r}; prefixes are {list(GROUPS)}")
    return rows


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, {platform.system()}"


def format_table(rows: list[Row]) -> str:
    width = max(len(r["name"]) for r in rows)
    lines = [f"{'name':<{width}}  {'value':>10}  unit  {'ratio':>7}  reference"]
    for r in rows:
        ratio = f"{r['ratio']:.3f}" if r["ratio"] is not None else "-"
        lines.append(f"{r['name']:<{width}}  {r['value']:>10.2f}  {r['unit']:<4}  {ratio:>7}  {r['reference'] or '-'}")
    return "\n".join(lines)


def main(only: str | None = None, json_path: str | None = None) -> list[Row]:
    rows = run(only)
    print(f"# {machine()}")
    print(format_table(rows))
    if json_path:
        path = Path(json_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    return rows
