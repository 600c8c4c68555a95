"""Fine-tune tab: joint fine-tuning on the user's own labelled faces, for their session only."""

from __future__ import annotations

import html
import logging
import math
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr
import numpy as np

from core import EXPRESSIONS, InputError, get_recognizer
from core.errors import WeightsError
from demo.errors import UserError, shown
from demo.session_models import SESSION_MODELS, session_key

VALID_SHARE = 0.2
MAX_STEPS = 400
MAX_SECONDS = 300  # a fine-tune stops after 5 minutes whatever the steps
CANCELLED = "Cancelled: your models are unchanged."

log = logging.getLogger(__name__)


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


def _key(request) -> str:
    """The browser session; direct calls without a request (tests, scripts) share one key."""
    return session_key(request) or "anonymous"


def _check_request(files, batch_label, steps) -> tuple[int, str | None]:
    """(steps, batch label or None), or gr.Error naming what is wrong (the API can send anything)."""
    from core.labels import expression_index

    if not files:
        raise UserError("Upload a zip of class folders, or images with a CSV or a batch label.")
    try:
        steps = float(steps)
    except (TypeError, ValueError) as error:
        raise UserError(f"Steps must be a number between 10 and {MAX_STEPS}, not {shown(repr(steps))}.") from error
    if not (math.isfinite(steps) and 10 <= steps <= MAX_STEPS):
        raise UserError(f"Steps must be between 10 and {MAX_STEPS}, not {steps}.")
    label = None if batch_label in (None, "", "(from folders or CSV)") else batch_label
    if label is not None:
        try:
            expression_index(label)
        except InputError as error:
            raise UserError(shown(error)) from error
    return int(steps), label


@dataclass
class _Run:
    """One fine-tune of a session: its SESSION_MODELS token (Cancel, Reset or a newer run make it stop and
    install nothing), the event that stops its workers, and its start for the MAX_SECONDS limit."""
    key: str
    token: object
    stop: threading.Event = field(default_factory=threading.Event)
    started: float = field(default_factory=time.monotonic)

    def out_of_time(self) -> bool:
        return time.monotonic() - self.started > MAX_SECONDS

    def is_current(self) -> bool:
        return SESSION_MODELS.is_current(self.key, self.token)

    def should_stop(self) -> bool:
        return self.stop.is_set() or self.out_of_time() or not self.is_current()


def _shipped_recognizer():
    try:
        return get_recognizer()
    except WeightsError as error:
        raise UserError(f"The shipped recognizer cannot be loaded, so there is nothing to fine-tune ({shown(error)})."
                       ) from error


def _read_upload(files, label: str | None, recognizer, run: _Run):
    """The ingested upload, read in a worker thread. A generator (`yield from`): while the worker reads, it
    yields an update every half second, so the run stays cancellable; returns the data or raises gr.Error."""
    from core.training.ingest import ingest_upload

    read: dict = {}

    def work():
        try:
            read["value"] = ingest_upload([getattr(f, "name", f) for f in files], recognizer.detector,
                                          recognizer.config.input_size, batch_label=label, should_stop=run.should_stop)
        except Exception as error:  # noqa: BLE001 -- reported below
            read["error"] = error

    reader = threading.Thread(target=work, daemon=True, name=f"fine-tune-read-{run.key}")
    reader.start()
    while reader.is_alive():  # a large upload takes a while: keep the run cancellable meanwhile
        reader.join(0.5)
        if reader.is_alive():
            yield ("Reading the upload…", "", "", "", gr.skip(), gr.skip(), "", None)
    if "error" not in read:
        return read["value"]
    error = read["error"]
    if not run.is_current():
        raise UserError(CANCELLED)
    if run.out_of_time():
        raise UserError(f"The time limit ({MAX_SECONDS} s) was reached while reading the upload ({shown(error)}): "
                       "upload fewer images.")
    if isinstance(error, InputError):
        raise UserError(shown(error)) from error
    raise UserError(f"The upload could not be read ({type(error).__name__}).") from error


