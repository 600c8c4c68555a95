"""MediaPipe's short-range face detector (BlazeFace), run on LiteRT rather than inside a MediaPipe graph.

The same .tflite file the mediapipe wheel ships, with the steps around it done here as its
face_detection_short_range graph does them (its options, read from that graph, are SHORT_RANGE): the image
letterboxed to the model's square input in [-1, 1], SSD anchors, boxes and six keypoints decoded, sigmoid
scores, weighted non-maximum suppression. On the AVX2-only 2-core host MediaPipe's graph took 3.1-3.9 ms a
640x480 frame where this takes 1.7-2.1 (`python -m core.bench live-options`); the detections agree with the
graph's (tests/test_faces.py). The full-range model runs the same way (FULL_RANGE; 5.7 against 11 ms there): the
live tracker looks with it for faces too small for the short-range model; the photo pipeline keeps MediaPipe's graphs
(its mesh, whose crop follows the detection's box, moved by up to 2.5 px with LiteRT's boxes).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from core.face.detection import iou


@dataclass(frozen=True)
class BlazeFaceModel:
    file: str  # in mediapipe/modules/face_detection/
    input: int  # square input, pixels
    # the graph's SsdAnchorsCalculator options as (stride, anchors a cell) per feature map, each anchor a unit
    # square centred on its cell (fixed_anchor_size)
    strides_and_anchors: tuple[tuple[int, int], ...]
    # the graph's score threshold: MediaPipe 0.10's FaceDetection solution never passes its
    # min_detection_confidence on to it (0.2 and 0.9 give the same faces), so this is what it always applied
    min_score: float


SHORT_RANGE = BlazeFaceModel("face_detection_short_range.tflite", 128, ((8, 2), (16, 6)), 0.5)  # 896 anchors
FULL_RANGE = BlazeFaceModel("face_detection_full_range_sparse.tflite", 192, ((4, 1),), 0.6)  # 2,304 anchors
NUM_KEYPOINTS = 6  # right eye, left eye, nose tip, mouth centre, right ear tragion, left ear tragion
SCORE_CLIP = 100.0
NMS_IOU = 0.3


@dataclass
class Detection:
    score: float
    box: tuple[float, float, float, float]  # (x0, y0, x1, y1) in frame pixels
    keypoints: np.ndarray  # float64 [6, 2] in frame pixels


def model_path(model: BlazeFaceModel) -> Path:
    import importlib.util

    spec = importlib.util.find_spec("mediapipe")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("mediapipe is not installed: its wheel carries the face detectors' models")
    return Path(spec.submodule_search_locations[0]) / "modules" / "face_detection" / model.file


@cache
def anchors(model: BlazeFaceModel) -> np.ndarray:
    """float32 [N, 2]: anchor centres in the model's input, relative (0..1)."""
    centres = []
    for stride, per_cell in model.strides_and_anchors:
        cells = model.input // stride
        y, x = np.meshgrid((np.arange(cells) + 0.5) / cells, (np.arange(cells) + 0.5) / cells, indexing="ij")
        centres.append(np.repeat(np.stack([x.ravel(), y.ravel()], axis=1), per_cell, axis=0))
    return np.concatenate(centres).astype(np.float32)


class BlazeFace:
    """detect(rgb) -> faces as MediaPipe's graph for `model` finds them; one interpreter, not thread-safe (FaceDetector
    locks; one a stream)."""

    def __init__(self, model: BlazeFaceModel = SHORT_RANGE, min_confidence: float | None = None):
        from ai_edge_litert.interpreter import Interpreter

        self.model = model
        self.min_confidence = model.min_score if min_confidence is None else min_confidence
        # one thread: every stream has its own finder, and the other core serves the other streams
        self._interpreter = Interpreter(model_path=str(model_path(model)), num_threads=1)
        self._interpreter.allocate_tensors()
        self._input = self._interpreter.get_input_details()[0]["index"]
        # (models name their outputs differently: boxes and keypoints are the 16 values a row)
        outputs = {int(o["shape"][-1]): o["index"] for o in self._interpreter.get_output_details()}
        self._boxes, self._scores = outputs[4 + 2 * NUM_KEYPOINTS], outputs[1]
        self._tensor = np.empty((1, model.input, model.input, 3), np.float32)

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        """Faces in an RGB uint8 frame [H, W, 3], best score first."""
        import cv2

        size = self.model.input
        h, w = rgb.shape[:2]
        scale = size / max(h, w)
        pad = np.array([(size - w * scale) / 2, (size - h * scale) / 2])
        # frame pixel p -> input pixel p * scale + pad in OpenCV's coordinates, as MediaPipe's ImageToTensor warps
        # (with the pixel-centre correction the keypoints moved by up to 11 px on a 640x480 frame)
        matrix = np.array([[scale, 0.0, pad[0]], [0.0, scale, pad[1]]])
        letterboxed = cv2.warpAffine(rgb, matrix, (size, size), flags=cv2.INTER_LINEAR,
                                     borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
        np.multiply(letterboxed, 1 / 127.5, out=self._tensor[0], casting="unsafe")
        self._tensor -= 1.0
        self._interpreter.set_tensor(self._input, self._tensor)
        self._interpreter.invoke()
        raw = self._interpreter.get_tensor(self._boxes)[0]
        logits = np.clip(self._interpreter.get_tensor(self._scores)[0, :, 0].astype(np.float64), -SCORE_CLIP, SCORE_CLIP)
        scores = 1 / (1 + np.exp(-logits))
        keep = np.flatnonzero(scores >= self.min_confidence)
        if keep.size == 0:
            return []
        raw, scores, centres = raw[keep].astype(np.float64), scores[keep], anchors(self.model)[keep] * size
        # x, y offsets in input pixels from the anchor's centre; box width and height in input pixels
        half = raw[:, 2:4] / 2
        boxes = np.concatenate([raw[:, :2] + centres - half, raw[:, :2] + centres + half], axis=1)
        points = raw[:, 4 : 4 + 2 * NUM_KEYPOINTS].reshape(-1, NUM_KEYPOINTS, 2) + centres[:, None]
        faces = []
        for score, box, keypoints in _weighted_nms(scores, boxes, points):
            box = (box.reshape(2, 2) - pad) / scale
            faces.append(Detection(score, tuple(float(v) for v in box.ravel()), (keypoints - pad) / scale))
        return faces

    def close(self) -> None:
        self._interpreter = None


def _weighted_nms(scores: np.ndarray, boxes: np.ndarray, points: np.ndarray):
    """(score, box [4], keypoints [6, 2]) a face: each cluster of overlapping candidates (IoU > NMS_IOU with its
    best) averaged by score, with its best's score, as MediaPipe's WEIGHTED non-maximum suppression does."""
    order = np.argsort(-scores, kind="stable")
    while order.size:
        overlap = iou(boxes[order[0]], boxes[order]) > NMS_IOU
        cluster = order[overlap]
        weights = scores[cluster] / scores[cluster].sum()
        yield (float(scores[order[0]]), weights @ boxes[cluster],
               np.tensordot(weights, points[cluster], axes=1))
        order = order[~overlap]
