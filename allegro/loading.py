"""Loading the pipeline once: model sources, precision, offload, and the pipeline cache.

A model source is a Hugging Face hub id or a local folder in diffusers layout. Hub sources
are fetched with ``snapshot_download`` (safetensors only, so the 19 GB of .bin duplicates in
the text encoder folder are never fetched), which honours the Hugging Face cache and
``HF_HUB_OFFLINE``; the pipeline then loads from the local snapshot with diffusers'
``from_pretrained``.
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from allegro.errors import ModelUnavailableError, UnsupportedSetupError
from allegro.events import ProgressCallback, ProgressEvent, Stage, ignore_progress
from allegro.model_libraries import import_model_libraries
from allegro.prompts import PromptEmbeddingCache
from allegro.request import DEFAULT_MODEL, OFFICIAL_MODELS, NativeSize

logger = logging.getLogger(__name__)

PRECISIONS = ("bf16", "fp16", "fp32")
OFFLOAD_MODES = ("auto", "none", "model", "sequential", "group")
GPU_OFFLOAD_MODES = ("model", "sequential", "group")
# torch.compile stays clean only where no hooks move weights inside the compiled blocks:
# group offload's per-block hooks run under torch.compiler.disable (diffusers 0.42.1
# hooks/group_offloading.py:353,361) and sequential offload's accelerate hooks wrap every layer,
# so each block would break its graph and recompile past the limit, then fall back.
COMPILE_OFFLOAD_MODES = ("none", "model")

# Only what the pipeline needs: configs, tokenizer files and safetensors weights.
_PIPELINE_FILES = [
    "model_index.json",
    "scheduler/*",
    "tokenizer/*",
    "text_encoder/*.json",
    "text_encoder/*.safetensors",
    "transformer/*.json",
    "transformer/*.safetensors",
    "vae/*.json",
    "vae/*.safetensors",
]
# A transformer-only source: at the root or in transformer/ (never a whole pipeline's T5).
_TRANSFORMER_FILES = [
    f"{folder}{name}"
    for folder in ("", "transformer/")
    for name in ("config.json", "diffusion_pytorch_model*.safetensors*")
]
_NEVER_FETCH = ["*.bin", "*.pt", "*.pth", "*.ckpt", "*.msgpack", "*.h5", "*.onnx"]


@dataclass(frozen=True)
class PipelineSpec:
    """What to load. ``precision=None`` means bf16 on CUDA, fp32 on CPU."""

    model: str = DEFAULT_MODEL
    transformer: str | None = None
    precision: str | None = None
    vae_precision: str = "fp32"
    offload: str = "auto"
    compile: bool = False  # torch.compile the transformer blocks (slow first step, then faster)
    memory_profile: str = "off"  # costs.MEMORY_PROFILES: fp8 transformer storage, int8 T5


@dataclass(frozen=True)
class AppliedOffload:
    mode: str
    reason: str


@dataclass
class LoadedPipeline:
    pipe: Any  # diffusers.AllegroPipeline
    spec: PipelineSpec  # precision resolved; offload as asked
    offload: AppliedOffload  # what was applied, and why
    device: str
    device_name: str | None  # e.g. "NVIDIA H100 80GB HBM3"; None on the CPU
    native: NativeSize
    official: bool
    load_seconds: float
    prompt_cache: PromptEmbeddingCache = field(default_factory=PromptEmbeddingCache)
    run_lock: threading.Lock = field(default_factory=threading.Lock)
    preview_map: Any = None  # latent -> RGB matrix for live previews (numpy), fitted on first use
    seconds_per_tile: float | None = None  # measured VAE decode speed, for the ETA
    interpolators: dict[tuple, Any] = field(default_factory=dict)  # made once, by the engine
    gpu_memory_bytes: int | None = None  # the GPU's capacity; None on the CPU
    multiprocessors: int | None = None  # SMs of the GPU (or slice) actually got
    compiled: bool = False  # transformer blocks compiled (--compile, where it is clean)
    ti2v: bool = False  # an Allegro-TI2V pipeline (text + images to video)
    fingerprints: dict[str, str] = field(default_factory=dict)  # see weights_fingerprint
    reused: tuple[str, ...] = ()  # components kept from the previous pipeline


# Components that Allegro and Allegro-TI2V share (the same T5-XXL and VAE): a switch between
# the two keeps them in memory when their weights are the same files (weights_fingerprint).
SHAREABLE_COMPONENTS = ("text_encoder", "vae")
# Offload modes whose hooks can be taken off a module and put on again by the next pipeline
# (accelerate's remove_hook_from_module); group and sequential offload reload instead.
_REUSABLE_OFFLOAD = ("none", "model")


@dataclass(frozen=True)
class ReusableComponent:
    fingerprint: str
    module: Any


def _file_identity(path: Path) -> str:
    """A hub snapshot's weights are links to blobs named by their sha256 (the LFS etag,
    huggingface_hub/file_download.py:1200): same name, same bytes, with no hashing of 20 GB.
    A plain file is the same file when path, size and modification time agree."""
    real = path.resolve()
    if real.parent.name == "blobs":
        return real.name
    stat = real.stat()
    return f"{real}:{stat.st_size}:{stat.st_mtime_ns}"


def weights_fingerprint(folder: Path, dtype_name: str) -> str:
    """Identifies a component's weights as loaded: its config, its safetensors files and the
    precision they are loaded in."""
    digest = hashlib.sha256(dtype_name.encode())
    config = folder / "config.json"
    if config.is_file():
        digest.update(config.read_bytes())
    for weights in sorted(folder.glob("*.safetensors")):
        digest.update(f"{weights.name}={_file_identity(weights)};".encode())
    return digest.hexdigest()


def is_ti2v_checkpoint(folder: Path) -> bool:
    """The transformer's config names the TI2V class (the official one on the hub)."""
    from allegro.ti2v.transformer import OFFICIAL_CLASS_NAME, AllegroTI2VTransformer3DModel

    config = folder / "transformer" / "config.json"
    try:
        name = json.loads(config.read_text()).get("_class_name")
    except (OSError, ValueError):
        return False
    return name in (OFFICIAL_CLASS_NAME, AllegroTI2VTransformer3DModel.__name__)


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def execution_device() -> str:
    return "cuda" if cuda_available() else "cpu"


