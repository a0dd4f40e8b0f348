"""Bad inputs across the app and the CLI: each gets a clear message or a documented safe handling,
the session (or the CLI) keeps working afterwards, and nothing saved is lost.

``CASES`` below is the suite as one table: one row per bad input, with what the user gets. The
README's table is generated from it: ``python -m tests.test_bad_inputs`` prints it as markdown.

Three ways in:

- ``ui``: a ``gradio_client`` call of a public endpoint against the real app on loopback (one
  client = one operator session, with its live stream running);
- ``page``: the page's own handler of an event ``gradio_client`` cannot send (the webcam stream,
  the private held-key event), called in-process with that client's session;
- ``cli``: ``python -m vla_demo`` run in-process (``main([...])``; exit code 2 and ``error: ...``).

After every ``ui``/``page`` case the same session must reset and take a control step in its live
stream, and no background job may have been queued; after every ``cli`` case ``dataset check``
must pass on the CLI's dataset. Cases marked ``data`` also check that the app's recorded dataset
still holds its two episodes and passes every format invariant.
"""

from __future__ import annotations

import contextlib
import gc
import io
import json
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import numpy as np
import pytest

from tests.serving import serve, wait_for

DATASET = "keep"  # the app's recorded dataset (2 episodes)
GOOD = "pick up the red cube"
HUGE = "pick up the red cube " * 5000  # 100,000 characters


@dataclass(frozen=True)
class Case:
    """One bad input: ``run(world)`` sends it and returns what the user sees as text; ``expect`` is a
    regex that text must match."""

    id: str
    input: str
    where: str
    user_gets: str
    kind: str  # ui | page | cli
    run: Callable[[Any], str]
    expect: str
    data: bool = False


# ----------------------------------------------------------------------------- runners (ui)


def text_of(result: Any) -> str:
    """The user-visible text of an endpoint's result (every string output, joined)."""
    parts = result if isinstance(result, (tuple, list)) else [result]
    return " | ".join(p for p in parts if isinstance(p, str))


def say(api: str, *args) -> Callable[[Any], str]:
    """Call endpoint ``api``; Gradio's own refusals come back as ``gradio: <message>``."""
    return lambda w: w.call(api, *args)


def instruction(text: str) -> Callable[[Any], str]:
    """Send ``text`` after a good instruction; report the reply and the instruction now in force."""
    def run(w):
        assert GOOD in w.call("/set_instruction", GOOD)
        return f"{w.call('/set_instruction', text)} || task={w.session._obs['task']}"
    return run


def reset_with(text: str) -> Callable[[Any], str]:
    """Reset with an instruction typed in; report the reply and whether the old episode survived."""
    def run(w):
        w.call("/reset", 7, "reach", 3, "")
        before = w.session.env.instruction
        msg = w.call("/reset", 8, "pick", 3, text)
        return f"{msg} || same scene={w.session.env.instruction == before}"
    return run


def save_as(name: str) -> Callable[[Any], str]:
    """Record two steps into ``keep``, then save under ``name``; report what is still buffered."""
    def run(w):
        assert "recording into" in w.call("/record_toggle", True, DATASET, "op")
        w.steps(2)
        msg = w.call("/record_save", "success", name, "op")
        state = f"buffered={w.session.unsaved_frames()} recording={w.session.recording.on}"
        w.call("/record_toggle", False, DATASET, "op")
        return f"{msg} || {state}"
    return run


def record_into(name: str) -> Callable[[Any], str]:
    """Switch recording on into ``name`` (then off again)."""
    def run(w):
        msg = w.call("/record_toggle", True, name, "op")
        w.call("/record_toggle", False, DATASET, "op")
        return msg
    return run


def delete_twice(w) -> str:
    first = w.call("/episode_delete", DATASET, 1)
    assert "deleted episode 1" in first
    second = w.call("/episode_delete", DATASET, 1)
    assert "restored" in w.call("/episode_undo", DATASET)
    return second


def finetune_unknown_base(w) -> str:
    w.call("/finetune_refresh")  # the dataset picker learns about 'keep'
    return w.call("/finetune_start", [DATASET], 10, "v999", 0)


def activate_corrupt(w) -> str:
    from vla_demo.model.checkpoint import WEIGHTS_NAME

    name = w.ctx.registry.add_version(w.policy_dir, "default", {}, "test")
    (w.ctx.registry.root / name / WEIGHTS_NAME).write_bytes(b"not safetensors")
    return f"{w.call('/policy_activate', name)} || active={w.ctx.registry.active}"


def probe_file(write: Callable[[Path], None], *texts: str) -> Callable[[Any], str]:
    """Upload a file made by ``write`` to the probe with ``texts`` (padded to four boxes)."""
    def run(w):
        from gradio_client import handle_file

        path = w.tmp / f"probe-{len(list(w.tmp.iterdir()))}.png"
        write(path)
        out = w.client.predict(handle_file(str(path)), *(list(texts) + [""] * 4)[:4], api_name="/probe")
        return f"{len(out[0])} shown | {out[2]}"
    return lambda w: w.guard(lambda: run(w))


def png(array: np.ndarray) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        from PIL import Image

        Image.fromarray(array).save(path)
    return write


def raw(data: bytes) -> Callable[[Path], None]:
    return lambda path: path.write_bytes(data)


# ----------------------------------------------------------------------------- runners (page)


def webcam(image: Any, text: str = GOOD) -> Callable[[Any], str]:
    def run(w):
        shown, note = w.handler("webcam_frame")(image, text, w.request)
        return f"frame={'yes' if shown is not None else 'no'} | {note}"
    return run


