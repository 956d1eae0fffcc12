"""GPU benchmark of the released Allegro architecture, with random weights, against the cost model.

Speed does not depend on the weights' values, so the full-size transformer (2.8B), VAE (175M,
fp32) and a T5-XXL-sized text encoder (4.76B) are built with random weights directly on the
GPU in bf16; nothing is downloaded. Measured, after warm-up, with CUDA events:

- steps: one denoising step of the transformer (batch 2 for guidance, 512 text tokens, bf16,
  SDPA) at each size, the efficiency it implies (cost-model FLOPs / (time x the GPU class's
  dense bf16 peak)) beside the cost model's assumed 0.38, and which SDPA kernels ran;
- fast: Pyramid Attention Broadcast on and off, set up exactly as the engine does
  (``allegro.engine._set_fast_mode``), stepping through the timesteps of a ``--steps``-step
  run; the speed-up over those steps and projected to the official 100 steps;
- memory: peak GPU memory of prompt encoding + one denoising step + one tiled VAE decode
  (tiling fitted by ``allegro.tiling``) through a real ``AllegroPipeline`` placed by
  ``allegro.loading.apply_offload``, per offload mode, beside ``costs.estimate_memory``.

With ``--compile`` the transformer blocks are compiled as the app's ``--compile`` does
(``allegro.loading.compile_transformer_blocks``) and every recompilation and graph break is
logged (torch's "recompiles" and "graph_breaks" logs) and counted in the report: a block that
keeps recompiling hits dynamo's recompile limit (8) and silently falls back to eager.

Without a CUDA GPU it prints one line and exits 0. ``--dry-run-cpu`` runs the same code on
the CPU with a 1-layer transformer, a tiny VAE and text encoder at a tiny size, to show the
code works end to end; its times are CPU seconds and it reports no memory.

    python bench/gpu.py [--parts steps,fast,memory] [--sizes 88x720x1280,40x368x640]
                        [--modes none,model,group,sequential] [--steps 10] [--compile]
                        [--dry-run-cpu]

Estimated from the cost model (not yet timed on a GPU) at about 8 minutes on an H100 with the
defaults; ``--steps 4`` or fewer sizes/modes cut it.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType, SimpleNamespace
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from allegro import costs
from allegro.tiling import fit_tiling

Size = tuple[int, int, int]  # frames, height, width

PARTS = ("steps", "fast", "memory")
DEFAULT_SIZES: tuple[Size, ...] = ((88, 720, 1280), (40, 368, 640))
DRY_RUN_SIZES: tuple[Size, ...] = ((24, 160, 160),)
DEFAULT_STEPS = 10
DRY_RUN_STEPS = 4
OFFICIAL_STEPS = 100  # what the fast-mode speed-up is projected to
GUIDANCE_SCALE = 7.5
TEXT_TOKENS = costs.DEFAULT_TEXT_TOKENS
# Real prompts fill only part of the 512 padded tokens (templated prompt, official negative
# prompt); the mask makes SDPA take its masked path for cross-attention, as in real runs.
PROMPT_TOKENS = (60, 120)  # negative, positive: the pipeline's batch order
SIZE_MULTIPLE = 16  # 8x VAE downsampling, then 2x2 patches
PAB_HOOK = "pyramid_attention_broadcast"  # diffusers' registry name for the PAB hook
LEAK_WARNING_BYTES = 256 * 1024**2
CUDA_ONLY_MODES = ("model", "sequential")  # diffusers refuses them without an accelerator

# T5 v1.1 XXL encoder with the geometry the cost model uses (4.76B parameters).
T5_XXL_CONFIG: dict[str, Any] = {
    "vocab_size": costs.T5_XXL.vocab,
    "d_model": costs.T5_XXL.d_model,
    "d_kv": costs.T5_XXL.d_kv,
    "d_ff": costs.T5_XXL.d_ff,
    "num_layers": costs.T5_XXL.layers,
    "num_heads": costs.T5_XXL.heads,
    "relative_attention_num_buckets": costs.T5_XXL.relative_buckets,
    "feed_forward_proj": "gated-gelu",
    "tie_word_embeddings": False,
}
# Dry run: T5 keeps the 4096 width the transformer's caption projection expects, but almost
# nothing else; the VAE is the tiny checkpoint's (allegro/tiny.py).
DRY_RUN_T5_CONFIG: dict[str, Any] = {
    "vocab_size": 128,
    "d_model": costs.T5_XXL.d_model,
    "d_kv": 8,
    "d_ff": 64,
    "num_layers": 1,
    "num_heads": 2,
    "feed_forward_proj": "gated-gelu",
}
DRY_RUN_VAE_CONFIG: dict[str, Any] = {
    "block_out_channels": (8, 8, 8, 8),
    "latent_channels": 4,
    "layers_per_block": 1,
    "norm_num_groups": 2,
    "sample_size": 160,
}


@dataclass(frozen=True)
class Setup:
    """What is built and where: the real sizes on CUDA, or the dry run's on the CPU."""

    device: str
    precision: str  # transformer and text encoder; the VAE is always fp32 (engine default)
    transformer_overrides: dict[str, Any] = field(default_factory=dict)  # on diffusers defaults
    t5_config: dict[str, Any] = field(default_factory=lambda: dict(T5_XXL_CONFIG))
    vae_config: dict[str, Any] = field(default_factory=dict)  # {} = the released VAE
    dry_run: bool = False


