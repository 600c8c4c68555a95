"""Synthesize tab: expression and AU sliders, text, new identities or your own face."""

from __future__ import annotations

import random

import gradio as gr
import numpy as np

from core import EXPRESSIONS, InputError
from core.errors import WeightsError
from core.labels import AU_NAMES, AUS
from core.text import MAX_TEXT_CHARS
from demo.errors import UserError, shown
from demo.render import UPPER_FACE_AUS, enlarge
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


def render_synthesis(source: str, photo, seed, guidance, *controls, request: gr.Request = None):
    """Everything the tab shows for the current controls: face, the recognizer's reading, morph strip."""
    from core.face.images import load_image
    from core.synthesizer import check_controls

    # Controls and photo are checked before any model is loaded: a bad value is named even without a generator.
    try:
        expression, intensity, aus = controls_to_request(list(controls))
        seed, guidance = int(seed), float(guidance)
        check_controls(expression, aus, intensity, guidance)
        rgb = None
        if source == "My face":
            if photo is None:
                raise UserError("Upload a photo or take a webcam snapshot to edit your own face.")
            rgb = load_image(photo)
    except InputError as error:  # it may quote the file name or value sent: escaped, gradio renders HTML
        raise UserError(shown(str(error))) from error
    except (TypeError, ValueError, OverflowError) as error:
        raise UserError(shown(f"Invalid control value: {error}")) from error
    synthesizer = _synthesizer(request)
    try:
        if rgb is not None:
            encoded = synthesizer.encode_face(rgb)
            face = synthesizer.edit(encoded, expression=expression, aus=aus, intensity=intensity, guidance=guidance)
            strip = synthesizer.morph(expression, aus, face=encoded, steps=MORPH_STEPS)
        else:
            face = synthesizer.generate(expression=expression, aus=aus, seed=seed, n=1, intensity=intensity,
                                        guidance=guidance)[0]
            strip = synthesizer.morph(expression, aus, seed=seed, steps=MORPH_STEPS)
    except InputError as error:
        raise UserError(shown(str(error))) from error
    reading = SESSION_MODELS.recognizer(session_key(request)).predict_crops(face[None])[0]
    label = {name: float(p) for name, p in zip(EXPRESSIONS, reading)}
    strip_image = np.concatenate([enlarge(f, 96) for f in strip], axis=1)
    return enlarge(face, DISPLAY_SIZE), label, strip_image


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


def build_synthesize_tab() -> None:
    with gr.Tab("Synthesize", id="synthesize"):
        gr.Markdown("Move the sliders or describe a face: a new person drawn by the generator, or your own face "
                    "re-expressed. The recognizer's reading of the result is shown next to it.")
        if not generator_shipped():
            gr.Markdown("**No trained generator is shipped yet** (`weights/generator.safetensors`): the text box "
                        "below works, rendering faces does not. See the README's status.", elem_id="synth-notice")
        with gr.Row():
            with gr.Column(scale=1):
                text = gr.Textbox(label="Describe a face", placeholder="a slightly surprised woman raising her eyebrows",
                                  max_length=MAX_TEXT_CHARS)
                apply = gr.Button("Apply text")
                understood = gr.Markdown()
                with gr.Accordion("Expression", open=True):
                    expression = [gr.Slider(0, 1, value=1.0 if name == "happiness" else 0.0, step=0.05, label=name)
                                  for name in EXPRESSIONS]
                    intensity = gr.Slider(0, 1, value=1.0, step=0.05, label="intensity")
                use_aus = gr.Checkbox(value=False, label="Set action units with the sliders (otherwise typical for "
                                                       "the expression)")
                au_sliders = {}
                with gr.Accordion("Upper-face action units", open=False):
                    for name in AUS:
                        if name in UPPER_FACE_AUS:
                            au_sliders[name] = gr.Slider(0, 1, value=0.0, step=0.05, label=f"{name} {AU_NAMES[name]}")
                with gr.Accordion("Lower-face action units", open=False):
                    for name in AUS:
                        if name not in UPPER_FACE_AUS:
                            au_sliders[name] = gr.Slider(0, 1, value=0.0, step=0.05, label=f"{name} {AU_NAMES[name]}")
                aus = [au_sliders[name] for name in AUS]
                with gr.Row():
                    seed = gr.Number(value=0, precision=0, label="seed (identity)", minimum=0, maximum=2**31 - 1)
                    seed.preprocess = _named_errors(  # NaN passes gradio's bounds check, then breaks its rounding
                        seed.preprocess, lambda error: f"The seed must be a whole number from 0 to {2**31 - 1}.")
                    new_identity = gr.Button("New identity")
                guidance = gr.Slider(0, 5, value=0.0, step=0.5, label="semantic guidance (recognizer gradient)")
                source = gr.Radio(["New person", "My face"], value="New person", label="Face")
                # A file path, not pixels: gradio would decode the whole upload (a bomb too) before our checks.
                photo = gr.Image(sources=["upload", "webcam"], type="filepath", image_mode=None,
                                 label="Your face (for 'My face')", webcam_options=gr.WebcamOptions(mirror=False))
                photo.preprocess = _named_errors(photo.preprocess, _photo_problem)
            with gr.Column(scale=1):
                result = gr.Image(label="Result", type="numpy", format="png", elem_id="synth-result", height=DISPLAY_SIZE)
                reading = gr.Label(num_top_classes=3, label="The recognizer reads", elem_id="synth-reading")
                strip = gr.Image(label="Neutral → target", type="numpy", format="png")
        inputs = [source, photo, seed, guidance, *expression, intensity, use_aus, *aus]
        outputs = [result, reading, strip]
        render = dict(fn=render_synthesis, inputs=inputs, outputs=outputs, show_progress="minimal",
                      trigger_mode="always_last", concurrency_limit=2, concurrency_id="synthesize")  # one limit for all
        for control in [*expression, intensity, *aus, guidance]:
            control.release(**render, api_visibility="private")
        # .input fires on the user's own changes only (not when "Apply text" sets them: that renders once).
        for control in (source, use_aus):
            control.input(**render, api_visibility="private")
        seed.change(**render, api_visibility="private")
        photo.upload(**render, api_visibility="private")
        go = gr.Button("Render", variant="primary")
        go.click(**render, api_name="synthesize")
        new_identity.click(lambda: random.randrange(2**31 - 1), outputs=seed, api_visibility="private")
        apply.click(apply_text, inputs=text, outputs=[understood, *expression, intensity, use_aus, *aus],
                    api_name="parse_text").then(**render, api_visibility="private")
        text.submit(apply_text, inputs=text, outputs=[understood, *expression, intensity, use_aus, *aus],
                    api_visibility="private").then(**render, api_visibility="private")