def probe_array(image: Any) -> Callable[[Any], str]:
    def run(w):
        gallery, _, note = w.handler("probe")(image, GOOD, "", "", "", w.request)
        return f"{len(gallery)} shown | {note}"
    return run


def keys(value: str) -> Callable[[Any], str]:
    """The hidden held-keys box's value, as teleop.js would send it; report the keys held."""
    def run(w):
        w.call("/set_mode", "teleop")
        w.handler("keys")(value, w.request)
        held = sorted(w.session.teleop.keys)
        action = w.session.teleop.action(w.session.env.config.action.max_translation)
        w.handler("keys")("[]", w.request)
        w.call("/set_mode", "policy")
        return f"held={len(held)} finite={bool(np.all(np.isfinite(action)))}"
    return run


def gamepad(*axes: float) -> Callable[[Any], str]:
    """Gamepad axes straight into the session (the page maps the pad to held keys)."""
    def run(w):
        w.call("/set_mode", "teleop")
        w.session.set_gamepad(*axes, True)
        action = w.session.teleop.action(w.session.env.config.action.max_translation)
        limit = w.session.env.config.action.max_translation
        t = w.session._t
        w.call("/step")
        stepped = wait_for(lambda: w.session._t == t + 1, timeout=30)
        w.session.set_gamepad(0, 0, 0, False)
        w.call("/set_mode", "policy")
        ok = bool(np.all(np.isfinite(action)) and np.all(np.abs(action[:3]) <= limit + 1e-9))
        return f"action finite and within limits={ok} stepped={stepped}"
    return run


# ----------------------------------------------------------------------------- runners (cli)


def cli(*argv: str) -> Callable[[Any], str]:
    """``main(argv)`` with ``{ds}``, ``{pol}`` and ``{tmp}`` filled in; returns ``rc=N`` and stderr."""
    def run(w):
        from vla_demo.__main__ import main

        args = [a.format(ds=w.ds, pol=w.policy_dir, tmp=w.tmp) for a in argv]
        err, ignored = io.StringIO(), []
        hook, sys.unraisablehook = sys.unraisablehook, lambda u: ignored.append(f"Exception ignored: {u.exc_value!r}")
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                try:
                    rc = main(args)
                except SystemExit as e:  # argparse
                    rc = e.code
            gc.collect()  # half-built objects go now, so errors in their __del__ show up here
        finally:
            sys.unraisablehook = hook
        return "\n".join([f"rc={rc}", err.getvalue(), *ignored])
    return run


def cli_on(corrupt: str, *argv: str) -> Callable[[Any], str]:
    """Like :func:`cli` with ``{bad}`` = a copy of a good dataset or checkpoint spoilt by ``corrupt``."""
    def run(w):
        bad = w.corrupt(corrupt)
        return cli(*[a.replace("{bad}", str(bad)) for a in argv])(w)
    return run


def refused(pattern: str) -> str:
    """CLI: exit code 2 and an ``error: ...`` line matching ``pattern`` (the test also rules out tracebacks)."""
    return rf"^rc=2\n.*error: [^\n]*{pattern}"


# ----------------------------------------------------------------------------- the table