GPU_SETUP = Setup(device="cuda", precision="bf16")
DRY_RUN_SETUP = Setup(
    device="cpu",
    precision="fp32",  # what the engine uses on a CPU
    transformer_overrides={"num_layers": 1},
    t5_config=DRY_RUN_T5_CONFIG,
    vae_config=DRY_RUN_VAE_CONFIG,
    dry_run=True,
)


# ---- arguments and formatting (pure Python) -----------------------------------------------


def parse_size(text: str) -> Size:
    """``88x720x1280`` -> (88, 720, 1280), checked the way the engine checks requests."""
    try:
        frames, height, width = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not FRAMESxHEIGHTxWIDTH, e.g. 88x720x1280"
        ) from None
    if height % SIZE_MULTIPLE or width % SIZE_MULTIPLE or min(height, width) <= 0:
        raise argparse.ArgumentTypeError(
            f"{text}: height and width must be positive multiples of {SIZE_MULTIPLE}"
        )
    try:
        fit_tiling(frames, height, width)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"{text}: {error} (use 24 + 16k frames)") from None
    return frames, height, width


def _sizes(text: str) -> tuple[Size, ...]:
    return tuple(parse_size(part) for part in text.split(",") if part.strip())


def _choices(allowed: Sequence[str], what: str) -> Callable[[str], tuple[str, ...]]:
    def parse(text: str) -> tuple[str, ...]:
        chosen = tuple(part.strip() for part in text.split(",") if part.strip())
        unknown = [part for part in chosen if part not in allowed]
        if unknown:
            raise argparse.ArgumentTypeError(
                f"unknown {what} {', '.join(unknown)}; choose from {','.join(allowed)}"
            )
        return chosen

    return parse


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--parts",
        type=_choices(PARTS, "part"),
        default=PARTS,
        help="what to measure, comma-separated (default: steps,fast,memory)",
    )
    parser.add_argument(
        "--sizes",
        type=_sizes,
        default=None,
        help="FRAMESxHEIGHTxWIDTH list (default: 88x720x1280,40x368x640; dry run: 24x160x160)",
    )
    parser.add_argument(
        "--modes",
        type=_choices(costs.OFFLOAD_ORDER, "offload mode"),
        default=costs.OFFLOAD_ORDER,
        help="offload modes for the memory part (default: none,model,group,sequential)",
    )
    parser.add_argument(
        "--steps",
        type=_positive,
        default=None,
        help=f"timed denoising steps per setting: the timesteps of a run of that many steps "
        f"(default {DEFAULT_STEPS}; dry run {DRY_RUN_STEPS})",
    )
    parser.add_argument("--warmup", type=_positive, default=1, help="untimed steps first")
    parser.add_argument(
        "--compile",
        action="store_true",
        help="compile the transformer blocks for the steps and fast parts, logging and "
        "counting recompilations and graph breaks",
    )
    parser.add_argument(
        "--dry-run-cpu",
        action="store_true",
        help="run the same code on the CPU with a 1-layer transformer at a tiny size",
    )
    args = parser.parse_args(argv)
    if args.sizes is None:
        args.sizes = DRY_RUN_SIZES if args.dry_run_cpu else DEFAULT_SIZES
    if args.steps is None:
        args.steps = DRY_RUN_STEPS if args.dry_run_cpu else DEFAULT_STEPS
    return args


def size_label(size: Size) -> str:
    return "x".join(str(part) for part in size)


