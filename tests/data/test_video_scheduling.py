"""Encoding an episode video leaves the calling thread's scheduling alone (SVT-AV1 run as root
switched it to real-time SCHED_FIFO 99, which every later thread and child process inherited)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CHECK = """
import json, os, sys, threading
import numpy as np
from vla_demo.data.video import default_codec, encode
policy = lambda: [os.sched_getscheduler(0), os.sched_getparam(0).sched_priority]
before = policy()
encode(sys.argv[1], np.zeros((4, 32, 32, 3), np.uint8), 10)
seen = {}
t = threading.Thread(target=lambda: seen.update(thread=policy()))
t.start(); t.join()
print(json.dumps({"codec": default_codec(), "before": before, "after": policy(), "thread": seen["thread"]}))
"""


@pytest.mark.skipif(not hasattr(os, "sched_getscheduler"), reason="no sched_* calls on this platform")
def test_encode_keeps_the_callers_scheduling_policy(tmp_path):
    # In a child process: if the policy did leak, only that short-lived process is real-time.
    done = subprocess.run([sys.executable, "-c", CHECK, str(tmp_path / "v.mp4")], cwd=REPO, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["after"] == seen["before"] and seen["thread"] == seen["before"], seen
