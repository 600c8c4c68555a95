import gradio as gr
import numpy as np
import pytest
from PIL import Image

from core.labels import AUS, EXPRESSIONS
from core.weights import REGISTRY

pytestmark = pytest.mark.integration


def controls(expression="happiness", intensity=1.0, use_aus=False, aus=None):
    values = [1.0 if name == expression else 0.0 for name in EXPRESSIONS] + [intensity, use_aus]
    return values + [(aus or {}).get(name, 0.0) for name in AUS]


@pytest.fixture
def tab(monkeypatch, tiny_synthesizer):
    import demo.session_models as models
    import demo.synthesize as tab

    monkeypatch.setattr(models, "get_synthesizer", lambda: tiny_synthesizer)
    return tab


def test_new_person_renders_face_reading_and_strip(tab):
    face, reading, strip, before, download, status = tab.render_synthesis("New person", None, 3, 0.0, 1.0,
                                                                          *controls("surprise"))
    assert face.shape == (tab.DISPLAY_SIZE, tab.DISPLAY_SIZE, 3)
    assert set(reading) == set(EXPRESSIONS) and abs(sum(reading.values()) - 1) < 1e-5
    assert strip.shape == (96, 96 * tab.MORPH_STEPS, 3)
    assert before is None and download is None and "seed 3" in status
    again = tab.render_synthesis("New person", None, 3, 0.0, 1.0, *controls("surprise"))[0]
    assert np.array_equal(face, again)


def test_my_face_edits_the_photo_itself_and_says_what_is_missing(tab, grace_hopper):
    photo = np.asarray(Image.open(grace_hopper).convert("RGB"))
    after, reading, strip, before, download, status = tab.render_synthesis(
        "My face", photo, 0, 0.0, 1.0, *controls("anger", use_aus=True, aus={"AU04": 1}))
    assert after.shape == before.shape == photo.shape  # 600x512 fits the display: the photo, not a 48-px crop
    assert not np.array_equal(after, before) and set(reading) == set(EXPRESSIONS)
    assert strip.shape == (96, 96 * tab.MORPH_STEPS, 3) and "512" in status
    full = np.asarray(Image.open(download))
    assert full.shape == photo.shape  # the download is the edited photo at full size
    # No photo yet: one plain message in the status line, every output cleared, no error raised.
    assert tab.render_synthesis("My face", None, 0, 0.0, 1.0, *controls()) == (None, None, None, None, None,
                                                                           tab.NO_PHOTO)
    with pytest.raises(gr.Error, match="no face"):
        tab.render_synthesis("My face", np.full((100, 100, 3), 128, np.uint8), 0, 0.0, 1.0, *controls())
    with pytest.raises(gr.Error, match="intensity"):
        tab.render_synthesis("New person", None, 0, 0.0, 1.0, *controls(intensity=float("nan")))


def test_my_face_appearance_slider_sets_how_much_the_generator_adds(tab, grace_hopper):
    photo = np.asarray(Image.open(grace_hopper).convert("RGB"))
    warp_only, full = (tab.render_synthesis("My face", photo, 0, 0.0, a, *controls("anger"))[0] for a in (0.0, 1.0))
    assert not np.array_equal(warp_only, full) and not np.array_equal(warp_only, photo)
    # 0 is the warp alone: the photo's own luminance moved, nothing drawn on it
    expected = tab._synthesizer().edit(photo, expression={"anger": 1.0}, appearance=0.0)
    assert np.array_equal(warp_only, expected)
    for bad in (float("nan"), 5.0, "x"):
        with pytest.raises(gr.Error, match="appearance"):
            tab.render_synthesis("My face", photo, 0, 0.0, bad, *controls("anger"))


def test_text_sets_the_sliders(tab):
    outputs = tab.apply_text("a very happy man with a broad smile")
    assert len(outputs) == 1 + len(EXPRESSIONS) + 2 + len(AUS)
    assert "happiness" in outputs[0]
    happiness = outputs[1 + EXPRESSIONS.index("happiness")]["value"]
    assert happiness == 1.0
    with pytest.raises(gr.Error):
        tab.apply_text("x" * 10_000)


def test_synthesize_endpoint_through_gradio_client(app_url):
    from gradio_client import Client

    client = Client(app_url, verbose=False)
    args = ["New person", None, 0, 0.0, 1.0, *controls("happiness")]
    if "generator" in REGISTRY:
        face, reading, *_ = client.predict(*args, api_name="/synthesize")
        assert reading["label"] in EXPRESSIONS
    else:
        with pytest.raises(Exception, match="generator is not available"):
            client.predict(*args, api_name="/synthesize")
    understood = client.predict("a slightly surprised woman raising her eyebrows", api_name="/parse_text")
    assert "surprise" in understood[0]