def markdown_table(
    headers: Sequence[str], rows: Sequence[Sequence[str]], text_columns: Sequence[int] = (0,)
) -> str:
    """A Markdown table: figures right-aligned, the ``text_columns`` left-aligned."""
    rule = ["---" if index in text_columns else "---:" for index in range(len(headers))]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(rule) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def fmt_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    return f"{seconds:.3f}" if seconds < 1 else f"{seconds:.2f}"


def fmt_gb(size: int | None) -> str:
    return "—" if size is None else f"{size / costs.GB:.1f}"


def fmt_ratio(value: float | None, suffix: str = "x") -> str:
    return "—" if value is None else f"{value:.2f}{suffix}"


# ---- Pyramid Attention Broadcast bookkeeping (pure Python) ------------------------------------


def pab_skips(
    timesteps: Sequence[float], timestep_range: tuple[float, float], block_skip_range: int
) -> list[bool]:
    """Which steps PAB serves from its cache, by diffusers' rule: every attention layer counts
    its calls and recomputes at call 0, outside the timestep range and every
    ``block_skip_range``-th call; otherwise it reuses its last output."""
    low, high = timestep_range
    return [
        index > 0 and low < timestep < high and index % block_skip_range != 0
        for index, timestep in enumerate(timesteps)
    ]


def projected_speedup(
    off_times: Sequence[float],
    on_times: Sequence[float],
    measured_skips: Sequence[bool],
    run_skips: Sequence[bool],
) -> float | None:
    """Speed-up over a whole run whose steps skip as ``run_skips`` says, from the median time
    of a computed step (fast mode off) and of a skipped one (fast mode on)."""
    skipped = [seconds for seconds, skip in zip(on_times, measured_skips, strict=True) if skip]
    if not skipped or not off_times:
        return None
    full, cached = statistics.median(off_times), statistics.median(skipped)
    fast = sum(cached if skip else full for skip in run_skips)
    return full * len(run_skips) / fast


# ---- results ---------------------------------------------------------------------------------


@dataclass
class StepResult:
    size: Size
    tokens: int
    flops: int  # cost model, one step
    model_seconds: float | None = None  # cost model at its assumed efficiency; None on CPU
    off_times: list[float] = field(default_factory=list)
    on_times: list[float] = field(default_factory=list)
    measured_skips: list[bool] = field(default_factory=list)
    projected: float | None = None
    pab_layers: int = 0
    sdpa: str = "—"
    error: str | None = None

    @property
    def step_seconds(self) -> float | None:
        return statistics.median(self.off_times) if self.off_times else None

    def efficiency(self, peak_flops: float | None) -> float | None:
        seconds = self.step_seconds
        return self.flops / (seconds * peak_flops) if seconds and peak_flops else None

    @property
    def fast_speedup(self) -> float | None:
        if not self.off_times or not self.on_times:
            return None
        return statistics.mean(self.off_times) / statistics.mean(self.on_times)


@dataclass
class MemoryResult:
    mode: str
    size: Size
    estimate: costs.MemoryEstimate | None
    peak_allocated: int | None = None
    peak_reserved: int | None = None
    denoise_peak: int | None = None  # prompt encoding + the step
    decode_peak: int | None = None
    seconds: float | None = None
    error: str | None = None  # "OOM", "error: …" or "skipped: …"


@dataclass
class Environment:
    device: str
    gpu: costs.GpuClass | None
    versions: str
    parameters: str


