"""Edit a real photo: the same person, a new expression, at the photo's own size and colour.

    from core import get_synthesizer
    out = get_synthesizer().edit(image, expression="happiness")   # uint8 [H, W, 3], the input's size
    out = get_synthesizer().edit(image, aus={"AU12": 0.8}, faces="all")

The Synthesizer facade is the way in; PhotoEditor is the pipeline behind Synthesizer.edit.

An edit has two parts (Geng et al. 2018, warp-guided GANs; Yi et al. 2020):
- geometry: the face's mesh is moved by the motion model (core/motion.py) from the face's measured
  AUs to the target AUs, and the photo itself is warped by the moved mesh (core/warp.py), so identity,
  colour and resolution survive;
- appearance: the generator encodes the warped face in 48-px FER framing and draws it under the
  source and the target condition; their difference (furrows, folds, mouth interior, lids) is mapped
  back through the alignment and added to the photo's luminance only, inside a soft face mask.
Pixels away from the face are never touched.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np

from core.errors import InputError
from core.labels import AUS
from core.synthesis.expression_policy import CONFIDENT, limit_mouth_opening, progress, target_distribution
from core.synthesizer import NoFaceError

MIN_FACE_PX = 40  # below this the mesh is unreliable and a 48-px appearance change would be coarse
MAX_OUTSIDE = 0.15  # share of the face outline that may fall outside the image
MAX_YAW_DEG = 50.0  # beyond this the frontal motion model no longer describes the visible half
WARN_YAW_DEG = 30.0
BOX_LIMIT = 1.25  # nothing changes outside the detector's face box grown this many times about its centre
APPEARANCE = 1.0  # strength of the generator's change (1: as drawn by G, in grey levels)
# Semantic guidance of an expression edit's appearance change (see _guide), on by default and scaled by how far
# the edit moves: one step at 10 read as requested on 0.80 of 100 FER+ train neutral faces against 0.71 unguided
# (development set; docs/photo_edit.md has the test-set figures and the time it costs).
GUIDANCE, GUIDANCE_STEPS = 10.0, 1
GUIDE_WEIGHTS = "edit_guide"  # the recognizer guidance climbs (see PhotoEditor.guide_recognizer)
WARP_SOURCE_DRAW = True  # see _generator_change
# AUs the generator does not draw (docs/synthesis.md: AU14, a one-sided pull of a pixel or two at 48 px):
# its change for them is noise that works against the warp, so its target condition keeps the source's.
WARP_ONLY_AUS = ("AU14",)
# ... and on an AU-slider edit (no expression) these too: G's 48-px change for one AU smears lips, lids and cheeks
# (docs/photo_edit.md, 4b), and the warp alone moves the re-fitted mesh as far or as steadily (30 FER+ train faces,
# faces with rho >= 0.8 with G's change / without: AU10 0.57 / 0.79, AU17 0.60 / 0.75, AU23 0.45 / 0.62). G's change
# stays for AU02, AU04 (the furrow), AU07, AU09 and AU45, which the warp alone moves too little, and for expressions.
SLIDER_WARP_ONLY_AUS = ("AU01", "AU05", "AU06", "AU10", "AU12", "AU15", "AU17", "AU20", "AU23", "AU25", "AU26")


class FaceTooSmallError(InputError):
    """The face is too small to edit (under MIN_FACE_PX pixels across)."""


class FaceAtBorderError(InputError):
    """Too much of the face lies outside the image to edit it."""


class ProfileFaceError(InputError):
    """The face is turned too far from the camera (or has no mesh) to edit it."""


@dataclass
class FaceEdit:
    box: tuple[float, float, float, float]
    landmarks: np.ndarray  # [478, 3] before the edit, image pixels
    moved: np.ndarray  # [478, 3] after the motion model
    current_aus: np.ndarray
    target_aus: np.ndarray
    crop: np.ndarray  # uint8 [48, 48]: the edited face aligned in FER framing (for the recognizer)
    notes: list[str] = field(default_factory=list)


@dataclass
class EditResult:
    image: np.ndarray  # uint8 [H, W, 3]
    faces: list[FaceEdit]
    skipped: list[str]  # why faces were left as they were


@dataclass(frozen=True)
class Request:
    expression: np.ndarray | None  # distribution over EXPRESSIONS, or None: keep the face's own
    aus: dict[str, float]
    intensity: float
    appearance: float
    guidance: float = GUIDANCE


def parse_request(expression=None, aus=None, intensity: float = 1.0, appearance: float | None = APPEARANCE,
                  guidance: float | None = GUIDANCE) -> Request:
    from core.synthesizer import (
        _finite_in,
        check_appearance,
        check_guidance,
        expression_strength,
        parse_aus,
        parse_expression,
    )

    given = parse_aus(aus)
    # Sliders alone keep the face's own expression; nothing at all asks for neutral.
    distribution = parse_expression(expression) if expression is not None or not given else None
    strength = expression_strength(expression) if distribution is not None else 1.0  # a slider alone sets how much
    return Request(distribution, given, _finite_in(intensity, "intensity") * strength,
                   check_appearance(APPEARANCE if appearance is None else appearance),
                   check_guidance(GUIDANCE if guidance is None else guidance))


def face_yaw_deg(landmarks: np.ndarray, template: np.ndarray) -> float:
    """Head turn about the vertical axis, from the 3-D similarity onto the frontal template."""
    from core.face.alignment import ALIGN_LANDMARKS
    from core.face.aus import similarity_3d

    _, rotation, _ = similarity_3d(np.asarray(landmarks, np.float64)[list(ALIGN_LANDMARKS)], template)
    return float(np.degrees(np.arcsin(np.clip(rotation[0, 2], -1.0, 1.0))))


def check_face(face, image_shape, template: np.ndarray) -> list[str]:
    """Notes for an editable face; raises an InputError subclass saying why a face cannot be edited."""
    from core.face.warp import FACE_OVAL

    x0, y0, x1, y1 = face.box
    if min(x1 - x0, y1 - y0) < MIN_FACE_PX:
        raise FaceTooSmallError(f"the face is {min(x1 - x0, y1 - y0):.0f} px across; at least {MIN_FACE_PX} px "
                                "are needed to edit it (use a closer or larger photo)")
    if not face.has_landmarks:
        raise ProfileFaceError("a face was found but its mesh could not be fitted (turned away, covered or "
                               "blurred?); it cannot be edited")
    h, w = image_shape[:2]
    oval = face.landmarks[list(FACE_OVAL), :2]
    outside = float(((oval[:, 0] < 0) | (oval[:, 0] >= w) | (oval[:, 1] < 0) | (oval[:, 1] >= h)).mean())
    if outside > MAX_OUTSIDE:
        raise FaceAtBorderError(f"{outside:.0%} of the face lies outside the image; frame the whole face to edit it")
    yaw = face_yaw_deg(face.landmarks, template)
    if abs(yaw) > MAX_YAW_DEG:
        raise ProfileFaceError(f"the face is turned {abs(yaw):.0f} degrees from the camera (at most "
                               f"{MAX_YAW_DEG:.0f} can be edited); use a more frontal photo")
    notes = []
    if abs(yaw) > WARN_YAW_DEG:
        notes.append(f"the face is turned {abs(yaw):.0f} degrees: the far side may look stretched")
    if outside > 0:
        notes.append("part of the face lies outside the image: only the visible part is edited")
    return notes


class PhotoEditor:
    """Motion model + warp + generator appearance; thread-safe (one edit at a time)."""

    def __init__(self, motion, synth, recognizer, detector=None, guide_recognizer=None):
        from core.face.aus import load_calibration
        from core.face.warp import control_indices

        self.motion = motion
        self.synth = synth
        self.recognizer = recognizer
        self._guide_recognizer = guide_recognizer  # None: the shipped edit_guide, loaded on the first guided edit
        self.detector = detector if detector is not None else recognizer.detector
        self.calibration = load_calibration()
        self.controls = control_indices(motion.base)  # the mesh points that pin the warp
        self._lock = threading.Lock()
        self._guide_lock = threading.Lock()

    @classmethod
    def load(cls, motion_path=None) -> PhotoEditor:
        from core import get_recognizer, get_synthesizer
        from core.models.motion import MotionModel

        return cls(MotionModel.load(motion_path), get_synthesizer(), get_recognizer())

    def edit(self, image, expression=None, aus=None, intensity: float = 1.0, faces: str = "largest",
             appearance: float | None = APPEARANCE, guidance: float | None = GUIDANCE) -> EditResult:
        request = parse_request(expression, aus, intensity, appearance, guidance)
        return self.edit_detected(*self._detect(image, faces), request)

    def edit_series(self, image, intensities, expression=None, aus=None, faces: str = "largest",
                    appearance: float | None = APPEARANCE, guidance: float | None = GUIDANCE) -> list[EditResult]:
        """The same edit at each intensity, the faces detected once (the tab's neutral -> target strip)."""
        requests = [parse_request(expression, aus, float(s), appearance, guidance) for s in intensities]
        rgb, found = self._detect(image, faces)
        return [self.edit_detected(rgb, found, request) for request in requests]

    def _detect(self, image, faces: str) -> tuple[np.ndarray, list]:
        from core.face.images import load_image

        if faces not in ("largest", "all"):
            raise InputError(f"faces must be 'largest' or 'all', not {faces!r}")
        rgb = load_image(image)
        found = self.detector.detect(rgb)
        if not found:
            raise NoFaceError("no face was found in the image to edit")
        return rgb, found if faces == "all" else found[:1]

    def edit_detected(self, rgb: np.ndarray, found: list, request: Request) -> EditResult:
        """Edit the given detected faces of an RGB uint8 image (callers that detected already)."""
        out, edits, skipped, errors = rgb.copy(), [], [], []
        with self._lock:
            for face in found:
                try:
                    notes = check_face(face, rgb.shape, self.motion.template)
                except InputError as error:
                    errors.append(error)
                    skipped.append(str(error))
                    continue
                edits.append(self._edit_face(out, face, request, notes))
        if not edits:
            raise errors[0]  # the largest face's reason
        return EditResult(out, edits, skipped)

    @property
    def guide_recognizer(self):
        """The recognizer whose reading semantic guidance climbs: a second one, trained apart from the shipped
        recognizer (weights/edit_guide.safetensors: other seed and widths, rare classes weighted up). The shipped
        one reads the result, in the app and in the acceptance measure; guiding with it too would partly
        measure how well the change persuades it (docs/photo_edit.md compares both)."""
        with self._guide_lock:  # (two first edits at once load it once)
            if self._guide_recognizer is None:
                from core.recognizer import Recognizer

                self._guide_recognizer = Recognizer.load(GUIDE_WEIGHTS, runtime="torch", device=str(self.synth.device))
        return self._guide_recognizer

    # -- one face
    def _edit_face(self, out: np.ndarray, face, request: Request, notes: list[str]) -> FaceEdit:
        from core.face.alignment import aligned_grey, alignment_matrix
        from core.face.aus import measure_aus
        from core.face.warp import box_window, warp_face

        current = measure_aus(face.landmarks, self.calibration)
        source_probs = self._probs(out, face.landmarks)
        sliders_only = request.expression is None
        if sliders_only:
            target = self.motion.slider_target(current, request.aus)
        else:
            target = self.motion.target_aus(current, request.expression, progress(source_probs, request), request.aus)
            target = limit_mouth_opening(target, current, request.aus)
        # Only AU-slider edits take the photo gains (the mesh under-reads a warp): on a whole expression they exaggerated
        # it, and without them edits read as often and were told from real faces less often (docs/photo_edit.md 3b).
        moved = self.motion.predict(face.landmarks, current, target, photo_gain=sliders_only)
        # the generator is asked for the change of every AU but the warp-only ones; its source draw is then
        # moved by the motion of those AUs alone (moving it by a warp-only AU's motion too would leave that
        # motion in the difference, reversed: the AU14 slider lost a third of its rise so)
        drawn = np.array(target, np.float64, copy=True)
        held_names = WARP_ONLY_AUS + (SLIDER_WARP_ONLY_AUS if sliders_only else ())
        held = [AUS.index(name) for name in held_names]
        drawn[held] = np.asarray(current, np.float64)[held]
        g_sliders = tuple(name for name in request.aus if name not in held_names)  # the sliders G draws
        moved_drawn = (moved if np.array_equal(drawn, target)
                       else self.motion.predict(face.landmarks, current, drawn, photo_gain=sliders_only))
        result = warp_face(out, face.landmarks, moved, self.controls, lambda r: box_window(r, face.box, BOX_LIMIT))
        if result is None:
            raise FaceAtBorderError("the face lies outside the image")
        region, warped, mask = result
        if request.appearance > 0 and (g_sliders or not sliders_only):  # else G would draw the same face twice
            target_probs = target_distribution(source_probs, request)
            # guidance scaled by how far the edit moves: none at intensity 0 or on a face that already shows the class
            guidance = request.guidance * (progress(source_probs, request) if request.expression is not None else 0.0)
            goal = request.expression if guidance > 0 else None
            parts = g_sliders if sliders_only else None  # G's change only where the AUs it draws act
            warped = self._appearance(warped, region, (face.landmarks, moved, moved_drawn), mask,
                                      (source_probs, current), (target_probs, drawn), request.appearance,
                                      (goal, guidance), parts)
        out[region.y0:region.y1, region.x0:region.x1] = warped
        crop = aligned_grey(out, alignment_matrix(moved, 48), 48)
        return FaceEdit(face.box, face.landmarks, moved, current, target, crop, notes)

    def _probs(self, rgb: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """The recognizer's reading of the face as it is: the generator's source condition."""
        from core.face.alignment import aligned_grey, alignment_matrix

        size = self.recognizer.config.input_size
        crop = aligned_grey(rgb, alignment_matrix(landmarks, size), size)
        # one pass, no mirror: a condition for the generator, not a reported reading (the runtime the
        # live path uses: ONNX Runtime when present)
        return self.recognizer.predict_crops(crop[None], mirror=False)[0].astype(np.float64)

    def _appearance(self, warped: np.ndarray, region, meshes, mask: np.ndarray, source, target,
                    strength: float, guide, parts=None) -> np.ndarray:
        """The generator's change from source to target condition, added to the region's luminance.
        meshes: the face's landmarks, moved by the whole edit, and moved by the AUs the generator draws.
        parts: AU sliders whose face parts alone take it (G redraws the whole face); None: all of it (an expression)."""
        import cv2

        from core.face.alignment import alignment_matrix, warp_grey
        from core.models.motion import parts_weight

        size = self.synth.config.image_size
        ycc = cv2.cvtColor(warped, cv2.COLOR_RGB2YCrCb)
        luma = ycc[:, :, 0]
        before, after, drawn_after = (mesh[:, :2] - region.offset for mesh in meshes)
        matrix = alignment_matrix(after, size)
        before, after, drawn_after = (m @ matrix[:, :2].T + matrix[:, 2] for m in (before, after, drawn_after))
        diff = self._generator_change(warp_grey(luma, matrix, size), source, target, strength, guide,
                                      lambda image: self._crop_warp(image, before, drawn_after))
        if parts and self.motion.config.locality_width > 0:  # crop rows are heights of the motion model's frontal frame
            weight = parts_weight(parts, after, np.arange(size) + 0.5, self.motion.config.locality_width)
            diff *= weight[:, None].astype(np.float32)
        # matrix maps continuous region coordinates to crop ones; OpenCV puts pixel i at i, not i + 0.5
        cv_matrix = matrix.copy()
        cv_matrix[:, 2] += matrix[:, :2] @ np.array([0.5, 0.5]) - 0.5
        h, w = region.shape
        change = cv2.warpAffine(diff, cv_matrix, (w, h), flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP,
                                borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
        ycc[:, :, 0] = np.clip(np.round(luma + strength * change * mask), 0, 255).astype(np.uint8)
        # the colour-space round trip is lossy by a level: keep the warped pixels where nothing was added
        return np.where((mask > 0)[:, :, None], cv2.cvtColor(ycc, cv2.COLOR_YCrCb2RGB), warped)

    def _crop_warp(self, image: np.ndarray, before: np.ndarray, after: np.ndarray, pad: int = 8) -> np.ndarray:
        """A crop-sized image [S, S] warped by the edit's own mesh motion (crop coordinates), edges replicated."""
        import cv2

        from core.face.warp import Region, backward_field, warp_region

        size = image.shape[0]
        padded = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        region = Region(0, 0, size + 2 * pad, size + 2 * pad)
        field = backward_field(before + pad, after + pad, region, np.ones(region.shape, np.float32), self.controls)
        return warp_region(padded, region, field)[pad:-pad, pad:-pad]

    def _generator_change(self, crop: np.ndarray, source, target, strength: float, guide, reshape) -> np.ndarray:
        """float32 [48, 48] grey levels: G(z', target) - reshape(G(z, source)) for the crop's identity code z
        (z' = z, or z after semantic guidance). reshape moves the source draw by the warp the photo got
        for the AUs G draws, so that what is added is the appearance change, not the geometry a second time (which would leave
        a faint copy of each feature where it was)."""
        import torch

        from core.face.aus import consistent_aus
        from core.models.generator import make_condition

        conds = []
        for probs, aus in (source, target):
            aus = consistent_aus(np.nan_to_num(np.asarray(aus, np.float32))[None])
            conds.append(make_condition(torch.tensor(probs, dtype=torch.float32)[None], torch.ones(1),
                                        torch.from_numpy(aus)).to(self.synth.device))
        goal, guidance = guide
        z = self.synth._encode(crop[None])
        if goal is None:
            with torch.no_grad():
                drawn = self.synth._draw(z.expand(2, -1), torch.cat(conds))
                after = drawn[1:]
        else:  # the target draw keeps its graph: guidance's first step starts from it
            z_target = z.clone().requires_grad_(True)
            with torch.enable_grad():  # (also when the caller is inside torch.no_grad())
                drawn = self.synth._draw(torch.cat([z, z_target]), torch.cat(conds))
                after = drawn[1:]
        if WARP_SOURCE_DRAW:
            before = torch.from_numpy(reshape(drawn[0, 0].detach().float().cpu().numpy()))[None, None].to(drawn)
        else:
            before = drawn[:1].detach()
        if goal is not None:
            base = torch.as_tensor(crop, dtype=torch.float32, device=self.synth.device)[None, None] / 127.5 - 1
            z_target = self._guide(z_target, after, conds[1], base, before, strength,
                                   torch.tensor(goal, dtype=torch.float32), guidance)
            if z_target is not None:
                with torch.no_grad():
                    after = self.synth._draw(z_target, conds[1])
        return ((after[0, 0] - before[0, 0]).detach().float().cpu().numpy() * 127.5).astype(np.float32)

    def _guide(self, z, drawn, cond, base, before, strength: float, goal, guidance: float):
        """Semantic guidance (SynFER) on the edited face itself: a few normalised gradient steps on the
        target draw's identity code, up the guide recognizer's log-probability of the requested expression
        for crop + strength * (G(z, target) - G(z, source)); `drawn` is G(z, target) drawn with its graph, so the
        first step needs no draw of its own. Only the generator's change moves, so the photo's own pixels, and
        the person, stay; G keeps the change face-like. None when the guide already reads the requested expression
        with probability CONFIDENT (no step: the edit reads already, and pushing further would exaggerate it)."""
        import torch

        net, r_cfg = self.guide_recognizer.net, self.guide_recognizer.config
        goal = goal.to(base.device)[None]
        with torch.enable_grad():  # (also when the caller is inside torch.no_grad())
            for step in range(GUIDANCE_STEPS):
                if step:
                    drawn = self.synth._draw(z, cond)
                edited = (base + strength * (drawn - before)).clamp(-1, 1)
                x = ((edited + 1) / 2 - r_cfg.mean) / r_cfg.std
                logits, _ = net(torch.cat([x, x.flip(-1)]))  # the recognizer reads a crop and its mirror
                log_probs = torch.log_softmax(logits.float(), dim=1)
                if not step and float((goal * log_probs.exp()).sum(dim=1).mean()) >= CONFIDENT:
                    return None
                (grad,) = torch.autograd.grad((goal * log_probs).sum(), z)
                z = (z + guidance * 0.1 * grad / (grad.norm() + 1e-8)).detach().requires_grad_(True)
        return z.detach()
