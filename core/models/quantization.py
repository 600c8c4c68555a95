"""The recognizer in int8: ONNX Runtime static quantization of the float export, with shipped activation ranges.

The activation ranges (weights/recognizer_int8_ranges.json, 7 KB) are measured by
`python -m core.export calibrate --data ../shared/data/fer2013plus` on FER+ train crops passed through the
float export of the shipped safetensors; the file names that file's sha256 and the export version. The int8
graph is then derived at first use (about 0.2 s) from the same safetensors and these ranges into the cache,
never kept in git; weights the ranges were not measured on run in float (see ranges_for).
Weights: int8 per output channel, symmetric, in 7 bits (REDUCE_RANGE); activations: uint8 per tensor (QDQ format,
which ONNX Runtime fuses into integer convolutions).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from core.weights import WEIGHTS_DIR

RANGES_FILE = WEIGHTS_DIR / "recognizer_int8_ranges.json"
# Bumped when the quantization settings change, so stale cache files are not reused.
QUANT_VERSION = 3
# Weights in 7 bits (ONNX Runtime's reduce_range): x86 CPUs without VNNI multiply uint8 activations by int8 weights
# with an instruction (vpmaddubsw) that saturates pairs of products at 16 bits, and 8-bit weights overflowed it:
# on an AMD EPYC with AVX2 alone FER+ test accuracy fell to 0.8530 (float 0.8731). With 7 bits no pair can
# saturate, so every x86 CPU computes the same exact integer sums: the same outputs with or without VNNI.
REDUCE_RANGE = True
# What runs in integers: the convolutions, pooling and dense layers. The softmaxes stay float, so the
# probabilities keep float precision and sum to 1 (quantized, they came in steps of 1/255).
QUANTIZED_OPS = ("Conv", "Gemm", "MaxPool", "GlobalAveragePool", "Flatten", "Relu")


@dataclass(frozen=True)
class CalibrationConfig:
    """How the shipped activation ranges are measured (python -m core.export calibrate)."""

    split: str = "train"
    crops: int = 1024  # FER+ train crops, drawn with `seed`
    seed: int = 0
    method: str = "Percentile"  # onnxruntime.quantization.CalibrationMethod; 99.999th percentile of |x|
    batch: int = 64


_QUIET_ROOT = threading.Lock()


def _quantize(float_path: Path, out_path: Path, cache_path: Path, reader=None, method: str = "Percentile") -> None:
    """quantize_static with the ranges read from (or, given a reader, measured into) the calibration cache file."""
    import logging

    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    with _QUIET_ROOT:  # the root logger's level is process-wide: two derivations at once must not interleave
        level = logging.getLogger().level
        logging.getLogger().setLevel(logging.ERROR)  # its "consider pre-processing" advice: outputs measured the same
        try:
            quantize_static(str(float_path), str(out_path), reader, quant_format=QuantFormat.QDQ, per_channel=True,
                             reduce_range=REDUCE_RANGE, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                             calibrate_method=getattr(CalibrationMethod, method),
                             op_types_to_quantize=list(QUANTIZED_OPS), calibration_cache_path=str(cache_path))
        finally:
            logging.getLogger().setLevel(level)


class _Crops:
    """onnxruntime's CalibrationDataReader protocol over uint8 crops [N, H, W]."""

    def __init__(self, crops: np.ndarray, batch: int):
        self._batches = iter([np.ascontiguousarray(crops[i : i + batch]) for i in range(0, len(crops), batch)])

    def get_next(self):
        batch = next(self._batches, None)
        return None if batch is None else {"crops": batch}


def measure_ranges(float_path: Path, crops: np.ndarray, config: CalibrationConfig = CalibrationConfig()) -> dict:
    """Activation ranges of the float export on these crops, as onnxruntime's calibration cache (a dict)."""
    with tempfile.TemporaryDirectory(prefix="expressionlab-calib-") as tmp:
        cache = Path(tmp) / "ranges.json"
        _quantize(Path(float_path), Path(tmp) / "int8.onnx", cache, _Crops(crops, config.batch), config.method)
        return json.loads(cache.read_text())


