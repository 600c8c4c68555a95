"""Fine-tune tab: joint fine-tuning on the user's own labelled faces, for their session only."""

from __future__ import annotations

import html
import math
import os
import queue
import threading
import time

import gradio as gr
import numpy as np

from core import EXPRESSIONS, InputError, get_recognizer
from core.errors import WeightsError
from demo.session_models import SESSION_MODELS, session_key

VALID_SHARE = 0.2
MAX_STEPS = 400
MAX_SECONDS = 300  # a fine-tune stops after 5 minutes whatever the steps


def split_train_valid(labels: np.ndarray, share: float = VALID_SHARE, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Stratified hold-out: about `share` of each class (at least one when a class has 3 or more)."""
    rng = np.random.default_rng(seed)
    valid = []
    for k in np.unique(labels):
        index = rng.permutation(np.flatnonzero(labels == k))
        take = int(round(len(index) * share)) if len(index) >= 3 else 0
        valid += list(index[: max(take, 1 if len(index) >= 3 else 0)])
    valid = np.array(sorted(valid), np.int64)
    train = np.setdiff1d(np.arange(len(labels)), valid)
    return train, valid


def confusion_html(confusion, title: str) -> str:
    header = "".join(f"<th style='padding:2px 4px;font-size:11px'>{html.escape(n[:4])}</th>" for n in EXPRESSIONS)
    rows = []
    for name, row in zip(EXPRESSIONS, confusion):
        total = max(1, sum(row))
        cells = "".join(
            f"<td style='padding:2px 4px;text-align:right;background:rgba(40,120,220,{v / total:.2f})'>{v}</td>"
            for v in row)
        rows.append(f"<tr><th style='text-align:left;font-size:11px'>{html.escape(name)}</th>{cells}</tr>")
    return (f"<div style='flex:1'><div style='font-weight:700'>{html.escape(title)}</div>"
            f"<table style='border-collapse:collapse'><tr><th></th>{header}</tr>{''.join(rows)}</table>"
            f"<div style='font-size:11px'>rows: true class, columns: predicted</div></div>")


def _text(value) -> str:
    """User-made text (file names, CSV cells) for a gr.Error, which gradio renders as HTML: shown as typed."""
    return html.escape(str(value), quote=False)


def _check_request(files, batch_label, steps) -> tuple[int, str | None]:
    """(steps, batch label or None), or gr.Error naming what is wrong (the API can send anything)."""
    from core.labels import expression_index

    if not files:
        raise gr.Error("Upload a zip of class folders, or images with a CSV or a batch label.")
    try:
        steps = float(steps)
    except (TypeError, ValueError) as error:
        raise gr.Error(f"Steps must be a number between 10 and {MAX_STEPS}, not {_text(repr(steps))}.") from error
    if not (math.isfinite(steps) and 10 <= steps <= MAX_STEPS):
        raise gr.Error(f"Steps must be between 10 and {MAX_STEPS}, not {steps}.")
    label = None if batch_label in (None, "", "(from folders or CSV)") else batch_label
    if label is not None:
        try:
            expression_index(label)
        except InputError as error:
            raise gr.Error(_text(error)) from error
    return int(steps), label


def run_fine_tune(files, batch_label, steps, joint, request: gr.Request = None, progress=gr.Progress()):  # noqa: B008
    """Ingest, hold out, measure, fine-tune (streaming curves), measure again. A generator: yields updates.

    Reading the upload and training run in worker threads that stop when the run is cancelled, the tab
    is closed (gradio closes this generator: `finally` below) or MAX_SECONDS have passed.
    """
    from core.ingest import ingest_upload
    from core.joint import evaluate_crops, fine_tune, fine_tune_config

    key = session_key(request) or "anonymous"
    steps, label = _check_request(files, batch_label, steps)
    recognizer = get_recognizer()
    stop = threading.Event()
    started = time.monotonic()

    def out_of_time() -> bool:
        return time.monotonic() - started > MAX_SECONDS

    def should_stop() -> bool:
        return stop.is_set() or out_of_time()

    try:
        read: dict = {}

        def read_upload():
            try:
                read["value"] = ingest_upload([getattr(f, "name", f) for f in files], recognizer.detector,
                                              recognizer.config.input_size, batch_label=label, should_stop=should_stop)
            except Exception as error:  # noqa: BLE001 -- reported below
                read["error"] = error

        reader = threading.Thread(target=read_upload, daemon=True, name=f"fine-tune-read-{key}")
        reader.start()
        while reader.is_alive():  # a large upload takes a while: keep the run cancellable meanwhile
            reader.join(0.5)
            if reader.is_alive():
                yield ("Reading the upload…", "", "", "", _curves([]), "", None)
        if "error" in read:
            error = read["error"]
            if out_of_time():
                raise gr.Error(f"The time limit ({MAX_SECONDS} s) was reached while reading the upload ({_text(error)}): "
                               "upload fewer images.")
            if isinstance(error, InputError):
                raise gr.Error(_text(error)) from error
            raise gr.Error(f"The upload could not be read ({type(error).__name__}).") from error
        data = read["value"]
        rejected = "".join(f"<li><code>{html.escape(n)}</code>: {html.escape(r)}</li>" for n, r in data.rejected[:200])
        summary = f"**{len(data.labels)} faces** ready" + (f", {len(data.rejected)} files turned away:"
                                                           if data.rejected else ".")
        if len(data.labels) < 5:
            raise gr.Error(f"Only {len(data.labels)} usable faces: at least 5 are needed. "
                           + _text("; ".join(f"{n}: {r}" for n, r in data.rejected[:5])))
        train, valid = split_train_valid(data.labels)
        if len(valid) == 0:
            train, valid = np.arange(len(data.labels)), np.arange(len(data.labels))
            summary += " (too few faces per class to hold any out: before/after are measured on the training faces)"
        before = evaluate_crops(recognizer.net, data.crops[valid], data.labels[valid], recognizer.device)
        synthesizer = None
        if joint:
            try:
                from core import get_synthesizer

                synthesizer = get_synthesizer()
            except WeightsError:
                summary += " No generator is shipped yet: fine-tuning the recognizer alone."
        config = fine_tune_config(steps, len(train), synthesizer is not None)
        updates: queue.Queue = queue.Queue()
        result: dict = {}

        def work():
            try:
                result["value"] = fine_tune(recognizer, synthesizer, list(data.crops[train]),
                                            list(data.labels[train]), config, on_step=updates.put,
                                            should_stop=should_stop)
            except Exception as error:  # noqa: BLE001 -- reported to the user below, the session keeps its models
                result["error"] = error

        thread = threading.Thread(target=work, daemon=True, name=f"fine-tune-{key}")
        thread.start()
        history: list[dict] = []
        before_text = (f"**Before:** accuracy {before['accuracy']:.1%}, macro-F1 {before['macro_f1']:.2f} on "
                       f"{len(valid)} held-out faces")
        while thread.is_alive() or not updates.empty():
            # At most half a second between yields, however fast steps come: a yield is where gradio can
            # cancel this run or notice a closed tab, and where the curves are redrawn.
            until = time.monotonic() + 0.5
            try:
                while (left := until - time.monotonic()) > 0:
                    history.append(updates.get(timeout=left))
            except queue.Empty:
                pass
            progress((len(history), steps), desc="fine-tuning")
            yield (summary, f"<ul>{rejected}</ul>", before_text, "", _curves(history), "", None)
        thread.join()
        if "error" in result:
            raise gr.Error(f"Fine-tuning failed; your models are unchanged ({type(result['error']).__name__}: "
                           f"{_text(result['error'])})")
        tuned = result["value"]
        after = evaluate_crops(tuned.recognizer.net, data.crops[valid], data.labels[valid], tuned.recognizer.device)
        try:
            download = _export(key, tuned.recognizer)
        except OSError as error:  # before the session switches: a failed save leaves it as it was
            raise gr.Error(f"Saving the fine-tuned model failed; your models are unchanged ({error.strerror})"
                           ) from error
        SESSION_MODELS.set(key, tuned.recognizer, tuned.synthesizer)
    finally:
        stop.set()  # cancelled or closed: the workers stop at their next image or step; the session keeps its models
    stopped_early = " — stopped at the time limit" if len(history) < steps and out_of_time() else ""
    after_text = (f"**After:** accuracy {after['accuracy']:.1%}, macro-F1 {after['macro_f1']:.2f} "
                  f"({len(history)} steps{stopped_early}, {time.monotonic() - started:.0f} s). Switch it on below to "
                  "use it in Live and Synthesize.")
    matrices = (f"<div style='display:flex;gap:16px'>{confusion_html(before['confusion'], 'Before')}"
                f"{confusion_html(after['confusion'], 'After')}</div>")
    yield (summary, f"<ul>{rejected}</ul>", before_text, after_text, _curves(history), matrices, download)


def _curves(history: list[dict]):
    import pandas as pd

    rows = [{"step": r["step"], "loss": r.get("loss_real", float("nan")), "curve": "real-face loss"} for r in history]
    rows += [{"step": r["step"], "loss": r["loss_synth"], "curve": "synthetic-face loss"} for r in history
             if "loss_synth" in r]
    return pd.DataFrame(rows or [{"step": 0, "loss": float("nan"), "curve": "real-face loss"}])


def _export(key: str, recognizer) -> str:
    from core.training import export_recognizer

    path = os.path.join(SESSION_MODELS.entry(key).temp_dir, "recognizer-finetuned.safetensors")
    export_recognizer(path, recognizer.net, {"source": "fine-tuned in ExpressionLab"})
    return path


def use_fine_tuned(active: bool, request: gr.Request = None) -> str:
    key = session_key(request)
    entry = SESSION_MODELS.entry(key) if key else None
    if active and (entry is None or entry.recognizer is None):
        return "Fine-tune first: there is no fine-tuned model in this session yet."
    if entry is not None:
        entry.active = bool(active)
    return "Live and Synthesize use **your fine-tuned models**." if active else "Live and Synthesize use the shipped models."


def reset_models(request: gr.Request = None):
    key = session_key(request)
    if key:
        SESSION_MODELS.reset(key)
    return gr.update(value=False), "Back to the shipped models; your fine-tuned ones are deleted.", None


def build_finetune_tab() -> None:
    with gr.Tab("Fine-tune", id="finetune"):
        gr.Markdown("Upload labelled photos of faces — a zip of class folders (`happy/`, `sad/`, …), images with a "
                    "`filename,label` CSV, or images with one label for the batch. A fifth is held out to measure "
                    "before and after. The result is yours alone: other visitors keep the shipped models.")
        with gr.Row():
            with gr.Column():
                files = gr.File(file_count="multiple", file_types=[".zip", ".csv", "image"], label="Labelled faces")
                batch_label = gr.Dropdown(["(from folders or CSV)", *EXPRESSIONS], value="(from folders or CSV)",
                                          label="Label for the whole batch")
                steps = gr.Slider(10, MAX_STEPS, value=150, step=10, label="steps")
                joint = gr.Checkbox(value=True, label="Joint: also fine-tune the generator (intra-class loss + RDBP)")
                with gr.Row():
                    start = gr.Button("Fine-tune", variant="primary")
                    cancel = gr.Button("Cancel")
            with gr.Column():
                summary = gr.Markdown()
                rejected = gr.HTML()
                before = gr.Markdown()
                after = gr.Markdown()
                curves = gr.LinePlot(x="step", y="loss", color="curve", label="Loss", height=220)
        matrices = gr.HTML()
        with gr.Row():
            use = gr.Checkbox(value=False, label="Use my fine-tuned models in Live and Synthesize")
            reset = gr.Button("Reset to the shipped models")
            download = gr.File(label="Download the fine-tuned recognizer (safetensors)")
        use_status = gr.Markdown()
        event = start.click(run_fine_tune, inputs=[files, batch_label, steps, joint],
                            outputs=[summary, rejected, before, after, curves, matrices, download],
                            concurrency_limit=1, concurrency_id="fine-tune", api_name="fine_tune")
        cancel.click(None, cancels=[event])
        use.change(use_fine_tuned, inputs=use, outputs=use_status, api_name="use_fine_tuned")
        reset.click(reset_models, outputs=[use, use_status, download], api_name="reset_models")
