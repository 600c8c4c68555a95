"""Synthesis benchmark: generate one face; edit the face of a 640x480 and of a 1920x1080 photo (into each class)."""

from __future__ import annotations

import time

from core.benchmarks.common import stats, webcam_frame


def bench_synth(runs: int = 100, warmup: int = 10, synthesizer=None) -> dict:
    """Generate (one new face) and edit (the face of a 640x480 photo), each end to end."""
    import torch

    from core import get_synthesizer

    synth = synthesizer or get_synthesizer()
    frame = webcam_frame()
    generate, edit = [], []
    for i in range(warmup + runs):
        t0 = time.perf_counter()
        synth.generate(expression={"happiness": 1.0}, aus={"AU12": 0.8}, seed=i, n=1)
        t1 = time.perf_counter()
        if i >= warmup:
            generate.append((t1 - t0) * 1000)
    edit = _time_edits(synth, frame, warmup, runs // 2)
    edit_1080p = _time_edits(synth, webcam_frame(1920, 1080), max(1, warmup // 2), max(2, runs // 4))
    return {"generate_ms": stats(generate), "edit_ms": stats(edit), "edit_1080p_ms": stats(edit_1080p),
            "torch_threads": torch.get_num_threads()}


def _time_edits(synth, photo, warmup: int, runs: int) -> list[float]:
    """Milliseconds per edit of the photo's face, end to end (decode, detect, warp, appearance), each of the 7 classes
    in turn: guidance takes its step only where its recognizer does not read the class already, so one class alone
    would time one case."""
    from core.labels import EXPRESSIONS

    times = []
    for i in range(warmup + runs):
        t0 = time.perf_counter()
        synth.edit(photo, expression={EXPRESSIONS[1 + i % 7]: 1.0})
        if i >= warmup:
            times.append((time.perf_counter() - t0) * 1000)
    return times
