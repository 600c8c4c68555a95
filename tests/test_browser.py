"""The live webcam path in a real browser: headless Chromium, a fake camera showing a real face."""

import os
import time

import pytest

from core.labels import EXPRESSIONS
from tests.fake_webcam import write_y4m

pytestmark = [pytest.mark.browser, pytest.mark.integration]

CHROMIUM = "/usr/bin/chromium"


def _require_chromium():
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI"):
            pytest.fail("Chromium is missing in CI: ./run.sh test installs it with apt-get")
        pytest.skip("Chromium not installed (./run.sh test installs it)")
    pytest.importorskip("playwright")


def test_fake_webcam_streams_into_the_live_tab_and_gets_labelled(app_url, tmp_path):
    _require_chromium()
    from playwright.sync_api import sync_playwright

    from core.benchmarks.common import webcam_frame

    camera = write_y4m(tmp_path / "camera.y4m", webcam_frame(), frames=10)
    args = ["--no-sandbox", "--disable-gpu", "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-video-capture={camera}", "--disable-background-networking",
            "--disable-component-update", "--no-first-run", "--disable-quic", "--disable-sync"]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=args)
        try:
            page = browser.new_page()
            page.goto(app_url, wait_until="load")
            webcam = page.locator("#live-webcam")
            webcam.get_by_text("Click to Access Webcam").click()
            webcam.locator("button[aria-label='capture photo']").click(timeout=30_000)  # starts the stream
            status = page.locator("#live-status")
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and "1 face(s)" not in status.inner_text():
                time.sleep(0.5)
            text = status.inner_text()
            assert "1 face(s)" in text and "fps" in text, text
            probs_text = page.locator("#live-probs").inner_text().lower()
            assert any(name in probs_text for name in EXPRESSIONS), probs_text
            annotated = page.locator("#live-annotated img")
            assert annotated.count() >= 1
            # "Precise action units": the stream goes on with MediaPipe's mesh on every frame
            page.locator("#live-precise-aus input").check()
            frames_before = status.inner_text()
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and status.inner_text() == frames_before:
                time.sleep(0.5)
            assert "1 face(s)" in status.inner_text(), status.inner_text()
            page.screenshot(path=str(os.environ.get("EXPRESSIONLAB_SCREENSHOT", tmp_path / "live.png")))
        finally:
            browser.close()
