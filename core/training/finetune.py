"""Joint fine-tuning on a user's labelled faces (the Fine-tune tab and its benchmark)."""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from core.labels import EXPRESSIONS
from core.training.joint import JointConfig, JointState, run_joint

# The Fine-tune tab's settings (its benchmark uses the same), a named preset of JointConfig: joint
# learning with the intra-class loss and RDBP. The recognizer starts trained, so G joins at once. Only
# R's last stage, embedding and heads adapt: its first three stages keep their trained weights and
# statistics, which skips most of the backward pass; half as many synthetic as real faces per batch,
# and G and D updated every 3rd step, cut the rest (timings: docs/joint.md, `core.bench finetune`).
FINE_TUNE = JointConfig(steps=300, batch_real=32, batch_synth=16, intra_weight=0.1, generator_every=3,
                        frozen_stages=3)


def fine_tune_config(steps: int, train_faces: int, with_generator: bool) -> JointConfig:
    """FINE_TUNE fitted to an upload: batches no larger than the upload, no synthetic terms without a generator."""
    batch_real = min(FINE_TUNE.batch_real, train_faces)
    return dataclasses.replace(FINE_TUNE, steps=steps, batch_real=batch_real,
                               batch_synth=max(1, batch_real * FINE_TUNE.batch_synth // FINE_TUNE.batch_real),
                               use_synthetic=with_generator, intra_weight=FINE_TUNE.intra_weight if with_generator else 0.0)


def split_train_valid(labels: np.ndarray, share: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Stratified hold-out of an upload: about `share` of each class with 3 or more faces (at least one)."""
    rng = np.random.default_rng(seed)
    valid = []
    for k in np.unique(labels):
        index = rng.permutation(np.flatnonzero(labels == k))
        if len(index) >= 3:
            valid += list(index[: max(1, int(round(len(index) * share)))])
    valid = np.array(sorted(valid), np.int64)
    return np.setdiff1d(np.arange(len(labels)), valid), valid


def _label_index(label) -> int:
    """A class name or synonym, or an integer index into EXPRESSIONS; anything else is an InputError."""
    from core.errors import InputError
    from core.labels import expression_index

    if isinstance(label, str):
        return expression_index(label)
    if isinstance(label, (int, np.integer)) and not isinstance(label, (bool, np.bool_)):
        if 0 <= int(label) < len(EXPRESSIONS):
            return int(label)
        raise InputError(f"label index {int(label)} is not between 0 and {len(EXPRESSIONS) - 1}")
    raise InputError(f"a label must be a class name or an index between 0 and {len(EXPRESSIONS) - 1}, "
                     f"not {label!r:.40}")


@dataclass
class FineTuneResult:
    recognizer: object  # core.recognizer.Recognizer (a new one; the input is untouched)
    synthesizer: object | None  # core.synthesizer.Synthesizer, new, or None without a generator
    history: list[dict]
    rejected: list[tuple[int, str]]  # (index, reason) of inputs that could not be used


def faces_to_crops(images, size: int, recognizer) -> tuple[np.ndarray, list[int], list[tuple[int, str]]]:
    """Photos or FER-framed crops -> aligned crops [M, size, size], indices used, (index, reason) rejected."""
    from core.errors import InputError

    crops, used, rejected = [], [], []
    for i, image in enumerate(images):
        array = np.asarray(image) if isinstance(image, np.ndarray) else None
        if array is not None and array.ndim == 2 and array.shape == (size, size) and array.dtype == np.uint8:
            crops.append(array)  # already a FER-framed crop
            used.append(i)
            continue
        try:
            faces = recognizer.predict(image)
        except InputError as error:
            rejected.append((i, str(error)))
            continue
        if not faces:
            rejected.append((i, "no face found"))
            continue
        crops.append(faces[0].crop)
        used.append(i)
    out = np.stack(crops) if crops else np.zeros((0, size, size), np.uint8)
    return out, used, rejected


def fine_tune(recognizer, synthesizer, images, labels, config: JointConfig | None = None, on_step=None,
              should_stop=None, valid: tuple[np.ndarray, np.ndarray] | None = None,
              eval_every: int | None = None) -> FineTuneResult:
    """Joint fine-tuning on a user's labelled faces, without the UI.

    images: photos (paths, PIL images, arrays) or FER-framed uint8 crops; labels: class names or
    synonyms, or indices into EXPRESSIONS. Returns new models; the ones passed in are not changed.
    valid: held-out (FER-framed crops, label indices) read every eval_every steps (see run_joint).
    """
    from core.errors import InputError
    from core.recognizer import Recognizer

    if len(images) != len(labels):
        raise InputError(f"{len(images)} images but {len(labels)} labels")
    index = np.array([_label_index(y) for y in labels], np.int64)
    crops, used, rejected = faces_to_crops(images, recognizer.config.input_size, recognizer)
    if len(crops) == 0:
        raise InputError("none of the images holds a usable face")
    config = config or fine_tune_config(FINE_TUNE.steps, len(crops), synthesizer is not None)
    state = JointState.with_synthesizer(copy.deepcopy(recognizer.net), synthesizer)
    targets = F.one_hot(torch.from_numpy(index[used]), len(EXPRESSIONS)).float().numpy()
    run_joint(state, crops, targets, config, device=recognizer.device, on_step=on_step, should_stop=should_stop,
              valid=valid, eval_every=eval_every)
    new_recognizer = Recognizer(state.recognizer, recognizer.device, source="fine-tuned")
    new_synthesizer = None
    if synthesizer is not None:
        from core.synthesizer import Synthesizer

        new_synthesizer = Synthesizer(state.generator, copy.deepcopy(synthesizer.e), state.class_aus,
                                      synthesizer.device, source="fine-tuned", d=state.discriminator,
                                      metadata={**synthesizer.metadata, "fine_tuned": True})
    return FineTuneResult(new_recognizer, new_synthesizer, state.history, rejected)
