"""The face mesh on a face that is already detected: MediaPipe's landmark graph fed the detector's own detection.

MediaPipe's FaceMesh solution runs its short-range face detector on every image it is given in static mode,
so fitting it on a face the photo detector has just found detected that face twice. This graph takes the
detection (box and the six keypoints) instead and goes straight to the ROI and the landmark model, with the
same subgraphs the FaceMesh solution uses after its detector (FaceDetectionFrontDetectionToRoi, FaceLandmarkCpu).
"""

from __future__ import annotations

import numpy as np

from core.face.detection import quiet_mediapipe

_CONFIG = """
input_stream: "image"
input_stream: "detection"
output_stream: "face_landmarks"
input_side_packet: "with_attention"
node { calculator: "ImagePropertiesCalculator" input_stream: "IMAGE:image" output_stream: "SIZE:image_size" }
node {
  calculator: "FaceDetectionFrontDetectionToRoi"
  input_stream: "DETECTION:detection" input_stream: "IMAGE_SIZE:image_size" output_stream: "ROI:roi"
}
node {
  calculator: "FaceLandmarkCpu"
  input_stream: "IMAGE:image" input_stream: "ROI:roi" output_stream: "LANDMARKS:face_landmarks"
  input_side_packet: "WITH_ATTENTION:with_attention"
}
"""


class RoiMesh:
    """478 landmarks (with irises) of the face a MediaPipe Detection describes; not thread-safe (FaceDetector locks)."""

    def __init__(self):
        quiet_mediapipe()
        from google.protobuf import text_format
        from mediapipe.framework import calculator_pb2
        from mediapipe.python.solution_base import SolutionBase

        from core.face.mp_graph import lean

        config = text_format.Parse(_CONFIG, calculator_pb2.CalculatorGraphConfig())
        self._graph = lean(SolutionBase, graph_config=config, side_inputs={"with_attention": True},
                           outputs=["face_landmarks"])

    def landmarks(self, crop: np.ndarray, detection, photo_size: tuple[int, int], left: float, top: float,
                  scale: float):
        """The serialized NormalizedLandmarkList in `crop` (crop pixel = (photo pixel - (left, top)) * scale),
        or None.

        `detection` is in relative coordinates of the photo (width, height = photo_size), as its detector gave it.
        """
        inside = _into_crop(detection, photo_size, (crop.shape[1], crop.shape[0]), left, top, scale)
        return next(iter(self._graph.run({"image": crop, "detection": inside})["face_landmarks"]), None)

    def close(self) -> None:
        self._graph.close()


def _into_crop(detection, photo_size, crop_size, left: float, top: float, scale: float):
    """A copy of a relative-coordinate Detection moved from the photo into the crop (continuous coordinates,
    pixel i spanning [i, i + 1), as FaceDetector._mesh_in_box maps the landmarks back)."""
    (pw, ph), (cw, ch) = photo_size, crop_size

    def x(rel: float) -> float:
        return ((rel * pw - 0.5 - left) * scale + 0.5) / cw

    def y(rel: float) -> float:
        return ((rel * ph - 0.5 - top) * scale + 0.5) / ch

    out = type(detection)()
    out.CopyFrom(detection)
    data = out.location_data
    box = data.relative_bounding_box
    box.xmin, box.ymin = x(box.xmin), y(box.ymin)
    box.width, box.height = box.width * pw * scale / cw, box.height * ph * scale / ch
    for point in data.relative_keypoints:
        point.x, point.y = x(point.x), y(point.y)
    return out