def device_kind(device: str) -> str:
    """``cuda`` for ``cuda`` or ``cuda:1``, ``cpu`` for ``cpu``."""
    return device.partition(":")[0]


def device_context(device: str | None):
    """Make ``device`` the calling thread's current CUDA device for the block (a no-op on
    the CPU or for plain ``cuda``). Needed beyond ``.to(device)``: diffusers' group offload
    makes its prefetch stream on the current device (hooks/group_offloading.py:677
    ``backend.Stream()``) and syncs the current device's stream (:282, :297), and
    ``torch.cuda.empty_cache`` frees the current device's cache. The current device is per
    thread in the CUDA runtime, so workers on different GPUs do not disturb each other."""
    import contextlib

    if device is None or device_kind(device) != "cuda" or ":" not in device:
        return contextlib.nullcontext()
    import torch

    return torch.cuda.device(torch.device(device))


# What PyPI's torch==2.13.0 (requirements.txt) is built for on Linux x86_64, and the oldest
# NVIDIA driver that runs it; the Dockerfile's base image and the README say the same.
TORCH_CUDA = "13.0"
MIN_NVIDIA_DRIVER = 580


def visible_nvidia_devices(dev: Path = Path("/dev")) -> list[str]:
    """The NVIDIA GPU device nodes this process sees (/dev/nvidia0 …): what the NVIDIA
    Container Toolkit gives a container started with --gpus, and the driver elsewhere."""
    return sorted(str(p) for p in dev.glob("nvidia[0-9]*") if p.name[len("nvidia") :].isdigit())


