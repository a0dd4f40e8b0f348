"""Background jobs: child processes, progress, queueing, cancel, crash isolation, registration."""

from __future__ import annotations

import json
import os
import time

import pytest

from vla_demo.ui.jobs import JobManager, decimate
from vla_demo.ui.registry import PolicyRegistry


@pytest.fixture
def manager(tmp_path, assets):
    base, tiny = assets
    (tmp_path / "datasets").mkdir()
    os.symlink(tiny, tmp_path / "datasets" / "tiny")
    broken = tmp_path / "datasets" / "broken" / "meta"
    broken.mkdir(parents=True)
    (broken / "info.json").write_text("{ this is not json")
    registry = PolicyRegistry(tmp_path, str(base))
    jobs = JobManager(tmp_path, registry, eval_episodes=0, poll_s=0.1, cancel_grace_s=60)
    yield jobs
    jobs.close(timeout=30)


def wait_for(jobs, job_id, states, timeout=240.0, seen=None):
    """Poll the job's status until its state is one of ``states`` (fails after ``timeout``)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        st = jobs.status(job_id)
        if seen is not None:
            seen.append(st)
            assert sum(j["state"] == "running" for j in jobs.jobs()) <= 1
        if st["state"] in states:
            return st
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} still {jobs.status(job_id)} after {timeout} s")


def test_bad_requests_get_clear_messages(manager):
    with pytest.raises(ValueError, match="no dataset named"):
        manager.submit_finetune(["../../etc"], steps=5)
    with pytest.raises(ValueError, match="at least one dataset"):
        manager.submit_finetune([], steps=5)
    with pytest.raises(ValueError, match="steps must be between"):
        manager.submit_finetune(["tiny"], steps=0)
    with pytest.raises(ValueError, match="unknown policy version"):
        manager.submit_finetune(["tiny"], steps=5, base="v9")
    with pytest.raises(ValueError, match="unknown split"):
        manager.submit_eval("default", split="nope")
    with pytest.raises(ValueError, match="unknown job"):
        manager.status("ft-nope")
    assert manager.dataset_names() == ["broken", "tiny"] and manager.jobs() == []
    assert decimate(list(range(10)), 4) == [0, 3, 6, 9] and decimate([1, 2], 5) == [1, 2]
    assert len(decimate(list(range(1001)), 100)) <= 102


@pytest.mark.slow
def test_finetune_job_runs_in_a_child_evaluates_registers_and_hot_swaps(manager):
    job = manager.submit_finetune(["tiny"], steps=6, batch_size=8, eval_episodes=1)
    seen = []
    st = wait_for(manager, job, {"done", "failed", "cancelled"}, seen=seen)
    assert st["state"] == "done", st["message"]
    phases = {s["phase"] for s in seen}
    assert {"train"} <= phases and st["total"] > 0
    assert [s for s, _ in st["loss"]] == list(range(1, 7))
    res = st["result"]
    assert res["pid"] != os.getpid() and res["families"] == ["reach"]
    assert res["version"] == "v1" and res["activated"] and manager.registry.active == "v1"
    row = manager.registry.info("v1")
    assert row["parent"] == "default" and row["source"] == job
    assert row["metrics"]["before"] is not None and row["metrics"]["after"] is not None
    assert "registered and activated v1" in st["message"]


@pytest.mark.slow
def test_queue_cancel_crash_and_the_manager_keeps_working(manager):
    long = manager.submit_finetune(["tiny"], steps=50_000, batch_size=4)
    crash = manager.submit_finetune(["broken"], steps=5)
    evaluation = manager.submit_eval("default", families=["reach"], episodes_per_family=1, baselines=False)
    seen = []
    deadline = time.time() + 120
    while manager.status(long)["step"] < 2:
        assert time.time() < deadline, manager.status(long)
        assert manager.status(crash)["state"] == "queued" and "ahead" in manager.status(crash)["message"]
        time.sleep(0.2)
    assert manager.cancel(long)
    st = wait_for(manager, long, {"done", "failed", "cancelled"}, seen=seen)
    assert st["state"] == "cancelled" and "checkpoint stays" in st["message"]
    assert manager.registry.names() == ["expert", "default"]  # a cancelled run is not registered
    st = wait_for(manager, crash, {"done", "failed", "cancelled"}, seen=seen)
    assert st["state"] == "failed" and "info.json" in st["message"]
    st = wait_for(manager, evaluation, {"done", "failed", "cancelled"}, seen=seen)
    assert st["state"] == "done", st["message"]
    report = st["result"]
    assert report["families"]["reach"]["episodes"] == 1 and "| reach |" in report["table_markdown"]
    assert all(os.path.isfile(p) for p in report["failure_clips"])
    assert [j["id"] for j in manager.jobs()] == [long, crash, evaluation]
    # A restarted app lists the earlier run's jobs; one it left running shows as interrupted.
    status = json.loads((manager.runs / evaluation / "status.json").read_text())
    ghost = "eval-20200101-000000-beef"
    (manager.runs / ghost).mkdir()
    (manager.runs / ghost / "spec.json").write_text(json.dumps({"id": ghost}))
    (manager.runs / ghost / "status.json").write_text(json.dumps({**status, "id": ghost, "state": "running", "created": 1.0}))
    (manager.runs / "eval-not-a-job-id").mkdir()
    later = JobManager(manager.data_root, manager.registry, eval_episodes=0)
    try:
        listed = {j["id"]: j for j in later.jobs()}
        assert set(listed) == {long, crash, evaluation, ghost}
        assert [listed[j]["state"] for j in (long, crash, evaluation)] == ["cancelled", "failed", "done"]
        assert listed[ghost]["state"] == "interrupted" and "app stopped" in listed[ghost]["message"]
        assert later.status(evaluation)["result"]["families"]["reach"]["episodes"] == 1
    finally:
        later.close(timeout=5)


@pytest.mark.slow
def test_ab_replay_renders_both_versions_on_one_seed(tmp_path, assets):
    import threading

    from vla_demo.ui.jobs import ProgressWriter, run_replay

    base, _ = assets
    spec = {"versions": ["default", "expert"], "policies": [str(base), "expert"], "family": "reach",
            "split": "train", "seed": 3, "size": 64}
    res = run_replay(spec, tmp_path, ProgressWriter(tmp_path / "progress.jsonl"), threading.Event())
    assert os.path.getsize(res["clip"]) > 0 and res["family"] == "reach" and res["instruction"]
    a, b = res["sides"]
    assert (a["version"], b["version"]) == ("default", "expert") and b["success"]
    assert "replay B" in (tmp_path / "progress.jsonl").read_text()


def test_ab_replay_of_a_wrist_camera_version_against_the_expert(tmp_path):
    import threading

    from vla_demo.policy import LanguageConditionedPolicy
    from vla_demo.ui.jobs import ProgressWriter, run_replay

    wrist = LanguageConditionedPolicy.build("default", image_size=32, d_model=32, n_heads=2, n_layers=1, head_hidden=32,
                                            wrist=True).save_pretrained(tmp_path / "wrist")
    spec = {"versions": ["v1", "expert"], "policies": [str(wrist), "expert"], "family": "reach",
            "split": "train", "seed": 3, "size": 48}
    res = run_replay(spec, tmp_path, ProgressWriter(tmp_path / "progress.jsonl"), threading.Event())
    a, b = res["sides"]
    assert a["steps"] > 0 and b["success"] and os.path.getsize(res["clip"]) > 0
