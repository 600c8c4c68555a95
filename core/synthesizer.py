"""The Synthesizer facade: faces with a chosen expression and action units, new or edited.

    s = Synthesizer.load()
    s.generate(expression={"happiness": 1.0}, aus={"AU12": 0.8}, seed=0, n=4)   # uint8 [48, 48] faces
    s.edit(photo, expression={"surprise": 1.0})      # the photo, its largest face re-expressed, same size
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import numpy as np
import torch

from core.errors import InputError, UnknownLabelError
from core.labels import AUS, EXPRESSIONS, expression_index
from core.models.generator import (
    EncoderNet,
    GeneratorConfig,
    GeneratorNet,
    lift_mouth_corner,
    make_condition,
    to_generator_range,
    to_uint8,
)

MAX_FACES_PER_CALL = 64
MAX_GUIDANCE_STEPS = 20
MAX_GUIDANCE = 10.0  # semantic guidance strengths the API and the Synthesize tab accept


class NoFaceError(InputError):
    """edit() was given an image in which no face was found."""


def _finite_in(value, what: str, high: float = 1.0) -> float:
    """value as a float in [0, high], or an InputError naming `what`."""
    try:
        v = float(value)
    except (TypeError, ValueError) as error:
        raise InputError(f"{what} must be a number in [0, {high:g}], not {value!r}") from error
    if not math.isfinite(v) or v < 0 or v > high:
        raise InputError(f"{what} must be a number in [0, {high:g}], not {value!r}")
    return v


def parse_expression(expression) -> np.ndarray:
    """None, a name, or {name: weight} (names or synonyms) -> a distribution over EXPRESSIONS."""
    weights = np.zeros(len(EXPRESSIONS))
    if expression is None:
        weights[EXPRESSIONS.index("neutral")] = 1.0
        return weights
    if isinstance(expression, str):
        expression = {expression: 1.0}
    if not isinstance(expression, dict):
        raise InputError("expression must be a name or a dict {name: weight}")
    for name, value in expression.items():
        weights[expression_index(name)] += _finite_in(value, f"expression weight of {name!r}")
    if weights.sum() <= 0:
        weights[EXPRESSIONS.index("neutral")] = 1.0
    return weights / weights.sum()


def expression_strength(expression) -> float:
    """How much expression the weights ask for, in [0, 1]: an expression slider alone sets it (happiness 0.3 is a
    slight smile), several add up (capped at 1), and a neutral weight dilutes them. A name alone is full strength.
    """
    if expression is None or isinstance(expression, str):
        return 1.0
    weights = np.zeros(len(EXPRESSIONS))
    for name, value in expression.items():  # synonyms add up, as in parse_expression
        weights[expression_index(name)] += _finite_in(value, f"expression weight of {name!r}")
    neutral = EXPRESSIONS.index("neutral")
    shown = weights.sum() - weights[neutral]
    return float(min(1.0, shown / max(1.0, weights.sum())))


def parse_aus(aus) -> dict[str, float]:
    if aus is None:
        return {}
    if not isinstance(aus, dict):
        raise InputError("aus must be a dict {AU name: intensity}")
    out = {}
    for name, value in aus.items():
        key = str(name).strip().upper()
        if key not in AUS:
            raise UnknownLabelError(f"unknown action unit {name!r}; expected one of {', '.join(AUS)}")
        out[key] = _finite_in(value, f"intensity of {key}")
    return out


def _settle_antagonists(aus: np.ndarray, given: dict[str, float]) -> np.ndarray:
    """The generator was trained on AU vectors with at most one AU of each measured antagonist pair
    (AU01 inner brow raised / AU04 lowered). A slider the user set beats a typical value; between
    two set sliders, or two typical values, the stronger wins."""
    from core.face.aus import MEASURED_ANTAGONISTS

    for a, b in MEASURED_ANTAGONISTS:
        i, j = AUS.index(a), AUS.index(b)
        if (a in given) != (b in given):
            loser = j if a in given else i
            if aus[i if loser == j else j] > 0:
                aus[loser] = 0.0
        elif aus[i] >= aus[j]:
            aus[j] = 0.0
        else:
            aus[i] = 0.0
    return aus


def settled_aus(given: dict[str, float]) -> dict[str, float]:
    """The set AU sliders G is conditioned on (_settle_antagonists): of two set antagonists the weaker is dropped,
    so the warp does not push back what G was not asked to draw."""
    from core.face.aus import MEASURED_ANTAGONISTS

    out = dict(given)
    for a, b in MEASURED_ANTAGONISTS:
        if a in out and b in out:
            out.pop(b if out[a] >= out[b] else a)
    return out


def check_guidance(strength) -> float:
    return _finite_in(strength, "guidance strength", MAX_GUIDANCE)


def check_appearance(strength) -> float:
    """A photo edit's appearance strength (see Synthesizer.edit) in [0, 4], or an InputError."""
    return _finite_in(strength, "appearance strength", 4.0)