LONG_NAME = "d" * 200
CLI_EVAL = ("--episodes-per-family", "1", "--families", "reach", "--workers", "1", "--no-baselines")
CASES: list[Case] = [
    # --- instructions (Live tab)
    Case("instruction-empty", '`""`', "Live: instruction",
         "'instruction not used: it is empty'; the old one stays",
         "ui", instruction(""), rf"not used: it is empty \|\| task={GOOD}$"),
    Case("instruction-whitespace", "spaces and tabs only", "Live: instruction",
         "same as empty",
         "ui", instruction(" \t  \t "), rf"not used: it is empty \|\| task={GOOD}$"),
    Case("instruction-100k", "100,000 characters", "Live: instruction",
         "accepted, truncated to 256 characters; the message says '(truncated)'",
         "ui", instruction(HUGE), r"\(truncated\).*\|\| task=(pick up the red cube ?){12}"),
    Case("instruction-emoji", "`pick up the 🟥 cube`", "Live: instruction",
         "'instruction not used: ... characters outside printable ASCII: '🟥''; the old one stays",
         "ui", instruction("pick up the 🟥 cube"), rf"not used: .*outside printable ASCII: '🟥' \|\| task={GOOD}$"),
    Case("instruction-rtl", "Hebrew (right-to-left) text", "Live: instruction",
         "refused the same way",
         "ui", instruction("הרם את הקוביה האדומה"), rf"not used: .*outside printable ASCII.* \|\| task={GOOD}$"),
    Case("instruction-control-chars", "NUL and BEL inside the text", "Live: instruction",
         "refused the same way",
         "ui", instruction("pick up\x00 the red\x07 cube"), rf"not used: .*printable ASCII.* \|\| task={GOOD}$"),
    Case("instruction-unknown-word", "`pick up the purple cube`", "Live: instruction",
         "accepted: 'not in the task grammar: unknown colour or word 'purple' ...; label success yourself' "
         "(the policy reads the word as [UNK])",
         "ui", instruction("pick up the purple cube"),
         r"not in the task grammar: unknown colour or word 'purple'.*label success yourself.*\|\| task=pick up the p"),
    Case("reset-emoji-instruction", "Reset with `héllo 🟥` in the instruction box", "Live: Reset",
         "'scene not reset: instruction not used: ...'; the running episode is untouched",
         "ui", reset_with("héllo 🟥"), r"scene not reset: instruction not used: .*ASCII.*\|\| same scene=True$"),
    # --- scene, sliders, modes (Live tab)
    Case("reset-unknown-family", "family `dance`", "Live: Reset",
         "Gradio refuses: 'not in the list of choices'",
         "ui", say("/reset", 1, "dance", 3, ""), r"^gradio: .*dance is not in the list of choices"),
    Case("reset-unknown-scenes", "scenes `nope` (API call)", "Live: Reset",
         "Gradio refuses: 'not in the list of choices'; `Session.reset` itself answers 'unknown split'",
         "ui", say("/reset", 1, "pick", 3, "", "nope"), r"^gradio: .*nope is not in the list of choices"),
    Case("reset-objects-99", "99 objects", "Live: Reset",
         "Gradio refuses: 'Value 99 is greater than maximum value 5'",
         "ui", say("/reset", 1, "pick", 99, ""), r"^gradio: Value 99 is greater than maximum value 5"),
    Case("reset-negative-seed", "seed -12345", "Live: Reset",
         "a random scene (a negative seed means random)",
         "ui", say("/reset", -12345, "pick", 3, ""), r"^new scene: "),
    Case("reset-huge-seed", "seed 10^30", "Live: Reset",
         "accepted: any non-negative integer seeds the scene",
         "ui", say("/reset", 10**30, "pick", 3, ""), r"^new scene: "),
    Case("speed-huge", "speed 1e9", "Live: speed slider",
         "Gradio refuses: 'greater than maximum value 2.0'",
         "ui", say("/set_speed", 1e9), r"^gradio: Value 1000000000\.0 is greater than maximum value 2\.0"),
    Case("speed-negative", "speed -5", "Live: speed slider",
         "Gradio refuses: 'less than minimum value 0.1'",
         "ui", say("/set_speed", -5), r"^gradio: Value -5 is less than minimum value 0\.1"),
    Case("sensitivity-out-of-range", "teleop sensitivity 50", "Live: sensitivity slider",
         "Gradio refuses: 'greater than maximum value 1.0'",
         "ui", say("/set_sensitivity", 50), r"^gradio: Value 50 is greater than maximum value 1(\.0)?"),
    Case("mode-unknown", "mode `warp`", "Live: mode",
         "Gradio refuses: 'not in the list of choices'",
         "ui", say("/set_mode", "warp"), r"^gradio: .*'warp'.* is not in the list of choices"),
    Case("overlay-layer-unknown", "attention map `layer 99`", "Live: overlays",
         "Gradio refuses: 'not in the list of choices'",
         "ui", say("/set_overlays", ["attention"], "layer 99"), r"^gradio: .*layer 99 is not in the list of choices"),
    # --- held keys and gamepad (private event, session)
    Case("keys-not-json", "held-keys value `{{{`", "Live: held keys (private event)",
         "ignored: no key held",
         "page", keys("{{{"), r"^held=0 finite=True$"),
    Case("keys-1000", "1000 held keys (a 7,000-character value)", "Live: held keys (private event)",
         "ignored: values over 400 characters are dropped, no key held",
         "page", keys(json.dumps(["w"] + [f"k{i}" for i in range(999)])), r"^held=0 finite=True$"),
    Case("keys-20", "20 held keys", "Live: held keys (private event)",
         "only the first 16 are read",
         "page", keys(json.dumps([f"k{i}" for i in range(20)])), r"^held=16 finite=True$"),
    Case("keys-odd-values", '`[NaN, null, 7, {"w": 1}]`', "Live: held keys (private event)",
         "read as four unknown key names: nothing moves",
         "page", keys('[NaN, null, 7, {"w": 1}]'), r"^held=4 finite=True$"),
    Case("gamepad-nan-inf", "gamepad axes NaN, +inf, -inf", "Live: gamepad (session)",
         "NaN reads as 0, infinities are clipped to the stick range; the step runs",
         "page", gamepad(float("nan"), float("inf"), float("-inf")), r"within limits=True stepped=True$"),
    # --- dataset names (Record tab)
    Case("name-dotdot", "dataset `../x`", "Record: record toggle",
         "'dataset name '../x' is not allowed: use 1-64 letters, digits, '-' or '_''",
         "ui", say("/record_toggle", True, "../x", "op"), r"^dataset name '\.\./x' is not allowed", data=True),
    Case("name-absolute", "dataset `/etc`", "Record: export",
         "'not exported: dataset name '/etc' is not allowed ...'",
         "ui", say("/dataset_export", "/etc"), r"^not exported: dataset name '/etc' is not allowed", data=True),
    Case("name-slash", "dataset `a/b`", "Record: replay",
         "'cannot replay: dataset name 'a/b' is not allowed ...'",
         "ui", say("/replay_frame", "a/b", 0, 0), r"^cannot replay: dataset name 'a/b' is not allowed", data=True),
    Case("name-empty-on-save", 'save into dataset `""`', "Record: save",
         "'episode NOT saved (it is still buffered): dataset name '' is not allowed ...'; recording stays on",
         "ui", save_as(""), r"NOT saved.*name '' is not allowed.*\|\| buffered=[1-9]\d* recording=True$", data=True),
    Case("name-too-long", "a 200-character dataset name", "Record: summary",
         "'dataset name 'ddd...' is not allowed: use 1-64 letters ...'",
         "ui", say("/dataset_summary", LONG_NAME), r"^dataset name 'd{40}' is not allowed", data=True),
    Case("name-nul", "dataset `a\\x00b`", "Record: delete",
         "'not deleted: dataset name 'a\\x00b' is not allowed ...'",
         "ui", say("/episode_delete", "a\x00b", 0), r"^not deleted: dataset name 'a\\x00b' is not allowed", data=True),
    Case("name-con", "dataset `con`", "Record: record toggle",
         "accepted: an ordinary folder name on Linux (names are `[A-Za-z0-9_-]{1,64}`)",
         "ui", record_into("con"), r"^recording into 'con'$", data=True),
    Case("name-missing-dataset", "replay from `ghost` (no such dataset)", "Record: replay",
         "'cannot replay: no dataset named 'ghost' yet: record an episode and save it first' (no server path)",
         "ui", say("/replay_frame", "ghost", 0, 0), r"^cannot replay: no dataset named 'ghost' yet", data=True),
    # --- episodes (Record tab)
    Case("episode-missing", "replay episode 99 of 2", "Record: replay",
         "'cannot replay: episode 99 does not exist (2 episodes)'",
         "ui", say("/replay_frame", DATASET, 99, 0), r"^cannot replay: episode 99 does not exist \(2 episodes\)",
         data=True),
    Case("episode-negative", "episode -1", "Record: replay",
         "Gradio refuses: 'less than minimum value 0'",
         "ui", say("/replay_frame", DATASET, -1, 0), r"^gradio: Value -1 is less than minimum value 0", data=True),
    Case("trim-reversed", "trim [4, 1)", "Record: trim",
         "'not trimmed: trim range [4, 1) must lie within [0, L) and keep at least one frame'",
         "ui", say("/episode_trim", DATASET, 0, 4, 1), r"^not trimmed: trim range \[4, 1\) must lie within \[0, \d+\)",
         data=True),
    Case("trim-out-of-range", "trim [0, 999)", "Record: trim",
         "the same message",
         "ui", say("/episode_trim", DATASET, 0, 0, 999), r"^not trimmed: trim range \[0, 999\) must lie within",
         data=True),
    Case("delete-twice", "delete episode 1, then episode 1 again", "Record: delete",
         "'not deleted: episode 1 does not exist (1 episodes)'; Undo restores the first delete",
         "ui", delete_twice, r"^not deleted: episode 1 does not exist \(1 episodes\)", data=True),
    Case("undo-nothing", "Undo with nothing deleted", "Record: undo",
         "'nothing to undo'",
         "ui", say("/episode_undo", DATASET), r"^nothing to undo", data=True),
    Case("relabel-emoji", "relabel to `🟥🟥`", "Record: relabel",
         "'not relabelled: ... outside printable ASCII ...'",
         "ui", say("/episode_relabel", DATASET, 0, "🟥🟥", "keep"), r"^not relabelled: .*outside printable ASCII",
         data=True),
    Case("relabel-missing-episode", "relabel episode 7", "Record: relabel",
         "'not relabelled: episode 7 does not exist (2 episodes)'",
         "ui", say("/episode_relabel", DATASET, 7, GOOD, "success"), r"^not relabelled: episode 7 does not exist",
         data=True),
    Case("export-missing", "export `ghost`", "Record: export",
         "'not exported: no dataset named 'ghost' yet ...'",
         "ui", say("/dataset_export", "ghost"), r"^not exported: no dataset named 'ghost' yet", data=True),
    # --- versions and jobs (Fine-tune and Evaluate tabs)
    Case("activate-unknown", "activate `no-such-version`", "Fine-tune: activate",
         "'Not activated: unknown policy version 'no-such-version' (known: ...). `default` keeps running.'",
         "ui", say("/policy_activate", "no-such-version"),
         r"Not activated:\*\* unknown policy version 'no-such-version'.*`default` keeps running"),
    Case("activate-traversal", "activate `../../etc`", "Fine-tune: activate",
         "the same: version names never become paths",
         "ui", say("/policy_activate", "../../etc"), r"Not activated:\*\* unknown policy version '\.\./\.\./etc'"),
    Case("activate-corrupt", "activate a version whose weights file is garbage", "Fine-tune: activate",
         "'Not activated: policy version 'vN' cannot be loaded: corrupt weights file ...'; the active one stays",
         "ui", activate_corrupt,
         r"Not activated:\*\* policy version 'v\d+' cannot be loaded: corrupt weights.*\|\| active=default$"),
    Case("rollback-empty", "Roll back with no history", "Fine-tune: rollback",
         "'Rollback: no earlier version to roll back to.'",
         "ui", say("/policy_rollback"), r"Rollback:\*\* no earlier version to roll back to"),
    Case("finetune-no-dataset", "start with no dataset picked", "Fine-tune: start",
         "'Not started: pick at least one dataset to fine-tune on'",
         "ui", say("/finetune_start", [], 10, "(active version)", 0), r"Not started:\*\* pick at least one dataset"),
    Case("finetune-unknown-base", "start from version `v999`", "Fine-tune: start",
         "'Not started: unknown policy version 'v999' ...'; nothing is queued",
         "ui", finetune_unknown_base, r"Not started:\*\* unknown policy version 'v999'"),
    Case("ab-unknown-version", "A/B replay of `nope` vs `expert`", "Evaluate: A/B replay",
         "'Not started: unknown policy version 'nope' ...'",
         "ui", say("/ab_replay", "nope", "expert", "pick", 0, "train"), r"Not started:\*\* unknown policy version"),
    Case("ab-negative-seed", "A/B replay seed -5", "Evaluate: A/B replay",
         "Gradio refuses: 'less than minimum value 0'",
         "ui", say("/ab_replay", "expert", "expert", "pick", -5, "train"), r"^gradio: Value -5 is less than minimum"),
    Case("eval-unknown-split", "split `test`", "Evaluate: evaluate",
         "Gradio refuses: 'not in the list of choices'",
         "ui", say("/eval_start", "expert", "test", ["pick"], 1, False), r"^gradio: .*'test'.* is not in the list"),
    Case("eval-unknown-version", "evaluate `nope`", "Evaluate: evaluate",
         "'Not started: unknown policy version 'nope' ...'",
         "ui", say("/eval_start", "nope", "train", ["pick"], 1, False), r"Not started:\*\* unknown policy version"),
    # --- images (Probe and Webcam tabs)
    Case("probe-corrupt-file", "a .png file that is not an image", "Probe",
         "Gradio refuses: 'Could not preprocess input component at index 0 ...'",
         "ui", probe_file(raw(b"not a png at all"), GOOD), r"^gradio: Could not preprocess input component at index 0"),
    Case("probe-1x1", "a 1x1 image", "Probe",
         "'probe failed: expected an HxW, HxWx1, HxWx3 or HxWx4 array ..., got shape (1, 1, 3)'",
         "ui", probe_file(png(np.zeros((1, 1, 3), np.uint8)), GOOD), r"^0 shown \| probe failed: .*shape \(1, 1, 3\)"),
    Case("probe-16bit-grey", "a 16-bit greyscale PNG", "Probe",
         "converted to RGB and probed",
         "ui", probe_file(png(np.full((40, 30), 60000, np.uint16)), GOOD), r"^1 shown \| $"),
    Case("probe-no-instruction", "four empty instruction boxes", "Probe",
         "'probe failed: type at least one instruction'",
         "ui", probe_file(png(np.zeros((32, 32, 3), np.uint8))), r"^0 shown \| probe failed: type at least one"),
    Case("probe-unicode-instructions", "emoji, RTL and 100,000-character instructions", "Probe",
         "probed: the policy reads any Unicode (unknown words -> [UNK], at most 256 characters)",
         "ui", probe_file(png(np.zeros((32, 32, 3), np.uint8)), "🟥🟥", "הרם את הקוביה", HUGE), r"^3 shown \| $"),
    Case("probe-nan-array", "a float frame full of NaN", "Probe (handler)",
         "'probe failed: image has NaN or inf values'",
         "page", probe_array(np.full((32, 32, 3), np.nan, np.float32)), r"^0 shown \| probe failed: image has NaN"),
    Case("webcam-nan", "a float frame full of NaN", "Webcam stream",
         "'frame skipped: image has NaN or inf values'",
         "page", webcam(np.full((32, 32, 3), np.nan, np.float32)), r"^frame=no \| frame skipped: image has NaN or inf"),
    Case("webcam-float-range", "float pixels equal to 7.0", "Webcam stream",
         "'frame skipped: float images must be in [0, 1], got range [7, 7]'",
         "page", webcam(np.full((32, 32, 3), 7.0)), r"^frame=no \| frame skipped: float images must be in \[0, 1\]"),
    Case("webcam-5-channels", "a 32x32x5 frame", "Webcam stream",
         "'frame skipped: expected ... got shape (32, 32, 5)'",
         "page", webcam(np.zeros((32, 32, 5), np.uint8)), r"^frame=no \| frame skipped: .*got shape \(32, 32, 5\)"),
    Case("webcam-int64", "an int64 frame", "Webcam stream",
         "'frame skipped: expected ... got dtype int64'",
         "page", webcam(np.zeros((32, 32, 3), np.int64)), r"^frame=no \| frame skipped: .*got dtype int64"),
    Case("webcam-empty", "a 0x0 frame", "Webcam stream",
         "'frame skipped: expected ... got shape (0, 0, 3)'",
         "page", webcam(np.zeros((0, 0, 3), np.uint8)), r"^frame=no \| frame skipped: .*got shape \(0, 0, 3\)"),
    Case("webcam-odd-size", "a 7x500 greyscale frame and an emoji instruction", "Webcam stream",
         "processed: the policy resizes any size and reads any text",
         "page", webcam(np.zeros((7, 500), np.uint8), "🟥"), r"^frame=yes \| action \["),
    # --- command line
    Case("cli-train-missing-data", "`train --data DIR` with no dataset there", "CLI train",
         "'error: DIR is not a LeRobot dataset: meta/info.json is missing'",
         "cli", cli("train", "--data", "{tmp}/nope", "--steps", "1", "--out", "{tmp}/run"),
         refused("is not a LeRobot dataset")),
    Case("cli-train-info-not-json", "`train` on a dataset whose meta/info.json is `{not json`", "CLI train",
         "'error: corrupt .../meta/info.json: Expecting property name ...'",
         "cli", cli_on("info:{not json", "train", "--data", "{bad}", "--steps", "1", "--out", "{tmp}/run"),
         refused(r"corrupt .*info\.json: Expecting property name")),
    Case("cli-train-info-list", "meta/info.json is `[]`", "CLI train",
         "'error: corrupt .../meta/info.json: expected a JSON object, got list'",
         "cli", cli_on("info:[]", "train", "--data", "{bad}", "--steps", "1", "--out", "{tmp}/run"),
         refused("expected a JSON object, got list")),
    Case("cli-train-info-features", 'meta/info.json with `"features": "x"`', "CLI train",
         "'error: corrupt ...: features must map each feature name to an object'",
         "cli", cli_on('info-field:features="x"', "train", "--data", "{bad}", "--steps", "1", "--out", "{tmp}/run"),
         refused("features must map each feature name to an object")),
    Case("cli-train-info-fps-zero", 'meta/info.json with `"fps": 0`', "CLI train",
         "'error: corrupt ...: fps must be a positive number, got 0'",
         "cli", cli_on("info-field:fps=0", "train", "--data", "{bad}", "--steps", "1", "--out", "{tmp}/run"),
         refused("fps must be a positive number, got 0")),
    Case("cli-train-stats-not-json", "meta/stats.json is `{bad`", "CLI train",
         "'error: corrupt .../meta/stats.json: ...'",
         "cli", cli_on("stats:{bad", "train", "--data", "{bad}", "--steps", "1", "--out", "{tmp}/run"),
         refused(r"corrupt .*stats\.json")),
    Case("cli-train-no-data", "`train` without `--data`", "CLI train",
         "'error: give --data DATASET [DATASET ...] (or --preset default)'",
         "cli", cli("train", "--steps", "1"), refused(r"give --data DATASET")),
    Case("cli-train-negative-steps", "`train --steps -1`", "CLI train",
         "'error: steps (-1) and batch_size (64) must be positive'",
         "cli", cli("train", "--data", "{ds}", "--steps", "-1", "--out", "{tmp}/run"), refused(r"steps \(-1\)")),
    Case("cli-train-zero-processes", "`train --processes 0`", "CLI train",
         "'error: processes (0) must be >= 1 and split batch_size (64) evenly'",
         "cli", cli("train", "--data", "{ds}", "--processes", "0", "--steps", "1", "--out", "{tmp}/run"),
         refused(r"processes \(0\) must be >= 1")),
    Case("cli-train-preset-processes", "`train --preset default --processes 2`", "CLI train",
         "'error: --processes is for plain runs: --preset default trains as its recipe says'",
         "cli", cli("train", "--preset", "default", "--processes", "2"), refused("--processes is for plain runs")),
    Case("cli-train-wrist-front-only", "`train --wrist` on a dataset without the wrist camera", "CLI train",
         "'error: DIR has no wrist camera ('observation.images.wrist'): a wrist-camera policy trains only on datasets recorded with it (collect --wrist, ...)'",
         "cli", cli("train", "--data", "{ds}", "--wrist", "--steps", "1", "--out", "{tmp}/run"),
         refused("has no wrist camera")),
    Case("cli-train-wrist-front-only-processes", "`train --wrist --processes 2` on a dataset without the wrist camera",
         "CLI train", "the same message, before any training process starts",
         "cli", cli("train", "--data", "{ds}", "--wrist", "--processes", "2", "--steps", "1", "--out", "{tmp}/run"),
         refused("has no wrist camera")),
    Case("cli-train-nan-lr", "`train --lr nan`", "CLI train",
         "'error: need 0 < min_lr <= lr < 1, got lr nan ...'",
         "cli", cli("train", "--data", "{ds}", "--lr", "nan", "--steps", "1", "--out", "{tmp}/run"),
         refused("got lr nan")),
    Case("cli-train-ema-decay-one", "`train --ema-decay 1` (an average that never moves)", "CLI train",
         "'error: ema_decay must be in [0, 1), got 1.0'",
         "cli", cli("train", "--data", "{ds}", "--ema-decay", "1", "--steps", "1", "--out", "{tmp}/run"),
         refused(r"ema_decay must be in \[0, 1\)")),
    Case("cli-train-corrupt-init", "`train --init-from` a checkpoint whose config.json is `{oops`", "CLI train",
         "'error: corrupt .../config.json: ...'",
         "cli", cli_on("config:{oops", "train", "--data", "{ds}", "--init-from", "{bad}", "--steps", "1",
                       "--out", "{tmp}/run"), refused(r"corrupt .*config\.json")),
    Case("cli-eval-corrupt-weights", "`eval --policy` a checkpoint with a garbage model.safetensors", "CLI eval",
         "'error: corrupt weights file .../model.safetensors: ...'",
         "cli", cli_on("weights:garbage", "eval", "--policy", "{bad}", *CLI_EVAL), refused("corrupt weights file")),
    Case("cli-eval-corrupt-tokenizer", "`eval --policy` a checkpoint whose tokenizer.json is `{}`", "CLI eval",
         "'error: corrupt tokenizer file ...'",
         "cli", cli_on("tokenizer:{}", "eval", "--policy", "{bad}", *CLI_EVAL), refused("corrupt tokenizer file")),
    Case("cli-eval-config-types", 'a checkpoint whose config.json has `"model": []`', "CLI eval",
         "'error: invalid .../config.json: ...'",
         "cli", cli_on("config-field:model=[]", "eval", "--policy", "{bad}", *CLI_EVAL),
         refused(r"invalid .*config\.json")),
    Case("cli-eval-missing-policy", "`eval --policy DIR` with nothing there", "CLI eval",
         "'error: unknown policy 'DIR': give a checkpoint folder or 'expert''",
         "cli", cli("eval", "--policy", "{tmp}/nope", *CLI_EVAL), refused("unknown policy")),
    Case("cli-eval-zero-episodes", "`eval --episodes-per-family 0`", "CLI eval",
         "'error: --episodes-per-family must be at least 1'",
         "cli", cli("eval", "--policy", "expert", "--episodes-per-family", "0"), refused("must be at least 1")),
    Case("cli-eval-negative-seed", "`eval --seed -5`", "CLI eval",
         "'error: seed must be non-negative, got -5'",
         "cli", cli("eval", "--policy", "expert", "--seed", "-5", *CLI_EVAL),
         refused("seed must be non-negative, got -5")),
    Case("cli-eval-unknown-family", "`eval --families dance`", "CLI eval",
         "argparse: 'invalid choice: 'dance' (choose from ...)'",
         "cli", cli("eval", "--policy", "expert", "--families", "dance"), refused("invalid choice: 'dance'")),
    Case("cli-sim-negative-seed", "`sim --seed -3`", "CLI sim",
         "'error: seed must be a non-negative integer or None, got -3'",
         "cli", cli("sim", "--seed", "-3", "--size", "32", "--out", "{tmp}/x.png"),
         refused("seed must be a non-negative")),
    Case("cli-sim-size-zero", "`sim --size 0`", "CLI sim",
         "'error: image_size must be within 16..1024 px, got (0, 0)' and nothing else",
         "cli", cli("sim", "--size", "0", "--out", "{tmp}/x.png"), refused(r"image_size must be within 16\.\.1024")),
    Case("cli-sim-emoji-instruction", "`sim --instruction 🟥`", "CLI sim",
         "'error: instruction has characters outside printable ASCII: '🟥''",
         "cli", cli("sim", "--instruction", "🟥", "--size", "32", "--out", "{tmp}/x.png"),
         refused("outside printable ASCII")),
    Case("cli-sim-text-seed", "`sim --seed abc`", "CLI sim",
         "argparse: 'invalid int value: 'abc''",
         "cli", cli("sim", "--seed", "abc"), refused("invalid int value: 'abc'")),
    Case("cli-unknown-verb", "`fly`", "CLI",
         "argparse: 'invalid choice: 'fly' (choose from ...)'",
         "cli", cli("fly"), refused("invalid choice: 'fly'")),
    Case("cli-unknown-flag", "`sim --frobnicate`", "CLI",
         "argparse: 'unrecognized arguments: --frobnicate'",
         "cli", cli("sim", "--frobnicate"), refused("unrecognized arguments: --frobnicate")),
    Case("cli-collect-negative", "`collect --episodes -1`", "CLI collect",
         "'error: episodes must be >= 1, got -1'",
         "cli", cli("collect", "--episodes", "-1", "--out", "{tmp}/c"), refused("episodes must be >= 1, got -1")),
    Case("cli-collect-detour", "`collect --detour 1.5`", "CLI collect",
         "'error: noise must be >= 0, detour and shape_rival probabilities in 0..1, ...'",
         "cli", cli("collect", "--episodes", "1", "--detour", "1.5", "--out", "{tmp}/c"),
         refused("detour and shape_rival probabilities in 0..1, got noise=0.3, detour=1.5")),
    Case("cli-collect-shape-only-stack", "`collect --shape-only --families stack`", "CLI collect",
         "'error: shape-only scenes are for pick, push, place, reach, not stack (it names two objects)'",
         "cli", cli("collect", "--episodes", "1", "--shape-only", "--families", "stack", "--out", "{tmp}/c"),
         refused(r"shape-only scenes are for pick, push, place, reach, not stack")),
    Case("cli-dataset-info-corrupt", "`dataset info` on a dataset whose info.json is `{not json`", "CLI dataset",
         "'error: corrupt .../meta/info.json: ...'",
         "cli", cli_on("info:{not json", "dataset", "info", "{bad}"), refused(r"corrupt .*info\.json")),
    Case("cli-trim-reversed", "`dataset trim DS 0 5 2`", "CLI dataset",
         "'error: trim range [5, 2) must lie within [0, L) and keep at least one frame'",
         "cli", cli("dataset", "trim", "{ds}", "0", "5", "2"), refused(r"trim range \[5, 2\) must lie within")),
    Case("cli-delete-missing", "`dataset delete-episode DS 9`", "CLI dataset",
         "'error: episode 9 does not exist (1 episodes)'",
         "cli", cli("dataset", "delete-episode", "{ds}", "9"), refused(r"episode 9 does not exist \(1 episodes\)")),
    Case("cli-restore-traversal", "`dataset restore-episode DS ../../etc`", "CLI dataset",
         "'error: no deleted episode '../../etc'; available: []'",
         "cli", cli("dataset", "restore-episode", "{ds}", "../../etc"), refused(r"no deleted episode '\.\./\.\./etc'")),
    Case("cli-export-inside", "`dataset export DS --out DS/x.zip`", "CLI dataset",
         "'error: write the zip outside the dataset folder'",
         "cli", cli("dataset", "export", "{ds}", "--out", "{ds}/x.zip"), refused("write the zip outside the dataset")),
]


