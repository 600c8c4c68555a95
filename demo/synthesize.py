"""Synthesize tab: expression and AU sliders, text, new identities or your own face."""

from __future__ import annotations

import random

import gradio as gr
import numpy as np

from core import EXPRESSIONS, InputError
from core.errors import WeightsError
from core.labels import AU_NAMES, AUS, UPPER_FACE_AUS
from core.text import MAX_TEXT_CHARS
from demo.errors import UserError, shown
from demo.render import annotate, enlarge
from demo.session_models import SESSION_MODELS, session_key

DISPLAY_SIZE = 288
MORPH_STEPS = 6


def _synthesizer(request=None):
    try:
        return SESSION_MODELS.synthesizer(session_key(request))
    except WeightsError as error:
        raise UserError(f"The generator is not available: {error}") from error


def _named_errors(preprocess, describe):
    """gradio hides errors raised while it reads an input (the user sees "Error"): name the problem instead."""

    def wrapped(payload):
        try:
            return preprocess(payload)
        except gr.Error:
            raise
        except Exception as error:  # noqa: BLE001 -- whatever the reader raised, the input could not be read
            raise UserError(describe(error)) from error

    return wrapped


def _photo_problem(error: Exception) -> str:
    from PIL import Image

    from core.face.images import FORMATS, MAX_PIXELS

    if isinstance(error, Image.DecompressionBombError):
        return f"Your photo has too many pixels; the limit is {MAX_PIXELS:,}."
    return f"Your photo is not a readable image (supported formats: {', '.join(FORMATS)})."


def generator_shipped() -> bool:
    """A file check only: building the UI must not load models."""
    from core.weights import REGISTRY, WEIGHTS_DIR

    return "generator" in REGISTRY and (WEIGHTS_DIR / REGISTRY["generator"].file).is_file()


def controls_to_request(values: list) -> tuple[dict, float, dict | None]:
    """Slider values in the tab's order -> (expression weights, intensity, AU overrides or None).

    All zero means neutral (the synthesizer's rule); values are checked by check_controls.
    """
    n = len(EXPRESSIONS)
    if len(values) != n + 2 + len(AUS):
        raise InputError(f"expected {n + 2 + len(AUS)} control values, got {len(values)}")
    expression = {name: float(v) for name, v in zip(EXPRESSIONS, values[:n])}
    intensity = float(values[n])
    use_aus = bool(values[n + 1])
    aus = {name: float(v) for name, v in zip(AUS, values[n + 2 : n + 2 + len(AUS)])} if use_aus else None
    return expression, intensity, aus


NO_PHOTO = "Upload a photo or take a webcam snapshot (left) to edit your own face."
PHOTO_DISPLAY_SIDE = 640  # before | after are shown at most this large; the download is the full photo
STRIP_SIDE = 320  # the neutral -> target strip edits a copy of the photo this large, cut to the face


def _clear(status: str = ""):
    """Every output emptied: nothing stale stays on screen under an error or a missing photo."""
    return None, None, None, None, None, status


def _shrunk(rgb: np.ndarray, side: int) -> np.ndarray:
    return annotate(rgb, [], max_side=side)  # no faces drawn: the shrunk copy


def _photo_png(rgb: np.ndarray, request) -> str:
    """The edited photo at full resolution as a PNG in the session's temp folder (removed with the session)."""
    import os
    import tempfile

    from PIL import Image

    folder = SESSION_MODELS.entry(session_key(request) or "anonymous").temp_dir
    fd, path = tempfile.mkstemp(prefix="my-face-edited-", suffix=".png", dir=folder)
    os.close(fd)
    Image.fromarray(rgb).save(path)
    return path


