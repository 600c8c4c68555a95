"""Faces of a video stream: MediaPipe's face mesh in tracking mode, kept as cheap as the stream allows.

A mesh graph built for k faces runs its face detector on every frame while it tracks fewer than k (5.8 ms
a 640x480 frame with one face and k = 4, 3.3 ms with k = 1, docs/limits.md). So the stream is tracked by a
one-face graph, and a short-range detector (`core.bench live-options` short_range_detector_ms) looks for more
faces every CHECK_EVERY frames; when it
sees several, the multi-face graph takes over until one face is left. Frames are not downscaled: the mesh
crops and resizes the face itself, and a half-size frame measured no faster (3.8 vs 3.3 ms).
"""

from __future__ import annotations

import numpy as np

from core.face.detection import DetectedFace, box_of, landmarks_to_pixels, quiet_mediapipe

CHECK_EVERY = 5  # frames between looks for new faces (0.5 s at the webcam's 10 frames/s)
BACK_TO_ONE_AFTER = 10  # frames the multi-face graph must see at most one face before the one-face graph resumes


class StreamDetector:
    """Faces of consecutive frames of one stream, largest first (not thread-safe: FaceDetector locks it)."""

    def __init__(self, max_faces: int = 4, min_confidence: float = 0.5):
        quiet_mediapipe()
        import mediapipe as mp

        from core.face.mp_graph import lean

        def mesh(faces: int):
            return lean(mp.solutions.face_mesh.FaceMesh, static_image_mode=False, max_num_faces=faces,
                        refine_landmarks=True,  # the AUs read the irises
                        min_detection_confidence=min_confidence, min_tracking_confidence=0.5)

        self.max_faces = max_faces
        self._mesh_graph = mesh
        self._single = mesh(1)
        self._multi = mesh(max_faces) if max_faces > 1 else None
        self._finder = (lean(mp.solutions.face_detection.FaceDetection, model_selection=0,
                             min_detection_confidence=min_confidence) if max_faces > 1 else None)
        self._use_multi = False
        self._frame = 0
        self._lonely = 0
        self._tracked = 0

    def close(self) -> None:
        for graph in (self._single, self._multi, self._finder):
            if graph is not None:
                graph.close()
        self._single = self._multi = self._finder = None

    def reset(self) -> None:
        """Forget the faces tracked (MediaPipe keeps them inside its graphs: new graphs); the next frame is handled
        as a stream's first."""
        if self._single is None:
            return  # closed
        single = self._mesh_graph(1)
        multi = self._mesh_graph(self.max_faces) if self.max_faces > 1 else None
        for graph in (self._single, self._multi):
            if graph is not None:
                graph.close()
        self._single, self._multi = single, multi
        self._use_multi, self._frame, self._lonely, self._tracked = False, 0, 0, 0

    def _choose_graph(self, image: np.ndarray) -> None:
        if self._multi is None or self._use_multi or self._frame % CHECK_EVERY:
            return
        if len(self._finder.run({"image": image})["detections"]) > 1:
            self._use_multi, self._lonely = True, 0

    def detect(self, rgb: np.ndarray) -> list[DetectedFace]:
        self._choose_graph(rgb)
        graph = self._multi if self._use_multi else self._single
        found = graph.run({"image": rgb})["multi_face_landmarks"]
        if not found and self._tracked:
            # Tracking lost a face that moved (its last box missed it): the graph detects on its next call, so
            # that call is this frame's again rather than the next one's (no frame without the face).
            found = graph.run({"image": rgb})["multi_face_landmarks"]
        self._tracked = len(found)
        self._frame += 1
        h, w = rgb.shape[:2]
        faces = []
        for landmarks in found:
            points = landmarks_to_pixels(landmarks, w, h)
            faces.append(DetectedFace(box_of(points), points, 1.0, "mesh"))
        faces.sort(key=lambda f: f.area, reverse=True)
        if self._use_multi:
            self._lonely = self._lonely + 1 if len(faces) <= 1 else 0
            self._use_multi = self._lonely < BACK_TO_ONE_AFTER
        return faces[: self.max_faces]
