"""The expression recognizer: config, network (which owns its loss) and the Recognizer facade."""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from core.labels import EXPRESSIONS, FER2013_LABELS


@dataclass(frozen=True)
class RecognizerConfig:
    """Everything needed to rebuild the network and pre-process its input; saved with the weights."""

    input_size: int = 48  # square grey crops in FER2013 framing
    widths: tuple[int, ...] = (32, 64, 128, 256)
    depths: tuple[int, ...] = (2, 2, 3, 3)
    embed_dim: int = 256
    dropout: float = 0.4
    num_classes: int = len(EXPRESSIONS)
    num_fer2013_classes: int = len(FER2013_LABELS)  # 0: no FER2013 head
    # Pixel normalisation: x = (pixel / 255 - mean) / std.
    mean: float = 0.5
    std: float = 0.25

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> RecognizerConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items() if k in known}
        return cls(**kwargs)


def _conv_bn_relu(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class RecognizerNet(nn.Module):
    """A VGG-style CNN (in the spirit of Barsoum et al.'s FER+ VGG13), sized for CPU training.

    Returns logits over EXPRESSIONS and, when configured, over the original FER2013 labels.
    """

    def __init__(self, config: RecognizerConfig):
        super().__init__()
        self.config = config
        layers: list[nn.Module] = []
        c_in = 1
        for width, depth in zip(config.widths, config.depths):
            for _ in range(depth):
                layers.append(_conv_bn_relu(c_in, width))
                c_in = width
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.embed = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(config.dropout),
            nn.Linear(c_in, config.embed_dim),
            nn.BatchNorm1d(config.embed_dim),
            nn.ReLU(inplace=True),
            nn.Dropout(config.dropout),
        )
        self.head = nn.Linear(config.embed_dim, config.num_classes)
        self.fer2013_head = (
            nn.Linear(config.embed_dim, config.num_fer2013_classes) if config.num_fer2013_classes else None
        )

    def stages(self, n: int) -> nn.Sequential:
        """The first n stages of the trunk (each: its convs and the pooling after them)."""
        return self.features[: sum(self.config.depths[:n]) + n]

    def embedding(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features [N, embed_dim] of normalised input [N, 1, H, W]."""
        h = self.features(x)
        h = F.adaptive_avg_pool2d(h, 1)
        return self.embed(h)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        z = self.embedding(x)
        fer2013 = self.fer2013_head(z) if self.fer2013_head is not None else None
        return self.head(z), fer2013


def recognizer_loss(
    logits: torch.Tensor,
    fer2013_logits: torch.Tensor | None,
    soft_targets: torch.Tensor,
    fer2013_labels: torch.Tensor | None = None,
    class_weights: torch.Tensor | None = None,
    fer2013_weight: float = 0.5,
) -> torch.Tensor:
    """Soft cross-entropy against FER+ vote distributions, plus CE on FER2013 labels (-1 = none)."""
    loss = soft_cross_entropy(logits, soft_targets, class_weights)
    if fer2013_logits is not None:
        known = fer2013_labels >= 0 if fer2013_labels is not None else None
        if known is not None and fer2013_weight > 0 and bool(known.any()):
            loss = loss + fer2013_weight * F.cross_entropy(fer2013_logits[known].float(), fer2013_labels[known].long())
        else:  # keep the head in the graph: DDP expects a gradient for every parameter at every step
            loss = loss + 0.0 * fer2013_logits.sum()
    return loss


def soft_cross_entropy(
    logits: torch.Tensor, targets: torch.Tensor, class_weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Cross-entropy with probability targets; class_weights re-weight each sample by its top class."""
    per_sample = -(targets * F.log_softmax(logits.float(), dim=1)).sum(dim=1)
    if class_weights is None:
        return per_sample.mean()
    weights = class_weights[targets.argmax(dim=1)]
    return (per_sample * weights).sum() / weights.sum()


def normalize_crops(crops: torch.Tensor, config: RecognizerConfig) -> torch.Tensor:
    """uint8 or float-in-[0,255] crops [N, H, W] -> normalised float [N, 1, H, W]."""
    x = crops.float().div(255.0)
    if x.dim() == 3:
        x = x.unsqueeze(1)
    return (x - config.mean) / config.std


@torch.no_grad()
def predict_probs(
    net: RecognizerNet,
    crops,
    device: torch.device | str = "cpu",
    flip_tta: bool = True,
    batch_size: int = 512,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Class probabilities of FER-framed grey crops [N, H, W] (uint8), averaged with the mirror image."""
    was_training = net.training
    net.eval()
    crops = torch.as_tensor(crops)
    outputs8, outputs7 = [], []
    for start in range(0, len(crops), batch_size):
        x = normalize_crops(crops[start : start + batch_size].to(device), net.config)
        if flip_tta:
            x = torch.cat([x, x.flip(-1)])
        x = x.contiguous(memory_format=torch.channels_last)  # oneDNN's fastest layout for these convs
        logits8, logits7 = net(x)
        p8 = logits8.float().softmax(1)
        p7 = logits7.float().softmax(1) if logits7 is not None else None
        if flip_tta:
            half = len(p8) // 2
            p8 = (p8[:half] + p8[half:]) / 2
            p7 = (p7[:half] + p7[half:]) / 2 if p7 is not None else None
        outputs8.append(p8.cpu())
        if p7 is not None:
            outputs7.append(p7.cpu())
    net.train(was_training)
    if not outputs8:
        empty7 = torch.zeros(0, net.config.num_fer2013_classes) if net.fer2013_head is not None else None
        return torch.zeros(0, net.config.num_classes), empty7
    return torch.cat(outputs8), (torch.cat(outputs7) if outputs7 else None)


# ---------------------------------------------------------------- facade

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

    def __init__(self, net: RecognizerNet, device: torch.device, source: str = "memory"):
        self.net = net.to(device).to(memory_format=torch.channels_last).eval()
        self.device = device
        self.source = source
        self._photo_detector = None
        self._detector_lock = threading.Lock()

    @property
    def config(self) -> RecognizerConfig:
        return self.net.config

    @classmethod
    def load(cls, name: str = "recognizer", path=None, device: str = "auto") -> Recognizer:
        """Shipped weights by name (sha256-checked), or a safetensors file from `path`."""
        from core.device import resolve_device
        from core.errors import WeightsError
        from core.weights import load_weights

        tensors, metadata = load_weights(name, path)
        if metadata.get("kind") != "recognizer" or "config" not in metadata:
            raise WeightsError(f"{path or name} does not hold recognizer weights")
        net = RecognizerNet(RecognizerConfig.from_dict(metadata["config"]))
        try:
            net.load_state_dict(tensors)
        except RuntimeError as error:
            raise WeightsError(f"{path or name}: weights do not match their config: {error}") from error
        return cls(net, resolve_device(device), source=str(path) if path else f"shipped:{name}")

    @property
    def detector(self):
        with self._detector_lock:
            if self._photo_detector is None:
                from core.faces import FaceDetector

                self._photo_detector = FaceDetector(mode="photo")
        return self._photo_detector

    def predict_crops(self, crops, with_fer2013: bool = False):
        """Probabilities over EXPRESSIONS for uint8 [N, H, W] grey crops framed like FER2013.

        Crops of another size are resized to the model's input size.
        """
        from core.errors import InputError

        array = np.asarray(crops)
        if array.ndim != 3 or array.shape[1] < 2 or array.shape[2] < 2:
            raise InputError(f"crops must be a uint8 array [N, H, W]; got shape {array.shape}")
        if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
            raise InputError(f"crops must be a uint8 array [N, H, W]; got dtype {array.dtype}")
        if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
            raise InputError("crops contain NaN or infinite values")
        array = _resize_crops(array, self.config.input_size)
        p8, p7 = predict_probs(self.net, torch.from_numpy(array), self.device)
        p8 = p8.numpy()
        if with_fer2013:
            return p8, (p7.numpy() if p7 is not None else None)
        return p8

    def predict(self, image, detector=None) -> list[FacePrediction]:
        """Every face in `image` (path, bytes, PIL image or array), largest first.

        `detector` overrides the photo detector, e.g. a FaceDetector(mode="video") per webcam stream.
        """
        from core.faces import align_face
        from core.images import load_image, to_grey

        rgb = load_image(image)
        faces = (detector or self.detector).detect(rgb)
        if not faces:
            return []
        grey = to_grey(rgb)
        crops = np.stack([align_face(grey, face, self.config.input_size) for face in faces])
        probs = self.predict_crops(crops)
        return [
            FacePrediction(
                box=face.box, landmarks=face.landmarks,
                probs={name: float(p) for name, p in zip(EXPRESSIONS, row)},
                label=EXPRESSIONS[int(row.argmax())], crop=crop, detector=face.detector,
                aus=_aus_of(face.landmarks),
            )
            for face, row, crop in zip(faces, probs, crops)
        ]


def _aus_of(landmarks: np.ndarray) -> dict[str, float] | None:
    """AU intensities of one face, or None without a mesh."""
    from core.aus import measure_aus
    from core.labels import AUS

    values = measure_aus(landmarks)
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