def _face_strip(synthesizer, rgb: np.ndarray, box, expression, aus, guidance: float, appearance: float) -> np.ndarray:
    """The photo itself from neutral to the target: the face cut from edits of a small copy at rising intensity."""
    small = _shrunk(rgb, STRIP_SIDE)
    scale = small.shape[1] / rgb.shape[1]
    x0, y0, x1, y1 = (v * scale for v in box)
    cx, cy, half = (x0 + x1) / 2, (y0 + y1) / 2, 0.65 * max(x1 - x0, y1 - y0)
    top, left = max(0, int(cy - half)), max(0, int(cx - half))
    try:  # one detection for the whole strip
        edits = synthesizer.edit_series(small, expression, aus, np.linspace(0, 1, MORPH_STEPS), guidance,
                                        appearance=appearance)
    except InputError:  # the small copy lost the face: show it as it is
        edits = [small] * MORPH_STEPS
    faces = [frame[top : int(cy + half), left : int(cx + half)] for frame in edits]
    return np.concatenate([_resize(face, 96) for face in faces], axis=1)


def _resize(rgb: np.ndarray, side: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(rgb).resize((side, side), Image.BICUBIC))


def _my_face(synthesizer, rgb, expression, intensity, aus, guidance, appearance, request):
    result = synthesizer.edit_result(rgb, expression=expression, aus=aus, intensity=intensity, guidance=guidance,
                                     appearance=appearance)
    edited = result.image
    reading = SESSION_MODELS.recognizer(session_key(request)).predict_crops(result.faces[0].crop[None])[0]
    strip = _face_strip(synthesizer, rgb, result.faces[0].box, expression, aus, guidance, appearance)
    notes = "; ".join(result.faces[0].notes + result.skipped)
    status = f"Your photo, {rgb.shape[1]}×{rgb.shape[0]}, edited at its own size" + (f" ({notes})." if notes else ".")
    return (_shrunk(edited, PHOTO_DISPLAY_SIDE), reading, strip, _shrunk(rgb, PHOTO_DISPLAY_SIDE),
            _photo_png(edited, request), status)


def render_synthesis(source: str, photo, seed, guidance, appearance, *controls, request: gr.Request = None):
    """Everything the tab shows: (result, the recognizer's reading, neutral -> target strip, the photo before,
    the full-size PNG of an edited photo, a status line).

    "New person" draws a face from the seed; "My face" edits the photo at its own size and colour. Controls and
    photo are checked before any model is loaded. "My face" without a photo is said once, in the status line,
    not as an error on every slider move.
    """
    from core.face.images import load_image
    from core.synthesizer import check_appearance, check_controls

    try:
        expression, intensity, aus = controls_to_request(list(controls))
        seed, guidance = int(seed), float(guidance)
        check_controls(expression, aus, intensity, guidance)
        appearance = check_appearance(appearance)
    except InputError as error:  # it may quote the value sent: escaped, gradio renders HTML
        raise UserError(shown(str(error))) from error
    except (TypeError, ValueError, OverflowError) as error:
        raise UserError(shown(f"Invalid control value: {error}")) from error
    rgb = None
    if source == "My face":
        if photo is None:
            return _clear(NO_PHOTO)
        try:
            rgb = load_image(photo)
        except InputError as error:
            raise UserError(shown(str(error))) from error
    synthesizer = _synthesizer(request)
    try:
        if rgb is not None:
            result, label, strip, before, download, status = _my_face(synthesizer, rgb, expression, intensity, aus,
                                                                      guidance, appearance, request)
        else:
            face = synthesizer.generate(expression=expression, aus=aus, seed=seed, n=1, intensity=intensity,
                                        guidance=guidance)[0]
            frames = synthesizer.morph(expression, aus, seed=seed, steps=MORPH_STEPS)
            label = SESSION_MODELS.recognizer(session_key(request)).predict_crops(face[None])[0]
            result, strip = enlarge(face, DISPLAY_SIZE), np.concatenate([enlarge(f, 96) for f in frames], axis=1)
            before, download, status = None, None, f"A new person (seed {seed}), drawn by the generator."
    except InputError as error:
        raise UserError(shown(str(error))) from error
    reading = {name: float(p) for name, p in zip(EXPRESSIONS, label)}
    return result, reading, strip, before, download, status


