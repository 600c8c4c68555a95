"""ExpressionLab core: faces, labels, recognizer, generator, training, weights.

Importing `core` loads no model and starts nothing; the names below are imported on first use.
"""

import threading

from core.errors import ExpressionLabError, InputError, WeightsError
from core.labels import AUS, EXPRESSIONS

__all__ = ["EXPRESSIONS", "ExpressionLabError", "InputError", "WeightsError", "Recognizer", "FaceDetector",
           "load_image", "resolve_device", "get_recognizer", "get_synthesizer", "measure_aus_crops", "AUS",
           "Synthesizer", "parse_text"]

_LAZY = {
    "Recognizer": "core.recognizer",
    "FaceDetector": "core.face.detection",
    "load_image": "core.face.images",
    "resolve_device": "core.device",
    "measure_aus_crops": "core.face.aus",
    "Synthesizer": "core.synthesizer",
    "parse_text": "core.text",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'core' has no attribute {name!r}")


_shared: dict = {}
_shared_lock = threading.Lock()


def get_recognizer():
    """The shipped recognizer, loaded once per process on first call."""
    with _shared_lock:
        if "recognizer" not in _shared:
            from core.recognizer import Recognizer

            _shared["recognizer"] = Recognizer.load()
        return _shared["recognizer"]


def get_synthesizer():
    """The shipped generator, loaded once per process on first call (WeightsError if not shipped)."""
    with _shared_lock:
        if "synthesizer" not in _shared:
            from core.synthesizer import Synthesizer

            _shared["synthesizer"] = Synthesizer.load()
        return _shared["synthesizer"]


def get_motion_model():
    """The shipped motion model (weights/motion.safetensors), loaded once per process; read-only, shared by every
    generator's photo edit and AU warp."""
    with _shared_lock:
        if "motion" not in _shared:
            from core.models.motion import MotionModel

            _shared["motion"] = MotionModel.load()
        return _shared["motion"]


def get_mesh_runtime():
    """The shipped tracking mesh on its runtime (weights/mesh_net.safetensors), loaded once per process and shared
    by every stream's tracker (ONNX Runtime sessions run from several threads)."""
    with _shared_lock:
        if "mesh_runtime" not in _shared:
            from core.models.mesh_runtime import MeshRuntime

            _shared["mesh_runtime"] = MeshRuntime.load()
        return _shared["mesh_runtime"]


def set_motion_model(model) -> None:
    """Put another motion model in the shipped one's place for this process (evaluations compare files); the AU
    warp built on the old one is dropped and built again on first use."""
    with _shared_lock:
        old = _shared.pop("au_warp", None)
        _shared["motion"] = model
    if old is not None:
        old.close()


def get_au_warp():
    """The AU warp of drawn faces (core.synthesis.au_warp), one per process: it depends on no generator, and its
    mesh graph is not built again for every session's fine-tuned generator."""
    motion = get_motion_model()
    with _shared_lock:
        if "au_warp" not in _shared:
            from core.synthesis.au_warp import AuWarp

            _shared["au_warp"] = AuWarp(motion)
        return _shared["au_warp"]