def check_controls(expression=None, aus=None, intensity: float = 1.0, guidance: float = 0.0) -> None:
    """Raise InputError naming the first bad control; needs no model (the UI checks before loading one)."""
    parse_expression(expression)
    parse_aus(aus)
    _finite_in(intensity, "intensity")
    check_guidance(guidance)


@dataclass(frozen=True)
class EncodedFace:
    """The largest face of a photo as the generator sees it: its aligned crop and its identity code.

    From Synthesizer.encode_face; pass it to edit() or morph() to skip detecting the face again.
    """

    crop: np.ndarray  # uint8 [H, W] grey, FER framing
    code: np.ndarray  # float32 [z_dim]


class Synthesizer:
    """New faces, or a real face re-expressed, from expression and AU controls.

    Public: load / save, generate, edit (a photo, kept at its size), edit_crop (the 48-px redraw), encode_face,
    encode, morph. The torch-level steps (condition, identities, draw, guidance) are internals.
    """

    def __init__(self, g: GeneratorNet, e: EncoderNet, class_aus: dict, device, source: str = "memory",
                 d=None, metadata: dict | None = None):
        self.g = g.to(device).eval()
        self.e = e.to(device).eval()
        self.d = d.to(device).eval() if d is not None else None  # only for joint fine-tuning
        self.config: GeneratorConfig = g.config
        self.class_aus = {k: np.asarray(v, np.float32) for k, v in class_aus.items()}
        # AU14 per class (G's AU14 input, mixed by the condition) and neutral's (where the corner lift starts)
        self._typical_au14 = torch.tensor([float(self.class_aus[name][AUS.index("AU14")]) if name in self.class_aus
                                           else 0.0 for name in EXPRESSIONS])
        self._neutral_au14 = float(self._typical_au14[EXPRESSIONS.index("neutral")])
        self.device = device
        self.source = source
        # What the weights file said besides its tensors (step, training history): re-exports keep it.
        self.metadata = {k: v for k, v in (metadata or {}).items() if k not in ("kind", "version", "config")}
        self._recognizer = None
        self._editor = None
        self._lock = threading.Lock()

    @classmethod
    def load(cls, name: str = "generator", path=None, device: str = "auto") -> Synthesizer:
        """Shipped weights by name (sha256-checked), or a safetensors file from `path` (as save() writes, or a
        StyleGen export of core/training/stylegen.py: its metadata's config says arch "stylegen")."""
        from core.checkpoint import load_generator
        from core.device import resolve_device

        if path is not None:
            from core.models import stylegen

            if stylegen.is_stylegen_file(path):
                return stylegen.load_synthesizer(path, device=str(resolve_device(device)))
        g, e, d, metadata = load_generator(name, path)
        return cls(g, e, metadata.get("class_aus", {}), resolve_device(device),
                   source=str(path) if path else f"shipped:{name}", d=d, metadata=metadata)

    def save(self, path, extra: dict | None = None) -> None:
        """Write G, E (and D when present) with the config and typical AUs, as load(path=...) reads them."""
        from core.checkpoint import export_generator

        class_aus = {k: np.asarray(v, float).tolist() for k, v in self.class_aus.items()}
        export_generator(path, self.g, self.e, {**self.metadata, "class_aus": class_aus, **(extra or {})}, self.d)

    # -- public: numpy in, numpy out
    def generate(self, expression=None, aus=None, seed: int = 0, n: int = 1, intensity: float = 1.0,
                 guidance: float = 0.0, warp_aus: bool = True) -> list[np.ndarray]:
        """n new faces (people drawn from the prior) with the requested expression and AUs.

        warp_aus: the AUs set in `aus` are carried the rest of the way by the motion model's warp of the drawn
        face (core/synthesis/au_warp.py: G alone moves several too little to see); False: as G draws them.
        """
        with self._lock:
            faces = self._render(self._identities(seed, n), self._condition(expression, aus, intensity), guidance)
        return self._warp_aus(faces, aus) if warp_aus else faces

    def encode_face(self, image) -> EncodedFace:
        """The largest face of a photo (path, bytes, PIL image or array); NoFaceError when there is none."""
        from core.face.alignment import align_face
        from core.face.images import load_image, to_grey

        rgb = load_image(image)
        faces = self._recognizer_model().detector.detect(rgb)  # detection and alignment only: no classification
        if not faces:
            raise NoFaceError("no face was found in the image to edit")
        crop = align_face(to_grey(rgb), faces[0], self.config.image_size)
        return EncodedFace(crop, self._encode(crop[None])[0].cpu().numpy())

    def encode(self, crops) -> np.ndarray:
        """Identity codes [N, z_dim] of FER-framed uint8 grey crops [N, H, W]."""
        return self._encode(crops).cpu().numpy()

    def edit(self, image, expression=None, aus=None, intensity: float = 1.0, guidance: float | None = None,
             faces: str = "largest", appearance: float | None = None) -> np.ndarray:
        """The photo (path, bytes, PIL image or array; RGB, RGBA or grey) with its largest face, or every face,
        re-expressed: uint8 [H, W, 3] at the photo's own size and colour (core/synthesis/photo_edit.py).

        The face is warped by the motion model and the generator adds what a warp cannot (furrows, teeth) on
        luminance; pixels away from the face stay as they were. With only AU sliders set, the face keeps its
        own expression. appearance: the strength of the generator's change (0: the warp alone, the photo's own
        pixels moved; 1, the default: as G draws it; docs/photo_edit.md measures what each costs in realism).
        guidance: semantic guidance of an expression edit's appearance change (None: the editor's default, 10;
        0: none).
        NoFaceError, FaceTooSmallError, FaceAtBorderError or ProfileFaceError when no face can be edited (all
        InputErrors).
        """
        return self.edit_result(image, expression, aus, intensity, guidance, faces, appearance).image

    def edit_result(self, image, expression=None, aus=None, intensity: float = 1.0, guidance: float | None = None,
                    faces: str = "largest", appearance: float | None = None):
        """edit(), with each edited face's box, its 48-px aligned crop after the edit and notes (EditResult)."""
        if guidance is not None:
            check_guidance(guidance)  # (before any model is loaded)
        return self._photo_editor().edit(image, expression, aus, intensity, faces, appearance, guidance)

    def edit_series(self, image, expression=None, aus=None, intensities=(0.0, 0.2, 0.4, 0.6, 0.8, 1.0),
                    guidance: float | None = None, faces: str = "largest", appearance: float | None = None
                    ) -> list[np.ndarray]:
        """edit() at each intensity (neutral -> target), the photo's faces detected once: uint8 [H, W, 3] each."""
        if guidance is not None:
            check_guidance(guidance)
        results = self._photo_editor().edit_series(image, intensities, expression, aus, faces, appearance, guidance)
        return [result.image for result in results]

    def edit_crop(self, image, expression=None, aus=None, intensity: float = 1.0, guidance: float = 0.0
                  ) -> np.ndarray:
        """The largest face of a photo redrawn by the generator as a 48-px grey crop in FER framing (the
        recognizer's input; the joint experiments and tests use it). Another person's likeness, mostly:
        edit() keeps the person.

        image: a photo, or an EncodedFace from encode_face (to skip detecting the face again).
        """
        face = image if isinstance(image, EncodedFace) else self.encode_face(image)
        with self._lock:
            return self._render(self._code(face), self._condition(expression, aus, intensity), guidance)[0]

    def morph(self, expression=None, aus=None, seed: int = 0, steps: int = 6, face: EncodedFace | None = None,
              warp_aus: bool = True) -> list[np.ndarray]:
        """One person (a new one from `seed`, or `face`) from neutral (intensity 0) to the target (intensity 1);
        the AUs set in `aus` hold in every frame (warp_aus as in generate)."""
        if not 2 <= int(steps) <= 32:
            raise InputError(f"steps must be between 2 and 32, not {steps!r}")
        with self._lock:
            z = self._identities(seed, 1) if face is None else self._code(face)
            frames = [self._render(z, self._condition(expression, aus, float(s)))[0] for s in np.linspace(0, 1, steps)]
        return self._warp_aus(frames, aus) if warp_aus else frames

    # -- internals: conditions, identities, drawing, guidance
    def _condition(self, expression=None, aus=None, intensity: float = 1.0) -> torch.Tensor:
        """The generator's condition [1, 26]; AUs not given take the expression's typical values."""
        distribution = parse_expression(expression)
        given = parse_aus(aus)
        s = _finite_in(intensity, "intensity") * expression_strength(expression)  # the overall intensity scales all
        typical = np.zeros(len(AUS), np.float32)
        for k, name in enumerate(EXPRESSIONS):
            if name in self.class_aus:
                typical += distribution[k] * self.class_aus[name]
        if "neutral" in self.class_aus:  # intensity blends the typical AUs towards neutral's
            typical = s * typical + (1 - s) * self.class_aus["neutral"]
        for name, value in given.items():
            typical[AUS.index(name)] = value
        typical = _settle_antagonists(typical, given)
        return make_condition(torch.tensor(distribution, dtype=torch.float32)[None], torch.tensor([s]),
                              torch.from_numpy(typical)[None]).to(self.device)

    def _identities(self, seed: int, n: int) -> torch.Tensor:
        """n identity codes from the prior; the same seed always gives the same people."""
        if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
            raise InputError(f"seed must be an integer, not {seed!r}")
        if not 1 <= int(n) <= MAX_FACES_PER_CALL:
            raise InputError(f"n must be between 1 and {MAX_FACES_PER_CALL}, not {n!r}")
        generator = torch.Generator().manual_seed(int(seed) % (2**63))
        return torch.randn(int(n), self.config.z_dim, generator=generator).to(self.device)

    def _encode(self, crops) -> torch.Tensor:
        x = to_generator_range(torch.as_tensor(np.asarray(crops, np.uint8))).to(self.device)
        with torch.no_grad():
            return self.e(x)

    def _code(self, face: EncodedFace) -> torch.Tensor:
        return torch.from_numpy(np.asarray(face.code, np.float32)[None]).to(self.device)

    def _draw(self, z: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """Faces [N, 1, H, W] in [-1, 1] of identities z under a condition; differentiable.

        AU14 is drawn by lifting a mouth corner (core.models.generator.lift_mouth_corner): G gets the
        expression's typical AU14, and the lift is the requested AU14 beyond neutral's typical value.
        """
        cond = cond.expand(len(z), -1)
        au14 = self.config.cond_dim - self.config.num_aus + AUS.index("AU14")
        typical = cond[:, : len(EXPRESSIONS)] @ self._typical_au14.to(cond)  # the first 8 columns are the mix
        lift = ((cond[:, au14] - self._neutral_au14) / max(1 - self._neutral_au14, 1e-6)).clamp(0, 1)
        g_cond = torch.cat([cond[:, :au14], typical[:, None], cond[:, au14 + 1 :]], dim=1)
        return lift_mouth_corner(self.g(z, g_cond), lift)

    def _render(self, z: torch.Tensor, cond: torch.Tensor, guidance: float = 0.0, target=None) -> list[np.ndarray]:
        if guidance:
            z = self._guide(z, cond, target if target is not None else cond[:, : len(EXPRESSIONS)], guidance)
        with torch.no_grad():
            images = self._draw(z, cond)
        return list(to_uint8(images.float()).cpu().numpy())

    def _guide(self, z: torch.Tensor, cond: torch.Tensor, target: torch.Tensor, strength: float,
               steps: int = 5) -> torch.Tensor:
        """Semantic guidance (SynFER): move z up the recognizer's log-probability of the target expression."""
        strength = check_guidance(strength)
        recognizer = self._recognizer_model()
        r_cfg = recognizer.net.config
        z = z.detach().clone().requires_grad_(True)
        for _ in range(min(steps, MAX_GUIDANCE_STEPS)):
            image = self._draw(z, cond)
            logits, _ = recognizer.net(((image + 1) / 2 - r_cfg.mean) / r_cfg.std)
            score = (target.expand(len(z), -1) * torch.log_softmax(logits.float(), dim=1)).sum()
            (grad,) = torch.autograd.grad(score, z)
            z = (z + strength * 0.1 * grad / (grad.norm(dim=1, keepdim=True) + 1e-8)).detach().requires_grad_(True)
        return z.detach()

    def _warp_aus(self, faces: list[np.ndarray], aus) -> list[np.ndarray]:
        given = settled_aus(parse_aus(aus))
        if not given:
            return faces
        from core import get_au_warp

        return get_au_warp().apply(faces, given)

    def _photo_editor(self):
        """The photo-edit pipeline on this generator (a fine-tuned one edits with its own G and E)."""
        with self._lock:
            if self._editor is None:
                from core import get_motion_model
                from core.synthesis.photo_edit import PhotoEditor

                self._editor = PhotoEditor(get_motion_model(), self, self._recognizer_model())
            return self._editor

    def _recognizer_model(self):
        if self._recognizer is None:
            from core import get_recognizer

            self._recognizer = get_recognizer()
        return self._recognizer
