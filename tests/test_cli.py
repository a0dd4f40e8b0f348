"""``python -m vla_demo`` verbs, run in-process and (once) as a real subprocess."""

from __future__ import annotations

import json
import subprocess
import sys

import av
import numpy as np
import pytest

from vla_demo.__main__ import main
from vla_demo.media import write_image, write_video


def decoded_frames(path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def test_sim_writes_a_png_strip(tmp_path, capsys):
    out = tmp_path / "still.png"
    assert main(["sim", "--family", "reach", "--seed", "1", "--size", "64", "--out", str(out)]) == 0
    import cv2

    img = cv2.imread(str(out))
    assert img is not None and img.shape[1] == 5 * 64 and img.shape[0] > 64
    assert "success=True" in capsys.readouterr().out


@pytest.mark.slow
def test_sim_writes_a_video_with_every_frame(tmp_path, capsys):
    out = tmp_path / "ep.mp4"
    assert main(["sim", "--family", "pick", "--seed", "0", "--size", "64", "--substeps", "1", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    steps = int(text.split("after ")[1].split(" steps")[0])
    assert len(decoded_frames(out)) == 1 + 2 * steps  # first frame, then (1 in-between + 1) per step


def test_sim_rejects_bad_output_and_instruction(tmp_path, capsys):
    assert main(["sim", "--out", str(tmp_path / "x.gif")]) == 2
    assert "must end in .mp4 or .png" in capsys.readouterr().err
    assert main(["sim", "--instruction", "héllo", "--size", "32", "--out", str(tmp_path / "x.png")]) == 2
    assert "printable ASCII" in capsys.readouterr().err


def test_sim_with_an_unparseable_instruction_still_renders(tmp_path, capsys):
    assert main(["sim", "--instruction", "dance", "--size", "32", "--out", str(tmp_path / "x.png")]) == 0
    assert "success=None" in capsys.readouterr().out


@pytest.mark.slow
def test_eval_cli_writes_the_json(tmp_path):
    path = tmp_path / "eval.json"
    cmd = [sys.executable, "-m", "vla_demo", "eval", "--policy", "expert", "--episodes-per-family", "1",
           "--families", "reach", "--seed", "2", "--workers", "2", "--json", str(path)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads(path.read_text())
    assert report["policy"] == "expert" and report["families"]["reach"]["episodes"] == 1
    assert "| reach | 1 |" in done.stdout
    assert "argv[0]" not in done.stdout and "build time" not in done.stderr  # pybullet kept quiet


def test_eval_cli_rejects_unknown_policy(capsys):
    assert main(["eval", "--policy", "nonsense", "--episodes-per-family", "1", "--workers", "1", "--no-baselines"]) == 2
    assert "unknown policy" in capsys.readouterr().err


def test_media_round_trip(tmp_path):
    frames = [np.full((15, 21, 3), i * 20, np.uint8) for i in range(6)]  # odd sizes are padded
    got = decoded_frames(write_video(tmp_path / "v.mp4", frames, fps=10))
    assert len(got) == 6 and got[0].shape == (16, 22, 3)
    assert abs(int(got[3].mean()) - 60) < 4
    with pytest.raises(ValueError, match="uint8"):
        write_image(tmp_path / "bad.png", np.zeros((4, 4), np.float32))
    with pytest.raises(ValueError, match="no frames"):
        write_video(tmp_path / "empty.mp4", [], fps=10)
    assert not list(tmp_path.glob(".*"))  # no temp files left behind


def test_serve_verb_refuses_bad_setups_with_a_message(tiny_policy_dir, capsys, monkeypatch):
    monkeypatch.delenv("VLA_DEMO_SERVE_TOKEN", raising=False)
    assert main(["serve", "--policy", "expert"]) == 2
    assert "expert" in capsys.readouterr().err
    assert main(["serve", "--policy", str(tiny_policy_dir), "--host", "0.0.0.0"]) == 2
    assert "token" in capsys.readouterr().err


@pytest.mark.slow
def test_eval_card_appends_the_table_to_the_model_card(tiny_policy_dir, tmp_path, capsys):
    import shutil

    policy = tmp_path / "policy"
    shutil.copytree(tiny_policy_dir, policy)
    before = (policy / "README.md").read_text(encoding="utf-8")
    assert main(["eval", "--policy", str(policy), "--families", "reach", "--episodes-per-family", "1",
                 "--no-baselines", "--workers", "1", "--card"]) == 0
    card = (policy / "README.md").read_text(encoding="utf-8")
    assert card.startswith(before.rstrip("\n")) and "## Evaluation: split `train`" in card and "| reach | 1 |" in card
    assert f"`python -m vla_demo eval --policy {policy} --families reach --episodes-per-family 1" in card  # as typed
    assert main(["eval", "--policy", "expert", "--card", "--episodes-per-family", "1"]) == 2
    assert "model card" in capsys.readouterr().err


def test_loadtest_verb_is_wired_and_refuses_out_of_range_flags(capsys):
    with pytest.raises(SystemExit):
        main(["loadtest", "--sessions", "0", "--minutes", "1"])
    assert "sessions" in capsys.readouterr().err
