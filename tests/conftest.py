import os
import socket
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def _tiny_generator_config():
    from core.models.generator import GeneratorConfig

    return GeneratorConfig(z_dim=8, g_channels=(16, 8, 8, 4), d_channels=(4, 8, 8, 16))


TINY_GENERATOR = _tiny_generator_config()
DATA_DIR = Path(os.environ.get("EXPRESSIONLAB_DATA", ROOT.parent / "shared" / "data" / "fer2013plus"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not (DATA_DIR / "test.npz").is_file():
        pytest.fail(f"FER+ data not found at {DATA_DIR}: put ../shared beside the repo or set EXPRESSIONLAB_DATA")
    return DATA_DIR


@pytest.fixture(scope="session")
def grace_hopper() -> Path:
    from core.benchmarks.common import sample_face_photo

    return sample_face_photo()


@pytest.fixture(scope="session")
def fer_test(data_dir):
    from core.training.data import load_split

    return load_split(data_dir, "test")


@pytest.fixture(scope="session")
def recognizer():
    from core import get_recognizer

    return get_recognizer()


def write_tiny_npz_dataset(root: Path, n: int = 256, size: int = 48, seed: int = 0) -> Path:
    """A synthetic data set in the FER+ npz layout: class k is a grating at angle k * 22.5 degrees."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for split in ("train", "valid", "test"):
        labels = rng.integers(0, 8, n)
        yy, xx = np.mgrid[0:size, 0:size]
        angle = labels[:, None, None] * np.pi / 8
        phase = rng.uniform(0, 2 * np.pi, (n, 1, 1))
        wave = np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / 6 + phase)
        images = np.clip(128 + 90 * wave + rng.normal(0, 20, (n, size, size)), 0, 255).astype(np.uint8)
        votes = np.zeros((n, 10), np.int16)
        votes[np.arange(n), labels] = 8
        votes[np.arange(n), (labels + 1) % 8] += 2
        fer2013 = np.array([(4, 5, 6, 1, 3, 2, 0, -1)[k] for k in labels], np.int8)
        np.savez(root / f"{split}.npz", images=images, names=np.array([f"{split}{i}.png" for i in range(n)]),
                 fer2013_label=fer2013, ferplus_votes=votes, ferplus_label=labels.astype(np.int8),
                 dup_in_train=np.zeros(n, bool))
    return root


@pytest.fixture
def tiny_dataset(tmp_path) -> Path:
    return write_tiny_npz_dataset(tmp_path / "tiny")


@pytest.fixture(scope="session")
def tiny_synthesizer(tmp_path_factory):
    from core.checkpoint import export_recognizer
    from core.models.recognizer import RecognizerConfig, RecognizerNet
    from core.synthesizer import Synthesizer
    from core.training.generator import GeneratorTrainConfig, train_generator

    root = tmp_path_factory.mktemp("gen")
    data = write_tiny_npz_dataset(root / "data", n=64)
    recognizer = root / "recognizer.safetensors"
    export_recognizer(recognizer, RecognizerNet(RecognizerConfig(widths=(8, 16), depths=(1, 1), embed_dim=16)))
    out = root / "run"
    tc = GeneratorTrainConfig(steps=4, batch_size=8, sample_every=2, log_every=2, amp=False)
    train_generator(data, out, None, TINY_GENERATOR, tc, recognizer_path=recognizer, device="cpu")
    tc.steps = 6
    assert train_generator(data, out, None, TINY_GENERATOR, tc, recognizer_path=recognizer, resume=True, device="cpu")["step"] == 6
    assert (out / "sample_000006.png").exists()
    return Synthesizer.load(path=out / "generator.safetensors", device="cpu")


@pytest.fixture(scope="session")
def app_url():
    """The full app, launched in this process on a free loopback port."""
    from demo.app import LAUNCH_OPTIONS, build_demo

    demo = build_demo()
    port = free_port()
    demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, quiet=True, **LAUNCH_OPTIONS)
    yield f"http://127.0.0.1:{port}/"
    demo.close()