def apply_text(text: str):
    """Text -> slider values, and what the text was understood as."""
    from core.text import parse_text


    try:
        reading = parse_text(text or "")
    except InputError as error:
        raise UserError(shown(str(error))) from error
    expression = [gr.update(value=round(reading.expression[name], 2)) for name in EXPRESSIONS]
    au_values = [gr.update(value=round(reading.aus.get(name, 0.0), 2)) for name in AUS]
    understood = f"**Understood as:** {reading.summary()}"
    if reading.matches:
        understood += "  \n" + "; ".join(reading.matches)
    return [understood, *expression, gr.update(value=round(reading.intensity, 2)),
            gr.update(value=bool(reading.aus)), *au_values]


def _control_sliders():
    """The expression sliders, the overall intensity, the AU switch and the 17 AU sliders (in AUS order)."""
    with gr.Accordion("Expression", open=True):
        gr.Markdown("Each expression slider alone sets **how much** of that expression the face shows (0 none, "
                    "1 full); several sliders mix their expressions; *overall intensity* scales the whole.")
        with gr.Row():
            expression = [gr.Slider(0, 1, value=1.0 if name == "happiness" else 0.0, step=0.05, label=name,
                                    min_width=120) for name in EXPRESSIONS]
        intensity = gr.Slider(0, 1, value=1.0, step=0.05, label="overall intensity")
    use_aus = gr.Checkbox(value=False, label="Set action units with the sliders (otherwise typical for the "
                                             "expression); each slider sets its AU from 0 (none) to 1 (strong): "
                                             "the generator draws it and the face is warped the rest of the way")
    au_sliders = {}
    with gr.Row():
        with gr.Accordion("Upper-face action units", open=False):
            for name in AUS:
                if name in UPPER_FACE_AUS:
                    au_sliders[name] = gr.Slider(0, 1, value=0.0, step=0.05, label=f"{name} {AU_NAMES[name]}")
        with gr.Accordion("Lower-face action units", open=False):
            for name in AUS:
                if name not in UPPER_FACE_AUS:
                    au_sliders[name] = gr.Slider(0, 1, value=0.0, step=0.05, label=f"{name} {AU_NAMES[name]}")
    return expression, intensity, use_aus, [au_sliders[name] for name in AUS]


