"""The tracking mesh: a small CNN that re-fits MediaPipe's 478-point mesh on a 48-px FER-framed crop.

Live tracking (core/face/mesh_tracking.py) crops each face where the previous frame's mesh put it and asks
this net where the points are now. MediaPipe's refined mesh (192-px colour input) costs 5-7 ms a frame on a
2-core AVX2 host, more than the whole live budget; this net reads the same grey crop the recognizer does, in
well under a millisecond. It learns from MediaPipe's meshes of FER+ train faces (the AU/landmark cache), on
crops displaced as a face moves between frames, and says whether a face is still centred in the crop at all.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from core.config import SavedConfig
from core.face.detection import NUM_LANDMARKS


@dataclass
class MeshNetConfig(SavedConfig):
    input_size: int = 48  # the recognizer's crop: FER2013 framing, grey
    widths: tuple[int, ...] = (24, 48, 96)  # one stage each; every stage halves the side (48 -> 6): about 12 MFLOPs
    squeeze: int = 32  # 1x1 channels before the dense head (keeps the file small)
    hidden: int = 256
    delta_scale: float = 4.0  # output units in crop pixels: offsets from the mean mesh are about this size
    mean: float = 0.5
    std: float = 0.25
    z_weight: float = 0.5  # depth is read less sharply from a grey crop, and the AUs lean on it less
    present_weight: float = 0.2
    num_aus: int = 17  # the AUs of core.labels.AUS, read straight from the crop (core/face/aus.py measures them
    au_weight: float = 5.0  # on MediaPipe's mesh; read off this net's mesh they would carry all its points' errors)


def _conv(c_in: int, c_out: int, stride: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


class MeshNet(nn.Module):
    """uint8-range grey crops [N, S, S] -> (mesh [N, 478, 3] in crop pixels, face-present logit [N], AUs [N, 17])."""

    def __init__(self, config: MeshNetConfig | None = None):
        super().__init__()
        self.config = config = config or MeshNetConfig()
        layers, c_in = [], 1
        for width in config.widths:
            layers += _conv(c_in, width, 2) + _conv(width, width, 1)
            c_in = width
        layers += [nn.Conv2d(c_in, config.squeeze, 1, bias=False), nn.BatchNorm2d(config.squeeze), nn.ReLU(inplace=True)]
        self.trunk = nn.Sequential(*layers)
        side = config.input_size // 2 ** len(config.widths)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(config.squeeze * side * side, config.hidden),
                                  nn.ReLU(inplace=True), nn.Linear(config.hidden, NUM_LANDMARKS * 3 + 1 + config.num_aus))
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)
        # The mean mesh of the training crops (set by the trainer, saved with the weights).
        self.register_buffer("mean_shape", torch.zeros(NUM_LANDMARKS, 3))

    def forward(self, crops: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        from core.models.recognizer import normalize_crops

        c = self.config
        out = self.head(self.trunk(normalize_crops(crops, c)))
        n = NUM_LANDMARKS * 3
        mesh = self.mean_shape + out[:, :n].view(-1, NUM_LANDMARKS, 3) * c.delta_scale
        return mesh, out[:, n], torch.sigmoid(out[:, n + 1 :])

    def loss(self, crops: torch.Tensor, target: torch.Tensor, present: torch.Tensor, aus: torch.Tensor
             ) -> dict[str, torch.Tensor]:
        """On crops that hold a face: L1 on the points (x, y; z weighed less) and on the AUs; everywhere the
        presence logit's BCE."""
        c = self.config
        mesh, logit, read = self(crops)
        keep = present > 0.5
        if keep.any():
            err = (mesh[keep] - target[keep]).abs().mean(dim=(0, 1))
            points = err[0] + err[1] + c.z_weight * err[2]
            au = (read[keep] - aus[keep]).abs().mean()
        else:
            points = au = mesh.sum() * 0.0
        presence = F.binary_cross_entropy_with_logits(logit, present.float())
        return {"loss": points + c.au_weight * au + c.present_weight * presence, "points": points.detach(),
                "aus": au.detach(), "presence": presence.detach()}
