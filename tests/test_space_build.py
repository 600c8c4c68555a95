"""tools/check_space_build.py: its report analysis on made-up reports, then the whole check for real (CI runs it)."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import check_space_build as check  # noqa: E402


def _report(**versions):
    return {"install": [{"metadata": {"name": name.replace("_", "-"), "version": version},
                         "download_info": {"url": f"https://files.example/{name}-{version}.whl"}}
                        for name, version in versions.items()]}


LOCK = {"numpy": "2.4.6", "opencv-contrib-python": "5.0.0.93", "torch": "2.13.0"}


def test_a_resolve_that_keeps_every_pin_passes_and_names_torchs_cuda_packages():
    report = _report(numpy="2.4.6", opencv_contrib_python="5.0.0.93", torch="2.13.0", nvidia_cublas="13.1", triton="3.7")
    summary = check.analyse_resolve(report, LOCK)
    assert summary["opencv"] == "opencv-contrib-python"
    assert summary["torch_cuda_packages"] == ["nvidia-cublas", "triton"]
    assert summary["hosts"] == ["files.example"]


@pytest.mark.parametrize("versions, message", [
    ({"numpy": "1.26.4", "opencv-contrib-python": "5.0.0.93", "torch": "2.13.0"}, "pins moved: numpy 2.4.6 -> 1.26.4"),
    ({"numpy": "2.4.6", "torch": "2.13.0", "opencv-contrib-python": "5.0.0.93", "opencv-python-headless": "4.11.0.86"},
     "expected one OpenCV"),
    ({"numpy": "2.4.6", "torch": "2.13.0"}, "opencv-contrib-python 5.0.0.93 -> absent"),
    ({"numpy": "2.4.6", "opencv-contrib-python": "5.0.0.93", "torch": "2.13.0", "torchvision": "0.28.0"},
     "not in requirements.txt: torchvision 0.28.0"),
])
def test_a_resolve_that_moves_a_pin_or_adds_an_opencv_fails(versions, message):
    with pytest.raises(check.CheckFailed, match=message):
        check.analyse_resolve(_report(**versions), LOCK)


def test_network_errors_are_told_apart_from_conflicts():
    unreachable = check._pip_failure("WARNING: Retrying ... NewConnectionError(...)\nERROR: No matching distribution")
    conflict = check._pip_failure("ERROR: Cannot install numpy==2.4.6 because these package versions conflict")
    assert isinstance(unreachable, check.RegistryUnreachable) and "could not be reached" in str(unreachable)
    assert isinstance(conflict, check.CheckFailed)


def test_the_repository_declares_a_gradio_space_with_a_complete_lock():
    fields = check.front_matter(ROOT / "README.md")
    assert fields["sdk"] == "gradio" and fields["app_file"] == "app.py" and fields["python_version"] == "3.11"
    assert check.builder_step(fields) == [f"gradio[oauth]=={fields['sdk_version']}", "spaces"]
    lock = check.pins(ROOT / "requirements.txt")
    assert lock["gradio"] == fields["sdk_version"]  # the builder's gradio step moves nothing
    assert check.pins(ROOT / "pre-requirements.txt") == {"torch": lock["torch"] + "+cpu"}
    assert "facenet-pytorch" not in lock and "torchvision" not in lock
    assert len(check.OPENCV & set(lock)) == 1


def test_the_environment_is_the_one_the_space_builds():
    """What ./run.sh installed: torch's CPU build, one OpenCV, every pin, pip check clean."""
    check.check_environment(check.pins(ROOT / "requirements.txt"))


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_the_space_builds_from_the_registry_and_the_app_starts():
    """The CI proof: the builder's resolve against the registry alone, this environment, `python app.py`."""
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "check_space_build.py")], capture_output=True,
                          text=True, timeout=1400, cwd=ROOT)
    print(done.stdout)
    if done.returncode == check.EXIT_NETWORK:
        pytest.fail("the package registry could not be reached, so the Space build was not checked:\n" + done.stderr)
    assert done.returncode == 0, done.stderr
    assert "resolve ok" in done.stdout and "environment ok" in done.stdout and "app ok" in done.stdout
