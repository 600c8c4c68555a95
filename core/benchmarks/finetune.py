"""Fine-tune benchmark: ingest an upload; fine-tune on 100 faces as the tab does."""

from __future__ import annotations

import dataclasses
import time

import numpy as np


def fer_upload_zip(data_dir: str, n: int) -> tuple[bytes, np.ndarray]:
    """A zip of n real FER valid faces shown large on a grey canvas, in class folders."""
    import io
    import zipfile

    from PIL import Image

    from core.labels import EXPRESSIONS
    from core.training.data import load_split

    valid = load_split(data_dir, "valid")
    index = np.flatnonzero(valid.ferplus_label >= 0)[:n]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        for i in index:
            canvas = Image.new("L", (400, 360), 128)
            canvas.paste(Image.fromarray(valid.images[i]).resize((220, 220), Image.BICUBIC), (90, 70))
            png = io.BytesIO()
            canvas.save(png, format="PNG")
            z.writestr(f"{EXPRESSIONS[valid.ferplus_label[i]]}/{i}.png", png.getvalue())
    return buffer.getvalue(), valid.ferplus_label[index]


def bench_finetune(data_dir: str, steps: int = 150, uploads: int = 500, frozen_stages: int | None = None) -> dict:
    """Ingest a 500-image upload; joint fine-tuning (the tab's settings) on 100 uploaded faces.

    The rest of the upload is held out: accuracy on it before and after shows what the speed costs.
    """
    from core import get_recognizer
    from core.errors import WeightsError
    from core.evaluation.recognition import evaluate_crops
    from core.training.finetune import fine_tune, fine_tune_config
    from core.training.ingest import ingest_upload

    recognizer = get_recognizer()
    archive, _ = fer_upload_zip(data_dir, uploads)
    t0 = time.perf_counter()
    data = ingest_upload([("upload.zip", archive)], recognizer.detector, recognizer.config.input_size)
    ingest_s = time.perf_counter() - t0
    try:
        from core import get_synthesizer

        synthesizer = get_synthesizer()
    except WeightsError:
        synthesizer = None
    config = fine_tune_config(steps, 100, synthesizer is not None)
    if frozen_stages is not None:
        config = dataclasses.replace(config, frozen_stages=frozen_stages)  # validated again
    # As the tab would with 125 uploaded faces: 100 to train on, 25 held out and read for its accuracy curve.
    curve = np.asarray(data.crops[100:125]), np.asarray(data.labels[100:125])
    t0 = time.perf_counter()
    tuned = fine_tune(recognizer, synthesizer, list(data.crops[:100]), list(data.labels[:100]), config,
                      valid=curve)
    finetune_s = time.perf_counter() - t0
    held_out = np.asarray(data.crops[100:]), np.asarray(data.labels[100:])
    before, after = (evaluate_crops(r.net, *held_out, r.device)["accuracy"] if len(held_out[1]) else None
                     for r in (recognizer, tuned.recognizer))
    return {"finetune_100_s": round(finetune_s, 2), f"ingest_{uploads}_s": round(ingest_s, 2),
            "faces_ingested": len(data.labels), "steps": steps, "joint": synthesizer is not None,
            "generator_every": config.generator_every, "frozen_stages": config.frozen_stages,
            "curve_faces": len(curve[1]), "held_out_faces": len(held_out[1]), "held_out_acc_before": before,
            "held_out_acc_after": after}