def _split(data) -> tuple[str, str, np.ndarray, np.ndarray]:
    """(summary, rejected files as HTML list items, train rows, held-out rows); gr.Error under 5 faces."""
    from core.training.finetune import split_train_valid

    rejected = "".join(f"<li><code>{html.escape(n)}</code>: {html.escape(r)}</li>" for n, r in data.rejected[:200])
    summary = f"**{len(data.labels)} faces** ready" + (f", {len(data.rejected)} files turned away:"
                                                       if data.rejected else ".")
    if len(data.labels) < 5:
        raise UserError(f"Only {len(data.labels)} usable faces: at least 5 are needed. "
                       + shown("; ".join(f"{n}: {r}" for n, r in data.rejected[:5])))
    train, valid = split_train_valid(data.labels, VALID_SHARE)
    if len(valid) == 0:
        train, valid = np.arange(len(data.labels)), np.arange(len(data.labels))
        summary += " (too few faces per class to hold any out: before/after are measured on the training faces)"
    return summary, rejected, train, valid


def _joint_synthesizer(joint: bool):
    """(the shipped synthesizer or None, a note for the summary)."""
    if not joint:
        return None, ""
    try:
        from core import get_synthesizer

        return get_synthesizer(), ""
    except WeightsError:
        return None, " No generator is shipped yet: fine-tuning the recognizer alone."


def _train(recognizer, synthesizer, data, train, valid, config, run: _Run, progress, texts: tuple, steps: int):
    """core.training.finetune.fine_tune in a worker thread. A generator (`yield from`): yields the texts and the
    curves at most every half second; returns (the result, the step records) or raises gr.Error."""
    from core.training import finetune

    updates: queue.Queue = queue.Queue()
    result: dict = {}

    def work():
        try:
            result["value"] = finetune.fine_tune(recognizer, synthesizer, list(data.crops[train]),
                                                 list(data.labels[train]), config, on_step=updates.put,
                                                 should_stop=run.should_stop,
                                                 valid=(data.crops[valid], data.labels[valid]))
        except Exception as error:  # noqa: BLE001 -- reported to the user below, the session keeps its models
            log.exception("fine-tuning failed")  # the details stay in the server log
            result["error"] = error

    thread = threading.Thread(target=work, daemon=True, name=f"fine-tune-{run.key}")
    thread.start()
    history: list[dict] = []
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
        yield (*texts, *_curves(history, _loss_curves(config)), "", None)
    thread.join()
    if "error" in result:  # the type only: an exception's text can hold server paths
        raise UserError(f"Fine-tuning failed; your models are unchanged ({type(result['error']).__name__}).")
    if not run.is_current():
        raise UserError(CANCELLED)
    return result["value"], history


def _install(run: _Run, tuned) -> list[str]:
    """Save the fine-tuned models and switch the session to them; the download paths, or gr.Error."""
    try:
        download = _export(run.key, tuned)
    except OSError as error:  # before the session switches: a failed save leaves it as it was
        raise UserError(f"Saving the fine-tuned model failed; your models are unchanged ({error.strerror})"
                       ) from error
    # Installed only if no Cancel or Reset came in the meantime (the check and the switch are one step).
    if not SESSION_MODELS.set(run.key, tuned.recognizer, tuned.synthesizer, run=run.token):
        for path in download:
            Path(path).unlink(missing_ok=True)
        raise UserError(CANCELLED)
    return download