def cuda_unusable_message(devices: list[str]) -> str:
    """Why PyTorch cannot use the GPU at ``devices``, and what to do about it."""
    import torch

    if torch.version.cuda is None:
        reason = f"this PyTorch ({torch.__version__}) is a CPU-only build"
    else:
        try:
            torch.cuda.init()  # raises with the driver's own complaint (e.g. too old)
            reason = "torch.cuda.is_available() is False"
        except Exception as error:  # any reason is worth showing
            reason = str(error).strip().splitlines()[0]
    return (
        f"An NVIDIA GPU is visible ({', '.join(devices)}) but PyTorch cannot use it: {reason}. "
        f"PyPI's torch 2.13.0 is built for CUDA {TORCH_CUDA} and needs NVIDIA driver "
        f"{MIN_NVIDIA_DRIVER} or newer and a Turing or newer GPU: update the driver (check "
        "with nvidia-smi), or start with "
        "--preview to run the CPU preview model on purpose."
    )


def resolve_precision(precision: str | None, device: str) -> str:
    if precision is None:
        return "bf16" if device_kind(device) == "cuda" else "fp32"
    if precision not in PRECISIONS:
        raise UnsupportedSetupError(
            f"Unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}."
        )
    return precision


def torch_dtype(precision: str):
    import torch

    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[precision]


def check_offload_mode(requested: str, device: str) -> None:
    if requested not in OFFLOAD_MODES:
        raise UnsupportedSetupError(
            f"Unknown offload mode {requested!r}; choose one of {', '.join(OFFLOAD_MODES)}."
        )
    if device_kind(device) != "cuda" and requested in GPU_OFFLOAD_MODES:
        raise UnsupportedSetupError(
            f"Offload mode '{requested}' moves weights between the CPU and a GPU, but this "
            "machine has no CUDA GPU. Use --offload none (or auto) to run on the CPU."
        )


def check_memory_profile(
    profile: str, offload: str, compile: bool = False, zero_gpu: bool = False
) -> None:
    """Refuse the memory profile combinations that cannot work, before anything loads."""
    from allegro.costs import MEMORY_PROFILES

    if profile not in MEMORY_PROFILES:
        raise UnsupportedSetupError(
            f"Unknown memory profile {profile!r}; choose one of {', '.join(MEMORY_PROFILES)}."
        )
    weights = MEMORY_PROFILES[profile]
    if profile == "off":
        return
    if zero_gpu:
        raise UnsupportedSetupError(
            f"The '{profile}' memory profile is not available on ZeroGPU: ZeroGPU moves the "
            "weights to the GPU it lends with its own tensor packing, which is only known to "
            "handle plain tensors (and its GPUs hold the full weights). Use "
            "--memory-profile off."
        )
    if offload not in ("auto", *weights.offload_modes):
        raise UnsupportedSetupError(
            f"The '{profile}' memory profile does not work with '{offload}' offload: "
            "accelerate's per-layer hooks are not known to handle fp8 storage or int8 "
            f"weights. Use --offload {', '.join(weights.offload_modes)} or auto with it."
        )
    if compile and weights.fp8_transformer:
        raise UnsupportedSetupError(
            f"The '{profile}' memory profile cannot be combined with --compile: fp8 storage "
            "casts each layer's weights up before its forward and back after it, which a "
            "compiled block would recompile or break its graph on. Drop --compile, or use "
            "--memory-profile int8-text-encoder (the text encoder is not compiled)."
        )


def check_compile(compile: bool, requested_offload: str) -> None:
    """--compile with an offload mode it cannot work with is refused before any download
    (``auto`` is settled at load: compilation is skipped, and said so, if it picks one)."""
    if compile and requested_offload not in (*COMPILE_OFFLOAD_MODES, "auto"):
        raise UnsupportedSetupError(
            f"--compile works with offload none or model, not {requested_offload!r}: its "
            "hooks would make torch.compile recompile every block until it gives up. "
            "Drop --compile, or use --offload model."
        )