def build_synthesize_tab() -> dict:
    """The tab; returns its render event (the app also renders once when the page loads)."""
    from core.synthesis.photo_edit import APPEARANCE, GUIDANCE, SLIDER_WARP_ONLY_AUS, WARP_ONLY_AUS
    from core.synthesizer import MAX_GUIDANCE

    drawn_aus = [name for name in AUS if name not in SLIDER_WARP_ONLY_AUS + WARP_ONLY_AUS]

    with gr.Tab("Synthesize", id="synthesize"):
        gr.Markdown("A new person drawn by the generator, or **your own photo** re-expressed at its own size and "
                    "colour. Move a slider or describe a face; the recognizer's reading of the result is shown.")
        if not generator_shipped():
            gr.Markdown("**No trained generator is shipped yet** (`weights/generator.safetensors`): the text box "
                        "below works, rendering faces does not. See the README's status.", elem_id="synth-notice")
        with gr.Row():
            with gr.Column(scale=2):
                with gr.Row(equal_height=True):
                    source = gr.Radio(["New person", "My face"], value="New person", label="Face",
                                      elem_id="synth-source", scale=2)
                    go = gr.Button("Render", variant="primary", elem_id="synth-render", scale=1)
                # A file path, not pixels: gradio would decode the whole upload (a bomb too) before our checks.
                photo = gr.Image(sources=["upload", "webcam"], type="filepath", image_mode=None,
                                 label="Your photo (for 'My face')", webcam_options=gr.WebcamOptions(mirror=False),
                                 height=260, elem_id="synth-photo")
                photo.preprocess = _named_errors(photo.preprocess, _photo_problem)
                with gr.Row():
                    seed = gr.Number(value=0, precision=0, label="seed (identity)", minimum=0, maximum=2**31 - 1)
                    seed.preprocess = _named_errors(  # NaN passes gradio's bounds check, then breaks its rounding
                        seed.preprocess, lambda error: f"The seed must be a whole number from 0 to {2**31 - 1}.")
                    new_identity = gr.Button("New identity")
                text = gr.Textbox(label="Describe a face", placeholder="a slightly surprised woman raising her eyebrows",
                                  max_length=MAX_TEXT_CHARS)
                apply = gr.Button("Apply text")
                understood = gr.Markdown()
            with gr.Column(scale=3):
                status = gr.Markdown(elem_id="synth-status")
                with gr.Row():
                    before = gr.Image(label="Before", type="numpy", format="png", interactive=False,
                                      elem_id="synth-before")
                    result = gr.Image(label="Result", type="numpy", format="png", interactive=False,
                                      elem_id="synth-result")
                reading = gr.Label(num_top_classes=3, label="The recognizer reads", elem_id="synth-reading")
                strip = gr.Image(label="Neutral → target", type="numpy", format="png", interactive=False)
                download = gr.File(label="Your edited photo, full size (PNG)", interactive=False,
                                   elem_id="synth-download")
        expression, intensity, use_aus, aus = _control_sliders()
        # the whole range the API takes; each source starts at the API's default (docs/photo_edit.md)
        guidance = gr.Slider(0, MAX_GUIDANCE, value=0.0, step=0.5, elem_id="synth-guidance",
                             label="semantic guidance: a recognizer's gradient pushes the face towards the requested "
                                   f"expression (My face: on at {GUIDANCE:g} by default, 10-20 ms an edit; New person: "
                                   "off by default)")
        appearance = gr.Slider(0, 1, value=APPEARANCE, step=0.1, elem_id="synth-appearance",
                               label="My face: the generator's creases, lids and mouth on top of the warp (0: only the "
                                     "photo's own pixels moved; 1: the expression reads more clearly and the face looks "
                                     f"more retouched; AU sliders alone take it only for {', '.join(drawn_aus)}, the others "
                                     "move the photo's own pixels)")
        inputs = [source, photo, seed, guidance, appearance, *expression, intensity, use_aus, *aus]
        outputs = [result, reading, strip, before, download, status]
        render = dict(fn=render_synthesis, inputs=inputs, outputs=outputs, show_progress="minimal",
                      trigger_mode="always_last", concurrency_limit=2, concurrency_id="synthesize")  # one limit for all

        def wire(event) -> None:
            # A failed render leaves no stale result on screen under the error.
            event.failure(lambda: _clear(), outputs=outputs, api_visibility="private")

        for control in [*expression, intensity, *aus, guidance, appearance]:
            wire(control.release(**render, api_visibility="private"))
        # .input fires on the user's own changes only (not when "Apply text" sets them: that renders once).
        wire(use_aus.input(**render, api_visibility="private"))
        wire(source.input(lambda chosen: GUIDANCE if chosen == "My face" else 0.0, inputs=source, outputs=guidance,
                          api_visibility="private").then(**render, api_visibility="private"))
        wire(seed.change(**render, api_visibility="private"))
        wire(photo.upload(**render, api_visibility="private"))
        wire(go.click(**render, api_name="synthesize"))
        new_identity.click(lambda: random.randrange(2**31 - 1), outputs=seed, api_visibility="private")
        wire(apply.click(apply_text, inputs=text, outputs=[understood, *expression, intensity, use_aus, *aus],
                         api_name="parse_text").then(**render, api_visibility="private"))
        wire(text.submit(apply_text, inputs=text, outputs=[understood, *expression, intensity, use_aus, *aus],
                         api_visibility="private").then(**render, api_visibility="private"))
    return render
