"""Synthesis benchmark: generate one face; edit the face of a photo."""

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
    for i in range(warmup + runs // 2):
        t0 = time.perf_counter()
        synth.edit(frame, expression={"surprise": 1.0})
        t1 = time.perf_counter()
        if i >= warmup:
            edit.append((t1 - t0) * 1000)
    return {"generate_ms": stats(generate), "edit_ms": stats(edit), "torch_threads": torch.get_num_threads()}