def choose_offload(
    requested: str,
    device: str,
    precision: str,
    native: NativeSize,
    vae_precision: str = "fp32",
    memory_profile: str = "off",
    group_host_bytes: int = 0,
) -> AppliedOffload:
    """Apply the user's offload choice; ``auto`` decides from the free GPU memory and, for
    group offload's pinned copies (``group_host_bytes``), the available host RAM."""
    check_offload_mode(requested, device)
    if device_kind(device) != "cuda":
        return AppliedOffload("none", "no GPU: everything runs on the CPU")
    if requested != "auto":
        return AppliedOffload(requested, "chosen by the user")
    import psutil
    import torch

    from allegro import costs

    # This device's free memory (torch/cuda/memory.py:846; plain "cuda": the current one).
    free_bytes, _total = torch.cuda.mem_get_info(torch.device(device))
    choice = costs.choose_offload(
        free_bytes,
        precision,
        native.frames,
        native.height,
        native.width,
        vae_precision,
        profile=memory_profile,
        available_host_bytes=psutil.virtual_memory().available,
        group_host_bytes=group_host_bytes,
    )
    return AppliedOffload(choice.mode, choice.reason)


def group_offload_host_bytes(pipe) -> int:
    """Host RAM group offload adds: a pinned copy of every transformer tensor (made when a
    stream is used, diffusers 0.42.1 hooks/group_offloading.py:172-194). T5 gets no stream,
    so no pinned copy (see apply_offload)."""
    from allegro.costs import pinned_host_bytes

    module = pipe.transformer
    tensors = [*module.parameters(), *module.buffers()]
    return pinned_host_bytes(t.numel() * t.element_size() for t in tensors)


def apply_offload(pipe, mode: str, device: str) -> None:
    """Place the pipeline with diffusers' own offload mechanisms, on ``device`` (``cuda:1``
    included: model and sequential offload take the index from ``device``, diffusers
    0.42.1 pipelines/pipeline_utils.py:1215-1228 and :1328-1341; the caller holds
    device_context for group offload's stream)."""
    if mode == "none":
        pipe.to(device)
    elif mode == "model":
        pipe.enable_model_cpu_offload(device=device)
    elif mode == "sequential":
        pipe.enable_sequential_cpu_offload(device=device)
    elif mode == "group":
        import torch
        from diffusers.hooks import apply_group_offloading

        onload = torch.device(device)
        streams = onload.type == "cuda"  # prefetch the next group while this one computes
        pipe.transformer.enable_group_offload(
            onload_device=onload,
            offload_type="block_level",
            num_blocks_per_group=1,
            use_stream=streams,
        )
        # T5 keeps its blocks inside `encoder`, not in a top-level list, so block level would
        # move all 9.5 GB at once; it runs once per prompt, so layer by layer costs little.
        # No stream: with one, every T5 weight gets a pinned, power-of-two-rounded copy
        # (hooks/group_offloading.py:172-194), ~13 GB of host RAM for a once-per-prompt model.
        apply_group_offloading(
            pipe.text_encoder, onload_device=onload, offload_type="leaf_level", use_stream=False
        )
        # The VAE is small and decodes many tiles: it stays on the GPU.
        pipe.vae.to(onload)
    else:  # pragma: no cover - choose_offload validated the mode
        raise ValueError(mode)


# Allegro's transformer does not declare its repeated block in diffusers 0.42.1, so
# ModelMixin.compile_repeated_blocks (modeling_utils.py:1664-1695) would raise without this.
REPEATED_BLOCKS = ["AllegroTransformerBlock"]


def compile_transformer_blocks(transformer) -> None:
    """Regional compilation with diffusers' compile_repeated_blocks: the 32 blocks share one
    code object, so torch.compile builds one graph and every block reuses it, instead of
    minutes for the whole model. Declared on this instance, not on diffusers' class."""
    transformer._repeated_blocks = REPEATED_BLOCKS
    transformer.compile_repeated_blocks()


