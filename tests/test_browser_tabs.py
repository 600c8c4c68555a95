"""What a first-time user sees in the Fine-tune and Live tabs, in a real browser (headless Chromium)."""

import time
import zipfile

import pytest

from tests.test_browser import CHROMIUM, _require_chromium

pytestmark = [pytest.mark.browser, pytest.mark.integration]

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--no-first-run", "--disable-quic", "--disable-sync"]


@pytest.fixture(scope="module")
def browser():
    _require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield chromium
        chromium.close()


def _wait_for(locator, text: str, seconds: float = 240) -> str:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        content = locator.inner_text()
        if text in content:
            return content
        time.sleep(0.5)
    raise AssertionError(f"{text!r} did not appear; saw {locator.inner_text()!r}")


def test_fine_tune_results_are_not_covered_and_legends_are_readable(browser, app_url, data_dir, tmp_path):
    from core.benchmarks.finetune import fer_upload_zip

    archive = tmp_path / "faces.zip"
    archive.write_bytes(fer_upload_zip(str(data_dir), 30)[0])
    with zipfile.ZipFile(archive) as z:
        assert len(z.namelist()) == 30
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(app_url, wait_until="load")
    page.get_by_role("tab", name="Fine-tune").click()
    page.locator("input[type=file]").last.set_input_files(str(archive))
    # the upload reaches the server before the click (a loaded machine once clicked first: "Upload a zip")
    page.get_by_text("faces.zip").first.wait_for(timeout=60_000)
    page.locator("input[type=number]").last.fill("20")
    page.get_by_role("button", name="Fine-tune", exact=True).click()
    _wait_for(page.locator("#finetune-after"), "After:")
    time.sleep(1)
    page.screenshot(path=str(tmp_path / "finetune.png"), full_page=True)
    for plot in ("#finetune-loss", "#finetune-accuracy"):
        assert page.locator(f"{plot} .generating, {plot} .progress-text, {plot} .eta-bar").count() == 0, plot
    # vega draws a legend entry per curve: all three loss terms of a joint run, both accuracies, each inside
    # its plot's box (a fixed plot height used to cut the legend off below its title)
    for plot, names in (("#finetune-loss", ["real faces", "synthetic faces", "intra-class"]),
                        ("#finetune-accuracy", ["training batches", "held-out faces"])):
        frame = page.locator(plot).bounding_box()
        for name in names:
            entry = page.locator(f"{plot} .role-legend text", has_text=name).first
            box = entry.bounding_box()
            assert box is not None and box["y"] + box["height"] <= frame["y"] + frame["height"], (plot, name)
    page.close()


def test_the_photo_view_numbers_faces_and_shows_square_crops(browser, app_url, grace_hopper, tmp_path):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(app_url, wait_until="load")
    page.get_by_role("tab", name="Photo").click()
    page.locator("#photo-input input[type=file]").set_input_files(str(grace_hopper))
    page.wait_for_selector("#photo-preview img", timeout=60_000)  # the upload is shown as a picture
    card = page.locator(".el-face").first
    card.wait_for(timeout=120_000)
    assert "Face 1:" in card.inner_text()
    box = card.locator("img").bounding_box()
    assert abs(box["width"] - box["height"]) <= 1, box  # square, as the model saw it
    assert page.get_by_text("No face found").count() == 0
    page.screenshot(path=str(tmp_path / "photo.png"), full_page=True)
    page.close()


def test_mirror_view_mirrors_the_camera_preview_too(browser, app_url):
    page = browser.new_page()
    page.goto(app_url, wait_until="load")
    page.wait_for_selector("#live-webcam")
    style = page.evaluate("""() => { const v = document.createElement('video');
        document.querySelector('#live-webcam').appendChild(v); return getComputedStyle(v).transform; }""")
    assert style.startswith("matrix(-1"), style  # mirrored while "Mirror view" is ticked (the default)
    page.get_by_label("Mirror view").uncheck()
    time.sleep(0.5)
    style = page.evaluate("() => getComputedStyle(document.querySelector('#live-webcam video')).transform")
    assert style == "none", style
    page.close()


def test_synthesize_shows_a_face_on_arrival_and_one_message_for_my_face_without_a_photo(browser, app_url,
                                                                                        grace_hopper, tmp_path):
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.goto(app_url, wait_until="load")
    page.get_by_role("tab", name="Synthesize").click()
    page.wait_for_selector("#synth-result img", timeout=120_000)  # rendered on arrival, not blank
    render = page.locator("#synth-render").bounding_box()
    assert render["y"] + render["height"] <= 800, render  # the Render button is above the fold
    page.locator("#synth-source").get_by_text("My face").click()
    _wait_for(page.locator("#synth-status"), "Upload a photo", 60)
    for _ in range(3):  # moving sliders without a photo: no error toast piles up
        page.locator("input[type=range]").first.press("ArrowLeft")
        time.sleep(0.5)
    time.sleep(2)
    assert page.locator(".toast-body, [data-testid='toast-body']").count() == 0
    assert page.locator("#synth-result img").count() == 0  # no stale face from "New person"
    assert "Invalid control value" not in page.content()
    page.locator("#synth-photo input[type=file]").set_input_files(str(grace_hopper))
    page.wait_for_selector("#synth-before img", timeout=120_000)
    page.wait_for_selector("#synth-result img", timeout=120_000)
    _wait_for(page.locator("#synth-status"), "edited at its own size", 120)
    before, after = (page.locator(f"#synth-{name} img").bounding_box() for name in ("before", "result"))
    assert abs(before["y"] - after["y"]) < 5 and after["x"] > before["x"]  # side by side
    assert after["width"] >= 200  # a legible size
    page.screenshot(path=str(tmp_path / "synthesize.png"), full_page=True)
    page.close()
