"""The app's settings: command-line flags, each with an environment variable behind it.

Flags win over environment variables, which win over the defaults. Parsing imports nothing
heavy, so ``python app.py --help`` answers at once.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from allegro.costs import MEMORY_PROFILES
from allegro.devices import ALL_DEVICES, DEVICES_HELP, parse_devices
from allegro.errors import AllegroError
from allegro.loading import GPU_OFFLOAD_MODES, OFFLOAD_MODES, PRECISIONS, check_memory_profile
from allegro.prompting.helper import DEFAULT_PROMPT_MODEL
from allegro.prompting.helper import DEFAULT_TIMEOUT as DEFAULT_PROMPT_TIMEOUT
from allegro.request import DEFAULT_MODEL, MODEL_PRESETS

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
DEFAULT_OUTPUT_DIR = "outputs"
# ZeroGPU gives a call at most this long unless the Space is configured otherwise.
DEFAULT_ZERO_GPU_MAX_SECONDS = 300
# Uploads are only read for the settings a video carries; Allegro's own MP4s are far smaller.
MAX_UPLOAD_MB = 100

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"", "0", "false", "no", "off"})


JOBS_DB_NAME = ".allegro-jobs.sqlite"
# spaces emulates CUDA only until the weights are packed at launch, and its GPU worker gets
# them back on the GPU (spaces 0.51.3 zero/__init__.py:31, zero/wrappers.py:147-154): nothing
# can move weights between CPU and GPU per call, so only "none" works there.
ZERO_GPU_OFFLOAD_MESSAGE = (
    "On ZeroGPU the weights stay on the lent GPU: offload {mode!r} cannot work there "
    "(ZeroGPU moves every weight onto the GPU itself for each call). Unset ALLEGRO_OFFLOAD "
    "or set it to none."
)


class ConfigError(ValueError):
    """An environment variable holds a value the app cannot use."""


@dataclass(frozen=True)
class AppConfig:
    model: str | None  # None: rhymes-ai/Allegro with a CUDA GPU, the preview model without
    transformer: str | None
    precision: str | None
    vae_precision: str
    offload: str
    compile: bool
    host: str
    port: int
    share: bool
    output_dir: Path
    preview: bool  # run the built-in preview model even if a GPU is present
    public_gallery: bool
    ema_vfi_weights: str | None
    mcp: bool
    space_id: str | None  # set on Hugging Face Spaces
    zero_gpu: bool  # a ZeroGPU Space: the GPU is lent per call, for a limited time
    zero_gpu_max_seconds: int
    force_shared: bool = False  # --shared: behind a reverse proxy on a loopback address
    allowed_origins: tuple[str, ...] = ()  # other web pages that may call the API
    trusted_proxies: str | None = None  # addresses whose X-Forwarded-For is believed
    memory_profile: str = "off"  # costs.MEMORY_PROFILES
    # Image to video: a preset name or a source; None: allegro-ti2v with a CUDA GPU, the
    # preview model's image-to-video twin without one; "none": no image-to-video.
    ti2v_model: str | None = None
    jobs_db: Path | None = None  # None: a hidden file in the output folder
    devices: str = ALL_DEVICES  # allegro.devices.parse_devices: one job worker per device
    ray_address: str | None = None  # make videos on this Ray cluster (allegro.jobs.ray)
    jobs_per_person: int = 10  # queued or running jobs one person may have
    jobs_total: int = 100  # queued or running jobs on the server
    jobs_per_address: int = 20  # queued or running jobs from one address, when shared
    allowed_hosts: tuple[str, ...] = ()  # host names a local server also answers to
    # Issue 24, prompt help. None: the default local model, or off when shared; "none": off.
    prompt_model: str | None = None
    prompt_timeout: float = DEFAULT_PROMPT_TIMEOUT
    prompt_help_per_hour: int = 30  # per person, when shared

    @property
    def prompt_model_source(self) -> str:
        """The prompt model in use: on a shared server only one named with --prompt-model
        (a stranger's clicks would otherwise download and run a model nobody asked for)."""
        if self.prompt_model is None:
            return "none" if self.shared else DEFAULT_PROMPT_MODEL
        return self.prompt_model

    @property
    def jobs_db_path(self) -> Path:
        return self.jobs_db or self.output_dir / JOBS_DB_NAME

    @property
    def job_inputs_dir(self) -> Path:
        return job_inputs_dir(self.jobs_db_path)

    @property
    def shared(self) -> bool:
        """Reachable by other people: a share link, a Space, a non-loopback address, or a
        reverse proxy (--shared)."""
        return (
            self.force_shared
            or self.share
            or self.space_id is not None
            or not is_loopback(self.host)
        )

    @property
    def per_browser_gallery(self) -> bool:
        """Each browser sees (and deletes) only its own videos."""
        return self.shared and not self.public_gallery


def is_loopback(host: str) -> bool:
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name other than localhost: assume others can reach it


def env_bool(environ: Mapping[str, str], name: str) -> bool:
    value = environ.get(name, "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(f"{name}={environ[name]!r} is not a yes/no value (use 1 or 0).")


def job_inputs_dir(jobs_db: Path) -> Path:
    """Beside the jobs database: the input images of queued jobs (never served)."""
    return jobs_db.with_name(f"{jobs_db.stem}-inputs")


def env_int(environ: Mapping[str, str], names: Sequence[str], default: int, minimum: int) -> int:
    """The first of ``names`` that is set, as a whole number of at least ``minimum``."""
    for name in names:
        raw = environ.get(name, "").strip()
        if not raw:
            continue
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(f"{name}={raw!r} is not a whole number.") from None
        if value < minimum:
            raise ConfigError(f"{name}={value} must be at least {minimum}.")
        return value
    return default


def _env_text(environ: Mapping[str, str], name: str) -> str | None:
    return environ.get(name, "").strip() or None


def _bounded_int(minimum: int, maximum: int | None = None):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum or (maximum is not None and value > maximum):
            bounds = f"between {minimum} and {maximum}" if maximum else f"at least {minimum}"
            raise argparse.ArgumentTypeError(f"{value} must be {bounds}")
        return value

    return parse


def build_parser(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    """Flags whose defaults come from ``environ``; raises ConfigError for bad variables."""
    presets = "; ".join(f"{p.name}: {p.description}" for p in MODEL_PRESETS.values())
    parser = argparse.ArgumentParser(
        prog="python app.py",
        description=(
            "Allegro Studio: a web page (and API) for making short videos from text with "
            "Allegro. Real videos need an NVIDIA GPU and the Allegro weights (~25 GB download; "
            "~27.5 GB of GPU memory without offload, ~9.3 GB with --offload sequential). "
            "Without a GPU the app runs a built-in preview model whose output is noise."
        ),
        epilog="Every flag can also be set with the environment variable named in its help.",
    )
    parser.add_argument(
        "--model",
        default=_env_text(environ, "ALLEGRO_MODEL"),
        help=f"Hugging Face repo id, local folder (diffusers layout) or preset name ({presets}). "
        f"Default: {DEFAULT_MODEL} with a CUDA GPU, the preview model without. [ALLEGRO_MODEL]",
    )
    parser.add_argument(
        "--transformer",
        default=_env_text(environ, "ALLEGRO_TRANSFORMER"),
        help="take the transformer from this repo or folder instead (e.g. "
        "rhymes-ai/Allegro-T2V-40x360P). [ALLEGRO_TRANSFORMER]",
    )
    parser.add_argument(
        "--ti2v-model",
        default=_env_text(environ, "ALLEGRO_TI2V_MODEL"),
        help="the image-to-video model (first/last frame, extend a clip): a preset name, repo "
        "id or folder (Allegro-TI2V layout), or none to switch image to video off. Default: "
        "allegro-ti2v with a CUDA GPU, the preview model's own without. [ALLEGRO_TI2V_MODEL]",
    )
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=_choice(environ, "ALLEGRO_PRECISION", PRECISIONS),
        help="weights precision. Default: bf16 on a GPU, fp32 on the CPU. [ALLEGRO_PRECISION]",
    )
    parser.add_argument(
        "--vae-precision",
        choices=PRECISIONS,
        default=_choice(environ, "ALLEGRO_VAE_PRECISION", PRECISIONS) or "fp32",
        help="VAE precision. Default: fp32, the official setting; bf16 saves about 2 GB "
        "of GPU memory in the decode. [ALLEGRO_VAE_PRECISION]",
    )
    parser.add_argument(
        "--offload",
        choices=OFFLOAD_MODES,
        default=_choice(environ, "ALLEGRO_OFFLOAD", OFFLOAD_MODES) or "auto",
        help="move weights between CPU and GPU to save GPU memory: none (~27.5 GB, fastest), "
        "model, group, sequential (~9.3 GB, 2-3x slower); auto picks the fastest that fits "
        "the free GPU memory. Default: auto. [ALLEGRO_OFFLOAD]",
    )
    parser.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=env_bool(environ, "ALLEGRO_COMPILE"),
        help="torch.compile the transformer blocks: the first video waits for the "
        "compilation, later ones run faster (GPU). [ALLEGRO_COMPILE]",
    )
    parser.add_argument(
        "--memory-profile",
        choices=tuple(MEMORY_PROFILES),
        default=_choice(environ, "ALLEGRO_MEMORY_PROFILE", tuple(MEMORY_PROFILES)) or "off",
        help="smaller weights: fp8-transformer (fp8 storage, bf16 compute), int8-text-encoder "
        "(8-bit T5), low-memory (both). Not with sequential offload; fp8 not with --compile; "
        "not on ZeroGPU. Default: off. [ALLEGRO_MEMORY_PROFILE]",
    )
    parser.add_argument(
        "--host",
        default=_env_text(environ, "GRADIO_SERVER_NAME") or DEFAULT_HOST,
        help="address to listen on; 0.0.0.0 lets other machines connect (then each browser "
        f"gets its own gallery). Default: {DEFAULT_HOST}. [GRADIO_SERVER_NAME]",
    )
    parser.add_argument(
        "--port",
        type=_bounded_int(1, 65535),
        default=env_int(environ, ("GRADIO_SERVER_PORT", "PORT"), DEFAULT_PORT, 1),
        help=f"port to listen on. Default: {DEFAULT_PORT}. [GRADIO_SERVER_PORT or PORT]",
    )
    parser.add_argument(
        "--share",
        action=argparse.BooleanOptionalAction,
        default=env_bool(environ, "GRADIO_SHARE"),
        help="also publish the page on a public gradio.live link (each browser then gets its "
        "own gallery). [GRADIO_SHARE]",
    )
    parser.add_argument(
        "--output-dir",
        type=Path,
        default=Path(_env_text(environ, "ALLEGRO_OUTPUT_DIR") or DEFAULT_OUTPUT_DIR),
        help="folder for the videos (each MP4 with a .json of its settings and a .jpg poster); "
        "the gallery lists it and it is the only folder the server serves. "
        f"Default: {DEFAULT_OUTPUT_DIR}. [ALLEGRO_OUTPUT_DIR]",
    )
    parser.add_argument(
        "--preview",
        action=argparse.BooleanOptionalAction,
        default=env_bool(environ, "ALLEGRO_PREVIEW"),
        help="run the built-in preview model (tiny, random weights: its videos are noise) "
        "even if a GPU is present, to try the app without the 25 GB download. Used "
        "automatically when there is no GPU and no --model. [ALLEGRO_PREVIEW]",
    )
    parser.add_argument(
        "--shared",
        action=argparse.BooleanOptionalAction,
        default=env_bool(environ, "ALLEGRO_SHARED"),
        help="treat every visitor as a stranger even on 127.0.0.1: use it behind a reverse "
        "proxy (each browser gets its own gallery, the API needs a key). [ALLEGRO_SHARED]",
    )
    parser.add_argument(
        "--allowed-origins",
        default=_env_text(environ, "ALLEGRO_ALLOWED_ORIGINS") or "",
        help="comma-separated web origins (e.g. https://example.org) whose pages may call "
        "this server from the browser; requests from any other origin are refused. "
        "[ALLEGRO_ALLOWED_ORIGINS]",
    )
    parser.add_argument(
        "--allowed-hosts",
        default=_env_text(environ, "ALLEGRO_ALLOWED_HOSTS") or "",
        help="comma-separated host names (e.g. studio.example.org) this server answers to "
        "besides localhost, 127.0.0.1 and --host: a local server refuses any other Host "
        "header (DNS rebinding); with it, a shared one does too. [ALLEGRO_ALLOWED_HOSTS]",
    )
    parser.add_argument(
        "--trusted-proxies",
        default=_env_text(environ, "FORWARDED_ALLOW_IPS"),
        help="comma-separated addresses of your reverse proxy: only their X-Forwarded-For "
        "headers are believed (by default nobody's). [FORWARDED_ALLOW_IPS]",
    )
    parser.add_argument(
        "--public-gallery",
        action=argparse.BooleanOptionalAction,
        default=env_bool(environ, "ALLEGRO_PUBLIC_GALLERY"),
        help="when shared, let every visitor see and delete every video (by default each "
        "browser sees only its own). [ALLEGRO_PUBLIC_GALLERY]",
    )
    parser.add_argument(
        "--ema-vfi-weights",
        default=_env_text(environ, "ALLEGRO_EMA_VFI_WEIGHTS"),
        help="EMA-VFI checkpoint (.pkl) for the ema-vfi 30 fps interpolation method. "
        "[ALLEGRO_EMA_VFI_WEIGHTS]",
    )
    parser.add_argument(
        "--mcp",
        action=argparse.BooleanOptionalAction,
        default=env_bool(environ, "ALLEGRO_MCP") or env_bool(environ, "GRADIO_MCP_SERVER"),
        help="also serve the API as an MCP server for AI assistants (needs "
        "pip install 'gradio[mcp]'). [ALLEGRO_MCP or GRADIO_MCP_SERVER]",
    )
    parser.add_argument(
        "--jobs-db",
        type=Path,
        default=_env_text(environ, "ALLEGRO_JOBS_DB"),
        help="the SQLite file that keeps the job queue across restarts (never served). "
        f"Default: {JOBS_DB_NAME} in the output folder. [ALLEGRO_JOBS_DB]",
    )
    parser.add_argument(
        "--jobs-per-person",
        type=_bounded_int(1),
        default=env_int(environ, ("ALLEGRO_JOBS_PER_PERSON",), 10, 1),
        help="how many videos one person may have queued or running (a batch counts each "
        "video). [ALLEGRO_JOBS_PER_PERSON]",
    )
    parser.add_argument(
        "--jobs-total",
        type=_bounded_int(1),
        default=env_int(environ, ("ALLEGRO_JOBS_TOTAL", "ALLEGRO_MAX_QUEUE"), 100, 1),
        help="how many videos may be queued or running on the server. [ALLEGRO_JOBS_TOTAL]",
    )
    parser.add_argument(
        "--jobs-per-address",
        type=_bounded_int(1),
        default=env_int(environ, ("ALLEGRO_JOBS_PER_ADDRESS",), 20, 1),
        help="when shared, how many videos may be queued or running from one network "
        "address, whatever keys or pages it uses (behind a proxy: the address the proxy "
        "forwards, with --trusted-proxies). [ALLEGRO_JOBS_PER_ADDRESS]",
    )
    parser.add_argument(
        "--max-queue",
        dest="jobs_total",
        type=_bounded_int(1),
        default=argparse.SUPPRESS,
        help="the same as --jobs-total (kept for older scripts: every video is a job, and the "
        "job limits are the one queue limit). [ALLEGRO_MAX_QUEUE]",
    )
    parser.add_argument(
        "--zero-gpu-max-seconds",
        type=_bounded_int(1),
        default=env_int(
            environ, ("ALLEGRO_ZERO_GPU_MAX_SECONDS",), DEFAULT_ZERO_GPU_MAX_SECONDS, 1
        ),
        help="on a ZeroGPU Space, refuse requests estimated to take longer than this. "
        f"Default: {DEFAULT_ZERO_GPU_MAX_SECONDS}. [ALLEGRO_ZERO_GPU_MAX_SECONDS]",
    )
    parser.add_argument(
        "--devices",
        default=_env_text(environ, "ALLEGRO_DEVICES") or ALL_DEVICES,
        help=f"where jobs run, one worker per device: {DEVICES_HELP}. Each device loads its "
        "own copy of the model, its offload chosen from its own free memory. Default: all. "
        "[ALLEGRO_DEVICES]",
    )
    parser.add_argument(
        "--ray",
        metavar="ADDRESS",
        default=_env_text(environ, "ALLEGRO_RAY_ADDRESS"),
        help="make videos on a Ray cluster (pip install -r requirements-ray.txt): 'auto' joins "
        "the cluster started on this machine with `ray start`, or give the head's address "
        "(host:6379). This app keeps the page, the queue and the gallery; one worker per GPU of "
        "the cluster loads the model. [ALLEGRO_RAY_ADDRESS]",
    )
    _add_prompt_help_flags(parser, environ)
    return parser


def _add_prompt_help_flags(parser: argparse.ArgumentParser, environ: Mapping[str, str]) -> None:
    """Issue 24: the Improve prompt button's model and its bounds."""
    parser.add_argument(
        "--prompt-model",
        default=_env_text(environ, "ALLEGRO_PROMPT_MODEL"),
        help="the model behind Improve prompt: a small local instruct model (hub id or folder, "
        f"run with transformers; default {DEFAULT_PROMPT_MODEL}, loaded on first use), an "
        "OpenAI-compatible endpoint (http://127.0.0.1:11434/v1 for Ollama; #model after it "
        "picks the model; a key from ALLEGRO_PROMPT_API_KEY), or none to hide the button. "
        "Off on a shared server unless given. [ALLEGRO_PROMPT_MODEL]",
    )
    parser.add_argument(
        "--prompt-timeout",
        type=_bounded_int(1, 600),
        default=env_int(environ, ("ALLEGRO_PROMPT_TIMEOUT",), int(DEFAULT_PROMPT_TIMEOUT), 1),
        help="seconds one rewrite may take (loading the model aside). "
        f"Default: {DEFAULT_PROMPT_TIMEOUT:g}. [ALLEGRO_PROMPT_TIMEOUT]",
    )
    parser.add_argument(
        "--prompt-help-per-hour",
        type=_bounded_int(1),
        default=env_int(environ, ("ALLEGRO_PROMPT_HELP_PER_HOUR",), 30, 1),
        help="on a shared server, how many rewrites one person may ask for in an hour (one "
        "at a time). Default: 30. [ALLEGRO_PROMPT_HELP_PER_HOUR]",
    )


def _choice(environ: Mapping[str, str], name: str, choices: Sequence[str]) -> str | None:
    value = _env_text(environ, name)
    if value is not None and value not in choices:
        raise ConfigError(f"{name}={value!r} is not one of: {', '.join(choices)}.")
    return value


def parse_config(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> AppConfig:
    """Flags and environment -> AppConfig. Bad values exit with argparse's usage message."""
    environ = os.environ if environ is None else environ
    try:
        parser = build_parser(environ)
        zero_gpu = env_bool(environ, "SPACES_ZERO_GPU")
    except ConfigError as error:
        # Same exit as a bad flag, so scripts and Docker see one kind of failure.
        argparse.ArgumentParser(prog="python app.py").error(str(error))
    args = parser.parse_args(argv)
    offload = args.offload
    if zero_gpu:
        if offload in GPU_OFFLOAD_MODES:
            parser.error(ZERO_GPU_OFFLOAD_MESSAGE.format(mode=offload))
        offload = "none"  # what auto must pick there, whatever the emulated free memory says
    try:
        check_memory_profile(args.memory_profile, offload, args.compile, zero_gpu)
        devices = ",".join(parse_devices(args.devices))
    except AllegroError as error:
        parser.error(str(error))
    if zero_gpu and (devices != ALL_DEVICES or args.ray):
        parser.error("ZeroGPU lends one GPU per call: --devices and --ray do not apply there.")
    return AppConfig(
        model=args.model,
        transformer=args.transformer,
        precision=args.precision,
        vae_precision=args.vae_precision,
        offload=offload,
        compile=args.compile,
        host=args.host,
        port=args.port,
        share=args.share,
        output_dir=args.output_dir.expanduser().resolve(),
        preview=args.preview,
        public_gallery=args.public_gallery,
        ema_vfi_weights=args.ema_vfi_weights,
        mcp=args.mcp,
        space_id=_env_text(environ, "SPACE_ID"),
        zero_gpu=zero_gpu,
        zero_gpu_max_seconds=args.zero_gpu_max_seconds,
        force_shared=args.shared,
        allowed_origins=tuple(
            filter(None, (origin.strip().rstrip("/") for origin in args.allowed_origins.split(",")))
        ),
        trusted_proxies=args.trusted_proxies,
        memory_profile=args.memory_profile,
        ti2v_model=args.ti2v_model,
        jobs_db=Path(args.jobs_db).expanduser().resolve() if args.jobs_db else None,
        devices=devices,
        ray_address=args.ray,
        jobs_per_person=args.jobs_per_person,
        jobs_total=args.jobs_total,
        jobs_per_address=args.jobs_per_address,
        allowed_hosts=_host_names(args.allowed_hosts),
        prompt_model=args.prompt_model,
        prompt_timeout=float(args.prompt_timeout),
        prompt_help_per_hour=args.prompt_help_per_hour,
    )


def _host_names(text: str) -> tuple[str, ...]:
    """``a.example, B.example:8080`` -> ("a.example", "b.example"): names, without ports."""
    names = []
    for item in text.split(","):
        item = item.strip().lower()
        if item.startswith("["):  # [::1]:7860
            item = item[1 : item.find("]")] if "]" in item else item[1:]
        elif item.count(":") == 1:
            item = item.split(":")[0]
        if item:
            names.append(item)
    return tuple(names)