def store_transformer_in_fp8(transformer, compute_precision: str) -> None:
    """diffusers' layerwise casting: weights stored in float8_e4m3fn, each layer cast up to
    the compute precision for its forward and back after it. The layers the transformer
    names in ``_skip_layerwise_casting_patterns`` (pos_embed, norm, adaln_single) and
    diffusers' default patterns (proj_out) are left out (modeling_utils.enable_layerwise_casting).

    adaln_single (the timestep MLP and the 6-way modulation every block reads: 1.4% of the
    bytes, what kept fp8 storage above half) gets torchao int8 weight-only instead of fp8:
    diffusers' authors name modulation layers as where fp8 casting degrades results
    (modeling_utils.py:460-461), and a plain e4m3 cast has no scale, so small weights fall
    into its subnormals (about 3% weight error at std 0.02, 11% at 0.005), while int8 with
    one scale per output row keeps about 0.85% at any magnitude (tests/test_memory_profiles).
    Its forward casts the int8 weight to the activations' dtype, one layer at a time
    (torchao int8_tensor.py:352-356). pos_embed, proj_out and the bare scale-shift tables
    (0.02% of the bytes) stay in ``compute_precision``."""
    import torch
    from torchao.quantization import Int8WeightOnlyConfig, quantize_

    transformer.enable_layerwise_casting(
        storage_dtype=torch.float8_e4m3fn, compute_dtype=torch_dtype(compute_precision)
    )
    quantize_(transformer.adaln_single, Int8WeightOnlyConfig())


def int8_text_encoder_config():
    """transformers' torchao backend, int8 weight-only: linear weights and the 32128x4096
    shared embedding in int8 with one scale per output row, activations in the compute
    precision. Runs on the CPU as on a GPU.

    The embedding needs both ``include_input_output_embeddings`` (transformers'
    quantizer_torchao.py:97-118) and an ``FqnToConfig``: with a bare config transformers
    calls quantize_ with torchao's default filter, which takes nn.Linear only
    (integrations/torchao.py:159, torchao quant_api.py:278), while the FqnToConfig path
    passes a filter that takes the module it names (integrations/torchao.py:136). Modules are
    named, not ``_default`` (deprecated: quant_api.py:1603-1607); the first matching pattern
    wins. torchao dequantizes the whole table for each lookup (int8_tensor.py:435-440), a
    transient the memory model counts. T5's relative position bias (an embedding of 32
    buckets, added to every attention score) stays in full precision."""
    from torchao.quantization import FqnToConfig, Int8WeightOnlyConfig
    from transformers import TorchAoConfig

    int8 = Int8WeightOnlyConfig()
    return TorchAoConfig(
        FqnToConfig(
            {
                "shared": int8,
                r"re:.*\.relative_attention_bias": None,
                r"re:.*\.(SelfAttention|DenseReluDense)\.\w+": int8,
            }
        ),
        include_input_output_embeddings=True,
    )


def _download_hint(repo_id: str) -> str:
    return (
        f"To fix: on a machine with internet run `hf download {repo_id} --exclude '*.bin'` "
        "(about 25 GB for the full model), or pass a local folder in diffusers layout "
        "with --model /path/to/folder."
    )


class _Discard:
    """A text stream that drops everything: our events replace the console bar."""

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass


def _progress_tqdm(on_progress: ProgressCallback, started: float):
    """A tqdm class that reports snapshot_download's byte counts as progress events.

    A plain tqdm subclass, not huggingface_hub's: theirs disables itself without a terminal
    (a server, a container), and then counts nothing."""
    from tqdm import tqdm

    class ProgressTqdm(tqdm):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **{**kwargs, "disable": False, "file": _Discard()})

        def update(self, n=1):
            result = super().update(n)
            # Two byte bars exist: bytes written to disk (the one to show: its total is the
            # download size) and network bytes, whose total is a moving guess.
            if self.unit == "B" and self.total and not self.desc.startswith("Downloading bytes"):
                on_progress(
                    ProgressEvent(
                        Stage.DOWNLOADING,
                        fraction=0.0,
                        step=int(self.n),
                        total=int(self.total),
                        elapsed=time.monotonic() - started,
                        message=f"Downloading weights: {self.n / 1e9:.2f} of "
                        f"{self.total / 1e9:.2f} GB",
                    )
                )
            return result

    return ProgressTqdm