def _after_texts(before: dict, after: dict, history: list[dict], steps: int, run: _Run) -> tuple[str, str]:
    """(the "After" line, the two confusion matrices as HTML)."""
    stopped_early = " — stopped at the time limit" if len(history) < steps and run.out_of_time() else ""
    after_text = (f"**After:** accuracy {after['accuracy']:.1%}, macro-F1 {after['macro_f1']:.2f} "
                  f"({len(history)} steps{stopped_early}, {time.monotonic() - run.started:.0f} s). Switch it on below "
                  "to use it in Live and Synthesize.")
    if after["accuracy"] < before["accuracy"]:
        after_text += (f"\n\n⚠️ **Accuracy fell** on the held-out faces ({before['accuracy']:.1%} → "
                       f"{after['accuracy']:.1%}, {after['n']} faces): the fine-tuned model is worse there than the "
                       "shipped one. Keep the shipped models, or try more faces per class or fewer steps.")
    matrices = (f"<div style='display:flex;gap:16px'>{confusion_html(before['confusion'], 'Before')}"
                f"{confusion_html(after['confusion'], 'After')}</div>")
    return after_text, matrices


def run_fine_tune(files, batch_label, steps, joint, request: gr.Request = None, progress=gr.Progress()):  # noqa: B008
    """Ingest, hold out, measure, fine-tune (streaming curves), measure again. A generator: yields updates.

    Reading the upload and training run in worker threads that stop when the run is cancelled, the tab
    is closed (gradio closes this generator: `finally` below) or MAX_SECONDS have passed.
    """
    from core.evaluation.recognition import evaluate_crops
    from core.training.finetune import fine_tune_config

    key = _key(request)
    steps, label = _check_request(files, batch_label, steps)
    recognizer = _shipped_recognizer()
    run = _Run(key, SESSION_MODELS.start_run(key))  # Cancel, Reset or a newer run make this one stop, install nothing
    try:
        data = yield from _read_upload(files, label, recognizer, run)
        summary, rejected, train, valid = _split(data)
        before = evaluate_crops(recognizer.net, data.crops[valid], data.labels[valid], recognizer.device)
        synthesizer, note = _joint_synthesizer(joint)
        summary += note
        config = fine_tune_config(steps, len(train), synthesizer is not None)
        before_text = (f"**Before:** accuracy {before['accuracy']:.1%}, macro-F1 {before['macro_f1']:.2f} on "
                       f"{len(valid)} held-out faces")
        texts = (summary, f"<ul>{rejected}</ul>", before_text, "")
        tuned, history = yield from _train(recognizer, synthesizer, data, train, valid, config, run, progress, texts,
                                           steps)
        after = evaluate_crops(tuned.recognizer.net, data.crops[valid], data.labels[valid], tuned.recognizer.device)
        download = _install(run, tuned)
    finally:
        run.stop.set()  # cancelled or closed: the workers stop at their next image or step; the session keeps its models
    after_text, matrices = _after_texts(before, after, history, steps, run)
    yield (*texts[:3], after_text, *_curves(history, _loss_curves(config)), matrices, download)


LOSS_CURVES = {"real": "real faces", "synth": "synthetic faces", "intra": "intra-class"}
ACCURACY_CURVES = ("training batches", "held-out faces")


def _loss_curves(config) -> list[str]:
    """The loss terms a run records: real faces always; the synthetic terms when a generator takes part."""
    if not config.use_synthetic:
        return [LOSS_CURVES["real"]]
    return [LOSS_CURVES["real"], LOSS_CURVES["synth"]] + ([LOSS_CURVES["intra"]] if config.intra_weight > 0 else [])


def _curves(history: list[dict], loss_names: list[str]):
    """(losses, accuracies) as long tables for the two line plots; curve names are short (they are the legend).

    Every update names all of the run's curves (a NaN row each): the plot fixes its colours and legend from
    the curves of the first data it gets, so one that appears later would never be drawn.
    """
    import pandas as pd

    keys = {name: key for key, name in LOSS_CURVES.items()}
    losses = [{"step": 0, "loss": float("nan"), "curve": name} for name in loss_names]
    losses += [{"step": r["step"], "loss": r[f"loss_{keys[name]}"], "curve": name} for name in loss_names
               for r in history if f"loss_{keys[name]}" in r]
    window = 10  # a batch of 32 faces gives a noisy accuracy: mean over the last steps
    recent = [r["acc_real"] for r in history if "acc_real" in r]
    accuracies = [{"step": 0, "accuracy": float("nan"), "curve": name} for name in ACCURACY_CURVES]
    accuracies += [{"step": r["step"], "accuracy": float(np.mean(recent[max(0, i + 1 - window): i + 1])),
                    "curve": ACCURACY_CURVES[0]}
                   for i, r in enumerate(r for r in history if "acc_real" in r)]
    accuracies += [{"step": r["step"], "accuracy": r["acc_valid"], "curve": ACCURACY_CURVES[1]} for r in history
                   if "acc_valid" in r]
    return pd.DataFrame(losses), pd.DataFrame(accuracies)