def markdown_table(cases: list[Case] = CASES) -> str:
    """The README's bad-input table: input -> where -> what the user gets."""
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    rows = ["| input | where | what the user gets |", "|---|---|---|"]
    rows += [f"| {cell(c.input)} | {cell(c.where)} | {cell(c.user_gets)} |" for c in cases]
    return "\n".join(rows)


# ----------------------------------------------------------------------------- the worlds


class AppWorld:
    """The app on loopback with one client (= one session) whose live stream runs, and a recorded
    dataset ``keep`` of two episodes."""

    def __init__(self, ctx, demo, client, job, tmp: Path, policy_dir: Path):
        self.ctx, self.demo, self.client, self.stream = ctx, demo, client, job
        self.tmp, self.policy_dir = tmp, policy_dir
        self.request = SimpleNamespace(session_hash=client.session_hash)
        self.ds = ctx.data_root / "datasets" / DATASET

    @property
    def session(self):
        return self.ctx.sessions[self.client.session_hash]

    def guard(self, fn: Callable[[], str]) -> str:
        from gradio_client.exceptions import AppError

        try:
            return fn()
        except AppError as e:
            return f"gradio: {e}"

    def call(self, api: str, *args) -> str:
        return self.guard(lambda: text_of(self.client.predict(*args, api_name=api)))

    def handler(self, api_name: str):
        """The page's own Python handler of an event (for events gradio_client cannot send)."""
        return next(f.fn for f in self.demo.fns.values() if f.api_name == api_name)

    def steps(self, n: int) -> None:
        """``n`` single steps, each seen through the live stream."""
        for _ in range(n):
            t = self.session._t
            assert self.call("/step") == "one step"
            assert wait_for(lambda: self.session._t == t + 1, timeout=30)

    def still_works(self) -> None:
        """The session resets, its stream keeps yielding and a step goes through; no job was queued."""
        assert self.call("/reset", 1, "reach", 3, "").startswith("new scene")
        frames = len(self.stream.outputs())
        self.steps(1)
        assert wait_for(lambda: len(self.stream.outputs()) > frames, timeout=30) and not self.stream.done()
        assert self.ctx.jobs.jobs() == []


