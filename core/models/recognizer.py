"""The recognizer network (VGG-style CNN), its config and its loss functions."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from core.config import SavedConfig
from core.labels import EXPRESSIONS, FER2013_LABELS


@dataclass(frozen=True)
class RecognizerConfig(SavedConfig):
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