def render_report(
    setup: Setup,
    environment: Environment,
    args: argparse.Namespace,
    steps: Sequence[StepResult],
    memory: Sequence[MemoryResult],
) -> str:
    gpu = environment.gpu
    peak = gpu.half_tflops * 1e12 if gpu is not None and not setup.dry_run else None
    title = "# Allegro benchmark" + (
        " — CPU DRY RUN (CPU seconds; not GPU figures)" if setup.dry_run else ""
    )
    lines = [title, "", f"- Device: {environment.device}"]
    if gpu is not None and not setup.dry_run:
        lines.append(
            f"- Cost-model class: {gpu.name}, {gpu.half_tflops:g} dense bf16 TFLOPS "
            f"({gpu.source}); assumed efficiency {costs.DEFAULT_EFFICIENCY}"
        )
    lines += [
        f"- Versions: {environment.versions}",
        f"- Models (random weights): {environment.parameters}",
        f"- Steps: batch 2 (guidance {GUIDANCE_SCALE}), {TEXT_TOKENS} text tokens, "
        f"{setup.precision}, SDPA; median of the timesteps of a {args.steps}-step run after "
        f"{args.warmup} warm-up step(s)",
    ]
    if steps and ("steps" in args.parts or "fast" in args.parts):
        rows = []
        for result in steps:
            if result.error:
                rows.append([size_label(result.size), f"{result.tokens:,}", result.error])
                rows[-1] += [""] * 5
                continue
            efficiency = result.efficiency(peak)
            rows.append(
                [
                    size_label(result.size),
                    f"{result.tokens:,}",
                    f"{result.flops / 1e12:,.1f}",
                    fmt_seconds(result.step_seconds),
                    fmt_seconds(result.model_seconds),
                    fmt_ratio(efficiency, "") if peak else "n/a (CPU)",
                    f"{costs.DEFAULT_EFFICIENCY:.2f}",
                    result.sdpa,
                ]
            )
        lines += [
            "",
            "## Denoising step (transformer)",
            "",
            markdown_table(
                [
                    "Size",
                    "Tokens",
                    "TFLOP/step (model)",
                    "Measured s/step",
                    "Cost model s/step",
                    "Measured efficiency",
                    "Assumed",
                    "SDPA kernels (ops per step)",
                ],
                rows,
                text_columns=(0, 7),
            ),
        ]
    if "fast" in args.parts and steps:
        rows = []
        for result in steps:
            if result.error or not result.on_times:
                rows.append([size_label(result.size), result.error or "not run", *[""] * 5])
                continue
            skipped = sum(result.measured_skips)
            rows.append(
                [
                    size_label(result.size),
                    fmt_seconds(statistics.mean(result.off_times)),
                    fmt_seconds(statistics.mean(result.on_times)),
                    fmt_ratio(result.fast_speedup),
                    fmt_ratio(result.projected),
                    f"{skipped} of {len(result.on_times)}",
                    str(result.pab_layers),
                ]
            )
        lines += [
            "",
            "## Fast mode (Pyramid Attention Broadcast, as allegro.engine sets it up)",
            "",
            markdown_table(
                [
                    "Size",
                    "Off s/step (mean)",
                    "On s/step (mean)",
                    f"Speed-up ({args.steps} steps)",
                    f"Speed-up ({OFFICIAL_STEPS} steps, projected)",
                    "Steps that skipped",
                    "PAB layers",
                ],
                rows,
            ),
        ]
    if "memory" in args.parts and memory:
        rows = []
        for result in memory:
            estimate = result.estimate
            rows.append(
                [
                    result.mode,
                    size_label(result.size),
                    result.error or fmt_gb(result.peak_allocated),
                    fmt_gb(result.peak_reserved),
                    f"{fmt_gb(result.denoise_peak)} / {fmt_gb(result.decode_peak)}",
                    fmt_gb(estimate.peak_bytes) if estimate else "—",
                    estimate.phase if estimate else "—",
                    fmt_seconds(result.seconds),
                ]
            )
        note = (
            "Dry run: peak memory is not measured on the CPU; seconds prove the path runs."
            if setup.dry_run
            else "Peak = torch.cuda.max_memory_allocated over prompt encoding, one step and the "
            "decode; the estimate includes 0.6 GB for workspaces and allocator slack."
        )
        lines += [
            "",
            "## Peak GPU memory: prompt encoding + one denoising step + one tiled VAE decode",
            "",
            note,
            "",
            markdown_table(
                [
                    "Offload",
                    "Size",
                    "Peak allocated GB",
                    "Peak reserved GB",
                    "Step / decode GB",
                    "Estimate GB",
                    "Estimate's peak phase",
                    "Seconds",
                ],
                rows,
                text_columns=(0, 1, 6),
            ),
        ]
    return "\n".join(lines) + "\n"


# ---- torch side ------------------------------------------------------------------------------

_STARTED = time.monotonic()


def log(message: str) -> None:
    """Progress on stderr, so a run cut short still shows how far it got."""
    print(f"[{time.monotonic() - _STARTED:6.1f} s] {message}", file=sys.stderr, flush=True)


def _dtype(precision: str):
    import torch

    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[precision]


@contextlib.contextmanager
def _building(device: str, dtype) -> Iterator[None]:
    """Create parameters directly on ``device`` in ``dtype``: random init of 7.5B parameters
    takes seconds on a GPU, minutes on a CPU, and never needs an fp32 copy."""
    import torch

    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            yield
    finally:
        torch.set_default_dtype(previous)


