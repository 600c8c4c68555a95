"""A user's mistake is one clear message in the UI and one line in the server log, never a traceback."""

import logging
import os
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.conftest import ROOT, free_port


def test_a_user_error_is_logged_as_one_line_without_a_traceback(caplog):
    from demo.errors import UserError, shown

    with caplog.at_level(logging.WARNING, logger="expressionlab.ui"):
        error = UserError(f"{shown('<b>x.png</b>')} is not a readable image\nsecond line")
    assert error.print_exception is False  # gradio prints no traceback for it
    assert [r.getMessage() for r in caplog.records] == ["user error: &lt;b&gt;x.png&lt;/b&gt; is not a readable "
                                                        "image second line"]


@pytest.mark.integration
def test_the_running_app_logs_user_errors_without_tracebacks(tmp_path):
    from gradio_client import Client, handle_file

    port = free_port()
    log = tmp_path / "server.log"
    env = {**os.environ, "GRADIO_SERVER_PORT": str(port), "GRADIO_SERVER_NAME": "127.0.0.1"}
    with open(log, "w") as out:
        server = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}/"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        client = Client(url, verbose=False)
        broken = tmp_path / "broken.png"
        broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 100)
        mistakes = [
            lambda: client.predict(handle_file(str(broken)), api_name="/analyse_photo"),
            lambda: client.predict([], "(from folders or CSV)", 20, True, api_name="/fine_tune"),
            lambda: client.predict("a" * 600, api_name="/parse_text"),
        ]
        for mistake in mistakes:
            with pytest.raises(Exception):  # noqa: B017 -- gradio_client raises its AppError for a gr.Error
                mistake()
    finally:
        server.terminate()
        server.wait(timeout=30)
    text = log.read_text()
    assert "Traceback" not in text, text[-3000:]
    assert text.count("user error:") == len(mistakes), text[-3000:]
