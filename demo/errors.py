"""Errors a user caused: one clear message in the UI, one line in the server log, no traceback.

gradio prints a full traceback for every gr.Error unless told not to; a user's bad upload is not a
server fault, so UserError logs it as one line instead. Faults of our own (anything else) still
reach the log with their traceback.
"""

from __future__ import annotations

import html
import logging

import gradio as gr

log = logging.getLogger("expressionlab.ui")


def shown(value) -> str:
    """User-made text (file names, CSV cells, their values) for a message, which gradio renders as HTML."""
    return html.escape(str(value), quote=False)


class UserError(gr.Error):
    """gr.Error for a user's mistake: logged as one line, without a traceback."""

    def __init__(self, message: str, **kwargs):
        log.warning("user error: %s", " ".join(str(message).split())[:300])
        super().__init__(message, print_exception=False, **kwargs)
