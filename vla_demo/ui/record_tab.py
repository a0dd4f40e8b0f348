"""The Record tab: record toggle, save/discard with a success label, and the dataset's episodes
(summary, list, replay scrubber, trim, relabel, delete with undo, export as zip).

Handlers talk to the tab's :class:`~vla_demo.ui.session.Session` and to the dataset tools in
``vla_demo.data``; dataset names are checked by :func:`~vla_demo.ui.context.dataset_path`, and the
export zip is written to a private temp folder, never served from the data root.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import gradio as gr
import pandas as pd

from vla_demo.ui.context import dataset_path

LABELS = ("auto", "success", "failure", "unlabelled")
EPISODE_COLUMNS = ["episode", "frames", "instruction", "success", "source", "operator"]


def _existing(ctx, name: str) -> Path:
    """The folder of the existing dataset ``name``; ValueError with an operator-facing message (no
    server paths) for a bad name or a dataset that does not exist yet."""
    root = dataset_path(ctx.data_root, name)
    if not (root / "meta" / "info.json").is_file():
        raise ValueError(f"no dataset named {root.name!r} yet: record an episode and save it first")
    return root


def _writer(ctx, name: str):
    from vla_demo.data.writer import DatasetWriter

    return DatasetWriter.open(_existing(ctx, name))


def summary(ctx, name: str) -> tuple[str, pd.DataFrame]:
    """Markdown summary and the episode table of dataset ``name`` (empty when it does not exist yet)."""
    try:
        root = dataset_path(ctx.data_root, name)
    except ValueError as e:
        return str(e), pd.DataFrame(columns=EPISODE_COLUMNS)
    if not (root / "meta" / "info.json").exists():
        return f"`{name}` has no episodes yet: record one and save it.", pd.DataFrame(columns=EPISODE_COLUMNS)
    from vla_demo.data.reader import DatasetReader

    try:
        r = DatasetReader(root)
        rows = [r.episode(e) for e in range(r.num_episodes)]
    except (OSError, ValueError, KeyError) as e:
        return f"cannot read `{name}`: {e}", pd.DataFrame(columns=EPISODE_COLUMNS)
    table = pd.DataFrame([[x["episode_index"], x["length"], " | ".join(x["tasks"]), x.get("success"), x.get("source"),
                           x.get("operator")] for x in rows], columns=EPISODE_COLUMNS)
    labelled = [x.get("success") for x in rows if x.get("success") is not None]
    ok = f"{sum(labelled)}/{len(labelled)} labelled episodes succeeded" if labelled else "no success labels yet"
    return (f"**{name}**: {len(rows)} episodes, {int(table['frames'].sum())} frames at {r.fps} fps; {ok}. "
            f"LeRobot v3.0 dataset with a README card."), table


def replay_frame(ctx, name: str, episode: float, t: float):
    """Frame ``t`` of an episode (the replay scrubber), or None with a message."""
    from vla_demo.constants import OBS_IMAGE_FRONT
    from vla_demo.data.reader import DatasetReader

    try:
        r = DatasetReader(_existing(ctx, name))
        frames = r.frames(OBS_IMAGE_FRONT, int(episode))
    except (OSError, ValueError, KeyError, IndexError) as e:
        return None, f"cannot replay: {e}", gr.update()
    t = int(min(max(0, t or 0), len(frames) - 1))
    return frames[t], f"episode {int(episode)}, frame {t + 1}/{len(frames)}", gr.update(maximum=len(frames) - 1)


def delete(ctx, name: str, episode: float, trash: list | None):
    from vla_demo.data.edit import delete_episode

    try:
        tid = delete_episode(_writer(ctx, name), int(episode))
    except (OSError, ValueError, RuntimeError, IndexError) as e:
        return f"not deleted: {e}", trash or []
    return f"deleted episode {int(episode)} (Undo restores it)", [*(trash or []), tid]


def undo(ctx, name: str, trash: list | None):
    from vla_demo.data.edit import restore_episode

    if not trash:
        return "nothing to undo", []
    try:
        e = restore_episode(_writer(ctx, name), trash[-1])
    except (OSError, ValueError, RuntimeError) as err:
        return f"not restored: {err}", trash
    return f"restored as episode {e}", trash[:-1]


def trim(ctx, name: str, episode: float, start: float, end: float) -> str:
    from vla_demo.data.edit import trim_episode

    try:
        trim_episode(_writer(ctx, name), int(episode), int(start), int(end))
    except (OSError, ValueError, RuntimeError, IndexError) as e:
        return f"not trimmed: {e}"
    return f"episode {int(episode)} trimmed to frames {int(start)}..{int(end) - 1} (the original is in the trash)"


def relabel(ctx, name: str, episode: float, task: str, label: str) -> str:
    from vla_demo.data.edit import relabel_episode
    from vla_demo.sim.env import clean_instruction

    success = {"success": True, "failure": False, "unlabelled": None}.get(label, "keep")
    try:
        text = clean_instruction(task) if task and task.strip() else None
        relabel_episode(_writer(ctx, name), int(episode), task=text, success=success)
    except (OSError, ValueError, RuntimeError, IndexError) as e:
        return f"not relabelled: {e}"
    return f"episode {int(episode)} relabelled"


def export(ctx, name: str):
    from vla_demo.data.edit import export_zip

    try:
        root = _existing(ctx, name)
        out = Path(tempfile.mkdtemp(prefix="vla-demo-export-")) / f"{root.name}.zip"
        return str(export_zip(root, out)), f"exported `{name}`"
    except (OSError, ValueError) as e:
        return None, f"not exported: {e}"


def build(ctx, session_of) -> dict:
    """Lay out the tab; ``session_of(request)`` returns the tab's session. Returns components the Live
    tab refers to."""
    trash = gr.State([])
    with gr.Row():
        with gr.Column():
            record = gr.Checkbox(False, label="Record (every control step goes into the episode buffer)")
            dataset = gr.Textbox("recordings", label="Dataset name (under the data root)", max_lines=1)
            operator = gr.Textbox("", label="Operator", max_lines=1)
            label = gr.Radio(list(LABELS), value="auto", label="Success label (auto: from the sim's parser)")
            with gr.Row():
                save = gr.Button("Save episode", variant="primary")
                discard = gr.Button("Discard / re-record")
            note = gr.Markdown()
        with gr.Column():
            info = gr.Markdown()
            table = gr.Dataframe(pd.DataFrame(columns=EPISODE_COLUMNS), interactive=False, wrap=True, max_height=260)
            refresh = gr.Button("Refresh")
    with gr.Row():
        with gr.Column():
            episode = gr.Number(0, label="Episode", precision=0, minimum=0)
            scrub = gr.Slider(0, 200, value=0, step=1, label="Replay frame")
            frame = gr.Image(label="Replay", interactive=False, height=256)
            where = gr.Markdown()
        with gr.Column():
            with gr.Row():
                t0 = gr.Number(0, label="Trim: first frame", precision=0, minimum=0)
                t1 = gr.Number(10, label="end (exclusive)", precision=0, minimum=1)
                trim_btn = gr.Button("Trim")
            with gr.Row():
                task = gr.Textbox("", label="New instruction (blank: keep)", max_lines=1)
                new_label = gr.Radio(["keep", "success", "failure", "unlabelled"], value="keep", label="New label")
                relabel_btn = gr.Button("Relabel")
            with gr.Row():
                delete_btn = gr.Button("Delete episode", variant="stop")
                undo_btn = gr.Button("Undo delete")
            export_btn = gr.Button("Export dataset as zip")
            zip_file = gr.File(label="Download", interactive=False)
            edit_note = gr.Markdown()

    def set_record(on, name, op, request: gr.Request):
        return session_of(request).set_recording(on, name, op)

    def do_save(lab, name, op, request: gr.Request):
        session = session_of(request)
        try:  # a refused name leaves the recording as it is (on, with its buffer)
            dataset_path(ctx.data_root, name)
        except ValueError as e:
            return (f"episode NOT saved (it is still buffered): {e}", *summary(ctx, name))
        session.set_recording(session.recording.on, name, op)  # the name and operator as typed now
        return (session.save_episode(lab), *summary(ctx, name))

    def do_discard(request: gr.Request):
        return session_of(request).discard_episode()

    def show(name):
        return summary(ctx, name)

    record.change(set_record, [record, dataset, operator], note, api_name="record_toggle")
    save.click(do_save, [label, dataset, operator], [note, info, table], api_name="record_save")
    discard.click(do_discard, None, note, api_name="record_discard")
    refresh.click(show, dataset, [info, table], api_name="dataset_summary")
    scrub.change(lambda n, e, t: replay_frame(ctx, n, e, t), [dataset, episode, scrub], [frame, where, scrub],
                 api_name="replay_frame", show_progress="hidden")
    episode.change(lambda n, e: replay_frame(ctx, n, e, 0), [dataset, episode], [frame, where, scrub], api_name=False)
    delete_btn.click(lambda n, e, tr: delete(ctx, n, e, tr), [dataset, episode, trash], [edit_note, trash],
                     api_name="episode_delete").then(show, dataset, [info, table], api_name=False)
    undo_btn.click(lambda n, tr: undo(ctx, n, tr), [dataset, trash], [edit_note, trash],
                   api_name="episode_undo").then(show, dataset, [info, table], api_name=False)
    trim_btn.click(lambda n, e, a, b: trim(ctx, n, e, a, b), [dataset, episode, t0, t1], edit_note,
                   api_name="episode_trim").then(show, dataset, [info, table], api_name=False)
    relabel_btn.click(lambda n, e, t, lab: relabel(ctx, n, e, t, lab), [dataset, episode, task, new_label], edit_note,
                      api_name="episode_relabel").then(show, dataset, [info, table], api_name=False)
    export_btn.click(lambda n: export(ctx, n), dataset, [zip_file, edit_note], api_name="dataset_export")
    return {"dataset": dataset, "info": info, "table": table}
