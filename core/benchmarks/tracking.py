"""What the live path's trackers cost in landmarks, AUs and readings: each against MediaPipe's photo mesh.

640x480 clips made from real faces, at the webcam's 10 frames/s: grace_hopper.jpg gliding, turning and zooming
as a person in front of a webcam, and twice as fast, turning and zooming more; the same face sliding off the
frame's edge and back; FER+ test faces (4x upscaled) each held for a while at a drifting place; and
grace_hopper.jpg re-expressed (neutral -> happiness -> neutral -> surprise, photo edits) while it glides, so a
tracker must follow the face's own movement, not only the head's. Every frame is also read by the photo
pipeline (MediaPipe's detector and refined mesh on that frame alone), the reference both trackers are held to;
MediaPipe's AUs on the 48-px crop the tracking mesh reads show how much of its AU error that size costs.
first_frames: 600 FER+ test faces, each on a new stream's first frame, as both trackers report them.
"mesh-net_no_tracking" on each clip, and face_sizes: the live path with nothing tracked (every frame a stream's
first, as `core.bench live`'s photo_frame_ms times it) against the photo pipeline.
"""

from __future__ import annotations

import time

import numpy as np

from core.benchmarks.common import face_photo, stats


def _place(face: np.ndarray, t: float, width: int = 640, height: int = 480, turn: float = 8.0, zoom: float = 0.08,
           speed_px_s: float = 150.0) -> np.ndarray:
    """The RGB face photo pasted on a grey frame at time t: gliding sideways, turning and zooming slowly."""
    import cv2

    h, w = face.shape[:2]
    span = max(0.0, width - w * 1.1)
    period = max(2.0, np.pi * span / speed_px_s)
    phase = 2 * np.pi * t / period
    centre = (w * 0.55 + span * (0.5 + 0.5 * np.sin(phase)), height / 2 + 20 * np.cos(phase))
    m = cv2.getRotationMatrix2D((w / 2, h / 2), turn * np.sin(1.3 * phase), 1 + zoom * np.sin(0.7 * phase))
    m[:, 2] += np.array(centre) - np.array([w / 2, h / 2])
    return cv2.warpAffine(face, m, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=(90, 90, 90))


def clips(data: str, fps: float = 10.0, seconds: float = 9.0, fer_faces: int = 12, fer_frames: int = 15
          ) -> dict[str, list[np.ndarray]]:
    """name -> RGB frames of the three clips."""
    count = round(fps * seconds)
    photo = face_photo(260)
    out = {"glide": [_place(photo, i / fps) for i in range(count)],
           # a quicker head: 300 px/s, turning by 15 degrees and zooming by 15%
           "fast": [_place(photo, i / fps, turn=15.0, zoom=0.15, speed_px_s=300.0) for i in range(count)],
           "border": _border_clip(photo, count)}
    from core.training.data import load_split

    test = load_split(data, "test")
    pick = np.random.default_rng(0).choice(len(test.images), fer_faces, replace=False)
    fer = []
    for k, index in enumerate(pick):
        big = _fer_rgb(test.images[index])
        fer += [_place(big, (k * fer_frames + i) / fps, speed_px_s=60.0) for i in range(fer_frames)]
    out["fer"] = fer
    out["expression"] = _expression_clip(photo, count, fps)
    return out


def _fer_rgb(face: np.ndarray) -> np.ndarray:
    """A 48x48 grey FER face 4x upscaled (pixel blocks) as RGB."""
    return np.repeat(np.kron(face, np.ones((4, 4), np.uint8))[:, :, None], 3, axis=2)