def _cast(module, dtype):
    """Cast only what init left in another dtype (diffusers warns about any ``to(dtype)``)."""
    if any(parameter.dtype != dtype for parameter in module.parameters()):
        module = module.to(dtype)
    return module


def build_transformer(setup: Setup, device: str):
    from diffusers import AllegroTransformer3DModel

    dtype = _dtype(setup.precision)
    with _building(device, dtype):
        transformer = AllegroTransformer3DModel(**setup.transformer_overrides)
    return _cast(transformer, dtype).eval().requires_grad_(False)


def build_pipeline(setup: Setup, device: str):
    """A real AllegroPipeline of random components, initialised on ``setup.device`` and then
    moved to ``device`` (the CPU for offload modes, where the engine loads weights too)."""
    from diffusers import AllegroPipeline, AutoencoderKLAllegro, EulerAncestralDiscreteScheduler
    from transformers import T5Config, T5EncoderModel

    from allegro.tiny import _char_tokenizer

    dtype = _dtype(setup.precision)
    transformer = build_transformer(setup, setup.device)
    with _building(setup.device, dtype):
        text_encoder = T5EncoderModel(T5Config(**setup.t5_config))
    text_encoder = _cast(text_encoder, dtype).eval().requires_grad_(False)
    vae_dtype = _dtype("fp32")
    with _building(setup.device, vae_dtype):
        vae = AutoencoderKLAllegro(**setup.vae_config)
    vae = _cast(vae, vae_dtype).eval().requires_grad_(False)
    pipe = AllegroPipeline(
        tokenizer=_char_tokenizer(),  # token ids < 100: valid for any T5 vocabulary here
        text_encoder=text_encoder,
        vae=vae,
        transformer=transformer,
        scheduler=_scheduler(EulerAncestralDiscreteScheduler),
    )
    if device != setup.device:
        for module in (transformer, text_encoder, vae):
            module.to(device)
        _free_memory()
    pipe.vae.enable_tiling()  # the VAE cannot decode without it
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _scheduler(scheduler_class):
    # The official sampler settings of rhymes-ai/Allegro.
    return scheduler_class(
        beta_start=0.0001, beta_end=0.02, beta_schedule="linear", timestep_spacing="linspace"
    )


def run_timesteps(count: int, device: str):
    """The timesteps (a tensor on ``device``) of a ``count``-step run of the official sampler."""
    from diffusers import EulerAncestralDiscreteScheduler

    scheduler = _scheduler(EulerAncestralDiscreteScheduler)
    scheduler.set_timesteps(count, device=device)
    return scheduler.timesteps


def _free_memory() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def timed(run: Callable[[], Any], device: str) -> float:
    """Seconds of ``run``: CUDA events between synchronisations on a GPU, wall time on a CPU."""
    import torch

    if device == "cuda":
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        start.record()
        run()
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end) / 1000
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


# The profiler names the SDPA implementation it dispatched to; checked in this order because
# e.g. "_scaled_dot_product_flash_attention_for_cpu" is the CPU's flash kernel.
_SDPA_KERNELS = (("cudnn", "cudnn"), ("flash", "flash"), ("efficient", "efficient"))
_SDPA_MATH = "math"


def sdpa_kernels(run: Callable[[], Any], text_tokens: int) -> str:
    """Run once under the profiler and name the SDPA kernels used by self- and
    cross-attention (told apart by the key length), with their call counts."""
    from collections import Counter

    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as profiler:
        run()
    counts: Counter[tuple[str, str]] = Counter()
    for event in profiler.events():
        if not event.name.startswith("aten::_scaled_dot_product"):
            continue
        kernel = next((label for key, label in _SDPA_KERNELS if key in event.name), None)
        if kernel is None and _SDPA_MATH in event.name:
            kernel = _SDPA_MATH
        if kernel is None:
            continue
        shapes = event.input_shapes
        cross = (
            len(shapes) > 1
            and len(shapes[1]) == 4
            and shapes[1][2] == text_tokens
            and shapes[0][2] != text_tokens
        )
        counts[("cross" if cross else "self", kernel)] += 1
    if not counts:
        return "none seen"
    return ", ".join(f"{kind}: {kernel} x{n}" for (kind, kernel), n in sorted(counts.items()))


class _TimestepSource:
    """What ``_set_fast_mode`` reads from a pipeline: its transformer and current timestep."""

    def __init__(self, transformer) -> None:
        self.transformer = transformer
        self.current_timestep = None