def fetch_source(
    source: str,
    allow_patterns: list[str],
    on_progress: ProgressCallback = ignore_progress,
) -> Path:
    """A local folder as is, or a hub repo's snapshot (downloaded if needed and allowed)."""
    local = Path(source).expanduser()
    if local.is_dir():
        return local
    if source.startswith((".", "/", "~")) or source.count("/") != 1:
        raise ModelUnavailableError(
            f"Model folder {source!r} does not exist, and it is not a Hugging Face repo id "
            f"like {DEFAULT_MODEL!r}."
        )
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
    )

    started = time.monotonic()
    on_progress(ProgressEvent(Stage.DOWNLOADING, 0.0, message=f"Checking {source} …"))
    try:
        return Path(
            snapshot_download(
                source,
                allow_patterns=allow_patterns,
                ignore_patterns=_NEVER_FETCH,
                tqdm_class=_progress_tqdm(on_progress, started),
            )
        )
    except (LocalEntryNotFoundError, OfflineModeIsEnabled):
        raise ModelUnavailableError(
            f"The weights of {source} are not (fully) in the Hugging Face cache, and they "
            "cannot be downloaded now (offline mode, or no connection). " + _download_hint(source)
        ) from None
    except (RepositoryNotFoundError, GatedRepoError):
        raise ModelUnavailableError(
            f"{source} was not found on the Hugging Face hub (or needs a login: `hf auth "
            "login`). Check the name, or pass a local folder with --model."
        ) from None
    except (HfHubHTTPError, OSError) as error:
        raise ModelUnavailableError(
            f"Downloading {source} failed ({error}). Partly downloaded files are kept and the "
            "download resumes on the next try. " + _download_hint(source)
        ) from None


def _transformer_subfolder(path: Path) -> str | None:
    """Variant repos may ship the transformer at the root or in ``transformer/``."""
    return "transformer" if (path / "transformer" / "config.json").is_file() else None