def _border_clip(photo: np.ndarray, count: int, width: int = 640, height: int = 480) -> list[np.ndarray]:
    """The face sliding off the frame's right edge, out of view for a while, and back."""
    h, w = photo.shape[:2]
    frames = []
    for i in range(count):
        x0 = int(380 + 300 * np.sin(2 * np.pi * i / count))
        frame = np.full((height, width, 3), 90, np.uint8)
        x1 = min(width, x0 + w)
        if x1 > x0:
            frame[(height - h) // 2 : (height - h) // 2 + h, x0:x1] = photo[:, : x1 - x0]
        frames.append(frame)
    return frames


def _expression_clip(photo: np.ndarray, count: int, fps: float) -> list[np.ndarray]:
    from core import get_synthesizer

    synth = get_synthesizer()
    quarter = count // 4
    frames, edits = [], {}
    for i in range(count):
        leg, step = divmod(i, quarter)
        strength = (step + 1) / quarter if leg % 2 == 0 else 1 - (step + 1) / quarter
        request = ("surprise" if leg >= 2 else "happiness", max(0.0, min(1.0, strength)))
        if request not in edits:  # (the way up and the way down share their strengths: each edit made once)
            edits[request] = synth.edit(photo, expression=request[0], intensity=request[1], guidance=0.0)  # (the clip of 2026-12-07)
        frames.append(_place(edits[request], i / fps))
    return frames


def _ocular(mesh: np.ndarray) -> float:
    return float(np.linalg.norm(mesh[33, :2] - mesh[263, :2]))


def _nme(mesh: np.ndarray, gold: np.ndarray) -> float:
    """Mean landmark distance from the reference mesh, in units of its eye-corner distance."""
    return float(np.linalg.norm(mesh[:, :2] - gold[:, :2], axis=1).mean() / _ocular(gold))


def compare(frames: list[np.ndarray], tracker: str, reference: list, recognizer, reset_each_frame: bool = False) -> dict:
    """One tracker over a clip against the reference faces (photo pipeline) of each frame: the AUs compared are
    those the live path shows (the tracking mesh reads its own; MediaPipe's are measured on its mesh). Landmarks
    and AUs are scored on the frames the tracker found the face in; the top class on every frame with a
    reference face (a miss disagrees); faces reported where the reference has none are counted.
    reset_each_frame: the tracker forgets its faces before every frame (no tracking)."""
    from core.face.aus import measure_aus
    from core.face.detection import FaceDetector

    detector = FaceDetector(mode="video", max_faces=4, tracker=tracker)
    nme, agree, dprob, times, kinds = [], [], [], [], []
    shown, on_mesh, gold_aus = [], [], []
    extra = 0
    for rgb, ref in zip(frames, reference):
        if reset_each_frame:
            detector.reset()
        t0 = time.perf_counter()
        found = recognizer.predict(rgb, detector=detector)
        times.append((time.perf_counter() - t0) * 1000)
        if not ref or not np.isfinite(ref[0].landmarks).all():
            extra += len(found)  # no reference face: whatever the tracker reports is a face that is not there
            continue
        if not found:
            kinds.append("missed")
            agree.append(False)  # a missed face counts against the reading too
            continue
        face, gold = found[0], ref[0]
        kinds.append(face.detector)
        nme.append(_nme(face.landmarks, gold.landmarks))
        shown.append(list(face.aus.values()))
        on_mesh.append(measure_aus(face.landmarks))
        gold_aus.append(list(gold.aus.values()))
        p, q = (np.array(list(f.probs.values())) for f in (face, gold))
        agree.append(p.argmax() == q.argmax())
        dprob.append(np.abs(p - q).max())
    detector.close()
    from core.labels import AUS

    shown, on_mesh, gold_aus = (np.array(a, np.float64) for a in (shown, on_mesh, gold_aus))
    au_err = np.abs(shown - gold_aus)
    return {"nme_median": round(float(np.median(nme)), 4), "nme_p90": round(float(np.percentile(nme, 90)), 4),
            # the AUs the live path shows, and those measured on the tracker's own mesh
            "au_abs_error_mean": round(float(np.nanmean(au_err)), 4),
            "au_abs_error_on_mesh_mean": round(float(np.nanmean(np.abs(on_mesh - gold_aus))), 4),
            "au_abs_error": {a: round(float(np.nanmean(au_err[:, k])), 3) for k, a in enumerate(AUS)},
            "au_correlation": _correlations(shown, gold_aus),
            "label_agreement": round(float(np.mean(agree)), 4), "prob_diff_max_median": round(float(np.median(dprob)), 4),
            "frames": len(frames), "missed": kinds.count("missed"), "extra_faces": extra,
            # frames whose faces came from MediaPipe's mesh (all of them for tracker "mediapipe"); the short-range
            # detector's look for new faces every 5th frame is not counted
            "mediapipe_mesh_frames": sum(k in ("mesh", "mediapipe") for k in kinds), "frame_ms": stats(times)}


def _correlations(read: np.ndarray, gold: np.ndarray) -> dict[str, float]:
    """Pearson r over the clip's frames of each AU that moves in the reference (std > 0.03)."""
    from core.labels import AUS

    out = {}
    for k, au in enumerate(AUS):
        ok = np.isfinite(read[:, k]) & np.isfinite(gold[:, k])
        if ok.sum() > 5 and gold[ok, k].std() > 0.03 and read[ok, k].std() > 0:
            out[au] = round(float(np.corrcoef(read[ok, k], gold[ok, k])[0, 1]), 3)
    return out


def crop_ceiling(frames: list[np.ndarray], reference: list) -> dict:
    """MediaPipe's own AUs on each reference face's 48-px aligned crop (upscaled, as the AU cache measures FER
    faces) against its AUs on the whole frame: what reading a face at the tracking mesh's size costs by itself."""
    from core.face.alignment import aligned_grey, alignment_matrix, fer_crop_landmarks
    from core.face.aus import measure_aus_landmarks

    crops, gold = [], []
    for rgb, ref in zip(frames, reference):
        if ref and np.isfinite(ref[0].landmarks).all():
            crops.append(aligned_grey(rgb, alignment_matrix(ref[0].landmarks, 48), 48))
            gold.append(list(ref[0].aus.values()))
    aus = measure_aus_landmarks(fer_crop_landmarks(np.stack(crops)).astype(np.float64))
    return {"au_abs_error_mean": round(float(np.nanmean(np.abs(aus - np.array(gold)))), 4),
            "found": round(float(np.isfinite(aus).all(axis=1).mean()), 4)}


def first_frames(data: str, faces: int = 600) -> dict:
    """FER+ test faces (4x upscaled) each alone on a new stream's first frame: how many each tracker reports, so
    a face the tracking mesh will not fit from the detector's keypoints (where MediaPipe's mesh would have) shows."""
    from core.face.blazeface import BlazeFace
    from core.face.mesh_tracking import TrackingMeshDetector
    from core.face.stream_detection import StreamDetector
    from core.training.data import load_split

    test = load_split(data, "test")
    pick = np.random.default_rng(3).choice(len(test.images), faces, replace=False)
    finder = BlazeFace()
    found = {"detector": [], "mesh-net": [], "mediapipe": []}
    for k, index in enumerate(pick):
        rgb = _place(_fer_rgb(test.images[index]), k * 0.37, speed_px_s=60.0)
        found["detector"].append(bool(finder.detect(rgb)))
        for name, make in (("mesh-net", TrackingMeshDetector), ("mediapipe", StreamDetector)):
            tracker = make(max_faces=1)
            found[name].append(bool(tracker.detect(rgb)))
            tracker.close()
    net, mp = np.array(found["mesh-net"]), np.array(found["mediapipe"])
    return {"faces": faces, **{name: int(sum(v)) for name, v in found.items()},
            "mesh-net_only": int((net & ~mp).sum()), "mediapipe_only": int((mp & ~net).sum())}


def face_sizes(recognizer, heights=(100, 130, 150, 190, 230, 300), places: int = 20) -> dict:
    """grace_hopper.jpg at each photo height (its face about a third as wide), at `places` random places of a
    640x480 frame: on how many frames the live path with nothing tracked reports the face, its landmark error against
    the photo pipeline's mesh (median, of the eye-corner distance), and how many the photo pipeline finds (full-range
    detector, MTCNN when it finds nothing; its median face box width)."""
    from core.benchmarks.common import moving_face_frames
    from core.face.detection import FaceDetector

    detector = FaceDetector(mode="video", max_faces=4)
    out = {}
    for height in heights:
        frames = moving_face_frames(count=places, face_height=height, seed=height)
        photo = [recognizer.predict(rgb) for rgb in frames]
        found, nme = 0, []
        for rgb, ref in zip(frames, photo):
            detector.reset()
            faces = recognizer.predict(rgb, detector=detector)
            found += bool(faces)
            if faces and ref and np.isfinite(ref[0].landmarks).all():
                nme.append(_nme(faces[0].landmarks, ref[0].landmarks))
        widths = [f[0].box[2] - f[0].box[0] for f in photo if f]
        out[str(height)] = {"face_width_px": round(float(np.median(widths)), 1) if widths else None,
                            "no_tracking": found, "no_tracking_nme_median": round(float(np.median(nme)), 4) if nme else None,
                            "photo_pipeline": len(widths), "frames": places}
    detector.close()
    return out


def bench_tracking(data: str) -> dict:
    from core import get_recognizer

    recognizer = get_recognizer()
    out = {"first_frames": first_frames(data), "face_sizes": face_sizes(recognizer)}
    for name, frames in clips(data).items():
        reference = [recognizer.predict(rgb) for rgb in frames]
        out[name] = {tracker: compare(frames, tracker, reference, recognizer) for tracker in ("mesh-net", "mediapipe")}
        out[name]["mesh-net_no_tracking"] = compare(frames, "mesh-net", reference, recognizer, reset_each_frame=True)
        out[name]["mediapipe_on_48px_crop"] = crop_ceiling(frames, reference)
    return out
