"""``python -m allegro``: the headless front end of the engine.

Importing this module stays light: torch, diffusers and PyAV are imported only by the
command that needs them.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from allegro import __version__, costs
from allegro.errors import AllegroError, Cancelled
from allegro.loading import OFFLOAD_MODES, PRECISIONS, PipelineSpec
from allegro.params import INTERPOLATION_METHODS, Kind, Task, params_for
from allegro.request import (
    DEFAULT_MODEL,
    DEFAULT_OVERLAP_FRAMES,
    MODEL_PRESETS,
    GenerationRequest,
    accepted_sizes_text,
    check_request,
)


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m allegro",
        description="Allegro Studio engine: make text-to-video clips with Allegro.",
    )
    parser.add_argument("--version", action="version", version=f"allegro-studio {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    tiny = commands.add_parser(
        "make-tiny", help="write a tiny random checkpoint (diffusers layout) for tests/demos"
    )
    tiny.add_argument("directory", type=Path)
    tiny.add_argument(
        "--ti2v", action="store_true", help="the image-to-video model (Allegro-TI2V layout)"
    )

    gen = commands.add_parser(
        "generate",
        help="make one video (from text, or from a first image and text)",
        description=f"Make one video. Accepted sizes: {accepted_sizes_text()}.",
        epilog=costs.memory_table_markdown() + "\n\n" + costs.memory_profile_table_markdown(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_model_arguments(gen)
    _add_request_arguments(gen, Task.TEXT, Task.IMAGE)
    gen.add_argument("--weights", help="EMA-VFI checkpoint (.pkl) for --interpolation-method")
    gen.add_argument("--out", type=Path, help="output .mp4 (default: outputs/<name>.mp4)")

    extend = commands.add_parser(
        "extend",
        help="continue a clip made here: its last frames open a new one, joined into one MP4",
        description="Continue VIDEO with Allegro-TI2V: its last --overlap frames become the "
        "first frames of a new clip; the result is VIDEO followed by the new frames, with the "
        "chain of clips recorded in its settings.",
    )
    extend.add_argument("video", type=Path)
    _add_model_arguments(extend)
    _add_request_arguments(extend, Task.EXTEND, positional={"continue_video"})
    extend.add_argument("--out", type=Path, help="output .mp4 (default: outputs/<name>.mp4)")

    info = commands.add_parser("info", help="print the settings embedded in a video as JSON")
    info.add_argument("video", type=Path)

    interp = commands.add_parser("interpolate", help="turn a 15 fps video into 30 fps")
    interp.add_argument("input", type=Path)
    interp.add_argument("output", type=Path)
    interp.add_argument("--method", choices=INTERPOLATION_METHODS, default="flow")
    interp.add_argument("--weights", help="EMA-VFI checkpoint (.pkl)")
    _add_prompt_help_commands(commands)
    return parser


def _add_prompt_help_commands(commands) -> None:
    """Issue 24: improve-prompt and write-shots (allegro/prompting)."""
    from allegro.prompting.helper import DEFAULT_PROMPT_MODEL, DEFAULT_TIMEOUT

    improve = commands.add_parser(
        "improve-prompt",
        help="rewrite a few words into the detailed caption Allegro was trained on",
    )
    improve.add_argument("prompt")
    improve.add_argument(
        "--image-to-video",
        action="store_true",
        help="the video continues from an image: describe the motion, not a new scene",
    )
    shots = commands.add_parser(
        "write-shots",
        help="turn a story (a text file, or - for stdin) into a storyboard's shots (JSON)",
    )
    shots.add_argument("story", help="a text file, or - to read standard input")
    shots.add_argument("--out", type=Path, help="write the JSON here instead of printing it")
    for command in (improve, shots):
        command.add_argument(
            "--prompt-model",
            default=os.environ.get("ALLEGRO_PROMPT_MODEL") or DEFAULT_PROMPT_MODEL,
            help="a local instruct model (hub id or folder) or an OpenAI-compatible endpoint "
            "(http://127.0.0.1:11434/v1, #model to pick one); key from "
            f"ALLEGRO_PROMPT_API_KEY. Default: {DEFAULT_PROMPT_MODEL}. [ALLEGRO_PROMPT_MODEL]",
        )
        command.add_argument(
            "--prompt-timeout",
            type=float,
            default=DEFAULT_TIMEOUT,
            help=f"seconds the model may take (loading aside). Default: {DEFAULT_TIMEOUT:g}.",
        )


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        default=None,
        help=f"hub id, local folder or preset name (default: {DEFAULT_MODEL}; "
        "allegro-ti2v from images and for extend)",
    )
    parser.add_argument(
        "--preset",
        choices=sorted(MODEL_PRESETS),
        help="a named model variant; "
        + "; ".join(f"{p.name}: {p.description}" for p in MODEL_PRESETS.values()),
    )
    parser.add_argument("--transformer", help="take the transformer from this source instead")
    parser.add_argument("--precision", choices=PRECISIONS, help="default: bf16 on GPU, fp32 on CPU")
    parser.add_argument(
        "--vae-precision", choices=PRECISIONS, default="fp32", help="default: fp32 (official)"
    )
    parser.add_argument("--offload", choices=OFFLOAD_MODES, default="auto")
    parser.add_argument(
        "--memory-profile",
        choices=tuple(costs.MEMORY_PROFILES),
        default="off",
        help="smaller weights: "
        + "; ".join(f"{p.name}: {p.description}" for p in costs.MEMORY_PROFILES.values()),
    )
    parser.add_argument(
        "--compile", action="store_true", help="torch.compile the transformer blocks (GPU)"
    )


def _add_request_arguments(
    parser: argparse.ArgumentParser, *tasks: Task, positional: frozenset | set = frozenset()
) -> None:
    """A flag per parameter the tasks use (``allegro.params``), named by it: ``--x-y`` for
    ``x_y`` unless it declares its own. Numbers are taken as text and checked by the
    request's own checks, so the CLI, the page and the API give the same messages."""
    for declared in params_for(*tasks):
        if declared.name in positional:
            continue
        flag, help_text = declared.flag, declared.help
        if declared.kind is Kind.BOOL:
            action = "store_false" if declared.default else "store_true"
            parser.add_argument(flag, dest=declared.name, action=action, help=help_text)
        elif declared.kind is Kind.CHOICE:
            parser.add_argument(
                flag, dest=declared.name, choices=declared.choices, default=None, help=help_text
            )
        else:
            parser.add_argument(
                flag, dest=declared.name, required=declared.required, default=None, help=help_text
            )


