"""Every command line the README, docs/, the model card and the commands' own usage show still parses as written."""

import ast
import importlib
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = ("train", "evaluate", "evaluate_synth", "experiments", "bench", "aus", "faces", "analyse", "export")
DOCUMENTS = [ROOT / "README.md", ROOT / "weights" / "README.md", *sorted((ROOT / "docs").glob("*.md")),
             *(ROOT / "core" / f"{name}.py" for name in COMMANDS)]
COMMAND = re.compile(r"-m (core\.[a-z_]+)((?:\s+\S+)*)")


def documented_commands() -> list[tuple[str, str, list[str]]]:
    """(document, module, arguments) of each `-m core.X` line in a fenced code block (inline mentions in prose
    name a command without its arguments)."""
    found = []
    for document in DOCUMENTS:
        text = document.read_text()
        if document.suffix == ".py":  # a command's docstring: its indented usage lines
            blocks = [ast.get_docstring(ast.parse(text)) or ""]
        else:
            blocks = re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S)
        for line in "\n".join(blocks).replace("\\\n", " ").splitlines():  # shell line continuations joined
            match = COMMAND.search(re.sub(r"\[[^]]*\]", "", line.split(" #")[0]))  # [optional parts] left out
            if not match or "--help" in line:
                continue
            words = shlex.split(match.group(2).replace("...", "X").replace("SPLIT", "test"))
            found.append((document.name, match.group(1), words))
    return found


def test_the_documents_show_every_command():
    modules = {module for _, module, _ in documented_commands()}
    assert modules == {f"core.{name}" for name in COMMANDS}, modules


@pytest.mark.parametrize("document, module, words", documented_commands(),
                         ids=lambda v: v if isinstance(v, str) else " ".join(v)[:60])
def test_a_documented_command_parses(document, module, words):
    parser = importlib.import_module(module).build_parser()
    try:
        parser.parse_args(words)
    except SystemExit as error:
        pytest.fail(f"{document}: python -m {module} {' '.join(words)} no longer parses (exit {error.code})")
