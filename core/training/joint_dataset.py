"""Joint learning (FESGAN stage 2) on a labelled data set, as `python -m core.train joint` runs it."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np

from core.evaluation.recognition import evaluate_crops
from core.training.data import load_split, trainable_index
from core.training.joint import JointConfig, JointState, run_joint
from core.training.joint_experiments import stratified_fraction


def joint_on_dataset(data: str, out: str | Path, config: JointConfig, fraction: float = 1.0,
                     recognizer_path=None, generator_path=None, device: str = "auto", log=print) -> dict:
    """Fine-tune a recognizer and generator together on (a stratified share of) train; read valid before and after.

    Writes OUT/log.jsonl (the resolved config first, then every 25th step) and OUT/{recognizer,generator}.safetensors.
    """
    from core.recognizer import Recognizer
    from core.synthesizer import Synthesizer

    recognizer = Recognizer.load(path=recognizer_path, device=device)
    synthesizer = Synthesizer.load(path=generator_path, device=device)
    train = load_split(data, "train")
    train = train.subset(trainable_index(train))
    if fraction < 1:
        train = train.subset(stratified_fraction(train.soft_targets.argmax(axis=1), fraction, config.seed))
    valid = load_split(data, "valid")
    valid = valid.subset(np.flatnonzero(valid.ferplus_label >= 0))
    before = evaluate_crops(recognizer.net, valid.images, valid.ferplus_label, recognizer.device)
    state = JointState.with_synthesizer(recognizer.net, synthesizer)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "log.jsonl", "a") as file:
        def write(record: dict) -> None:
            file.write(json.dumps(record) + "\n")
            file.flush()
            log(json.dumps(record))

        write({"event": "config", "config": asdict(config), "fraction": fraction, "train_faces": len(train)})
        run_joint(state, train.images, train.soft_targets, config, fer2013_labels=train.fer2013_label,
                  device=recognizer.device,
                  on_step=lambda r: write(r) if r["step"] % 25 == 0 or r["step"] == config.steps else None)
    after = evaluate_crops(state.recognizer, valid.images, valid.ferplus_label, recognizer.device)
    Recognizer(state.recognizer.float(), recognizer.device).save(out / "recognizer.safetensors",
                                                                 {"joint": asdict(config)})
    tuned = Synthesizer(state.generator.float(), synthesizer.e, state.class_aus, synthesizer.device,
                        d=state.discriminator, metadata=synthesizer.metadata)
    tuned.save(out / "generator.safetensors", {"joint": asdict(config)})
    return {"event": "done", "train_faces": len(train), "valid_accuracy_before": before["accuracy"],
            "valid_accuracy_after": after["accuracy"]}
