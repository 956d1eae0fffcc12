"""The API's parameters, made from the declaration (``allegro.params``).

/generate and /submit take every parameter of a new video (text or images), under its API
name, with its default. Gradio reads an endpoint's parameters with ``inspect.signature`` and
their types with ``typing.get_type_hints`` (gradio 6.31 utils.py:1673-1698, 1193-1203), so an
endpoint here is a function whose ``__signature__`` and ``__annotations__`` come from the
declaration; it binds Gradio's positional values to their names before anything reads them.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import gradio as gr
from gradio.data_classes import FileData

from allegro.params import REQUIRED, Kind, Param, Task, param, params_for
from allegro.request import GenerationRequest
from ui.uploads import uploaded_file

NEW_VIDEO_TASKS = (Task.TEXT, Task.IMAGE)  # what /generate and /submit make

# Numbers may come as text (the request's checks read them), so a caller gets our message.
_API_TYPES: dict[Kind, Any] = {
    Kind.TEXT: str,
    Kind.INT: int | float | str,
    Kind.FLOAT: float | str,
    Kind.BOOL: bool,
    Kind.CHOICE: str,
    Kind.FILE: FileData,
}


def api_params() -> list[Param]:
    """/generate's and /submit's parameters, in the declaration's order."""
    return list(params_for(*NEW_VIDEO_TASKS))


def _api_parameter(declared: Param) -> inspect.Parameter:
    annotation = _API_TYPES[declared.kind]
    if declared.optional or declared.kind is Kind.FILE:
        annotation = annotation | None
    default = inspect.Parameter.empty if declared.required else declared.default
    return inspect.Parameter(
        declared.api,
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
        default=default,
        annotation=annotation,
    )


def api_signature(returns: Any = inspect.Signature.empty) -> inspect.Signature:
    """The declared parameters, then the caller's ``request`` (Gradio fills it in)."""
    request = inspect.Parameter(
        "request", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None, annotation=gr.Request
    )
    return inspect.Signature(
        [*(_api_parameter(declared) for declared in api_params()), request],
        return_annotation=returns,
    )


def with_signature(
    handler: Callable[[dict[str, Any]], Any], signature: inspect.Signature, doc: str | None
) -> Callable[..., Any]:
    """A function (sync, async or async generator, as ``handler``) with ``signature`` that
    binds the values Gradio passes to their names and calls ``handler(values)``. Gradio
    reads ``__signature__`` (inspect.signature) and ``__annotations__``
    (typing.get_type_hints) for the parameters, their types and the special ones it fills
    in (gr.Request, gr.Progress)."""

    def bind(args: tuple, kwargs: dict[str, Any]) -> dict[str, Any]:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        return dict(bound.arguments)

    if inspect.isasyncgenfunction(handler):

        async def function(*args: Any, **kwargs: Any) -> Any:
            async for item in handler(bind(args, kwargs)):
                yield item

    elif inspect.iscoroutinefunction(handler):

        async def function(*args: Any, **kwargs: Any) -> Any:
            return await handler(bind(args, kwargs))

    else:

        def function(*args: Any, **kwargs: Any) -> Any:
            return handler(bind(args, kwargs))

    functools.update_wrapper(function, handler, assigned=("__module__", "__name__"))
    function.__signature__ = signature  # type: ignore[attr-defined]
    function.__annotations__ = {
        name: parameter.annotation
        for name, parameter in signature.parameters.items()
        if parameter.annotation is not inspect.Parameter.empty
    }
    if signature.return_annotation is not inspect.Signature.empty:
        function.__annotations__["return"] = signature.return_annotation
    function.__doc__ = doc
    return function


def api_endpoint(
    handler: Callable[[dict[str, Any], gr.Request | None], Awaitable[Any]],
    doc: str | None,
    returns: Any = inspect.Signature.empty,
) -> Callable[..., Awaitable[Any]]:
    """An async endpoint with the declared parameters that calls ``handler(values,
    request)``, ``values`` by API name."""

    async def call(values: dict[str, Any]) -> Any:
        request = values.pop("request", None)
        return await handler(values, request)

    return with_signature(call, api_signature(returns), doc)


def api_validator(
    check: Callable[[dict[str, Any], gr.Request | None], list[dict]], doc: str | None
) -> Callable[..., list[dict]]:
    """A validator with the same parameters as ``api_endpoint``'s (Gradio calls it with the
    endpoint's values)."""

    def call(values: dict[str, Any]) -> list[dict]:
        request = values.pop("request", None)
        return check(values, request)

    return with_signature(call, api_signature(list[dict]), doc)


def request_from_api(values: Mapping[str, Any]) -> GenerationRequest:
    """/generate's values (by API name) -> the request; files must be the caller's uploads,
    and a method alone asks for interpolation."""
    fields: dict[str, Any] = {}
    for declared in api_params():
        value = values.get(declared.api, declared.default)
        if value is REQUIRED:  # missing: the request's own check says so
            value = ""
        if declared.kind is Kind.FILE:
            value = uploaded_file(value, declared.name.replace("_", " "), declared.name)
        fields[declared.name] = value
    if fields.get("interpolation_method"):
        fields["interpolate"] = True
    return GenerationRequest(**fields)


def api_validations(problem: str | None, field: str | None) -> list[dict]:
    """One gr.validate per API parameter: the problem, if any, on the parameter its field
    names (the first, the prompt, when it names none of them)."""
    names = [declared.api for declared in api_params()]
    target = None
    if problem is not None:
        target = names[0]
        if field is not None:
            try:
                api_name = param(field).api
            except KeyError:
                api_name = None
            if api_name in names:
                target = api_name
    return [gr.validate(name != target, problem if name == target else "") for name in names]


def validated(
    handler: Callable[..., Awaitable[Any]], validator: Callable[..., list[dict]]
) -> Callable[..., Awaitable[Any]]:
    """``handler``, refusing a call whose ``validator`` (same parameters) finds a problem,
    with the validator's message. gr.api has no ``validator=`` (gradio 6.31 events.py:1085-
    1098; its set_event_trigger call, 1189-1210, passes none), so the endpoint's own handler
    runs the check, first thing (instead of setting a field of Gradio's event, demo.fns)."""

    @functools.wraps(handler)  # the same __signature__ and annotations: what Gradio reads
    async def checked(*args: Any, **kwargs: Any) -> Any:
        for check in validator(*args, **kwargs):
            if not check.get("is_valid", True):
                raise gr.Error(check.get("message") or "Invalid request.", print_exception=False)
        return await handler(*args, **kwargs)

    return checked
