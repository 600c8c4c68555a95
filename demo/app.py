"""The Gradio Blocks app: one tab per task."""

from __future__ import annotations

import gradio as gr

from demo.finetune import build_finetune_tab
from demo.live import build_live_tab, close_live_session
from demo.synthesize import build_synthesize_tab

TITLE = "ExpressionLab"


def build_demo() -> gr.Blocks:
    # Uploaded files live in Gradio's cache: delete anything older than 10 minutes, every 10 minutes.
    with gr.Blocks(title=TITLE, delete_cache=(600, 600), analytics_enabled=False) as demo:
        gr.Markdown(f"# {TITLE}\nFacial expression recognition and synthesis, running locally on this machine.")
        with gr.Tabs():
            build_live_tab()
            build_synthesize_tab()
            build_finetune_tab()
        demo.unload(close_live_session)
    return demo