def load_pipeline(
    spec: PipelineSpec,
    on_progress: ProgressCallback = ignore_progress,
    reusable: dict[str, ReusableComponent] | None = None,
    device: str | None = None,
):
    """Load, place and configure an AllegroPipeline (or, for an Allegro-TI2V checkpoint, an
    AllegroTI2VPipeline) on ``device`` (None: this process's GPU, or the CPU); returns a
    LoadedPipeline. ``reusable`` components of the previous pipeline are used instead of
    loading when their weights are the same."""
    started = time.monotonic()
    device = device or execution_device()
    precision = resolve_precision(spec.precision, device)
    vae_precision = resolve_precision(spec.vae_precision, device)
    check_offload_mode(spec.offload, device)  # before a 25 GB download, not after
    check_compile(spec.compile, spec.offload)
    check_memory_profile(spec.memory_profile, spec.offload, spec.compile)
    from allegro.costs import MEMORY_PROFILES

    weights = MEMORY_PROFILES[spec.memory_profile]

    base_files = list(_PIPELINE_FILES)
    if spec.transformer:
        base_files = [p for p in base_files if not p.startswith("transformer/")]
    base_path = fetch_source(spec.model, base_files, on_progress)
    transformer_path = (
        fetch_source(spec.transformer, _TRANSFORMER_FILES, on_progress)
        if spec.transformer
        else None
    )

    on_progress(ProgressEvent(Stage.LOADING, 0.0, message="Loading the model into memory …"))
    import_model_libraries()  # without torchao, unless a memory profile imports it
    from diffusers import AllegroPipeline, AllegroTransformer3DModel, AutoencoderKLAllegro
    from diffusers.utils import logging as diffusers_logging
    from transformers import T5EncoderModel
    from transformers.utils import logging as transformers_logging

    # Our own progress events replace the libraries' console bars.
    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()

    ti2v = transformer_path is None and is_ti2v_checkpoint(base_path)
    # An int8 text encoder is not the same module as a plain one: never reused for the other.
    text_encoder_weights = f"{precision}, int8" if weights.int8_text_encoder else precision
    fingerprints = {
        "text_encoder": weights_fingerprint(base_path / "text_encoder", text_encoder_weights),
        "vae": weights_fingerprint(base_path / "vae", vae_precision),
    }
    components: dict[str, Any] = {
        name: reusable[name].module
        for name in SHAREABLE_COMPONENTS
        if reusable and name in reusable and reusable[name].fingerprint == fingerprints[name]
    }
    reused = tuple(components)
    try:
        if "vae" not in components:
            components["vae"] = AutoencoderKLAllegro.from_pretrained(
                base_path, subfolder="vae", dtype=torch_dtype(vae_precision)
            )
        if weights.int8_text_encoder and "text_encoder" not in components:
            components["text_encoder"] = T5EncoderModel.from_pretrained(
                base_path,
                subfolder="text_encoder",
                dtype=torch_dtype(precision),
                use_safetensors=True,
                quantization_config=int8_text_encoder_config(),
            )
        if ti2v:
            pipe = _load_ti2v_parts(base_path, precision, components)
        elif transformer_path is not None:
            components["transformer"] = AllegroTransformer3DModel.from_pretrained(
                transformer_path,
                subfolder=_transformer_subfolder(transformer_path),
                dtype=torch_dtype(precision),
                use_safetensors=True,
            )
        if not ti2v:
            pipe = AllegroPipeline.from_pretrained(
                base_path, dtype=torch_dtype(precision), use_safetensors=True, **components
            )
    except (OSError, ValueError) as error:
        raise ModelUnavailableError(
            f"{spec.model} is not a complete Allegro checkpoint ({error}). Files may be "
            "missing or partly downloaded: run the download again, or check the folder. "
            + _download_hint(DEFAULT_MODEL)
        ) from None

    # The VAE cannot decode without tiling, and the setting is not saved with the model.
    pipe.vae.enable_tiling()
    pipe.set_progress_bar_config(disable=True)
    config = pipe.transformer.config
    native = NativeSize(
        frames=config.sample_frames * pipe.vae_scale_factor_temporal,
        height=config.sample_height * pipe.vae_scale_factor_spatial,
        width=config.sample_width * pipe.vae_scale_factor_spatial,
    )
    if weights.fp8_transformer:
        store_transformer_in_fp8(pipe.transformer, precision)
    # Counted after fp8 storage: the pinned copies are of the tensors as stored.
    group_host_bytes = group_offload_host_bytes(pipe) if spec.offload == "auto" else 0
    offload = choose_offload(
        spec.offload,
        device,
        precision,
        native,
        vae_precision,
        spec.memory_profile,
        group_host_bytes,
    )
    compiled = spec.compile and offload.mode in COMPILE_OFFLOAD_MODES
    if spec.compile and not compiled:
        offload = replace(
            offload,
            reason=f"{offload.reason}; --compile skipped: it works with offload none or model",
        )
    with device_context(device):
        apply_offload(pipe, offload.mode, device)
    logger.info("Offload on %s: %s (%s)", device, offload.mode, offload.reason)
    if compiled:
        compile_transformer_blocks(pipe.transformer)
    # Fitted on the first run (engine._fit_preview_map), or kept: a fit of the very same VAE.
    preview_map = None
    if "vae" in reused and reusable and "preview_map" in reusable:
        preview_map = reusable["preview_map"].module
    import torch

    # On ZeroGPU these are spaces' emulated answers for the slice lent per call
    # (spaces 0.51.3 zero/torch/patching.py:321-322, zero/torch/static.py:18-29).
    on_gpu = device_kind(device) == "cuda"
    gpu = torch.device(device) if on_gpu else None
    properties = torch.cuda.get_device_properties(gpu) if on_gpu else None
    return LoadedPipeline(
        pipe=pipe,
        device_name=torch.cuda.get_device_name(gpu) if on_gpu else None,
        spec=replace(spec, precision=precision, vae_precision=vae_precision),
        offload=offload,
        device=device,
        native=native,
        official=spec.model in OFFICIAL_MODELS,
        load_seconds=time.monotonic() - started,
        gpu_memory_bytes=properties.total_memory if properties else None,
        multiprocessors=properties.multi_processor_count if properties else None,
        compiled=compiled,
        preview_map=preview_map,
        ti2v=ti2v,
        fingerprints=fingerprints,
        reused=reused,
    )


