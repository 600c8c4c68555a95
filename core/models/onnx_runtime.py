"""The recognizer on ONNX Runtime: batch norm folded into the convolutions, exported once per weights file.

The .onnx file is derived from the safetensors weights (their sha256 names it) into a cache directory at
first use, or written by `python -m core.export onnx`; it is never kept in git. The graph takes uint8
crops [N, 48, 48] and returns both heads' probabilities, so no pre- or post-processing runs in numpy.
"""

from __future__ import annotations

import copy
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

# Bumped when the exported graph changes, so stale cache files are not reused.
EXPORT_VERSION = 1
OPSET = 17
BATCH = 256


def cache_dir() -> Path:
    """$EXPRESSIONLAB_CACHE, else $XDG_CACHE_HOME/expressionlab, else ~/.cache/expressionlab."""
    root = os.environ.get("EXPRESSIONLAB_CACHE")
    if root:
        return Path(root)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "expressionlab"


def onnx_path_for(weights_sha256: str, kind: str = "recognizer", version: int = EXPORT_VERSION) -> Path:
    """The cache file of a network's export, named after its weights' sha256 and its export version."""
    return cache_dir() / "onnx" / f"{kind}-{weights_sha256[:16]}-v{version}.onnx"


def fold_batch_norm(net: nn.Module) -> nn.Module:
    """A copy of the eval-mode network with every BatchNorm folded into the conv / linear layer before it."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

    net = copy.deepcopy(net).eval()

    def fold(sequence: nn.Sequential) -> None:
        for i in range(len(sequence) - 1):
            layer, nxt = sequence[i], sequence[i + 1]
            if isinstance(nxt, (nn.BatchNorm1d, nn.BatchNorm2d)):
                if isinstance(layer, nn.Conv2d):
                    sequence[i] = fuse_conv_bn_eval(layer, nxt)
                elif isinstance(layer, nn.Linear):
                    sequence[i] = fuse_linear_bn_eval(layer, nxt)
                else:
                    continue
                sequence[i + 1] = nn.Identity()

    for module in list(net.modules()):
        if isinstance(module, nn.Sequential):
            fold(module)
    return net


class _Exported(nn.Module):
    """uint8 crops [N, H, W] -> (FER+ probabilities [N, 8], FER2013 probabilities [N, 7] or zeros [N, 0])."""

    def __init__(self, net):
        super().__init__()
        self.net = net
        self.mean, self.std = float(net.config.mean), float(net.config.std)

    def forward(self, crops):
        x = (crops.float().unsqueeze(1) / 255.0 - self.mean) / self.std
        logits8, logits7 = self.net(x)
        p7 = logits7.softmax(1) if logits7 is not None else logits8[:, :0]
        return logits8.softmax(1), p7


RECOGNIZER_OUTPUTS = ("ferplus", "fer2013")


def export_onnx(net, path: str | Path, wrap=_Exported, outputs: tuple[str, ...] = RECOGNIZER_OUTPUTS) -> Path:
    """Write the folded network, wrapped to take uint8 crops, as ONNX (atomically: readers never see half a file)."""
    size = net.config.input_size
    return write_onnx(wrap(fold_batch_norm(net)).eval(), torch.zeros(2, size, size, dtype=torch.uint8), path, outputs)


def write_onnx(model: nn.Module, example: torch.Tensor, path: str | Path, outputs: tuple[str, ...]) -> Path:
    """torch.onnx.export of model(crops) with a dynamic batch, written atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        with torch.no_grad():
            torch.onnx.export(model, (example,), tmp, input_names=["crops"], output_names=list(outputs),
                              dynamic_axes={name: {0: "n"} for name in ("crops", *outputs)},
                              opset_version=OPSET, dynamo=False)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def ensure_onnx(net, weights_sha256: str, kind: str = "recognizer", version: int = EXPORT_VERSION,
                wrap=_Exported, outputs: tuple[str, ...] = RECOGNIZER_OUTPUTS) -> Path:
    """The cached export for these weights, written on first use."""
    path = onnx_path_for(weights_sha256, kind, version)
    if not path.is_file():
        export_onnx(net, path, wrap, outputs)
    return path


def default_threads() -> int:
    """$EXPRESSIONLAB_ORT_THREADS, else 2 (at most the CPUs): on a 2-core AVX2 host the int8 crop takes 1.2-1.4 ms
    on two threads against 1.9-2.1 on one, for the same CPU time, as the workers do not spin (docs/limits.md)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, int(os.environ.get("EXPRESSIONLAB_ORT_THREADS", str(min(2, cpus)))))


def cpu_session(path: str | Path, threads: int):
    """An ONNX Runtime CPU session set for latency: sequential, `threads` intra-op threads, no spinning."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Spinning workers burn the other core between calls; this machine shares it (streams, training).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OnnxRecognizer:
    """An ONNX Runtime session over an exported recognizer; run() is safe from several threads."""

    def __init__(self, path: str | Path, threads: int | None = None):
        self.threads = threads or default_threads()
        self.path = Path(path)
        self._session = cpu_session(path, self.threads)

    def run(self, crops: np.ndarray, mirror: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """uint8 crops [N, H, W] -> (FER+ [N, 8], FER2013 [N, 7]); mirror averages with the flipped crops."""
        crops = np.ascontiguousarray(crops, dtype=np.uint8)
        if len(crops) > BATCH:  # bounded activations for whole data sets (evaluation)
            parts = [self.run(crops[i : i + BATCH], mirror) for i in range(0, len(crops), BATCH)]
            return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
        n = len(crops)
        if mirror:
            crops = np.concatenate([crops, crops[:, :, ::-1]])
        p8, p7 = self._session.run(None, {"crops": crops})
        if mirror:
            p8, p7 = (p8[:n] + p8[n:]) / 2, (p7[:n] + p7[n:]) / 2
        return p8, p7


def load_session(net, weights_sha256: str, threads: int | None = None, int8: bool = False) -> OnnxRecognizer | None:
    """A session on the cached export of these weights; a cache file that does not load is exported again.

    int8: the int8 graph (core/models/quantization.py), or None when no ranges were measured on these weights.
    """
    def export():
        if not int8:
            return ensure_onnx(net, weights_sha256)
        from core.models.quantization import ensure_int8

        return ensure_int8(net, weights_sha256)

    return open_cached(export, lambda path: OnnxRecognizer(path, threads))


def open_cached(export, open_session):
    """open_session(export()), or None when export() gives no file; a cached file that does not load (damaged)
    is deleted and exported again, once."""
    path = export()
    if path is None:
        return None
    try:
        return open_session(path)
    except Exception:  # onnxruntime raises its own types for a damaged file
        path.unlink(missing_ok=True)
        return open_session(export())


def runtime_available(int8: bool = False) -> bool:
    try:
        import onnx  # noqa: F401  (torch.onnx.export needs it)
        import onnxruntime  # noqa: F401

        if int8:
            import onnxruntime.quantization  # noqa: F401  (needs ml_dtypes)
    except ImportError:
        return False
    return True