class CliWorld:
    """A one-episode dataset and a tiny checkpoint; ``corrupt(spec)`` makes spoilt copies."""

    def __init__(self, tmp: Path, ds: Path, policy_dir: Path):
        self.tmp, self.ds, self.policy_dir = tmp, ds, policy_dir

    def corrupt(self, spec: str) -> Path:
        """``what:content`` -> a copy with that file overwritten; ``info-field:k=json`` /
        ``config-field:k=json`` -> a copy with one JSON field replaced."""
        what, _, content = spec.partition(":")
        dataset = what.startswith(("info", "stats"))
        src = self.ds if dataset else self.policy_dir
        dst = self.tmp / f"bad-{len(list(self.tmp.glob('bad-*')))}"
        shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".writer.lock"))
        files = {"info": "meta/info.json", "stats": "meta/stats.json", "config": "config.json",
                 "weights": "model.safetensors", "tokenizer": "tokenizer.json"}
        path = dst / files[what.split("-")[0]]
        if what.endswith("-field"):
            key, _, value = content.partition("=")
            path.write_text(json.dumps({**json.loads(path.read_text()), key: json.loads(value)}))
        else:
            path.write_text(content)
        return dst


@pytest.fixture(scope="module")
def app_world(tmp_path_factory, tiny_policy_dir):
    from gradio_client import Client

    from vla_demo.ui.app import make_context

    tmp = tmp_path_factory.mktemp("bad-inputs")
    ctx = make_context(str(tiny_policy_dir), tmp / "data", camera_size=64, display_size=128)
    demo, url = serve(ctx)
    client = Client(url, verbose=False)
    job = client.submit(api_name="/live_stream")
    world = AppWorld(ctx, demo, client, job, tmp, tiny_policy_dir)
    try:
        assert wait_for(lambda: client.session_hash in ctx.sessions and len(job.outputs()) >= 1)
        for label in ("success", "failure"):  # the dataset every data case must leave intact
            world.call("/record_toggle", True, DATASET, "op")
            world.steps(3)
            assert "saved episode" in world.call("/record_save", label, DATASET, "op")
        world.call("/record_toggle", False, DATASET, "op")
        yield world
    finally:
        job.cancel()
        ctx.close()
        demo.close()