def _load_ti2v_parts(base_path: Path, precision: str, components: dict[str, Any]):
    """Allegro-TI2V part by part: the hub's model_index.json names the T2V pipeline and its
    transformer config the official class, so nothing is left to auto-detection."""
    import_model_libraries()
    from diffusers import EulerAncestralDiscreteScheduler
    from transformers import AutoTokenizer, T5EncoderModel

    from allegro.ti2v.pipeline import AllegroTI2VPipeline
    from allegro.ti2v.transformer import AllegroTI2VTransformer3DModel

    dtype = torch_dtype(precision)
    if "text_encoder" not in components:
        components["text_encoder"] = T5EncoderModel.from_pretrained(
            base_path / "text_encoder", dtype=dtype, use_safetensors=True
        )
    return AllegroTI2VPipeline(
        tokenizer=AutoTokenizer.from_pretrained(base_path / "tokenizer"),
        scheduler=EulerAncestralDiscreteScheduler.from_pretrained(base_path / "scheduler"),
        transformer=AllegroTI2VTransformer3DModel.from_pretrained(
            base_path / "transformer", dtype=dtype, use_safetensors=True
        ),
        **components,
    )


def free_accelerator_memory() -> None:
    """Return cached GPU memory after an error, a cancel or an unload. A no-op on the CPU:
    a full garbage collection costs a quarter of a second there and frees nothing useful."""
    if cuda_available():
        import torch

        gc.collect()
        torch.cuda.empty_cache()


class PipelineCache:
    """One pipeline per device, keyed by (source, transformer, precision, offload).

    The same key never reloads; a new key releases the old pipeline first (one model per
    GPU); concurrent callers wait for a single load. ``device`` None: this process's GPU
    (or the CPU); a worker per device (allegro.devices) has a cache of its own."""

    def __init__(self, device: str | None = None) -> None:
        self.device = device
        self._lock = threading.Lock()
        self._key: tuple | None = None
        self._loaded: LoadedPipeline | None = None
        self.load_count = 0

    def key(self, spec: PipelineSpec) -> tuple:
        device = self.device or execution_device()
        return (
            spec.model,
            spec.transformer,
            resolve_precision(spec.precision, device),
            resolve_precision(spec.vae_precision, device),
            spec.offload,
            spec.compile,
            spec.memory_profile,
        )

    @property
    def loaded(self) -> LoadedPipeline | None:
        return self._loaded

    def get(self, spec: PipelineSpec, on_progress: ProgressCallback = ignore_progress):
        key = self.key(spec)
        with self._lock:
            if self._key == key and self._loaded is not None:
                return self._loaded
            reusable = self._reusable_locked()
            self.release_locked()
            self._loaded = load_pipeline(spec, on_progress, reusable, self.device)
            self._key = key
            self.load_count += 1
            return self._loaded

    def release(self) -> None:
        with self._lock:
            self.release_locked()

    def _reusable_locked(self) -> dict[str, ReusableComponent]:
        """The shared components of the pipeline about to be released, with their offload
        hooks taken off so the next pipeline can place them."""
        loaded = self._loaded
        if loaded is None or loaded.offload.mode not in _REUSABLE_OFFLOAD:
            return {}
        from accelerate.hooks import remove_hook_from_module

        reusable = {}
        for name in SHAREABLE_COMPONENTS:
            module = getattr(loaded.pipe, name)
            remove_hook_from_module(module, recurse=True)
            reusable[name] = ReusableComponent(loaded.fingerprints[name], module)
        reusable["preview_map"] = ReusableComponent(loaded.fingerprints["vae"], loaded.preview_map)
        return reusable

    def release_locked(self) -> None:
        if self._loaded is not None:
            self._loaded.prompt_cache.clear()
            self._loaded.interpolators.clear()
            self._loaded = None
            self._key = None
            free_accelerator_memory()


# The process's one pipeline cache (for the one-device case): the only module-level mutable
# state in the engine. Workers on named devices each own a PipelineCache(device).
PIPELINE_CACHE = PipelineCache()