def calibrate(net, weights_sha256: str, data: str, out: Path = RANGES_FILE,
              config: CalibrationConfig = CalibrationConfig()) -> dict:
    """Measure the ranges on FER+ crops and write them, with what they were measured on, to `out`."""
    from core.models.onnx_runtime import EXPORT_VERSION, ensure_onnx
    from core.training.data import load_split

    images = load_split(data, config.split).images
    rng = np.random.default_rng(config.seed)
    crops = images[np.sort(rng.choice(len(images), size=min(config.crops, len(images)), replace=False))]
    record = {"weights_sha256": weights_sha256, "export_version": EXPORT_VERSION,
              "calibration": asdict(config), "ranges": measure_ranges(ensure_onnx(net, weights_sha256), crops, config)}
    out = Path(out)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    with os.fdopen(fd, "w") as f:
        json.dump(record, f, indent=1, sort_keys=True)
        f.write("\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, out)
    return record


def ranges_for(weights_sha256: str, path: Path = RANGES_FILE) -> dict | None:
    """The shipped ranges when they were measured on these weights and this export, else None."""
    from core.models.onnx_runtime import EXPORT_VERSION

    path = Path(path)
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as error:  # e.g. a Git LFS pointer or a truncated copy: say so, do not hide it
        from core.errors import WeightsError

        raise WeightsError(f"{path} is not a readable ranges file ({error}); python -m core.export calibrate "
                           "measures it again") from error
    if record.get("weights_sha256") != weights_sha256 or record.get("export_version") != EXPORT_VERSION:
        return None
    return record


def int8_path_for(weights_sha256: str, record: dict) -> Path:
    from core.models.onnx_runtime import EXPORT_VERSION, cache_dir

    ranges_sha = hashlib.sha256(json.dumps(record["ranges"], sort_keys=True).encode()).hexdigest()
    name = f"recognizer-{weights_sha256[:16]}-int8-{ranges_sha[:12]}-v{EXPORT_VERSION}.{QUANT_VERSION}.onnx"
    return cache_dir() / "onnx" / name


def ensure_int8(net, weights_sha256: str) -> Path | None:
    """The cached int8 graph for these weights, derived on first use; None without ranges measured on them."""
    from core.models.onnx_runtime import ensure_onnx

    record = ranges_for(weights_sha256)
    if record is None:
        return None
    path = int8_path_for(weights_sha256, record)
    if path.is_file():
        return path
    float_path = ensure_onnx(net, weights_sha256)
    with tempfile.TemporaryDirectory(prefix=".int8-", dir=path.parent) as tmp:
        cache = Path(tmp) / "ranges.json"
        cache.write_text(json.dumps(record["ranges"]))
        out = Path(tmp) / path.name
        _quantize(float_path, out, cache, method=record["calibration"]["method"])
        os.chmod(out, 0o644)
        os.replace(out, path)  # atomic: readers never see half a file
    return path


def _shipped():
    from core.checkpoint import load_recognizer
    from core.weights import REGISTRY

    net, _ = load_recognizer("recognizer", None)  # sha256-checked
    return net, REGISTRY["recognizer"].sha256


def write_graphs() -> dict:
    """Derive the shipped recognizer's float and int8 graphs into the cache now (python -m core.export onnx)."""
    from core.models.onnx_runtime import ensure_onnx

    net, sha = _shipped()
    int8 = ensure_int8(net, sha)
    return {"weights_sha256": sha, "onnx": str(ensure_onnx(net, sha)), "onnx_int8": str(int8) if int8 else None}


def write_calibration(data: str, out: Path = RANGES_FILE) -> dict:
    """Measure the shipped recognizer's activation ranges (python -m core.export calibrate)."""
    net, sha = _shipped()
    record = calibrate(net, sha, data, out)
    return {"weights_sha256": sha, "ranges": str(out), "tensors": len(record["ranges"]["data"]),
            "calibration": record["calibration"]}
