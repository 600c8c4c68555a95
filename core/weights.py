"""Shipped weights: one typed registry, sha256-checked safetensors loading, atomic saving.

Nothing here unpickles anything: weights and training checkpoints are safetensors files whose
metadata (config, version, counters) is JSON.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from core.errors import WeightsError

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class WeightsInfo:
    name: str
    file: str
    sha256: str
    description: str


# Update sha256 together with the file (sha256sum weights/NAME.safetensors).
REGISTRY: dict[str, WeightsInfo] = {
    info.name: info
    for info in (
        WeightsInfo(
            name="recognizer",
            file="recognizer.safetensors",
            sha256="71d13b851fe9df7780a11c9a64e20e49aabacf480f64c0b30e920f318d53f4fd",
            description="FER+ 8-class recognizer (+ FER2013 7-class head), 48x48 grey, EMA weights",
        ),
        WeightsInfo(
            name="generator",
            file="generator.safetensors",
            sha256="a215cedbe918b23caf79a350edd31406fd772637a2061ca74c0fa5ca6d091cb1",
            description="FESGAN-style generator: EMA G and E (48x48 grey, 64-d identity, 8 expressions + 17 AUs), "
                        "and D in half precision for joint fine-tuning",
        ),
        WeightsInfo(
            name="edit_guide",
            file="edit_guide.safetensors",
            sha256="7f4958d86ea7d491b7e9a8107f17c2794b0009f66d58b0e109ff23790f9d8783",
            description="a second FER+ recognizer (other seed and widths, rare classes weighted up) that semantic "
                        "guidance of photo edits climbs, so that the shipped recognizer reading the edits is not the one steering",
        ),
        WeightsInfo(
            name="motion",
            file="motion.safetensors",
            sha256="f7c7ab16d6eaa522d5bcc5319251519e1a5588554677346070d54136d6c97b6e",
            description="motion model: how the 478-point mesh moves with each of the 17 AUs (ridge blendshapes, "
                        "pose-normalised), with class-typical AU targets and per-AU photo gains",
        ),
        WeightsInfo(
            name="mesh_net",
            file="mesh_net.safetensors",
            sha256="c4a20e30067e33c7b1a0cf49b470f23944403bef961553f15d5e43b8199af7b0",
            description="tracking mesh: a small CNN that re-fits the 478-point mesh and reads the 17 AUs on a 48x48 "
                        "grey crop, so live tracking runs MediaPipe only to find faces",
        ),
    )
}


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_safetensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Tensors and decoded JSON metadata of a safetensors file (no sha check: see load_weights)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {str(path)!r} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw_meta = f.metadata() or {}
            tensors = {key: f.get_tensor(key) for key in f.keys()}
    except Exception as error:  # safetensors raises its own error types for corrupt headers
        raise WeightsError(f"{str(path)!r} is not a valid safetensors file: {error}") from error
    try:
        metadata = {key: json.loads(value) for key, value in raw_meta.items()}
    except json.JSONDecodeError as error:
        raise WeightsError(f"{str(path)!r} has unreadable metadata: {error}") from error
    return tensors, metadata


def load_weights(name: str, path: str | Path | None = None) -> tuple[dict[str, torch.Tensor], dict]:
    """Load shipped weights by registry name, refusing files whose sha256 does not match.

    `path` loads a user file instead (e.g. a downloaded fine-tune); no sha is known for it.
    """
    if path is not None:
        return read_safetensors(path)
    if name not in REGISTRY:
        raise WeightsError(f"unknown weights {name!r}; known: {', '.join(REGISTRY)}")
    info = REGISTRY[name]
    file = WEIGHTS_DIR / info.file
    if not file.is_file():
        raise WeightsError(f"shipped weights {str(file)!r} are missing; see weights/README.md")
    actual = sha256_of(file)
    if actual != info.sha256:
        raise WeightsError(
            f"{file.name} has sha256 {actual}, expected {info.sha256}: the file is corrupt or was "
            "replaced (a Git LFS pointer?); restore it from the repository"
        )
    return read_safetensors(file)


def save_safetensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict) -> None:
    """Write atomically (temp file in the same directory, then rename): readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    meta = {key: json.dumps(value) for key, value in metadata.items()}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=meta)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; weights are not secrets
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)