def _export(key: str, tuned) -> list[str]:
    """The fine-tuned recognizer and (joint runs) generator as safetensors in the session's temp dir."""
    folder = SESSION_MODELS.entry(key).temp_dir
    paths = [os.path.join(folder, "recognizer-finetuned.safetensors")]
    tuned.recognizer.save(paths[0], {"source": "fine-tuned in ExpressionLab"})
    if tuned.synthesizer is not None:
        paths.append(os.path.join(folder, "generator-finetuned.safetensors"))
        tuned.synthesizer.save(paths[1], {"source": "fine-tuned in ExpressionLab"})
    return paths


def cancel_fine_tune(request: gr.Request = None) -> str:
    """The Cancel button: besides gradio's cancel (which acts at the run's next update), tell the run itself, so
    one that is already past its last update installs nothing."""
    SESSION_MODELS.cancel_run(_key(request))
    return CANCELLED


def use_fine_tuned(active: bool, request: gr.Request = None):
    entry = SESSION_MODELS.entry(_key(request))
    if active and entry.recognizer is None:
        return False, "Fine-tune first: there is no fine-tuned model in this session yet."
    entry.active = bool(active)
    return bool(active), ("Live and Synthesize use **your fine-tuned models**." if active
                          else "Live and Synthesize use the shipped models.")


def reset_models(request: gr.Request = None):
    SESSION_MODELS.reset(_key(request))  # also stops a fine-tune that is running, which then installs nothing
    return (gr.update(value=False), "Back to the shipped models. Your fine-tuned models are removed from this "
            "server session (a download link already shown lasts up to 20 minutes).", None)


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
                summary = gr.Markdown("Upload faces and press Fine-tune.", elem_id="finetune-summary",
                                      min_height=40)
                rejected = gr.HTML()
                before = gr.Markdown()
                after = gr.Markdown(elem_id="finetune-after")
                # No fixed height: with one, the plot cut its own legend off below the title "curve".
                curves = gr.LinePlot(x="step", y="loss", color="curve", label="Loss", color_title="loss of",
                                     elem_id="finetune-loss")
                accuracy = gr.LinePlot(x="step", y="accuracy", color="curve", label="Accuracy", y_lim=[0, 1],
                                       color_title="accuracy on", elem_id="finetune-accuracy")
        matrices = gr.HTML()
        with gr.Row():
            use = gr.Checkbox(value=False, label="Use my fine-tuned models in Live and Synthesize")
            reset = gr.Button("Reset to the shipped models")
            download = gr.File(label="Download the fine-tuned recognizer and generator (safetensors)",
                               file_count="multiple")
        use_status = gr.Markdown()
        event = start.click(run_fine_tune, inputs=[files, batch_label, steps, joint],
                            outputs=[summary, rejected, before, after, curves, accuracy, matrices, download],
                            concurrency_limit=1, concurrency_id="fine-tune", api_name="fine_tune",
                            # progress (and the queue position while another fine-tune runs) on the summary only,
                            # not drawn over the curves and results as they stream in
                            show_progress_on=[summary])
        cancel.click(cancel_fine_tune, outputs=after, cancels=[event], api_name="cancel_fine_tune")
        # input, not change: refusing (no model yet) unticks the box without firing the event again
        use.input(use_fine_tuned, inputs=use, outputs=[use, use_status], api_name="use_fine_tuned")
        reset.click(reset_models, outputs=[use, use_status, download], api_name="reset_models")
