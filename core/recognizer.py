"""The expression recognizer: config, network (which owns its loss) and the Recognizer facade."""

from __future__ import annotations

import threading
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from core.labels import EXPRESSIONS
from core.models.recognizer import RecognizerConfig, RecognizerNet, predict_probs

# "onnx-int8": ONNX Runtime on the int8 graph (core/models/quantization.py); "onnx": on the float graph.
RUNTIMES = ("auto", "onnx-int8", "onnx", "torch")


@dataclass
class FacePrediction:
    """One recognised face. Coordinates are pixels of the image given to Recognizer.predict."""

    box: tuple[float, float, float, float]  # (x0, y0, x1, y1)
    landmarks: np.ndarray  # (478, 3); NaN when only a box was found
    probs: dict[str, float]  # over EXPRESSIONS, sums to 1
    label: str
    crop: np.ndarray  # the aligned uint8 grey crop the recognizer saw
    detector: str
    aus: dict[str, float] | None = None


class Recognizer:
    """Faces in, expressions out. Used by the UI, the CLIs, the tests and user scripts.

        r = Recognizer.load()
        faces = r.predict(image)       # largest face first; [] when none
        r.predict_crops(crops)         # uint8 [N, H, W] FER-framed grey crops -> float [N, 8]
    """

    def __init__(self, net: RecognizerNet, device: torch.device, source: str = "memory",
                 weights_sha256: str | None = None, runtime: str = "auto"):
        if runtime not in RUNTIMES:
            raise ValueError(f"runtime must be one of {RUNTIMES}, not {runtime!r}")
        self.net = net.to(device).to(memory_format=torch.channels_last).eval()
        self.device = device
        self.source = source
        self.weights_sha256 = weights_sha256
        self._runtime = runtime
        self._onnx = None
        self._photo_detector = None
        self._detector_lock = threading.Lock()
        self._runtime_lock = threading.Lock()

    @property
    def config(self) -> RecognizerConfig:
        return self.net.config

    @classmethod
    def load(cls, name: str = "recognizer", path=None, device: str = "auto", runtime: str = "auto") -> Recognizer:
        """Shipped weights by name (sha256-checked), or a safetensors file from `path` (as save() writes).

        runtime: "onnx-int8" (ONNX Runtime on the int8 graph derived from these weights and the activation
        ranges measured on them), "onnx" (ONNX Runtime, float), "torch", or "auto": the first of these that
        these weights and the installed packages allow on CPU (docs/limits.md).
        """
        from core.checkpoint import load_recognizer
        from core.device import resolve_device
        from core.weights import REGISTRY, sha256_of

        net, _ = load_recognizer(name, path)
        sha = sha256_of(path) if path else REGISTRY[name].sha256  # the shipped file's sha was just checked
        return cls(net, resolve_device(device), source=str(path) if path else f"shipped:{name}",
                   weights_sha256=sha, runtime=runtime)

    @property
    def runtime(self) -> str:
        """The runtime predictions run on: "onnx-int8", "onnx" or "torch"."""
        return self._runtime if self._onnx_session() is not None else "torch"

    def _onnx_session(self):
        if self._runtime == "torch" or self.weights_sha256 is None or self.device.type != "cpu":
            return None
        with self._runtime_lock:
            if self._onnx is None:
                self._onnx = self._open_onnx()
        return self._onnx

    def _open_onnx(self):
        """The session the requested runtime allows ("auto" settles on the first that opens), or None (torch)."""
        from core.errors import WeightsError
        from core.models import onnx_runtime

        requested = self._runtime
        for runtime in (("onnx-int8", "onnx") if requested == "auto" else (requested,)):
            int8 = runtime == "onnx-int8"
            if requested == "auto" and not onnx_runtime.runtime_available(int8):
                continue
            try:
                session = onnx_runtime.load_session(self.net, self.weights_sha256, int8=int8)
            except OSError as error:  # e.g. a read-only cache: "auto" still answers, on torch
                if requested != "auto":
                    raise
                warnings.warn(f"ONNX Runtime unavailable ({error}); the recognizer runs on torch", stacklevel=3)
                break
            except Exception as error:  # the quantizer failing (another onnxruntime?): "auto" takes the float graph
                if requested != "auto" or not int8:
                    raise
                warnings.warn(f"the int8 graph could not be made ({error!r}); the recognizer runs in float",
                              stacklevel=3)
                continue
            if session is not None:
                self._runtime = runtime
                return session
            if requested != "auto":
                raise WeightsError("no int8 activation ranges were measured on these weights "
                                   "(python -m core.export calibrate); use runtime='onnx'")
        self._runtime = "torch"
        return None

    def save(self, path, extra: dict | None = None) -> None:
        """Write the network with its config, as load(path=...) reads it back."""
        from core.checkpoint import export_recognizer

        export_recognizer(path, self.net, extra)

    @property
    def detector(self):
        with self._detector_lock:
            if self._photo_detector is None:
                from core.face.detection import FaceDetector

                self._photo_detector = FaceDetector(mode="photo")
        return self._photo_detector

    def predict_crops(self, crops, mirror: bool = True) -> np.ndarray:
        """Probabilities [N, 8] over EXPRESSIONS for uint8 [N, H, W] grey crops framed like FER2013.

        Crops of another size are resized to the model's input size. mirror averages each crop's
        probabilities with those of its mirror image (twice the work; see docs/limits.md for what it buys).
        """
        return self.predict_crops_with_fer2013(crops, mirror)[0]

    def predict_crops_with_fer2013(self, crops, mirror: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
        """(FER+ probabilities [N, 8], FER2013 probabilities [N, 7] or None without that head)."""
        from core.errors import InputError

        array = np.asarray(crops)
        if array.ndim != 3 or array.shape[1] < 2 or array.shape[2] < 2:
            raise InputError(f"crops must be a uint8 array [N, H, W]; got shape {array.shape}")
        if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
            raise InputError(f"crops must be a uint8 array [N, H, W]; got dtype {array.dtype}")
        if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
            raise InputError("crops contain NaN or infinite values")
        array = _resize_crops(array, self.config.input_size)
        session = self._onnx_session()
        if session is not None:
            p8, p7 = session.run(array, mirror)
            return p8, (p7 if p7.shape[1] else None)
        p8, p7 = predict_probs(self.net, torch.from_numpy(array), self.device, flip_tta=mirror)
        return p8.numpy(), (p7.numpy() if p7 is not None else None)

    def predict(self, image, detector=None, mirror: bool = False) -> list[FacePrediction]:
        """Every face in `image` (path, bytes, PIL image or array), largest first.

        `detector` overrides the photo detector, e.g. a FaceDetector(mode="video") per webcam stream.
        mirror as in predict_crops; off by default: it is worth 0.1 point of FER+ accuracy (docs/limits.md)
        for twice the recognizer's time.
        """
        from core.face.alignment import align_face
        from core.face.images import load_image, to_grey

        rgb = load_image(image)
        faces = (detector or self.detector).detect(rgb)
        if not faces:
            return []
        grey = to_grey(rgb)
        crops = np.stack([align_face(grey, face, self.config.input_size) for face in faces])
        probs = self.predict_crops(crops, mirror)
        return [
            FacePrediction(
                box=face.box, landmarks=face.landmarks,
                probs={name: float(p) for name, p in zip(EXPRESSIONS, row)},
                label=EXPRESSIONS[int(row.argmax())], crop=crop, detector=face.detector,
                aus=face_aus(face.landmarks, face.aus),
            )
            for face, row, crop in zip(faces, probs, crops)
        ]


def face_aus(landmarks: np.ndarray, read: np.ndarray | None = None) -> dict[str, float] | None:
    """AU intensities of one face (those its detector read, else measured on its mesh), or None without a mesh."""
    from core.face.aus import measure_aus
    from core.labels import AUS

    values = measure_aus(landmarks) if read is None else read
    if not np.isfinite(values).all():
        return None
    return {name: float(v) for name, v in zip(AUS, values)}


def _resize_crops(crops: np.ndarray, size: int) -> np.ndarray:
    import cv2

    crops = crops if crops.dtype == np.uint8 else np.clip(crops, 0, 255).astype(np.uint8)
    if crops.shape[1:] == (size, size):
        return np.ascontiguousarray(crops)
    if len(crops) == 0:
        return np.zeros((0, size, size), np.uint8)
    return np.stack([cv2.resize(c, (size, size), interpolation=cv2.INTER_AREA) for c in crops])