def _pab_hooks(transformer) -> list[Any]:
    hooks = []
    for module in transformer.modules():
        registry = getattr(module, "_diffusers_hook", None)
        hook = registry.get_hook(PAB_HOOK) if registry is not None else None
        if hook is not None:
            hooks.append(hook)
    return hooks


def _step_inputs(transformer, size: Size, device: str, dtype) -> dict[str, Any]:
    """The transformer's arguments as AllegroPipeline.__call__ builds them for one step."""
    import torch
    from diffusers import AllegroPipeline

    config = transformer.config
    latent_frames, latent_height, latent_width = costs.latent_shape(*size)
    batch = 2  # classifier-free guidance: negative and positive halves
    hidden = torch.randn(
        batch, config.in_channels, latent_frames, latent_height, latent_width, device=device
    ).to(dtype)
    text = torch.randn(batch, 1, TEXT_TOKENS, config.caption_channels, device=device).to(dtype)
    mask = torch.zeros(batch, TEXT_TOKENS, dtype=torch.long, device=device)
    for row, used in enumerate(PROMPT_TOKENS):
        mask[row, :used] = 1
    # The pipeline's own rotary-embedding code, which reads only these two attributes.
    holder = SimpleNamespace(
        transformer=transformer, vae_scale_factor_spatial=costs.VAE_SPATIAL_FACTOR
    )
    rotary = AllegroPipeline._prepare_rotary_positional_embeddings(
        holder, 1, size[1], size[2], latent_frames, device
    )
    return {
        "hidden_states": hidden,
        "encoder_hidden_states": text,
        "encoder_attention_mask": mask,
        "image_rotary_emb": rotary,
        "return_dict": False,
    }


class CompileWatch:
    """Counts dynamo's recompilations and graph breaks while active, through the artifact
    loggers behind TORCH_LOGS="recompiles,graph_breaks" (torch 2.13.0 _dynamo/guards.py:223,
    _dynamo/symbolic_convert.py), which it also turns on so each one is logged with its
    reason."""

    LOGGERS: Mapping[str, str] = MappingProxyType(
        {
            "recompiles": "torch._dynamo.guards.__recompiles",
            "graph_breaks": "torch._dynamo.symbolic_convert.__graph_breaks",
        }
    )

    def __init__(self) -> None:
        self.events: dict[str, list[str]] = {kind: [] for kind in self.LOGGERS}
        self._handlers: list[tuple[Any, Any]] = []

    def __enter__(self) -> CompileWatch:
        import logging

        import torch
        from torch._dynamo.utils import counters

        counters.clear()
        torch._logging.set_logs(recompiles=True, graph_breaks=True)
        for kind, name in self.LOGGERS.items():
            handler = logging.Handler()
            handler.emit = lambda record, kind=kind: self.events[kind].append(
                record.getMessage().splitlines()[0]
            )
            logger = logging.getLogger(name)
            logger.addHandler(handler)
            self._handlers.append((logger, handler))
        return self

    def __exit__(self, *exc_info) -> None:
        import torch

        for logger, handler in self._handlers:
            logger.removeHandler(handler)
        torch._logging.set_logs()

    def summary(self) -> str:
        from torch._dynamo.utils import counters

        graphs = counters["stats"]["unique_graphs"]
        recompiles, breaks = self.events["recompiles"], self.events["graph_breaks"]
        line = (
            f"- Compilation: {graphs} graph(s) compiled, {len(recompiles)} recompilation(s), "
            f"{len(breaks)} graph break(s)"
        )
        firsts = dict.fromkeys([*recompiles, *breaks])  # first line of each, in order
        return "\n".join([line, *(f"  - {text}" for text in list(firsts)[:5])])


def measure_steps(
    setup: Setup,
    sizes: Sequence[Size],
    steps: int,
    warmup: int,
    fast: bool,
    gpu,
    compile: bool = False,
) -> list[StepResult]:
    log("building the transformer")
    transformer = build_transformer(setup, setup.device)
    if compile:
        from allegro.loading import compile_transformer_blocks

        compile_transformer_blocks(transformer)
    timesteps = run_timesteps(steps, setup.device)
    results = []
    for size in sizes:
        result = StepResult(
            size=size,
            tokens=costs.token_count(*size, transformer.config),
            flops=costs.transformer_flops(transformer.config, *size, TEXT_TOKENS).total,
        )
        if gpu is not None and not setup.dry_run:
            result.model_seconds = costs.estimate_seconds(
                *size, gpu, steps=1, config=transformer.config
            ).step_seconds
        results.append(result)
        _measure_size(transformer, setup, result, timesteps, warmup, fast)
        _free_memory()
    del transformer
    _free_memory()
    return results


