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
