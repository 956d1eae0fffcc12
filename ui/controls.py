"""The page's generation controls, made from the declaration (``allegro.params``), and
validation answers that mark the input an error is about, from the error's field."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gradio as gr

from allegro.params import Kind, param
from ui.presets import control_default, control_of
from ui.uploads import UploadedImage


def validations(inputs: Sequence[str], problem: str | None, target: str | None) -> list[dict]:
    """One gr.validate per input (by name): the problem, if any, on ``target``, or on the
    first input when ``target`` is not one of them."""
    if problem is not None and target not in inputs:
        target = inputs[0]
    return [gr.validate(name != target, problem if name == target else "") for name in inputs]


def page_validations(inputs: Sequence[str], problem: str | None, field: str | None) -> list[dict]:
    """The problem on the page control that holds request field ``field``."""
    return validations(inputs, problem, control_of(field))


def api_input(field: str | None) -> str | None:
    """The API parameter that carries request field ``field``."""
    try:
        return param(field).api if field else None
    except KeyError:
        return None


def make_control(name: str, **placement: Any) -> gr.components.Component:
    """The component for declared parameter ``name``: its kind, label, help, default and
    range come from the declaration; ``placement`` (elem_id, scale, lines, …) from the
    layout, which may also narrow what the declaration allows (a slider's maximum)."""
    declared = param(name)
    options: dict[str, Any] = {"label": declared.label}
    if declared.kind is not Kind.FILE:
        options["value"] = control_default(name)
        options["info"] = declared.help
    if declared.kind is Kind.TEXT:
        component: type = gr.Textbox
    elif declared.kind is Kind.BOOL:
        component = gr.Checkbox
    elif declared.kind is Kind.CHOICE:
        component = gr.Dropdown
        options["choices"] = list(declared.choices)
    elif declared.kind is Kind.FILE:
        component = UploadedImage
    elif declared.minimum is not None and declared.maximum is not None and name != "seed":
        component = gr.Slider
        options.update(minimum=declared.minimum, maximum=declared.maximum)
        options["step"] = 1 if declared.kind is Kind.INT else 0.5
    else:
        component = gr.Number
        options["precision"] = 0 if declared.kind is Kind.INT else None
        options.update(minimum=declared.minimum, maximum=declared.maximum)
    return component(**{**options, **placement})
