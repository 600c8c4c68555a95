"""Drawing results for people: annotated frames and probability bars. Pure functions."""

from __future__ import annotations

import base64
import html
import io

import numpy as np

from core.face.drawing import COLOURS, annotate  # noqa: F401  (shared with video files' annotated output)
from core.labels import EXPRESSIONS, UPPER_FACE_AUS


def encode_frame(rgb: np.ndarray, format: str) -> bytes:
    """The bytes gradio sends for an output image in `format` (its own encoder), to count that cost."""
    from gradio.processing_utils import encode_pil_to_bytes
    from PIL import Image

    return encode_pil_to_bytes(Image.fromarray(rgb), format)


def enlarge(grey: np.ndarray, size: int) -> np.ndarray:
    """A 48-px grey face shown large (bicubic), as RGB for display."""
    from PIL import Image

    big = np.asarray(Image.fromarray(grey).resize((size, size), Image.BICUBIC))
    return np.repeat(big[:, :, None], 3, axis=2)


def _png_data_uri(grey: np.ndarray, size: int = 96) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(grey).resize((size, size), Image.BILINEAR).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _bar_rows(values: dict[str, float], colour_of, bold: str | None = None, label_width: int = 78) -> str:
    rows = []
    for name, value in values.items():
        r, g, b = colour_of(name)
        weight = "700" if name == bold else "400"
        rows.append(
            f"<div style='display:flex;align-items:center;gap:6px;font-size:13px'>"
            f"<span style='width:{label_width}px;font-weight:{weight}'>{html.escape(name)}</span>"
            f"<span style='flex:1;background:#8882;height:12px;border-radius:3px'>"
            f"<span style='display:block;width:{value * 100:.1f}%;height:12px;border-radius:3px;"
            f"background:rgb({r},{g},{b})'></span></span>"
            f"<span style='width:44px;text-align:right'>{value:.0%}</span></div>"
        )
    return "".join(rows)


def au_bars_html(aus: dict[str, float] | None) -> str:
    """AU intensities in [0, 1], upper face then lower face, with their FACS names."""
    from core.labels import AU_NAMES

    if not aus:
        return "<p class='el-empty'>No action units: no face mesh.</p>"
    upper = {f"{a} {AU_NAMES[a]}": aus[a] for a in aus if a in UPPER_FACE_AUS}
    lower = {f"{a} {AU_NAMES[a]}": aus[a] for a in aus if a not in UPPER_FACE_AUS}
    teal = lambda _: (40, 170, 170)  # noqa: E731
    return (f"<div class='el-aus'><div style='font-weight:700'>Upper face</div>{_bar_rows(upper, teal, label_width=170)}"
            f"<div style='font-weight:700;margin-top:6px'>Lower face</div>{_bar_rows(lower, teal, label_width=170)}</div>")




def probability_bars_html(faces) -> str:
    """A card per face: the aligned crop the model saw and a bar per expression."""
    if not faces:
        return ""  # the summary line says so
    cards = []
    for i, face in enumerate(faces):
        rows = _bar_rows({name: face.probs[name] for name in EXPRESSIONS}, COLOURS.get, bold=face.label)
        aus = (f"<details style='margin-top:6px'><summary>Action units</summary>{au_bars_html(face.aus)}</details>"
               if getattr(face, "aus", None) else "")
        # Fixed size and aligned to the top: in a flex row an image otherwise stretches to the card's height.
        crop = (f"<img src='{_png_data_uri(face.crop)}' width='96' height='96' alt='face {i + 1} as the model saw it' "
                "style='width:96px;height:96px;max-width:none;object-fit:contain;align-self:flex-start;"
                "border-radius:6px;flex:none'>") if getattr(face, "crop", None) is not None else ""
        cards.append(
            f"<div class='el-face' style='display:flex;gap:12px;padding:8px;border:1px solid #8884;"
            f"border-radius:8px;margin-bottom:8px'>{crop}<div style='flex:1'>"
            f"<div style='font-weight:700;margin-bottom:4px'>Face {i + 1}: {html.escape(face.label)}</div>"
            f"{rows}{aus}</div></div>"
        )
    return "".join(cards)
