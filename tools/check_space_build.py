"""Prove, from this machine, that the repository builds and starts as a Hugging Face Space (sdk: gradio).

    python tools/check_space_build.py [--skip-resolve] [--skip-app] [--report-dir DIR]

Run it with the interpreter of the environment ./run.sh made (CI does, through tests/test_space_build.py).
Three checks, each printing one line:

1. resolve: the Space builder's install, asked of the package registry alone (`pip install --isolated
   --dry-run --ignore-installed --report`, so this machine's local wheels and pip settings are left out):
   requirements.txt together with the builder's own `gradio[oauth]==<sdk_version> spaces` step. Every pin
   must resolve to itself, exactly one OpenCV distribution must be in it, and nothing may come in beyond
   the lock but torch's CUDA packages (PyPI's torch==2.13.0 is a CUDA build; pre-requirements.txt installs
   the CPU build first on the Space, from PyTorch's CPU index, which this machine cannot reach).
2. environment: the environment this interpreter runs in (made by ./run.sh the way the Space builds):
   torch is a CPU build (`+cpu`, no CUDA runtime, no nvidia-* or triton distributions), one OpenCV,
   every pin of requirements.txt installed at its version, `pip check` clean.
3. app: `python app.py` from this environment answers HTTP 200 on a free port.

A registry that cannot be reached is reported as such (exit 3), not as a failed resolve (exit 1).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OPENCV = {"opencv-python", "opencv-python-headless", "opencv-contrib-python", "opencv-contrib-python-headless"}
# What PyPI's CUDA build of torch brings along; the CPU build from pre-requirements.txt brings none of it.
CUDA_PACKAGE = re.compile(r"^(nvidia-.*|triton|cuda-.*)$")
NETWORK_ERRORS = ("NewConnectionError", "Max retries exceeded", "ConnectTimeout", "ReadTimeout",
                  "Temporary failure in name resolution", "Name or service not known", "Connection reset",
                  "No route to host", "Network is unreachable", "SSLError", "RemoteDisconnected")
EXIT_FAILED, EXIT_NETWORK = 1, 3


class CheckFailed(Exception):
    """The repository would not build or start as the Space builds it."""


class RegistryUnreachable(Exception):
    """The package registry could not be asked: nothing is known about the build."""


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def front_matter(readme: Path) -> dict[str, str]:
    """The README's YAML front matter as flat `key: value` strings (all the Space builder reads)."""
    text = readme.read_text()
    match = re.match(r"---\n(.*?)\n---\n", text, flags=re.S)
    if not match:
        raise CheckFailed(f"{readme.name} has no front matter")
    fields = {}
    for line in match.group(1).splitlines():
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip().strip('"')
    return fields


def pins(requirements: Path) -> dict[str, str]:
    """name -> version of every `name==version` line (options and comments skipped)."""
    found = {}
    for line in requirements.read_text().splitlines():
        line = line.split("#")[0].strip()
        if not line or line.startswith("-"):
            continue
        name, sep, version = line.partition("==")
        if not sep:
            raise CheckFailed(f"{requirements.name}: {line!r} is not pinned with ==")
        found[canonical(name)] = version.strip()
    return found


def builder_step(fields: dict[str, str]) -> list[str]:
    """The Space builder's own install after requirements.txt, for the front matter's gradio version."""
    if fields.get("sdk") != "gradio" or not fields.get("sdk_version"):
        raise CheckFailed(f"README front matter: sdk {fields.get('sdk')!r}, sdk_version {fields.get('sdk_version')!r}")
    return [f"gradio[oauth]=={fields['sdk_version']}", "spaces"]


def analyse_resolve(report: dict, lock: dict[str, str]) -> dict[str, object]:
    """Check a pip --report of the builder's resolve against the lock; returns a summary, raises CheckFailed."""
    resolved = {canonical(item["metadata"]["name"]): item for item in report["install"]}
    version = {name: item["metadata"]["version"] for name, item in resolved.items()}
    problems = []
    moved = {name: (want, version.get(name, "absent")) for name, want in lock.items() if version.get(name) != want}
    if moved:
        problems.append("pins moved: " + ", ".join(f"{n} {w} -> {g}" for n, (w, g) in sorted(moved.items())))
    opencv = sorted(OPENCV & set(resolved))
    if len(opencv) != 1:
        problems.append(f"expected one OpenCV distribution, got {opencv or 'none'}")
    extra = sorted(set(resolved) - set(lock))
    cuda = [name for name in extra if CUDA_PACKAGE.match(name)]
    unlocked = [f"{name} {version[name]}" for name in extra if not CUDA_PACKAGE.match(name)]
    if unlocked:
        problems.append("not in requirements.txt: " + ", ".join(unlocked))
    if cuda and "torch" not in resolved:
        problems.append(f"CUDA packages without torch: {cuda}")
    if problems:
        raise CheckFailed("; ".join(problems))
    hosts = sorted({re.sub(r"^[a-z+]+://([^/]*)/.*$", r"\1", item["download_info"]["url"]) for item in resolved.values()})
    return {"packages": len(resolved), "opencv": opencv[0], "torch_cuda_packages": cuda, "hosts": hosts}


def _pip_failure(output: str) -> Exception:
    tail = "\n".join(output.strip().splitlines()[-15:])
    if any(marker in output for marker in NETWORK_ERRORS):
        return RegistryUnreachable(f"the package registry could not be reached, so the Space's install could "
                                   f"not be checked (retry when the network is back):\n{tail}")
    return CheckFailed(f"the Space builder's resolve fails:\n{tail}")