def _request_values(args: argparse.Namespace, *tasks: Task) -> dict[str, Any]:
    """The request's fields the command line gave, by name (the others keep their defaults)."""
    values = {declared.name: getattr(args, declared.name, None) for declared in params_for(*tasks)}
    return {name: value for name, value in values.items() if value is not None}


class _ProgressBar:
    """One tqdm bar over the whole job, showing stage, step and ETA; created on the first
    event so that an early error prints one clean line."""

    def __init__(self) -> None:
        self.bar = None

    def __call__(self, event) -> None:
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=1000, bar_format="{desc}: {percentage:3.0f}%|{bar}| {postfix}")
        self.bar.set_description_str(event.stage.value, refresh=False)
        self.bar.n = int(event.fraction * 1000)
        step = f"{event.step}/{event.total}, " if event.total else ""
        eta = f", ETA {event.eta:.0f}s" if event.eta is not None else ""
        self.bar.set_postfix_str(f"{step}{event.elapsed:.0f}s elapsed{eta}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _model_choice(args: argparse.Namespace, image_to_video: bool):
    """(model, transformer, preset): a preset comes from --preset, or from --model naming one
    (as the app's --model does); image to video defaults to the allegro-ti2v preset."""
    default = "allegro-ti2v" if image_to_video else None
    preset = MODEL_PRESETS.get(args.preset or args.model or default or "")
    if preset and args.model in (None, preset.name):
        model = preset.model
    else:
        model = args.model or DEFAULT_MODEL
    transformer = args.transformer or (preset.transformer if preset else None)
    return model, transformer, preset


def _generate(args: argparse.Namespace) -> int:
    values = _request_values(args, Task.TEXT, Task.IMAGE)
    image_to_video = bool(values.get("first_image") or values.get("last_image"))
    model, transformer, preset = _model_choice(args, image_to_video)
    for name in ("frames", "height", "width"):  # the preset's size, unless given
        if name not in values and preset is not None:
            values[name] = getattr(preset, name)
    if values.get("interpolation_method") is not None:  # a method alone asks for it
        values["interpolate"] = True
    return _run(args, GenerationRequest(**values), model, transformer, weights=args.weights)


def _extend(args: argparse.Namespace) -> int:
    from allegro.ti2v.inputs import last_frames

    values = _request_values(args, Task.EXTEND)
    model, transformer, preset = _model_choice(args, image_to_video=True)
    overlap = values.get("overlap_frames", DEFAULT_OVERLAP_FRAMES)
    earlier, _ = last_frames(args.video, max(_whole(overlap), 1))
    if "frames" not in values and preset is not None:
        values["frames"] = preset.frames
    request = GenerationRequest(
        **values,
        height=earlier.shape[1],  # a continuation has the clip's size
        width=earlier.shape[2],
        continue_video=str(args.video),
    )
    return _run(args, request, model, transformer)


def _whole(value: Any) -> int:
    try:
        return int(value)
    except ValueError:
        raise AllegroError(f"--overlap must be a whole number of frames, not {value!r}.") from None


def _run(
    args: argparse.Namespace,
    request: GenerationRequest,
    model: str,
    transformer: str | None,
    weights: str | None = None,
) -> int:
    check_request(request)  # fail before loading 25 GB
    if request.image_to_video:
        from allegro.ti2v.inputs import check_condition_files

        check_condition_files(request)
    if args.out is not None and args.out.suffix.lower() != ".mp4":
        raise AllegroError(f"--out must name an .mp4 file, not {args.out}.")

    from allegro.engine import Engine
    from allegro.events import CancelToken

    spec = PipelineSpec(
        model=model,
        transformer=transformer,
        precision=args.precision,
        vae_precision=args.vae_precision,
        offload=args.offload,
        compile=args.compile,
        memory_profile=args.memory_profile,
    )
    engine = Engine(spec, output_dir="outputs", ema_vfi_weights=weights)
    cancel = CancelToken()
    bar = _ProgressBar()
    # Ctrl-C cancels cleanly between steps instead of killing the process mid-write.
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, lambda *_: cancel.cancel())
    try:
        result = engine.generate(request, bar, cancel, output_path=args.out)
    finally:
        bar.close()
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    record = result.record
    print(f"offload: {record.offload} ({record.offload_reason})", file=sys.stderr)
    if record.step_cache:
        from allegro.step_cache import StepCacheStats

        print(StepCacheStats.summary_of(record.step_cache), file=sys.stderr)
    print(f"saved {result.video_path} (seed {result.seed}, {result.seconds:.1f} s)")
    return 0