def _measure_size(
    transformer, setup: Setup, result: StepResult, timesteps, warmup: int, fast: bool
) -> None:
    """Fast mode off, then on, over the same timesteps; OOM and errors are recorded."""
    import torch

    from allegro.engine import _set_fast_mode

    label = size_label(result.size)
    source = _TimestepSource(transformer)
    try:
        inputs = _step_inputs(transformer, result.size, setup.device, _dtype(setup.precision))

        def step(t) -> None:
            source.current_timestep = t  # what PAB's timestep callback reads
            transformer(timestep=t.expand(2), **inputs)

        def run(seconds: list[float]) -> None:
            for t in timesteps:
                seconds.append(timed(lambda t=t: step(t), setup.device))

        with torch.no_grad():
            _set_fast_mode(source, False)
            log(f"{label}: warm-up (profiled for the SDPA kernels)")
            result.sdpa = sdpa_kernels(lambda: step(timesteps[0]), TEXT_TOKENS)
            for _ in range(warmup - 1):
                step(timesteps[0])
            run(result.off_times)
            log(f"{label}: {fmt_seconds(result.step_seconds)} s/step")
            if not fast:
                return
            _set_fast_mode(source, True)  # fresh PAB state, as the engine re-arms it per run
            hooks = _pab_hooks(transformer)
            result.pab_layers = len(hooks)
            run(result.on_times)
            _set_fast_mode(source, False)
        if hooks:
            window, skip = hooks[0].timestep_skip_range, hooks[0].block_skip_range
            result.measured_skips = pab_skips(timesteps.tolist(), window, skip)
            official = run_timesteps(OFFICIAL_STEPS, "cpu").tolist()
            result.projected = projected_speedup(
                result.off_times,
                result.on_times,
                result.measured_skips,
                pab_skips(official, window, skip),
            )
        log(f"{label}: fast mode {fmt_ratio(result.fast_speedup)}")
    except torch.OutOfMemoryError:
        result.error = "OOM"
    except Exception as error:  # keep measuring the other sizes; say what broke
        result.error = f"error: {type(error).__name__}: {error}"
    if result.error:
        log(f"{label}: {result.error}")
        with contextlib.suppress(Exception):
            _set_fast_mode(source, False)


def measure_memory(setup: Setup, modes: Sequence[str], sizes: Sequence[Size]) -> list[MemoryResult]:
    import torch

    from allegro.loading import apply_offload
    from allegro.tiling import apply_tiling

    results: list[MemoryResult] = []
    cuda = setup.device == "cuda"
    for mode in modes:
        mode_results = [
            MemoryResult(
                mode=mode,
                size=size,
                estimate=None
                if setup.dry_run
                else costs.estimate_memory(mode, setup.precision, *size, vae_precision="fp32"),
            )
            for size in sizes
        ]
        results += mode_results
        if not cuda and mode in CUDA_ONLY_MODES:
            for result in mode_results:
                result.error = "skipped: needs CUDA"
            continue
        pipe = None
        try:
            log(f"offload {mode}: building the pipeline")
            pipe = build_pipeline(setup, setup.device if mode == "none" else "cpu")
            apply_offload(pipe, mode, setup.device)
            for result in mode_results:
                _measure_one(pipe, result, setup.device, apply_tiling)
        except torch.OutOfMemoryError:
            error = "OOM"
        except Exception as exception:
            error = f"error: {type(exception).__name__}: {exception}"
        else:
            error = None
        if error:
            log(f"offload {mode}: {error}")
            for result in mode_results:
                if result.error is None and result.seconds is None:
                    result.error = error
        del pipe
        _free_memory()
        if cuda and torch.cuda.memory_allocated() > LEAK_WARNING_BYTES:
            log(
                f"warning: {torch.cuda.memory_allocated() / costs.GB:.1f} GB still allocated "
                f"after offload {mode}; later peaks include it"
            )
    return results