def resolve(requirements: Path, step: list[str], report_path: Path, timeout: float = 900) -> dict:
    """pip's resolve of requirements.txt + the builder's step against the registry alone (nothing installed)."""
    command = [sys.executable, "-m", "pip", "install", "--isolated", "--dry-run", "--ignore-installed",
               "--use-feature=fast-deps", "--disable-pip-version-check", "--report", str(report_path),
               "-r", str(requirements), *step]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}  # --isolated ignores them anyway
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)
    except subprocess.TimeoutExpired as error:
        raise RegistryUnreachable(f"the registry resolve took more than {timeout:.0f} s (a slow or unreachable "
                                  "registry; nothing is known about the build)") from error
    if done.returncode != 0:
        raise _pip_failure(done.stdout + done.stderr)
    return json.loads(report_path.read_text())


def check_environment(lock: dict[str, str]) -> dict[str, object]:
    """This interpreter's environment: CPU torch, one OpenCV, every pin installed, pip check clean."""
    from importlib import metadata

    import torch

    installed = {canonical(d.metadata["Name"]): d.version for d in metadata.distributions()}
    problems = []
    if torch.version.cuda is not None or not torch.__version__.endswith("+cpu"):
        problems.append(f"torch {torch.__version__} (CUDA {torch.version.cuda}) is not the CPU build")
    cuda = sorted(name for name in installed if CUDA_PACKAGE.match(name))
    if cuda:
        problems.append(f"CUDA packages installed: {cuda}")
    opencv = sorted(OPENCV & set(installed))
    if len(opencv) != 1:
        problems.append(f"expected one OpenCV distribution, got {opencv or 'none'}")
    # torch==2.13.0 in the lock is satisfied by 2.13.0+cpu (a local version label)
    wrong = {n: (v, installed.get(n, "absent")) for n, v in lock.items() if installed.get(n, "").split("+")[0] != v}
    if wrong:
        problems.append("installed versions differ from requirements.txt: " + ", ".join(
            f"{n} {w} -> {g}" for n, (w, g) in sorted(wrong.items())))
    pip_check = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True, timeout=120)
    if pip_check.returncode != 0:
        problems.append("pip check: " + pip_check.stdout.strip())
    if problems:
        raise CheckFailed("; ".join(problems))
    return {"torch": torch.__version__, "opencv": opencv[0], "distributions": len(installed)}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_app_starts(app_file: str, timeout: float = 240) -> dict[str, object]:
    """`python app.py` as the Space runs it (GRADIO_SERVER_* set) answers HTTP 200; then it is stopped."""
    port = _free_port()
    env = {**os.environ, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port)}
    with tempfile.TemporaryFile("w+") as log:
        process = subprocess.Popen([sys.executable, app_file], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        start = time.monotonic()
        try:
            while time.monotonic() - start < timeout:
                if process.poll() is not None:
                    log.seek(0)
                    raise CheckFailed(f"{app_file} exited with {process.returncode}:\n{log.read()[-3000:]}")
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
                        if response.status == 200:
                            return {"port": port, "seconds": round(time.monotonic() - start, 1)}
                except OSError:
                    pass
                time.sleep(0.5)
            log.seek(0)
            raise CheckFailed(f"{app_file} did not answer on port {port} within {timeout:.0f} s:\n{log.read()[-3000:]}")
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-resolve", action="store_true", help="leave out the registry resolve (check 1)")
    parser.add_argument("--skip-app", action="store_true", help="leave out starting the app (check 3)")
    parser.add_argument("--report-dir", type=Path, help="keep pip's report here (default: a temporary folder)")
    args = parser.parse_args(argv)
    fields = front_matter(ROOT / "README.md")
    lock = pins(ROOT / "requirements.txt")
    try:
        if not args.skip_resolve:
            with tempfile.TemporaryDirectory() as tmp:
                folder = args.report_dir or Path(tmp)
                folder.mkdir(parents=True, exist_ok=True)
                started = time.monotonic()
                report = resolve(ROOT / "requirements.txt", builder_step(fields), folder / "space-resolve.json")
                summary = analyse_resolve(report, lock)
                print(f"resolve ok ({time.monotonic() - started:.0f} s): {summary['packages']} packages from "
                      f"{', '.join(summary['hosts'])}, no pin moved, one OpenCV ({summary['opencv']}); from the "
                      f"registry alone torch is its CUDA build, +{len(summary['torch_cuda_packages'])} CUDA packages "
                      "that pre-requirements.txt's CPU build avoids", flush=True)
        env = check_environment(lock)
        print(f"environment ok: torch {env['torch']}, {env['opencv']}, {env['distributions']} distributions, "
              "every pin installed, pip check clean", flush=True)
        if not args.skip_app:
            app = check_app_starts(fields.get("app_file", "app.py"))
            print(f"app ok: {fields.get('app_file', 'app.py')} answered HTTP 200 on port {app['port']} "
                  f"after {app['seconds']} s", flush=True)
    except RegistryUnreachable as error:
        print(f"NETWORK: {error}", file=sys.stderr)
        return EXIT_NETWORK
    except CheckFailed as error:
        print(f"FAILED: {error}", file=sys.stderr)
        return EXIT_FAILED
    return 0


if __name__ == "__main__":
    sys.exit(main())
