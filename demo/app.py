"""The Gradio Blocks app: one tab per task."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import gradio as gr

from core.training.ingest import MAX_TOTAL_BYTES
from demo.finetune import build_finetune_tab
from demo.live import MIRROR_CSS, build_live_tab, close_live_session
from demo.synthesize import build_synthesize_tab
from demo.video import build_video_tab, close_video_session

TITLE = "ExpressionLab"
QUEUE_MAX_SIZE = 64  # requests waiting at once; past it the app answers "queue is full" (HTTP 503)
DEFAULT_CONCURRENCY = 2  # events run at once per endpoint unless the endpoint says otherwise
# Passed to launch() (gradio takes the upload limit there): the largest upload the fine-tune tab reads.
# gradio 6 takes the page's CSS there too.
LAUNCH_OPTIONS = {"max_file_size": MAX_TOTAL_BYTES, "css": MIRROR_CSS}


def write_output_images_atomically() -> None:
    """Work around gradio 6.31 rewriting an output image in place when the same image is made again.

    Its cache is content-addressed, so two users who get the same picture (a photo analysed twice,
    the default sliders rendered twice) share one file: the rewrite truncates it while the other's
    download reads it (0 bytes, "peer closed connection"). Write under a temporary name and rename,
    as gradio already does for copied files: a reader sees the old file or the new one, whole.
    """
    from gradio import processing_utils

    if getattr(processing_utils.save_pil_to_cache, "atomic", False):
        return

    def save_pil_to_cache(img, cache_dir: str, name: str = "image", format: str = "webp") -> str:
        data = processing_utils.encode_pil_to_bytes(img, format)
        folder = Path(cache_dir) / processing_utils.hash_bytes(data)
        folder.mkdir(exist_ok=True, parents=True)
        path = (folder / f"{name}.{format}").resolve()
        fd, staging = tempfile.mkstemp(dir=folder, prefix=f".{name}.")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(staging, path)
        finally:
            if os.path.exists(staging):
                os.unlink(staging)
        return str(path)

    save_pil_to_cache.atomic = True
    processing_utils.save_pil_to_cache = save_pil_to_cache


def build_demo() -> gr.Blocks:
    write_output_images_atomically()
    # Uploaded files live in Gradio's cache: delete anything older than 10 minutes, every 10 minutes.
    with gr.Blocks(title=TITLE, delete_cache=(600, 600), analytics_enabled=False) as demo:
        gr.Markdown(f"# {TITLE}\nFacial expression recognition and synthesis, running locally on this machine.")
        with gr.Tabs():
            build_live_tab()
            build_video_tab()
            synthesize = build_synthesize_tab()
            build_finetune_tab()
        demo.load(**synthesize, api_visibility="private")  # the Synthesize tab shows a face on arrival
        demo.unload(close_live_session)
        demo.unload(close_video_session)
    demo.queue(default_concurrency_limit=DEFAULT_CONCURRENCY, max_size=QUEUE_MAX_SIZE)
    return demo
