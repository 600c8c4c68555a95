"""MTCNN (facenet-pytorch, weights bundled in its wheel) as the fallback face detector.

facenet-pytorch imports two helpers from torchvision, which cannot be installed on a CPU-only
machine here (every reachable wheel is a CUDA build). When torchvision is not importable we
register a minimal stand-in with exactly those two functions, written in plain torch.
"""

from __future__ import annotations

import sys
import types

import numpy as np
import torch


def _to_tensor(picture) -> torch.Tensor:
    """HWC image (array or PIL) -> float CHW tensor, scaled to [0, 1] when uint8, like torchvision's."""
    array = np.asarray(picture)
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    if tensor.ndim == 2:
        tensor = tensor[:, :, None]
    tensor = tensor.permute(2, 0, 1).contiguous()
    return tensor.float().div(255) if tensor.dtype == torch.uint8 else tensor.float()


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Indices of the boxes kept by greedy non-maximum suppression, highest score first."""
    order = scores.argsort(descending=True)
    x0, y0, x1, y1 = boxes.unbind(1)
    areas = (x1 - x0).clamp(min=0) * (y1 - y0).clamp(min=0)
    keep = []
    while order.numel() > 0:
        i = order[0]
        keep.append(int(i))
        rest = order[1:]
        w = (torch.minimum(x1[i], x1[rest]) - torch.maximum(x0[i], x0[rest])).clamp(min=0)
        h = (torch.minimum(y1[i], y1[rest]) - torch.maximum(y0[i], y0[rest])).clamp(min=0)
        inter = w * h
        iou = inter / (areas[i] + areas[rest] - inter).clamp(min=1e-12)
        order = rest[iou <= iou_threshold]
    return torch.tensor(keep, dtype=torch.long, device=boxes.device)


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """NMS done independently per category (idxs), by offsetting each category's boxes apart."""
    if boxes.numel() == 0:
        return torch.empty((0,), dtype=torch.long, device=boxes.device)
    offsets = idxs.to(boxes) * (boxes.max() + 1)
    return nms(boxes + offsets[:, None], scores, iou_threshold)


def _import_facenet_pytorch():
    """Import facenet_pytorch, lending it the stand-in only for the import itself.

    The stand-in is removed from sys.modules afterwards (facenet keeps its own references), so other
    libraries that probe for torchvision (transformers does) still see that it is absent.
    """
    if "facenet_pytorch" in sys.modules:
        return sys.modules["facenet_pytorch"]
    try:
        import facenet_pytorch
        import torchvision.ops.boxes  # noqa: F401
        import torchvision.transforms.functional  # noqa: F401

        return facenet_pytorch
    except (ImportError, RuntimeError):
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
    modules = {name: types.ModuleType(name) for name in (
        "torchvision", "torchvision.transforms", "torchvision.transforms.functional", "torchvision.ops",
        "torchvision.ops.boxes",
    )}
    modules["torchvision.transforms.functional"].to_tensor = _to_tensor
    modules["torchvision.transforms"].functional = modules["torchvision.transforms.functional"]
    modules["torchvision.ops.boxes"].batched_nms = batched_nms
    modules["torchvision.ops"].boxes = modules["torchvision.ops.boxes"]
    modules["torchvision"].transforms = modules["torchvision.transforms"]
    modules["torchvision"].ops = modules["torchvision.ops"]
    sys.modules.update(modules)
    try:
        import facenet_pytorch
    finally:
        for name in modules:
            sys.modules.pop(name, None)
    return facenet_pytorch


def load_mtcnn(min_face_size: int = 20):
    """facenet-pytorch's MTCNN on the CPU, bundled weights only (nothing is downloaded)."""
    return _import_facenet_pytorch().MTCNN(keep_all=True, min_face_size=min_face_size, device="cpu")
