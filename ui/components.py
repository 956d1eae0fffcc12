"""Gradio components with a quieter refusal for values the page never offered."""

from __future__ import annotations

import gradio as gr


class JobPicker(gr.Radio):
    """The Queue panel's list of a person's jobs. ``gr.Radio`` already refuses a value
    that is not one of this session's choices (gradio 6.31 components/radio.py:122-136),
    which keeps another person's job ids out before our owner check; but it raises with
    ``print_exception`` on, so every such raw request printed a traceback in the server
    log. Same check, a plain message. Drawn by gr.Radio's frontend (``is_template``,
    blocks.py:248-258)."""

    is_template = True

    def preprocess(self, payload):
        offered = [value for _, value in self.choices]
        if payload is not None and payload not in offered:
            raise gr.Error("That video is not in your queue.", print_exception=False)
        return super().preprocess(payload)
