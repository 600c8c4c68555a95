"""The tracking mesh at inference: ONNX Runtime over a graph derived from its safetensors, torch without it.

As for the recognizer (core/models/onnx_runtime.py), the .onnx file is exported from the weights at first
use into the cache directory, named by the weights' sha256, and never kept in git.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from core.models.onnx_runtime import cpu_session, ensure_onnx, open_cached, runtime_available

EXPORT_VERSION = 1
OUTPUTS = ("mesh", "present", "aus")


class _Exported(nn.Module):
    """uint8 crops [N, S, S] -> (mesh [N, 478, 3] in crop pixels, probability a face is centred [N], AUs [N, 17])."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, crops):
        mesh, logit, aus = self.net(crops)
        return mesh, torch.sigmoid(logit), aus


class MeshRuntime:
    """run(crops) on one thread (one crop is too little work to split); one runtime serves every stream
    (core.get_mesh_runtime): ONNX Runtime sessions and the eval-mode torch net may run from several threads."""

    def __init__(self, net, weights_sha256: str | None = None, onnx: bool = True):
        self.net = net.eval()
        self.input_size = net.config.input_size
        self._torch = _Exported(self.net)
        self._session = None
        if onnx and weights_sha256 is not None and runtime_available():
            def export() -> Path:
                return ensure_onnx(self.net, weights_sha256, "mesh_net", EXPORT_VERSION, _Exported, OUTPUTS)

            self._session = open_cached(export, lambda p: cpu_session(p, 1))
        self.runtime = "onnx" if self._session is not None else "torch"

    @classmethod
    def load(cls, path: str | Path | None = None, onnx: bool = True) -> MeshRuntime:
        """The shipped tracking mesh (sha256-checked), or the file at `path`."""
        from core.checkpoint import load_mesh_net
        from core.weights import REGISTRY, sha256_of

        net, _ = load_mesh_net(path=path)
        return cls(net, sha256_of(path) if path else REGISTRY["mesh_net"].sha256, onnx)

    @property
    def mean_shape(self) -> np.ndarray:
        """float32 [478, 3]: the training meshes' mean in crop pixels, where the net's fits start from."""
        return self.net.mean_shape.numpy().astype(np.float32)

    def run(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """uint8 crops [N, S, S] -> float32 (mesh [N, 478, 3] in crop pixels, presence probability [N], AUs [N, 17])."""
        crops = np.ascontiguousarray(crops, dtype=np.uint8)
        if self._session is not None:
            return tuple(self._session.run(None, {"crops": crops}))
        with torch.no_grad():
            return tuple(t.numpy() for t in self._torch(torch.from_numpy(crops)))