def _interpolate(args: argparse.Namespace) -> int:
    from allegro.engine import interpolate_video

    bar = _ProgressBar()
    try:
        path = interpolate_video(args.input, args.output, args.method, args.weights, bar)
    finally:
        bar.close()
    print(f"saved {path}")
    return 0


def _info(args: argparse.Namespace) -> int:
    from allegro.video import read_settings

    if not args.video.is_file():
        raise AllegroError(f"{args.video} does not exist.")
    print(json.dumps(read_settings(args.video), indent=2, ensure_ascii=False))
    return 0


def _make_tiny(args: argparse.Namespace) -> int:
    from allegro.tiny import make_tiny

    print(f"tiny checkpoint written to {make_tiny(args.directory, ti2v=args.ti2v)}")
    return 0


def _prompt_helper(args: argparse.Namespace):
    from allegro.prompting.choose import make_helper

    helper = make_helper(
        args.prompt_model, args.prompt_timeout, os.environ.get("ALLEGRO_PROMPT_API_KEY")
    )
    if helper is None:
        raise AllegroError("Prompt help is off (--prompt-model none): name a model to use it.")
    return helper


def _with_cancel(work):
    """``work(cancel, progress)`` with Ctrl-C cancelling it and a bar for a download."""
    from allegro.events import CancelToken

    cancel = CancelToken()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, lambda *_: cancel.cancel())
    bar = _ProgressBar()
    try:
        return work(cancel, bar)
    finally:
        bar.close()


def _improve_prompt(args: argparse.Namespace) -> int:
    helper = _prompt_helper(args)
    caption = _with_cancel(
        lambda cancel, bar: helper.improve(args.prompt, args.image_to_video, cancel, bar)
    )
    print(caption)
    return 0


def _write_shots(args: argparse.Namespace) -> int:
    if args.story == "-":
        story = sys.stdin.read()
    else:
        try:
            story = Path(args.story).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise AllegroError(f"Cannot read the story {args.story}: {error}") from None
    if args.out is not None and args.out.suffix.lower() != ".json":
        raise AllegroError(f"--out must name a .json file, not {args.out}.")
    helper = _prompt_helper(args)
    board = _with_cancel(lambda cancel, bar: helper.write_shots(story, cancel, bar))
    text = json.dumps(board, indent=2, ensure_ascii=False)
    if args.out is None:
        print(text)
    else:  # whole or not at all
        partial = args.out.with_name(args.out.name + ".partial")
        partial.write_text(text + "\n", encoding="utf-8")
        partial.replace(args.out)
        print(f"saved {args.out} ({len(board['shots'])} shots)")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    handlers = {
        "make-tiny": _make_tiny,
        "generate": _generate,
        "extend": _extend,
        "info": _info,
        "interpolate": _interpolate,
        "improve-prompt": _improve_prompt,
        "write-shots": _write_shots,
    }
    try:
        return handlers[args.command](args)
    except Cancelled as error:
        print(f"cancelled: {error}", file=sys.stderr)
        return 130
    except AllegroError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except Exception as error:  # a bug, not bad input: still one line, details on demand
        if os.environ.get("ALLEGRO_DEBUG"):
            raise
        print(
            f"error: unexpected {type(error).__name__}: {error} "
            "(set ALLEGRO_DEBUG=1 to see the traceback)",
            file=sys.stderr,
        )
        return 1
