"""Weights files: save() and load() are a pair, and the loader refuses what it cannot read right."""

import numpy as np
import pytest
import torch

from core.checkpoint import export_recognizer, load_generator, load_recognizer, read_checkpoint
from core.errors import WeightsError
from core.models.generator import DiscriminatorNet, EncoderNet, GeneratorNet
from core.models.recognizer import RecognizerConfig, RecognizerNet
from core.recognizer import Recognizer
from core.synthesizer import Synthesizer
from core.weights import FORMAT_VERSION, read_safetensors, save_safetensors
from tests.conftest import TINY_GENERATOR

TINY_RECOGNIZER = RecognizerConfig(widths=(4, 8), depths=(1, 1), embed_dim=8)


def _tiny_recognizer_file(path, **metadata_changes):
    net = RecognizerNet(TINY_RECOGNIZER)
    metadata = {"kind": "recognizer", "version": FORMAT_VERSION, "config": TINY_RECOGNIZER.to_dict(),
                **metadata_changes}
    save_safetensors(path, net.state_dict(), {k: v for k, v in metadata.items() if v is not None})
    return net


def test_recognizer_save_then_load_gives_the_same_network(tmp_path):
    torch.manual_seed(0)
    original = Recognizer(RecognizerNet(TINY_RECOGNIZER), torch.device("cpu"))
    original.save(tmp_path / "r.safetensors", {"note": "round trip"})
    loaded = Recognizer.load(path=tmp_path / "r.safetensors", device="cpu", runtime="torch")
    crops = np.random.default_rng(0).integers(0, 256, (3, 48, 48), dtype=np.uint8)
    np.testing.assert_array_equal(original.predict_crops(crops), loaded.predict_crops(crops))
    # by default a file's weights run on ONNX Runtime: the same network to float precision
    np.testing.assert_allclose(Recognizer.load(path=tmp_path / "r.safetensors").predict_crops(crops),
                               original.predict_crops(crops), atol=1e-5)
    assert read_safetensors(tmp_path / "r.safetensors")[1]["note"] == "round trip"


def test_synthesizer_save_then_load_gives_the_same_faces(tmp_path):
    torch.manual_seed(0)
    class_aus = {"neutral": [0.1] * 17, "happiness": [0.5] * 17}
    original = Synthesizer(GeneratorNet(TINY_GENERATOR), EncoderNet(TINY_GENERATOR), class_aus, torch.device("cpu"),
                           d=DiscriminatorNet(TINY_GENERATOR), metadata={"step": 7})
    original.save(tmp_path / "g.safetensors")
    loaded = Synthesizer.load(path=tmp_path / "g.safetensors", device="cpu")
    for a, b in zip(original.generate({"happiness": 1.0}, seed=1, n=2), loaded.generate({"happiness": 1.0}, seed=1, n=2)):
        np.testing.assert_array_equal(a, b)
    assert loaded.metadata["step"] == 7 and loaded.d is not None
    g, e, d, metadata = load_generator(path=tmp_path / "g.safetensors")
    assert metadata["class_aus"]["happiness"] == [0.5] * 17


@pytest.mark.parametrize("changes, message", [
    ({"kind": "generator"}, "not recognizer weights"),
    ({"kind": None}, "no weights kind"),
    ({"version": FORMAT_VERSION + 1}, "format version"),
    ({"version": None}, "format version"),
    ({"config": None}, "no config"),
    ({"config": {**TINY_RECOGNIZER.to_dict(), "attention": True}}, "unknown RecognizerConfig keys"),
    ({"config": {**TINY_RECOGNIZER.to_dict(), "embed_dim": 16}}, "do not match their config"),
])
def test_the_loader_refuses_what_it_cannot_read_right(tmp_path, changes, message):
    _tiny_recognizer_file(tmp_path / "bad.safetensors", **changes)
    with pytest.raises(WeightsError, match=message):
        load_recognizer(path=tmp_path / "bad.safetensors")
    with pytest.raises(WeightsError):
        Recognizer.load(path=tmp_path / "bad.safetensors")


def test_a_recognizer_file_is_not_a_generator(tmp_path):
    export_recognizer(tmp_path / "r.safetensors", RecognizerNet(TINY_RECOGNIZER))
    with pytest.raises(WeightsError, match="not generator weights"):
        Synthesizer.load(path=tmp_path / "r.safetensors")
    tensors, metadata = read_checkpoint("recognizer", path=tmp_path / "r.safetensors")
    assert metadata["kind"] == "recognizer" and tensors