@pytest.fixture(scope="module")
def cli_world(tmp_path_factory, tiny_policy_dir):
    from vla_demo.data.collect import collect

    tmp = tmp_path_factory.mktemp("bad-cli")
    collect(tmp / "ds", episodes=1, families=("reach",), seed=5, workers=1, image_size=(32, 32), progress=False)
    return CliWorld(tmp, tmp / "ds", tiny_policy_dir)


def dataset_intact(root: Path, episodes: int) -> None:
    from vla_demo.data.edit import check
    from vla_demo.data.reader import DatasetReader

    assert check(root) == []
    assert DatasetReader(root).num_episodes == episodes


# ----------------------------------------------------------------------------- the test


def test_the_table_is_complete():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)) and len(CASES) >= 25
    assert {c.kind for c in CASES} == {"ui", "page", "cli"}
    assert all(c.input and c.where and c.user_gets for c in CASES)
    assert markdown_table().count("\n") == len(CASES) + 1


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=[pytest.mark.slow] if c.kind != "cli" else [])
                                  for c in CASES])
def test_bad_input(case: Case, request):
    world = request.getfixturevalue("cli_world" if case.kind == "cli" else "app_world")
    text = case.run(world)
    assert re.search(case.expect, text, re.DOTALL), f"{case.id}: got {text!r}"
    if case.kind == "cli":
        assert "Traceback" not in text and "Exception ignored" not in text
        assert cli("dataset", "check", "{ds}")(world).startswith("rc=0")  # the CLI works; the dataset is intact
        dataset_intact(world.ds, 1)
    else:
        world.still_works()
        if case.data:
            dataset_intact(world.ds, 2)


if __name__ == "__main__":
    print(markdown_table())