def _measure_one(pipe, result: MemoryResult, device: str, apply_tiling) -> None:
    """Prompt encoding + one step, then one tiled decode; OOM is recorded, not raised."""
    import torch

    frames, height, width = result.size
    cuda = device == "cuda"
    latents = None
    log(f"offload {result.mode}: {size_label(result.size)}")
    try:
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        started = time.perf_counter()
        with torch.no_grad():
            latents = pipe(
                prompt="a red fox running through fresh snow",
                negative_prompt="blurry, low quality",
                num_inference_steps=1,
                guidance_scale=GUIDANCE_SCALE,
                num_frames=frames,
                height=height,
                width=width,
                generator=torch.Generator("cpu").manual_seed(0),
                output_type="latent",
                clean_caption=False,
            ).frames
            if cuda:
                torch.cuda.synchronize()
                result.denoise_peak = torch.cuda.max_memory_allocated()
                reserved = torch.cuda.max_memory_reserved()
                torch.cuda.reset_peak_memory_stats()
            apply_tiling(pipe.vae, fit_tiling(frames, height, width, pipe.vae_scale_factor_spatial))
            pipe.decode_latents(latents.to(pipe.vae.dtype))
            if cuda:
                torch.cuda.synchronize()
        result.seconds = time.perf_counter() - started
        if cuda:
            result.decode_peak = torch.cuda.max_memory_allocated()
            result.peak_allocated = max(result.denoise_peak, result.decode_peak)
            result.peak_reserved = max(reserved, torch.cuda.max_memory_reserved())
        log(f"offload {result.mode}: {fmt_gb(result.peak_allocated)} GB, {result.seconds:.1f} s")
    except torch.OutOfMemoryError:
        result.error = "OOM"
        log(f"offload {result.mode}: {size_label(result.size)} OOM")
    finally:
        del latents
        with contextlib.suppress(Exception):
            pipe.maybe_free_model_hooks()
        _free_memory()


def describe_environment(setup: Setup) -> Environment:
    import diffusers
    import torch
    import transformers

    versions = (
        f"torch {torch.__version__}, diffusers {diffusers.__version__}, "
        f"transformers {transformers.__version__}"
    )
    if setup.device == "cuda":
        name = torch.cuda.get_device_name()
        total = torch.cuda.get_device_properties(0).total_memory
        versions += f", CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}"
        return Environment(
            device=f"{name} ({total / costs.GB:.1f} GB)",
            gpu=costs.gpu_class_for(name),
            versions=versions,
            parameters=_parameters(setup),
        )
    threads = torch.get_num_threads()
    return Environment(
        device=f"CPU ({threads} threads)",
        gpu=None,
        versions=versions,
        parameters=_parameters(setup),
    )


def _parameters(setup: Setup) -> str:
    """Parameter counts from the cost model's formulas: the models are built to match."""
    config = {**costs.ALLEGRO_TRANSFORMER_CONFIG, **setup.transformer_overrides}
    transformer = costs.transformer_parameter_count(config) / 1e9
    if setup.dry_run:
        return (
            f"transformer {transformer:.3f}B ({config['num_layers']} layer), tiny VAE (fp32), "
            "tiny text encoder"
        )
    return (
        f"transformer {transformer:.2f}B ({config['num_layers']} layers, {setup.precision}), "
        f"VAE {costs.VAE_PARAMETERS / 1e6:.0f}M (fp32), "
        f"text encoder {costs.T5_XXL.parameter_count / 1e9:.2f}B ({setup.precision})"
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    if args.dry_run_cpu:
        setup = DRY_RUN_SETUP
    elif torch.cuda.is_available():
        setup = GPU_SETUP
    else:
        print(
            "bench/gpu.py needs a CUDA GPU and none is available here, so nothing was measured "
            "(--dry-run-cpu runs the same code on the CPU at a tiny size)."
        )
        return 0

    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()  # no per-layer PAB chatter in the output
    environment = describe_environment(setup)
    log(f"device: {environment.device}")
    step_results: list[StepResult] = []
    memory_results: list[MemoryResult] = []
    watch = CompileWatch() if args.compile else contextlib.nullcontext()
    if "steps" in args.parts or "fast" in args.parts:
        with watch:
            step_results = measure_steps(
                setup,
                args.sizes,
                args.steps,
                args.warmup,
                "fast" in args.parts,
                environment.gpu,
                args.compile,
            )
    if "memory" in args.parts:
        memory_results = measure_memory(setup, args.modes, args.sizes)
    print(render_report(setup, environment, args, step_results, memory_results), end="")
    if isinstance(watch, CompileWatch):
        print(watch.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
